"""Config files that make other loaders instantiate code (K10): Keras JSON outside an archive, Hydra /
OmegaConf configs (`_target_`, any file name, YAML or JSON), PyYAML python tags, skops `schema.json` type
references.

Names are judged by the pickle allow/deny tables: the same import decides the same way whichever
deserializer performs it. Python tags are found in the text; Hydra targets in the composed YAML tree
(`sidecars.hydra`), or by lines where PyYAML is not installed.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from typing import Any

from scanner.findings import Finding, Severity
from scanner.source import Source

_TARGET_LINE = re.compile(r"""["']?_target_["']?[ \t]*:[ \t]*([^\n,}]*)""")
_PLAIN_NAME = re.compile(r"[A-Za-z_][\w.]*\Z")
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
    yield from hydra_text_findings(text, src, ctx)


def hydra_text_findings(text: str, src: Source, ctx: Any) -> Iterator[Finding]:
    """`_target_` keys of a config OmegaConf.load may read (whatever the file is called)."""
    from scanner.formats.sidecars import hydra

    try:
        roots = hydra.compose(text)
    except ValueError:  # OmegaConf.load cannot parse it either; plain targets are still reported
        if "_target_" in text:
            yield from _line_targets(text, src, ctx)
        return
    except hydra.TooLarge:
        yield ctx.finding("LIMIT-EXCEEDED", "config too large; Hydra targets not analyzed", src,
                          evidence="yaml nodes")
        return
    if roots is None:  # no PyYAML: lines, and any target the line test cannot name is reported
        yield from _line_targets(text, src, ctx, strict=True)
        return
    yield from hydra_findings(roots, src, ctx)


def hydra_findings(roots: list[object], src: Source, ctx: Any) -> Iterator[Finding]:
    """Each target instantiate() would import and call, judged as a call (a class runs its __init__)."""
    from scanner.formats.sidecars import hydra

    classifier = _classifier(ctx)
    n = 0
    try:
        for t in hydra.targets(roots):
            if n >= _MAX_FINDINGS:
                return
            n += 1
            where = f" (at {t.path})" if t.path else ""
            if t.unresolved:
                yield ctx.finding("SIDECAR-CONFIG-INSTANTIATION",
                                  f"`_target_: {t.raw[:120]}`{where} {t.unresolved}: instantiate() imports and "
                                  "calls whatever it resolves to at load time", src, evidence=t.raw[:200],
                                  severity=Severity.HIGH)
            for name in t.names:
                how = f" (resolved from {t.raw[:120]!r})" if name != t.raw else ""
                yield from _judge(ctx, src, classifier.classify(name), "SIDECAR-CONFIG-INSTANTIATION",
                                  f"`_target_: {name}`{how}{where}: Hydra / OmegaConf instantiate() imports and "
                                  "calls it", calls=classifier)
    except hydra.TooLarge:
        yield ctx.finding("LIMIT-EXCEEDED", "config too large; Hydra targets not analyzed", src,
                          evidence="config nodes")


def _line_targets(text: str, src: Source, ctx: Any, *, strict: bool = False) -> Iterator[Finding]:
    classifier = _classifier(ctx)
    for n, m in enumerate(_TARGET_LINE.finditer(text)):
        if n >= _MAX_FINDINGS:
            return
        name = m.group(1).strip().strip("'\"")
        if strict and not _PLAIN_NAME.match(name):
            yield ctx.finding("SIDECAR-CONFIG-INSTANTIATION", f"`_target_: {name[:120]}` not analyzed (PyYAML "
                              "is not installed to read it as OmegaConf does)", src, evidence=name[:200],
                              severity=Severity.MEDIUM)
        elif _PLAIN_NAME.match(name):
            yield from _judge(ctx, src, classifier.classify(name), "SIDECAR-CONFIG-INSTANTIATION",
                              f"`_target_: {name}`: Hydra / OmegaConf instantiate() imports and calls it",
                              calls=classifier)


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


def _judge(ctx: Any, src: Source, decision: Any, rule: str, message: str, *, calls: Any = None
           ) -> Iterator[Finding]:
    if decision.status == "allow":
        # instantiate() runs __init__: a class allowed only for reconstruction is worth a note
        when_called = calls.construct_only(decision.name) if calls is not None else None
        if when_called is not None:
            yield ctx.finding(rule, f"{message}: {when_called.reason}", src, evidence=decision.name,
                              severity=Severity.LOW)
        return
    if decision.status == "deny":
        yield ctx.finding(rule, f"{message}: {decision.reason}", src, evidence=decision.name,
                          severity=decision.severity, reference=decision.reference)
    elif calls is not None and _io_name(ctx, decision.name):
        conf = ctx.rules.doc("sidecar").get("sidecar", {})
        yield ctx.finding(rule, f"{message}: {conf.get('hydra_io_reason', 'named like a file writer')}", src,
                          evidence=decision.name, severity=Severity.MEDIUM)
    elif calls is not None and decision.name.split(".")[0] in sys.stdlib_module_names:
        # the standard library is where call gadgets live (wave.open / uu.encode write the files a config
        # names); honest configs call their own packages and ML libraries
        yield ctx.finding(rule, f"{message}: a standard-library callable not on the allow list", src,
                          evidence=decision.name, severity=Severity.MEDIUM)
    else:
        yield ctx.finding(rule, f"{message} (not on the allow list)", src, evidence=decision.name,
                          severity=Severity.LOW)


def _io_name(ctx: Any, name: str) -> bool:
    import fnmatch

    pats = ctx.rules.doc("sidecar").get("sidecar", {}).get("hydra_io_names", [])
    last = name.rsplit(".", 1)[-1]
    return any(fnmatch.fnmatchcase(last, p) for p in pats)
