"""Flax msgpack checkpoints: detected by content, walked as msgpack_restore reads them, bounded."""

from __future__ import annotations

import struct

from conftest import FIXTURES, rule_ids, scan_data, scan_path
from scanner.findings import Severity, Verdict
from scanner.limits import Limits
from scanner.rules import Policy

BENIGN = FIXTURES / "benign" / "flax"
HOSTILE = FIXTURES / "hostile" / "flax"


def _str(s: str) -> bytes:
    b = s.encode()
    return bytes([0xA0 | len(b)]) + b if len(b) < 32 else b"\xd9" + bytes([len(b)]) + b


def _bin(b: bytes) -> bytes:
    return b"\xc4" + bytes([len(b)]) + b if len(b) < 256 else b"\xc5" + struct.pack(">H", len(b)) + b


def _map(*pairs: tuple[bytes, bytes]) -> bytes:
    return bytes([0x80 | len(pairs)]) + b"".join(k + v for k, v in pairs)


def _array(*items: bytes) -> bytes:
    return bytes([0x90 | len(items)]) + b"".join(items)


def _ext(code: int, payload: bytes) -> bytes:
    return b"\xc7" + bytes([len(payload)]) + struct.pack(">b", code) + payload


def _ndarray(shape: tuple[int, ...], dtype: bytes, buf: bytes) -> bytes:
    return _ext(1, _array(_array(*(bytes([d]) for d in shape)), _bin(dtype), _bin(buf)))


def _findings(data: bytes, **kw: object) -> tuple[str, set[str], list]:
    fmt, findings = scan_data(data, "ckpt", **kw)  # type: ignore[arg-type]
    return fmt, rule_ids(findings), findings


def test_real_checkpoints_are_detected_and_clean() -> None:
    for name in ("mlp.msgpack", "train_state_chunked.msgpack"):
        report = scan_path(BENIGN / name)
        assert report.format == "msgpack" and report.verdict is Verdict.CLEAN
        summary = [f for f in report.findings if f.rule_id == "FLAX-CHECKPOINT"]
        assert summary and "float32" in summary[0].message and not summary[0].message.startswith(
            "msgpack checkpoint walked: 0 arrays")
    chunked = [f for f in scan_path(BENIGN / "train_state_chunked.msgpack").findings if f.rule_id == "FLAX-CHECKPOINT"]
    assert " 0 chunked" not in chunked[0].message and "bfloat16" in chunked[0].message


def test_content_decides_not_the_name() -> None:
    data = (BENIGN / "mlp.msgpack").read_bytes()
    fmt, _, _ = _findings(data)
    assert fmt == "msgpack"


def test_object_dtype_is_flagged_with_its_spelling() -> None:
    for dtype in (b"O", b"object", b"i4,O", b"<O8"):
        fmt, ids, findings = _findings(_map((_str("w"), _ndarray((1,), dtype, b"\0" * 8))))
        assert fmt == "msgpack"
        assert "FLAX-OBJECT-DTYPE" in ids, dtype
        assert any(f.severity is Severity.MEDIUM for f in findings if f.rule_id == "FLAX-OBJECT-DTYPE")


def test_structured_dtype_spec_with_object_field() -> None:
    spec = _array(_array(_str("a"), _str("O")))
    payload = _array(_array(b"\x01"), spec, _bin(b"\0" * 8))
    _, ids, _ = _findings(_map((_str("w"), _ext(1, payload))))
    assert "FLAX-OBJECT-DTYPE" in ids


def test_unusual_dtype_is_low_and_numeric_dtype_clean() -> None:
    _, ids, findings = _findings(_map((_str("w"), _ndarray((1,), b"V8", b"\0" * 8))))
    assert "FLAX-DTYPE" in ids
    _, ids, findings = _findings(_map((_str("w"), _ndarray((2,), b"float32", b"\0" * 8))))
    assert not ids - {"FLAX-CHECKPOINT"}


def test_buffer_that_does_not_fill_the_shape_is_malformed() -> None:
    _, ids, _ = _findings(_map((_str("w"), _ndarray((3,), b"float32", b"\0" * 8))))
    assert "FLAX-MALFORMED" in ids


def test_foreign_ext_and_timestamp_are_reported() -> None:
    _, ids, _ = _findings(_map((_str("w"), _ext(42, b"zz"))))
    assert "FLAX-EXT-TYPE" in ids
    _, ids, findings = _findings(_map((_str("t"), b"\xd6\xff" + b"\0\0\0\1")))
    assert "FLAX-EXT-TYPE" in ids and "Timestamp" in next(f.message for f in findings if f.rule_id == "FLAX-EXT-TYPE")


def test_pickle_in_a_bytes_leaf_is_scanned() -> None:
    report = scan_path(HOSTILE / "pickle_leaf.msgpack")
    assert report.verdict is Verdict.MALICIOUS
    hit = [f for f in report.findings if f.rule_id == "PICKLE-DANGEROUS-CALL"]
    assert hit and "opt_state" in (hit[0].location.member or "")


def test_chunked_array_without_chunks_is_malformed() -> None:
    _, ids, _ = _findings(_map((_str("w"), _map((_str("__msgpack_chunked_array__"), b"\xc3"),
                                               (_str("shape"), _map((_str("0"), b"\x02")))))))
    assert "FLAX-MALFORMED" in ids


def test_non_utf8_string_is_malformed() -> None:
    _, ids, _ = _findings(_map((_str("w"), b"\xa2\xff\xfe")))
    assert "FLAX-MALFORMED" in ids


def test_trailing_bytes_are_not_msgpack_but_never_pass_silently() -> None:
    data = (BENIGN / "mlp.msgpack").read_bytes() + b"\x00"
    fmt, findings = scan_data(data, "ckpt")
    # msgpack.unpackb refuses trailing bytes (ExtraData): not a checkpoint any loader reads
    assert fmt != "msgpack"


def test_depth_and_item_bounds_are_reported() -> None:
    deep = b"\x91" * 300 + b"\x01"
    fmt, ids, findings = _findings(deep)
    assert fmt == "msgpack" and "LIMIT-EXCEEDED" in ids
    many = b"\xdc" + struct.pack(">H", 5000) + b"\x01" * 5000
    policy = Policy(limits=Limits(max_array_items=1000))
    fmt, ids, _ = _findings(many, policy=policy)
    assert fmt == "msgpack" and "LIMIT-EXCEEDED" in ids


def test_counts_that_cannot_fit_are_refused() -> None:
    lie = b"\xdd" + struct.pack(">I", 0xFFFFFFFF) + b"\x01"
    fmt, _, _ = _findings(lie)
    assert fmt != "msgpack"  # msgpack-python refuses it too (the bytes cannot hold the elements)
    # inside an ndarray ext, a buffer length past the payload ends that array with a finding, not a crash
    payload = _array(_array(b"\x01"), _bin(b"float32"), b"\xc6" + struct.pack(">I", 1 << 30) + b"\0" * 4)
    fmt, ids, _ = _findings(_map((_str("w"), _ext(1, payload))))
    assert fmt == "msgpack" and "FLAX-MALFORMED" in ids


def test_msgpack_numpy_object_array_is_a_pickle_the_decoder_runs() -> None:
    report = scan_path(HOSTILE / "msgpack_numpy_object.msgpack")
    ids = rule_ids(report.findings)
    assert {"MSGPACK-NUMPY-PICKLE", "PICKLE-DANGEROUS-CALL"} <= ids
    assert scan_path(BENIGN / "msgpack_numpy_arrays.msgpack").verdict is Verdict.CLEAN


def test_tiny_msgpack_numpy_pickle_is_scanned_even_below_the_leaf_threshold() -> None:
    tiny = b"cos\nsystem\n(S'x'\ntR."  # 21 bytes, protocol 0
    data = _map((_str("m"), _map((b"\xc4\x02nd", b"\xc3"), (b"\xc4\x04kind", b"\xc4\x01O"), (b"\xc4\x04data",
                                                                                              _bin(tiny)))))
    _, ids, _ = _findings(data)
    assert "MSGPACK-NUMPY-PICKLE" in ids and "PICKLE-DANGEROUS-CALL" in ids


def test_findings_before_a_limit_are_kept() -> None:
    big = b"x" * 5000
    data = _map((_str("a"), _map((_str("w"), _ext(42, b"zz")))), (_str("b"), b"\xda" + struct.pack(">H", len(big)) + big))
    _, ids, _ = _findings(data, policy=Policy(limits=Limits(max_string_bytes=1000)))
    assert {"FLAX-EXT-TYPE", "LIMIT-EXCEEDED"} <= ids


def test_long_arrays_of_plain_values_are_walked_exactly() -> None:
    """The fast path over runs of numbers and short strings stops at anything else and at the end."""
    plain = [b"\x01", b"\xff", b"\xcb" + struct.pack(">d", 1.5), _str("ab"), b"\xc0", b"\xc3",
             b"\xcd\x01\x2c", _str("é"), b"\xd9\x03abc"]
    items = plain * 500 + [_map((_str("x"), _ext(42, b"zz")))] + plain * 3
    data = b"\xdc" + struct.pack(">H", len(items)) + b"".join(items)
    fmt, ids, findings = _findings(data)
    assert fmt == "msgpack" and "FLAX-EXT-TYPE" in ids and "FLAX-MALFORMED" not in ids
    hit = next(f for f in findings if f.rule_id == "FLAX-EXT-TYPE")
    assert f"[{len(plain) * 500}]/x" in hit.message
    for before, after in ((1, 1), (100, 100)):  # near the end (general path) and inside a run (fast path)
        bad = b"\xdc" + struct.pack(">H", before + 1 + after) + b"\x01" * before + b"\xa2\xff\xfe" + b"\x02" * after
        _, ids, _ = _findings(bad)
        assert "FLAX-MALFORMED" in ids
    short = data[:-1]  # one byte missing: not a whole value any more
    assert _findings(short)[0] != "msgpack"
