"""Count the protobuf fields of an ONNX ModelProto before it is parsed.

Parsing builds one object per message and per repeated element, so a few MB of empty NodeProtos (2 bytes
each) cost seconds and GBs in `ParseFromString`. This walk only reads tags and lengths (descending into
every message-typed field the onnx descriptors name) and raises LimitExceeded past `max_proto_fields`,
so the parse that follows is bounded. Malformed wire data is left to the real parser to report.
"""

from __future__ import annotations

from typing import Any

from scanner.source import LimitExceeded, Source

_MSG = 11  # FieldDescriptor.TYPE_MESSAGE
MIN_FIELD_BYTES = 2  # the smallest field (tag + zero length or one-byte varint)


def bounded_parse_check(data: bytes, limits: Any, src: Source) -> None:
    """Raise LimitExceeded when `data` holds more than max_proto_fields fields. Data too small to hold that
    many is not walked."""
    if len(data) // MIN_FIELD_BYTES > limits.max_proto_fields:
        count_fields(data, limits.max_proto_fields, src)


def _children(desc: Any, cache: dict[str, dict[int, Any]]) -> dict[int, Any]:
    got = cache.get(desc.full_name)
    if got is None:
        got = {f.number: f.message_type for f in desc.fields if f.type == _MSG}
        cache[desc.full_name] = got
    return got


def count_fields(data: bytes, limit: int, src: Source) -> int:
    """Fields in `data` as a ModelProto, nested messages included; LimitExceeded past `limit`."""
    from scanner.formats.onnx.proto import pb2

    cache: dict[str, dict[int, Any]] = {}
    stack: list[tuple[Any, int, int]] = [(pb2().ModelProto.DESCRIPTOR, 0, len(data))]
    n = 0
    size = len(data)
    while stack:
        desc, pos, end = stack.pop()
        subs = _children(desc, cache)
        while pos < end:
            n += 1
            if n > limit:
                raise LimitExceeded("max_proto_fields", f"more than {limit} protobuf fields in the ONNX model; "
                                    "not parsed", src.loc(pos))
            b = data[pos]
            if b < 0x80:
                tag, pos = b, pos + 1
            else:
                tag, pos = _varint(data, pos)
                if tag < 0:
                    return n
            wt = tag & 7
            if wt == 0:
                while pos < size and data[pos] & 0x80:
                    pos += 1
                pos += 1
            elif wt == 2:
                if pos < size and data[pos] < 0x80:
                    length, pos = data[pos], pos + 1
                else:
                    length, pos = _varint(data, pos)
                    if length < 0:
                        return n
                sub = subs.get(tag >> 3)
                if sub is not None and length:
                    stack.append((sub, pos, min(pos + length, end)))
                pos += length
            elif wt == 1:
                pos += 8
            elif wt == 5:
                pos += 4
            else:
                return n  # groups or garbage: the parser decides
    return n


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while pos < len(data) and shift < 64:
        b = data[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
    return -1, pos
