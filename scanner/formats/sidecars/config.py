"""Config files that make other loaders instantiate code (K10): Keras JSON outside an archive, Hydra /
OmegaConf YAML (`_target_`), PyYAML python tags, skops `schema.json` type references.

Names are judged by the pickle allow/deny tables: the same import decides the same way whichever
deserializer performs it. Nothing is parsed as YAML; the checks read lines.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from scanner.findings import Finding, Severity
from scanner.source import Source

_TARGET = re.compile(r"""^[ \t]*(?:-[ \t]*)?["']?_target_["']?[ \t]*:[ \t]*["']?([A-Za-z_][\w.]*)""", re.M)
_PY_TAG = re.compile(r"(?:!!|tag:yaml\.org,2002:)python/([a-z_/]+)(?::([\w.]+))?")
_RUNS = ("object/apply", "object/new", "object")
_MAX_FINDINGS = 50
_MAX_NODES = 1_000_000


def keras_like(doc: dict[str, Any]) -> bool:
    """model.to_json() output and Keras config.json: a top-level object with class_name and config."""
    return isinstance(doc.get("class_name"), str) and "config" in doc


def _classifier(ctx: Any) -> Any:
    from scanner.formats.pickle.policy import Classifier

    return Classifier(ctx.rules, ctx.policy)


def yaml_findings(text: str, src: Source, ctx: Any) -> Iterator[Finding]:
    n = 0
    for m in _PY_TAG.finditer(text):
        if n >= _MAX_FINDINGS:
            return
        n += 1
        kind, name = m.group(1), m.group(2) or ""
        sev = Severity.CRITICAL if kind in _RUNS else Severity.HIGH
        yield ctx.finding("SIDECAR-YAML-PYTHON-TAG", f"YAML tag python/{kind} {name!r}: yaml.unsafe_load / "
                          "yaml.Loader build Python objects from it", src, evidence=m.group(0)[:200], severity=sev)
    classify = _classifier(ctx).classify
    for m in _TARGET.finditer(text):
        if n >= _MAX_FINDINGS:
            return
        n += 1
        yield from _judge(ctx, src, classify(m.group(1)), "SIDECAR-CONFIG-INSTANTIATION",
                          f"`_target_: {m.group(1)}`: Hydra / OmegaConf instantiate() imports and calls it")


def skops_findings(doc: dict[str, Any], src: Source, ctx: Any) -> Iterator[Finding]:
    """Every `__module__`.`__class__` a skops schema makes the loader import (objects, functions, types)."""
    classify = _classifier(ctx).classify
    seen: set[str] = set()
    stack: list[object] = [doc]
    visited = 0
    while stack:
        visited += 1
        if visited > _MAX_NODES:
            yield ctx.finding("LIMIT-EXCEEDED", "skops schema too large; rest not analyzed", src,
                              evidence="skops nodes")
            return
        node = stack.pop()
        if isinstance(node, dict):
            module, cls = node.get("__module__"), node.get("__class__")
            if isinstance(module, str) and isinstance(cls, str) and f"{module}.{cls}" not in seen:
                full = f"{module}.{cls}"
                seen.add(full)
                if len(seen) <= _MAX_FINDINGS:
                    loader = node.get("__loader__")
                    yield from _judge(ctx, src, classify(full), "SIDECAR-SKOPS-TYPE",
                                      f"skops {loader or 'node'} imports {full}")
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


def _judge(ctx: Any, src: Source, decision: Any, rule: str, message: str) -> Iterator[Finding]:
    if decision.status == "allow":
        return
    if decision.status == "deny":
        yield ctx.finding(rule, f"{message}: {decision.reason}", src, evidence=decision.name,
                          severity=decision.severity, reference=decision.reference)
    else:
        yield ctx.finding(rule, f"{message} (not on the allow list)", src, evidence=decision.name,
                          severity=Severity.LOW)
