"""Content decides the format: sniffing must not be steered away from a pickle by what precedes the payload."""

from __future__ import annotations

import pytest

from conftest import scan_data
from scanner.findings import Severity

PAYLOAD = b"0cos\nsystem\n(S'echo pwned'\ntR."

EVASIONS = {
    "long STRING first": b"S'" + b"A" * 10_000 + b"'\np0\n" + PAYLOAD,
    "long UNICODE line first": b"V" + b"hello world " * 1000 + b"\np0\n" + PAYLOAD,
    "big BINUNICODE first": b"X" + (20_000).to_bytes(4, "little") + b"B" * 20_000 + PAYLOAD,
    "big BINBYTES after PROTO 3": b"\x80\x03B" + (70_000).to_bytes(4, "little") + b"B" * 70_000 + PAYLOAD,
    "deep dotted GLOBAL first": b"c" + b"a." * 3000 + b"b\nc\n" + PAYLOAD,
    "payload then garbage": b"cos\nsystem\n(S'echo pwned'\ntR\xff\xff",
    "INST with its MARK": b"(S'echo pwned'\nios\nsystem\n\xff",
    "PROTO 1 header": b"\x80\x01" + PAYLOAD[1:],
}


@pytest.mark.parametrize("name", sorted(EVASIONS))
def test_payload_behind_a_long_prefix_is_still_a_pickle(name: str) -> None:
    fmt, findings = scan_data(EVASIONS[name], "vocab.txt")
    assert fmt == "pickle"
    assert any(f.rule_id == "PICKLE-DANGEROUS-CALL" and f.severity is Severity.CRITICAL for f in findings)


TEXTS = {
    "python source": b"import torch\nimport os\n\nx = 1\n",
    "vocabulary": b"cat\ndog\nfish\n" + b"word\n" * 2000,
    "version note": b"Version 1.0\nThe model " + b"x" * 10_000,
    "csv": b"1,2,3\n4,5,6\n",
    "digit-limited LONG": b"L" + b"1" * 8000 + b"L\n" + PAYLOAD,  # CPython refuses > 4300 digits: no import
}


@pytest.mark.parametrize("name", sorted(TEXTS))
def test_text_stays_text(name: str) -> None:
    fmt, findings = scan_data(TEXTS[name], "notes.txt")
    assert fmt == "text"
    assert all(f.severity is Severity.INFO for f in findings)
