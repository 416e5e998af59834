"""The one escaping function for everything that came from a scanned file or a file name.

Every human-facing output (text, lines, explain, verify/attest messages, errors on stderr) passes such
strings through `escape` so a hostile name or string can neither send terminal sequences (ESC, CSI in C1),
nor forge or hide lines (CR, LF, U+2028/2029), nor reorder what is shown (bidi overrides and isolates,
U+202A-202E and U+2066-2069, and every other format character), nor hide itself (zero-width characters).
A backslash is doubled, so an escape in the output always means an escaped character (never ambiguous).
JSON and SARIF need nothing more: `json.dumps` escapes controls and non-ASCII (`ensure_ascii`).
"""

from __future__ import annotations

import unicodedata

# Cc: controls; Cf: format (bidi, zero-width); Cs: lone surrogates (undecodable bytes of a file name);
# Co/Cn: private use and unassigned (a later Unicode may make them format characters); Zl/Zp: line breaks.
UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


def _escape_char(ch: str) -> str:
    code = ord(ch)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def escape(text: object, *, keep_newlines: bool = False, max_chars: int | None = None) -> str:
    """`text` as one printable line (or printable lines, with `keep_newlines`: LF and TAB kept)."""
    s = text if isinstance(text, str) else str(text)
    if max_chars is not None and len(s) > max_chars:
        s = s[:max_chars] + "…"
    out: list[str] = []
    for ch in s:
        if ch == "\\":
            out.append("\\\\")
        elif " " <= ch <= "~":
            out.append(ch)
        elif keep_newlines and ch in "\n\t":
            out.append(ch)
        elif unicodedata.category(ch) in UNSAFE_CATEGORIES:
            out.append(_escape_char(ch))
        else:
            out.append(ch)
    return "".join(out)
