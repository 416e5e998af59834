"""Flax msgpack checkpoints (`flax.serialization.to_bytes` / `msgpack_serialize`, `checkpoints.save_checkpoint`
without orbax), walked as `flax.serialization.msgpack_restore` reads them, without msgpack or NumPy.

The loader (flax/serialization.py): `msgpack.unpackb(raw=False, strict_map_key=False, ext_hook=...)`; ext
1 (ndarray) and 3 (NumPy scalar) hold a msgpack `(shape, dtype name, buffer)` that becomes
`np.frombuffer(buffer, np.dtype(name)).reshape(shape)`; ext 2 is `complex(re, im)`; other codes stay
`msgpack.ExtType`; maps with `__msgpack_chunked_array__` are concatenated from `chunks` into `shape`.
NumPy refuses object dtypes in `frombuffer`, so the format cannot build Python objects or run code; the
scan is still strict: dtypes Flax never writes, unknown ext types and malformed values are reported, and
byte leaves (a pickle kept as bytes, say) are scanned as members.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from scanner.findings import Finding
from scanner.formats.flax.msgpack_reader import SMALL, BudgetError, Item, MsgpackError, Reader, key_text
from scanner.source import LimitExceeded, Source

if TYPE_CHECKING:
    from scanner.context import ScanContext

EXT_NDARRAY, EXT_COMPLEX, EXT_NPSCALAR = 1, 2, 3
CHUNKED = "__msgpack_chunked_array__"
MIN_NESTED = 16       # byte leaves at least this long are sniffed as members
MAX_PER_RULE = 20
_OBJECT = re.compile(r"(^|[^A-Za-z])O\d*($|[^A-Za-z])|object")


@dataclass(frozen=True)
class _Tables:
    dtypes: dict[str, int]     # dtype name Flax writes -> item size


def _tables(ctx: ScanContext) -> _Tables:
    def build() -> _Tables:
        doc = ctx.rules.doc("flax").get("flax", {})
        return _Tables({str(k): int(v) for k, v in doc.get("dtypes", {}).items()})
    return ctx.rules.cached("flax", build)  # type: ignore[no-any-return]


@dataclass
class _Summary:
    """What a parent needs to know about a walked value (chunked-array checks)."""

    item: Item
    seq_keys: bool = False     # a map keyed "0".."n-1" (flax's _tuple_to_dict)
    all_arrays: bool = False   # every value an ndarray ext
    all_ints: bool = False


@dataclass
class _Walk:
    src: Source
    ctx: ScanContext
    tables: _Tables
    reader: Reader
    findings: list[Finding] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    arrays: int = 0
    chunked: int = 0
    dtypes: set[str] = field(default_factory=set)

    def add(self, rule: str, message: str, offset: int, evidence: str | None = None) -> None:
        n = self.counts.get(rule, 0) + 1
        self.counts[rule] = n
        if n <= MAX_PER_RULE:
            self.findings.append(self.ctx.finding(rule, message, self.src, offset=offset, evidence=evidence))

    def value(self, path: str, depth: int) -> _Summary:
        r = self.reader
        if r.items % 65536 == 0:
            self.ctx.check_deadline(self.src)  # max_file_seconds, between items of a long walk
        it = r.next(depth)
        if it.kind == "array":
            i = 0
            while i < it.length:
                n, bad = r.skip_plain(it.length - i)  # runs of numbers and short strings, item by item fast
                if bad is not None:
                    self.add("FLAX-MALFORMED", f"string in {path or '/'} is not UTF-8: msgpack_restore (raw=False) "
                             "fails", bad)
                i += n
                if i < it.length:
                    self.value(f"{path}[{i}]", depth + 1)
                    i += 1
            return _Summary(it)
        if it.kind == "map":
            return self.map(it, path, depth)
        if it.kind == "str":
            self.text(it, path)
        elif it.kind == "bin":
            self.nested(it, path)
        elif it.kind == "ext":
            self.ext(it, path)
        return _Summary(it, all_ints=it.kind == "int")

    def map(self, it: Item, path: str, depth: int) -> _Summary:
        seq, arrays, ints = True, True, True
        special: dict[str, _Summary] = {}
        for i in range(it.length):
            k = self.reader.key(depth + 1)
            if k.kind == "str":
                self.text(k, path)
            name = key_text(k)
            seq = seq and k.kind == "str" and name == str(i)
            v = self.value(f"{path}/{name}" if path else name, depth + 1)
            arrays = arrays and v.item.kind == "ext" and v.item.value == EXT_NDARRAY
            ints = ints and v.all_ints
            if k.kind == "str" and name in (CHUNKED, "chunks", "shape"):
                special[name] = v
            elif k.kind in ("bin", "str") and k.value in (b"nd", b"kind", b"data"):
                special[f"np:{k.value.decode()}"] = v  # type: ignore[union-attr]
        if CHUNKED in special:
            self.chunked += 1
            chunks, shape = special.get("chunks"), special.get("shape")
            if chunks is None or not (chunks.seq_keys and chunks.all_arrays):
                self.add("FLAX-MALFORMED", f"chunked array {path or '/'} without a `chunks` map of arrays keyed "
                         "0..n-1: msgpack_restore fails on it", it.offset)
            if shape is None or not (shape.seq_keys and shape.all_ints):
                self.add("FLAX-MALFORMED", f"chunked array {path or '/'} without a `shape` map of integers",
                         it.offset)
        self.numpy_pickle(special, path, it)
        return _Summary(it, seq_keys=seq, all_arrays=arrays and it.length > 0, all_ints=ints)

    def numpy_pickle(self, special: dict[str, _Summary], path: str, it: Item) -> None:
        """msgpack-numpy's decode (also vendored by other projects) turns {b'nd': True, b'kind': b'O',
        b'data': ...} into pickle.loads(data): the one msgpack array convention that runs code."""
        nd, kind, data = special.get("np:nd"), special.get("np:kind"), special.get("np:data")
        if nd is None or nd.item.value is not True or kind is None or kind.item.value != b"O":
            return
        evidence = None
        if data is not None and data.item.kind in ("bin", "str"):
            evidence = f"data: {data.item.length} bytes at offset {data.item.payload}"
            if data.item.kind == "str" or data.item.length < MIN_NESTED:  # not scanned as a leaf yet
                member = self.src.child_slice(f"{path or 'root'}/data", data.item.payload, data.item.length)
                self.findings.extend(self.ctx.scan_child(member, "pickle"))
        self.add("MSGPACK-NUMPY-PICKLE", f"object array at {path or '/'} in msgpack-numpy form: its decoder "
                 "unpickles `data` (pickle.loads)", it.offset, evidence=evidence)

    def text(self, it: Item, path: str) -> None:
        """raw=False decodes every str as UTF-8; a str that does not decode makes unpackb fail."""
        if it.length > SMALL:
            if it.length > self.ctx.limits.max_string_bytes:
                raise LimitExceeded("max_string_bytes", f"msgpack string of {it.length} bytes", self.src.loc(it.offset))
            raw = self.src.read_at(it.payload, it.length)
        else:
            raw = it.value if isinstance(it.value, bytes) else b""
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as e:
            self.add("FLAX-MALFORMED", f"string at {path or '/'} is not UTF-8: msgpack_restore (raw=False) fails",
                     it.payload + e.start)

    def nested(self, it: Item, path: str) -> None:
        if it.length < MIN_NESTED:
            return
        member = self.src.child_slice(f"{path or 'root'}", it.payload, it.length)
        self.findings.extend(self.ctx.scan_child(member))

    def ext(self, it: Item, path: str) -> None:
        code = it.value
        if code in (EXT_NDARRAY, EXT_NPSCALAR):
            self.array(it, path)
        elif code == EXT_COMPLEX:
            self.complex(it, path)
        else:
            what = "a msgpack Timestamp" if code == -1 else "a msgpack.ExtType object"
            self.add("FLAX-EXT-TYPE", f"ext type {code} at {path or '/'}: Flax writes only 1-3; the loader returns "
                     f"{what}", it.offset, evidence=f"code={code} length={it.length}")

    def complex(self, it: Item, path: str) -> None:
        r = self.sub(it)
        try:
            head = r.next(0)
            ok = head.kind == "array" and head.length == 2 and all(
                r.skip(1).kind in ("int", "float") for _ in range(2)) and r.at_end()
        except MsgpackError:
            ok = False
        if not ok:
            self.add("FLAX-MALFORMED", f"complex at {path or '/'} is not a msgpack (re, im) pair", it.offset)

    def sub(self, it: Item) -> Reader:
        lim = self.ctx.limits
        return Reader(self.src, it.payload, it.payload + it.length, min(self.reader.items, lim.max_array_items),
                      lim.max_json_depth)

    def array(self, it: Item, path: str) -> None:
        """The (shape, dtype name, buffer) triple of `_ndarray_from_bytes` (unpacked with raw=True)."""
        self.arrays += 1
        where = path or "/"
        r = self.sub(it)
        try:
            head = r.next(0)
            if head.kind != "array" or head.length != 3:
                raise MsgpackError("not a (shape, dtype, buffer) triple", head.offset)
            shape = self.shape(r)
            dtype_item = r.next(1)
            spec = self.dtype_spec(r, dtype_item)
            buf = r.next(1)
            if buf.kind not in ("bin", "str"):
                raise MsgpackError(f"buffer is {buf.kind}, not bytes", buf.offset)
            if not r.at_end():
                raise MsgpackError("bytes after the triple", r.pos)
        except BudgetError:
            raise
        except MsgpackError as e:
            self.add("FLAX-MALFORMED", f"array at {where}: {e}; msgpack_restore fails on it", e.offset)
            return
        if spec is None:
            return
        self.dtypes.add(spec)
        size = self.tables.dtypes.get(spec)
        if size is None:
            if _OBJECT.search(spec):
                self.add("FLAX-OBJECT-DTYPE", f"array at {where} declares an object dtype {spec[:80]!r}: NumPy's "
                         "frombuffer refuses it, a loader that decodes it otherwise builds Python objects",
                         dtype_item.offset, evidence=f"dtype={spec[:200]}")
            else:
                self.add("FLAX-DTYPE", f"array at {where} has dtype {spec[:80]!r}, which Flax does not write "
                         "(np.dtype parses it from the file)", dtype_item.offset, evidence=f"dtype={spec[:200]}")
            return
        if shape is not None:
            count = 1
            for d in shape:
                count *= d
            if count * size != buf.length:
                self.add("FLAX-MALFORMED", f"array at {where}: {buf.length} bytes for shape {tuple(shape)} of "
                         f"{spec}; the loader's reshape fails", buf.offset)

    def shape(self, r: Reader) -> list[int] | None:
        """Non-negative integer dimensions, or None when the shape is something reshape infers (-1, int)."""
        head = r.next(1)
        if head.kind == "int":
            return [head.value] if isinstance(head.value, int) and head.value >= 0 else None
        if head.kind != "array":
            raise MsgpackError(f"shape is {head.kind}", head.offset)
        dims: list[int] | None = []
        for _ in range(head.length):
            d = r.next(2)
            if d.kind != "int":
                raise MsgpackError(f"shape holds {d.kind}", d.offset)
            if dims is not None and isinstance(d.value, int) and d.value >= 0:
                dims.append(d.value)
            else:
                dims = None
        return dims

    def dtype_spec(self, r: Reader, it: Item) -> str | None:
        """The dtype as text: a name (str/bin), or a structured spec (arrays/maps) flattened to its strings."""
        if it.kind in ("str", "bin"):
            if not isinstance(it.value, bytes):
                raise MsgpackError(f"dtype name of {it.length} bytes", it.offset)
            return it.value.decode("latin-1")
        if it.kind not in ("array", "map"):
            raise MsgpackError(f"dtype is {it.kind}", it.offset)
        parts: list[str] = []

        def collect(item: Item, depth: int) -> None:
            if item.kind in ("str", "bin") and isinstance(item.value, bytes):
                parts.append(item.value.decode("latin-1"))
            elif item.kind in ("array", "map"):
                for _ in range(item.length * (2 if item.kind == "map" else 1)):
                    collect(r.next(depth + 1), depth + 1)
            else:
                parts.append(repr(item.value))

        collect(it, 1)
        return f"structured[{', '.join(parts)}]"


def analyze(src: Source, ctx: ScanContext) -> Iterator[Finding]:
    lim = ctx.limits
    reader = Reader(src, 0, src.size, lim.max_array_items, lim.max_json_depth)
    walk = _Walk(src, ctx, _tables(ctx), reader)
    try:
        walk.value("", 0)
        if not reader.at_end():
            walk.add("FLAX-MALFORMED", f"{src.size - reader.pos} bytes after the msgpack value: msgpack.unpackb "
                     "raises ExtraData", reader.pos)
    except BudgetError as e:
        walk.findings.append(ctx.finding("LIMIT-EXCEEDED", f"msgpack walk stopped at {e.limit}; the rest of the "
                                         "checkpoint was not checked", src, offset=e.offset, evidence=e.limit))
    except MsgpackError as e:
        walk.add("FLAX-MALFORMED", f"not msgpack that msgpack_restore reads: {e}", e.offset)
    except LimitExceeded as e:  # keep what was found before the bound
        walk.findings.extend(ctx.limit_findings(e, src))
    yield from walk.findings
    for rule, n in sorted(walk.counts.items()):
        if n > MAX_PER_RULE:
            yield ctx.finding(rule, f"{n - MAX_PER_RULE} more {rule} findings not listed", src)
    yield ctx.finding("FLAX-CHECKPOINT", f"msgpack checkpoint walked: {walk.arrays} arrays, {walk.chunked} chunked; "
                      f"dtypes {', '.join(sorted(walk.dtypes))[:200] or 'none'}", src)
