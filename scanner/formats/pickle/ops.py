"""Pickle opcode tokenizer with CPython `_pickle.c` semantics (not pickletools', which parses text opcodes
differently). Reads one opcode and its argument; never allocates more than the bytes actually present."""

from __future__ import annotations

import codecs
import re
import struct
from typing import NamedTuple

# name, opcode byte, argument kind
_TABLE = [
    ("MARK", b"("), ("STOP", b"."), ("POP", b"0"), ("POP_MARK", b"1"), ("DUP", b"2"), ("FLOAT", b"F"),
    ("INT", b"I"), ("BININT", b"J"), ("BININT1", b"K"), ("LONG", b"L"), ("BININT2", b"M"), ("NONE", b"N"),
    ("PERSID", b"P"), ("BINPERSID", b"Q"), ("REDUCE", b"R"), ("STRING", b"S"), ("BINSTRING", b"T"),
    ("SHORT_BINSTRING", b"U"), ("UNICODE", b"V"), ("BINUNICODE", b"X"), ("APPEND", b"a"), ("BUILD", b"b"),
    ("GLOBAL", b"c"), ("DICT", b"d"), ("EMPTY_DICT", b"}"), ("APPENDS", b"e"), ("GET", b"g"), ("BINGET", b"h"),
    ("INST", b"i"), ("LONG_BINGET", b"j"), ("LIST", b"l"), ("EMPTY_LIST", b"]"), ("OBJ", b"o"), ("PUT", b"p"),
    ("BINPUT", b"q"), ("LONG_BINPUT", b"r"), ("SETITEM", b"s"), ("TUPLE", b"t"), ("EMPTY_TUPLE", b")"),
    ("SETITEMS", b"u"), ("BINFLOAT", b"G"),
    ("PROTO", b"\x80"), ("NEWOBJ", b"\x81"), ("EXT1", b"\x82"), ("EXT2", b"\x83"), ("EXT4", b"\x84"),
    ("TUPLE1", b"\x85"), ("TUPLE2", b"\x86"), ("TUPLE3", b"\x87"), ("NEWTRUE", b"\x88"), ("NEWFALSE", b"\x89"),
    ("LONG1", b"\x8a"), ("LONG4", b"\x8b"),
    ("BINBYTES", b"B"), ("SHORT_BINBYTES", b"C"),
    ("SHORT_BINUNICODE", b"\x8c"), ("BINUNICODE8", b"\x8d"), ("BINBYTES8", b"\x8e"), ("EMPTY_SET", b"\x8f"),
    ("ADDITEMS", b"\x90"), ("FROZENSET", b"\x91"), ("NEWOBJ_EX", b"\x92"), ("STACK_GLOBAL", b"\x93"),
    ("MEMOIZE", b"\x94"), ("FRAME", b"\x95"),
    ("BYTEARRAY8", b"\x96"), ("NEXT_BUFFER", b"\x97"), ("READONLY_BUFFER", b"\x98"),
]
OPNAMES: dict[int, str] = {code[0]: name for name, code in _TABLE}
OPCODES: dict[str, int] = {name: code[0] for name, code in _TABLE}

# fixed-size arguments: opcode name -> struct format
_FIXED = {
    "BININT": "<i", "BININT1": "<B", "BININT2": "<H", "BINGET": "<B", "LONG_BINGET": "<I", "BINPUT": "<B",
    "LONG_BINPUT": "<I", "BINFLOAT": ">d", "PROTO": "<B", "EXT1": "<B", "EXT2": "<H", "EXT4": "<i",
    "FRAME": "<Q",
}
# length-prefixed arguments: opcode name -> (length struct format, kind of payload)
_COUNTED = {
    "BINSTRING": ("<i", "str8"), "SHORT_BINSTRING": ("<B", "str8"), "BINUNICODE": ("<I", "utf8"),
    "SHORT_BINUNICODE": ("<B", "utf8"), "BINUNICODE8": ("<Q", "utf8"), "BINBYTES": ("<I", "bytes"),
    "SHORT_BINBYTES": ("<B", "bytes"), "BINBYTES8": ("<Q", "bytes"), "BYTEARRAY8": ("<Q", "bytearray"),
    "LONG1": ("<B", "long"), "LONG4": ("<i", "long"),
}
_LINE_OPS = {"INT", "LONG", "FLOAT", "STRING", "UNICODE", "PERSID", "GET", "PUT"}
BIG_BYTES = 1 << 20  # larger byte payloads stay memoryviews of the input (no copy)

_FLOAT_RE = re.compile(rb"\s*[+-]?(?:inf(?:inity)?|nan|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)", re.I)


class OpError(Exception):
    """The stream cannot be read past this point (CPython raises here too)."""

    def __init__(self, message: str, truncated: bool = False) -> None:
        super().__init__(message)
        self.truncated = truncated


class Op(NamedTuple):
    name: str
    offset: int
    end: int
    arg: object = None
    # text opcodes whose value differs between readers (C strtol vs int(s, 0) vs pickletools' int(s))
    differential: str | None = None
    # GLOBAL / INST carry two lines
    arg2: object = None


# per opcode byte: (name, kind, struct of its fixed argument or length prefix, payload kind)
_NONE, _FIXEDARG, _COUNTEDARG, _TWOLINES, _ONELINE = range(5)
_SPEC: list[tuple[str, int, struct.Struct | None, str] | None] = [None] * 256
for _name, _code in _TABLE:
    if _name in _FIXED:
        _SPEC[_code[0]] = (_name, _FIXEDARG, struct.Struct(_FIXED[_name]), "")
    elif _name in _COUNTED:
        _SPEC[_code[0]] = (_name, _COUNTEDARG, struct.Struct(_COUNTED[_name][0]), _COUNTED[_name][1])
    elif _name in ("GLOBAL", "INST"):
        _SPEC[_code[0]] = (_name, _TWOLINES, None, "")
    elif _name in _LINE_OPS:
        _SPEC[_code[0]] = (_name, _ONELINE, None, "")
    else:
        _SPEC[_code[0]] = (_name, _NONE, None, "")


def read_op(data: bytes | memoryview, pos: int, end: int) -> Op:
    """Decode the opcode at `pos` (data[pos:end] is the stream). Raises OpError."""
    if pos >= end:
        raise OpError("stream ends without STOP", truncated=True)
    code = data[pos]
    spec = _SPEC[code]
    if spec is None:
        raise OpError(f"invalid opcode byte 0x{code:02x}")
    name, kind, st, payload = spec
    p = pos + 1
    if kind == _NONE:
        return Op(name, pos, p)
    if kind == _FIXEDARG:
        assert st is not None
        n = st.size
        if p + n > end:
            raise OpError(f"{name} argument truncated", truncated=True)
        return Op(name, pos, p + n, st.unpack_from(data, p)[0])
    if kind == _COUNTEDARG:
        assert st is not None
        ln = st.size
        if p + ln > end:
            raise OpError(f"{name} length truncated", truncated=True)
        (size,) = st.unpack_from(data, p)
        if size < 0:
            raise OpError(f"{name} declares a negative length")
        start = p + ln
        if size > end - start:
            raise OpError(f"{name} declares {size} bytes but only {end - start} remain", truncated=True)
        return Op(name, pos, start + size, _counted_value(payload, data, start, size))
    if kind == _TWOLINES:
        line1, p = _line(data, p, end, name)
        line2, p = _line(data, p, end, name)
        enc = "utf-8" if name == "GLOBAL" else "ascii"
        try:
            return Op(name, pos, p, bytes(line1).decode(enc), arg2=bytes(line2).decode(enc))
        except UnicodeDecodeError:
            raise OpError(f"{name} names are not {enc}") from None
    line, p = _line(data, p, end, name)
    value, diff = _text_value(name, bytes(line))
    return Op(name, pos, p, value, diff)


def _line(data: bytes | memoryview, p: int, end: int, name: str) -> tuple[bytes | memoryview, int]:
    nl = data.find(b"\n", p, end) if isinstance(data, bytes) else bytes(data[p:end]).find(b"\n")
    if nl < 0:
        raise OpError(f"{name} argument has no newline", truncated=True)
    if not isinstance(data, bytes):
        nl += p
    return data[p:nl], nl + 1


def _counted_value(kind: str, data: bytes | memoryview, start: int, size: int) -> object:
    if kind == "bytes" and size > BIG_BYTES:
        return memoryview(data)[start:start + size]  # no copy of big payloads
    raw = data[start:start + size]
    if kind == "long":
        return int.from_bytes(raw, "little", signed=True)
    if kind == "utf8":
        try:
            return bytes(raw).decode("utf-8", "surrogatepass")
        except UnicodeDecodeError:
            raise OpError("BINUNICODE payload is not UTF-8") from None
    if kind == "str8":
        return _py2_str(bytes(raw))
    if kind == "bytearray":
        return bytearray(raw)
    return bytes(raw)


def _py2_str(raw: bytes) -> str | bytes:
    """Python-2 str opcodes decode with the unpickler's encoding (ASCII by default, UTF-8 in torch)."""
    for enc in ("ascii", "utf-8"):
        try:
            return raw.decode(enc)
        except UnicodeDecodeError:
            continue
    return raw


def _text_value(name: str, line: bytes) -> tuple[object, str | None]:
    if name == "INT":
        return _c_int(line)
    if name == "LONG":
        text = line[:-1] if line.endswith(b"L") else line
        try:
            value = int(text, 0)
        except ValueError:
            raise OpError("LONG argument is not an integer") from None
        return value, _differential(text, value)
    if name == "FLOAT":
        m = _FLOAT_RE.fullmatch(line)
        if m is None:
            raise OpError("FLOAT argument is not a float")
        return float(line), None
    if name == "STRING":
        if len(line) >= 2 and line[:1] == line[-1:] and line[:1] in (b"'", b'"'):
            try:
                raw = codecs.escape_decode(line[1:-1])[0]
            except ValueError:
                raise OpError("STRING argument has a bad escape") from None
            return _py2_str(raw), None
        raise OpError("the STRING opcode argument must be quoted")
    if name == "UNICODE":
        try:
            return line.decode("raw-unicode-escape"), None
        except UnicodeDecodeError:
            raise OpError("UNICODE argument is not raw-unicode-escape") from None
    if name == "PERSID":
        try:
            return line.decode("ascii"), None
        except UnicodeDecodeError:
            raise OpError("PERSID argument is not ASCII") from None
    # GET / PUT: C parses the index with PyLong_FromString(base 10)
    try:
        return int(line, 10), None
    except ValueError:
        raise OpError(f"{name} argument is not a decimal index") from None


def _c_int(line: bytes) -> tuple[object, str | None]:
    """INT as `_pickle.c` load_int reads it: strtol(s, 0); on overflow or junk, PyLong_FromString(s, 0)."""
    if len(line) < 1:
        raise OpError("INT argument is empty")
    value = _strtol0(line)
    if value is None:
        try:
            value = int(line, 0)
        except ValueError:
            raise OpError("INT argument is not an integer") from None
    elif len(line) == 2 and value in (0, 1):
        return bool(value), (None if line in (b"00", b"01") else f"INT {line!r} read as bool {bool(value)}")
    return value, _differential(line, value)


def _strtol0(s: bytes) -> int | None:
    """C strtol(s, &end, 0) accepting only when it consumed the whole line and fits a C long."""
    i, n = 0, len(s)
    while i < n and s[i] in b" \t\n\v\f\r":
        i += 1
    neg = False
    if i < n and s[i] in b"+-":
        neg = s[i] == 0x2D
        i += 1
    base = 10
    if s[i:i + 2].lower() == b"0x" and i + 2 < n and s[i + 2:i + 3] in b"0123456789abcdefABCDEF":
        base, i = 16, i + 2
    elif s[i:i + 1] == b"0":
        base = 8
    digits = s[i:]
    if not digits:
        return None
    allowed = b"0123456789abcdefABCDEF"[: base if base <= 10 else 10 + (base - 10) * 2]
    if any(c not in allowed for c in digits):
        return None
    value = int(digits, base)
    value = -value if neg else value
    if not -(1 << 63) <= value < (1 << 63):
        return None
    return value


def _differential(text: bytes, value: int) -> str | None:
    """pickletools/fickling read INT/LONG base 10; the unpickler reads base 0 (and C strtol reads 010 as 8)."""
    try:
        ten = int(text, 10)
    except ValueError:
        return f"{text.decode('latin-1')!r} is {value} to CPython but not a decimal integer to pickletools"
    if ten != value:
        return f"{text.decode('latin-1')!r} is {value} to CPython but {ten} to pickletools"
    return None
