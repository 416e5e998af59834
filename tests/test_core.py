"""Pipeline, policy, CLI contract and output formats."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import SHARED, scan_data
from scanner.findings import FileReport, Finding, Location, Report, Severity, Verdict, verdict_for
from scanner.rules import ConfigError, Policy, load_policy, load_ruleset

CLI = [sys.executable, "-m", "scanner.cli"]


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=300, cwd=cwd)


def _report(*sevs: Severity, error: str | None = None, fail_on: Severity = Severity.MEDIUM) -> Report:
    findings = tuple(Finding("X", s, "m") for s in sevs)
    return Report((FileReport("f", 1, None, "pickle", findings, error),), "0", "d", fail_on, "t0", "t1")


def test_verdicts_follow_design() -> None:
    assert verdict_for([Finding("X", Severity.CRITICAL, "m")]) is Verdict.MALICIOUS
    assert verdict_for([Finding("X", Severity.HIGH, "m")]) is Verdict.SUSPICIOUS
    assert verdict_for([Finding("X", Severity.MEDIUM, "m")]) is Verdict.SUSPICIOUS
    assert verdict_for([Finding("X", Severity.LOW, "m")]) is Verdict.CLEAN
    assert verdict_for([], error=True) is Verdict.ERROR
    assert verdict_for([Finding("X", Severity.CRITICAL, "m")], error=True) is Verdict.MALICIOUS


def test_exit_codes_findings_win_over_errors() -> None:
    assert _report().exit_code() == 0
    assert _report(Severity.LOW).exit_code() == 0
    assert _report(Severity.MEDIUM).exit_code() == 1
    assert _report(Severity.HIGH, fail_on=Severity.CRITICAL).exit_code() == 0
    assert _report(error="unreadable").exit_code() == 2
    assert _report(Severity.HIGH, error="unreadable").exit_code() == 1


def test_every_rule_is_declared_once_with_metadata(ruleset) -> None:
    assert ruleset.catalog
    for meta in ruleset.catalog.values():
        assert meta.title and meta.help and isinstance(meta.severity, Severity)


def test_text_file_is_not_a_model() -> None:
    fmt, findings = scan_data(b'{"architectures": ["BertModel"]}\n', "config.json")
    assert fmt == "text"
    assert [f.rule_id for f in findings] == ["FORMAT-NOT-MODEL"]
    assert findings[0].severity is Severity.INFO


@pytest.mark.parametrize("data,name", [
    (b"def main():\n    print('hello')\n", "train.py"),
    (b"col_a,col_b\n1,2\n", "data.csv"),
    ("Grüße, ein Modell\n".encode(), "README.md"),
    (b"# Model card\n\nThis model ...\n", "README.md"),
])
def test_plain_text_never_sniffs_as_pickle(data: bytes, name: str) -> None:
    fmt, findings = scan_data(data, name)
    assert fmt == "text"
    assert all(f.severity is Severity.INFO for f in findings)


def test_lying_extension_is_a_finding() -> None:
    # a pickle named like safetensors: a code-bearing format behind a data-only name
    fmt, findings = scan_data(b"\x80\x04K\x01.", "model.safetensors")
    assert fmt == "pickle"
    mism = [f for f in findings if f.rule_id == "FORMAT-EXTENSION-MISMATCH"]
    assert mism and mism[0].severity is Severity.HIGH


def test_policy_from_pyproject(tmp_path: Path) -> None:
    cfg = tmp_path / "pyproject.toml"
    cfg.write_text('[tool.modelseal]\nfail-on = "high"\nallow-globals = ["mypkg.Thing"]\n'
                   'deny-globals = [{name = "mypkg.evil", severity = "critical", reason = "ours"}]\n'
                   '[tool.modelseal.limits]\nmax_depth = 3\n')
    policy = load_policy(cfg)
    assert policy.fail_on is Severity.HIGH
    assert policy.allow_globals == ("mypkg.Thing",)
    assert policy.deny_globals[0].severity is Severity.CRITICAL
    assert policy.limits.max_depth == 3
    assert load_policy(cfg, fail_on="low").fail_on is Severity.LOW


@pytest.mark.parametrize("body", ['[tool.modelseal]\nfail-on = "sometimes"\n', '[tool.modelseal]\nbogus = 1\n',
                                  '[tool.modelseal.limits]\nmax_depth = -1\n', 'not toml ==='])
def test_bad_config_is_a_clear_error(tmp_path: Path, body: str) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(body)
    with pytest.raises(ConfigError):
        load_policy(cfg)


def test_cli_missing_path_exits_2_without_traceback(tmp_path: Path) -> None:
    proc = run_cli("scan", str(tmp_path / "nope.pt"))
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().startswith("modelseal: error:")


def test_cli_bad_config_exits_2(tmp_path: Path) -> None:
    (tmp_path / "m.txt").write_text("hi")
    cfg = tmp_path / "c.toml"
    cfg.write_text("[tool.modelseal]\nfail-on = 'never'\n")
    proc = run_cli("scan", "--config", str(cfg), str(tmp_path / "m.txt"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


def test_cli_json_report_and_exit_code(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("just text\n")
    (tmp_path / "evil.pkl").write_bytes(b"cos\nsystem\n(S'echo pwned'\ntR.")
    out = tmp_path / "r.json"
    proc = run_cli("scan", "--format", "json", "--digest", "--output", str(out), str(tmp_path))
    doc = json.loads(out.read_text())
    assert doc["schema"].endswith("/report/v1")
    assert doc["exit_code"] == proc.returncode == 1
    by_name = {Path(f["path"]).name: f for f in doc["files"]}
    assert by_name["notes.txt"]["verdict"] == "clean"
    assert by_name["evil.pkl"]["verdict"] == "malicious"
    assert len(by_name["evil.pkl"]["sha256"]) == 64
    loc = by_name["evil.pkl"]["findings"][0]["location"]
    plain = json.loads(run_cli("scan", "--format", "json", str(tmp_path)).stdout)
    assert all(f["sha256"] is None for f in plain["files"])  # only --digest reads every byte
    assert set(loc) == {"member", "offset", "opcode_index"}


def test_cli_fail_on_threshold(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_bytes(b"\x80\x04K\x01.")  # medium/high mismatch, nothing critical
    assert run_cli("scan", "--fail-on", "critical", str(tmp_path)).returncode == 0
    assert run_cli("scan", "--fail-on", "medium", str(tmp_path)).returncode == 1


def test_sarif_is_valid_and_stable(tmp_path: Path) -> None:
    schema_path = SHARED / "schemas" / "sarif-schema-2.1.0.json"
    if not schema_path.exists():
        pytest.skip("shared SARIF schema absent")
    jsonschema = pytest.importorskip("jsonschema")
    (tmp_path / "evil.pkl").write_bytes(b"cos\nsystem\n(S'echo pwned'\ntR.")
    docs = []
    for _ in range(2):
        proc = run_cli("scan", "--format", "sarif", str(tmp_path))
        assert proc.returncode == 1
        docs.append(json.loads(proc.stdout))
    jsonschema.validate(docs[0], json.loads(schema_path.read_text()))
    results = docs[0]["runs"][0]["results"]
    assert results and results[0]["level"] == "error"
    fps = [[r["partialFingerprints"] for r in d["runs"][0]["results"]] for d in docs]
    assert fps[0] == fps[1]
    rule_ids = {r["id"] for r in docs[0]["runs"][0]["tool"]["driver"]["rules"]}
    assert all(r["ruleId"] in rule_ids for r in results)


def test_symlink_leaving_the_folder_is_reported_not_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside.pkl"
    outside.write_bytes(b"cos\nsystem\n(S'echo pwned'\ntR.")
    model = tmp_path / "model"
    model.mkdir()
    (model / "w.pkl").symlink_to(outside)
    from scanner.engine import scan

    report = scan([model], Policy(), load_ruleset())
    (fr,) = report.files
    assert [f.rule_id for f in fr.findings] == ["PATH-SYMLINK-OUTSIDE"]
    assert fr.verdict is Verdict.SUSPICIOUS


def test_location_describe() -> None:
    assert Location("a!b", 3, 7).describe() == "member a!b, offset 3, opcode #7"
