"""A read-only reader of `marshal` streams holding code objects (Keras Lambda bytecode).

It never builds a code object: it walks the byte format and keeps names, constants and a best-effort
instruction listing as evidence. The code-object field layout differs between Python versions and the
stream carries no version, so every known layout is tried and the one that consumes the bytes exactly wins.
"""

from __future__ import annotations

import dis  # imported up front: a lazy import would unmarshal a .pyc in the middle of a hostile scan
import struct
from dataclasses import dataclass, field

FLAG_REF = 0x80

# layout name -> (number of leading int32 fields, object fields after `code`, where firstlineno sits)
# 3.11+: argcount posonly kwonly stacksize flags | code consts names localsplusnames localspluskinds
#        filename name qualname <int firstlineno> linetable exceptiontable
# 3.8-3.10: argcount posonly kwonly nlocals stacksize flags | code consts names varnames freevars cellvars
#        filename name <int firstlineno> lnotab
# 3.0-3.7: argcount kwonly nlocals stacksize flags | same objects as 3.8
# 2.x: argcount nlocals stacksize flags | same objects as 3.8
_LAYOUTS: dict[str, tuple[int, tuple[str, ...]]] = {
    "3.11+": (5, ("code", "consts", "names", "localsplusnames", "localspluskinds", "filename", "name",
                  "qualname", "#firstlineno", "linetable", "exceptiontable")),
    "3.8-3.10": (6, ("code", "consts", "names", "varnames", "freevars", "cellvars", "filename", "name",
                     "#firstlineno", "lnotab")),
    "3.0-3.7": (5, ("code", "consts", "names", "varnames", "freevars", "cellvars", "filename", "name",
                    "#firstlineno", "lnotab")),
    "2.x": (4, ("code", "consts", "names", "varnames", "freevars", "cellvars", "filename", "name",
                "#firstlineno", "lnotab")),
}


class MarshalError(ValueError):
    pass


@dataclass
class CodeInfo:
    """What one code object (and the ones nested in its constants) references."""

    name: str = "?"
    filename: str = "?"
    code: bytes = b""
    names: list[str] = field(default_factory=list)
    consts: list[object] = field(default_factory=list)
    nested: list[CodeInfo] = field(default_factory=list)


@dataclass(frozen=True)
class _Code:
    info: CodeInfo


class _Reader:
    def __init__(self, data: bytes, layout: str, max_objects: int, max_depth: int) -> None:
        self.data = data
        self.pos = 0
        self.layout = layout
        self.refs: list[object] = []
        self.budget = max_objects
        self.max_depth = max_depth

    def _take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise MarshalError("truncated marshal data")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def _i32(self) -> int:
        return int(struct.unpack("<i", self._take(4))[0])

    def _u8(self) -> int:
        return self._take(1)[0]

    def _size(self) -> int:
        n = self._i32()
        if n < 0 or n > len(self.data):
            raise MarshalError(f"bad length {n}")
        return n

    def read(self, depth: int = 0) -> object:
        if depth > self.max_depth:
            raise MarshalError("marshal nesting too deep")
        self.budget -= 1
        if self.budget < 0:
            raise MarshalError("too many marshal objects")
        code = self._u8()
        flag = bool(code & FLAG_REF)
        t = chr(code & ~FLAG_REF)
        slot = -1
        if flag:
            slot = len(self.refs)
            self.refs.append(None)
        value = self._read_typed(t, depth, slot)
        if flag:
            self.refs[slot] = value
        return value

    def _read_typed(self, t: str, depth: int, slot: int) -> object:  # noqa: C901 - one case per type code
        simple = {"0": None, "N": None, "F": False, "T": True, "S": "StopIteration", ".": Ellipsis}
        if t in simple:
            return simple[t]
        if t == "i":
            return self._i32()
        if t == "I":
            return int(struct.unpack("<q", self._take(8))[0])
        if t == "l":
            n = self._i32()
            digits = [int(struct.unpack("<H", self._take(2))[0]) for _ in range(min(abs(n), len(self.data)))]
            if abs(n) > len(self.data):
                raise MarshalError("bad long size")
            val = sum(d << (15 * i) for i, d in enumerate(digits))
            return -val if n < 0 else val
        if t == "g":
            return float(struct.unpack("<d", self._take(8))[0])
        if t == "y":
            re, im = struct.unpack("<dd", self._take(16))
            return complex(re, im)
        if t in "fx":
            parts = [self._take(self._u8()).decode("ascii", "replace") for _ in range(1 if t == "f" else 2)]
            return " ".join(parts)
        if t == "s":
            return self._take(self._size())
        if t in "tuaA":
            return self._take(self._size()).decode("utf-8", "surrogatepass")
        if t in "zZ":
            return self._take(self._u8()).decode("latin-1")
        if t == "r":
            i = self._i32()
            if not 0 <= i < len(self.refs):
                raise MarshalError(f"bad back-reference {i}")
            return self.refs[i]
        if t in "([<>":
            n = self._size()
            return tuple(self.read(depth + 1) for _ in range(n))
        if t == ")":
            n = self._u8()
            return tuple(self.read(depth + 1) for _ in range(n))
        if t == ":":
            return tuple(self.read(depth + 1) for _ in range(3))
        if t == "{":
            items: list[object] = []
            while True:
                if self.pos < len(self.data) and self.data[self.pos] == ord("0"):
                    self.pos += 1
                    return tuple(items)
                k = self.read(depth + 1)
                items.append((k, self.read(depth + 1)))
        if t == "c":
            return self._code(depth)
        raise MarshalError(f"unknown marshal type code {t!r}")

    def _code(self, depth: int) -> _Code:
        nints, fields_ = _LAYOUTS[self.layout]
        for _ in range(nints):
            self._i32()
        info = CodeInfo()
        for name in fields_:
            if name.startswith("#"):
                self._i32()
                continue
            value = self.read(depth + 1)
            if name == "code":
                if not isinstance(value, bytes):
                    raise MarshalError("code field is not bytes")
                info.code = value
            elif name == "consts":
                for c in _as_tuple(value):
                    if isinstance(c, _Code):
                        info.nested.append(c.info)
                        info.consts.append(c.info)
                    else:
                        info.consts.append(c)
            elif name == "names":
                info.names = [str(n) for n in _as_tuple(value)]
            elif name == "filename":
                info.filename = str(value)
            elif name == "name":
                info.name = str(value)
        return _Code(info)


def _as_tuple(value: object) -> tuple[object, ...]:
    if not isinstance(value, tuple):
        raise MarshalError("expected a tuple")
    return value


@dataclass(frozen=True)
class ParsedCode:
    layout: str
    code: CodeInfo


def parse_code(data: bytes, *, max_objects: int = 100_000, max_depth: int = 64) -> ParsedCode:
    """Parse a marshalled code object; raise MarshalError when no layout reads it exactly."""
    errors = []
    for layout in _LAYOUTS:
        r = _Reader(data, layout, max_objects, max_depth)
        try:
            value = r.read()
        except (MarshalError, struct.error, UnicodeDecodeError, RecursionError) as e:
            errors.append(f"{layout}: {e}")
            continue
        if r.pos != len(data):
            errors.append(f"{layout}: {len(data) - r.pos} trailing bytes")
            continue
        if not isinstance(value, _Code):
            raise MarshalError(f"marshal data is a {type(value).__name__}, not a code object")
        return ParsedCode(layout, value.info)
    raise MarshalError("not a marshalled code object (" + "; ".join(errors) + ")")


def all_names(info: CodeInfo) -> list[str]:
    out = list(info.names)
    for n in info.nested:
        out.extend(all_names(n))
    return out


def all_strings(info: CodeInfo) -> list[str]:
    out = [c if isinstance(c, str) else c.decode("latin-1") for c in info.consts if isinstance(c, (str, bytes))]
    for n in info.nested:
        out.extend(all_strings(n))
    return out


def disassemble(parsed: ParsedCode, max_instructions: int = 200) -> list[str]:
    """Best-effort listing with the running interpreter's opcode table (wordcode layouts only).

    Only names and constants are looked up; argument encodings differ between versions, so an index that
    does not fit is shown raw. This is evidence for a human, never something the verdict depends on."""
    if parsed.layout == "2.x":
        return []
    info = parsed.code
    out: list[str] = []
    code = info.code
    for i in range(0, len(code) - 1, 2):
        op, arg = code[i], code[i + 1]
        name = dis.opname[op] if op < len(dis.opname) else f"<{op}>"
        if name == "CACHE":
            continue
        text = name
        if op in dis.hasname:
            # 3.11+ packs a flag into the low bit of LOAD_GLOBAL's argument
            shifted = name == "LOAD_GLOBAL" and parsed.layout == "3.11+"
            idx = arg >> 1 if shifted or arg >= len(info.names) else arg
            text += f" {info.names[idx]}" if idx < len(info.names) else f" #{arg}"
        elif op in dis.hasconst:
            text += f" {_short(info.consts[arg])}" if arg < len(info.consts) else f" #{arg}"
        out.append(text)
        if len(out) >= max_instructions:
            out.append("…")
            break
    return out


def _short(value: object) -> str:
    if isinstance(value, CodeInfo):
        return f"<code {value.name}>"
    return repr(value)[:80]
