"""Executables in a model folder (U03): report them, and scan the model data they carry.

llamafiles are Actually Portable Executables that are also zip archives holding a GGUF; other wrappers
simply append a GGUF to a binary or a `#!` script. The search for embedded GGUF headers reads at most
`max_header_bytes` from the front, in blocks, so memory stays flat.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import TYPE_CHECKING

from scanner.findings import Finding
from scanner.source import Source

if TYPE_CHECKING:
    from scanner.context import ScanContext

BLOCK = 1 << 20
EOCD = b"PK\x05\x06"


def _kind(head: bytes) -> str:
    if head.startswith(b"\x7fELF"):
        return "ELF executable"
    if head.startswith(b"MZqFpD"):
        return "Actually Portable Executable (APE, llamafile-style)"
    if head.startswith(b"MZ"):
        return "PE/DOS executable"
    if head.startswith(b"#!"):
        return "script wrapper followed by binary data"
    return "Mach-O executable"


def analyze(src: Source, ctx: ScanContext) -> Iterator[Finding]:
    head = src.head(64)
    yield ctx.finding("EXECUTABLE-FILE", f"{_kind(head)} where a model file is expected", src, offset=0,
                      evidence=head[:16].hex())
    members = _zip_members(src, ctx) if _has_zip_directory(src) else None
    spans = [(a, b) for _name, _method, a, b in members] if members else None
    hits = embedded_gguf_offsets(src, ctx.limits.max_header_bytes,
                                 int(ctx.rules.doc("executable").get("search", {}).get("gguf_hits", 4)))
    for off in hits:
        if spans and any(a <= off < b for a, b in spans):
            continue  # a zip member's data (llamafile weights): scanned below as that member
        yield ctx.finding("EXECUTABLE-EMBEDDED-MODEL", f"GGUF header embedded at offset {off}", src, offset=off,
                          evidence=src.read_at(off, 16).hex())
        yield from ctx.scan_child(src.child_slice(f"gguf@{off}", off, src.size - off), "gguf")
    if spans is None and not _has_zip_directory(src):
        return
    yield ctx.finding("EXECUTABLE-EMBEDDED-MODEL", "executable is also a zip archive (APE/llamafile layout)",
                      src, evidence="end-of-central-directory record in the tail")
    if spans:
        # the members, as llamafile and zipfile read them (offsets from the end); the head is this file
        from scanner.formats.zip.reader import analyze_appended

        yield from analyze_appended(src, ctx, announce=False)
        yield from _default_args(src, ctx, members or [])
    else:  # no readable directory: the zip analyzer reports why and walks the local headers
        yield from ctx.scan_child(src.child_slice("zip", 0, src.size), "zip")


def _zip_members(src: Source, ctx: ScanContext) -> list[tuple[str, int, int, int]] | None:
    """(name, method, data start, data end) of the members of the zip the executable carries (None: no
    directory that parses, or no member with a local header)."""
    from scanner.formats.zip import structure as zs
    from scanner.source import LimitExceeded

    try:
        layout = zs.parse_layout(src, max_members=ctx.limits.max_members, max_cd_bytes=ctx.limits.max_header_bytes)
    except (zs.ZipError, LimitExceeded):
        return None
    out = [(e.name, e.method, e.data_offset, e.data_end) for e in layout.entries
           if e.data_offset is not None and e.data_end is not None]
    return out or None


ARGS_MEMBER = ".args"
MAX_ARGS = 1 << 16


def _default_args(src: Source, ctx: ScanContext, members: list[tuple[str, int, int, int]]) -> Iterator[Finding]:
    """llamafile prepends the lines of its zip's `.args` to the command line (a `...` line marks where the
    user's own arguments go): shown so a reviewer sees what the program starts with (host, port, files)."""
    import zlib

    for name, method, start, end in members:
        if name != ARGS_MEMBER or end - start > MAX_ARGS or method not in (0, 8):
            continue
        raw = src.read_at(start, end - start)
        try:
            data = raw if method == 0 else zlib.decompressobj(-15).decompress(raw, MAX_ARGS)
        except zlib.error:
            continue  # the zip analyzer reports a member that does not inflate
        args = [a for a in data.decode("utf-8", "backslashreplace").split("\n") if a]
        yield ctx.finding("LLAMAFILE-ARGS", f"the program starts with {len(args)} default argument(s) from .args",
                          src, offset=start, evidence=" ".join(args))


def embedded_gguf_offsets(src: Source, window: int, max_hits: int) -> list[int]:
    """Offsets (> 0) of plausible GGUF headers (magic + version 1..3) in the first `window` bytes."""
    hits: list[int] = []
    end = min(src.size, window)
    pos = 1
    while pos < end and len(hits) < max_hits:
        block = src.read_at(pos, min(BLOCK + 8, end - pos + 8))
        if len(block) < 8:
            break
        i = block.find(b"GGUF")
        while i != -1 and i < BLOCK and len(hits) < max_hits:
            if i + 8 <= len(block):
                (ver,) = struct.unpack_from("<I", block, i + 4)
                if 1 <= ver <= 3:
                    hits.append(pos + i)
            i = block.find(b"GGUF", i + 1)
        pos += BLOCK
    return hits


def _has_zip_directory(src: Source) -> bool:
    tail_len = min(src.size, 65536 + 22)
    return EOCD in src.read_at(src.size - tail_len, tail_len)
