"""ONNX models: parse the ModelProto from bytes (no external data is ever loaded) and walk the main graph,
every nested subgraph, the training graphs and the local functions.

Checked: external-data locations (escape, symlink, missing, range), operator domains, Python-backed
operators, metadata and doc strings naming native libraries, unknown protobuf fields.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from scanner.findings import Finding
from scanner.source import Source

if TYPE_CHECKING:
    from scanner.context import ScanContext

_EXTERNAL = 1  # TensorProto.DataLocation.EXTERNAL


@dataclass(frozen=True)
class _Rules:
    standard: frozenset[str]
    runtime: frozenset[str]
    python_ops: tuple[tuple[str, str | None, str | None, str], ...]  # domain, op_type, op_prefix, reason
    shared_lib: tuple[tuple[re.Pattern[str], str], ...]
    network_ops: frozenset[str]
    config_keys: frozenset[str]
    external_keys: frozenset[str]


def _rules(ctx: ScanContext) -> _Rules:
    def build() -> _Rules:
        doc = ctx.rules.doc("onnx")
        return _Rules(
            frozenset(e["domain"] for e in doc.get("standard_domain", [])),
            frozenset(e["domain"] for e in doc.get("runtime_domain", [])),
            tuple((e["domain"], e.get("op_type"), e.get("op_prefix"), e["reason"]) for e in doc.get("python_op", [])),
            tuple((re.compile(e["pattern"], re.IGNORECASE), e["reason"])
                  for e in doc.get("shared_library_pattern", [])),
            frozenset(e["op_type"] for e in doc.get("network_op", [])),
            frozenset(e["key"] for e in doc.get("runtime_config_key", [])),
            frozenset(doc.get("external_data", {}).get("keys", [])),
        )
    return ctx.rules.cached("onnx", build)  # type: ignore[no-any-return]


def analyze(src: Source, ctx: ScanContext) -> Iterator[Finding]:
    from google.protobuf.message import DecodeError

    from scanner.formats.onnx.proto import pb2

    ModelProto = pb2().ModelProto  # noqa: N806 - the protobuf class

    if src.size > min(ctx.limits.max_onnx_inline_bytes, ctx.limits.max_read_bytes):
        # weights embedded in a large model: parse its structure, skip the tensor payloads by length
        from scanner.formats.onnx.skeleton import build_skeleton

        try:
            skel = build_skeleton(src, ctx.limits)
        except ValueError as e:
            yield ctx.finding("ONNX-MALFORMED", "not a parseable ONNX ModelProto", src, evidence=str(e)[:300])
            return
        data = skel.data
        yield ctx.finding("ONNX-SKELETON", f"large model: structure parsed, {skel.skipped_bytes} bytes of embedded "
                          f"tensor data in {skel.skipped_fields} field(s) skipped ({skel.tensors} tensors)", src,
                          evidence=f"skipped_bytes={skel.skipped_bytes} skeleton_bytes={len(data)}")
    else:
        data = src.read_all(ctx.limits.max_read_bytes)
    model = ModelProto()
    try:
        from scanner.formats.onnx.proto_count import bounded_parse_check

        bounded_parse_check(data, ctx.limits, src)  # before the parser builds one object per field
        model.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as e:
        yield ctx.finding("ONNX-MALFORMED", "not a parseable ONNX ModelProto", src, evidence=f"{type(e).__name__}: {e}"[:300])
        return
    except RecursionError:
        yield ctx.finding("ONNX-MALFORMED", "protobuf nested too deeply to parse", src, evidence="RecursionError")
        return
    w = _Walker(src, ctx)
    try:
        w.model(model)
    except (TypeError, ValueError, UnicodeError) as e:
        # proto2 strings that are not UTF-8 surface as bytes or errors: the loader would see something else
        w.add("ONNX-MALFORMED", "inconsistent field contents", f"{type(e).__name__}: {e}"[:300])
    yield from w.findings


class _Walker:
    def __init__(self, src: Source, ctx: ScanContext) -> None:
        self.src = src
        self.ctx = ctx
        self.rules = _rules(ctx)
        self.findings: list[Finding] = []
        self.nodes = 0
        self.stopped = False
        self.local_functions: set[tuple[str, str]] = set()
        self.custom_ops: dict[str, dict[str, str]] = {}  # domain -> op -> first place seen
        self.python_ops: list[str] = []
        self.unknown_ops: dict[str, str] = {}
        self.seen_docs = 0
        base = src.path.parent if src.path is not None else None
        self.base = base

    def add(self, rule_id: str, message: str, evidence: str | None = None) -> None:
        self.findings.append(self.ctx.finding(rule_id, message, self.src, evidence=evidence))

    # -- model level -------------------------------------------------------------------------------------
    def model(self, m: Any) -> None:
        self.unknown_fields_deep(m)
        for f in m.functions:
            self.local_functions.add((_str(f.domain), _str(f.name)))
        opset_domains = {_str(o.domain) for o in m.opset_import}
        for f in m.functions:
            opset_domains |= {_str(o.domain) for o in f.opset_import}
        self.metadata(m.metadata_props, "metadata")
        for kv in m.metadata_props:
            if _str(kv.key) in self.rules.config_keys:
                self.add("ONNX-RUNTIME-CONFIG", f"metadata {_str(kv.key)!r} configures the runtime that loads the "
                         "model", _str(kv.value)[:200])
        self.text(m.doc_string, "model doc_string")
        self.text(m.producer_name, "producer_name")
        self.graph(m.graph, "graph")
        for i, ti in enumerate(m.training_info):
            self.graph(ti.initialization, f"training_info[{i}].initialization")
            self.graph(ti.algorithm, f"training_info[{i}].algorithm")
        for f in m.functions:
            self.function(f)
        self.report_domains(opset_domains)

    def metadata(self, props: Any, where: str) -> None:
        for kv in props:
            self.text(kv.key, f"{where} key")
            self.text(kv.value, f"{where} {_str(kv.key)!r}")

    def unknown_fields_deep(self, m: Any) -> None:
        """Unknown fields in any message (a node, a tensor, an attribute ...): a cheap whole-model test first
        (discarding unknown fields changes the size), then a bounded walk to say where."""
        try:
            from google.protobuf.unknown_fields import UnknownFieldSet
        except ImportError:
            return
        bare = type(m)()
        bare.CopyFrom(m)
        bare.DiscardUnknownFields()
        if bare.ByteSize() == m.ByteSize():
            return
        stack: list[tuple[Any, str]] = [(m, "model")]
        visited = reported = 0
        while stack and visited < self.ctx.limits.max_graph_nodes and reported < 20:
            msg, where = stack.pop()
            visited += 1
            try:
                n = len(UnknownFieldSet(msg))
            except (TypeError, ValueError):
                n = 0
            if n:
                reported += 1
                self.add("ONNX-UNKNOWN-FIELDS", f"{where} carries {n} protobuf field(s) unknown to ONNX", where)
            for fd, value in msg.ListFields():
                room = self.ctx.limits.max_graph_nodes - visited - len(stack)  # the stack stays bounded too
                if fd.message_type is None or room <= 0:
                    continue
                if _repeated(fd):
                    stack.extend(islice(((v, f"{where}.{fd.name}[{i}]") for i, v in enumerate(value)), room))
                else:
                    stack.append((value, f"{where}.{fd.name}"))
        if not reported:
            self.add("ONNX-UNKNOWN-FIELDS", "the model carries protobuf fields unknown to ONNX", "model")

    def report_domains(self, opset_domains: set[str]) -> None:
        known = self.rules.standard | self.rules.runtime
        local_domains = {d for d, _ in self.local_functions}
        for domain, ops in sorted(self.custom_ops.items()):
            names = sorted(ops)[:20]
            self.add("ONNX-CUSTOM-DOMAIN", f"operators from non-standard domain {domain!r}: {', '.join(names)}",
                     "; ".join(f"{domain}:{op} at {ops[op]}" for op in names))
        for domain in sorted(opset_domains - known - set(self.custom_ops) - local_domains):
            self.add("ONNX-CUSTOM-OPSET", f"opset import of non-standard domain {domain!r}", domain)
        for op, where in sorted(self.unknown_ops.items())[:50]:
            self.add("ONNX-UNKNOWN-OP", f"operator {op!r} is not in the standard opsets (first at {where})",
                     f"{op} at {where}")
        for where in self.python_ops[:50]:
            self.add("ONNX-PYTHON-OP", f"Python-backed operator {where}", where)

    # -- graphs ------------------------------------------------------------------------------------------
    def graph(self, root: Any, where: str, depth: int = 0) -> None:
        stack: list[tuple[Any, str, int]] = [(root, where, depth)]
        while stack and not self.stopped:
            g, path, depth = stack.pop()
            if depth > self.ctx.limits.max_graph_depth:
                self.add("LIMIT-EXCEEDED", f"subgraphs nested deeper than {self.ctx.limits.max_graph_depth} at {path}",
                         "max_graph_depth")
                continue
            self.text(g.doc_string, f"{path} doc_string")
            self.metadata(g.metadata_props, f"{path} metadata")
            for t in g.initializer:
                self.tensor(t, f"{path} initializer {t.name!r}")
            for st in g.sparse_initializer:
                self.tensor(st.values, f"{path} sparse initializer {st.values.name!r}")
                self.tensor(st.indices, f"{path} sparse initializer indices {st.indices.name!r}")
            for i, node in enumerate(g.node):
                for sub, sub_path in self.node(node, f"{path}.node[{i}]"):
                    stack.append((sub, sub_path, depth + 1))
                if self.stopped:
                    return

    def function(self, f: Any) -> None:
        path = f"function {f.domain}:{f.name}"
        self.text(f.doc_string, f"{path} doc_string")
        self.metadata(f.metadata_props, f"{path} metadata")
        for attr in f.attribute_proto:  # default attribute values
            for sub, sub_path in self.attribute(attr, f"{path} default {attr.name}", custom=True):
                self.graph(sub, sub_path, 1)
        for i, node in enumerate(f.node):
            for sub, sub_path in self.node(node, f"{path}.node[{i}]"):
                self.graph(sub, sub_path, 1)
            if self.stopped:
                return

    def node(self, node: Any, path: str) -> list[tuple[Any, str]]:
        self.nodes += 1
        if self.nodes > self.ctx.limits.max_graph_nodes:
            if not self.stopped:
                self.add("LIMIT-EXCEEDED", f"more than {self.ctx.limits.max_graph_nodes} nodes; rest not analyzed",
                         "max_graph_nodes")
            self.stopped = True
            return []
        domain, op = _str(node.domain), _str(node.op_type)
        label = f"{domain or 'ai.onnx'}:{op} at {path}" + (f" ({node.name})" if node.name else "")
        if self.is_python_op(domain, op):
            self.python_ops.append(label)
        if op in self.rules.network_ops:
            self.add("ONNX-NETWORK-OP", f"operator {label} sends data to or fetches from a network endpoint",
                     label)
        custom = False
        if (domain, op) in self.local_functions:
            pass
        elif domain in self.rules.standard:
            if not _standard_op_exists(op, domain):
                self.unknown_ops.setdefault(op, path)
        elif domain not in self.rules.runtime:
            custom = True
            self.custom_ops.setdefault(domain, {}).setdefault(op, path)
        if self.seen_docs < 10_000 and (node.doc_string or len(node.metadata_props)):
            self.seen_docs += 1
            self.text(node.doc_string, f"{path} doc_string")
            self.metadata(node.metadata_props, f"{path} metadata")
        subs: list[tuple[Any, str]] = []
        for attr in node.attribute:
            subs.extend(self.attribute(attr, f"{path}.{attr.name}", custom))
        return subs

    def attribute(self, attr: Any, apath: str, custom: bool) -> list[tuple[Any, str]]:
        """Tensors are checked here; subgraphs are returned. Every field is looked at whatever the declared
        type says: runtimes differ in which they trust."""
        subs: list[tuple[Any, str]] = []
        if attr.HasField("g"):
            subs.append((attr.g, apath))
        subs.extend((g, f"{apath}[{j}]") for j, g in enumerate(attr.graphs))
        if attr.HasField("t"):
            self.tensor(attr.t, f"{apath} tensor")
        for j, t in enumerate(attr.tensors):
            self.tensor(t, f"{apath}[{j}] tensor")
        sparse = [(attr.sparse_tensor, apath)] if attr.HasField("sparse_tensor") else []
        sparse += [(st, f"{apath}[{j}]") for j, st in enumerate(attr.sparse_tensors)]
        for st, where in sparse:
            self.tensor(st.values, f"{where} sparse values")
            self.tensor(st.indices, f"{where} sparse indices")
        if custom:  # custom kernels take library paths and the like as string attributes
            for s in [attr.s, *list(attr.strings)[:100]]:
                self.text(s, f"{apath} string attribute")
        return subs

    def is_python_op(self, domain: str, op: str) -> bool:
        for d, op_type, prefix, _reason in self.rules.python_ops:
            if d not in ("*", domain):
                continue
            if op_type is not None and op == op_type or prefix is not None and op.startswith(prefix):
                return True
        return False

    # -- tensors and external data -----------------------------------------------------------------------
    def tensor(self, t: Any, where: str) -> None:
        if len(t.metadata_props):
            self.metadata(t.metadata_props, f"{where} metadata")
        if t.data_location != _EXTERNAL and not len(t.external_data):
            return
        pairs = [(_str(kv.key), _str(kv.value)) for kv in t.external_data]
        info = dict(pairs)
        keys = [k for k, _ in pairs]
        locations = [v for k, v in pairs if k == "location"]
        location = info.get("location", "")
        if t.data_location != _EXTERNAL:
            self.add("ONNX-MALFORMED", f"{where} has external_data entries but data_location is not EXTERNAL",
                     repr(location)[:200])
        dupes = sorted({k for k in keys if keys.count(k) > 1})
        if dupes:
            self.add("ONNX-MALFORMED", f"{where} repeats external_data key(s) {', '.join(dupes)[:100]}: readers "
                     "keep the first or the last", repr(pairs)[:200])
        unknown = sorted(set(keys) - self.rules.external_keys)
        if unknown:
            self.add("ONNX-UNKNOWN-FIELDS", f"{where} has external_data key(s) unknown to ONNX: "
                     f"{', '.join(map(repr, unknown))[:200]} (onnx sets each key as an attribute)", repr(unknown)[:200])
        if not locations or any(not loc or "\x00" in loc for loc in locations):
            self.add("ONNX-MALFORMED", f"{where} has external data without a usable location",
                     repr(locations)[:200])
            return
        for loc in dict.fromkeys(locations):
            self.external(loc, info, where)

    def external(self, location: str, info: dict[str, str], where: str) -> None:
        ev = f"location={location!r}"
        if self.escapes(location):
            self.add("ONNX-EXTERNAL-DATA-PATH", f"{where} reads external data from {location!r} (outside the model "
                     "folder; loading reads it, re-saving overwrites it)", ev)
            return
        if self.base is None:
            self.add("ONNX-EXTERNAL-DATA-UNVERIFIABLE", f"{where} keeps its data in {location!r}; the model is inside "
                     "a container, so the file cannot be checked", ev)
            return
        base = self.base
        real_base = Path(os.path.realpath(base))
        real = Path(os.path.realpath(base / location))
        link = _through_symlink(base, location)
        if link:
            self.add("ONNX-EXTERNAL-DATA-SYMLINK", f"{where}: {location!r} is reached through a symlink", ev)
        if real != real_base and real_base not in real.parents:
            self.add("ONNX-EXTERNAL-DATA-PATH", f"{where}: {location!r} resolves outside the model folder to {real}",
                     ev)
            return
        if link:
            return
        if not real.is_file():
            self.add("ONNX-EXTERNAL-DATA-MISSING", f"{where}: external data file {location!r} does not exist", ev)
            return
        size = real.stat().st_size
        try:
            offset = int(info.get("offset", "0") or "0")
            length = int(info["length"]) if info.get("length") else size - offset
        except ValueError:
            self.add("ONNX-EXTERNAL-DATA-RANGE", f"{where}: offset/length are not integers", repr(info)[:200])
            return
        if offset < 0 or length < 0 or offset + length > size:
            self.add("ONNX-EXTERNAL-DATA-RANGE", f"{where}: bytes {offset}+{length} run past {location!r} "
                     f"({size} bytes)", f"{ev} offset={offset} length={length} size={size}")
            return
        self.add("ONNX-EXTERNAL-DATA", f"{where}: data in {location!r} bytes {offset}+{length}", ev)

    def escapes(self, location: str) -> bool:
        """Also when URL-decoded (web runtimes fetch locations), a URL, or a lookalike spelling."""
        from scanner.formats.pathcheck import escapes, lookalikes

        return escapes(location, lookalikes(self.ctx.rules), url=True) is not None

    # -- text --------------------------------------------------------------------------------------------
    def text(self, s: str | bytes, where: str) -> None:
        if not s:
            return
        s = _str(s)
        for pattern, reason in self.rules.shared_lib:
            m = pattern.search(s[: self.ctx.limits.max_string_bytes])
            if m:
                lo = max(0, m.start() - 60)
                self.add("ONNX-SHARED-LIBRARY", f"{where} mentions {m.group(0)!r} ({reason})", s[lo:m.end() + 60])
                return


def _standard_op_exists(op: str, domain: str) -> bool:
    from scanner.formats.onnx.proto import has_schema

    return has_schema(op, "" if domain == "ai.onnx" else domain)


def _str(value: str | bytes) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _through_symlink(base: Path, location: str) -> bool:
    cur = base
    for part in PurePosixPath(location).parts:
        cur = cur / part
        if cur.is_symlink():
            return True
    return False


def _repeated(fd: Any) -> bool:
    flag = getattr(fd, "is_repeated", None)  # protobuf >= 6 dropped FieldDescriptor.label
    if flag is not None:
        return bool(flag)
    return bool(fd.label == fd.LABEL_REPEATED)
