"""NumPy `.npy` analyzer (format `npy`): strict header parse (no eval), object dtypes hand their pickle payload
to the pickle engine, numeric arrays must account for every byte."""

from __future__ import annotations

import re
import struct
from collections.abc import Iterator
from typing import Any

from scanner.findings import Finding
from scanner.record import record
from scanner.source import Source

MAGIC = b"\x93NUMPY"
_TYPESTR = re.compile(r"^([<>|=]?)([?bBhHiIlLqQpPefdgFDGbiufcmMOSUVa])(\d*)(\[[A-Za-z0-9]+\])?$")
_FIXED = {"?": 1, "b": 1, "B": 1, "h": 2, "H": 2, "i": 4, "I": 4, "l": 8, "L": 8, "q": 8, "Q": 8, "p": 8,
          "P": 8, "e": 2, "f": 4, "d": 8, "g": 16, "F": 8, "D": 16, "G": 32, "O": 8, "m": 8, "M": 8}
_SIZED = {"b", "i", "u", "f", "c", "S", "V", "a", "U", "m", "M"}
MAX_DEPTH = 32


class NpyError(ValueError):
    pass


@record(frozen=True)
class Header:
    version: tuple[int, int]
    data_offset: int
    descr: object
    fortran_order: bool
    shape: tuple[int, ...]
    itemsize: int
    has_object: bool


def analyze(src: Source, ctx: Any) -> Iterator[Finding]:
    out: list[Finding] = []
    try:
        hdr = parse_header(src, ctx)
    except NpyError as e:
        out.append(ctx.finding("NPY-MALFORMED", f".npy header: {e}", src, offset=0))
        # whatever follows the magic may still be a pickle np.load would hand to pickle
        rest_at = _guess_data_offset(src)
        if rest_at is not None and rest_at < src.size:
            out.extend(ctx.scan_child(src.child_slice("<npy payload>", rest_at, src.size - rest_at)))
        return out
    payload = src.size - hdr.data_offset
    if hdr.has_object:
        out.append(ctx.finding("NPY-OBJECT-ARRAY", f"object dtype {_short(hdr.descr)}: the {payload}-byte payload "
                               "is a pickle (loaded only with allow_pickle)", src, offset=hdr.data_offset,
                               evidence=f"descr={_short(hdr.descr)} shape={hdr.shape}"))
        child = src.child_slice("<object array pickle>", hdr.data_offset, payload)
        out.extend(ctx.scan_child(child, "pickle"))
        return out
    count = 1
    for d in hdr.shape:
        count *= d
    need = count * hdr.itemsize
    if payload < need:
        out.append(ctx.finding("NPY-MALFORMED", f"array data is {payload} bytes, header declares {need}", src,
                               offset=hdr.data_offset, evidence=f"shape={hdr.shape} itemsize={hdr.itemsize}"))
    elif payload > need:
        extra_at = hdr.data_offset + need
        out.append(ctx.finding("NPY-TRAILING-DATA", f"{payload - need} bytes after the array data", src,
                               offset=extra_at, evidence=repr(src.read_at(extra_at, 32))))
        child = src.child_slice("<after array data>", extra_at, payload - need)
        from scanner.context import NOT_A_MODEL
        from scanner.sniff import sniff

        fmt = sniff(child)
        if fmt not in NOT_A_MODEL:
            out.append(ctx.finding("POLYGLOT", f"{fmt} content after the array data: np.load reads the array, "
                                   f"other loaders the {fmt}", src, offset=extra_at, evidence=f"sniffed={fmt}"))
        out.extend(ctx.scan_child(child))
    return out


def _guess_data_offset(src: Source) -> int | None:
    head = src.head(12)
    if len(head) < 10:
        return None
    if head[6] == 1:
        return 10 + struct.unpack_from("<H", head, 8)[0]
    if len(head) >= 12:
        return 12 + struct.unpack_from("<I", head, 8)[0]
    return None


def parse_header(src: Source, ctx: Any) -> Header:
    head = src.read_at(0, 12)
    if len(head) < 10 or not head.startswith(MAGIC):
        raise NpyError("bad magic")
    major, minor = head[6], head[7]
    if (major, minor) not in ((1, 0), (2, 0), (3, 0)):
        raise NpyError(f"unknown format version {major}.{minor}")
    if major == 1:
        hlen = struct.unpack_from("<H", head, 8)[0]
        start = 10
    else:
        if len(head) < 12:
            raise NpyError("truncated header length")
        hlen = struct.unpack_from("<I", head, 8)[0]
        start = 12
    limit = min(int(ctx.rules.doc("containers").get("npy", {}).get("max_header_len", 65535)),
                ctx.limits.max_header_bytes)
    if hlen > limit:
        raise NpyError(f"header length {hlen} exceeds {limit}")
    raw = src.read_at(start, hlen)
    if len(raw) < hlen:
        raise NpyError("header runs past the end of the file")
    try:
        text = raw.decode("utf-8" if major == 3 else "latin-1")
    except UnicodeDecodeError as e:
        raise NpyError("header is not UTF-8") from e
    value = parse_literal(text, py2_longs=major < 3)
    if not isinstance(value, dict):
        raise NpyError("header is not a dictionary")
    keys = ctx.rules.doc("containers").get("npy", {}).get("header_keys", ["descr", "fortran_order", "shape"])
    if sorted(value) != sorted(keys):
        raise NpyError(f"header keys {sorted(value)!r}, expected {sorted(keys)!r}")
    shape = value["shape"]
    if not isinstance(shape, tuple) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                               for d in shape):
        raise NpyError(f"shape {shape!r} is not a tuple of non-negative integers")
    if not isinstance(value["fortran_order"], bool):
        raise NpyError("fortran_order is not a boolean")
    itemsize, has_obj = dtype_info(value["descr"], 0)
    return Header((major, minor), start + hlen, value["descr"], value["fortran_order"], shape, itemsize, has_obj)


def dtype_info(descr: object, depth: int) -> tuple[int, bool]:
    """(itemsize, has object) of a numpy descr: a type string or a list of fields."""
    if depth > MAX_DEPTH:
        raise NpyError("dtype nested too deeply")
    if isinstance(descr, str):
        m = _TYPESTR.match(descr)
        if m is None:
            raise NpyError(f"unknown type string {descr!r}")
        kind, digits = m.group(2), m.group(3)
        if kind == "O":
            return 8, True
        if digits:
            if kind not in _SIZED:
                raise NpyError(f"type string {descr!r} takes no size")
            n = int(digits)
            return (4 * n if kind == "U" else n), False
        if kind in _FIXED:
            return _FIXED[kind], False
        raise NpyError(f"type string {descr!r} needs a size")
    if isinstance(descr, tuple) and len(descr) == 2:
        # descr_to_dtype: a (descr, shape) tuple is numpy.dtype((descr_to_dtype(descr[0]), descr[1]))
        size, obj = dtype_info(descr[0], depth + 1)
        return size * _count(descr[1], descr), obj
    if isinstance(descr, list):
        total, obj = 0, False
        for field in descr:
            if not isinstance(field, tuple) or len(field) not in (2, 3):
                raise NpyError(f"bad field {field!r}")
            name = field[0]
            if not (isinstance(name, str) or isinstance(name, tuple) and len(name) == 2
                    and all(isinstance(x, str) for x in name)):
                raise NpyError(f"bad field name {name!r}")
            size, o = dtype_info(field[1], depth + 1)
            count = _count(field[2], field) if len(field) == 3 else 1
            total += size * count
            obj = obj or o
        return total, obj
    raise NpyError(f"descr {descr!r} is neither a type string nor a field list")


def _count(shp: object, where: object) -> int:
    if isinstance(shp, int) and not isinstance(shp, bool):
        shp = (shp,)
    if not isinstance(shp, tuple) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                             for d in shp):
        raise NpyError(f"bad subarray shape in {where!r}")
    count = 1
    for d in shp:
        count *= d
    return count


# -- a strict literal parser: dict / tuple / list / str / int / bool / None, nothing else ----------------------

_TOKEN = re.compile(r"""\s*(?:(?P<str>'(?:[^'\\\n]|\\.)*'|"(?:[^"\\\n]|\\.)*")|(?P<int>-?\d+)(?P<py2long>[ \t]*L(?![A-Za-z0-9_]))?|(?P<name>True|False|None)
                        |(?P<punct>[{}()\[\]:,]))""", re.X)


def parse_literal(text: str, py2_longs: bool = False) -> object:
    """`py2_longs`: accept Python 2 long suffixes after integers (`10L`), as numpy's _filter_header does
    for format versions 1.0 and 2.0 (numpy/lib/_format_impl.py _read_array_header)."""
    tokens: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN.match(text, pos)
        if m is None:
            raise NpyError(f"unexpected character {text[pos:pos + 10].strip()!r} in header")
        kind = "int" if m.group("int") is not None else m.lastgroup or ""
        if m.group("py2long") is not None and not py2_longs:
            raise NpyError("Python 2 long suffix in a format 3.0 header")
        tokens.append((kind, m.group(kind)))
        pos = m.end()
    value, i = _value(tokens, 0, 0)
    if i != len(tokens):
        raise NpyError("extra tokens after the header dictionary")
    return value


def _value(t: list[tuple[str, str]], i: int, depth: int) -> tuple[object, int]:
    if depth > MAX_DEPTH:
        raise NpyError("header nested too deeply")
    if i >= len(t):
        raise NpyError("header ends early")
    kind, tok = t[i]
    if kind == "str":
        return _unquote(tok), i + 1
    if kind == "int":
        if len(tok) > 20:
            raise NpyError("integer too long")
        return int(tok), i + 1
    if kind == "name":
        return {"True": True, "False": False, "None": None}[tok], i + 1
    if tok == "{":
        out: dict[object, object] = {}
        i += 1
        while True:
            if i < len(t) and t[i][1] == "}":
                return out, i + 1
            k, i = _value(t, i, depth + 1)
            if i >= len(t) or t[i][1] != ":":
                raise NpyError("expected ':' in header dictionary")
            if not isinstance(k, str) or k in out:
                raise NpyError(f"bad or duplicate key {k!r}")
            out[k], i = _value(t, i + 1, depth + 1)
            i = _sep(t, i, "}")
    if tok in "([":
        close = ")" if tok == "(" else "]"
        items: list[object] = []
        i += 1
        single_comma = False
        while True:
            if i < len(t) and t[i][1] == close:
                i += 1
                break
            v, i = _value(t, i, depth + 1)
            items.append(v)
            single_comma = i < len(t) and t[i][1] == ","
            i = _sep(t, i, close)
        if close == ")":
            if len(items) == 1 and not single_comma:
                return items[0], i
            return tuple(items), i
        return items, i
    raise NpyError(f"unexpected {tok!r} in header")


def _sep(t: list[tuple[str, str]], i: int, close: str) -> int:
    if i < len(t) and t[i][1] == ",":
        return i + 1
    if i < len(t) and t[i][1] == close:
        return i
    raise NpyError(f"expected ',' or {close!r} in header")


def _unquote(tok: str) -> str:
    body = tok[1:-1]
    if "\\" not in body:
        return body
    out = []
    it = iter(body)
    for c in it:
        if c != "\\":
            out.append(c)
            continue
        n = next(it, "")
        mapped = {"\\": "\\", "'": "'", '"': '"', "n": "\n", "t": "\t"}.get(n)
        if mapped is None:
            raise NpyError(f"unsupported escape \\{n} in header string")
        out.append(mapped)
    return "".join(out)


def _short(v: object, n: int = 120) -> str:
    s = repr(v)
    return s if len(s) <= n else s[:n] + "…"
