"""Does a path named inside a file (external data, shard index, archive member) leave its folder?

Other readers may see a different path than the bytes spell: web runtimes URL-decode locations, Windows
code pages map lookalike characters ("best-fit": fullwidth dots and slashes, the yen sign) onto `.` `/` `\\`,
and NFKC folds compatibility characters (U+2025 is ".."). Every such spelling is checked.
The lookalike table is data: rules/paths.toml `[[path_lookalike]]`.
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import PurePosixPath, PureWindowsPath
from typing import Any
from urllib.parse import unquote

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:")
_DRIVE = re.compile(r"^[A-Za-z]:")


def lookalikes(rules: Any) -> tuple[tuple[str, str], ...]:
    def build() -> tuple[tuple[str, str], ...]:
        return tuple((c, e["means"]) for e in rules.doc("paths").get("path_lookalike", []) for c in e["chars"])

    return rules.cached("pathcheck.lookalikes", build)  # type: ignore[no-any-return]


def spellings(path: str, table: tuple[tuple[str, str], ...], *, url: bool) -> list[str]:
    """The path as written, URL-decoded (once, twice) when `url`, and NFKC + lookalike-mapped."""
    out = [path]
    forms = [path, unquote(path), unquote(unquote(path))] if url else [path]
    for s in forms:
        mapped = unicodedata.normalize("NFKC", s)
        for char, means in table:
            mapped = mapped.replace(char, means)
        out += [s, mapped]
    return list(dict.fromkeys(out))


def plain_escape(path: str) -> bool:
    """Absolute (POSIX, Windows drive, UNC, device prefix), home-relative, or climbing with `..` in either
    separator style."""
    unified = path.replace("\\", "/")
    if unified.startswith("/") or _DRIVE.match(unified) or PureWindowsPath(path).drive:
        return True
    if PurePosixPath(path).is_absolute() or path.startswith("~"):
        return True
    return ".." in unified.split("/")


def escapes(path: str, table: tuple[tuple[str, str], ...], *, url: bool = False) -> str | None:
    """The spelling that escapes (or the URL scheme that makes it fetched, when `url`), else None."""
    if url and _SCHEME.match(path):
        return path
    for s in spellings(path, table, url=url):
        if plain_escape(s):
            return s
    return None
