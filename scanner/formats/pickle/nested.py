"""Constant folding for pure decoders (base64, hex, zlib ...) and the payloads handed to nested
deserializers. Nothing decoded here is ever executed or unpickled: it is only scanned."""

from __future__ import annotations

import base64
import binascii
import bz2
import lzma
import zlib

from scanner.formats.pickle.values import NOCONST, const

# codec names codecs.decode/encode may be given that are pure byte transforms (no module import by name)
_CODEC_ALIASES = {
    "base64": "base64", "base_64": "base64", "base64_codec": "base64", "hex": "hex", "hex_codec": "hex",
    "zlib": "zlib", "zip": "zlib", "zlib_codec": "zlib", "bz2": "bz2", "bz2_codec": "bz2",
    "latin1": "latin1", "latin-1": "latin1", "latin_1": "latin1", "iso-8859-1": "latin1", "iso8859-1": "latin1",
    "utf-8": "utf8", "utf8": "utf8", "utf_8": "utf8", "ascii": "ascii", "us-ascii": "ascii",
}


class DecodeError(Exception):
    pass


def fold(codec: str, args: object, max_out: int) -> object:
    """Evaluate decoder `codec` on constant `args`; NOCONST when not constant or not decodable."""
    if not isinstance(args, tuple) or not args:
        return NOCONST
    values = [const(a) for a in args]
    if any(v is NOCONST for v in values):
        return NOCONST
    data = values[0]
    if isinstance(data, memoryview):
        data = bytes(data)
    try:
        if codec in ("codecs.decode", "codecs.encode"):
            name = values[1] if len(values) > 1 else "utf-8"
            if not isinstance(name, str) or name.lower() not in _CODEC_ALIASES:
                return NOCONST
            codec = _CODEC_ALIASES[name.lower()]
            if codec in ("latin1", "utf8", "ascii"):
                if isinstance(data, str):
                    return data.encode({"latin1": "latin-1", "utf8": "utf-8", "ascii": "ascii"}[codec])
                if isinstance(data, (bytes, bytearray)):
                    return bytes(data).decode({"latin1": "latin-1", "utf8": "utf-8", "ascii": "ascii"}[codec])
                return NOCONST
        return _apply(codec, data, max_out)
    except (ValueError, TypeError, binascii.Error, zlib.error, OSError, lzma.LZMAError, EOFError):
        return NOCONST


def _as_bytes(data: object) -> bytes:
    if isinstance(data, str):
        return data.encode("latin-1", "replace")
    if isinstance(data, (bytes, bytearray)):
        return bytes(data)
    raise TypeError("not bytes")


def _apply(codec: str, data: object, max_out: int) -> object:
    if codec == "latin1":  # _codecs.encode(str, 'latin1'): how protocol 2 writes bytes
        if isinstance(data, str):
            return data.encode("latin-1")
        return NOCONST
    raw = _as_bytes(data)
    if codec == "base64":
        return base64.b64decode(raw)
    if codec == "base64url":
        return base64.urlsafe_b64decode(raw)
    if codec == "b32":
        return base64.b32decode(raw)
    if codec == "b16":
        return base64.b16decode(raw, casefold=True)
    if codec == "a85":
        return base64.a85decode(raw)
    if codec == "b85":
        return base64.b85decode(raw)
    if codec == "hex":
        return binascii.unhexlify(raw.replace(b" ", b""))
    if codec == "zlib":
        return _bounded(zlib.decompressobj(), raw, max_out)
    if codec == "gzip":
        return _bounded(zlib.decompressobj(31), raw, max_out)
    if codec == "bz2":
        out = bz2.BZ2Decompressor().decompress(raw, max_length=max_out)
        return out if len(out) < max_out else NOCONST
    if codec == "lzma":
        out = lzma.LZMADecompressor().decompress(raw, max_length=max_out)
        return out if len(out) < max_out else NOCONST
    return NOCONST


def _bounded(d: zlib._Decompress, raw: bytes, max_out: int) -> object:
    out = d.decompress(raw, max_out)
    return out if len(out) < max_out else NOCONST


def payload_bytes(args: object) -> bytes | None:
    """The constant first argument of a nested loader, as bytes (str payloads as UTF-8 / latin-1)."""
    if not isinstance(args, tuple) or not args:
        return None
    v = const(args[0])
    if isinstance(v, memoryview):
        return bytes(v)
    if isinstance(v, (bytes, bytearray)):
        return bytes(v)
    if isinstance(v, str):
        try:
            return v.encode("utf-8", "surrogatepass")
        except UnicodeEncodeError:
            return v.encode("latin-1", "replace")
    return None


def preview(data: bytes, n: int = 120) -> str:
    """Printable preview of attacker bytes (marshal code objects are never loaded, only shown)."""
    text = "".join(chr(b) if 32 <= b < 127 else "." for b in data[:n])
    return f"{len(data)} bytes: {data[:32].hex()}… {text!r}"
