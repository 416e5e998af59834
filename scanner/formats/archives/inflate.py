"""Bounded streaming decompression shared by the zip and archive analyzers.

Nothing is ever inflated whole on trust: output stops at a cap, the ratio is checked as bytes come out, and
every decompressed byte is charged to the scan's budget.
"""

from __future__ import annotations

import bz2
import lzma
import zlib
from collections.abc import Callable
from typing import Protocol

from scanner.record import record
from scanner.source import BytesSource, Source

CHUNK = 1 << 20
IN_CHUNK = 1 << 16      # compressed bytes fed at a time: the ratio is judged on small steps
OUT_CHUNK = 1 << 20     # decompressed bytes taken at a time: bombs stop within one MiB of the bound
SPOOL_MEMORY = 32 << 20  # inflated output beyond this goes to a private temporary file, not to memory


class Decompressor(Protocol):
    eof: bool
    unused_data: bytes

    @property
    def needs_input(self) -> bool: ...

    def decompress(self, data: bytes, max_length: int) -> bytes: ...


class ZlibAdapter:
    """zlib keeps unconsumed input in `unconsumed_tail`; present it like bz2/lzma (buffer it ourselves)."""

    def __init__(self, wbits: int) -> None:
        self._d = zlib.decompressobj(wbits)
        self._tail = b""

    @property
    def eof(self) -> bool:
        return self._d.eof

    @property
    def unused_data(self) -> bytes:
        return self._d.unused_data

    @property
    def needs_input(self) -> bool:
        return not self._tail and not self._d.eof

    def decompress(self, data: bytes, max_length: int) -> bytes:
        buf = self._tail + data if self._tail else data
        out = self._d.decompress(buf, max(1, max_length))
        self._tail = self._d.unconsumed_tail
        return out


class Lz4Adapter:
    """lz4.frame keeps `unused_data` None until the frame ends; present it as bytes like the others."""

    def __init__(self, d: object) -> None:
        self._d = d

    @property
    def eof(self) -> bool:
        return bool(self._d.eof)  # type: ignore[attr-defined]

    @property
    def unused_data(self) -> bytes:
        return self._d.unused_data or b""  # type: ignore[attr-defined]

    @property
    def needs_input(self) -> bool:
        return bool(self._d.needs_input)  # type: ignore[attr-defined]

    def decompress(self, data: bytes, max_length: int) -> bytes:
        try:
            return self._d.decompress(data, max_length)  # type: ignore[attr-defined,no-any-return]
        except RuntimeError as e:  # lz4 reports a corrupt frame as RuntimeError
            raise ValueError(str(e)) from e


def make_decompressor(kind: str, props: bytes = b"") -> Decompressor:
    """kind: deflate (raw), zlib, gzip, bz2, xz, lz4 (frame), lzma-alone, lzma-zip (raw LZMA1 with zip's props header)."""
    if kind == "deflate":
        return ZlibAdapter(-15)
    if kind == "zlib":
        return ZlibAdapter(15)
    if kind == "gzip":
        return ZlibAdapter(31)
    if kind == "bz2":
        return bz2.BZ2Decompressor()  # type: ignore[return-value]
    if kind == "xz":
        return lzma.LZMADecompressor(lzma.FORMAT_XZ)  # type: ignore[return-value]
    if kind == "lz4":
        try:  # joblib's optional codec; without the library the stream is reported, never passed
            import lz4.frame
        except ImportError as e:
            raise ValueError("no lz4 library to read an LZ4 frame") from e
        return Lz4Adapter(lz4.frame.LZ4FrameDecompressor())
    if kind == "lzma-alone":
        return lzma.LZMADecompressor(lzma.FORMAT_ALONE)  # type: ignore[return-value]
    if kind == "lzma-zip":
        filt = lzma._decode_filter_properties(lzma.FILTER_LZMA1, props)  # type: ignore[attr-defined]
        return lzma.LZMADecompressor(lzma.FORMAT_RAW, filters=[filt])  # type: ignore[return-value]
    raise ValueError(f"unknown decompressor {kind}")


class Spool:
    """Where inflated output goes: memory up to SPOOL_MEMORY, then an anonymous temporary file. Keeps the
    running CRC-32 so zip members are checked without holding them."""

    def __init__(self, memory: int = SPOOL_MEMORY, watch: Callable[[bytes], None] | None = None) -> None:
        import tempfile  # here: a torch zip of stored members never inflates, nor pays for tempfile

        self._f = tempfile.SpooledTemporaryFile(max_size=memory)  # noqa: SIM115 - owned by the source
        self._memory = memory
        self._watch = watch  # sees every piece first; may raise LimitExceeded to stop inflating
        self.size = 0
        self.crc = 0

    def write(self, data: bytes) -> None:
        if self._watch is not None:
            self._watch(data)
        self._f.write(data)
        self.crc = zlib.crc32(data, self.crc)
        self.size += len(data)

    def source(self, parent: Source, name: str) -> Source:
        """The output as a child source of `parent`: bytes when small, a file-backed source when large."""
        if self.size <= self._memory:
            self._f.seek(0)
            data = self._f.read()
            self._f.close()
            return parent.child_bytes(name, data)
        return SpoolSource(parent.display, parent.child_member(name), self._f, self.size)


class SpoolSource(Source):
    """Inflated content kept in a temporary file; read like any other source."""

    def __init__(self, display: str, member: str, fh: object, size: int) -> None:
        self._fh = fh
        self.crc: int | None = None  # CRC-32 of the whole content when it was inflated whole
        super().__init__(display, member, size)

    def read_at(self, offset: int, n: int) -> bytes:
        if offset < 0 or n <= 0 or offset >= self.size:
            return b""
        self._fh.seek(offset)  # type: ignore[attr-defined]
        return self._fh.read(min(n, self.size - offset))  # type: ignore[attr-defined,no-any-return]

    def close(self) -> None:
        self._fh.close()  # type: ignore[attr-defined]


def as_bytes(src: Source) -> bytes | None:
    return src.data if isinstance(src, BytesSource) else None


@record(frozen=True)
class Inflated:
    data: bytes            # the output when no sink was given (else empty)
    consumed: int          # compressed bytes fed (upper bound: read in chunks)
    eof: bool              # the stream ended properly
    over_cap: bool         # output reached the cap: more remains
    bomb: bool             # ratio exceeded past the floor
    error: str | None      # corrupt stream
    unused: bytes          # bytes after the end of the stream within the fed window
    size: int = 0          # bytes produced (kept)


def inflate(src: Source, start: int, length: int, decomp: Decompressor, *, cap: int, max_ratio: int,
            ratio_floor: int, charge: Callable[[int], None], sink: Spool | None = None) -> Inflated:
    """Inflate src[start:start+length] into at most `cap` bytes (one more is produced to detect overflow).

    Output goes to `sink` when given (never held whole), else into the returned bytes. The ratio is checked
    after every step of at most OUT_CHUNK bytes out / IN_CHUNK bytes in, so a bomb stops near the floor."""
    out = bytearray()
    produced = 0
    pos = start
    end = start + max(0, length)
    error: str | None = None
    over = bomb = False
    stalled = 0
    try:
        while not decomp.eof:
            chunk = b""
            if decomp.needs_input:
                if pos >= end:
                    break
                chunk = src.read_at(pos, min(IN_CHUNK, end - pos))
                if not chunk:
                    break
                pos += len(chunk)
            piece = decomp.decompress(chunk, min(OUT_CHUNK, cap + 1 - produced))
            if piece:
                charge(len(piece))
                if produced + len(piece) > cap:
                    over = True
                    piece = piece[: cap - produced]
                produced += len(piece)
                if sink is not None:
                    sink.write(piece)
                else:
                    out += piece
                stalled = 0
                if over:
                    break
            elif not chunk:
                stalled += 1
                if stalled > 2:
                    break
            if produced > ratio_floor and produced > max_ratio * max(1, pos - start):
                bomb = True
                break
    except (zlib.error, OSError, EOFError, lzma.LZMAError, ValueError) as e:
        error = f"{type(e).__name__}: {e}"
    unused = b""
    if decomp.eof:
        unused = decomp.unused_data
    return Inflated(bytes(out), pos - start, decomp.eof, over, bomb, error, unused, produced)
