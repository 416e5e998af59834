"""Every fixture listed in fixtures/manifest-*.toml scans as the manifest says."""

from __future__ import annotations

import pytest

from conftest import FIXTURES, load_manifests, scan_path
from scanner.findings import Severity, Verdict

ENTRIES = load_manifests()
HOSTILE = [e for e in ENTRIES if e["kind"] == "hostile"]
BENIGN = [e for e in ENTRIES if e["kind"] == "benign"]


def _id(e: dict) -> str:
    return e["path"]


def test_manifests_exist_and_files_are_present() -> None:
    assert HOSTILE and BENIGN
    missing = [e["path"] for e in ENTRIES if not (FIXTURES / e["path"]).exists()]
    assert not missing, f"manifest entries without a file: {missing}"


@pytest.mark.parametrize("entry", HOSTILE, ids=_id)
def test_hostile_fixture_flagged(entry: dict, ruleset) -> None:
    report = scan_path(FIXTURES / entry["path"], rules=ruleset)
    want = Severity.parse(entry["severity"])
    got = [(f.rule_id, f.severity) for f in report.findings]
    assert (entry["rule"], want) in got, f"{entry['path']}: expected {entry['rule']}/{want.value}, got {got}"
    if want >= Severity.MEDIUM:
        assert report.verdict is not Verdict.CLEAN


@pytest.mark.parametrize("entry", BENIGN, ids=_id)
def test_benign_fixture_clean(entry: dict, ruleset) -> None:
    report = scan_path(FIXTURES / entry["path"], rules=ruleset)
    # an entry may declare a note it carries (e.g. `max_severity = "low"`): still clean, never medium+
    ceiling = Severity.parse(entry.get("max_severity", "info"))
    loud = [(f.rule_id, f.severity.value, f.message) for f in report.findings if f.severity > ceiling]
    assert not loud, f"{entry['path']}: {loud}"
    assert report.verdict is Verdict.CLEAN
