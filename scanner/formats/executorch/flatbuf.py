"""A strict, bounded flatbuffer table reader over a Source region (no flatc, no generated code).

Every offset is checked against the region before it is followed; vectors are bounded by a caller's
element limit; strings are cut at a length limit. Anything out of bounds raises FlatbufferError.
"""

from __future__ import annotations

import struct

from scanner.record import record
from scanner.source import Source

MAX_STRING = 1024


class FlatbufferError(ValueError):
    pass


@record(frozen=True)
class Reader:
    src: Source
    end: int  # the flatbuffer's end (the extended header's program_size, else the file size)

    def _read(self, pos: int, n: int) -> bytes:
        if pos < 0 or n < 0 or pos + n > self.end:
            raise FlatbufferError(f"offset {pos}+{n} outside the flatbuffer (0..{self.end})")
        data = self.src.read_at(pos, n)
        if len(data) != n:
            raise FlatbufferError(f"short read at {pos}")
        return data

    def u8(self, pos: int) -> int:
        return self._read(pos, 1)[0]

    def u16(self, pos: int) -> int:
        return int(struct.unpack("<H", self._read(pos, 2))[0])

    def u32(self, pos: int) -> int:
        return int(struct.unpack("<I", self._read(pos, 4))[0])

    def i32(self, pos: int) -> int:
        return int(struct.unpack("<i", self._read(pos, 4))[0])

    def u64(self, pos: int) -> int:
        return int(struct.unpack("<Q", self._read(pos, 8))[0])

    def deref(self, pos: int) -> int:
        return pos + self.u32(pos)

    def root(self) -> int:
        return self.deref(0)

    def field(self, table: int, index: int) -> int | None:
        """Absolute position of field `index` of the table at `table`, or None when absent."""
        vtable = table - self.i32(table)
        vt_size = self.u16(vtable)
        if vt_size < 4 or vt_size % 2:
            raise FlatbufferError(f"vtable of {vt_size} bytes at {vtable}")
        slot = 4 + 2 * index
        if slot + 2 > vt_size:
            return None
        off = self.u16(vtable + slot)
        return table + off if off else None

    def table(self, table: int, index: int) -> int | None:
        pos = self.field(table, index)
        return None if pos is None else self.deref(pos)

    def scalar(self, table: int, index: int, fmt: str, default: int = 0) -> int:
        pos = self.field(table, index)
        if pos is None:
            return default
        n = struct.calcsize(fmt)
        return int(struct.unpack("<" + fmt, self._read(pos, n))[0])

    def vector(self, table: int, index: int, elem: int, limit: int) -> tuple[int, int]:
        """(first element position, count) of a vector field; (0, 0) when absent."""
        pos = self.field(table, index)
        if pos is None:
            return 0, 0
        start = self.deref(pos)
        n = self.u32(start)
        if n > limit:
            raise FlatbufferError(f"vector of {n} elements over the limit {limit}")
        if start + 4 + elem * n > self.end:
            raise FlatbufferError(f"vector of {n} elements at {start} runs past the flatbuffer")
        return start + 4, n

    def tables(self, table: int, index: int, limit: int) -> list[int]:
        first, n = self.vector(table, index, 4, limit)
        return [self.deref(first + 4 * i) for i in range(n)]

    def string(self, table: int, index: int) -> str | None:
        pos = self.field(table, index)
        if pos is None:
            return None
        start = self.deref(pos)
        n = self.u32(start)
        if start + 4 + n > self.end:
            raise FlatbufferError(f"string of {n} bytes at {start} runs past the flatbuffer")
        return self._read(start + 4, min(n, MAX_STRING)).decode("utf-8", "backslashreplace")
