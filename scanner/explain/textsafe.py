"""Make attacker-controlled text safe to show: no terminal escapes, no bidi overrides, bounded length."""

from __future__ import annotations

import unicodedata

# Cc: control characters (ESC starts terminal sequences); Cf: format characters (bidi overrides, zero-width
# joiners used in "Trojan Source" tricks); Cs/Co/Cn: surrogates, private use, unassigned.
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn"})


def _escape_char(ch: str) -> str:
    code = ord(ch)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def printable(text: str, *, keep_newlines: bool = False, max_chars: int | None = None) -> str:
    """Replace every control or invisible formatting character with a visible escape."""
    if max_chars is not None and len(text) > max_chars:
        text = text[:max_chars] + "…"
    out: list[str] = []
    for ch in text:
        if keep_newlines and ch in "\n\t":
            out.append(ch)
        elif ch.isascii() and ch.isprintable():
            out.append(ch)
        elif unicodedata.category(ch) in _UNSAFE_CATEGORIES:
            out.append(_escape_char(ch))
        else:
            out.append(ch)
    return "".join(out)
