"""Keras model configs: legacy HDF5 `model_config` / `training_config` attributes and Keras v3 `config.json`.

The JSON tree is walked, never deserialized: Lambda bytecode is read by `marshal_code` (no code object is
built), module and function references are checked against `rules/keras.toml`, TorchModuleWrapper pickles
are decoded and handed back to the engine as members.
"""

from __future__ import annotations

import base64
import binascii
import builtins
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from scanner.findings import Finding, Severity
from scanner.formats.pickle import marshal_code
from scanner.sniff import json_loads_strict
from scanner.source import Source

if TYPE_CHECKING:
    from scanner.context import ScanContext

FUNCTION_CLASSES = ("function", "__function__")
MODULE_KEYS = ("module", "function_module", "output_shape_module")
_DOTTED = re.compile(r"^[A-Za-z_][\w.]*$")
_URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")
_MAX_PER_RULE = 100


@dataclass(frozen=True)
class KerasRules:
    allowed_prefixes: tuple[str, ...]
    dangerous: Mapping[str, tuple[Severity, str, str | None]]
    lookup_fields: Mapping[str, tuple[str, ...]]
    instantiation_keys: Mapping[str, str]
    suspicious: tuple[tuple[str, str], ...]
    path_fields: frozenset[str]
    function_modules: tuple[str, ...]


def _build_rules(doc: dict[str, Any]) -> KerasRules:
    return KerasRules(
        allowed_prefixes=tuple(e["prefix"] for e in doc.get("allowed_module", [])),
        dangerous={e["name"]: (Severity.parse(e["severity"]), e["reason"], e.get("reference"))
                   for e in doc.get("dangerous_function", [])},
        lookup_fields={e["class_name"]: tuple(e["fields"]) for e in doc.get("lookup_layer", [])},
        instantiation_keys={e["key"]: e["reason"] for e in doc.get("instantiation_key", [])},
        suspicious=tuple((e["pattern"], e["reason"]) for e in doc.get("suspicious_string", [])),
        path_fields=frozenset(e["name"] for e in doc.get("path_field", [])),
        function_modules=tuple(e["prefix"] for e in doc.get("function_module", [])),
    )


def keras_rules(ctx: ScanContext) -> KerasRules:
    return ctx.rules.cached("keras", lambda: _build_rules(ctx.rules.doc("keras")))


def module_allowed(module: str, rules: KerasRules) -> bool:
    return _under(module, rules.allowed_prefixes)


def _under(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def _python_builtin(name: str) -> bool:
    """Keras 3 writes its own functions as module "builtins" and resolves them in its own modules; older
    loaders import the module as written, so a real Python builtin there is the real thing."""
    return hasattr(builtins, name)


# -- entry points ---------------------------------------------------------------------------------------

def analyze_config_text(raw: bytes | str, src: Source, ctx: ScanContext, label: str,
                        offset: int | None = None) -> list[Finding]:
    """Parse one JSON config strictly and walk it. Parse failures are KERAS-MALFORMED."""
    try:
        text = raw.decode("utf-8") if isinstance(raw, (bytes, bytearray)) else raw
    except UnicodeDecodeError as e:
        return [ctx.finding("KERAS-MALFORMED", f"{label}: config is not UTF-8", src, offset=offset, evidence=str(e))]
    try:
        obj = json_loads_strict(text.encode("utf-8", "surrogatepass"))
    except RecursionError:
        return [ctx.finding("KERAS-MALFORMED", f"{label}: config nested too deeply to parse", src, offset=offset,
                            evidence="RecursionError")]
    except ValueError as e:
        return [ctx.finding("KERAS-MALFORMED", f"{label}: config is not valid JSON", src, offset=offset,
                            evidence=str(e)[:200])]
    return walk_config(obj, src, ctx, label, offset=offset)


def analyze_keras_zip(src: Source, members: Mapping[str, Source] | Sequence[tuple[str, Source]],
                      ctx: ScanContext) -> list[Finding]:
    """Keras v3 `.keras` archive: walk `config.json` and `metadata.json` (the zip analyzer scans the weights
    member itself). Every copy of a duplicated member is walked: zip readers disagree on which one wins."""
    out: list[Finding] = []
    pairs = list(members.items()) if isinstance(members, Mapping) else list(members)
    names = {n for n, _ in pairs}
    for name, member in pairs:
        if name not in ("config.json", "metadata.json"):
            continue
        if member.size > ctx.limits.max_header_bytes:
            out.append(ctx.finding("LIMIT-EXCEEDED", f"{name} of {member.size} bytes exceeds max_header_bytes; not "
                                   "analyzed", member, evidence="max_header_bytes"))
            continue
        data = member.read_all(ctx.limits.max_header_bytes)
        found = analyze_config_text(data, member, ctx, name)
        if name == "metadata.json" and not found:
            found = _check_metadata(data, member, ctx)
        out.extend(found)
    if "config.json" not in names:
        out.append(ctx.finding("KERAS-MALFORMED", "Keras archive without config.json", src))
    return out


def _check_metadata(data: bytes, src: Source, ctx: ScanContext) -> list[Finding]:
    obj = json_loads_strict(data)
    if not isinstance(obj, dict):
        return [ctx.finding("KERAS-MALFORMED", "metadata.json is not a JSON object", src,
                            evidence=type(obj).__name__)]
    return []


# -- the walker -----------------------------------------------------------------------------------------

class _Walk:
    def __init__(self, src: Source, ctx: ScanContext, label: str, offset: int | None) -> None:
        self.src = src
        self.ctx = ctx
        self.label = label
        self.offset = offset
        self.rules = keras_rules(ctx)
        self.findings: list[Finding] = []
        self.counts: Counter[str] = Counter()
        self.torch_configs: set[int] = set()

    def add(self, rule_id: str, message: str, evidence: str | None = None,
            severity: Severity | None = None) -> None:
        self.counts[rule_id] += 1
        n = self.counts[rule_id]
        if n > _MAX_PER_RULE:
            return
        if n == _MAX_PER_RULE:
            message = f"{message} (further {rule_id} findings in this config suppressed)"
        self.findings.append(self.ctx.finding(rule_id, f"{self.label}: {message}", self.src, offset=self.offset,
                                              evidence=evidence, severity=severity))

    def run(self, root: object) -> None:
        limits = self.ctx.limits
        # (node, JSON path, depth, name of the innermost enclosing layer)
        stack: list[tuple[object, str, int, str | None]] = [(root, "$", 0, None)]
        visited = 0
        while stack:
            node, path, depth, layer = stack.pop()
            visited += 1
            if visited > limits.max_array_items:
                self.add("LIMIT-EXCEEDED", f"more than {limits.max_array_items} config nodes; rest not analyzed",
                         "max_array_items")
                return
            if depth > limits.max_json_depth:
                self.add("LIMIT-EXCEEDED", f"config nested deeper than {limits.max_json_depth} at {path}",
                         "max_json_depth")
                continue
            if isinstance(node, dict):
                if isinstance(node.get("class_name"), str):
                    layer = _layer_name(node) or layer
                self.visit_dict(node, path)
                children = [(v, f"{path}.{k}", depth + 1, layer) for k, v in node.items()]
                for k in node:
                    self.visit_string(k, f"{path}<key>", layer, key=True)
            elif isinstance(node, list):
                children = [(v, f"{path}[{i}]", depth + 1, layer) for i, v in enumerate(node)]
            else:
                if isinstance(node, str):
                    self.visit_string(node, path, layer)
                continue
            stack.extend(reversed(children))

    # dicts: layer / object descriptions
    def visit_dict(self, node: dict[str, Any], path: str) -> None:  # noqa: C901 - one check per rule
        class_name = node.get("class_name") if isinstance(node.get("class_name"), str) else None
        inner = node.get("config")
        layer = _layer_name(node)
        if class_name == "Lambda":
            self.lambda_layer(node, path, layer)
        elif class_name == "__lambda__":
            if not _contains_code(inner, self.ctx):
                self.add("KERAS-LAMBDA", f"__lambda__ function at {path} with undecodable bytecode",
                         _short(inner))
        if class_name == "TorchModuleWrapper":
            self.torch_wrapper(node, path, layer)
        if class_name is not None and isinstance(inner, dict):
            fields = set(self.rules.lookup_fields.get(class_name, ())) | self.rules.path_fields
            for fld in sorted(fields & inner.keys()):
                value = inner.get(fld)
                if isinstance(value, str):
                    self.add("KERAS-LOOKUP-PATH", f"{class_name} layer {layer!r} takes {fld} from {value!r}",
                             f"{path}.config.{fld} = {value!r}")
        if id(node) not in self.torch_configs:
            self.module_refs(node, path, class_name)
        for key in ("registered_name", "class_name"):
            registered = node.get(key)
            if isinstance(registered, str) and ">" in registered:
                package = registered.split(">", 1)[0]
                if not module_allowed(package, self.rules):
                    self.add("KERAS-CUSTOM-OBJECT", f"{path} uses custom object {registered!r}", registered)
        for key, value in node.items():
            if key in self.rules.instantiation_keys:
                self.add("KERAS-CONFIG-INSTANTIATION",
                         f"{path} has {key!r} ({self.rules.instantiation_keys[key]})", f"{key} = {_short(value)}")
            if key in ("safe_mode", "safe_mode_saving") and value in (False, 0, "false", "False"):
                self.add("KERAS-UNSAFE-DESERIALIZATION", f"{path} sets {key} to {value!r}", f"{key} = {value!r}")

    def module_refs(self, node: dict[str, Any], path: str, class_name: str | None) -> None:
        for key in MODULE_KEYS:
            module = node.get(key)
            if not isinstance(module, str) or not module:
                continue
            target = _target_name(node, class_name)
            if module == "builtins" and class_name in FUNCTION_CLASSES and isinstance(target, str) \
                    and not _python_builtin(target):
                continue  # Keras 3's own spelling of its built-in functions (looked up in Keras modules)
            if not module_allowed(module, self.rules):
                self.add("KERAS-UNSAFE-MODULE", f"{path} references module {module!r} outside Keras",
                         f"{module}.{target}" if target else module)
            elif class_name in FUNCTION_CLASSES and not _under(module, self.rules.function_modules):
                self.add("KERAS-NONMODELING-FUNCTION", f"{path} references function {target!r} in {module!r}, "
                         "outside the activation/loss/metric/op modules", f"{module}.{target}")

    def lambda_layer(self, node: dict[str, Any], path: str, layer: str | None) -> None:
        inner = node.get("config") if isinstance(node.get("config"), dict) else node
        if _contains_code(inner, self.ctx):
            return  # the bytecode strings themselves are reported, with their disassembly
        fn = inner.get("function") if isinstance(inner, dict) else None
        shape = inner.get("output_shape") if isinstance(inner, dict) else None
        by_type = isinstance(inner, dict) and "lambda" in (inner.get("function_type"), inner.get("output_shape_type"))
        if by_type or _is_lambda_dict(fn) or isinstance(shape, dict) and shape.get("class_name") == "__lambda__":
            self.add("KERAS-LAMBDA", f"Lambda layer {layer!r} carries bytecode that could not be decoded",
                     _short(fn))
            return
        self.add("KERAS-LAMBDA", f"Lambda layer {layer!r} calls a named function", _short(fn),
                 severity=Severity.MEDIUM)

    def torch_wrapper(self, node: dict[str, Any], path: str, layer: str | None) -> None:
        inner = node.get("config")
        self.add("KERAS-TORCH-MODULE", f"TorchModuleWrapper layer {layer!r} at {path}")
        if not isinstance(inner, dict):
            return
        self.torch_configs.add(id(inner))
        blob = inner.get("module")
        if not isinstance(blob, str):
            return
        try:
            data = base64.b64decode(blob.encode("ascii"), validate=False)
        except (binascii.Error, UnicodeEncodeError, ValueError) as e:
            self.add("KERAS-MALFORMED", f"TorchModuleWrapper module at {path} is not base64", str(e))
            return
        self.ctx.charge(len(data), self.src)
        child = self.src.child_bytes(f"{self.label}:{path}.config.module", data)
        self.findings.extend(self.ctx.scan_child(child))

    # strings: bytecode, dangerous names, code-looking text, URLs
    def visit_string(self, s: str, path: str, layer: str | None, key: bool = False) -> None:
        if not key and len(s) >= 24:
            parsed = _decode_code(s, self.ctx)
            if parsed is not None:
                where = f" in layer {layer!r}" if layer else ""
                self.add("KERAS-LAMBDA", f"marshalled Python bytecode{where} at {path}", _code_evidence(parsed))
                return
        if len(s) <= 200 and _DOTTED.match(s.replace(">", ".")):
            last = re.split(r"[.>]", s)[-1]
            hit = self.rules.dangerous.get(last)
            if hit is not None:
                sev, reason, ref = hit
                self.add("KERAS-DANGEROUS-FUNCTION", f"{path} names {s!r}: {reason}", s, severity=sev)
                if last in ("enable_unsafe_deserialization", "set_global_attribute"):
                    self.add("KERAS-UNSAFE-DESERIALIZATION", f"{path} names the safe-mode switch {s!r}", s)
        dotted = s.replace(">", ".") if ">" in s and len(s) <= 200 else s
        if dotted is not s and _DOTTED.match(dotted) and not module_allowed(s.split(">", 1)[0], self.rules):
            self.add("KERAS-CUSTOM-OBJECT", f"{path} names {s!r} (a registered-object name outside Keras)", s)
        for pattern, reason in self.rules.suspicious:
            if pattern in dotted:
                self.add("KERAS-SUSPICIOUS-STRING", f"{path} contains {pattern!r} ({reason})", _short(s))
                break
        if _URL.match(s):
            self.add("KERAS-URL", f"{path} is a URL", _short(s))


def walk_config(obj: object, src: Source, ctx: ScanContext, label: str, offset: int | None = None) -> list[Finding]:
    w = _Walk(src, ctx, label, offset)
    if not isinstance(obj, (dict, list)):
        w.add("KERAS-MALFORMED", "config is not a JSON object", _short(obj))
    w.run(obj)
    return w.findings


# -- helpers --------------------------------------------------------------------------------------------

def _layer_name(node: dict[str, Any]) -> str | None:
    inner = node.get("config")
    if isinstance(inner, dict) and isinstance(inner.get("name"), str):
        return str(inner["name"])
    name = node.get("name")
    return name if isinstance(name, str) else None


def _target_name(node: dict[str, Any], class_name: str | None) -> str | None:
    if class_name in FUNCTION_CLASSES and isinstance(node.get("config"), str):
        return str(node["config"])
    if class_name:
        return class_name
    fn = node.get("function")
    return fn if isinstance(fn, str) else None


def _is_lambda_dict(fn: object) -> bool:
    return isinstance(fn, dict) and fn.get("class_name") == "__lambda__" or isinstance(fn, list)


def _decode_code(s: str, ctx: ScanContext) -> marshal_code.ParsedCode | None:
    """Keras writes bytecode with base64.encodebytes; `func_load` decodes leniently (characters outside the
    alphabet are skipped) and, when that fails, takes the string's raw_unicode_escape bytes. So do we."""
    try:
        data = binascii.a2b_base64(s.encode("ascii"))
    except (UnicodeEncodeError, binascii.Error, ValueError):
        try:
            data = s.encode("raw_unicode_escape")
        except UnicodeError:
            return None
    if not data or data[0] & 0x7F != ord("c"):
        return None
    try:
        return marshal_code.parse_code(data, max_objects=ctx.limits.max_array_items,
                                       max_depth=min(ctx.limits.max_json_depth, 200))
    except marshal_code.MarshalError:
        return None


def _contains_code(node: object, ctx: ScanContext, budget: int = 10_000) -> bool:
    stack = [node]
    while stack and budget > 0:
        budget -= 1
        cur = stack.pop()
        if isinstance(cur, dict):
            stack.extend(cur.values())
        elif isinstance(cur, list):
            stack.extend(cur)
        elif isinstance(cur, str) and len(cur) >= 24 and _decode_code(cur, ctx) is not None:
            return True
    return False


def _code_evidence(parsed: marshal_code.ParsedCode) -> str:
    info = parsed.code
    names = marshal_code.all_names(info)
    strings = marshal_code.all_strings(info)
    listing = marshal_code.disassemble(parsed, max_instructions=40)
    parts = [f"code {info.name!r} from {info.filename!r} (layout {parsed.layout})",
             f"names={names[:20]}", f"strings={[s[:60] for s in strings[:10]]}"]
    if listing:
        parts.append("dis: " + "; ".join(listing))
    return " ".join(parts)


def _short(value: object, n: int = 200) -> str:
    text = repr(value)
    return text if len(text) <= n else text[:n] + "…"
