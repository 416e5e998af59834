"""TensorFlow SavedModels and frozen graphs: detected by content, every graph and function walked."""

from __future__ import annotations

import sys
from pathlib import Path

from conftest import FIXTURES, rule_ids, scan_data, scan_path
from scanner.findings import Severity, Verdict
from scanner.limits import Limits
from scanner.protowire import encode_varint
from scanner.rules import Policy

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

BENIGN = FIXTURES / "benign" / "tensorflow"
HOSTILE = FIXTURES / "hostile" / "tensorflow"
RULES_TOML = Path(__file__).resolve().parent.parent / "rules" / "tensorflow.toml"


def _field(num: int, payload: bytes) -> bytes:
    return encode_varint(num << 3 | 2) + encode_varint(len(payload)) + payload


def _node(name: str, op: str) -> bytes:
    return _field(1, name.encode()) + _field(2, op.encode())


def _saved_model(*nodes: bytes, functions: tuple[bytes, ...] = ()) -> bytes:
    library = b"".join(_field(1, fn) for fn in functions)
    graph = b"".join(_field(1, n) for n in nodes) + (_field(2, library) if functions else b"")
    return encode_varint(1 << 3) + b"\x01" + _field(2, _field(2, graph))


def test_real_saved_models_are_detected_by_content() -> None:
    for name in ("module_dense", "module_control_flow"):
        data = (BENIGN / name / "saved_model.pb").read_bytes()
        fmt, findings = scan_data(data, "renamed.bin")
        assert fmt == "tensorflow"
        assert all(f.severity <= Severity.INFO for f in findings if f.rule_id != "FORMAT-EXTENSION-MISMATCH")


def test_honest_models_walk_every_function() -> None:
    report = scan_path(BENIGN / "module_control_flow" / "saved_model.pb")
    assert report.verdict is Verdict.CLEAN
    graph = [f for f in report.findings if f.rule_id == "TF-GRAPH"]
    assert graph and "functions" in graph[0].message and not graph[0].message.startswith("graph walked: 0 nodes")


def test_op_hidden_in_a_library_function_is_found_with_its_path() -> None:
    data = _saved_model(_node("x", "Placeholder"),
                        functions=(_field(1, _field(1, b"__inference_inner_1")) + _field(3, _node("w", "WriteFile")),))
    fmt, findings = scan_data(data, "saved_model.pb")
    assert fmt == "tensorflow"
    hits = [f for f in findings if f.rule_id == "TF-FILE-OP"]
    assert hits and "function[__inference_inner_1]/w" in (hits[0].evidence or "")


def test_op_not_registered_by_tensorflow_is_unknown() -> None:
    data = (BENIGN / "module_dense" / "saved_model.pb").read_bytes()
    assert b"\x06MatMul" in data
    fmt, findings = scan_data(data.replace(b"\x06MatMul", b"\x06MatMuX"), "saved_model.pb")
    assert fmt == "tensorflow"
    unknown = [f for f in findings if f.rule_id == "TF-UNKNOWN-OP"]
    assert unknown and unknown[0].severity is Severity.MEDIUM and "MatMuX" in unknown[0].message


def test_frozen_graph_def_is_walked() -> None:
    assert rule_ids(scan_path(HOSTILE / "frozen_graph.pb").findings) >= {"TF-FILE-OP"}
    assert scan_path(BENIGN / "frozen_graph.pb").verdict is Verdict.CLEAN


def test_field_budget_ends_in_a_finding_not_clean() -> None:
    data = (BENIGN / "module_dense" / "saved_model.pb").read_bytes()
    policy = Policy(limits=Limits(max_proto_fields=50))
    fmt, findings = scan_data(data, "saved_model.pb", policy=policy)
    assert fmt == "tensorflow"
    assert any(f.rule_id == "LIMIT-EXCEEDED" and f.severity >= Severity.MEDIUM for f in findings)


def test_truncated_saved_model_is_malformed_or_not_claimed() -> None:
    data = (HOSTILE / "write_file" / "saved_model.pb").read_bytes()
    fmt, findings = scan_data(data[: len(data) // 2], "saved_model.pb")
    # TensorFlow's ParseFromString refuses a truncated message, so the loader cannot run it either
    assert fmt != "tensorflow" or any(f.severity >= Severity.HIGH for f in findings)


def test_onnx_models_are_not_taken_for_tensorflow() -> None:
    for p in sorted((FIXTURES / "benign" / "onnx").rglob("*.onnx"))[:10]:
        fmt, _ = scan_data(p.read_bytes(), p.name)
        assert fmt == "onnx", p


def test_op_rules_name_ops_tensorflow_registers() -> None:
    """A typo in an op rule would silently never match: every listed op must be in the generated list."""
    doc = tomllib.loads(RULES_TOML.read_text(encoding="utf-8"))
    registered = set(doc["registered_ops"]["ops"])
    assert len(registered) > 1500
    missing = [e["op"] for e in doc["op"] if e["op"] not in registered]
    assert not missing, missing
