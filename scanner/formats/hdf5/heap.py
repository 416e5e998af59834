"""Pre-flight check of HDF5 global heap collections ("GCOL"), which hold variable-length strings.

The HDF5 library decodes a collection in a loop that never advances when an object header claims a zero
size: reading any variable-length attribute of such a file hangs the process in C code, where no timeout
can reach it. Collections are found by signature and walked here, in Python, with the library's own
stepping rule, before h5py is allowed to read variable-length data.
"""

from __future__ import annotations

import struct

from scanner.source import Source

SIGNATURE = b"GCOL"
_CHUNK = 4 << 20
_HDR = 16  # signature, version, 3 reserved, collection size (8 bytes)


def size_of_lengths(src: Source, base: int) -> int:
    """Bytes per length field, from the superblock at `base` (8 when unreadable)."""
    sb = src.read_at(base, 16)
    if len(sb) < 16:
        return 8
    version = sb[8]
    size = sb[14] if version in (0, 1) else sb[10]
    return size if size in (2, 4, 8) else 8


def heap_problems(src: Source, length_size: int = 8, max_problems: int = 8) -> list[str]:
    """Describe collections whose object walk would not terminate or is inconsistent; [] when all are sound."""
    out: list[str] = []
    pos = 0
    while pos < src.size and len(out) < max_problems:
        chunk = src.read_at(pos, _CHUNK + len(SIGNATURE) - 1)
        i = chunk.find(SIGNATURE)
        while i >= 0 and len(out) < max_problems:
            if i < _CHUNK:
                problem = _check(src, pos + i, length_size)
                if problem:
                    out.append(problem)
            i = chunk.find(SIGNATURE, i + 1)
        pos += _CHUNK
    return out


def _check(src: Source, at: int, length_size: int) -> str | None:
    hdr = src.read_at(at, 8 + length_size)
    if len(hdr) < 8 + length_size or hdr[4] != 1 or hdr[5:8] != b"\0\0\0":
        return None  # the bytes "GCOL" inside data, not a collection header
    size = int.from_bytes(hdr[8:8 + length_size], "little")
    obj_hdr = 8 + length_size  # index, refcount, 4 reserved, size
    start = 8 + length_size
    if size < start:
        return f"global heap collection at {at} claims {size} bytes"
    end = at + size
    if end > src.size:
        return None  # the library rejects a collection running past the end of file
    p = at + start
    steps = 0
    seen: set[int] = set()
    free_seen = False
    while p < end:
        if p + obj_hdr > end:
            break
        if free_seen:
            # writers put the free-space object last; objects after it are how the library gets lost
            return f"global heap collection at {at}: object at {p} follows the free-space object"
        raw = src.read_at(p, obj_hdr)
        idx = struct.unpack_from("<H", raw, 0)[0]
        osize = int.from_bytes(raw[8:8 + length_size], "little")
        need = obj_hdr + ((osize + 7) & ~7) if idx > 0 else osize
        if need <= 0:
            return f"global heap collection at {at}: object at {p} has size 0 (the HDF5 library loops forever)"
        if idx in seen:
            return f"global heap collection at {at}: object index {idx} appears twice"
        seen.add(idx)
        free_seen = idx == 0
        p += need
        steps += 1
        if steps > size // 8 + 2:
            return f"global heap collection at {at}: too many objects"
    return None
