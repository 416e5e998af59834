"""codecs looked up by name: the names protocol 2 pickles write pass, others are reported (a mutated pickle
found by the differential oracle made pickle.load import encodings.<name>)."""

from __future__ import annotations

import pickle

from conftest import rule_ids, scan_data
from scanner.findings import Severity


def test_protocol_2_bytes_are_clean() -> None:
    data = pickle.dumps({"b": b"\x00\xffabc", "t": (b"x",)}, protocol=2)
    assert b"_codecs\nencode" in data or b"_codecs" in data
    _, findings = scan_data(data, "p2.pkl")
    assert all(f.severity <= Severity.INFO for f in findings), [(f.rule_id, f.message) for f in findings]


def test_codec_names_pickles_do_not_use_are_reported() -> None:
    for codec in (b"2", b"idna", b"rot13", b"zlib_codec"):
        payload = b"c_codecs\nencode\n(V1\nV" + codec + b"\ntR."
        _, findings = scan_data(payload, "x.pkl")
        hits = [f for f in findings if f.rule_id == "PICKLE-CODEC-LOOKUP"]
        assert hits and hits[0].severity is Severity.MEDIUM, codec


def test_latin1_spellings_and_utf8_pass() -> None:
    for codec in (b"latin1", b"latin-1", b"ISO-8859-1", b"utf-8", b"ascii"):
        payload = b"c_codecs\nencode\n(Vabc\nV" + codec + b"\ntR."
        _, findings = scan_data(payload, "x.pkl")
        assert "PICKLE-CODEC-LOOKUP" not in rule_ids(findings), codec


def test_codec_name_that_is_not_a_constant_is_reported() -> None:
    payload = b"c_codecs\nencode\n(Vabc\nc__builtin__\nstr\n(tRtR."
    _, findings = scan_data(payload, "x.pkl")
    assert "PICKLE-CODEC-LOOKUP" in rule_ids(findings)
