"""[[state_guard]] classes: judged at BUILD by the state __setstate__ receives (statsmodels ModelData)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from conftest import FIXTURES, scan_data, scan_path
from scanner.findings import Severity, Verdict

CLS = b"cstatsmodels.base.data\nPandasData\n"
H5 = Path("/work/venvs/h5/bin/python")


def _str(s: str) -> bytes:
    b = s.encode()
    return b"X" + len(b).to_bytes(4, "little") + b


def _worst(data: bytes) -> Severity:
    _, findings = scan_data(data, "results.pickle")
    return max((f.severity for f in findings), key=lambda s: s.rank, default=Severity.INFO)


def _newobj_build(state: bytes) -> bytes:
    return b"\x80\x02" + CLS + b")\x81" + state + b"b."


def test_state_without_the_flag_is_a_dict_update() -> None:
    state = b"}(" + _str("orig_endog") + b"N" + _str("k_constant") + b"K\x01u"
    assert _worst(_newobj_build(state)) <= Severity.LOW


@pytest.mark.parametrize("key", ["restore_design_info", "restore_model_spec"])
def test_state_with_the_flag_re_evaluates_the_formula(key: str) -> None:
    state = b"}(" + _str(key) + b"\x88" + _str("formula") + _str("y ~ x") + b"u"
    assert _worst(_newobj_build(state)) >= Severity.HIGH


@pytest.mark.parametrize("state", [
    b"cbuiltins\ndict\n)R",               # a dict built by a call: its keys are not known
    b"}(K\x01K\x02u",                     # a key that is not a str
    b"(}" + _str("a") + b"Nsu}t",         # (dict, slotstate) tuple
], ids=["called-dict", "int-key", "tuple"])
def test_state_the_scanner_cannot_read_is_judged_as_the_class(state: bytes) -> None:
    assert _worst(_newobj_build(state)) >= Severity.HIGH


def test_guard_applies_to_newobj_only() -> None:
    """copyreg.__newobj__ and direct calls are judged as before (no deferral to BUILD)."""
    via_copyreg = b"\x80\x02ccopyreg\n__newobj__\n" + CLS + b"\x85R}b."
    assert _worst(via_copyreg) >= Severity.HIGH
    called = b"\x80\x02" + CLS + b")R}b."
    assert _worst(called) >= Severity.HIGH


def test_fixtures_written_by_statsmodels() -> None:
    assert scan_path(FIXTURES / "benign" / "state_guards" / "sm_ols_arrays.pickle").verdict is Verdict.CLEAN
    report = scan_path(FIXTURES / "hostile" / "state_guards" / "sm_ols_formula_exec.pickle")
    assert report.verdict is not Verdict.CLEAN
    assert any("PandasData" in f.message and f.severity.rank >= Severity.HIGH.rank for f in report.findings)


@pytest.mark.skipif(not H5.exists(), reason="no venv with statsmodels")
def test_statsmodels_runs_the_pickled_formula() -> None:
    r = subprocess.run([str(H5), str(FIXTURES / "gen_state_guards.py"), "--prove"], capture_output=True,
                       text=True, timeout=600)
    if "No module named" in r.stderr:
        pytest.skip(r.stderr.strip().splitlines()[-1])
    assert r.returncode == 0, r.stdout + r.stderr
