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

from scanner.protowire import encode_varint as _varint  # noqa: E402

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


# -- large models: the skeleton parser ------------------------------------------------------------------

def sparse_onnx(path: Path, payload: int, extra_inits: list | None = None) -> None:
    """A real small model whose initializer `w` declares `payload` bytes of raw_data, left as a sparse hole."""
    g = helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"])], "big",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [payload // 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [payload // 4])],
                          initializer=extra_inits or [])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    tensor_head = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[payload // 4]).SerializeToString()
    tensor_head += _varint(9 << 3 | 2) + _varint(payload)
    init_head = _varint(5 << 3 | 2) + _varint(len(tensor_head) + payload) + tensor_head
    graph = m.graph.SerializeToString()
    m.ClearField("graph")
    top = m.SerializeToString() + _varint(7 << 3 | 2) + _varint(len(graph) + len(init_head) + payload) + graph + init_head
    with open(path, "wb") as fh:
        fh.write(top)
        fh.truncate(len(top) + payload)


SKELETON = Policy(limits=Limits(max_onnx_inline_bytes=1))


def test_two_gigabyte_model_with_embedded_weights_scans_clean(tmp_path: Path) -> None:
    path = tmp_path / "big.onnx"
    sparse_onnx(path, 2 << 30)
    report = scan_path(path)
    assert report.format == "onnx"
    assert [f.rule_id for f in report.findings] == ["ONNX-SKELETON"]
    assert f"{2 << 30} bytes" in report.findings[0].message


def test_large_model_still_shows_hostile_structure(tmp_path: Path) -> None:
    path = tmp_path / "big.onnx"
    sparse_onnx(path, 8 << 20, extra_inits=[ext_tensor("../../etc/passwd")])
    ids = rule_ids(scan_path(path, policy=Policy(limits=Limits(max_onnx_inline_bytes=1 << 20))).findings)
    assert {"ONNX-SKELETON", "ONNX-EXTERNAL-DATA-PATH"} <= ids


@pytest.mark.parametrize("path", sorted([*(FIXTURES / "hostile" / "onnx").rglob("*.onnx"),
                                         *(FIXTURES / "hostile" / "redteam_formats" / "onnx").rglob("*.onnx")]),
                         ids=lambda p: p.parent.name + "/" + p.name)
def test_skeleton_and_full_parse_agree_on_fixtures(path: Path) -> None:
    def key(fs: object) -> list:
        return sorted((f.rule_id, f.severity, f.message) for f in fs if f.rule_id != "ONNX-SKELETON")

    assert key(scan_path(path, policy=SKELETON).findings) == key(scan_path(path).findings)


def _tensor_model(t: object) -> bytes:
    return make([helper.make_node("Add", ["x", "w"], ["y"])], inits=[t])


def test_skeleton_skips_packed_payloads_and_keeps_the_rest() -> None:
    t = helper.make_tensor("w", TensorProto.FLOAT, [5000], [1.0] * 5000)
    fmt, findings = scan_data(_tensor_model(t), "m.onnx", policy=SKELETON)
    assert fmt == "onnx" and rule_ids(findings) == {"ONNX-SKELETON"}
    skel = next(f for f in findings if f.rule_id == "ONNX-SKELETON")
    assert "20000 bytes" in skel.message


@pytest.mark.parametrize("field_num,body", [(4, b"\x00" * 5001), (10, b"\x00" * 5004),
                                            (7, b"\x80" * 5000), (7, b"\x01" * 4999 + b"\xff")])
def test_skeleton_rejects_badly_packed_payloads(field_num: int, body: bytes) -> None:
    tensor = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[1]).SerializeToString()
    tensor += _varint(field_num << 3 | 2) + _varint(len(body)) + body
    data = make([helper.make_node("Add", ["x", "w"], ["y"])])
    m = onnx.ModelProto()
    m.ParseFromString(data)
    m.graph.initializer.add()
    # splice the hand-made tensor in place of the empty initializer (tag 0x2a, length 0) and fix the lengths
    g = m.graph.SerializeToString()
    g2 = g.replace(b"\x2a\x00", b"\x2a" + _varint(len(tensor)) + tensor, 1)
    m.ClearField("graph")
    blob = m.SerializeToString() + b"\x3a" + _varint(len(g2)) + g2
    _, full = scan_data(blob, "m.onnx")
    _, skel = scan_data(blob, "m.onnx", policy=SKELETON)
    assert "ONNX-MALFORMED" in rule_ids(full)
    assert "ONNX-MALFORMED" in rule_ids(skel)


def test_skeleton_keeps_large_unknown_fields_visible() -> None:
    m = onnx.ModelProto()
    m.ParseFromString(make([helper.make_node("Relu", ["x"], ["y"])]))
    g = m.graph.SerializeToString() + _varint(99 << 3 | 2) + _varint(100_000) + b"\x00" * 100_000
    m.ClearField("graph")
    blob = m.SerializeToString() + b"\x3a" + _varint(len(g)) + g
    _, findings = scan_data(blob, "m.onnx", policy=SKELETON)
    assert "ONNX-UNKNOWN-FIELDS" in rule_ids(findings)


def test_skeleton_bounds() -> None:
    data = make([helper.make_node("Relu", ["x"], ["y"])])
    _, few = scan_data(data, "m.onnx", policy=Policy(limits=Limits(max_onnx_inline_bytes=1, max_proto_fields=3)))
    assert any(f.rule_id == "LIMIT-EXCEEDED" and f.evidence == "max_proto_fields" for f in few)
    _, truncated = scan_data(data[:-3], "m.onnx", policy=SKELETON)
    assert any(f.severity >= Severity.MEDIUM for f in truncated)


# -- red-team variants ----------------------------------------------------------------------------------

@pytest.mark.parametrize("location", ["%2e%2e/%2e%2e/etc/passwd", "%252e%252e%252fx", "\uff0e\uff0e\uff0fx",
                                      "\u2025/x", "..\u00a5x", "file:///etc/passwd", "http://169.254.169.254/x",
                                      "\\\\?\\C:\\x", "C:x"])
def test_locations_other_readers_resolve_outside(location: str) -> None:
    _, findings = scan_data(make([helper.make_node("Add", ["x", "w"], ["y"])], inits=[ext_tensor(location)]),
                            "m.onnx")
    assert "ONNX-EXTERNAL-DATA-PATH" in rule_ids(findings)


@pytest.mark.parametrize("location", ["weights.bin", "data/w.bin", "model.onnx_data", "w%20x.bin", "caf\u00e9.bin"])
def test_ordinary_locations_do_not_escape(location: str) -> None:
    _, findings = scan_data(make([helper.make_node("Add", ["x", "w"], ["y"])], inits=[ext_tensor(location)]),
                            "m.onnx")
    assert "ONNX-EXTERNAL-DATA-PATH" not in rule_ids(findings)


@pytest.mark.parametrize("order", [("../../etc/passwd", "w.bin"), ("w.bin", "../../etc/passwd")])
def test_every_location_entry_is_checked(order: tuple[str, str]) -> None:
    t = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[1], data_location=TensorProto.EXTERNAL)
    for loc in order:
        t.external_data.add(key="location", value=loc)
    _, findings = scan_data(make([helper.make_node("Add", ["x", "w"], ["y"])], inits=[t]), "m.onnx")
    assert {"ONNX-EXTERNAL-DATA-PATH", "ONNX-MALFORMED"} <= rule_ids(findings)


def test_unknown_external_data_key() -> None:
    _, findings = scan_data(make([helper.make_node("Add", ["x", "w"], ["y"])],
                                 inits=[ext_tensor("w.bin", __class__="str")]), "m.onnx")
    assert "ONNX-UNKNOWN-FIELDS" in rule_ids(findings)


def test_function_default_attribute_tensor_is_checked() -> None:
    fn = helper.make_function("local", "F", ["x"], ["y"], [helper.make_node("Identity", ["x"], ["y"])],
                              [helper.make_opsetid("", 17)])
    fn.attribute_proto.append(helper.make_attribute("w", ext_tensor("/etc/passwd")))
    data = make([helper.make_node("F", ["x"], ["y"], domain="local")], functions=[fn],
                opsets=[helper.make_opsetid("", 17), helper.make_opsetid("local", 1)])
    assert "ONNX-EXTERNAL-DATA-PATH" in rule_ids(scan_data(data, "m.onnx")[1])


def test_unknown_field_deep_inside_is_located() -> None:
    m = onnx.ModelProto()
    m.ParseFromString(make([helper.make_node("Relu", ["x"], ["y"])]))
    node = m.graph.node[0].SerializeToString() + b"\xd2\x02\x03abc"  # field 42, length 3
    m.graph.node[0].Clear()
    m.graph.node[0].MergeFromString(node)
    _, findings = scan_data(m.SerializeToString(), "m.onnx")
    assert any(f.rule_id == "ONNX-UNKNOWN-FIELDS" and "node[0]" in f.message for f in findings)


def test_network_op_and_runtime_config() -> None:
    data = make([helper.make_node("AzureTritonInvoker", ["x"], ["y"], domain="com.microsoft.extensions")],
                opsets=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft.extensions", 1)])
    assert {"ONNX-NETWORK-OP", "ONNX-CUSTOM-DOMAIN"} <= rule_ids(scan_data(data, "m.onnx")[1])
    m = onnx.ModelProto()
    m.ParseFromString(make([helper.make_node("Relu", ["x"], ["y"])]))
    m.metadata_props.add(key="ort_config", value='{"session_options": {"enable_profiling": 1}}')
    assert rule_ids(scan_data(m.SerializeToString(), "m.onnx")[1]) == {"ONNX-RUNTIME-CONFIG"}


class _CountingSource(FileSource):
    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.bytes_read = 0

    def read_at(self, offset: int, n: int) -> bytes:
        data = super().read_at(offset, n)
        self.bytes_read += len(data)
        return data


def test_skeleton_reads_the_structure_not_the_weights(tmp_path: Path) -> None:
    from scanner.engine import ScanContext, scan_source
    from scanner.rules import load_ruleset

    path = tmp_path / "big.onnx"
    sparse_onnx(path, 1 << 30)
    src = _CountingSource(path)
    try:
        fmt, findings = scan_source(src, ScanContext(load_ruleset(), Policy()))
    finally:
        src.close()
    assert fmt == "onnx" and [f.rule_id for f in findings] == ["ONNX-SKELETON"]
    assert src.bytes_read < 8 << 20, src.bytes_read


def test_light_onnx_loading_leaves_a_later_import_onnx_intact() -> None:
    """The analyzer loads onnx's protobuf module and C extension without `import onnx`; code that imports onnx
    afterwards in the same process (a gate, then a load) must see the usual package."""
    import subprocess
    import sys

    code = ("from scanner.formats.onnx.proto import pb2, has_schema\n"
            "P = pb2(); assert has_schema('Add', '') and not has_schema('Exec', '')\n"
            "import sys; assert 'numpy' not in sys.modules and 'onnx' not in sys.modules\n"
            "import onnx, onnx.helper\n"
            "assert onnx.ModelProto is P.ModelProto and onnx.onnx_ml_pb2.ModelProto is P.ModelProto\n"
            "onnx.checker.check_model(onnx.helper.make_model(onnx.helper.make_graph([], 'g', [], [])))\n"
            "has_schema('Add', ''); assert onnx.onnx_cpp2py_export.defs.has_schema('Relu', '')\n"
            "print('ok')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-800:]
