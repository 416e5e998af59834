"""Mutated and random inputs always end in a verdict: no analyzer crash, no hang, limits respected."""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import FIXTURES, load_manifests, scan_data
from scanner.findings import Finding, Severity
from scanner.limits import Limits
from scanner.rules import Policy, load_ruleset

RULES = load_ruleset()
# small limits so that hostile mutations hit them quickly
POLICY = Policy(limits=Limits(max_read_bytes=8 << 20, max_pickle_opcodes=200_000, max_members=200,
                              max_total_bytes=64 << 20, max_member_bytes=16 << 20))
SEEDS = sorted({FIXTURES / e["path"] for e in load_manifests()
                if (FIXTURES / e["path"]).is_file() and (FIXTURES / e["path"]).stat().st_size <= 256 * 1024})
MAGICS = [b"\x80\x04", b"\x80\x02", b"PK\x03\x04", b"\x93NUMPY", b"\x89HDF\r\n\x1a\n", b"GGUF", b"\x1f\x8b",
          b"BZh9", b"\xfd7zXZ\x00", b"7z\xbc\xaf\x27\x1c", b"(", b"c", b"\x08\x07\x12", b"]\x00\x00", b"x\x9c"]


def _check(findings: list[Finding]) -> None:
    crashes = [f for f in findings if f.rule_id == "SCAN-INTERNAL-ERROR"]
    assert not crashes, [(f.message, f.evidence) for f in crashes]
    for f in findings:
        assert isinstance(f.severity, Severity)
        assert f.rule_id in RULES.catalog


@st.composite
def mutated(draw: st.DrawFn) -> tuple[str, bytes]:
    path: Path = draw(st.sampled_from(SEEDS))
    data = bytearray(path.read_bytes())
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "truncate", "insert", "delete", "dup"]))
        if not data:
            break
        i = draw(st.integers(0, len(data) - 1))
        if op == "flip":
            data[i] = draw(st.integers(0, 255))
        elif op == "truncate":
            del data[i:]
        elif op == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete":
            del data[i:i + draw(st.integers(1, 64))]
        else:
            j = draw(st.integers(i, min(len(data), i + 256)))
            data[i:i] = data[i:j] * draw(st.integers(1, 4))
    return path.name, bytes(data)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(mutated())
def test_mutated_fixtures_always_get_a_verdict(case: tuple[str, bytes]) -> None:
    name, data = case
    _fmt, findings = scan_data(data, name, policy=POLICY, rules=RULES)
    _check(findings)


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(st.sampled_from(MAGICS), st.binary(max_size=2048))
def test_random_bytes_behind_magics(magic: bytes, tail: bytes) -> None:
    _fmt, findings = scan_data(magic + tail, "random.bin", policy=POLICY, rules=RULES)
    _check(findings)
