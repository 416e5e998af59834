"""A bounded msgpack walker (the msgpack spec, as msgpack-python's C unpacker reads it).

Nothing is allocated by a declared length: bin/str/ext payloads are skipped or read only when small, so a
multi-GB checkpoint costs a few reads per leaf. Every value yields a small `Item`; the caller walks
containers element by element, so memory stays flat whatever the item count.
"""

from __future__ import annotations

import re
import struct

from scanner.record import record
from scanner.source import Source

BLOCK = 1 << 20
SMALL = 4096  # str/bin payloads up to this size are read (keys, dtype names); larger ones are skipped

_NOT_FIXINT = re.compile(rb"[\x80-\xdf]")
_ONE = frozenset({0xC0, 0xC2, 0xC3})                      # nil, false, true
_FIXED = {0xCA: 5, 0xCB: 9, 0xCC: 2, 0xCD: 3, 0xCE: 5, 0xCF: 9, 0xD0: 2, 0xD1: 3, 0xD2: 5, 0xD3: 9}
MAP_FIRST = frozenset([*range(0x80, 0x90), 0xDE, 0xDF])
ARRAY_FIRST = frozenset([*range(0x90, 0xA0), 0xDC, 0xDD])


class MsgpackError(ValueError):
    """The bytes are not msgpack msgpack-python would unpack (offset of the failure in `offset`)."""

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(message)
        self.offset = offset


class BudgetError(MsgpackError):
    """A bound (items or depth) was reached: `limit` names it."""

    def __init__(self, limit: str, offset: int) -> None:
        super().__init__(f"{limit} reached", offset)
        self.limit = limit


@record
class Item:
    kind: str                 # nil bool int float str bin ext array map
    offset: int               # of the type byte
    length: int = 0           # payload bytes (str/bin/ext) or element count (array/map)
    payload: int = 0          # offset of the payload (str/bin/ext)
    value: object = None      # scalars; str/bin payloads of at most SMALL bytes (bytes); ext code


class Reader:
    """Reads one value header at a time: `next()` returns containers with their count, unread; the caller
    walks the elements (`skip()` consumes a whole value)."""

    def __init__(self, src: Source, start: int, end: int, max_items: int, max_depth: int) -> None:
        self.src, self.pos, self.end = src, start, end
        self.items, self.max_depth = max_items, max_depth
        self._buf, self._buf_at = b"", 0

    def _take(self, n: int) -> bytes:
        if self.pos + n > self.end:
            raise MsgpackError("truncated", self.pos)
        rel = self.pos - self._buf_at
        if rel < 0 or rel + n > len(self._buf):
            self._buf_at = self.pos
            self._buf = self.src.read_at(self.pos, max(n, min(BLOCK, self.end - self.pos)))
            rel = 0
            if len(self._buf) < n:
                raise MsgpackError("truncated", self.pos)
        out = self._buf[rel:rel + n]
        self.pos += n
        return out

    def _skip_bytes(self, n: int) -> None:
        if self.pos + n > self.end:
            raise MsgpackError("length runs past the end", self.pos)
        self.pos += n

    def at_end(self) -> bool:
        return self.pos == self.end

    def next(self, depth: int) -> Item:
        """The next value's header; `depth` is the nesting of the value (bounded by max_depth)."""
        self.items -= 1
        if self.items < 0:
            raise BudgetError("max_array_items", self.pos)
        off = self.pos
        b = self._take(1)[0]
        if b <= 0x7F or b >= 0xE0:
            return Item("int", off, value=b if b <= 0x7F else b - 0x100)
        if 0x80 <= b <= 0x8F:
            return self._container("map", off, b & 0x0F, depth)
        if 0x90 <= b <= 0x9F:
            return self._container("array", off, b & 0x0F, depth)
        if 0xA0 <= b <= 0xBF:
            return self._blob("str", off, b & 0x1F)
        if b == 0xC0:
            return Item("nil", off)
        if b in (0xC2, 0xC3):
            return Item("bool", off, value=b == 0xC3)
        if b in (0xC4, 0xC5, 0xC6):
            return self._blob("bin", off, self._uint(1 << (b - 0xC4)))
        if b in (0xC7, 0xC8, 0xC9):
            return self._ext(off, self._uint(1 << (b - 0xC7)))
        if b in (0xCA, 0xCB):
            raw = self._take(4 if b == 0xCA else 8)
            return Item("float", off, value=struct.unpack(">f" if b == 0xCA else ">d", raw)[0])
        if 0xCC <= b <= 0xCF:
            return Item("int", off, value=self._uint(1 << (b - 0xCC)))
        if 0xD0 <= b <= 0xD3:
            return Item("int", off, value=int.from_bytes(self._take(1 << (b - 0xD0)), "big", signed=True))
        if 0xD4 <= b <= 0xD8:
            return self._ext(off, 1 << (b - 0xD4))
        if 0xD9 <= b <= 0xDB:
            return self._blob("str", off, self._uint(1 << (b - 0xD9)))
        if b in (0xDC, 0xDD):
            return self._container("array", off, self._uint(2 if b == 0xDC else 4), depth)
        if b in (0xDE, 0xDF):
            return self._container("map", off, self._uint(2 if b == 0xDE else 4), depth)
        raise MsgpackError("reserved type byte 0xc1", off)

    def skip_plain(self, count: int) -> tuple[int, int | None]:
        """Consume up to `count` consecutive scalars and short strings (the bulk of long arrays: token ids,
        vocabularies) without building Items. Returns (values consumed, offset of the first string that is
        not UTF-8 or None); stops before anything else and in the last bytes of the range."""
        done, bad = 0, None
        while done < count:
            if self.pos + 10 > self._buf_at + len(self._buf) or self.pos < self._buf_at:
                self._buf_at = self.pos
                self._buf = self.src.read_at(self.pos, min(BLOCK, self.end - self.pos))
            buf, base = self._buf, self._buf_at
            lim = min(len(buf), self.end - base)
            rel, stop, before = self.pos - base, lim - 9, done
            while done < count and rel < stop:
                b = buf[rel]
                if b <= 0x7F or b >= 0xE0:  # a run of one-byte integers: skipped in one search
                    limit = min(stop, rel + count - done)
                    m = _NOT_FIXINT.search(buf, rel, limit)
                    run = (m.start() if m else limit) - rel
                    rel += run
                    done += run
                    continue
                if b in _ONE:
                    n = 1
                elif b in _FIXED:
                    n = _FIXED[b]
                elif 0xA0 <= b <= 0xBF or b == 0xD9:
                    head, length = (1, b & 0x1F) if b != 0xD9 else (2, buf[rel + 1])
                    n = head + length
                    if rel + n > lim:
                        break
                    if bad is None:
                        try:
                            buf[rel + head:rel + n].decode("utf-8")
                        except UnicodeDecodeError:
                            bad = base + rel + head
                else:
                    break
                rel += n
                done += 1
            self.pos = base + rel
            self.items -= done - before
            if self.items < 0:
                raise BudgetError("max_array_items", self.pos)
            if done == before or (done < count and rel < stop):
                break  # nothing plain left here, or the next value is not plain
        return done, bad

    def skip(self, depth: int) -> Item:
        """Consume one whole value; map keys must be hashable (msgpack refuses list/map keys)."""
        item = self.next(depth)
        if item.kind == "array":
            i = 0
            while i < item.length:
                n, _bad = self.skip_plain(item.length - i)  # UTF-8 is the analyzer's question (raw=True reads any)
                i += n
                if i < item.length:
                    self.skip(depth + 1)
                    i += 1
        elif item.kind == "map":
            for _ in range(item.length):
                self.key(depth + 1)
                self.skip(depth + 1)
        return item

    def key(self, depth: int) -> Item:
        k = self.next(depth)
        if k.kind in ("map", "array"):
            raise MsgpackError(f"unhashable map key ({k.kind})", k.offset)
        return k

    def _uint(self, n: int) -> int:
        return int.from_bytes(self._take(n), "big")

    def _blob(self, kind: str, off: int, n: int) -> Item:
        start = self.pos
        if n <= SMALL:
            value: object = self._take(n)
        else:
            self._skip_bytes(n)
            value = None
        return Item(kind, off, n, start, value)

    def _ext(self, off: int, n: int) -> Item:
        code = int.from_bytes(self._take(1), "big", signed=True)
        start = self.pos
        self._skip_bytes(n)
        return Item("ext", off, n, start, code)

    def _container(self, kind: str, off: int, n: int, depth: int) -> Item:
        if depth + 1 > self.max_depth:
            raise BudgetError("max_json_depth", off)
        # every element takes at least one byte (two for a map entry): a count the bytes cannot hold is a lie
        if n * (2 if kind == "map" else 1) > self.end - self.pos:
            raise MsgpackError(f"{kind} of {n} elements cannot fit in the bytes left", off)
        return Item(kind, off, n)


def key_text(k: Item) -> str:
    """A map key as a path component."""
    if k.kind == "str" and isinstance(k.value, bytes):
        return k.value.decode("utf-8", "backslashreplace")
    if k.kind in ("str", "bin"):
        return repr(k.value)[:80] if k.value is not None else f"<{k.kind} of {k.length} bytes>"
    return repr(k.value)


def check_whole(src: Source, start: int, end: int, max_items: int, max_depth: int) -> None:
    """Exactly one value filling [start, end) (msgpack.unpackb raises ExtraData on trailing bytes)."""
    r = Reader(src, start, end, max_items, max_depth)
    r.skip(0)
    if not r.at_end():
        raise MsgpackError(f"{end - r.pos} bytes after the value", r.pos)


SNIFF_ITEMS = 50_000


def looks_like_msgpack(src: Source) -> bool:
    """A map or array that fills the file exactly: the shape `msgpack_restore` (Flax) takes. A walk that
    runs into the sniff budget after a plausible start counts too (padding must not turn a model into data)."""
    head = src.head(1)
    if not head or head[0] not in MAP_FIRST | ARRAY_FIRST:
        return False
    try:
        check_whole(src, 0, src.size, SNIFF_ITEMS, 256)
    except BudgetError:
        return True
    except MsgpackError:
        return False
    return True
