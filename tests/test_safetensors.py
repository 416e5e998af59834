from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from conftest import FIXTURES, rule_ids, scan_data, scan_path
from scanner.findings import Severity
from scanner.limits import Limits
from scanner.rules import Policy
from scanner.source import FileSource

BENIGN = FIXTURES / "benign" / "safetensors"
HOSTILE = FIXTURES / "hostile" / "safetensors"
# findings that mean "the reference loader refuses this file"
REJECTED = {"SAFETENSORS-HEADER-LENGTH", "SAFETENSORS-MALFORMED", "SAFETENSORS-BAD-DTYPE", "SAFETENSORS-BAD-SHAPE",
            "SAFETENSORS-SPAN-MISMATCH", "SAFETENSORS-OFFSET-RANGE", "SAFETENSORS-OVERLAP", "SAFETENSORS-GAP",
            "SAFETENSORS-TRAILING-DATA", "SAFETENSORS-POLYGLOT", "SAFETENSORS-METADATA-TYPE"}


def build(header: dict | str, data: bytes = b"") -> bytes:
    raw = (json.dumps(header) if isinstance(header, dict) else header).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + data


def t(dtype: str, shape: list, begin: int, end: int) -> dict:
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}


@pytest.mark.parametrize("path", sorted(BENIGN.glob("*.safetensors")), ids=lambda p: p.name)
def test_benign_files_are_clean(path: Path) -> None:
    report = scan_path(path)
    assert report.format == "safetensors"
    assert [f for f in report.findings if f.severity > Severity.INFO] == []


def _all_fixtures() -> list[Path]:
    return sorted(BENIGN.glob("*.safetensors")) + sorted(HOSTILE.glob("*.safetensors"))


@pytest.mark.parametrize("path", _all_fixtures(), ids=lambda p: p.name)
def test_verdicts_line_up_with_the_reference_loader(path: Path) -> None:
    """What safetensors (Rust) accepts carries no rejection finding; what it refuses carries one."""
    safetensors = pytest.importorskip("safetensors")
    try:
        with safetensors.safe_open(str(path), framework="numpy") as f:
            list(f.keys())
        accepted = True
    except Exception:  # noqa: BLE001 - any refusal counts
        accepted = False
    ids = rule_ids(scan_path(path).findings)
    if accepted:
        assert not ids & REJECTED, ids
    else:
        # a duplicate struct field is refused by serde; we report it as a duplicate key
        assert ids & (REJECTED | {"SAFETENSORS-DUPLICATE-KEY"}), ids


def test_writer_output_round_trips_through_our_parser(tmp_path: Path) -> None:
    np = pytest.importorskip("numpy")
    st_numpy = pytest.importorskip("safetensors.numpy")
    path = tmp_path / "m.safetensors"
    st_numpy.save_file({f"t{i}": np.zeros((i, 3), dtype=np.float16) for i in range(6)}, str(path),
                       metadata={"format": "np", "note": "plain text"})
    assert scan_path(path).findings == ()


@pytest.mark.parametrize("name,severity", [
    ("f04_metadata_python_code", "low"), ("f04_metadata_jinja", "low"), ("f04_metadata_script", "low"),
    ("f04_metadata_b64_pickle", "medium"), ("f04_metadata_pipeline_hijack", "medium"),
])
def test_code_like_metadata_is_reported_with_the_key(name: str, severity: str) -> None:
    report = scan_path(HOSTILE / f"{name}.safetensors")
    hits = [f for f in report.findings if f.rule_id == "SAFETENSORS-METADATA-CODE"]
    assert hits and max(f.severity.rank for f in hits) == Severity(severity).rank
    assert all(f.evidence and f.evidence.startswith("key=") for f in hits)


def test_format_pt_metadata_is_fine() -> None:
    _, findings = scan_data(build({"__metadata__": {"format": "pt"}, "a": t("U8", [2], 0, 2)}, b"ab"))
    assert findings == []


def test_duplicate_key_names_the_key_and_keeps_the_last() -> None:
    hdr = '{"w":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"w":{"dtype":"U8","shape":[2],"data_offsets":[2,4]}}'
    _, findings = scan_data(build(hdr, b"abcd"))
    dup = [f for f in findings if f.rule_id == "SAFETENSORS-DUPLICATE-KEY"]
    assert dup and dup[0].evidence == "w"
    # the first entry's bytes are now covered by nothing: the loader's view has a gap at 0
    assert "SAFETENSORS-GAP" in rule_ids(findings)


def test_polyglot_tail_is_scanned_as_its_own_member() -> None:
    report = scan_path(HOSTILE / "f03_trailing_pickle.safetensors")
    inner = [f for f in report.findings if f.location.member and f.location.member.startswith("trailing@")]
    assert inner, "the pickle riding behind the tensors must be analyzed, not only sniffed"


def test_finding_count_is_capped() -> None:
    hdr = {f"t{i}": t("U8", [4], 0, 4) for i in range(200)}
    _, findings = scan_data(build(hdr, b"abcd"))
    overlaps = [f for f in findings if f.rule_id == "SAFETENSORS-OVERLAP"]
    assert 2 <= len(overlaps) <= 25
    assert any("more" in f.message for f in overlaps)


def test_header_limit_is_configurable() -> None:
    data = build({"a": t("U8", [2], 0, 2), "__metadata__": {"x": "y" * 200}}, b"ab")
    _, findings = scan_data(data, policy=Policy(limits=Limits(max_header_bytes=64)))
    assert "SAFETENSORS-HEADER-LENGTH" in rule_ids(findings)
    _, findings = scan_data(data)
    assert findings == []


@pytest.mark.parametrize("data", [
    b"[1, 2, 3]\n" * 3,
    b'{"a":1}\n{"b":2}\n{"c":3}\n',
    b"\x01\x00\x00\x00\x00\x00\x00\x00[",
])
def test_text_and_json_lines_are_not_routed_here(data: bytes) -> None:
    fmt, findings = scan_data(data, "x.jsonl")
    assert fmt != "safetensors"
    assert not any(f.rule_id.startswith("SAFETENSORS") for f in findings)


def test_lying_lengths_are_still_routed_here() -> None:
    body = json.dumps({"a": t("U8", [2], 0, 2)}).encode()
    for n in (0, 1, len(body) + 100, 1 << 40, (1 << 64) - 1):
        fmt, findings = scan_data(struct.pack("<Q", n) + body + b"ab", "m.bin")
        assert fmt == "safetensors", n
        assert "SAFETENSORS-HEADER-LENGTH" in rule_ids(findings)


def test_prefixes_never_pass_and_never_crash() -> None:
    data = (BENIGN / "torch_mixed_dtypes.safetensors").read_bytes()
    for cut in range(0, len(data), 3):
        fmt, findings = scan_data(data[:cut], "m.safetensors")
        ids = rule_ids(findings)
        assert "SCAN-INTERNAL-ERROR" not in ids, cut
        if fmt == "safetensors":
            assert any(f.severity >= Severity.MEDIUM for f in findings), cut


class CountingSource(FileSource):
    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.bytes_read = 0

    def read_at(self, offset: int, n: int) -> bytes:
        out = super().read_at(offset, n)
        self.bytes_read += len(out)
        return out


def test_two_gigabyte_sparse_file_reads_only_the_header(tmp_path: Path) -> None:
    from scanner.engine import ScanContext, scan_source
    from scanner.rules import load_ruleset

    n_elems = (2 << 30) // 4
    header = build({"__metadata__": {"format": "pt"}, "big": t("F32", [n_elems], 0, n_elems * 4)})
    path = tmp_path / "big.safetensors"
    with open(path, "wb") as fh:
        fh.write(header)
        fh.truncate(len(header) + n_elems * 4)  # sparse: no disk cost
    src = CountingSource(path)
    try:
        fmt, findings = scan_source(src, ScanContext(load_ruleset(), Policy()))
    finally:
        src.close()
    assert fmt == "safetensors"
    assert findings == []
    assert src.bytes_read < 1 << 20, src.bytes_read  # header + sniffing, flat in the file size


# -- red-team variants ----------------------------------------------------------------------------------

F32 = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}
PICKLE = b"\x80\x04\x95\x1e\x00\x00\x00\x00\x00\x00\x00\x8c\x02os\x94\x8c\x06system\x94\x93\x94\x8c\x0aecho pwned" \
    b"\x94\x85\x94R\x94."


def test_header_over_the_reference_cap_is_reported_without_reading_it(tmp_path: Path) -> None:
    n = 100_000_001  # the Rust loader refuses > 100,000,000; the scanner's own limit is 100 MiB
    path = tmp_path / "big.safetensors"
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", n) + b'{"a":')
        fh.truncate(8 + n)
    findings = scan_path(path).findings
    assert any(f.rule_id == "SAFETENSORS-HEADER-LENGTH" and "reference" in f.message for f in findings)


def test_names_with_nul_collide_for_c_readers() -> None:
    header = {"w": F32, "w\u0000x": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}}
    _, findings = scan_data(build(header, b"\0" * 16), "m.safetensors")
    msgs = [f.message for f in findings if f.rule_id == "SAFETENSORS-SUSPICIOUS-NAME"]
    assert any("control characters" in m for m in msgs) and any("read as 'w'" in m for m in msgs)


@pytest.mark.parametrize("pad", [b" " * 8, b"\0" * 56, b"\n"])
def test_pickle_after_padding_is_a_polyglot(pad: bytes) -> None:
    _, findings = scan_data(build({"w": F32}, b"\0" * 8 + pad + PICKLE), "m.safetensors")
    ids = rule_ids(findings)
    assert {"SAFETENSORS-TRAILING-DATA", "SAFETENSORS-POLYGLOT", "PICKLE-DANGEROUS-CALL"} <= ids


def test_padding_alone_is_not_a_polyglot() -> None:
    _, findings = scan_data(build({"w": F32}, b"\0" * 8 + b" " * 16), "m.safetensors")
    assert "SAFETENSORS-POLYGLOT" not in rule_ids(findings)


def test_bom_before_the_header_is_malformed_not_text() -> None:
    raw = ("\ufeff" + json.dumps({"w": F32})).encode()
    fmt, findings = scan_data(struct.pack("<Q", len(raw)) + raw + b"\0" * 8, "m.safetensors")
    assert fmt == "safetensors" and "SAFETENSORS-MALFORMED" in rule_ids(findings)


@pytest.mark.parametrize("extra,flagged", [(0, False), (1, True)])
def test_header_length_exactly_at_the_limit(extra: int, flagged: bool) -> None:
    data = build({"w": F32}, b"\0" * 8)
    (n,) = struct.unpack("<Q", data[:8])
    _, findings = scan_data(data, "m.safetensors", policy=Policy(limits=Limits(max_header_bytes=n - extra)))
    assert ("SAFETENSORS-HEADER-LENGTH" in rule_ids(findings)) is flagged
