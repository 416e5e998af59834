"""PaddlePaddle inference programs: the legacy ProgramDesc protobuf (`.pdmodel`) walked from the wire format,
and the PIR program JSON (`model.json`, `{"base_code": {"magic": "pir"}}`); never with Paddle.

Each op is judged by `rules/paddle.toml`: ops that read or write host files (`save`, `load`, `*_combine`,
`read_file`) or call back into Python (`py_func`) are findings with the block and op index; legacy ops that
Paddle does not register are unknown. `.pdparams` / `.pdopt` / `.pdiparams.info` are pickles (the engine).
Field numbers: paddle/fluid/framework/framework.proto (ProgramDesc, BlockDesc, OpDesc, OpDesc.Attr).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from scanner.findings import Finding, Severity
from scanner.formats.op_rules import OpRules, op_rules
from scanner.formats.tensorflow.savedmodel import ProtoError, _Budget, _fields, message_shape
from scanner.source import Source

if TYPE_CHECKING:
    from scanner.context import ScanContext

PROGRAM = {1: 2, 4: 2, 5: 2}                 # blocks, version, op_version_map
BLOCK = {1: 0, 2: 0, 3: 2, 4: 2, 5: 0}        # idx, parent_idx, vars, ops, forward_block_idx
_MAX_NAME = 4096
PATH_ATTRS = (b"file_path", b"filename")  # save/load/*_combine, read_file


def looks_like_program(src: Source) -> bool:
    """Only ProgramDesc fields to the end of the file; the first block has only BlockDesc fields and ops."""
    inner = message_shape(src, PROGRAM, 1)
    if inner is None or any(BLOCK.get(n) != w for n, w in inner.items()):
        return False
    return 4 in inner and 1 in inner


def _rules(ctx: ScanContext) -> OpRules:
    return op_rules(ctx, "paddle")


def analyze(src: Source, ctx: ScanContext) -> Iterator[Finding]:
    rules = _rules(ctx)
    budget = _Budget(ctx.limits.max_proto_fields, ctx.limits.max_graph_nodes)
    findings: list[Finding] = []
    unknown: dict[str, str] = {}
    n_ops = 0
    try:
        for b, (num, wtype, off, length) in enumerate(_fields(src, 0, src.size, budget)):
            if num != 1 or wtype != 2:
                continue
            i = 0
            for bnum, bw, boff, blen in _fields(src, off, off + length, budget):
                if bnum != 4 or bw != 2:
                    continue
                budget.nodes -= 1
                if budget.nodes < 0:
                    raise ProtoError("max_graph_nodes")
                n_ops += 1
                op, path = _op(src, boff, boff + blen, budget)
                where = f"block[{b}].ops[{i}]"
                i += 1
                hit = rules.ops.get(op)
                if hit is not None:
                    findings.append(_judged(ctx, src, op, where, hit, path))
                elif op not in rules.registered:
                    unknown.setdefault(op, where)
    except ProtoError as e:
        rule = "LIMIT-EXCEEDED" if str(e) in ("max_proto_fields", "max_graph_nodes") else "PADDLE-MALFORMED"
        findings.append(ctx.finding(rule, f"Paddle program walk stopped: {e}", src, evidence=str(e)[:300]))
    yield from findings
    for op, where in sorted(unknown.items()):
        yield ctx.finding("PADDLE-UNKNOWN-OP", f"op {op!r} is not registered by Paddle: a custom operator from "
                          "a library the serving host loads, or a renamed op", src, evidence=f"op={op} at={where}")
    yield ctx.finding("PADDLE-PROGRAM", f"Paddle program walked: {n_ops} ops", src)


def _op(src: Source, start: int, end: int, budget: _Budget) -> tuple[str, str | None]:
    """OpDesc.type (3) and a string path attribute (Attr: name 1, s 5) when present."""
    op, path = "", None
    for num, wtype, off, length in _fields(src, start, end, budget):
        if num == 3 and wtype == 2:
            op = src.read_at(off, min(length, _MAX_NAME)).decode("utf-8", "backslashreplace")
        elif num == 4 and wtype == 2:
            name, value = None, None
            for anum, aw, aoff, alen in _fields(src, off, off + length, budget):
                if anum == 1 and aw == 2:
                    name = src.read_at(aoff, min(alen, _MAX_NAME))
                elif anum == 5 and aw == 2:
                    value = src.read_at(aoff, min(alen, _MAX_NAME))
            if name in PATH_ATTRS and value is not None:
                path = value.decode("utf-8", "backslashreplace")
    return op, path


def _judged(ctx: ScanContext, src: Source, op: str, where: str, hit: tuple[str, str, str],
            path: str | None) -> Finding:
    rule_id, severity, reason = hit
    evidence = f"op={op} at={where}" + (f" file_path={path}" if path is not None else "")
    return ctx.finding(rule_id, f"op {op}: {reason}", src, evidence=evidence, severity=Severity(severity))


def is_pir_program(doc: object) -> bool:
    return (isinstance(doc, dict) and isinstance(doc.get("base_code"), dict)
            and doc["base_code"].get("magic") == "pir" and "program" in doc)


def pir_findings(doc: dict[str, Any], src: Source, ctx: ScanContext) -> Iterator[Finding]:
    """PIR JSON: ops are `{"#": "<dialect id>.<name>", "A": [attrs] ...}` nested in regions and blocks. Names
    are judged by the same op rules (PIR keeps the legacy names of file and Python ops)."""
    rules = _rules(ctx)
    budget = ctx.limits.max_graph_nodes
    stack: list[tuple[object, str]] = [(doc["program"], "program")]
    while stack:
        node, where = stack.pop()
        budget -= 1
        if budget < 0:
            yield ctx.finding("LIMIT-EXCEEDED", "Paddle PIR program walk stopped at max_graph_nodes", src,
                              evidence="max_graph_nodes")
            return
        if isinstance(node, list):
            stack.extend((v, f"{where}[{i}]") for i, v in enumerate(node))
        elif isinstance(node, dict):
            tag = node.get("#")
            if isinstance(tag, str) and "." in tag and isinstance(node.get("A"), list):
                name = tag.split(".", 1)[1]
                hit = rules.ops.get(name)
                if hit is not None:
                    yield _judged(ctx, src, name, where, hit, _pir_file_path(node["A"]))
            stack.extend((v, f"{where}.{k}") for k, v in node.items() if isinstance(v, (dict, list)))


def _pir_file_path(attrs: list[Any]) -> str | None:
    for a in attrs:
        if isinstance(a, dict) and a.get("N") in ("file_path", "filename") and isinstance(a.get("AT"), dict):
            return str(a["AT"].get("D"))[:200]
    return None
