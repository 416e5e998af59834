"""Standard layouts honest producers write (issue 9 item 2/3) are not attacks; their hostile twins still are.
The fixtures (fixtures/gen_honest_layouts.py) are checked by test_fixture_manifests; these tests pin the
boundaries of each rule."""

from __future__ import annotations

import importlib.util
import io
import json
import pickle
import struct
import sys
import zipfile
import zlib
from pathlib import Path

import pytest

from conftest import FIXTURES, rule_ids, scan_data, scan_path
from scanner.findings import Severity
from scanner.formats.tensorflow.tflite import is_tflite

ROOT = Path(__file__).resolve().parent.parent
TFL = (FIXTURES / "benign" / "honest_layouts" / "tflite_no_metadata.tflite").read_bytes()
EVIL = b"cos\nsystem\n(S'echo pwned'\ntR."


def _append_zip(head: bytes, files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO(head)
    buf.seek(0, io.SEEK_END)
    with zipfile.ZipFile(buf, "a") as z:
        for n, d in files.items():
            z.writestr(n, d)
    return buf.getvalue()


def _loud(findings) -> list[tuple[str, str]]:
    return [(f.rule_id, f.severity.value) for f in findings if f.severity >= Severity.MEDIUM]


# -- TFLite -------------------------------------------------------------------------------------------------

def test_tflite_header_needs_identifier_and_a_root_inside_the_file() -> None:
    assert is_tflite(TFL[:8], len(TFL))
    assert not is_tflite(TFL[:4] + b"TFL2", len(TFL))
    assert not is_tflite(struct.pack("<I", len(TFL) + 4) + b"TFL3", len(TFL))  # root past the end
    assert not is_tflite(struct.pack("<I", 2) + b"TFL3", len(TFL))              # inside the header
    assert not is_tflite(b"TFL3", 100)


def test_tflite_with_labels_is_info_not_polyglot() -> None:
    fmt, findings = scan_data(_append_zip(TFL, {"labels.txt": b"cat\ndog\n"}), "m.tflite")
    assert fmt == "tflite"
    assert "TFLITE-ASSOCIATED-FILES" in rule_ids(findings)
    assert not _loud(findings)


def test_the_same_zip_after_non_tflite_data_stays_a_polyglot() -> None:
    blob = struct.pack("<I", 10**9) + b"TFL3" + bytes(64)  # identifier, but no flatbuffer root inside
    fmt, findings = scan_data(_append_zip(blob, {"labels.txt": b"cat\n"}), "m.tflite")
    assert fmt != "tflite"
    assert ("POLYGLOT", "high") in _loud(findings)


@pytest.mark.parametrize("name,data", [
    ("labels.bin", pickle.dumps({"a": 1}, protocol=2)),       # content a pickle loader takes
    ("labels.txt", zlib.compress(b"x" * 100)),                 # code-bearing container content
    ("vocab.npy", b"plain text\n"),                            # a loader's extension
    ("assets/config.json", b'{"class_name": "Sequential"}'),   # a name Keras reads from any zip
    ("archive/data.pkl", b"text\n"),                           # a torch record name
])
def test_members_outside_the_convention_keep_polyglot(name: str, data: bytes) -> None:
    _, findings = scan_data(_append_zip(TFL, {"labels.txt": b"a\n", name: data}), "m.tflite")
    assert ("POLYGLOT", "high") in _loud(findings)
    assert "TFLITE-ASSOCIATED-FILES" not in rule_ids(findings)


def test_hostile_member_is_scanned_inside_tflite_metadata() -> None:
    _, findings = scan_data(_append_zip(TFL, {"labels.txt": b"a\n", "model.pkl": EVIL}), "m.tflite")
    assert ("PICKLE-DANGEROUS-CALL", "critical") in _loud(findings)


def test_tflite_member_findings_survive_the_downgrade() -> None:
    # a CRC mismatch in an otherwise conventional metadata zip is still reported
    data = bytearray(_append_zip(TFL, {"labels.txt": b"cat\ndog\n"}))
    pos = data.rfind(b"cat\ndog\n")
    data[pos] = ord("b")
    _, findings = scan_data(bytes(data), "m.tflite")
    assert any("CRC" in f.rule_id or "CRC" in f.message for f in findings), [(f.rule_id, f.message) for f in findings]


# -- names older library versions wrote --------------------------------------------------------------------

def test_zlib_under_gz_is_what_joblib_wrote_but_not_under_bz2() -> None:
    data = zlib.compress(pickle.dumps([1, 2], protocol=2))
    assert not _loud(scan_data(data, "dump_compressed.gz")[1])
    assert ("FORMAT-EXTENSION-MISMATCH", "medium") in _loud(scan_data(data, "dump.bz2")[1])


def test_pickle_under_gz_is_still_a_mismatch() -> None:
    _, findings = scan_data(pickle.dumps([1, 2], protocol=2), "dump.gz")
    assert ("FORMAT-EXTENSION-MISMATCH", "medium") in _loud(findings)


def test_raw_array_sidecar_only_when_it_is_the_inflated_npy_z(tmp_path: Path) -> None:
    raw = bytes(range(256)) * 4  # an array's buffer, as ZNDArrayWrapper wrote it
    zf = b"ZF0x%-18x" % len(raw) + zlib.compress(raw)
    side = tmp_path / "model.pkl_01.npy.z"
    side.write_bytes(zf)
    assert not [f for f in scan_path(side).findings if f.severity >= Severity.MEDIUM]
    # the same inner name spelled by the tree (a file, a zip member) does not earn the exception
    spoof = tmp_path / "<zlib>model.npy"
    spoof.write_bytes(raw)
    assert "FORMAT-EXTENSION-MISMATCH" in rule_ids(scan_path(spoof).findings)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("<zlib>model.npy", raw)
    assert "FORMAT-EXTENSION-MISMATCH" in rule_ids(scan_data(buf.getvalue(), "a.zip")[1])
    # a raw buffer under a plain .npy name is still a mismatch
    plain = tmp_path / "model.npy"
    plain.write_bytes(raw)
    assert "FORMAT-EXTENSION-MISMATCH" in rule_ids(scan_path(plain).findings)


def test_lz4_joblib_dump_is_read_and_lz4_is_a_dependency() -> None:
    import lz4.frame

    data = lz4.frame.compress(pickle.dumps({"w": [1.0]}, protocol=4))
    fmt, findings = scan_data(data, "model_lz4.lz4")
    assert fmt == "lz4" and not _loud(findings)
    _, findings = scan_data(lz4.frame.compress(EVIL), "model.lz4")
    assert ("PICKLE-DANGEROUS-CALL", "critical") in _loud(findings)
    tomllib = pytest.importorskip("tomllib") if sys.version_info >= (3, 11) else pytest.importorskip("tomli")
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert any(d.split(">")[0].split("=")[0].strip() == "lz4" for d in deps)


# -- macOS archives and text under binary names ---------------------------------------------------------------

def _zip(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for n, d in files.items():
            z.writestr(n, d)
    return buf.getvalue()


def test_apple_double_member_needs_its_magic() -> None:
    good = (FIXTURES / "benign" / "honest_layouts" / "macos_archive.zip").read_bytes()
    assert not _loud(scan_data(good, "a.zip")[1])
    fake = _zip({"a.txt": b"1,2\n", "__MACOSX/._a.txt": bytes(range(1, 200))})
    assert ("FORMAT-EXTENSION-MISMATCH", "medium") in _loud(scan_data(fake, "a.zip")[1])


def test_text_under_a_container_name_is_low_but_under_a_pickle_name_medium() -> None:
    _, findings = scan_data(b"a,b\n1,2\n", "table.csv.zip")
    assert [(f.rule_id, f.severity.value) for f in findings if f.rule_id == "FORMAT-EXTENSION-MISMATCH"] == [
        ("FORMAT-EXTENSION-MISMATCH", "low")]
    for name in ("model.pkl", "model.onnx"):  # protocol-0 pickles are text; protobuf parses any bytes
        _, findings = scan_data(b"just some words\n", name)
        assert ("FORMAT-EXTENSION-MISMATCH", "medium") in _loud(findings), name


# -- the corpus builder's own logic (no network) ---------------------------------------------------------------

def _corpus_module():
    spec = importlib.util.spec_from_file_location("honest_corpus", ROOT / "benchmarks" / "honest_corpus.py")
    mod = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules.setdefault("honest_corpus", mod)  # dataclasses look their module up
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


def test_builder_picks_members_by_content(tmp_path: Path) -> None:
    hc = _corpus_module()
    wheel = tmp_path / "demo-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("demo/__init__.py", "x = 1\n")
        z.writestr("demo/data/weights", pickle.dumps([1], protocol=4))   # no extension: content decides
        z.writestr("demo/data/table.npy", b"\x93NUMPY\x01\x00" + b" " * 10)
        z.writestr("demo/data/model.tflite", TFL)
        z.writestr("demo/data/readme.txt", "words")
        z.writestr("demo-1.0.dist-info/METADATA", "Name: demo")
    entries = hc.extract_package(wheel, "demo==1.0", tmp_path / "out", cap=0)
    got = {Path(e.path).name: e.kind for e in entries}
    assert got == {"weights": "pickle", "table.npy": "npy", "model.tflite": "tflite"}
    for e in entries:
        assert e.producer == "demo==1.0" and e.source == "package"
        assert len(e.sha256) == 64 and (tmp_path / "out" / e.path).stat().st_size == e.size


def test_flag_table_counts_by_producer_and_rule(tmp_path: Path) -> None:
    hc = _corpus_module()
    (tmp_path / "manifest.json").write_text(json.dumps({"entries": [
        {"path": "a.pkl", "producer": "x==1 pickle.dump"}, {"path": "b.pkl", "producer": "y==2"},
        {"path": "c.npy", "producer": "y==2"}]}))
    rows = [{"type": "file", "path": str(tmp_path / "a.pkl"),
             "findings": [{"rule_id": "PICKLE-UNKNOWN-GLOBAL", "severity": "high"}]},
            {"type": "file", "path": str(tmp_path / "b.pkl"),
             "findings": [{"rule_id": "FORMAT-NOT-MODEL", "severity": "info"}]},
            {"type": "file", "path": str(tmp_path / "c.npy"), "findings": []}, {"type": "summary"}]
    jl = tmp_path / "scan.jsonl"
    jl.write_text("\n".join(json.dumps(r) for r in rows))
    t = hc.flagged_table(tmp_path, jl)
    assert t["files"] == 3 and t["flagged"] == 1 and t["producers"] == 2
    assert t["per_rule"] == {"PICKLE-UNKNOWN-GLOBAL": 1}
    assert t["per_producer"] == {"x==1 pickle.dump": ["a.pkl"]}
    assert t["by_library"] == {"x": (1, 1), "y": (0, 2)}


def test_gzip_fname_path_is_a_low_note() -> None:
    # what Python <= 2.6's gzip wrote for GzipFile("/tmp/x.nii.gz"): FNAME = the path as given
    body = zlib.compressobj(6, zlib.DEFLATED, -15)
    payload = b"\x5c\x01\x00\x00" + bytes(60)
    raw = body.compress(payload) + body.flush()
    gz = (b"\x1f\x8b\x08\x08" + bytes(4) + b"\x00\x03" + b"/tmp/x.nii\x00" + raw
          + struct.pack("<II", zlib.crc32(payload), len(payload)))
    _, findings = scan_data(gz, "x.nii.gz")
    assert [(f.rule_id, f.severity.value) for f in findings if f.rule_id == "ARCHIVE-PATH-TRAVERSAL"] == [
        ("ARCHIVE-PATH-TRAVERSAL", "low")]
    assert not _loud(findings)


def test_run_py_scores_the_honest_group_per_producer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    bench = ROOT / "benchmarks"
    monkeypatch.syspath_prepend(str(bench))
    for name in ("run", "bench_corpus", "bench_tools", "bench_measure"):
        sys.modules.pop(name, None)
    import bench_tools
    import run

    monkeypatch.setattr(bench_tools, "PEERS_VENV", tmp_path / "no-peers")
    corpus = tmp_path / "honest"
    (corpus / "pkg").mkdir(parents=True)
    (corpus / "pkg" / "odd.pkl").write_bytes(b"\x80\x02cmylib.models\nThing\n)\x81.")   # unknown class: flagged
    (corpus / "pkg" / "weights.npy").write_bytes(b"\x93NUMPY\x01\x00v\x00" + (
        b"{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }".ljust(117) + b"\n") + bytes(8))
    (corpus / "manifest.json").write_text(json.dumps({"producers": 2, "entries": [
        {"path": "pkg/odd.pkl", "producer": "mylib==1.0 pickle.dump"},
        {"path": "pkg/weights.npy", "producer": "numpy==2 np.save"}]}))
    out = tmp_path / "out"
    try:
        assert run.main(["--groups", "honest", "--tools", "modelseal", "--honest-corpus", str(corpus),
                         "--out", str(out), "--no-chart"]) == 0
    finally:
        for name in ("run", "bench_corpus", "bench_tools", "bench_measure"):
            sys.modules.pop(name, None)
    capsys.readouterr()
    md = (out / "results.md").read_text()
    assert "| modelseal | 1/2 |" in md
    assert "| mylib==1.0 pickle.dump | 1 | 1 |" in md
    assert "numpy==2 np.save" not in md  # nothing of it flagged
    doc = json.loads((out / "results.json").read_text())
    assert doc["summary"]["modelseal"]["benign_total"] == 0  # honest files are scored apart from fixtures


def test_unreadable_member_keeps_polyglot() -> None:
    data = bytearray(_append_zip(TFL, {"labels.txt": b"cat\n"}))
    for sig in (b"PK\x03\x04", b"PK\x01\x02"):  # method field: local header +8, central header +10
        pos = data.find(sig, len(TFL))
        off = 8 if sig == b"PK\x03\x04" else 10
        data[pos + off:pos + off + 2] = (99).to_bytes(2, "little")
    _, findings = scan_data(bytes(data), "m.tflite")
    assert ("POLYGLOT", "high") in _loud(findings)
