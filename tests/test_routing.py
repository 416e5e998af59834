from __future__ import annotations

import io
import tarfile

from scanner.sniff import joblib_zf_length
from tests.conftest import rule_ids, scan_data

P0 = b"cos\nsystem\n(S'echo pwned'\ntR."


def test_zf_length_follows_int_base16() -> None:
    assert joblib_zf_length(b"ZF" + b"0X" + b"0" * 15 + b"1f") == 0x1F
    assert joblib_zf_length(b"ZF" + b" " * 17 + b"1f") == 0x1F
    assert joblib_zf_length(b"ZF" + b"zz" + b"0" * 17) is None
    assert joblib_zf_length(b"ZF0x1") is None


def test_tar_whose_name_is_a_pickle_is_scanned_as_both() -> None:
    info = tarfile.TarInfo(P0.decode("latin-1"))
    info.size = 1
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        tar.addfile(info, io.BytesIO(b"x"))
    fmt, findings = scan_data(buf.getvalue(), "m.tar")
    assert fmt == "tar"
    assert {"POLYGLOT", "PICKLE-DANGEROUS-CALL"} <= rule_ids(findings)


def test_plain_tar_has_no_leading_pickle() -> None:
    info = tarfile.TarInfo("weights/w.txt")
    info.size = 1
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        tar.addfile(info, io.BytesIO(b"x"))
    assert "POLYGLOT" not in rule_ids(scan_data(buf.getvalue(), "m.tar")[1])


def test_lz4_frame_is_sniffed_and_never_clean_when_broken() -> None:
    fmt, findings = scan_data(b"\x04\x22\x4d\x18" + b"\x00" * 12, "m.joblib")
    assert fmt == "lz4"
    assert "ARCHIVE-MALFORMED" in rule_ids(findings)
