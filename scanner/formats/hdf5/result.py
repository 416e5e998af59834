"""What the sandboxed HDF5 walk hands back to the scanner, and its JSON wire form.

The child that ran the HDF5 library may have been corrupted by the file, so its output is data to validate:
strict JSON of a fixed shape, rule ids from the catalog (HDF5 rules and limits only), bounded strings,
config values as base64. Anything else is rejected whole (`ResultError`), and the file is reported.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from dataclasses import dataclass

from scanner.sniff import reject_duplicate_keys

VERSION = 1
MAX_MESSAGE_CHARS = 2000
_KEYS = {"v", "findings", "userblock", "configs"}
_FINDING_KEYS = {"rule", "message", "evidence"}
_CONFIG_KEYS = {"path", "name", "values"}


class ResultError(ValueError):
    pass


@dataclass(frozen=True)
class RawFinding:
    rule: str
    message: str
    evidence: str | None = None


@dataclass(frozen=True)
class ConfigText:
    """A string attribute that holds (or looks like) a Keras JSON config, for the parent to walk."""

    path: str
    name: str
    values: tuple[str | bytes, ...]


@dataclass(frozen=True)
class WalkResult:
    findings: tuple[RawFinding, ...]
    userblock: int
    configs: tuple[ConfigText, ...]


def child_rule(rule: str) -> bool:
    """The rules a walk may report; the catalog must also declare them."""
    return rule.startswith("HDF5-") or rule == "LIMIT-EXCEEDED"


# -- encoding (child) -------------------------------------------------------------------------------------

def encode(result: WalkResult) -> bytes:
    doc = {
        "v": VERSION,
        "findings": [{"rule": f.rule, "message": f.message[:MAX_MESSAGE_CHARS], "evidence": f.evidence}
                     for f in result.findings],
        "userblock": result.userblock,
        "configs": [{"path": c.path, "name": c.name, "values": [_value(v) for v in c.values]}
                    for c in result.configs],
    }
    return json.dumps(doc, ensure_ascii=True, allow_nan=False).encode("ascii")


def _value(v: str | bytes) -> list[str]:
    if isinstance(v, str):
        return ["s", base64.b64encode(v.encode("utf-8", "surrogatepass")).decode("ascii")]
    return ["b", base64.b64encode(v).decode("ascii")]


# -- decoding (parent) ------------------------------------------------------------------------------------

def decode(data: bytes, *, known_rule: Callable[[str], bool], file_size: int) -> WalkResult:
    """Parse and validate a child's output; raise ResultError on anything outside the expected shape."""
    try:
        doc = json.loads(data.decode("ascii"), object_pairs_hook=reject_duplicate_keys, parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise ResultError(f"not JSON: {type(e).__name__}: {str(e)[:120]}") from None
    obj = _dict(doc, _KEYS, "result")
    if obj["v"] != VERSION or isinstance(obj["v"], bool):
        raise ResultError(f"unknown result version {obj['v']!r}")
    findings = tuple(_finding(f, known_rule) for f in _list(obj["findings"], "findings"))
    userblock = obj["userblock"]
    if not isinstance(userblock, int) or isinstance(userblock, bool) or not 0 <= userblock <= file_size:
        raise ResultError(f"bad userblock {userblock!r}")
    configs = tuple(_config(c) for c in _list(obj["configs"], "configs"))
    return WalkResult(findings, userblock, configs)


def _finding(item: object, known_rule: Callable[[str], bool]) -> RawFinding:
    f = _dict(item, _FINDING_KEYS, "finding")
    rule, message, evidence = f["rule"], f["message"], f["evidence"]
    if not isinstance(rule, str) or not child_rule(rule) or not known_rule(rule):
        raise ResultError(f"rule {str(rule)[:60]!r} is not one an HDF5 walk reports")
    if not isinstance(message, str) or len(message) > MAX_MESSAGE_CHARS:
        raise ResultError("bad finding message")
    if evidence is not None and not isinstance(evidence, str):
        raise ResultError("bad finding evidence")
    return RawFinding(rule, message, evidence)


def _config(item: object) -> ConfigText:
    c = _dict(item, _CONFIG_KEYS, "config")
    if not isinstance(c["path"], str) or not isinstance(c["name"], str):
        raise ResultError("bad config path or name")
    values: list[str | bytes] = []
    for v in _list(c["values"], "config values"):
        if not (isinstance(v, list) and len(v) == 2 and v[0] in ("s", "b") and isinstance(v[1], str)):
            raise ResultError("bad config value")
        try:
            raw = base64.b64decode(v[1].encode("ascii"), validate=True)
            values.append(raw.decode("utf-8", "surrogatepass") if v[0] == "s" else raw)
        except (binascii.Error, UnicodeError, ValueError):
            raise ResultError("config value is not base64 of its kind") from None
    return ConfigText(c["path"], c["name"], tuple(values))


def _dict(value: object, keys: set[str], what: str) -> dict[str, object]:
    if not isinstance(value, dict) or set(value) != keys:
        raise ResultError(f"{what} is not an object with keys {sorted(keys)}")
    return value


def _list(value: object, what: str) -> list[object]:
    if not isinstance(value, list):
        raise ResultError(f"{what} is not a list")
    return value


def _no_constant(name: str) -> object:
    raise ValueError(f"non-standard constant {name}")
