"""Keras 2 `keras_metadata.pb`: detected by content, every node's layer config through the Keras checks."""

from __future__ import annotations

import json

from conftest import FIXTURES, rule_ids, scan_data, scan_path
from scanner.findings import Severity, Verdict
from scanner.limits import Limits
from scanner.protowire import encode_varint
from scanner.rules import Policy

BENIGN = FIXTURES / "benign" / "tensorflow" / "keras2_dense"
HOSTILE = FIXTURES / "hostile" / "tensorflow" / "keras2_lambda"


def _field(num: int, payload: bytes) -> bytes:
    return encode_varint(num << 3 | 2) + encode_varint(len(payload)) + payload


def _node(node_id: int, path: str, identifier: str, metadata: object) -> bytes:
    body = (encode_varint(2 << 3) + encode_varint(node_id)) if node_id else b""
    meta = metadata if isinstance(metadata, bytes) else json.dumps(metadata).encode()
    return _field(1, body + _field(3, path.encode()) + _field(4, identifier.encode()) + _field(5, meta))


def test_real_metadata_is_detected_by_content_and_clean() -> None:
    data = (BENIGN / "keras_metadata.pb").read_bytes()
    fmt, findings = scan_data(data, "renamed")
    assert fmt == "keras-metadata"
    assert all(f.severity <= Severity.INFO for f in findings)
    assert any(f.rule_id == "KERAS-METADATA" and "0 nodes" not in f.message for f in findings)


def test_lambda_written_by_tf_keras_is_critical_once() -> None:
    report = scan_path(HOSTILE / "keras_metadata.pb")
    lam = [f for f in report.findings if f.rule_id == "KERAS-LAMBDA"]
    assert report.verdict is Verdict.MALICIOUS
    assert len(lam) == 1 and "modelseal-keras2-canary" in (lam[0].evidence or "")


def test_lambda_only_in_a_layer_node_is_found() -> None:
    root = _node(0, "root", "_tf_keras_sequential", {"class_name": "Sequential", "config": {"layers": []}})
    layer = _node(3, "root.layer-2", "_tf_keras_layer",
                  {"class_name": "Lambda", "config": {"name": "l", "function": "os.system", "function_type": "raw",
                                                      "module": "os"}})
    fmt, findings = scan_data(root + layer, "keras_metadata.pb")
    assert fmt == "keras-metadata"
    assert rule_ids(findings) & {"KERAS-LAMBDA", "KERAS-UNSAFE-MODULE", "KERAS-DANGEROUS-FUNCTION"}
    assert any(f.severity >= Severity.HIGH for f in findings)


def test_metadata_that_is_not_json_is_malformed() -> None:
    data = _node(0, "root", "_tf_keras_model", b"{not json")
    fmt, findings = scan_data(data, "keras_metadata.pb")
    assert fmt == "keras-metadata" and "TF-MALFORMED" in rule_ids(findings)


def test_field_budget_is_reported() -> None:
    data = (BENIGN / "keras_metadata.pb").read_bytes()
    fmt, findings = scan_data(data, "keras_metadata.pb", policy=Policy(limits=Limits(max_proto_fields=5)))
    assert fmt == "keras-metadata" and "LIMIT-EXCEEDED" in rule_ids(findings)


def test_other_protobufs_are_not_keras_metadata() -> None:
    graph_def = _field(1, _field(1, b"x") + _field(2, b"Placeholder"))  # a GraphDef node
    assert scan_data(graph_def, "g.pb")[0] != "keras-metadata"
    assert scan_data((FIXTURES / "benign" / "tensorflow" / "module_dense" / "saved_model.pb").read_bytes(),
                     "s.pb")[0] == "tensorflow"


def test_fields_protobuf_skips_do_not_hide_the_file() -> None:
    """tf_keras parses with protobuf, which skips undeclared fields and wrong wire types: padding a node or
    the top level with them must not turn the file into data."""
    lam = {"class_name": "Lambda", "config": {"name": "l", "function": "os.system", "function_type": "raw",
                                              "module": "os"}}
    node = _node(3, "root.layer-2", "_tf_keras_layer", lam)
    inner = node[1 + len(encode_varint(len(node) - 2)):]  # the SavedObject message inside `node`
    padded_node = _field(1, _field(9, b"junk") + inner)
    for data in (padded_node, _field(7, b"junk") + node, encode_varint(3 << 3) + b"\x05" + node):
        fmt, findings = scan_data(data, "keras_metadata.pb")
        assert fmt == "keras-metadata"
        assert any(f.severity >= Severity.HIGH and f.rule_id.startswith("KERAS-") for f in findings)
