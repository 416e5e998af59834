"""A reduced ModelProto for ONNX files too large to parse whole: every field is copied except the bulky
tensor payloads (raw_data and the packed numeric / string data), which are skipped by their length.

The wire format is walked through `src.read_at` with a block cache, so memory stays at the size of the
model's structure, not its weights. Which messages to descend into is derived from the onnx descriptors
(any message that can contain a TensorProto), so new ONNX fields that hold tensors are followed too.
Skipped payloads are checked for the well-formedness the protobuf parser would have enforced (packed
fixed-width lengths, complete varints); raw_data is replaced by an empty value so its presence stays visible.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from scanner.protowire import read_varint
from scanner.source import LimitExceeded, Source

if TYPE_CHECKING:
    from scanner.limits import Limits

BLOCK = 1 << 20
SKIP_MIN = 4096              # payloads up to this size are copied (cheap, keeps small models byte-exact)
STUB_UNKNOWN_MIN = 1 << 16   # larger unknown fields keep their tag with an empty body (still reported)
_HIGH = bytes(range(0x80, 0x100))
_LONG_VARINT = re.compile(b"[\x80-\xff]{10}")
# descriptor field types (google.protobuf.descriptor.FieldDescriptor.TYPE_*)
_FIXED32 = {2, 7, 15}        # float, fixed32, sfixed32
_FIXED64 = {1, 6, 16}        # double, fixed64, sfixed64
_VARINT = {3, 4, 5, 13, 17, 18, 8, 14}
_BYTES = {9, 12}


@dataclass(frozen=True)
class Skeleton:
    data: bytes
    skipped_bytes: int       # tensor payload bytes not read
    skipped_fields: int      # tensor payload fields skipped
    tensors: int             # TensorProto messages seen


@dataclass(frozen=True)
class _Kind:
    name: str
    known: frozenset[int]
    subs: dict[int, str]              # field number -> message kind to descend into
    bulk: dict[int, int]              # TensorProto payload field -> descriptor type


def _schema() -> dict[str, _Kind]:
    from scanner.formats.onnx.proto import pb2

    ModelProto, TensorProto = pb2().ModelProto, pb2().TensorProto  # noqa: N806 - protobuf classes
    tensor = TensorProto.DESCRIPTOR.full_name
    holds: dict[str, bool] = {}

    def contains_tensor(d: Any, seen: frozenset[str] = frozenset()) -> bool:
        if d.full_name == tensor:
            return True
        if d.full_name in holds:
            return holds[d.full_name]
        if d.full_name in seen:
            return False
        r = any(f.message_type is not None and contains_tensor(f.message_type, seen | {d.full_name})
                for f in d.fields)
        if not seen:
            holds[d.full_name] = r
        return r

    kinds: dict[str, _Kind] = {}
    todo = [ModelProto.DESCRIPTOR]
    while todo:
        d = todo.pop()
        if d.full_name in kinds:
            continue
        subs = {}
        for f in d.fields:
            if f.message_type is not None and contains_tensor(f.message_type):
                subs[f.number] = f.message_type.full_name
                todo.append(f.message_type)
        bulk = {}
        if d.full_name == tensor:
            names = ("float_data", "int32_data", "string_data", "int64_data", "raw_data", "double_data",
                     "uint64_data")
            bulk = {d.fields_by_name[n].number: d.fields_by_name[n].type for n in names}
        kinds[d.full_name] = _Kind(d.full_name, frozenset(f.number for f in d.fields), subs, bulk)
    return kinds


def _varint_bytes(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


class _Reader:
    """read_at through a 1 MiB block cache (a graph is thousands of small fields)."""

    def __init__(self, src: Source) -> None:
        self.src = src
        self.buf = b""
        self.off = 0

    def get(self, pos: int, n: int) -> bytes:
        rel = pos - self.off
        if 0 <= rel and rel + n <= len(self.buf):
            return self.buf[rel:rel + n]
        if n > BLOCK // 2:
            return self.src.read_at(pos, n)
        self.buf, self.off = self.src.read_at(pos, BLOCK), pos
        return self.buf[:n]


class _Builder:
    def __init__(self, src: Source, limits: Limits) -> None:
        self.src = src
        self.r = _Reader(src)
        self.kinds = _schema()
        self.limits = limits
        # graph -> node -> attribute -> graph: three messages per graph level, plus model / training info
        self.max_depth = 3 * limits.max_graph_depth + 8
        self.fields = 0
        self.copied = 0
        self.skipped_bytes = 0
        self.skipped_fields = 0
        self.tensors = 0

    def message(self, kind: _Kind, start: int, end: int, depth: int) -> bytes:
        if depth > self.max_depth:
            raise LimitExceeded("max_graph_depth", f"protobuf messages nested deeper than {self.max_depth}",
                                self.src.loc(start))
        if kind.bulk:
            self.tensors += 1
        out = bytearray()
        pos = start
        while pos < end:
            self.fields += 1
            if self.fields > self.limits.max_proto_fields:
                raise LimitExceeded("max_proto_fields", f"more than {self.limits.max_proto_fields} protobuf fields",
                                    self.src.loc(pos))
            win = self.r.get(pos, 20)
            tag, p = read_varint(win, 0)
            num, wt = tag >> 3, tag & 7
            if num == 0:
                raise ValueError(f"field number 0 at offset {pos}")
            length = 0
            if wt == 0:
                _, size = read_varint(win, p)
            elif wt == 1:
                size = p + 8
            elif wt == 5:
                size = p + 4
            elif wt == 2:
                length, q = read_varint(win, p)
                size = q + length
            else:
                raise ValueError(f"wire type {wt} at offset {pos}")
            if pos + size > end:
                raise ValueError(f"field {num} at offset {pos} runs past the end of its message")
            body = pos + size - length
            if wt == 2 and num in kind.subs:
                child = self.message(self.kinds[kind.subs[num]], body, body + length, depth + 1)
                self.emit(out, win[:p] + _varint_bytes(len(child)) + child)
            elif wt == 2 and num in kind.bulk and length > SKIP_MIN:
                self.check_payload(kind.bulk[num], num, body, length)
                self.skipped_bytes += length
                self.skipped_fields += 1
                if num == 9:  # raw_data: keep its presence (proto2 HasField) without its bytes
                    self.emit(out, win[:p] + b"\x00")
            elif wt == 2 and num not in kind.known and length > STUB_UNKNOWN_MIN:
                self.emit(out, win[:p] + b"\x00")
            else:
                self.emit(out, self.r.get(pos, size))
            pos += size
        return bytes(out)

    def emit(self, out: bytearray, piece: bytes) -> None:
        self.copied += len(piece)
        if self.copied > self.limits.max_read_bytes:
            raise LimitExceeded("max_read_bytes", f"ONNX structure (without tensor payloads) exceeds "
                                f"{self.limits.max_read_bytes} bytes", self.src.loc())
        out += piece

    def check_payload(self, ftype: int, num: int, start: int, length: int) -> None:
        """What the protobuf parser would refuse in a packed field we do not read into memory."""
        if ftype in _FIXED32 and length % 4 or ftype in _FIXED64 and length % 8:
            raise ValueError(f"packed field {num} at offset {start} has a length ({length}) that is not a "
                             "multiple of its element size")
        if ftype in _VARINT:
            self.check_varints(num, start, length)

    def check_varints(self, num: int, start: int, length: int) -> None:
        pos, end, run = start, start + length, 0
        while pos < end:
            chunk = self.src.read_at(pos, min(BLOCK, end - pos))
            if not chunk:
                raise ValueError(f"packed field {num} truncated at offset {pos}")
            lead = len(chunk) - len(chunk.lstrip(_HIGH))
            if lead == len(chunk):
                run += lead
            else:
                if run + lead >= 10 or _LONG_VARINT.search(chunk):
                    raise ValueError(f"packed field {num} holds a varint longer than 10 bytes near offset {pos}")
                run = len(chunk) - len(chunk.rstrip(_HIGH))
            if run >= 10:
                raise ValueError(f"packed field {num} holds a varint longer than 10 bytes near offset {pos}")
            pos += len(chunk)
        if run:
            raise ValueError(f"packed field {num} ends inside a varint at offset {end}")


def build_skeleton(src: Source, limits: Limits) -> Skeleton:
    """Raises ValueError for wire format that does not parse, LimitExceeded for a bound."""
    b = _Builder(src, limits)
    from scanner.formats.onnx.proto import pb2

    data = b.message(b.kinds[pb2().ModelProto.DESCRIPTOR.full_name], 0, src.size, 0)
    return Skeleton(data, b.skipped_bytes, b.skipped_fields, b.tensors)
