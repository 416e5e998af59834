"""Containers: zip structure checks, torch/TorchScript routing, .npy headers, archives and streams."""

from __future__ import annotations

import gzip
import io
import struct
import tracemalloc
import zipfile
import zlib

import pytest

from conftest import FIXTURES, rule_ids, scan_data, scan_path
from scanner.engine import ScanContext, scan_source
from scanner.findings import Severity
from scanner.formats.numpy import npy
from scanner.formats.zip import structure as zs
from scanner.formats.zip.torch_legacy import is_legacy_torch
from scanner.rules import Policy, load_ruleset
from scanner.source import BytesSource

BENIGN = FIXTURES / "benign" / "containers"
HOSTILE = FIXTURES / "hostile" / "containers"
PAYLOAD = b"\x80\x02cos\nsystem\n(X\x0a\x00\x00\x00echo pwnedtR."


def _zip(items: list[tuple[str, bytes]], method: int = zipfile.ZIP_STORED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as z:
        for name, data in items:
            z.writestr(zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0)), data, compress_type=method)
    return buf.getvalue()


class CountingSource(BytesSource):
    """Records every byte range read, to prove what was never touched."""

    def __init__(self, data: bytes) -> None:
        super().__init__("counted.pt", None, data)
        self.reads: list[tuple[int, int]] = []

    def read_at(self, offset: int, n: int) -> bytes:
        self.reads.append((offset, n))
        return super().read_at(offset, n)


def _findings_of(data: bytes, name: str = "blob") -> list:
    return scan_data(data, name)[1]


# -- zip structure ------------------------------------------------------------------------------------------

def test_declared_2gb_bomb_is_found_without_inflating_it() -> None:
    data = (HOSTILE / "z02_zip_declared_2gb.zip").read_bytes()
    assert len(data) < 10_000
    tracemalloc.start()
    try:
        findings = _findings_of(data, "bomb.zip")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    bombs = [f for f in findings if f.rule_id == "ARCHIVE-BOMB"]
    assert bombs and bombs[0].severity is Severity.HIGH
    assert "2147483647" in bombs[0].message
    assert peak < 64 * 1024 * 1024  # only a bounded head was inflated, never the declared 2 GiB


def test_size_lie_is_caught_while_inflating() -> None:
    body = b"A" * 50_000
    data = bytearray(_zip([("x.bin", body)], zipfile.ZIP_DEFLATED))
    # declare 10 bytes in both headers: the stream produces more
    lho = data.index(b"PK\x03\x04")
    struct.pack_into("<I", data, lho + 22, 10)
    cdh = data.index(b"PK\x01\x02")
    struct.pack_into("<I", data, cdh + 24, 10)
    ids = rule_ids(_findings_of(bytes(data), "lie.zip"))
    assert "ZIP-HEADER-MISMATCH" in ids


def test_every_duplicate_copy_is_scanned_whichever_order() -> None:
    benign = b"\x80\x02}q\x00."
    for items in ([("m/data.pkl", benign), ("m/data.pkl", PAYLOAD)], [("m/data.pkl", PAYLOAD), ("m/data.pkl", benign)]):
        with pytest.warns(UserWarning):
            data = _zip(items)
        findings = _findings_of(data, "dup.pt")
        ids = rule_ids(findings)
        assert "ZIP-DUPLICATE-MEMBER" in ids
        assert any(f.severity is Severity.CRITICAL for f in findings), ids


def test_cloaked_local_header_is_scanned() -> None:
    findings = scan_path(HOSTILE / "t08_cloaked_member.pt").findings
    cloaked = [f for f in findings if f.rule_id == "ZIP-CLOAKED-MEMBER"]
    assert cloaked
    assert any(f.severity is Severity.CRITICAL and "cloaked@" in (f.location.member or "") for f in findings)


def test_name_mismatch_is_reported_and_central_name_still_scanned() -> None:
    report = scan_path(HOSTILE / "t01_name_mismatch.pt")
    ids = rule_ids(report.findings)
    assert "ZIP-NAME-MISMATCH" in ids
    assert any(f.severity is Severity.CRITICAL for f in report.findings)


def test_nested_zip_is_not_mistaken_for_a_second_end_record() -> None:
    inner = _zip([("a.txt", b"hello")])
    outer = _zip([("inner.zip", inner)])
    ids = rule_ids(_findings_of(outer, "outer.zip"))
    assert "ZIP-MULTIPLE-EOCD" not in ids and "ZIP-CLOAKED-MEMBER" not in ids


def test_central_directory_parse_is_linear_and_complete() -> None:
    items = [(f"m/{i}.txt", b"x") for i in range(3000)]
    data = _zip(items)
    layout = zs.parse_layout(BytesSource("z", None, data), max_members=10_000, max_cd_bytes=1 << 30)
    assert len(layout.entries) == 3000 and not layout.problems
    assert all(e.local is not None for e in layout.entries)


def test_member_limit_is_enforced() -> None:
    data = _zip([(f"{i}.txt", b"x") for i in range(50)])
    policy = Policy(limits=Policy().limits.with_overrides({"max_members": 10}))
    _, findings = scan_data(data, "many.zip", policy=policy)
    assert "LIMIT-EXCEEDED" in rule_ids(findings)


def test_truncated_zip_falls_back_to_local_headers() -> None:
    data = _zip([("m/data.pkl", PAYLOAD)])
    cut = data[: data.index(b"PK\x01\x02")]
    findings = _findings_of(cut, "cut.zip")
    ids = rule_ids(findings)
    assert "ZIP-MALFORMED" in ids and "ZIP-CLOAKED-MEMBER" in ids
    assert any(f.severity is Severity.CRITICAL for f in findings)


# -- torch --------------------------------------------------------------------------------------------------

def test_torch_zip_reads_no_storage_bytes() -> None:
    raw = (BENIGN / "state_dict.pt").read_bytes()
    src = CountingSource(raw)
    layout = zs.parse_layout(BytesSource("t", None, raw), max_members=100, max_cd_bytes=1 << 20)
    storages = [(e.local.data_offset, e.local.data_offset + e.csize) for e in layout.entries
                if "/data/" in e.name and e.local is not None]
    assert storages
    ctx = ScanContext(load_ruleset(), Policy())
    scan_source(src, ctx)
    for a, b in storages:
        # only the 6-byte .npy magic is peeked (np.load reads such a member as an array: soundness doc)
        touched = [(o, n) for o, n in src.reads if o < b and o + n > a and n < len(raw) and (o, n) != (a, 6)]
        assert not touched, f"storage bytes [{a},{b}) were read: {touched}"


def test_storage_that_looks_like_a_pickle_is_not_sniffed() -> None:
    items = []
    with zipfile.ZipFile(BENIGN / "state_dict.pt") as z:
        for info in z.infolist():
            items.append((info.filename, z.read(info)))
    # the first storage holds 12 float32s (48 bytes): make it start like a hostile pickle
    name, data = next((n, d) for n, d in items if n.endswith("/data/0"))
    fake = (PAYLOAD + b"\x00" * len(data))[: len(data)]
    data2 = _zip([(n, fake if n == name else d) for n, d in items])
    findings = _findings_of(data2, "storage.pt")
    assert not [f for f in findings if f.rule_id.startswith("PICKLE-") and (f.location.member or "").endswith("/data/0")]


def test_storage_size_mismatch() -> None:
    report = scan_path(HOSTILE / "t11_storage_size_mismatch.pt")
    hits = [f for f in report.findings if f.rule_id == "TORCH-STORAGE-SIZE-MISMATCH"]
    assert hits and "16384" in hits[0].message


def test_legacy_torch_is_detected_and_walked() -> None:
    head = (BENIGN / "state_dict_legacy.pt").read_bytes()[:64]
    assert is_legacy_torch(head)
    assert not is_legacy_torch(PAYLOAD)
    report = scan_path(BENIGN / "state_dict_legacy.pt")
    assert report.format == "torch-legacy"
    assert "TORCH-MALFORMED" not in rule_ids(report.findings)


def test_legacy_torch_trailing_bytes_are_reported_and_scanned() -> None:
    report = scan_path(HOSTILE / "t06_legacy_trailing_pickle.pt")
    ids = rule_ids(report.findings)
    assert "TORCH-MALFORMED" in ids
    assert any(f.severity is Severity.CRITICAL for f in report.findings)


def test_torchscript_code_rules() -> None:
    report = scan_path(HOSTILE / "t10_torchscript_code_from_file.pt")
    hits = [f for f in report.findings if f.rule_id == "TORCHSCRIPT-CODE-CALL"]
    assert hits and "from_file" in (hits[0].evidence or "")
    benign = scan_path(BENIGN / "torchscript_traced.pt")
    assert "TORCHSCRIPT-CODE-CALL" not in rule_ids(benign.findings)
    assert "TORCHSCRIPT-ARCHIVE" in rule_ids(benign.findings)


# -- numpy --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text,value", [
    ("{'descr': '<f8', 'fortran_order': False, 'shape': (3, 4), }", {"descr": "<f8", "fortran_order": False,
                                                                      "shape": (3, 4)}),
    ("{'shape': (5,), 'descr': [('a', '<i4'), ('b', '|O')], 'fortran_order': True}",
     {"shape": (5,), "descr": [("a", "<i4"), ("b", "|O")], "fortran_order": True}),
    ("{'shape': (), 'descr': '|u1', 'fortran_order': False}", {"shape": (), "descr": "|u1", "fortran_order": False}),
])
def test_npy_literal_parser_accepts_numpy_headers(text: str, value: object) -> None:
    assert npy.parse_literal(text) == value


@pytest.mark.parametrize("text", [
    "{'descr': __import__('os').system('echo pwned'), 'fortran_order': False, 'shape': ()}",
    "{'descr': '<f8', 'fortran_order': False, 'shape': (1+1,)}",
    "{'descr': '<f8', 'descr': '<f4', 'fortran_order': False, 'shape': ()}",
    "{'descr': '<f8' 'fortran_order': False}",
])
def test_npy_literal_parser_rejects_anything_else(text: str) -> None:
    with pytest.raises(npy.NpyError):
        npy.parse_literal(text)


def _npy(header: str, payload: bytes) -> bytes:
    h = header.encode("latin-1")
    pad = 64 - (10 + len(h) + 1) % 64
    h = h + b" " * pad + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(h)) + h + payload


def test_npy_size_checks() -> None:
    hdr = "{'descr': '<f4', 'fortran_order': False, 'shape': (4,), }"
    assert "NPY-MALFORMED" in rule_ids(_findings_of(_npy(hdr, b"\x00" * 8), "a.npy"))
    ids = rule_ids(_findings_of(_npy(hdr, b"\x00" * 16 + PAYLOAD), "a.npy"))
    assert {"NPY-TRAILING-DATA", "POLYGLOT"} <= ids
    assert not [f for f in _findings_of(_npy(hdr, b"\x00" * 16), "a.npy") if f.severity > Severity.INFO]


def test_npy_structured_object_field_is_a_pickle() -> None:
    hdr = "{'descr': [('a', '<i4'), ('b', '|O')], 'fortran_order': False, 'shape': (1,), }"
    findings = _findings_of(_npy(hdr, PAYLOAD), "s.npy")
    assert "NPY-OBJECT-ARRAY" in rule_ids(findings)
    assert any(f.severity is Severity.CRITICAL for f in findings)


# -- archives and streams --------------------------------------------------------------------------------------

def test_gzip_bomb_stops_at_the_ratio() -> None:
    report = scan_path(HOSTILE / "z02_gzip_bomb.pkl.gz")
    assert "ARCHIVE-BOMB" in rule_ids(report.findings)


def test_multi_member_gzip_and_trailing_bytes() -> None:
    data = gzip.compress(b"hello ", mtime=0) + gzip.compress(b"world", mtime=0)
    assert not [f for f in _findings_of(data, "x.gz") if f.severity > Severity.INFO]
    ids = rule_ids(_findings_of(gzip.compress(b"hello", mtime=0) + PAYLOAD, "x.gz"))
    assert "ARCHIVE-TRAILING-DATA" in ids


def test_joblib_old_zf_container() -> None:
    raw = PAYLOAD
    data = b"ZF" + hex(len(raw)).encode().ljust(19) + zlib.compress(raw)
    findings = _findings_of(data, "m.joblib")
    assert any(f.severity is Severity.CRITICAL for f in findings)


def test_legacy_torch_tar_storages_not_sniffed() -> None:
    report = scan_path(BENIGN / "legacy_tar.tar")
    members = {f.location.member for f in report.findings if f.rule_id == "PICKLE-TRAILING-DATA"}
    assert "storages" not in members and "tensors" not in members
    assert "TORCH-MALFORMED" not in rule_ids(report.findings)


def test_7z_is_never_clean() -> None:
    report = scan_path(HOSTILE / "z04_archive.7z")  # a 7z magic over garbage
    assert "ARCHIVE-MALFORMED" in rule_ids(report.findings)
