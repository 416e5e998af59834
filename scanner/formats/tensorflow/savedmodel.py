"""TensorFlow SavedModel (`saved_model.pb`) and frozen GraphDef (`.pb`): walked from the protobuf wire
format, without TensorFlow.

Every graph and every function of the function library is visited; each node's op is judged by
`rules/tensorflow.toml`: ops that read or write files, list directories or call back into Python are
findings with the node path, ops TensorFlow does not register are unknown. Keras layer metadata carried in
the object graph (`SavedUserObject.metadata`, JSON) goes through the Keras config checks.
Field numbers: tensorflow/core/protobuf/{saved_model,meta_graph,saved_object_graph}.proto,
tensorflow/core/framework/{graph,node_def,function,op_def}.proto.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from scanner.findings import Finding
from scanner.protowire import read_varint
from scanner.record import record
from scanner.source import Source

if TYPE_CHECKING:
    from scanner.context import ScanContext

# message -> {field number: wire type}; only the fields this walker follows or checks
SAVED_MODEL = {1: 0, 2: 2}                          # schema version, meta_graphs
GRAPH_DEF = {1: 2, 2: 2, 3: 0, 4: 2}                # node, library, version, versions
META_GRAPH = {1: 2, 2: 2, 3: 2, 4: 2, 5: 2, 6: 2, 7: 2}  # ... graph_def=2 ... object_graph_def=7
_GRAPH_DEF, _LIBRARY, _NODE, _FUNCTION, _FUNC_NODE = 2, 2, 1, 1, 3
_OBJECT_GRAPH, _OBJ_NODES, _USER_OBJECT = 7, 1, 4
_MAX_NAME = 4096


class ProtoError(ValueError):
    pass


@record
class _Budget:
    fields: int
    nodes: int


def _fields(src: Source, start: int, end: int, budget: _Budget) -> Iterator[tuple[int, int, int, int]]:
    """(number, wire type, payload offset, payload length) of each field in [start, end); strict."""
    pos = start
    while pos < end:
        budget.fields -= 1
        if budget.fields < 0:
            raise ProtoError("max_proto_fields")
        window = src.read_at(pos, 20)
        try:
            tag, p = read_varint(window, 0)
        except ValueError as e:
            raise ProtoError(str(e)) from None
        num, wtype = tag >> 3, tag & 7
        if num == 0:
            raise ProtoError("field number 0")
        if wtype == 0:
            try:
                _, p2 = read_varint(window, p)
            except ValueError as e:
                raise ProtoError(str(e)) from None
            yield num, wtype, pos + p, p2 - p
            pos += p2
        elif wtype in (1, 5):
            n = 8 if wtype == 1 else 4
            yield num, wtype, pos + p, n
            pos += p + n
        elif wtype == 2:
            try:
                length, p2 = read_varint(window, p)
            except ValueError as e:
                raise ProtoError(str(e)) from None
            yield num, wtype, pos + p2, length
            pos += p2 + length
        else:
            raise ProtoError(f"unsupported wire type {wtype}")
        if pos > end:
            raise ProtoError("field runs past the end of its message")


def message_shape(src: Source, top: dict[int, int], first: int) -> dict[int, int] | None:
    """Protobuf sniffing shared by the TensorFlow and Paddle readers: every top-level field is one of `top`
    (number -> wire type) up to the end of the file, and the first field `first` is a message; returns its
    fields (number -> wire type), or None when the bytes are not of that shape. A walk that runs into the
    field bound after a plausible start counts as the shape (padding must not turn a model into data)."""
    budget = _Budget(10_000, 0)
    span: tuple[int, int] | None = None
    inner: dict[int, int] = {}
    try:
        for num, wtype, off, length in _fields(src, 0, src.size, budget):
            if top.get(num) != wtype:
                return None
            if num == first and span is None:
                span = (off, length)
        if span is None:
            return None
        for num, wtype, _off, _length in _fields(src, span[0], span[0] + span[1], budget):
            if inner.setdefault(num, wtype) != wtype:
                return None
    except ProtoError as e:
        return inner if str(e) == "max_proto_fields" and span is not None else None
    return inner


def looks_like_saved_model(src: Source) -> bool:
    """A SavedModel: only fields 1 (varint) and 2 (messages), to the end of the file, and the first
    MetaGraphDef holds a graph_def or an object graph, each of its fields of the right wire type."""
    inner = message_shape(src, SAVED_MODEL, 2)
    if inner is None or any(META_GRAPH[n] != w for n, w in inner.items() if n in META_GRAPH):
        return False
    return bool(inner.keys() & {_GRAPH_DEF, _OBJECT_GRAPH})


def looks_like_graph_def(src: Source) -> bool:
    """A frozen GraphDef (tf.compat.v1 `import_graph_def` input): only GraphDef fields, to the end of the
    file, and a first node with a name and an op (NodeDef.name = 1, op = 2)."""
    inner = message_shape(src, GRAPH_DEF, 1)
    return inner is not None and inner.get(1) == 2 and inner.get(2) == 2


@record(frozen=True)
class _Rules:
    ops: dict[str, tuple[str, str, str]]  # op -> (rule id, severity, reason)
    registered: frozenset[str]


def _rules(ctx: ScanContext) -> _Rules:
    def build() -> _Rules:
        doc = ctx.rules.doc("tensorflow")
        ops = {e["op"]: (e["rule"], e["severity"], e["reason"]) for e in doc.get("op", [])}
        return _Rules(ops, frozenset(doc.get("registered_ops", {}).get("ops", [])))
    return ctx.rules.cached("tensorflow", build)  # type: ignore[no-any-return]


def analyze(src: Source, ctx: ScanContext) -> Iterator[Finding]:
    budget = _Budget(ctx.limits.max_proto_fields, ctx.limits.max_graph_nodes)
    walker = _Walker(src, ctx, _rules(ctx), budget)
    try:
        if looks_like_saved_model(src):
            walker.saved_model()
        else:
            walker.graph_def(0, src.size, "graph_def")
    except ProtoError as e:
        if str(e) in ("max_proto_fields", "max_graph_nodes"):
            walker.findings.append(ctx.finding("LIMIT-EXCEEDED", f"SavedModel walk stopped at {e}; the rest of "
                                               "the graph was not checked", src, evidence=str(e)))
        else:
            walker.findings.append(ctx.finding("TF-MALFORMED", "not a parseable SavedModel", src,
                                               evidence=str(e)[:300]))
    yield from walker.findings
    yield from walker.summary()


class _Walker:
    def __init__(self, src: Source, ctx: ScanContext, rules: _Rules, budget: _Budget) -> None:
        self.src, self.ctx, self.rules, self.budget = src, ctx, rules, budget
        self.findings: list[Finding] = []
        self.nodes = 0
        self.functions = 0
        self.unknown: dict[str, str] = {}

    def saved_model(self) -> None:
        mg = 0
        for num, _w, off, length in _fields(self.src, 0, self.src.size, self.budget):
            if num == 2:
                self.meta_graph(off, off + length, f"meta_graphs[{mg}]")
                mg += 1

    def meta_graph(self, start: int, end: int, where: str) -> None:
        for num, wtype, off, length in _fields(self.src, start, end, self.budget):
            if wtype != 2:
                continue
            if num == _GRAPH_DEF:
                self.graph_def(off, off + length, f"{where}.graph_def")
            elif num == _OBJECT_GRAPH:
                self.object_graph(off, off + length, f"{where}.object_graph_def")

    def graph_def(self, start: int, end: int, where: str) -> None:
        for num, wtype, off, length in _fields(self.src, start, end, self.budget):
            if wtype != 2:
                continue
            if num == _NODE:
                self.node(off, off + length, where)
            elif num == _LIBRARY:
                for fnum, fw, foff, flen in _fields(self.src, off, off + length, self.budget):
                    if fnum == _FUNCTION and fw == 2:
                        self.function(foff, foff + flen, f"{where}.library")

    def function(self, start: int, end: int, where: str) -> None:
        self.functions += 1
        name = "?"
        nodes: list[tuple[int, int]] = []
        for num, wtype, off, length in _fields(self.src, start, end, self.budget):
            if num == 1 and wtype == 2:  # signature: OpDef, name = 1
                for snum, sw, soff, slen in _fields(self.src, off, off + length, self.budget):
                    if snum == 1 and sw == 2:
                        name = self.string(soff, slen)
            elif num == _FUNC_NODE and wtype == 2:
                nodes.append((off, off + length))
        for s, e in nodes:
            self.node(s, e, f"{where}.function[{name}]")

    def node(self, start: int, end: int, where: str) -> None:
        self.nodes += 1
        self.budget.nodes -= 1
        if self.budget.nodes < 0:
            raise ProtoError("max_graph_nodes")
        name, op, attrs = "?", "", []
        for num, wtype, off, length in _fields(self.src, start, end, self.budget):
            if wtype != 2:
                continue
            if num == 1:
                name = self.string(off, length)
            elif num == 2:
                op = self.string(off, length)
            elif num == 5:
                attrs.append((off, length))
        self.judge(op, f"{where}/{name}", attrs)

    def judge(self, op: str, path: str, attrs: list[tuple[int, int]]) -> None:
        rule = self.rules.ops.get(op)
        if rule is not None:
            rule_id, severity, reason = rule
            from scanner.findings import Severity

            evidence = f"op={op} node={path}"
            token = self.attr_string(attrs, "token")
            if token:
                evidence += f" token={token}"
            self.findings.append(self.ctx.finding(rule_id, f"op {op}: {reason}", self.src, evidence=evidence,
                                                  severity=Severity(severity)))
        elif op not in self.rules.registered:
            self.unknown.setdefault(op, path)

    def attr_string(self, attrs: list[tuple[int, int]], key: str) -> str | None:
        """The string value (AttrValue.s = 2) of map entry `key` in a NodeDef's attr map."""
        for off, length in attrs:
            k, value = None, None
            for num, wtype, o, n in _fields(self.src, off, off + length, self.budget):
                if num == 1 and wtype == 2:
                    k = self.string(o, n)
                elif num == 2 and wtype == 2:
                    value = (o, n)
            if k == key and value is not None:
                for num, wtype, o, n in _fields(self.src, value[0], value[0] + value[1], self.budget):
                    if num == 2 and wtype == 2:
                        return self.string(o, n)
        return None

    def object_graph(self, start: int, end: int, where: str) -> None:
        for num, wtype, off, length in _fields(self.src, start, end, self.budget):
            if num != _OBJ_NODES or wtype != 2:
                continue
            for onum, ow, ooff, olen in _fields(self.src, off, off + length, self.budget):
                if onum == _USER_OBJECT and ow == 2:
                    self.user_object(ooff, ooff + olen, where)

    def user_object(self, start: int, end: int, where: str) -> None:
        identifier, metadata = "", None
        for num, wtype, off, length in _fields(self.src, start, end, self.budget):
            if num == 1 and wtype == 2:
                identifier = self.string(off, length)
            elif num == 3 and wtype == 2 and length:
                metadata = (off, length)
        if metadata is None:
            return
        off, length = metadata
        if length > self.ctx.limits.max_header_bytes:
            raise ProtoError("max_header_bytes")
        raw = self.src.read_at(off, length)
        from scanner.sniff import json_loads_strict

        try:
            config: Any = json_loads_strict(raw)
        except ValueError as e:
            self.findings.append(self.ctx.finding("TF-MALFORMED", "Keras metadata in the object graph is not "
                                                  "strict JSON", self.src, offset=off, evidence=str(e)[:200]))
            return
        from scanner.formats.hdf5.keras import walk_config

        self.findings.extend(walk_config(config, self.src, self.ctx, f"{where} {identifier}", off))

    def string(self, off: int, length: int) -> str:
        raw = self.src.read_at(off, min(length, _MAX_NAME))
        return raw.decode("utf-8", "backslashreplace")

    def summary(self) -> Iterator[Finding]:
        for op, path in sorted(self.unknown.items()):
            yield self.ctx.finding("TF-UNKNOWN-OP", f"op {op!r} is not registered by TensorFlow: a custom kernel "
                                   "loaded from a library, or a renamed op", self.src, evidence=f"op={op} node={path}")
        yield self.ctx.finding("TF-GRAPH", f"graph walked: {self.nodes} nodes in graphs and "
                               f"{self.functions} functions", self.src)

