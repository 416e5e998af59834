"""MXNet `.params` NDArray lists (mx.nd.save, gluon `save_parameters` / `export`), parsed as MXNet's C++
reads them (src/ndarray/ndarray.cc NDArray::Load, 1.9.1), bounded.

Layout: u64 0x112 magic, u64 reserved, u64 array count, each array (V2/V3 magic 0xF993FAC9/0xF993FACA with
storage type; V1 0xF993FAC8; or the pre-V1 layout whose first u32 is ndim), then u64 name count and
(u64 length, bytes) names. dmlc's vector reader resizes to the declared count before reading, so a count
the file cannot hold is an allocation bomb; the format holds no code. Nothing is allocated by a count here.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from scanner.findings import Finding, Severity
from scanner.source import Source

if TYPE_CHECKING:
    from scanner.context import ScanContext

LIST_MAGIC = 0x112
V1, V2, V3 = 0xF993FAC8, 0xF993FAC9, 0xF993FACA
MAX_NDIM = 32
MIN_ARRAY_BYTES = 8   # the smallest array record (a V2 "none" array: magic, stype, ndim 0)
DEV_TYPES = frozenset({1, 2, 3, 5})  # kCPU, kGPU, kCPUPinned, kCPUShared


class ParamsError(ValueError):
    def __init__(self, message: str, offset: int) -> None:
        super().__init__(message)
        self.offset = offset


@dataclass(frozen=True)
class _Tables:
    sizes: dict[int, int]
    aux: dict[int, int]


def _tables(ctx: ScanContext) -> _Tables:
    def build() -> _Tables:
        doc = ctx.rules.doc("mxnet").get("params", {})
        return _Tables({int(k): int(v) for k, v in doc.get("dtype_sizes", {}).items()},
                       {int(k): int(v) for k, v in doc.get("aux_arrays", {}).items()})
    return ctx.rules.cached("mxnet-params", build)  # type: ignore[no-any-return]


class _Reader:
    def __init__(self, src: Source) -> None:
        self.src, self.pos = src, 0

    def take(self, fmt: str) -> tuple[int, ...]:
        n = struct.calcsize(fmt)
        if self.pos + n > self.src.size:
            raise ParamsError("truncated", self.pos)
        out = struct.unpack(fmt, self.src.read_at(self.pos, n))
        self.pos += n
        return out

    def skip(self, n: int, what: str) -> None:
        if n < 0 or self.pos + n > self.src.size:
            raise ParamsError(f"{what} of {n} bytes runs past the end of the file", self.pos)
        self.pos += n

    def left(self) -> int:
        return self.src.size - self.pos


def _shape(r: _Reader, legacy_ndim: int | None = None, *, unknown_ok: bool = False) -> list[int] | None:
    """TShape::Load (int32 ndim, int64 dims) or the pre-V1 layout (ndim given, uint32 dims); None for the
    unknown shape (ndim -1) NumPy-semantics (V3) arrays use for `none`."""
    at = r.pos
    if legacy_ndim is None:
        (ndim,) = r.take("<i")
        fmt = "q"
    else:
        ndim, fmt = legacy_ndim, "I"
    if ndim == -1 and unknown_ok:
        return None
    if ndim < 0 or ndim > MAX_NDIM:
        raise ParamsError(f"shape with ndim {ndim}", at)
    dims = list(r.take(f"<{ndim}{fmt}")) if ndim else []
    if any(d < 0 for d in dims):
        raise ParamsError(f"negative dimension in {dims}", at)
    return dims


def _size(dims: list[int] | None) -> int:
    n = 1
    for d in dims or []:
        n *= d
    return n


def _array(r: _Reader, t: _Tables) -> str | None:
    """One NDArray::Load; returns a short description, or None for a `none` array."""
    at = r.pos
    (magic,) = r.take("<I")
    nad, sshape = 0, None
    if magic in (V2, V3):
        (stype,) = r.take("<i")
        if stype not in t.aux:
            raise ParamsError(f"storage type {stype}", at)
        nad = t.aux[stype]
        if nad:
            sshape = _shape(r)
        shape = _shape(r, unknown_ok=magic == V3)
    elif magic == V1:
        shape = _shape(r)
    else:
        shape = _shape(r, legacy_ndim=magic)
    if not shape:  # V1/V2 write ndim 0 for a `none` array, V3 ndim -1; nothing follows
        return None
    dev_type, _dev_id, dtype = r.take("<iii")
    if dev_type not in DEV_TYPES:
        raise ParamsError(f"device type {dev_type}", at)
    aux: list[tuple[int, list[int] | None]] = []
    for _ in range(nad):
        (aux_type,) = r.take("<i")
        aux.append((aux_type, _shape(r)))
    size = t.sizes.get(dtype)
    if size is None:
        raise ParamsError(f"dtype flag {dtype}", at)
    r.skip(size * _size(sshape if sshape is not None else shape), "array data")
    for aux_type, aux_shape in aux:
        asize = t.sizes.get(aux_type)
        if asize is None:
            raise ParamsError(f"aux dtype flag {aux_type}", at)
        r.skip(asize * _size(aux_shape or []), "aux data")
    return f"{'x'.join(map(str, shape))}:{dtype}"


def analyze(src: Source, ctx: ScanContext) -> Iterator[Finding]:
    t = _tables(ctx)
    r = _Reader(src)
    arrays = names = 0
    try:
        _magic, reserved = r.take("<QQ")
        if reserved:
            yield ctx.finding("MXNET-MALFORMED", f"reserved header field is {reserved:#x}: mx.save writes 0 (the "
                              "loader does not check it)", src, offset=8, severity=Severity.MEDIUM)
        (count,) = r.take("<Q")
        if count * MIN_ARRAY_BYTES > r.left():
            raise ParamsError(f"{count} arrays cannot fit in the {r.left()} bytes left (dmlc resizes to the count "
                              "before reading)", 16)
        if count > ctx.limits.max_array_items:
            yield ctx.finding("LIMIT-EXCEEDED", f"{count} arrays exceed max_array_items; not walked", src,
                              offset=16, evidence="max_array_items")
            return
        for _ in range(count):
            _array(r, t)
            arrays += 1
            if arrays % 4096 == 0:
                ctx.check_deadline(src)
        at = r.pos
        (names,) = r.take("<Q")
        if names * 8 > r.left():
            raise ParamsError(f"{names} names cannot fit in the {r.left()} bytes left", at)
        if names not in (0, count):
            raise ParamsError(f"{names} names for {count} arrays (mx.nd.load refuses)", at)
        for _ in range(names):
            (n,) = r.take("<Q")
            r.skip(n, "name")
        if r.left():
            yield ctx.finding("MXNET-MALFORMED", f"{r.left()} bytes after the NDArray list: mx.nd.load ignores them",
                              src, offset=r.pos, severity=Severity.MEDIUM)
    except ParamsError as e:
        yield ctx.finding("MXNET-MALFORMED", f"NDArray list: {e}; mx.nd.load fails or misreads it", src,
                          offset=e.offset)
    yield ctx.finding("MXNET-GRAPH", f"NDArray list walked: {arrays} arrays, {names} names", src)
