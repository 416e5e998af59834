"""TorchScript code/ sources: a closed language, checked against a rule list (rules/containers.toml) without
ever compiling or running it."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from scanner.findings import Finding, Severity
from scanner.formats.zip.torchscript_ops import OpRef
from scanner.source import Source

_CLASS = re.compile(r"(?m)^class\s+([A-Za-z_]\w*)\s*[(:]")
_OPS = re.compile(r"\bops\.([A-Za-z_]\w*)\.([A-Za-z_]\w*)")


@dataclass(frozen=True)
class CodeRule:
    pattern: re.Pattern[str]
    severity: Severity
    reason: str
    reference: str | None


@dataclass(frozen=True)
class ScriptRules:
    rules: tuple[CodeRule, ...]
    builtin_ns: frozenset[str]
    prefix: str
    denied_ops: dict[str, CodeRule]


def script_rules(ctx: Any) -> ScriptRules:
    def build() -> ScriptRules:
        doc = ctx.rules.doc("containers").get("torchscript", {})
        rules = tuple(CodeRule(re.compile(r["pattern"]), Severity.parse(r["severity"]), r["reason"],
                               r.get("reference")) for r in doc.get("code_rule", []))
        denied = {op: CodeRule(re.compile(re.escape(op)), Severity.parse(d["severity"]), d["reason"],
                               d.get("reference")) for d in doc.get("denied_op", []) for op in d["ops"]}
        return ScriptRules(rules, frozenset(doc.get("builtin_op_namespaces", [])),
                           doc.get("class_module_prefix", "__torch__"), denied)
    return ctx.rules.cached("containers.torchscript", build)  # type: ignore[no-any-return]


def check_code(src: Source, data: bytes, ctx: Any) -> list[Finding]:
    rules = script_rules(ctx)
    out: list[Finding] = []
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        return [ctx.finding("TORCH-MALFORMED", "TorchScript source is not UTF-8 text", src, offset=e.start)]
    for rule in rules.rules:
        for m in list(rule.pattern.finditer(text))[:20]:
            out.append(ctx.finding("TORCHSCRIPT-CODE-CALL", f"TorchScript code: {rule.reason}", src, offset=m.start(),
                                   severity=rule.severity, evidence=_line(text, m.start()),
                                   reference=rule.reference))
    out.extend(_operator_findings(src, text, rules, ctx))
    return out


def _operator_findings(src: Source, text: str, rules: ScriptRules, ctx: Any) -> list[Finding]:
    """Operators by resolved name (torchscript_ops); when Python cannot parse the code, the `ops.<ns>.` text
    pattern is the fallback and the unparsed code is itself reported."""
    from scanner.formats.zip.torchscript_ops import resolve_ops

    out: list[Finding] = []
    refs = resolve_ops(text)
    if refs is None:
        out.append(ctx.finding("TORCHSCRIPT-CODE-CALL", "TorchScript code does not parse as Python: operators "
                               "checked by spelling only", src, severity=Severity.MEDIUM))
        refs = []
        for m in list(_OPS.finditer(text))[:50]:
            lineno = text.count("\n", 0, m.start()) + 1
            refs.append(OpRef(f"{m.group(1)}::{m.group(2)}", lineno, 0))
    seen = 0
    for ref in refs:
        ns = ref.qualname.split("::", 1)[0]
        rule = rules.denied_ops.get(ref.qualname)
        if rule is not None:
            msg, sev, reference = f"calls {ref.qualname}: {rule.reason}", rule.severity, rule.reference
        elif ns not in rules.builtin_ns:
            msg = (f"calls custom op namespace {ns!r} ({ref.qualname}): implemented in a native library that must "
                   "be loaded")
            sev, reference = Severity.HIGH, None
        else:
            continue
        seen += 1
        if seen > 50:
            break
        out.append(ctx.finding("TORCHSCRIPT-CODE-CALL", f"TorchScript code {msg}", src, severity=sev,
                               evidence=_line_no(text, ref.lineno), reference=reference))
    return out


def _line_no(text: str, lineno: int) -> str:
    lines = text.splitlines()
    return lines[lineno - 1].strip()[:300] if 0 < lineno <= len(lines) else ""


def defined_classes(name: str, data: bytes, ctx: Any) -> set[str]:
    """`code/__torch__/a/b.py` defining `class C` is the TorchScript class `__torch__.a.b.C`."""
    prefix = script_rules(ctx).prefix
    path = name.split("/code/", 1)[-1] if "/code/" in name else name.removeprefix("code/")
    if not path.endswith(".py"):
        return set()
    module = path[:-3].replace("/", ".")
    if module != prefix and not module.startswith(prefix + "."):
        return set()
    text = data.decode("utf-8", "replace")
    return {f"{module}.{c}" for c in _CLASS.findall(text)}


def allowable(classes: set[str], ctx: Any) -> list[str]:
    """Classes safe to allow in this archive's pickles: compiled from its own code/, and not names the deny list
    knows (`__torch__.os.system` still reaches the deny list through its dotted tail)."""
    from scanner.formats.pickle.policy import Classifier
    from scanner.rules import Policy

    judge = Classifier(ctx.rules, Policy())
    return sorted(c for c in classes if judge.classify(c).status != "deny")


def _line(text: str, pos: int) -> str:
    start = text.rfind("\n", 0, pos) + 1
    end = text.find("\n", pos)
    return text[start:end if end >= 0 else len(text)].strip()[:300]
