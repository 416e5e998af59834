"""The HDF5 library runs in a forked child: hangs, crashes and lies of the child end in findings."""

from __future__ import annotations

import base64
import json
import os
import signal

import pytest
from test_keras import _zero_size_heap_object

from conftest import FIXTURES, rule_ids, scan_data, scan_path
from scanner import sandbox
from scanner.context import ScanContext
from scanner.findings import Severity
from scanner.formats.hdf5 import heap as hdf5_heap
from scanner.formats.hdf5 import reader as hdf5
from scanner.formats.hdf5 import result as hdf5_result
from scanner.limits import Limits
from scanner.rules import Policy, load_ruleset
from scanner.source import BytesSource

pytestmark = pytest.mark.skipif(not sandbox.available(), reason="needs os.fork")

RULES = load_ruleset()
GOOD = FIXTURES / "benign" / "keras" / "functional_compiled.h5"
LAMBDA_H5 = FIXTURES / "hostile" / "keras" / "k01_lambda.h5"


def findings_of(data: bytes, **limits: int) -> list:
    return scan_data(data, "model.h5", policy=Policy(limits=Limits().with_overrides(limits)), rules=RULES)[1]


def test_a_file_that_hangs_the_library_ends_in_a_timeout_finding(monkeypatch: pytest.MonkeyPatch) -> None:
    bad = _zero_size_heap_object(GOOD.read_bytes())
    monkeypatch.setattr(hdf5_heap, "heap_problems", lambda *_a, **_k: [])  # seam: the Python pre-check is off
    findings = findings_of(bad, max_hdf5_seconds=1)
    limit = [f for f in findings if f.rule_id == "LIMIT-EXCEEDED"]
    assert limit and "max_hdf5_seconds" in (limit[0].evidence or "")
    assert "SCAN-INTERNAL-ERROR" not in rule_ids(findings)


def test_a_child_killed_by_a_signal_is_a_finding(monkeypatch: pytest.MonkeyPatch) -> None:
    def crash(_src: object, _ctx: object) -> None:
        os.kill(os.getpid(), signal.SIGSEGV)

    monkeypatch.setattr(hdf5, "walk", crash)
    findings = findings_of(GOOD.read_bytes())
    bad = [f for f in findings if f.rule_id == "HDF5-MALFORMED"]
    assert bad and bad[0].severity == Severity.HIGH and "SIGSEGV" in (bad[0].evidence or "")


def test_a_child_exception_is_a_finding(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(_src: object, _ctx: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(hdf5, "walk", fail)
    bad = [f for f in findings_of(GOOD.read_bytes()) if f.rule_id == "HDF5-MALFORMED"]
    assert bad and f"exit status {sandbox.EXIT_ERROR}" in (bad[0].evidence or "")


def _payload(**overrides: object) -> bytes:
    doc: dict[str, object] = {"v": 1, "findings": [], "userblock": 0, "configs": []}
    doc.update(overrides)
    return json.dumps(doc).encode()


@pytest.mark.parametrize("garbage", [
    b"", b"\x80\x04K\x01.", b"not json", b"[]", _payload(v=2), _payload(extra=1),
    _payload(findings=[{"rule": "PICKLE-DANGEROUS-CALL", "message": "x", "evidence": None}]),
    _payload(findings=[{"rule": "HDF5-NO-SUCH-RULE", "message": "x", "evidence": None}]),
    _payload(findings=[{"rule": "HDF5-MALFORMED", "message": 5, "evidence": None}]),
    _payload(findings=[{"rule": "HDF5-MALFORMED", "message": "x" * 5000, "evidence": None}]),
    _payload(userblock=True), _payload(userblock=-1), _payload(userblock=10**12),
    _payload(configs=[{"path": "/", "name": "model_config", "values": [["s", "!!!"]]}]),
    _payload(configs=[{"path": "/", "name": "model_config", "values": [["x", "e30="]]}]),
    b'{"v": 1, "v": 1, "findings": [], "userblock": 0, "configs": []}',
    b'{"v": NaN, "findings": [], "userblock": 0, "configs": []}',
    b"[" * 100_000,
])
def test_invalid_child_output_is_rejected(monkeypatch: pytest.MonkeyPatch, garbage: bytes) -> None:
    monkeypatch.setattr(hdf5_result, "encode", lambda _r: garbage)
    findings = findings_of(GOOD.read_bytes())
    assert rule_ids(findings) == {"HDF5-MALFORMED"}
    assert "rejected result" in (findings[0].evidence or "")


def test_oversized_child_output_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hdf5_result, "encode", lambda _r: b" " * (3 << 20))
    ctx = ScanContext(RULES, Policy(limits=Limits(max_header_bytes=1 << 10)))
    monkeypatch.setattr(hdf5, "max_result_bytes", lambda _ctx: 1 << 20)
    findings = list(hdf5.analyze(BytesSource("m.h5", None, GOOD.read_bytes()), ctx))
    assert [f.rule_id for f in findings] == ["HDF5-MALFORMED"]
    assert "oversized" in (findings[0].evidence or "")


def test_a_valid_result_from_the_child_is_what_the_parent_reports() -> None:
    """The Lambda config travels from the child as base64 and is walked in the parent."""
    report = scan_path(LAMBDA_H5)
    assert "KERAS-LAMBDA" in rule_ids(report.findings)
    assert all(f.rule_id != "HDF5-MALFORMED" for f in report.findings)


def test_round_trip_keeps_bytes_and_strings_apart() -> None:
    result = hdf5_result.WalkResult((hdf5_result.RawFinding("HDF5-SOFT-LINK", "m", None),), 512,
                                    (hdf5_result.ConfigText("/", "model_config", ("{\"a\": \"\udcff\"}", b"\xff{}")),))
    back = hdf5_result.decode(hdf5_result.encode(result), known_rule=lambda r: True, file_size=1024)
    assert back == result


def test_in_process_fallback_without_fork(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sandbox, "available", lambda: False)
    monkeypatch.setattr(sandbox, "run", lambda *_a, **_k: pytest.fail("forked without os.fork"))
    assert "KERAS-LAMBDA" in rule_ids(scan_path(LAMBDA_H5).findings)


def test_member_hdf5_is_walked_from_memory() -> None:
    """Members reach the child as bytes; nothing is written to disk for them."""
    data = LAMBDA_H5.read_bytes()
    ctx = ScanContext(RULES, Policy())
    findings = list(hdf5.analyze(BytesSource("outer.zip", "model.h5", data), ctx))
    assert "KERAS-LAMBDA" in rule_ids(findings)


def test_child_memory_cap_is_a_limit_finding(monkeypatch: pytest.MonkeyPatch) -> None:
    def hog(_src: object, _ctx: object) -> None:
        blocks = [bytearray(64 << 20) for _ in range(64)]  # 4 GiB, far above the cap below
        raise AssertionError(len(blocks))

    monkeypatch.setattr(hdf5, "walk", hog)
    findings = findings_of(GOOD.read_bytes(), max_hdf5_memory=256 << 20)
    assert [f.rule_id for f in findings] == ["LIMIT-EXCEEDED"]
    assert "max_hdf5_memory" in (findings[0].evidence or "")


def test_sandbox_reports_what_the_child_wrote() -> None:
    out = sandbox.run(lambda: base64.b64encode(b"x" * 10), seconds=30, max_output=1 << 10, memory=1 << 30)
    assert out.data == base64.b64encode(b"x" * 10) and out.problem is None
