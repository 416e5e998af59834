from __future__ import annotations

import os
from pathlib import Path

import pytest

from conftest import FIXTURES, rule_ids, scan_data, scan_path
from scanner.findings import Severity
from scanner.limits import Limits
from scanner.rules import Policy
from scanner.sniff import sniff
from scanner.source import FileSource

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper  # noqa: E402

BENIGN = sorted((FIXTURES / "benign" / "onnx").rglob("*.onnx"))


def vi(name: str) -> object:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, [1])


def make(nodes: list, *, opsets: list | None = None, inits: list | None = None, functions: list | None = None) -> bytes:
    g = helper.make_graph(nodes, "g", [vi("x")], [vi("y")], initializer=inits or [])
    m = helper.make_model(g, opset_imports=opsets or [helper.make_opsetid("", 17)], functions=functions or [])
    return m.SerializeToString()


def ext_tensor(location: str, **extra: str) -> object:
    t = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[1], data_location=TensorProto.EXTERNAL)
    for k, v in {"location": location, **extra}.items():
        t.external_data.add(key=k, value=v)
    return t


@pytest.mark.parametrize("path", BENIGN, ids=lambda p: p.name)
def test_benign_models_sniff_as_onnx_and_pass(path: Path) -> None:
    assert sniff(FileSource(path)) == "onnx"
    report = scan_path(path)
    assert report.format == "onnx"
    assert [f for f in report.findings if f.severity > Severity.INFO] == []


def test_safe_external_data_is_checked_and_reported_as_info() -> None:
    report = scan_path(FIXTURES / "benign" / "onnx" / "external_data" / "model.onnx")
    assert rule_ids(report.findings) == {"ONNX-EXTERNAL-DATA"}


@pytest.mark.parametrize("location", ["../w.bin", "a/../../w.bin", "..\\..\\w.bin", "/etc/passwd", "\\\\host\\share\\w",
                                      "D:\\w.bin", "~/w.bin"])
def test_escaping_locations(location: str) -> None:
    _, findings = scan_data(make([helper.make_node("Add", ["x", "w"], ["y"])], inits=[ext_tensor(location)]),
                            "m.onnx")
    assert "ONNX-EXTERNAL-DATA-PATH" in rule_ids(findings)


def test_external_data_of_a_member_is_unverifiable() -> None:
    _, findings = scan_data(make([helper.make_node("Add", ["x", "w"], ["y"])], inits=[ext_tensor("w.bin")]),
                            "m.onnx")
    assert rule_ids(findings) == {"ONNX-EXTERNAL-DATA-UNVERIFIABLE"}


def test_external_data_in_subgraph_constant_and_function(tmp_path: Path) -> None:
    const = helper.make_node("Constant", [], ["c"], value=ext_tensor("../secret"))
    then_g = helper.make_graph([const], "t", [], [vi("c")])
    fn = helper.make_function("loc", "F", ["a"], ["b"],
                              [helper.make_node("Constant", [], ["b"], value=ext_tensor("/proc/self/environ"))],
                              [helper.make_opsetid("", 17)])
    nodes = [helper.make_node("If", ["x"], ["y"], then_branch=then_g, else_branch=then_g),
             helper.make_node("F", ["x"], ["z"], domain="loc")]
    p = tmp_path / "m.onnx"
    p.write_bytes(make(nodes, functions=[fn], opsets=[helper.make_opsetid("", 17), helper.make_opsetid("loc", 1)]))
    findings = scan_path(p).findings
    paths = [f.evidence for f in findings if f.rule_id == "ONNX-EXTERNAL-DATA-PATH"]
    assert any("../secret" in e for e in paths) and any("/proc/self/environ" in e for e in paths)
    assert "ONNX-CUSTOM-DOMAIN" not in rule_ids(findings)  # a local function is not a custom op


def test_symlinked_folder_on_the_way(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "w.bin").write_bytes(b"\0" * 4)
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    os.symlink(outside, model_dir / "data")
    p = model_dir / "m.onnx"
    p.write_bytes(make([helper.make_node("Add", ["x", "w"], ["y"])], inits=[ext_tensor("data/w.bin")]))
    ids = rule_ids(scan_path(p).findings)
    assert {"ONNX-EXTERNAL-DATA-SYMLINK", "ONNX-EXTERNAL-DATA-PATH"} <= ids


def test_bad_offsets(tmp_path: Path) -> None:
    (tmp_path / "w.bin").write_bytes(b"\0" * 8)
    p = tmp_path / "m.onnx"
    p.write_bytes(make([helper.make_node("Add", ["x", "w"], ["y"])], inits=[ext_tensor("w.bin", offset="x")]))
    assert "ONNX-EXTERNAL-DATA-RANGE" in rule_ids(scan_path(p).findings)


def test_python_ops_and_domains() -> None:
    data = make([helper.make_node("PythonOp", ["x"], ["y"], domain="com.microsoft"),
                 helper.make_node("PyCustomThing", ["x"], ["z"], domain="ai.onnx.contrib")],
                opsets=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1),
                        helper.make_opsetid("ai.onnx.contrib", 1), helper.make_opsetid("unused.domain", 1)])
    _, findings = scan_data(data, "m.onnx")
    ops = [f.message for f in findings if f.rule_id == "ONNX-PYTHON-OP"]
    assert len(ops) == 2
    assert "ONNX-CUSTOM-OPSET" in rule_ids(findings)  # imported, never used
    custom = [f for f in findings if f.rule_id == "ONNX-CUSTOM-DOMAIN"]
    assert [f.evidence for f in custom] == ["ai.onnx.contrib:PyCustomThing at graph.node[1]"]


def test_hidden_op_location_is_reported() -> None:
    report = scan_path(FIXTURES / "hostile" / "onnx" / "x04_hidden_subgraph_op.onnx")
    ev = next(f.evidence for f in report.findings if f.rule_id == "ONNX-CUSTOM-DOMAIN")
    assert "then_branch" in ev and "function local.fn:Wrap" in ev


def nested_if(depth: int) -> bytes:
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["o"])], "leaf", [], [vi("o")])
    for _ in range(depth):
        g = helper.make_graph([helper.make_node("If", ["x"], ["o"], then_branch=g, else_branch=g)], "n", [], [vi("o")])
    return make([helper.make_node("If", ["x"], ["y"], then_branch=g, else_branch=g)])


def test_subgraph_depth_and_node_limits() -> None:
    data = nested_if(12)
    _, findings = scan_data(data, "m.onnx")
    assert "LIMIT-EXCEEDED" not in rule_ids(findings)
    _, deep = scan_data(data, "m.onnx", policy=Policy(limits=Limits(max_graph_depth=5)))
    assert "LIMIT-EXCEEDED" in rule_ids(deep)
    _, many = scan_data(data, "m.onnx", policy=Policy(limits=Limits(max_graph_nodes=10)))
    assert "LIMIT-EXCEEDED" in rule_ids(many)


def test_unknown_fields_inside_the_graph_are_reported() -> None:
    m = onnx.ModelProto()
    m.ParseFromString(make([helper.make_node("Relu", ["x"], ["y"])]))
    graph = m.graph.SerializeToString() + b"\xf8\x07\x01"  # field 127 (varint), unknown to GraphProto
    m.ClearField("graph")
    data = m.SerializeToString() + b"\x3a" + bytes([len(graph)]) + graph
    fmt, findings = scan_data(data, "m.onnx")
    assert fmt == "onnx"
    assert "ONNX-UNKNOWN-FIELDS" in rule_ids(findings)


def test_corrupt_graph_is_malformed_and_truncation_never_passes() -> None:
    data = (FIXTURES / "hostile" / "onnx" / "x04_malformed.onnx").read_bytes()
    fmt, findings = scan_data(data, "m.onnx")
    assert fmt == "onnx" and "ONNX-MALFORMED" in rule_ids(findings)
    good = make([helper.make_node("Relu", ["x"], ["y"])])
    for cut in (len(good) - 1, len(good) // 2):
        fmt, findings = scan_data(good[:cut], "m.onnx")
        assert any(f.severity >= Severity.MEDIUM for f in findings), (fmt, findings)


def test_oversize_model_is_a_limit_finding() -> None:
    data = make([helper.make_node("Relu", ["x"], ["y"])])
    _, findings = scan_data(data, "m.onnx", policy=Policy(limits=Limits(max_read_bytes=10)))
    assert "LIMIT-EXCEEDED" in rule_ids(findings)


def test_unknown_top_level_field_does_not_hide_a_model() -> None:
    data = make([helper.make_node("Add", ["x", "w"], ["y"])], inits=[ext_tensor("/etc/passwd")])
    fmt, findings = scan_data(data + b"\xf8\x07\x01", "weights.bin")  # field 127 at the top level
    assert fmt == "onnx"
    assert {"ONNX-EXTERNAL-DATA-PATH", "ONNX-UNKNOWN-FIELDS"} <= rule_ids(findings)


def test_thousands_of_metadata_entries_do_not_hide_a_model() -> None:
    m = onnx.ModelProto()
    m.ParseFromString(make([helper.make_node("Relu", ["x"], ["y"])]))
    for i in range(10_050):
        m.metadata_props.add(key=f"k{i}", value="v")
    m.metadata_props.add(key="hint", value="libevil.so")
    fmt, findings = scan_data(m.SerializeToString(), "weights.bin")
    assert fmt == "onnx" and "ONNX-SHARED-LIBRARY" in rule_ids(findings)


def test_unknown_op_in_the_standard_domain_is_low() -> None:
    _, findings = scan_data(make([helper.make_node("Exec", ["x"], ["y"]),
                                  helper.make_node("Relu", ["x"], ["z"], domain="ai.onnx")]), "m.onnx")
    assert [(f.rule_id, f.severity) for f in findings] == [("ONNX-UNKNOWN-OP", Severity.LOW)]
    assert "Exec" in findings[0].message
