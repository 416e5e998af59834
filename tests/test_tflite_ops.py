"""TFLite operator codes: Flex ops judged as the TensorFlow ops they run, custom ops noted, bounds kept."""

from __future__ import annotations

from conftest import FIXTURES, rule_ids, scan_data
from scanner.findings import Severity

RELU = (FIXTURES / "benign" / "tflite" / "relu.tflite").read_bytes()
WRITE = (FIXTURES / "hostile" / "tflite" / "flex_write_file.tflite").read_bytes()


def test_flex_op_is_judged_like_the_tensorflow_op_under_any_name() -> None:
    for name in ("model.tflite", "model.bin", "x"):
        fmt, findings = scan_data(WRITE, name)
        assert fmt == "tflite"
        hits = [f for f in findings if f.rule_id == "TFLITE-FLEX-OP"]
        assert hits and hits[0].severity is Severity.HIGH and "WriteFile" in hits[0].message


def test_flex_op_tensorflow_does_not_register_is_medium_and_harmless_flex_is_info() -> None:
    assert b"FlexWriteFile" in WRITE
    _, findings = scan_data(WRITE.replace(b"FlexWriteFile", b"FlexWriteFilX"), "m.tflite")
    assert [f.severity for f in findings if f.rule_id == "TFLITE-FLEX-OP"] == [Severity.MEDIUM]
    _, findings = scan_data(WRITE.replace(b"FlexWriteFile", b"FlexTranspose"), "m.tflite")
    assert not any(f.severity >= Severity.MEDIUM for f in findings if f.rule_id.startswith("TFLITE"))


def test_builtin_only_model_is_clean() -> None:
    _, findings = scan_data(RELU, "relu.tflite")
    assert all(f.severity <= Severity.INFO for f in findings)


def test_offsets_outside_the_file_are_reported_not_followed() -> None:
    data = bytearray(WRITE)
    data[0:4] = (len(data) + 100).to_bytes(4, "little")  # root table beyond the end
    fmt, findings = scan_data(bytes(data), "m.tflite")
    assert fmt != "tflite" or "TFLITE-MALFORMED" in rule_ids(findings)
    truncated = WRITE[: len(WRITE) // 3]
    fmt, findings = scan_data(truncated, "m.tflite")
    assert fmt != "tflite" or "TFLITE-MALFORMED" in rule_ids(findings) or any(
        f.rule_id == "TFLITE-FLEX-OP" for f in findings)
