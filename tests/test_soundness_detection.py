"""Issue 8 classes 2-4: detection the way the loaders detect, operators not spellings, GGUF values C loaders
trust. Loader rules are compared against the libraries' own parsing code where it is importable without
running anything (tarfile's header parser, zlib/lzma/bz2 decoders)."""

from __future__ import annotations

import io
import lzma
import pickle
import random
import struct
import tarfile
import zipfile
from pathlib import Path

import pytest

from conftest import rule_ids, scan_data
from scanner.findings import Severity
from scanner.formats.zip.torchscript_ops import resolve_ops
from scanner.sniff import alternate_formats, is_tar_header, joblib_codec, sniff
from scanner.source import BytesSource

P0 = b"cos\nsystem\n(S'echo pwned'\ntR."


def _src(data: bytes, name: str = "blob") -> BytesSource:
    return BytesSource(name, None, data)


def _tar(fmt: int, name: str = "pickle", data: bytes = b"x") -> bytes:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as t:
        t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _tarfile_accepts(block: bytes) -> bool:
    try:
        tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
    except tarfile.HeaderError:
        return False
    return True


def _v7(block: bytes) -> bytes:
    """A USTAR header with magic, version and the ustar-only fields blanked, checksum recomputed: the V7
    layout GNU tar --format=v7 writes (the committed fixture comes from GNU tar itself)."""
    b = bytearray(block[:512])
    b[257:500] = bytes(243)
    b[148:156] = b" " * 8
    b[148:156] = b"%06o\x00 " % sum(b)
    return bytes(b)


# -- tar ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_tar_headers_of_every_writer_format_are_tar(fmt: int) -> None:
    data = _tar(fmt)
    assert is_tar_header(data) and sniff(_src(data)) == "tar"


def test_v7_header_without_magic_is_tar_and_its_pickle_member_is_scanned() -> None:
    data = _tar(tarfile.USTAR_FORMAT, "pickle", P0)
    v7 = _v7(data[:512]) + data[512:]
    assert b"ustar" not in v7[:512] and _tarfile_accepts(v7[:512])
    fmt, findings = scan_data(v7, "model.pt")
    assert fmt == "tar"
    assert "PICKLE-DANGEROUS-CALL" in rule_ids(findings)


def test_tar_rule_equals_tarfile_frombuf_on_mutated_headers() -> None:
    """Differential against CPython's own header parser: flip bytes (checksum field included) and compare."""
    rng = random.Random(8)
    base = _v7(_tar(tarfile.USTAR_FORMAT)[:512])
    agree = 0
    for i in range(3000):
        b = bytearray(base)
        for _ in range(rng.randint(1, 3)):
            pos = rng.choice([rng.randrange(512), rng.randrange(148, 156)])
            b[pos] = rng.randrange(256)
        if i % 5 == 0:  # recompute a valid checksum, signed or unsigned, in either numeric encoding
            b[148:156] = b" " * 8
            total = sum(b) if i % 2 else sum(x - 256 if x > 127 else x for x in b)
            b[148:156] = (b"%06o\x00 " % total) if total >= 0 else b"\xff" + (total % 256 ** 7).to_bytes(7, "big")
        block = bytes(b)
        assert is_tar_header(block) == _tarfile_accepts(block), block[140:160]
        agree += 1
    assert agree == 3000


def test_nul_block_and_short_input_are_not_tar() -> None:
    assert not is_tar_header(bytes(512))
    assert not is_tar_header(_tar(tarfile.USTAR_FORMAT)[:511])


# -- compressors as joblib tests them ------------------------------------------------------------------------

@pytest.mark.parametrize("dict_size", [4096, 6144, 65536, 1 << 23])
def test_lzma_alone_of_any_dictionary_size_is_lzma(dict_size: int) -> None:
    blob = lzma.compress(P0, format=lzma.FORMAT_ALONE, filters=[{"id": lzma.FILTER_LZMA1, "dict_size": dict_size}])
    assert blob[:2] == b"]\x00"  # joblib's prefix
    assert sniff(_src(blob)) == "lzma"
    fmt, findings = scan_data(blob, "m.joblib")
    assert fmt == "lzma" and "PICKLE-DANGEROUS-CALL" in rule_ids(findings)


def test_joblib_codec_needs_the_codec_to_decode() -> None:
    assert joblib_codec(_src(b"x")) is None  # a bare prefix: joblib fails, nothing to scan
    assert joblib_codec(_src(b"x\x01" + bytes(200))) is None  # honest safetensors header length 376
    assert joblib_codec(_src(lzma.compress(P0, format=lzma.FORMAT_ALONE))) == "lzma"
    assert joblib_codec(_src(b"BZh9" + bytes(64))) is None


def test_honest_safetensors_whose_length_starts_like_zlib_is_not_a_polyglot() -> None:
    header = b'{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}'
    header += b" " * (0x178 - len(header))
    data = struct.pack("<Q", len(header)) + header + bytes(4)
    assert data[:2] == b"x\x01"
    assert sniff(_src(data)) == "safetensors"
    assert alternate_formats(_src(data), "safetensors") == []
    _fmt, findings = scan_data(data, "m.safetensors")
    assert not [f for f in findings if f.severity >= Severity.MEDIUM]


def test_lzma_stream_in_an_hdf5_user_block_is_scanned_as_both(tmp_path: Path) -> None:
    h5py = pytest.importorskip("h5py")
    import numpy as np

    p = tmp_path / "m.h5"
    with h5py.File(p, "w", userblock_size=512) as f:
        f.create_dataset("w", data=np.zeros(2, dtype="float32"))
    data = bytearray(p.read_bytes())
    blob = lzma.compress(P0, format=lzma.FORMAT_ALONE)
    data[:len(blob)] = blob
    fmt, findings = scan_data(bytes(data), "m.h5")
    assert fmt == "hdf5"
    assert {"POLYGLOT", "PICKLE-DANGEROUS-CALL"} <= rule_ids(findings)
    assert "ARCHIVE-MALFORMED" not in rule_ids(findings)  # the alternate reading is not re-sniffed as hdf5


# -- HDF5 signature at any power of two ----------------------------------------------------------------------

def test_hdf5_signature_beyond_one_mib_is_found() -> None:
    data = bytearray(b"\xfe" * (2 << 20) + b"\x89HDF\r\n\x1a\n" + bytes(64))
    assert sniff(_src(bytes(data))) == "hdf5"
    data[2 << 20] = 0  # not at a power of two any more
    assert sniff(_src(bytes(data))) == "data"


# -- templates with NUL bytes --------------------------------------------------------------------------------

def test_template_with_nul_is_text_and_analyzed() -> None:
    t = b"\x00" * 5000 + b"{{ cycler.__init__.__globals__.os.popen('id').read() }}"
    assert sniff(_src(t)) == "text"
    _fmt, findings = scan_data(t, "chat_template.jinja")
    assert "CHAT-TEMPLATE-SSTI" in rule_ids(findings)


def test_template_behind_megabytes_of_nul_is_text() -> None:
    t = bytes(3 << 20) + b"{{ cycler.__init__.__globals__.os.popen('id').read() }}"
    assert sniff(_src(t)) == "text"
    assert sniff(_src(bytes(3 << 20))) == "data"


def test_binary_with_nul_and_no_template_stays_data() -> None:
    assert sniff(_src(bytes(8192))) == "data"
    assert sniff(_src(b"\x00\x01\x02abc" * 100)) == "data"
    assert sniff(_src(b"{{ x }}\x00\xff\xfe")) == "data"  # not UTF-8: transformers' read fails


# -- zip end record as zipfile finds it ----------------------------------------------------------------------

def _zip_with_pickle() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("a/data.pkl", P0)
    return buf.getvalue()


def test_zip_followed_by_trailer_opens_in_zipfile_and_is_scanned() -> None:
    data = b"\x00junk" * 20 + _zip_with_pickle() + b"TRAILER\x00" * 30
    assert zipfile.ZipFile(io.BytesIO(data)).namelist() == ["a/data.pkl"]  # the loader rule
    _fmt, findings = scan_data(data, "blob.bin")
    assert {"POLYGLOT", "PICKLE-DANGEROUS-CALL"} <= rule_ids(findings)


def test_stray_end_record_signature_without_directory_is_nothing() -> None:
    data = b"\x01\x02" * 100 + b"PK\x05\x06" + struct.pack("<HHHHIIH", 0, 0, 1, 1, 46, 10, 0) + b"\x03" * 50
    _fmt, findings = scan_data(data, "blob.bin")
    assert "POLYGLOT" not in rule_ids(findings)


# -- TorchScript operators, not spellings --------------------------------------------------------------------

SPELLINGS = [
    'torch.save(x, "f")',
    'torch . save (x, "f")',
    'torch.autograd.save(x, "f")',
    'torch.autograd.autograd.save(x, "f")',
    'ops.aten.save(x, "f")',
    'ops.aten.save.default(x, "f")',
    'getattr(torch, "save")(x, "f")',
    'getattr(ops, "aten").save(x, "f")',
    'getattr(getattr(ops, "aten"), "save")(x, "f")',
    'torch.ops.aten.save(x, "f")',
]


@pytest.mark.parametrize("call", SPELLINGS)
def test_every_spelling_resolves_to_the_operator(call: str) -> None:
    refs = resolve_ops(f"def forward(self, x):\n    _0 = {call}\n    return x\n")
    assert refs is not None and "aten::save" in {r.qualname for r in refs}


def test_aliases_resolve_through_chains_and_tuples() -> None:
    code = ("def forward(self, x):\n    b = a.save\n    _0 = b(x, 'f')\n    a = c\n    c, d = ops.aten, 1\n"
            "    return x\n")
    refs = resolve_ops(code)
    assert refs is not None and "aten::save" in {r.qualname for r in refs}


def test_unicode_identifier_variants_fold_to_the_operator() -> None:
    refs = resolve_ops("def f(x):\n    _0 = \uff54orch.save(x, 'f')\n    return x\n")
    assert refs is not None and "aten::save" in {r.qualname for r in refs}


def test_python_module_paths_are_not_op_namespaces() -> None:
    code = ("class M(Module):\n  def forward(self: __torch__.torchvision.ops.misc.M, x: Tensor) -> Tensor:\n"
            "    _0 = __torch__.torchvision.ops.misc.FrozenBatchNorm2d\n    return ops.torchvision.nms(x, x, 0.5)\n")
    refs = resolve_ops(code)
    assert refs is not None and {r.qualname for r in refs} == {"torchvision::nms"}


def _ts_zip(code: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("m/data.pkl", pickle.dumps({}, protocol=2))
        z.writestr("m/code/__torch__/m.py", code)
        z.writestr("m/version", "3\n")
    return buf.getvalue()


def test_torchscript_findings_by_operator(ruleset) -> None:  # noqa: ANN001 - fixture
    hostile = "def forward(self, x):\n    a = ops.aten\n    _0 = a.from_file('/etc/passwd')\n    return x\n"
    _fmt, findings = scan_data(_ts_zip(hostile), "m.pt", rules=ruleset)
    hits = [f for f in findings if f.rule_id == "TORCHSCRIPT-CODE-CALL"]
    assert any("aten::from_file" in f.message and f.severity is Severity.HIGH for f in hits)
    custom = "def forward(self, x):\n    return ops.evilns.run(x)\n"
    _fmt, findings = scan_data(_ts_zip(custom), "m.pt", rules=ruleset)
    assert any("'evilns'" in f.message for f in findings if f.rule_id == "TORCHSCRIPT-CODE-CALL")
    vision = "def forward(self, x):\n    return ops.torchvision.nms(x, x, 0.5)\n"
    _fmt, findings = scan_data(_ts_zip(vision), "m.pt", rules=ruleset)
    assert "TORCHSCRIPT-CODE-CALL" not in rule_ids(findings)
    broken = "def forward(self, x:\n    return ops.evil2.run(x)\n"
    _fmt, findings = scan_data(_ts_zip(broken), "m.pt", rules=ruleset)
    msgs = [f.message for f in findings if f.rule_id == "TORCHSCRIPT-CODE-CALL"]
    assert any("does not parse" in m for m in msgs) and any("'evil2'" in m for m in msgs)


# -- GGUF values C loaders trust -----------------------------------------------------------------------------

def _gguf(tmp_path: Path, *, tokens: int = 3, scores: int | None = None, types: int | None = None,
          bos: int = 1, int_scores: bool = False) -> bytes:
    gguf = pytest.importorskip("gguf")
    import numpy as np

    p = tmp_path / "m.gguf"
    w = gguf.GGUFWriter(str(p), "llama")
    w.add_token_list([f"t{i}" for i in range(tokens)])
    if int_scores:
        w.add_array("tokenizer.ggml.scores", [1] * tokens)
    else:
        w.add_token_scores([0.0] * (tokens if scores is None else scores))
    w.add_token_types([1] * (tokens if types is None else types))
    w.add_bos_token_id(bos)
    w.add_tensor("w", np.zeros(8, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return p.read_bytes()


def test_gguf_consistent_vocabulary_is_clean(tmp_path: Path) -> None:
    _fmt, findings = scan_data(_gguf(tmp_path), "m.gguf")
    assert not [f for f in findings if f.severity >= Severity.LOW], findings


@pytest.mark.parametrize("kw", [{"scores": 1}, {"types": 5}, {"bos": 3}, {"int_scores": True}])
def test_gguf_vocabulary_values_llama_cpp_would_misread(tmp_path: Path, kw: dict) -> None:
    _fmt, findings = scan_data(_gguf(tmp_path, **kw), "m.gguf")
    hits = [f for f in findings if f.rule_id == "GGUF-WELL-KNOWN-TYPE"]
    assert hits and all(f.severity is Severity.HIGH for f in hits)


@pytest.mark.parametrize(("value", "flagged"), [(32, False), (4096, False), (1 << 20, True), (48, True)])
def test_gguf_alignment(tmp_path: Path, value: int, flagged: bool) -> None:
    data = _gguf(tmp_path)
    key = b"general.alignment"
    if key not in data:  # the writer leaves the default implicit: add nothing, patch a copy of the kv count
        body = struct.pack("<Q", len(key)) + key + struct.pack("<II", 4, value)
        n_kv = struct.unpack_from("<Q", data, 16)[0]
        data = data[:16] + struct.pack("<Q", n_kv + 1) + data[24:]
        # insert right after the header counts: kv pairs come first, tensor infos follow
        data = data[:24] + body + data[24:]
    _fmt, findings = scan_data(data, "m.gguf")
    assert ("GGUF-ALIGNMENT" in rule_ids(findings)) is flagged


def test_gguf_chat_template_with_nul_is_analyzed(tmp_path: Path) -> None:
    gguf = pytest.importorskip("gguf")
    import numpy as np

    p = tmp_path / "t.gguf"
    w = gguf.GGUFWriter(str(p), "llama")
    w.add_chat_template("\x00" * 10 + "{{ cycler.__init__.__globals__.os.popen('id').read() }}")
    w.add_tensor("w", np.zeros(8, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    _fmt, findings = scan_data(p.read_bytes(), "t.gguf")
    assert "GGUF-TEMPLATE-SSTI" in rule_ids(findings)
