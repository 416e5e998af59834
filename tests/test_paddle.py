"""PaddlePaddle programs: the legacy ProgramDesc by content, PIR JSON by what paddle.jit.load reads."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from conftest import FIXTURES, rule_ids, scan_data
from scanner.findings import Severity

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

LEGACY = (FIXTURES / "benign" / "paddle" / "legacy" / "model.pdmodel").read_bytes()
PIR = (FIXTURES / "benign" / "paddle" / "pir" / "model.json").read_bytes()
RULES_TOML = Path(__file__).resolve().parent.parent / "rules" / "paddle.toml"


def test_legacy_program_is_found_by_content_under_any_name() -> None:
    for name in ("model.pdmodel", "inference.bin", "x"):
        fmt, findings = scan_data(LEGACY, name)
        assert fmt == "paddle", name
        assert "PADDLE-PROGRAM" in rule_ids(findings)


def test_unregistered_legacy_op_is_unknown() -> None:
    needle = b"\x1a\x04relu"
    assert needle in LEGACY
    fmt, findings = scan_data(LEGACY.replace(needle, b"\x1a\x04relx"), "model.pdmodel")
    assert fmt == "paddle"
    hits = [f for f in findings if f.rule_id == "PADDLE-UNKNOWN-OP"]
    assert hits and hits[0].severity is Severity.MEDIUM and "relx" in hits[0].message


def test_pir_program_op_renamed_to_a_file_op_is_found() -> None:
    doc = json.loads(PIR)
    ops = doc["program"]["regions"][0]["blocks"][0]["ops"]
    victim = next(op for op in ops if isinstance(op.get("#"), str) and op["#"].endswith(".relu"))
    victim["#"] = victim["#"].rsplit(".", 1)[0] + ".save_combine"
    victim["A"].append({"AT": {"#": "0.a_str", "D": "/etc/cron.d/x"}, "N": "file_path"})
    _, findings = scan_data(json.dumps(doc).encode(), "model.json")
    hits = [f for f in findings if f.rule_id == "PADDLE-FILE-OP"]
    assert hits and "/etc/cron.d/x" in (hits[0].evidence or "")


def test_pir_program_honest_is_clean() -> None:
    _, findings = scan_data(PIR, "model.json")
    assert all(f.severity <= Severity.INFO for f in findings)


def test_op_rules_name_ops_paddle_registers() -> None:
    doc = tomllib.loads(RULES_TOML.read_text(encoding="utf-8"))
    registered = set(doc["registered_ops"]["ops"])
    assert len(registered) > 1000
    assert not [e["op"] for e in doc["op"] if e["op"] not in registered]
