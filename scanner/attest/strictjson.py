"""Strict JSON for every signed or trusted document (bundles, envelopes, statements, OMS signatures, trust
roots): a duplicate key, NaN/Infinity, invalid UTF-8 or absurd nesting is an error with one line.

Why: protobuf's JSON parser (sigstore, model-signing) rejects duplicate keys while `json.loads` keeps the
last one; a document two readers see differently must not verify. Messages of foreign libraries (pydantic
validation errors span many lines) are folded to one line by `brief`.
"""

from __future__ import annotations

import json
from typing import Any

MAX_MESSAGE = 300


class StrictJSONError(ValueError):
    """Not strict JSON; `str(e)` is one line."""


def _no_duplicates(items: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in items:
        if k in out:
            raise StrictJSONError(f"duplicate key {k!r}")
        out[k] = v
    return out


def _no_constant(name: str) -> Any:
    raise StrictJSONError(f"{name} is not JSON")


def loads(raw: bytes | str, what: str = "document") -> Any:
    """Parse `raw` strictly; StrictJSONError("<what> is not valid JSON: <reason>") otherwise."""
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except StrictJSONError as e:
        raise StrictJSONError(f"{what} is not valid JSON: {e}") from None
    except UnicodeDecodeError:
        raise StrictJSONError(f"{what} is not valid JSON: not UTF-8") from None
    except json.JSONDecodeError as e:
        raise StrictJSONError(f"{what} is not valid JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    except RecursionError:
        raise StrictJSONError(f"{what} is not valid JSON: nested too deeply") from None


def brief(e: BaseException | str) -> str:
    """A foreign library's message as one bounded line."""
    text = " ".join(str(e).split())
    return text if len(text) <= MAX_MESSAGE else text[:MAX_MESSAGE] + "…"
