"""Minimal protobuf wire-format walker: reads tags and lengths through a Source without decoding payloads."""

from __future__ import annotations

from collections.abc import Iterator

from scanner.source import Source

# ModelProto (onnx.proto3) field number -> wire type (0 varint, 2 length-delimited)
ONNX_MODEL_FIELDS = {1: 0, 2: 2, 3: 2, 4: 2, 5: 0, 6: 2, 7: 2, 8: 2, 14: 2, 20: 2, 25: 2, 26: 2}


def read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def encode_varint(n: int) -> bytes:
    """Protobuf base-128 varint of a non-negative int (for building test and benchmark files)."""
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def walk_fields(src: Source, start: int, end: int, max_fields: int) -> Iterator[tuple[int, int, int, int]]:
    """Yield (field_number, wire_type, payload_offset, payload_length) for each field in [start, end).

    Raises ValueError on anything that is not well-formed wire format or runs past `end`."""
    pos = start
    count = 0
    while pos < end:
        count += 1
        if count > max_fields:
            raise ValueError("too many fields")
        window = src.read_at(pos, 20)
        tag, p = read_varint(window, 0)
        num, wtype = tag >> 3, tag & 7
        if num == 0:
            raise ValueError("field number 0")
        if wtype == 0:
            _, p2 = read_varint(window, p)
            yield num, wtype, pos + p, p2 - p
            pos += p2
        elif wtype == 1:
            yield num, wtype, pos + p, 8
            pos += p + 8
        elif wtype == 5:
            yield num, wtype, pos + p, 4
            pos += p + 4
        elif wtype == 2:
            length, p2 = read_varint(window, p)
            yield num, wtype, pos + p2, length
            pos += p2 + length
        else:
            raise ValueError(f"unsupported wire type {wtype}")
        if pos > end:
            raise ValueError("field runs past the end")
