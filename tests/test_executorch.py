"""ExecuTorch `.pte` programs: detected by content, operators and delegates judged, every offset bounded."""

from __future__ import annotations

import struct

from conftest import FIXTURES, rule_ids, scan_data
from scanner.findings import Severity
from scanner.formats.executorch.program import is_pte, read_program
from scanner.source import BytesSource

BENIGN = FIXTURES / "benign" / "executorch"
HOSTILE = FIXTURES / "hostile" / "executorch"
LINEAR = (BENIGN / "linear.pte").read_bytes()
XNN = (BENIGN / "linear_xnnpack.pte").read_bytes()
CUSTOM = (HOSTILE / "custom_op.pte").read_bytes()


def _loud(findings) -> list[tuple[str, str]]:
    return [(f.rule_id, f.message) for f in findings if f.severity >= Severity.MEDIUM]


def test_honest_programs_are_read_and_clean_under_any_name() -> None:
    for data in (LINEAR, XNN):
        for name in ("model.pte", "model.bin", "x"):
            fmt, findings = scan_data(data, name)
            assert fmt == "executorch"
            assert not _loud(findings), findings
            assert "EXECUTORCH-PROGRAM" in rule_ids(findings)
    prog = read_program(BytesSource("m", None, LINEAR), 1000)
    assert {n for _, n, _ in prog.operators} == {"aten::addmm", "aten::permute_copy"}
    prog = read_program(BytesSource("m", None, XNN), 1000)
    assert [d[1] for d in prog.delegates] == ["XnnpackBackend"] and prog.header is not None
    assert not prog.problems


def test_custom_namespace_is_medium_with_the_operator_as_evidence() -> None:
    _, findings = scan_data(CUSTOM, "m.pte")
    hits = [f for f in findings if f.rule_id == "EXECUTORCH-CUSTOM-OP"]
    assert len(hits) == 1 and hits[0].severity is Severity.MEDIUM
    assert "modelseal_demo::shout" in (hits[0].evidence or "")
    # the namespace decides: the same bytes naming a namespace ExecuTorch's kernels register are not flagged
    renamed = CUSTOM.replace(b"modelseal_demo::shout", b"executorch_prim::shou")  # same length
    assert renamed != CUSTOM
    fmt, findings = scan_data(renamed, "m.pte")
    assert fmt == "executorch" and "EXECUTORCH-CUSTOM-OP" not in rule_ids(findings)


def test_unknown_delegate_backend_is_medium_and_xnnpack_is_not() -> None:
    _, findings = scan_data((HOSTILE / "unknown_delegate.pte").read_bytes(), "m.pte")
    hits = [f for f in findings if f.rule_id == "EXECUTORCH-UNKNOWN-DELEGATE"]
    assert hits and hits[0].severity is Severity.MEDIUM and "ShadowBackend" in hits[0].message
    _, findings = scan_data(XNN.replace(b"XnnpackBackend", b"XnnpackBackenD"), "m.pte")
    assert "EXECUTORCH-UNKNOWN-DELEGATE" in rule_ids(findings)


def test_out_of_bounds_segments_and_indices_are_high() -> None:
    for name in ("segment_out_of_bounds.pte", "delegate_index_out_of_bounds.pte"):
        _, findings = scan_data((HOSTILE / name).read_bytes(), "m.pte")
        hits = [f for f in findings if f.rule_id == "EXECUTORCH-OUT-OF-BOUNDS"]
        assert hits and all(f.severity is Severity.HIGH for f in hits), name


def test_extended_header_sizes_are_checked_against_the_file() -> None:
    assert XNN[8:12] == b"eh00"
    for field, value in ((24, len(XNN)), (16, len(XNN) + 64)):  # segment data size, segment base offset
        data = bytearray(XNN)
        struct.pack_into("<Q", data, field, value)
        _, findings = scan_data(bytes(data), "m.pte")
        assert "EXECUTORCH-OUT-OF-BOUNDS" in rule_ids(findings), field
    data = bytearray(XNN)
    struct.pack_into("<Q", data, 16, len(XNN) * 4)  # program_size past the end: nothing can be parsed
    _, findings = scan_data(bytes(data), "m.pte")
    assert "EXECUTORCH-OUT-OF-BOUNDS" in rule_ids(findings)


def test_truncated_or_corrupt_flatbuffers_fail_closed() -> None:
    for cut in (12, 40, len(LINEAR) // 2, len(LINEAR) - 8):
        fmt, findings = scan_data(LINEAR[:cut], "m.pte")
        assert fmt != "executorch" or "EXECUTORCH-OUT-OF-BOUNDS" in rule_ids(findings), cut
    data = bytearray(LINEAR)
    root = struct.unpack_from("<I", data, 0)[0]
    struct.pack_into("<i", data, root, -0x7FFFFFF0)  # vtable far outside the file
    _, findings = scan_data(bytes(data), "m.pte")
    assert "EXECUTORCH-OUT-OF-BOUNDS" in rule_ids(findings)


def test_other_schema_versions_are_not_data() -> None:
    fmt, findings = scan_data(LINEAR[:4] + b"ET99" + LINEAR[8:], "m.pte")
    assert fmt == "executorch" and "EXECUTORCH-MALFORMED" in rule_ids(findings)


def test_header_test_needs_identifier_and_a_root_inside_the_file() -> None:
    assert is_pte(LINEAR[:8], len(LINEAR))
    assert not is_pte(LINEAR[:4] + b"TFL3", len(LINEAR))
    assert not is_pte(struct.pack("<I", len(LINEAR) + 4) + b"ET12", len(LINEAR))
    assert not is_pte(struct.pack("<I", 2) + b"ET12", len(LINEAR))


def test_identifier_behind_another_format_is_scanned_as_a_polyglot() -> None:
    # a root offset of 0x280 spells a pickle PROTO opcode: the pickle sniff wins, the runtime still reads
    # ET12 at 4..8, so the program is scanned too (here its root table is garbage: out of bounds)
    data = b"\x80\x02\x00\x00ET12" + b"\x00" * 0x300
    fmt, findings = scan_data(data, "m.pte")
    assert fmt != "executorch"
    assert {"POLYGLOT", "EXECUTORCH-OUT-OF-BOUNDS"} <= rule_ids(findings)
