"""The operator codes of a TFLite flatbuffer (tensorflow/lite/schema/schema.fbs), read with bounds checks.

Builtin operators are the runtime's own kernels. Custom codes name kernels the application registers; a
runtime without them refuses the model. `Flex<Op>` custom codes are TensorFlow ops run by the Flex
(select TF ops) delegate when the application links it: they are judged by the TensorFlow op rules, so
`FlexWriteFile` is the same finding as a SavedModel's `WriteFile`.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Any

from scanner.findings import Finding, Severity
from scanner.source import Source

MODEL_OPERATOR_CODES = 1  # Model.operator_codes: [OperatorCode]
OPCODE_CUSTOM = 1         # OperatorCode.custom_code: string
FLEX_PREFIX = "Flex"
_MAX_NAME = 1024


class FlatbufferError(ValueError):
    pass


class _Reader:
    def __init__(self, src: Source) -> None:
        self.src = src

    def u32(self, pos: int) -> int:
        return int(struct.unpack("<I", self._read(pos, 4))[0])

    def i32(self, pos: int) -> int:
        return int(struct.unpack("<i", self._read(pos, 4))[0])

    def u16(self, pos: int) -> int:
        return int(struct.unpack("<H", self._read(pos, 2))[0])

    def _read(self, pos: int, n: int) -> bytes:
        if pos < 0 or pos + n > self.src.size:
            raise FlatbufferError(f"offset {pos} outside the file")
        return self.src.read_at(pos, n)

    def field(self, table: int, index: int) -> int | None:
        """Absolute position of field `index` of the table at `table`, or None when absent."""
        vtable = table - self.i32(table)
        vt_size = self.u16(vtable)
        slot = 4 + 2 * index
        if slot + 2 > vt_size:
            return None
        off = self.u16(vtable + slot)
        return table + off if off else None

    def deref(self, pos: int) -> int:
        return pos + self.u32(pos)

    def vector(self, pos: int, limit: int) -> tuple[int, int]:
        start = self.deref(pos)
        n = self.u32(start)
        if n > limit:
            raise FlatbufferError(f"vector of {n} elements over the limit {limit}")
        if start + 4 + 4 * n > self.src.size:
            raise FlatbufferError("vector runs past the end of the file")
        return start + 4, n

    def string(self, pos: int) -> str:
        start = self.deref(pos)
        n = self.u32(start)
        return self._read(start + 4, min(n, _MAX_NAME)).decode("utf-8", "backslashreplace")


def custom_codes(src: Source, limit: int) -> list[str]:
    """Every custom_code of Model.operator_codes, in order."""
    r = _Reader(src)
    root = r.deref(0)
    pos = r.field(root, MODEL_OPERATOR_CODES)
    if pos is None:
        return []
    first, n = r.vector(pos, limit)
    out = []
    for i in range(n):
        code = r.deref(first + 4 * i)
        cpos = r.field(code, OPCODE_CUSTOM)
        if cpos is not None:
            out.append(r.string(cpos))
    return out


def op_findings(src: Source, ctx: Any) -> Iterator[Finding]:
    from scanner.formats.tensorflow.savedmodel import _rules as tf_rules

    try:
        codes = custom_codes(src, ctx.limits.max_graph_nodes)
    except FlatbufferError as e:
        yield ctx.finding("TFLITE-MALFORMED", "the operator codes of the flatbuffer could not be read", src,
                          evidence=str(e)[:200])
        return
    rules = tf_rules(ctx)
    for code in dict.fromkeys(codes):
        if code.startswith(FLEX_PREFIX) and len(code) > len(FLEX_PREFIX):
            op = code[len(FLEX_PREFIX):]
            hit = rules.ops.get(op)
            if hit is not None:
                rule_id, severity, reason = hit
                yield ctx.finding("TFLITE-FLEX-OP", f"Flex op {code}: the TensorFlow op {op} {reason}", src,
                                  evidence=f"custom_code={code}", severity=Severity(severity))
            elif op not in rules.registered:
                yield ctx.finding("TFLITE-FLEX-OP", f"Flex op {code}: {op} is not an op TensorFlow registers",
                                  src, evidence=f"custom_code={code}", severity=Severity.MEDIUM)
            else:
                yield ctx.finding("TFLITE-CUSTOM-OP", f"Flex op {code} (TensorFlow op {op}) runs through the "
                                  "Flex delegate", src, evidence=f"custom_code={code}", severity=Severity.INFO)
        else:
            yield ctx.finding("TFLITE-CUSTOM-OP", f"custom op {code!r}: a kernel the application must register",
                              src, evidence=f"custom_code={code}")
