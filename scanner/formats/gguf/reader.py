"""GGUF: bounded header / key-value / tensor-info parser (U02) and chat-template analysis (U01).

Nothing is allocated by a declared count or length: every count is checked against the bytes left in the
file (and the limits) before it is used, and values are skipped rather than materialised, except the few
keys we inspect (general.alignment, tokenizer.chat_template*).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from scanner.findings import Finding, Severity
from scanner.source import LimitExceeded, Source

if TYPE_CHECKING:
    from scanner.context import ScanContext

RULES = "gguf"
BLOCK = 1 << 20
MAX_PER_RULE = 20
INT64_MAX = (1 << 63) - 1
U64 = 1 << 64
T_UINT32, T_BOOL, T_STRING, T_ARRAY = 4, 7, 8, 9
SCALAR_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
SCALAR_FMT = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "B", 10: "Q", 11: "q", 12: "d"}
TYPE_NAMES = {0: "uint8", 1: "int8", 2: "uint16", 3: "int16", 4: "uint32", 5: "int32", 6: "float32", 7: "bool",
              8: "string", 9: "array", 10: "uint64", 11: "int64", 12: "float64"}
NOT_CODE = ("data", "text", "empty")
TEMPLATE_KINDS = {"escape": "GGUF-TEMPLATE-SSTI", "dunder": "GGUF-TEMPLATE-DUNDER",
                  "escape-string": "GGUF-TEMPLATE-DUNDER", "dynamic": "GGUF-TEMPLATE-DYNAMIC-ATTR",
                  "sink": "GGUF-TEMPLATE-SUSPICIOUS", "gadget": "GGUF-TEMPLATE-SUSPICIOUS",
                  "load": "GGUF-TEMPLATE-SUSPICIOUS", "malformed": "GGUF-TEMPLATE-MALFORMED"}


class _Stop(Exception):
    """Parsing cannot go on: carries the finding that explains why."""

    def __init__(self, rule: str, message: str, offset: int, evidence: str | None = None) -> None:
        super().__init__(message)
        self.rule, self.message, self.offset, self.evidence = rule, message, offset, evidence


@dataclass(frozen=True)
class GgmlType:
    name: str
    block: int
    nbytes: int


@dataclass(frozen=True)
class Tables:
    max_dims: int
    default_alignment: int
    template_keys: frozenset[str]
    template_prefixes: tuple[str, ...]
    template_words: tuple[str, ...]  # any key containing one of these (case-insensitive) holds a template
    ggml: dict[int, GgmlType]


def _tables(ctx: ScanContext) -> Tables:
    def build() -> Tables:
        doc = ctx.rules.doc(RULES)
        g = doc.get("gguf", {})
        types = {int(k): GgmlType(v["name"], int(v["block"]), int(v["bytes"]))
                 for k, v in doc.get("ggml_types", {}).items()}
        return Tables(int(g.get("max_dims", 4)), int(g.get("default_alignment", 32)),
                      frozenset(g.get("template_keys", [])), tuple(g.get("template_key_prefixes", [])),
                      tuple(w.lower() for w in g.get("template_key_words", [])), types)

    return ctx.rules.cached("gguf.tables", build)  # type: ignore[no-any-return]


class _Cursor:
    """Sequential reads through a 1 MiB window; never past the end of the source."""

    def __init__(self, src: Source, big: bool, pos: int) -> None:
        self.src, self.pos = src, pos
        self.e = ">" if big else "<"
        self.buf, self.buf_off = b"", 0

    @property
    def left(self) -> int:
        return self.src.size - self.pos

    def take(self, n: int, what: str) -> bytes:
        if n > self.left:
            raise _Stop("GGUF-MALFORMED", f"truncated: {what} needs {n} bytes, {self.left} left", self.pos)
        rel = self.pos - self.buf_off
        if not (0 <= rel and rel + n <= len(self.buf)):
            if n > BLOCK:
                data = self.src.read_at(self.pos, n)
                self.pos += n
                return data
            self.buf, self.buf_off, rel = self.src.read_at(self.pos, BLOCK), self.pos, 0
        self.pos += n
        return self.buf[rel:rel + n]

    def window(self, need: int) -> tuple[bytes, int]:
        """The buffer and the position in it, holding at least `need` bytes (refilled when not)."""
        rel = self.pos - self.buf_off
        if not (0 <= rel and rel + need <= len(self.buf)):
            self.buf, self.buf_off, rel = self.src.read_at(self.pos, max(BLOCK, need)), self.pos, 0
        return self.buf, rel

    def skip(self, n: int, what: str) -> None:
        if n > self.left:
            raise _Stop("GGUF-MALFORMED", f"truncated: {what} needs {n} bytes, {self.left} left", self.pos)
        self.pos += n

    def scalar(self, t: int, what: str) -> Any:
        return struct.unpack(self.e + SCALAR_FMT[t], self.take(SCALAR_SIZES[t], what))[0]

    def u32(self, what: str) -> int:
        return self.scalar(4, what)  # type: ignore[no-any-return]

    def u64(self, what: str) -> int:
        return self.scalar(10, what)  # type: ignore[no-any-return]


@dataclass
class _State:
    ctx: ScanContext
    src: Source
    tables: Tables
    cur: _Cursor
    version: int
    out: list[Finding] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    values: dict[str, tuple[int, Any]] = field(default_factory=dict)
    templates: list[tuple[str, int, Any]] = field(default_factory=list)  # every occurrence, duplicates too
    arrays: dict[str, tuple[int, int, int]] = field(default_factory=dict)  # key -> element type, count, offset

    def add(self, rule: str, message: str, offset: int | None, evidence: str | None = None,
            severity: Severity | None = None) -> None:
        n = self.counts[rule] = self.counts.get(rule, 0) + 1
        if n <= MAX_PER_RULE:
            self.out.append(self.ctx.finding(rule, message, self.src, offset=offset, evidence=evidence,
                                             severity=severity))

    def length(self, what: str) -> int:
        return self.cur.u32(what) if self.version == 1 else self.cur.u64(what)

    @property
    def len_size(self) -> int:
        return 4 if self.version == 1 else 8


def analyze(src: Source, ctx: ScanContext) -> Iterator[Finding]:
    head = src.head(8)
    if len(head) < 8:
        yield ctx.finding("GGUF-MALFORMED", f"{src.size} bytes: too short for a GGUF header", src, offset=0)
        return
    magic = head[:4]
    (ver_le,) = struct.unpack("<I", head[4:8])
    (ver_be,) = struct.unpack(">I", head[4:8])
    pre: list[Finding] = []
    if magic == b"FUGG":
        pre.append(ctx.finding("GGUF-MALFORMED", "byte-swapped magic 'FUGG': no writer produces it, readers "
                               "disagree on it", src, offset=0, evidence=head.hex()))
    if 1 <= ver_le <= 3:
        big, version = False, ver_le
    elif 1 <= ver_be <= 3:
        big, version = True, ver_be  # big-endian files keep the magic bytes and swap everything else
    else:
        yield from pre
        yield ctx.finding("GGUF-VERSION", f"unknown GGUF version {ver_le} (byte-swapped: {ver_be})", src, offset=4,
                          evidence=head.hex())
        return
    st = _State(ctx, src, _tables(ctx), _Cursor(src, big, 8), version)
    st.out.extend(pre)
    try:
        _parse(st)
    except _Stop as s:
        st.add(s.rule, s.message, s.offset, s.evidence)
    except LimitExceeded as e:
        st.out.append(ctx.finding("LIMIT-EXCEEDED", str(e), src, offset=st.cur.pos, evidence=e.limit))
    # templates parsed before a later error are still analyzed: a broken tail must not hide a payload
    for key, t, value in st.templates:
        _template(st, key, t, value)
    yield from st.out
    for rule, n in sorted(st.counts.items()):
        if n > MAX_PER_RULE:
            yield ctx.finding(rule, f"{n - MAX_PER_RULE} more {rule} findings not listed", src, evidence=f"total={n}")


def _limit(st: _State, name: str, value: int, what: str) -> None:
    bound = getattr(st.ctx.limits, name)
    if value > bound:
        raise LimitExceeded(name, f"{what} of {value} exceeds the limit of {bound}", st.src.loc(st.cur.pos))


def _parse(st: _State) -> None:
    cur = st.cur
    if st.version == 1:
        st.add("GGUF-VERSION", "GGUF version 1 is obsolete (32-bit lengths); current readers refuse it", 4,
               severity=Severity.LOW)
    n_tensors = st.length("tensor_count")
    n_kv = st.length("kv_count")
    min_kv = st.len_size + 4 + 1            # key length, value type, smallest value
    min_tensor = st.len_size + 4 + 4 + 8    # name length, n_dims, type, offset
    if n_kv * min_kv + n_tensors * min_tensor > cur.left:
        raise _Stop("GGUF-COUNT-OVERFLOW", f"kv_count {n_kv} and tensor_count {n_tensors} need at least "
                    f"{n_kv * min_kv + n_tensors * min_tensor} bytes, {cur.left} left", 8,
                    f"tensor_count={n_tensors} kv_count={n_kv}")
    _limit(st, "max_array_items", n_kv, "kv_count")
    _limit(st, "max_array_items", n_tensors, "tensor_count")
    values = st.values
    for _ in range(n_kv):
        _limit(st, "max_header_bytes", cur.pos, "GGUF metadata size")
        key_off = cur.pos
        key = _key(st, _string(st, "key"), key_off)
        t = cur.u32("value type")
        exact = key in st.tables.template_keys or key.startswith(st.tables.template_prefixes)
        value = _value(st, t, key, 0, keep_bytes=exact)
        if key in values:
            st.add("GGUF-DUPLICATE-KEY", f"metadata key {key[:120]!r} appears more than once", key_off, key[:200])
        values[key] = (t, value)
        if exact or t == T_STRING and any(w in key.lower() for w in st.tables.template_words):
            st.templates.append((key, t, value))
    alignment = _alignment(st, values)
    _well_known(st, values)
    spans = _tensor_infos(st, n_tensors, alignment)
    _layout(st, spans, alignment)


def _string(st: _State, what: str) -> bytes:
    off = st.cur.pos
    n = st.length(f"{what} length")
    if n > st.cur.left:
        raise _Stop("GGUF-STRING-OVERFLOW", f"{what} length {n} exceeds the {st.cur.left} bytes left", off,
                    f"length={n}")
    _limit(st, "max_string_bytes", n, f"{what} length")
    return st.cur.take(n, what)


def _key(st: _State, raw: bytes, off: int) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        st.add("GGUF-MALFORMED", "metadata key is not valid UTF-8", off, raw[:64].hex())
        return raw.decode("utf-8", "replace")


def _value(st: _State, t: int, key: str, depth: int, *, keep_bytes: bool = False) -> Any:
    """The value of scalars and strings; None for arrays, except byte arrays when `keep_bytes` (a template key
    holding uint8/int8 elements: type confusion whose bytes are still analyzed)."""
    cur = st.cur
    if t in SCALAR_SIZES:
        v = cur.scalar(t, f"{key} value")
        if t == T_BOOL and v not in (0, 1):
            st.add("GGUF-VALUE-TYPE", f"bool {key[:80]!r} holds {v}, not 0/1", cur.pos - 1, severity=Severity.MEDIUM)
        return v
    if t == T_STRING:
        return _string(st, f"{key[:80]} string")
    if t == T_ARRAY:
        off = cur.pos
        et = cur.u32("array element type")
        count = st.length("array length")
        if et == T_ARRAY:
            st.add("GGUF-VALUE-TYPE", f"{key[:80]!r} is a nested array (llama.cpp refuses, gguf-py accepts)", off)
            if depth + 1 > st.ctx.limits.max_json_depth:
                raise LimitExceeded("max_json_depth", "GGUF arrays nested too deeply", st.src.loc(off))
        elif et not in SCALAR_SIZES and et != T_STRING:
            raise _Stop("GGUF-VALUE-TYPE", f"{key[:80]!r} array of unknown element type {et}", off, f"type={et}")
        smallest = SCALAR_SIZES.get(et, st.len_size if et == T_STRING else 4 + st.len_size)
        if count * smallest > cur.left:
            raise _Stop("GGUF-ARRAY-OVERFLOW", f"{key[:80]!r} declares {count} elements of "
                        f"{TYPE_NAMES.get(et, et)}, more than the {cur.left} bytes left can hold", off,
                        f"count={count} element_type={et}")
        _limit(st, "max_array_items", count, f"{key[:80]} array length")
        if depth == 0:
            st.arrays[key] = (et, count, off)
        if et in (0, 1) and keep_bytes and depth == 0:
            return cur.take(count, f"{key[:80]} array")
        if et in SCALAR_SIZES:
            cur.skip(count * SCALAR_SIZES[et], f"{key[:80]} array")
        else:
            if et == T_ARRAY:
                for _ in range(count):
                    _value(st, et, key, depth + 1)
            else:
                _skip_strings(st, key, count)
        return None
    raise _Stop("GGUF-VALUE-TYPE", f"{key[:80]!r} has unknown value type {t}; the rest cannot be sized", cur.pos - 4,
                f"type={t}")


def _skip_strings(st: _State, key: str, count: int) -> None:
    """Skip `count` length-prefixed strings (vocabularies hold 100k+): a tight loop over the read window."""
    cur, ls = st.cur, st.len_size
    unpack = struct.Struct(cur.e + ("I" if ls == 4 else "Q")).unpack_from
    size, max_s = st.src.size, st.ctx.limits.max_string_bytes
    while count:
        if cur.left < ls:
            raise _Stop("GGUF-MALFORMED", f"truncated inside the string array {key[:80]!r}", cur.pos)
        buf, rel = cur.window(ls)
        base, end = cur.buf_off, len(buf)
        while count and rel + ls <= end:
            (n,) = unpack(buf, rel)
            left = size - (base + rel + ls)
            if n > left:
                cur.pos = base + rel
                raise _Stop("GGUF-STRING-OVERFLOW", f"string in {key[:80]!r} of length {n} exceeds the {left} "
                            "bytes left", cur.pos, f"length={n}")
            if n > max_s:
                cur.pos = base + rel
                _limit(st, "max_string_bytes", n, "string length")
            rel += ls + n
            count -= 1
        cur.pos = base + rel


def _alignment(st: _State, values: dict[str, tuple[int, Any]]) -> int:
    default = st.tables.default_alignment
    if "general.alignment" not in values:
        return default
    t, v = values["general.alignment"]
    if t != T_UINT32:
        st.add("GGUF-ALIGNMENT", f"general.alignment is {TYPE_NAMES.get(t, t)}, not uint32", 8, f"value={v!r}")
        return default
    if v == 0 or v & (v - 1):
        st.add("GGUF-ALIGNMENT", f"general.alignment {v} is not a non-zero power of two", 8, f"value={v}")
        return default
    limit = st.ctx.rules.doc(RULES).get("gguf", {}).get("max_alignment", 65536)
    if v > limit:
        st.add("GGUF-ALIGNMENT", f"general.alignment {v} is absurd (above {limit}): padding arithmetic runs "
               "offsets past the file", 8, f"value={v}")
    return int(v)


def _well_known(st: _State, values: dict[str, tuple[int, Any]]) -> None:
    """Keys C loaders read by casting (llama-vocab.cpp: gguf_get_arr_data cast to float* / int32*, indexed up
    to the token count; special token ids index the vocabulary): the type, element type and count the spec
    gives, or a finding (rules/gguf.toml [[gguf.well_known]])."""
    names = {v: k for k, v in TYPE_NAMES.items()}
    specs = st.ctx.rules.doc(RULES).get("gguf", {}).get("well_known", [])
    n_tokens = st.arrays.get("tokenizer.ggml.tokens", (None, None, 0))[1]
    for spec in specs:
        for key in spec["keys"]:
            if key not in values:
                continue
            t, v = values[key]
            want = names[spec["type"]]
            if t != want:
                st.add("GGUF-WELL-KNOWN-TYPE", f"{key} is {TYPE_NAMES.get(t, t)}, the spec says {spec['type']}",
                       None, f"key={key} type={t}")
                continue
            if t == T_ARRAY:
                et, count, off = st.arrays.get(key, (None, 0, 0))
                if et != names[spec["element"]]:
                    st.add("GGUF-WELL-KNOWN-TYPE", f"{key} holds {TYPE_NAMES.get(et, et)} elements, the spec says "
                           f"{spec['element']}: readers stride {spec['element']}-sized through smaller data", off,
                           f"key={key} element_type={et}")
                if spec.get("count") == "tokens" and n_tokens is not None and count != n_tokens:
                    st.add("GGUF-WELL-KNOWN-TYPE", f"{key} has {count} elements for {n_tokens} tokens: readers "
                           "index it by token id", off, f"key={key} count={count} tokens={n_tokens}")
            elif spec.get("below") == "tokens" and n_tokens is not None and isinstance(v, int) and v >= n_tokens:
                st.add("GGUF-WELL-KNOWN-TYPE", f"{key} = {v} is not a token id ({n_tokens} tokens)", None,
                       f"key={key} value={v} tokens={n_tokens}")


def _template(st: _State, key: str, t: int, value: Any) -> None:
    from scanner.formats.sidecars.jinja_template import analyze_template, classify_hits, template_rules

    if t != T_STRING:
        st.add("GGUF-TEMPLATE-MALFORMED", f"{key} is {TYPE_NAMES.get(t, t)}, not a string", None, key)
        if not isinstance(value, bytes):
            return
        key = f"{key} (as bytes)"  # readers that join the elements into text still get a template
    try:
        source = value.decode("utf-8")
    except UnicodeDecodeError:
        st.add("GGUF-TEMPLATE-MALFORMED", f"{key} is not valid UTF-8", None, key)
        return
    for rule, sev, message in classify_hits(analyze_template(source, template_rules(st.ctx.rules), st.ctx.limits), TEMPLATE_KINDS):
        st.add(rule, f"{key}: {message}", None, f"key={key} {message.split(' ', 1)[0]}", severity=sev)


@dataclass(frozen=True)
class _Span:
    name: str
    begin: int
    end: int
    padded_end: int


def _tensor_infos(st: _State, n_tensors: int, alignment: int) -> list[_Span]:
    cur, tables = st.cur, st.tables
    infos: list[tuple[str, int, int | None]] = []
    names: set[str] = set()
    for _ in range(n_tensors):
        _limit(st, "max_header_bytes", cur.pos, "GGUF header size")
        off = cur.pos
        name = _key(st, _string(st, "tensor name"), off)
        if name in names:
            st.add("GGUF-DUPLICATE-TENSOR", f"tensor {name[:120]!r} declared twice", off, name[:200])
        names.add(name)
        n_dims = cur.u32("n_dims")
        if n_dims > tables.max_dims:
            st.add("GGUF-TENSOR-DIMS", f"tensor {name[:80]!r} has {n_dims} dimensions (max {tables.max_dims})",
                   off, f"n_dims={n_dims}")
            if n_dims * 8 > cur.left:
                raise _Stop("GGUF-TENSOR-DIMS", f"n_dims {n_dims} runs past the end of the file", off)
        dims = [cur.u64("dimension") for _ in range(n_dims)]
        gtype = cur.u32("tensor type")
        t_off = cur.u64("tensor offset")
        nbytes = _tensor_size(st, name, dims, gtype, off)
        if t_off % alignment:
            st.add("GGUF-TENSOR-OFFSET", f"tensor {name[:80]!r} offset {t_off} is not a multiple of the "
                   f"alignment {alignment}", off, f"offset={t_off}")
        infos.append((name, t_off, nbytes))
    data_start = -(-cur.pos // alignment) * alignment
    data_len = st.src.size - data_start
    spans: list[_Span] = []
    for name, t_off, nbytes in infos:
        if nbytes is None:
            continue
        end = t_off + nbytes
        if end > data_len:
            st.add("GGUF-TENSOR-OFFSET", f"tensor {name[:80]!r} [{t_off}, {end}) runs past the "
                   f"{max(data_len, 0)}-byte data section" + (" (wraps 64 bits)" if end >= U64 else ""),
                   data_start, f"offset={t_off} nbytes={nbytes}")
            continue
        spans.append(_Span(name, data_start + t_off, data_start + end,
                           data_start + -(-end // alignment) * alignment))
    st.cur.pos = max(cur.pos, min(data_start, st.src.size))
    return spans


def _tensor_size(st: _State, name: str, dims: list[int], gtype: int, off: int) -> int | None:
    shown = name[:80]
    gt = st.tables.ggml.get(gtype)
    if gt is None:
        st.add("GGUF-TENSOR-TYPE", f"tensor {shown!r} has unknown ggml type {gtype}", off, f"type={gtype}")
    count = 1
    for d in dims:
        if d > INT64_MAX:
            st.add("GGUF-DIM-OVERFLOW", f"tensor {shown!r} dimension {d} is negative as int64", off,
                   f"dims={dims[:8]}")
            return None
        count *= d
    if count > INT64_MAX:
        st.add("GGUF-DIM-OVERFLOW", f"tensor {shown!r} element count overflows int64", off, f"dims={dims[:8]}")
        return None
    if gt is None:
        return None
    if dims and dims[0] % gt.block:
        st.add("GGUF-TENSOR-SHAPE", f"tensor {shown!r} row of {dims[0]} is not a multiple of the {gt.name} block "
               f"({gt.block})", off, f"dims={dims[:8]}")
        return None
    nbytes = count // gt.block * gt.nbytes
    if nbytes > INT64_MAX:
        st.add("GGUF-DIM-OVERFLOW", f"tensor {shown!r} byte size overflows int64", off, f"dims={dims[:8]}")
        return None
    return nbytes


def _layout(st: _State, spans: list[_Span], alignment: int) -> None:
    spans.sort(key=lambda s: (s.begin, s.end))
    src = st.src
    pos = st.cur.pos  # start of the data section
    prev: _Span | None = None
    for s in spans:
        if prev is not None and s.begin < prev.end and s.end > s.begin:
            st.add("GGUF-TENSOR-OVERLAP", f"tensor {s.name[:80]!r} overlaps {prev.name[:80]!r}", s.begin,
                   f"{prev.name[:60]} [{prev.begin},{prev.end}) / {s.name[:60]} [{s.begin},{s.end})")
        elif s.begin > pos:
            st.add("GGUF-TENSOR-GAP", f"{s.begin - pos} bytes before tensor {s.name[:80]!r} belong to no tensor",
                   pos, f"gap=[{pos},{s.begin})")
            _hidden(st, pos, s.begin - pos, "gap")
        if prev is None or s.end >= prev.end:
            prev = s
        pos = max(pos, s.padded_end)
    if src.size > pos:
        st.add("GGUF-TRAILING-DATA", f"{src.size - pos} bytes follow the tensor data", pos,
               f"trailing=[{pos},{src.size})")
        _hidden(st, pos, src.size - pos, "trailing")


def _hidden(st: _State, offset: int, length: int, what: str) -> None:
    from scanner.sniff import sniff

    head = st.src.read_at(offset, min(length, 4096))
    pad = len(head) - len(head.lstrip(b"\x00 \t\r\n"))  # padding, then what a second reader finds
    if 0 < pad < len(head):
        offset, length = offset + pad, length - pad
    child = st.src.child_slice(f"{what}@{offset}", offset, length)
    fmt = sniff(child)
    if fmt in NOT_CODE:
        return
    st.add("GGUF-POLYGLOT", f"{what} bytes at offset {offset} are a {fmt} stream", offset,
           f"{fmt}: {child.head(24).hex()}")
    st.out.extend(st.ctx.scan_child(child, fmt))
