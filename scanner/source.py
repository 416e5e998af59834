"""Byte sources an analyzer reads: a file on disk, bytes in memory, or a slice of another source.

Analyzers read through `read_at` so that large files are never pulled into memory whole; `read_all`
enforces `Limits.max_read_bytes`.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import BinaryIO

from scanner.findings import Location


class LimitExceeded(Exception):
    """Raised when a resource bound is hit; the engine turns it into a LIMIT-EXCEEDED finding."""

    def __init__(self, limit: str, message: str, location: Location | None = None) -> None:
        super().__init__(message)
        self.limit = limit
        self.location = location


class Source:
    """Base class. `member` is the chain of names inside containers, joined with '!'."""

    def __init__(self, display: str, member: str | None, size: int) -> None:
        self.display = display
        self.member = member
        self.size = size

    # -- reading -------------------------------------------------------------------------------
    def read_at(self, offset: int, n: int) -> bytes:
        raise NotImplementedError

    def head(self, n: int = 4096) -> bytes:
        return self.read_at(0, min(n, self.size))

    def prefetch(self, ranges: list[tuple[int, int]]) -> None:
        """Hint: (offset, length) regions about to be read. Remote sources fetch them concurrently; local
        sources ignore it."""

    def read_all(self, limit: int) -> bytes:
        if self.size > limit:
            raise LimitExceeded("max_read_bytes", f"{self.size} bytes exceed the read limit of {limit}",
                                self.loc())
        return self.read_at(0, self.size)

    def open(self) -> BinaryIO:
        """A seekable binary file object over the source (callers close it)."""
        return _SourceIO(self)  # type: ignore[return-value]

    @property
    def path(self) -> Path | None:
        """The real file on disk when this source is a whole top-level file, else None."""
        return None

    @property
    def name(self) -> str:
        """The innermost name (member name or file name), used to compare extension and content."""
        if self.member:
            return self.member.rsplit("!", 1)[-1]
        return os.path.basename(self.display)

    # -- children and locations ------------------------------------------------------------------
    def child_member(self, name: str) -> str:
        return f"{self.member}!{name}" if self.member else name

    def child_bytes(self, name: str, data: bytes) -> BytesSource:
        return BytesSource(self.display, self.child_member(name), data)

    def child_slice(self, name: str, offset: int, size: int) -> SliceSource:
        return SliceSource(self, self.child_member(name), offset, size)

    def loc(self, offset: int | None = None, opcode_index: int | None = None) -> Location:
        return Location(member=self.member, offset=offset, opcode_index=opcode_index)

    def close(self) -> None:
        pass


class FileSource(Source):
    def __init__(self, path: Path, display: str | None = None) -> None:
        self._path = path
        self._fh: BinaryIO | None = None
        super().__init__(display or str(path), None, path.stat().st_size)

    @property
    def path(self) -> Path | None:
        return self._path

    def read_at(self, offset: int, n: int) -> bytes:
        if offset < 0 or n <= 0 or offset >= self.size:
            return b""
        if self._fh is None:
            self._fh = open(self._path, "rb")  # noqa: SIM115 - closed by close()
        self._fh.seek(offset)
        return self._fh.read(min(n, self.size - offset))

    def open(self) -> BinaryIO:
        return open(self._path, "rb")

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


class BytesSource(Source):
    def __init__(self, display: str, member: str | None, data: bytes) -> None:
        self.data = data
        super().__init__(display, member, len(data))

    def read_at(self, offset: int, n: int) -> bytes:
        if offset < 0 or n <= 0:
            return b""
        return bytes(self.data[offset:offset + n])

    def open(self) -> BinaryIO:
        return io.BytesIO(self.data)


class SliceSource(Source):
    """A window [offset, offset+size) of a parent source (stored zip members, tar members)."""

    def __init__(self, parent: Source, member: str, offset: int, size: int) -> None:
        self.parent = parent
        self.offset = offset
        size = max(0, min(size, parent.size - offset))
        super().__init__(parent.display, member, size)

    def read_at(self, offset: int, n: int) -> bytes:
        if offset < 0 or n <= 0 or offset >= self.size:
            return b""
        return self.parent.read_at(self.offset + offset, min(n, self.size - offset))

    def prefetch(self, ranges: list[tuple[int, int]]) -> None:
        self.parent.prefetch([(self.offset + o, min(n, self.size - o)) for o, n in ranges if 0 <= o < self.size])


class _SourceIO(io.RawIOBase):
    """Seekable file object over any Source (for libraries that want a file, e.g. h5py)."""

    def __init__(self, src: Source) -> None:
        self._src = src
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = 0) -> int:
        if whence == 0:
            self._pos = offset
        elif whence == 1:
            self._pos += offset
        else:
            self._pos = self._src.size + offset
        self._pos = max(0, self._pos)
        return self._pos

    def readinto(self, b: bytearray) -> int:  # type: ignore[override]
        data = self._src.read_at(self._pos, len(b))
        b[: len(data)] = data
        self._pos += len(data)
        return len(data)

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            n = self._src.size - self._pos
        data = self._src.read_at(self._pos, n)
        self._pos += len(data)
        return data
