"""safetensors: a strict header parser of our own (threats F01-F04).

Only the 8-byte length and the JSON header are read, plus a head read of bytes no tensor accounts for:
the cost is the same for 1 KB and 100 GB. The reference loader (Rust, serde) is the yardstick for what
"accepted" means; every place where readers can disagree is reported.
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from scanner.findings import Finding, Severity
from scanner.source import Source

if TYPE_CHECKING:
    from scanner.context import ScanContext

RULES = "safetensors"
FIELDS = frozenset({"dtype", "shape", "data_offsets"})
MAX_PER_RULE = 20  # a hostile header can hold a million bad entries; report a sample and a count
U64 = 1 << 64
NOT_CODE = ("data", "text", "empty")


@dataclass(frozen=True)
class Tables:
    dtype_bits: dict[str, int]
    known_formats: frozenset[str]
    patterns: tuple[tuple[re.Pattern[str], str, Severity | None], ...]
    format_severity: Severity | None
    reference_max_header: int


def _tables(ctx: ScanContext) -> Tables:
    def build() -> Tables:
        doc = ctx.rules.doc(RULES)
        pats = tuple((re.compile(p["pattern"], re.IGNORECASE | re.MULTILINE), p["reason"], _sev(p))
                     for p in doc.get("metadata_pattern", []))
        meta = doc.get("metadata", {})
        return Tables({k: int(v) for k, v in doc.get("dtypes", {}).items()},
                      frozenset(meta.get("known_formats", [])), pats, _sev(meta),
                      int(doc.get("header", {}).get("reference_max_bytes", U64)))

    return ctx.rules.cached("safetensors.tables", build)  # type: ignore[no-any-return]


def _sev(entry: dict[str, Any]) -> Severity | None:
    return Severity.parse(entry["severity"]) if "severity" in entry else None


class _Reporter:
    """Collects findings, capping each rule at MAX_PER_RULE and summarising the rest."""

    def __init__(self, ctx: ScanContext, src: Source) -> None:
        self.ctx, self.src = ctx, src
        self.out: list[Finding] = []
        self.counts: dict[str, int] = {}

    def add(self, rule: str, message: str, *, offset: int | None = None, evidence: str | None = None,
            **kw: Any) -> None:
        n = self.counts.get(rule, 0) + 1
        self.counts[rule] = n
        if n <= MAX_PER_RULE:
            self.out.append(self.ctx.finding(rule, message, self.src, offset=offset, evidence=evidence, **kw))

    def extend(self, findings: list[Finding]) -> None:
        self.out.extend(findings)

    def done(self) -> list[Finding]:
        for rule, n in sorted(self.counts.items()):
            if n > MAX_PER_RULE:
                self.out.append(self.ctx.finding(rule, f"{n - MAX_PER_RULE} more {rule} findings not listed",
                                                 self.src, evidence=f"total={n}"))
        return self.out


def analyze(src: Source, ctx: ScanContext) -> Iterator[Finding]:
    rep = _Reporter(ctx, src)
    _analyze(src, ctx, rep)
    yield from rep.done()


def _analyze(src: Source, ctx: ScanContext, rep: _Reporter) -> None:
    size = src.size
    if size < 8:
        rep.add("SAFETENSORS-HEADER-LENGTH", f"file of {size} bytes has no 8-byte header length", offset=0)
        return
    (n,) = struct.unpack("<Q", src.read_at(0, 8))
    limit = ctx.limits.max_header_bytes
    if n < 2 or n > limit or n > size - 8:
        why = ("shorter than the smallest header '{}'" if n < 2 else
               f"larger than the header limit of {limit} bytes" if n > limit else
               f"larger than the {size - 8} bytes that follow it")
        rep.add("SAFETENSORS-HEADER-LENGTH", f"header length {n} is {why}", offset=0, evidence=f"n={n} size={size}")
        return
    reference = _tables(ctx).reference_max_header
    if n > reference:
        rep.add("SAFETENSORS-HEADER-LENGTH", f"header length {n} is larger than the {reference} bytes the reference "
                "loader accepts (it refuses the file; lenient readers parse it)", offset=0, evidence=f"n={n}")
    raw = src.read_at(8, n)
    header = _parse_header(raw, rep)
    if header is None:
        return
    data_start = 8 + n
    spans = _check_entries(header, rep, _tables(ctx), size - data_start)
    _check_layout(src, ctx, rep, spans, data_start)


# -- JSON ------------------------------------------------------------------------------------------

class _Dupes:
    """object_pairs_hook that keeps the last value (as serde does) and records every duplicate."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def __call__(self, items: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in items:
            if k in out:
                self.seen.append(k)
            out[k] = v
        return out


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-standard JSON constant {name}")


_SURROGATE = re.compile("[\ud800-\udfff]")


def _parse_header(raw: bytes, rep: _Reporter) -> dict[str, Any] | None:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        rep.add("SAFETENSORS-MALFORMED", "header is not valid UTF-8", offset=8 + e.start,
                evidence=raw[max(0, e.start - 16):e.start + 16].hex())
        return None
    dupes = _Dupes()
    try:
        doc = json.loads(text, object_pairs_hook=dupes, parse_constant=_reject_constant)
    except RecursionError:
        rep.add("SAFETENSORS-MALFORMED", "header JSON nests too deeply to parse", offset=8)
        return None
    except ValueError as e:
        rep.add("SAFETENSORS-MALFORMED", "header is not strict JSON", offset=8, evidence=str(e)[:200])
        return None
    if not isinstance(doc, dict):
        rep.add("SAFETENSORS-MALFORMED", f"header is a JSON {type(doc).__name__}, not an object", offset=8)
        return None
    if _has_surrogate(doc):
        rep.add("SAFETENSORS-MALFORMED", "header holds an unpaired UTF-16 surrogate escape (serde refuses it, "
                "Python accepts it)", offset=8)
    for key in dupes.seen:
        rep.add("SAFETENSORS-DUPLICATE-KEY", f"key {key[:120]!r} appears more than once; loaders keep the last",
                offset=8, evidence=key[:200])
    return doc


def _has_surrogate(doc: dict[str, Any]) -> bool:
    stack: list[Any] = [doc]
    while stack:
        v = stack.pop()
        if isinstance(v, dict):
            for k, x in v.items():
                if _SURROGATE.search(k):
                    return True
                stack.append(x)
        elif isinstance(v, list):
            stack.extend(v)
        elif isinstance(v, str) and _SURROGATE.search(v):
            return True
    return False


# -- entries ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Span:
    name: str
    begin: int
    end: int


def _is_uint(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and 0 <= x < U64


_CONTROL = re.compile("[\x00-\x1f\x7f]")


def _check_names(header: dict[str, Any], rep: _Reporter) -> None:
    """Control characters in tensor names: C readers stop at NUL, so two names can become one."""
    cut: dict[str, list[str]] = {}
    for name in header:
        if _CONTROL.search(name):
            rep.add("SAFETENSORS-SUSPICIOUS-NAME", f"tensor name {name[:120]!r} holds control characters", offset=8,
                    evidence=repr(name[:200]))
        cut.setdefault(name.split("\x00", 1)[0], []).append(name)
    for short, names in cut.items():
        if len(names) > 1:
            rep.add("SAFETENSORS-SUSPICIOUS-NAME", f"{len(names)} tensor names read as {short[:120]!r} by readers "
                    "that stop at NUL", offset=8, evidence=repr(names[:5])[:300])


def _check_entries(header: dict[str, Any], rep: _Reporter, tables: Tables, data_len: int) -> list[Span]:
    spans: list[Span] = []
    _check_names(header, rep)
    for name, entry in header.items():
        if name == "__metadata__":
            _check_metadata(entry, rep, tables)
            continue
        shown = name[:120]
        if not isinstance(entry, dict):
            rep.add("SAFETENSORS-MALFORMED", f"tensor {shown!r} is a JSON {type(entry).__name__}, not an object",
                    offset=8)
            continue
        missing = FIELDS - entry.keys()
        if missing:
            rep.add("SAFETENSORS-MALFORMED", f"tensor {shown!r} lacks {', '.join(sorted(missing))}", offset=8)
        extra = sorted(set(entry) - FIELDS)
        if extra:
            rep.add("SAFETENSORS-LENIENT-FIELD", f"tensor {shown!r} has unknown field(s) {', '.join(extra)[:200]}",
                    offset=8, evidence=json.dumps({k: entry[k] for k in extra[:5]})[:300])
        bits = _dtype_bits(shown, entry.get("dtype"), rep, tables) if "dtype" in entry else None
        count = _element_count(shown, entry.get("shape"), rep) if "shape" in entry else None
        span = _offsets(name, entry.get("data_offsets"), rep, data_len) if "data_offsets" in entry else None
        if span is None:
            continue
        spans.append(span)
        if bits is None or count is None:
            continue
        total_bits = count * bits
        length = span.end - span.begin
        if total_bits % 8 or total_bits // 8 != length:
            want = f"{total_bits / 8:g}" if total_bits % 8 else str(total_bits // 8)
            rep.add("SAFETENSORS-SPAN-MISMATCH",
                    f"tensor {shown!r}: shape x {entry['dtype']} needs {want} bytes, span holds {length}",
                    offset=8, evidence=f"shape={str(entry['shape'])[:120]} data_offsets=[{span.begin},{span.end}]")
    return spans


def _dtype_bits(name: str, dtype: Any, rep: _Reporter, tables: Tables) -> int | None:
    if isinstance(dtype, str) and dtype in tables.dtype_bits:
        return tables.dtype_bits[dtype]
    rep.add("SAFETENSORS-BAD-DTYPE", f"tensor {name!r} has unknown dtype {str(dtype)[:60]!r}", offset=8,
            evidence=json.dumps(dtype)[:100])
    return None


def _element_count(name: str, shape: Any, rep: _Reporter) -> int | None:
    if not isinstance(shape, list) or not all(_is_uint(d) for d in shape):
        rep.add("SAFETENSORS-BAD-SHAPE", f"tensor {name!r} shape is not a list of non-negative 64-bit integers",
                offset=8, evidence=json.dumps(shape)[:200])
        return None
    count = 1
    for d in shape:
        count *= d
        if count >= U64:
            rep.add("SAFETENSORS-BAD-SHAPE", f"tensor {name!r} element count overflows 64 bits", offset=8,
                    evidence=json.dumps(shape)[:200])
            return None
    return count


def _offsets(name: str, offs: Any, rep: _Reporter, data_len: int) -> Span | None:
    shown = name[:120]
    if not (isinstance(offs, list) and len(offs) == 2 and all(_is_uint(o) for o in offs)):
        rep.add("SAFETENSORS-OFFSET-RANGE", f"tensor {shown!r} data_offsets is not two non-negative integers",
                offset=8, evidence=json.dumps(offs)[:200])
        return None
    begin, end = offs
    if begin > end:
        rep.add("SAFETENSORS-OFFSET-RANGE", f"tensor {shown!r} ends before it begins", offset=8,
                evidence=f"data_offsets=[{begin},{end}]")
        return None
    if end > data_len:
        rep.add("SAFETENSORS-OFFSET-RANGE", f"tensor {shown!r} ends at {end}, past the {data_len}-byte data area",
                offset=8, evidence=f"data_offsets=[{begin},{end}]")
        return None
    return Span(name, begin, end)


def _check_metadata(meta: Any, rep: _Reporter, tables: Tables) -> None:
    if meta is None:
        return
    if not isinstance(meta, dict):
        rep.add("SAFETENSORS-METADATA-TYPE", f"__metadata__ is a JSON {type(meta).__name__}, not an object",
                offset=8, evidence=json.dumps(meta)[:200])
        return
    for key, value in meta.items():
        if not isinstance(value, str):
            rep.add("SAFETENSORS-METADATA-TYPE", f"__metadata__[{key[:80]!r}] is a {type(value).__name__}, "
                    "not a string", offset=8, evidence=json.dumps(value)[:200])
            text = json.dumps(value)
        else:
            text = value
        if key == "format" and isinstance(value, str) and value not in tables.known_formats:
            rep.add("SAFETENSORS-METADATA-CODE", f"__metadata__ format {value[:40]!r} is not one honest writers "
                    "use (steers conversion/loading)", offset=8, evidence=f"key={key[:80]}",
                    severity=tables.format_severity)
        hits = [(pat.search(key) or pat.search(text), reason, sev) for pat, reason, sev in tables.patterns]
        hits = [h for h in hits if h[0] is not None]
        if hits:
            # one finding per key, at the loudest matching pattern
            m, reason, sev = max(hits, key=lambda h: (h[2] or Severity.LOW).rank)
            rep.add("SAFETENSORS-METADATA-CODE", f"__metadata__[{key[:80]!r}]: {reason}", offset=8,
                    evidence=f"key={key[:80]} match={m.group(0)[:80]!r}", severity=sev)


# -- layout ----------------------------------------------------------------------------------------

def _check_layout(src: Source, ctx: ScanContext, rep: _Reporter, spans: list[Span], data_start: int) -> None:
    data_len = src.size - data_start
    # the reference loader orders by offsets itself, so key order in the JSON does not matter
    spans.sort(key=lambda s: (s.begin, s.end))
    pos = 0
    prev: Span | None = None
    for s in spans:
        if s.begin < pos and prev is not None:
            rep.add("SAFETENSORS-OVERLAP", f"tensor {s.name[:120]!r} [{s.begin},{s.end}) overlaps "
                    f"{prev.name[:120]!r} [{prev.begin},{prev.end})", offset=data_start + s.begin,
                    evidence=f"{prev.name[:80]} / {s.name[:80]}")
        elif s.begin > pos:
            rep.add("SAFETENSORS-GAP", f"{s.begin - pos} bytes before tensor {s.name[:120]!r} belong to no tensor",
                    offset=data_start + pos, evidence=f"gap=[{pos},{s.begin})")
            _sniff_hidden(src, ctx, rep, data_start + pos, s.begin - pos, "gap")
        if s.end >= pos:
            pos, prev = s.end, s
    if pos < data_len:
        rep.add("SAFETENSORS-TRAILING-DATA", f"{data_len - pos} bytes follow the last tensor",
                offset=data_start + pos, evidence=f"trailing=[{data_start + pos},{src.size})")
        _sniff_hidden(src, ctx, rep, data_start + pos, data_len - pos, "trailing")


def _sniff_hidden(src: Source, ctx: ScanContext, rep: _Reporter, offset: int, length: int, what: str) -> None:
    """Bytes no tensor accounts for: if they start like a code-bearing format, say so and scan them."""
    from scanner.sniff import sniff

    # padding first (spaces or NULs up to an alignment): what follows it is what a second reader finds
    head = src.read_at(offset, min(length, 4096))
    pad = len(head) - len(head.lstrip(b"\x00 \t\r\n"))
    if 0 < pad < len(head):
        offset, length = offset + pad, length - pad
    child = src.child_slice(f"{what}@{offset}", offset, length)
    fmt = sniff(child)
    if fmt in NOT_CODE:
        return
    rep.add("SAFETENSORS-POLYGLOT", f"{what} bytes at offset {offset} are a {fmt} stream", offset=offset,
            evidence=f"{fmt}: {child.head(24).hex()}")
    rep.extend(ctx.scan_child(child, fmt))
