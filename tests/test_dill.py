"""dill / cloudpickle: data helpers judged by what they call, code-object construction stays critical."""

from __future__ import annotations

from conftest import FIXTURES, scan_data, scan_path
from scanner.findings import Severity, Verdict


def test_dill_written_arrays_and_types_are_clean() -> None:
    for name in ("arrays.dill", "types.dill"):
        report = scan_path(FIXTURES / "benign" / "dill" / name)
        assert report.verdict is Verdict.CLEAN, [(f.rule_id, f.evidence) for f in report.findings]


def test_create_array_calls_its_first_argument() -> None:
    payload = b"cdill._dill\n_create_array\n(cposix\nsystem\n(S'id'\ntNNtR."
    _, findings = scan_data(payload, "x.dill")
    hits = [f for f in findings if f.severity >= Severity.HIGH and "posix.system" in (f.evidence or f.message)]
    assert hits and max(f.severity for f in hits) is Severity.CRITICAL


def test_load_type_result_called_is_still_reported() -> None:
    # _load_type('CodeType') then calling it: building a code object through dill's type table
    payload = b"cdill._dill\n_load_type\n(S'CodeType'\ntR(I0\ntR."
    _, findings = scan_data(payload, "x.dill")
    assert any(f.severity >= Severity.HIGH for f in findings)


def test_functions_carry_their_code_as_critical() -> None:
    for name in ("function.dill", "lambda.cloudpickle"):
        report = scan_path(FIXTURES / "hostile" / "dill" / name)
        assert report.verdict is Verdict.MALICIOUS
