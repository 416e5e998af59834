"""MXNet symbol graphs (`<prefix>-symbol.json`: mx.sym.load, gluon.SymbolBlock.imports, mx.mod.Module.load),
nnvm's JSON graph (nnvm/src/core/graph_json.cc; MXNet's legacy_json_util.cc upgrades old `attr`/`param` keys).

Detected by content: a JSON object whose first key is one nnvm's graph reader knows (dmlc refuses unknown
keys) and which holds `nodes`, `arg_nodes` and `heads` (the keys it requires; dmlc's JSON reader does not
decode escapes in keys, so the raw key bytes are what it matches). Every node of the
graph and of its subgraphs (control-flow ops) is judged by op name: `Custom` calls registered Python,
unregistered ops need a native operator library.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from scanner.findings import Finding, Severity
from scanner.formats.op_rules import OpRules, op_rules
from scanner.record import field, record
from scanner.source import Source

if TYPE_CHECKING:
    from scanner.context import ScanContext

KEYS = (b'"nodes"', b'"arg_nodes"', b'"heads"')
# dmlc's JSONObjectReadHelper refuses unknown keys, so the first key of a graph nnvm reads is one of these
FIRST_KEY = re.compile(rb'\s*\{\s*"(nodes|arg_nodes|node_row_ptr|heads|attrs)"\s*:')
SNIFF_BYTES = 64 << 20
CHUNK = 1 << 20
ATTR_KEYS = ("attrs", "attr", "param")


def looks_like_symbol(src: Source, head: bytes) -> bool:
    """A JSON object whose first key is a graph key and whose first SNIFF_BYTES hold the three keys nnvm
    requires (only files passing the cheap first-key test are read further)."""
    if FIRST_KEY.match(head.removeprefix(b"\xef\xbb\xbf")) is None:
        return False
    missing = set(KEYS)
    pos, tail = 0, b""
    while pos < min(src.size, SNIFF_BYTES) and missing:
        chunk = tail + src.read_at(pos, CHUNK)
        missing = {k for k in missing if k not in chunk}
        pos += CHUNK
        tail = chunk[-16:]
    return not missing


def _rules(ctx: ScanContext) -> OpRules:
    return op_rules(ctx, "mxnet")


@record
class _Walk:
    src: Source
    ctx: ScanContext
    rules: OpRules
    findings: list[Finding] = field(default_factory=list)
    unknown: dict[str, str] = field(default_factory=dict)
    nodes: int = 0

    def graph(self, g: Any, where: str, depth: int) -> None:
        if depth > self.ctx.limits.max_graph_depth:
            self.findings.append(self.ctx.finding("LIMIT-EXCEEDED", f"subgraphs nested deeper than max_graph_depth "
                                                  f"at {where}; not walked", self.src, evidence="max_graph_depth"))
            return
        if not isinstance(g, dict) or not isinstance(g.get("nodes"), list):
            self.malformed(f"{where}: a graph without a `nodes` list")
            return
        for i, node in enumerate(g["nodes"]):
            self.node(node, f"{where}.nodes[{i}]", depth)

    def node(self, node: Any, where: str, depth: int) -> None:
        self.nodes += 1
        if self.nodes > self.ctx.limits.max_graph_nodes:
            raise _Stop("max_graph_nodes")
        if not isinstance(node, dict) or not isinstance(node.get("op"), str):
            self.malformed(f"{where}: a node without an `op` string")
            return
        op, name = node["op"], str(node.get("name", "?"))[:200]
        path = f"{where}({name})"
        if op != "null":
            self.judge(op, path, node)
        subgraphs = node.get("subgraphs", [])
        if not isinstance(subgraphs, list):
            self.malformed(f"{path}: `subgraphs` is not a list")
            return
        for j, sub in enumerate(subgraphs):
            self.graph(sub, f"{path}.subgraphs[{j}]", depth + 1)

    def judge(self, op: str, path: str, node: dict[str, Any]) -> None:
        rule = self.rules.ops.get(op)
        if rule is not None:
            rule_id, severity, reason = rule
            evidence = f"op={op} node={path}"
            for key in ATTR_KEYS:
                attrs = node.get(key)
                if isinstance(attrs, dict):
                    for a in ("op_type", "filename"):
                        if a in attrs:
                            evidence += f" {a}={str(attrs[a])[:200]}"
            self.findings.append(self.ctx.finding(rule_id, f"op {op}: {reason}", self.src, evidence=evidence,
                                                  severity=Severity(severity)))
        elif op not in self.rules.registered:
            self.unknown.setdefault(op, path)

    def malformed(self, message: str) -> None:
        self.findings.append(self.ctx.finding("MXNET-MALFORMED", message, self.src))


class _Stop(Exception):
    pass


def analyze(src: Source, ctx: ScanContext) -> Iterator[Finding]:
    if src.size > ctx.limits.max_header_bytes:
        yield ctx.finding("LIMIT-EXCEEDED", f"MXNet graph of {src.size} bytes exceeds max_header_bytes; not walked",
                          src, evidence="max_header_bytes")
        return
    from scanner.sniff import json_loads_strict

    try:
        doc = json_loads_strict(src.read_all(ctx.limits.max_read_bytes))
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        yield ctx.finding("MXNET-MALFORMED", f"not strict JSON: {str(e)[:200]}", src)
        return
    walk = _Walk(src, ctx, _rules(ctx))
    if not isinstance(doc, dict) or not all(k in doc for k in ("nodes", "arg_nodes", "heads")):
        walk.malformed("not an nnvm graph: `nodes`, `arg_nodes` and `heads` are required")
    try:
        walk.graph(doc, "graph", 0)
    except _Stop as e:
        walk.findings.append(ctx.finding("LIMIT-EXCEEDED", f"graph walk stopped at {e}", src, evidence=str(e)))
    yield from walk.findings
    for op, path in sorted(walk.unknown.items()):
        yield ctx.finding("MXNET-UNKNOWN-OP", f"op {op[:200]!r} is not registered by MXNet: a custom operator "
                          "library (native code) or a renamed op", src, evidence=f"op={op[:200]} node={path}")
    yield ctx.finding("MXNET-GRAPH", f"MXNet graph walked: {walk.nodes} nodes", src)
