"""Strict JSON for every signed or trusted document (bundles, envelopes, statements, OMS signatures, trust
roots): a duplicate key, NaN/Infinity, invalid UTF-8 or absurd nesting is an error with one line.

Why: protobuf's JSON parser (sigstore, model-signing) rejects duplicate keys while `json.loads` keeps the
last one; a document two readers see differently must not verify. Messages of foreign libraries (pydantic
validation errors span many lines) are folded to one line by `brief`.
"""

from __future__ import annotations

import json
from typing import Any

from scanner.sniff import reject_duplicate_keys

MAX_MESSAGE = 300


class StrictJSONError(ValueError):
    """Not strict JSON; `str(e)` is one line."""


def _no_constant(name: str) -> Any:
    raise StrictJSONError(f"{name} is not JSON")


def loads(raw: bytes | str, what: str = "document") -> Any:
    """Parse `raw` strictly; StrictJSONError("<what> is not valid JSON: <reason>") otherwise."""
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        return json.loads(text, object_pairs_hook=reject_duplicate_keys, parse_constant=_no_constant)
    except UnicodeDecodeError:
        raise StrictJSONError(f"{what} is not valid JSON: not UTF-8") from None
    except json.JSONDecodeError as e:
        raise StrictJSONError(f"{what} is not valid JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    except ValueError as e:  # a duplicate key or a NaN/Infinity constant
        raise StrictJSONError(f"{what} is not valid JSON: {e}") from None
    except RecursionError:
        raise StrictJSONError(f"{what} is not valid JSON: nested too deeply") from None


def brief(e: BaseException | str) -> str:
    """A foreign library's message as one bounded line."""
    text = " ".join(str(e).split())
    return text if len(text) <= MAX_MESSAGE else text[:MAX_MESSAGE] + "…"
