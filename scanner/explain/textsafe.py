"""Make attacker-controlled text safe to show: the project's one escaping function (scanner/output/escape)."""

from __future__ import annotations

from scanner.output.escape import escape


def printable(text: str, *, keep_newlines: bool = False, max_chars: int | None = None) -> str:
    """Replace every control or invisible formatting character with a visible escape."""
    return escape(text, keep_newlines=keep_newlines, max_chars=max_chars)
