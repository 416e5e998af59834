"""MXNet symbol graphs and NDArray lists: detected by content, walked bounded, ops judged by name."""

from __future__ import annotations

import json
import struct

from conftest import FIXTURES, rule_ids, scan_data, scan_path
from scanner.findings import Severity, Verdict

BENIGN = FIXTURES / "benign" / "mxnet"
HOSTILE = FIXTURES / "hostile" / "mxnet"


def test_real_files_are_detected_by_content_and_clean() -> None:
    for name, fmt in (("mlp-symbol.json", "mxnet-symbol"), ("mlp-0000.params", "mxnet-params"),
                      ("mlp_gluon.params", "mxnet-params"), ("sparse.params", "mxnet-params")):
        report = scan_path(BENIGN / name)
        assert report.format == fmt and report.verdict is Verdict.CLEAN, name
        walked = [f for f in report.findings if f.rule_id == "MXNET-GRAPH"]
        assert walked and " 0 " not in walked[0].message
        renamed, _ = scan_data((BENIGN / name).read_bytes(), "blob")
        assert renamed == fmt


def test_custom_op_reports_its_op_type() -> None:
    report = scan_path(HOSTILE / "custom_op-symbol.json")
    hit = [f for f in report.findings if f.rule_id == "MXNET-CUSTOM-OP"]
    assert hit and "op_type=modelseal_pwn" in (hit[0].evidence or "")
    assert report.verdict is not Verdict.CLEAN


def test_ops_inside_subgraphs_are_judged() -> None:
    graph = json.loads((BENIGN / "mlp-symbol.json").read_text())
    inner = {"nodes": [{"op": "null", "name": "x", "inputs": []},
                       {"op": "Custom", "name": "hidden", "attrs": {"op_type": "deep"}, "inputs": [[0, 0, 0]]}],
             "arg_nodes": [0], "heads": [[1, 0, 0]]}
    graph["nodes"][-1]["subgraphs"] = [inner]
    fmt, findings = scan_data(json.dumps(graph).encode(), "net-symbol.json")
    assert fmt == "mxnet-symbol"
    hit = [f for f in findings if f.rule_id == "MXNET-CUSTOM-OP"]
    assert hit and "subgraphs[0]" in (hit[0].evidence or "") and "op_type=deep" in (hit[0].evidence or "")


def test_unregistered_op_is_unknown_and_registered_one_is_not() -> None:
    ids = rule_ids(scan_path(HOSTILE / "unknown_op-symbol.json").findings)
    assert "MXNET-UNKNOWN-OP" in ids
    assert "MXNET-UNKNOWN-OP" not in rule_ids(scan_path(BENIGN / "mlp-symbol.json").findings)


def test_duplicate_keys_and_broken_json_are_malformed() -> None:
    data = b'{"nodes": [], "nodes": [{"op": "Custom"}], "arg_nodes": [], "heads": []}'
    fmt, findings = scan_data(data, "x-symbol.json")
    assert fmt == "mxnet-symbol" and "MXNET-MALFORMED" in rule_ids(findings)
    fmt, findings = scan_data(b'{"nodes": [{"op": 3}], "arg_nodes": [], "heads": []', "x-symbol.json")
    assert fmt == "mxnet-symbol" and "MXNET-MALFORMED" in rule_ids(findings)


def test_ordinary_json_stays_text() -> None:
    fmt, _ = scan_data(b'{"nodes": [1, 2], "edges": []}', "graph.json")
    assert fmt == "text"


def test_lying_counts_and_truncation_are_high() -> None:
    report = scan_path(HOSTILE / "count_lie.params")
    hit = [f for f in report.findings if f.rule_id == "MXNET-MALFORMED"]
    assert hit and hit[0].severity is Severity.HIGH
    data = (BENIGN / "mlp-0000.params").read_bytes()
    for cut in (20, 40, len(data) - 3):
        fmt, findings = scan_data(data[:cut], "x.params")
        assert fmt == "mxnet-params" and "MXNET-MALFORMED" in rule_ids(findings), cut


def test_bad_dtype_shape_and_names_are_malformed() -> None:
    def one(ndim: int, dims: list[int], dtype: int, data: bytes, names: bytes) -> bytes:
        arr = struct.pack("<Ii", 0xF993FAC9, 0) + struct.pack(f"<i{len(dims)}q", ndim, *dims)
        arr += struct.pack("<iii", 1, 0, dtype) + data
        return struct.pack("<QQQ", 0x112, 0, 1) + arr + names

    ok = one(1, [2], 0, b"\0" * 8, struct.pack("<QQ", 1, 1) + b"w")
    assert rule_ids(scan_data(ok, "x.params")[1]) == {"MXNET-GRAPH"}
    for bad in (one(1, [2], 99, b"\0" * 8, struct.pack("<Q", 0)),               # dtype flag
                one(-1, [], 0, b"", struct.pack("<Q", 0)),                       # negative ndim
                one(1, [2], 0, b"\0" * 8, struct.pack("<Q", 2)),                 # 2 names for 1 array
                one(1, [1 << 40], 0, b"\0" * 8, struct.pack("<Q", 0))):          # data past the end
        fmt, findings = scan_data(bad, "x.params")
        assert fmt == "mxnet-params" and "MXNET-MALFORMED" in rule_ids(findings)


def test_params_name_on_other_content_is_a_mismatch() -> None:
    pickle = b"\x80\x04\x95\x05\x00\x00\x00\x00\x00\x00\x00K\x01."
    _, findings = scan_data(pickle, "model.params")
    hit = [f for f in findings if f.rule_id == "FORMAT-EXTENSION-MISMATCH"]
    assert hit and hit[0].severity is Severity.HIGH


def test_reserved_header_field_is_not_checked_by_the_loader_so_not_by_the_sniff() -> None:
    data = bytearray((BENIGN / "mlp-0000.params").read_bytes())
    data[8:16] = struct.pack("<Q", 7)
    fmt, findings = scan_data(bytes(data), "x.params")
    hit = [f for f in findings if f.rule_id == "MXNET-MALFORMED"]
    assert fmt == "mxnet-params" and hit and hit[0].severity is Severity.MEDIUM


def test_graph_with_binary_bytes_is_still_a_graph() -> None:
    """dmlc's JSON reader copies string bytes as they are: a NUL or invalid UTF-8 in a node name must not
    make the graph `data`."""
    graph = (HOSTILE / "custom_op-symbol.json").read_bytes().replace(b'"pwn"', b'"p\x00\xffwn"')
    fmt, findings = scan_data(graph, "x-symbol.json")
    assert fmt == "mxnet-symbol"
    assert any(f.rule_id == "MXNET-MALFORMED" and f.severity is Severity.HIGH for f in findings)


def test_graph_and_list_bounds_are_reported() -> None:
    from scanner.limits import Limits
    from scanner.rules import Policy

    graph = (BENIGN / "mlp-symbol.json").read_bytes()
    _, findings = scan_data(graph, "x-symbol.json", policy=Policy(limits=Limits(max_graph_nodes=3)))
    assert "LIMIT-EXCEEDED" in rule_ids(findings)
    params = (BENIGN / "mlp-0000.params").read_bytes()
    _, findings = scan_data(params, "x.params", policy=Policy(limits=Limits(max_array_items=2)))
    assert "LIMIT-EXCEEDED" in rule_ids(findings)
