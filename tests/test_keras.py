from __future__ import annotations

import base64
import io
import json
import marshal
import zipfile
from pathlib import Path

import pytest

from conftest import FIXTURES, rule_ids, scan_data, scan_path
from scanner.context import ScanContext
from scanner.findings import Severity
from scanner.formats.hdf5 import keras
from scanner.formats.pickle import marshal_code
from scanner.limits import Limits
from scanner.rules import Policy, load_ruleset
from scanner.source import BytesSource

RULES = load_ruleset()


def ctx(**limits: int) -> ScanContext:
    return ScanContext(RULES, Policy(limits=Limits().with_overrides(limits)))


def zip_members(path: Path) -> dict[str, BytesSource]:
    with zipfile.ZipFile(path) as z:
        return {n: BytesSource(str(path), n, z.read(n)) for n in z.namelist() if n.endswith(".json")}


def keras_zip(path: Path) -> list:
    src = BytesSource(str(path), None, path.read_bytes())
    return keras.analyze_keras_zip(src, zip_members(path), ctx())


def walk(cfg: object, **limits: int) -> list:
    return keras.walk_config(cfg, BytesSource("cfg", None, b""), ctx(**limits), "config.json")


def worst(findings: list, rule: str) -> Severity | None:
    sevs = [f.severity for f in findings if f.rule_id == rule]
    return max(sevs, key=lambda s: s.rank) if sevs else None


# -- .keras configs through analyze_keras_zip ---------------------------------------------------------------

@pytest.mark.parametrize("name", ["sequential_dense.keras", "functional_compiled.keras",
                                  "stringlookup_inline_vocab.keras"])
def test_benign_keras_zip_configs_are_quiet(name: str) -> None:
    findings = keras_zip(FIXTURES / "benign" / "keras" / name)
    assert [f for f in findings if f.severity > Severity.INFO] == []


@pytest.mark.parametrize(("name", "rule", "severity"), [
    ("k03_lambda.keras", "KERAS-LAMBDA", Severity.CRITICAL),
    ("k03_lambda_activation.keras", "KERAS-LAMBDA", Severity.CRITICAL),
    ("k02_nested_lambda.keras", "KERAS-LAMBDA", Severity.CRITICAL),
    ("k04_module_os_system.keras", "KERAS-UNSAFE-MODULE", Severity.HIGH),
    ("k04_foreign_layer_class.keras", "KERAS-UNSAFE-MODULE", Severity.HIGH),
    ("k05_enable_unsafe_deserialization.keras", "KERAS-UNSAFE-DESERIALIZATION", Severity.HIGH),
    ("k06_get_file.keras", "KERAS-DANGEROUS-FUNCTION", Severity.HIGH),
    ("k07_torch_module_wrapper.keras", "KERAS-TORCH-MODULE", Severity.HIGH),
    ("k08_stringlookup_file.keras", "KERAS-LOOKUP-PATH", Severity.HIGH),
    ("k08_textvectorization_url.keras", "KERAS-LOOKUP-PATH", Severity.HIGH),
    ("k10_hydra_target.keras", "KERAS-CONFIG-INSTANTIATION", Severity.HIGH),
    ("k02_duplicate_keys.keras", "KERAS-MALFORMED", Severity.HIGH),
])
def test_hostile_keras_zip_configs(name: str, rule: str, severity: Severity) -> None:
    findings = keras_zip(FIXTURES / "hostile" / "keras" / name)
    assert worst(findings, rule) == severity, [(f.rule_id, f.severity.value) for f in findings]


def test_lambda_evidence_is_a_disassembly_of_the_payload() -> None:
    findings = keras_zip(FIXTURES / "hostile" / "keras" / "k03_lambda.keras")
    lam = [f for f in findings if f.rule_id == "KERAS-LAMBDA"]
    assert lam and "system" in lam[0].evidence and "echo pwned" in lam[0].evidence
    assert lam[0].location.member == "config.json"


def test_torch_module_wrapper_pickle_is_scanned_as_a_member() -> None:
    findings = keras_zip(FIXTURES / "hostile" / "keras" / "k07_torch_module_wrapper.keras")
    members = [f.location.member or "" for f in findings]
    assert any(m.endswith(".config.module") for m in members), members


# -- the config walker ----------------------------------------------------------------------------------

def lambda_code(fn) -> str:  # noqa: ANN001
    return base64.encodebytes(marshal.dumps(fn.__code__)).decode()


def test_lambda_hidden_in_a_bidirectional_wrapper_inside_a_model() -> None:
    code = lambda_code(lambda x: __import__("subprocess").call("id"))  # never called
    cfg = {"class_name": "Functional", "config": {"layers": [{"class_name": "Bidirectional", "config": {
        "layer": {"class_name": "Sequential", "config": {"layers": [{"class_name": "Lambda", "config": {
            "name": "hidden", "function": {"class_name": "__lambda__", "config": {"code": code}}}}]}}}}]}}
    findings = walk(cfg)
    assert worst(findings, "KERAS-LAMBDA") == Severity.CRITICAL
    assert "subprocess" in next(f.evidence for f in findings if f.rule_id == "KERAS-LAMBDA")


def test_lambda_with_undecodable_code_is_still_critical() -> None:
    cfg = {"class_name": "Lambda", "config": {"name": "l", "function": ["!!not base64 bytecode!!", None, None],
                                              "function_type": "lambda"}}
    assert worst(walk(cfg), "KERAS-LAMBDA") == Severity.CRITICAL


def test_lambda_calling_a_keras_function_by_name_is_medium() -> None:
    cfg = {"class_name": "Lambda", "module": "keras.layers", "config": {"name": "l", "function": {
        "module": "keras.ops", "class_name": "function", "config": "relu", "registered_name": "function"}}}
    findings = walk(cfg)
    assert worst(findings, "KERAS-LAMBDA") == Severity.MEDIUM
    assert "KERAS-UNSAFE-MODULE" not in rule_ids(findings)


def test_function_reference_to_builtins_is_outside_keras() -> None:
    cfg = {"module": "builtins", "class_name": "function", "config": "exec", "registered_name": "function"}
    findings = walk(cfg)
    assert "KERAS-UNSAFE-MODULE" in rule_ids(findings)
    assert any("builtins.exec" in (f.evidence or "") for f in findings)


def test_dangerous_keras_names_through_aliases() -> None:
    cfg = {"module": "keras.src.utils.file_utils", "class_name": "function", "config": "get_file"}
    assert "KERAS-DANGEROUS-FUNCTION" in rule_ids(walk(cfg))
    assert "KERAS-UNSAFE-DESERIALIZATION" in rule_ids(walk({"config": {"safe_mode": False}}))


def test_custom_registered_object_is_low() -> None:
    findings = walk({"module": None, "class_name": "MyLayer", "registered_name": "acme>MyLayer", "config": {}})
    assert worst(findings, "KERAS-CUSTOM-OBJECT") == Severity.LOW


def test_inline_vocabulary_passes_and_path_vocabulary_does_not() -> None:
    ok = {"class_name": "IntegerLookup", "config": {"name": "l", "vocabulary": [1, 2, 3]}}
    bad = {"class_name": "IntegerLookup", "config": {"name": "l", "vocabulary": "file:///etc/shadow"}}
    assert "KERAS-LOOKUP-PATH" not in rule_ids(walk(ok))
    assert "KERAS-LOOKUP-PATH" in rule_ids(walk(bad))


def test_deep_config_hits_the_depth_limit_without_crashing() -> None:
    cfg: object = {"class_name": "Lambda"}
    for _ in range(60):
        cfg = {"config": cfg}
    findings = walk(cfg, max_json_depth=20)
    assert "LIMIT-EXCEEDED" in rule_ids(findings)


def test_very_deep_json_text_is_malformed_not_a_crash() -> None:
    text = "[" * 100_000 + "]" * 100_000
    findings = keras.analyze_config_text(text, BytesSource("c", None, b""), ctx(), "config.json")
    assert rule_ids(findings) <= {"KERAS-MALFORMED", "LIMIT-EXCEEDED"} and findings


def test_non_utf8_and_non_object_configs_are_malformed() -> None:
    src = BytesSource("c", None, b"")
    assert rule_ids(keras.analyze_config_text(b"\xff\xfe{", src, ctx(), "x")) == {"KERAS-MALFORMED"}
    assert rule_ids(keras.analyze_config_text(b'"just a string"', src, ctx(), "x")) == {"KERAS-MALFORMED"}


def test_findings_per_rule_are_capped() -> None:
    cfg = {"layers": [{"module": "os", "class_name": "function", "config": "system"}] * 500}
    assert sum(f.rule_id == "KERAS-UNSAFE-MODULE" for f in walk(cfg)) <= 100


# -- the marshal reader -----------------------------------------------------------------------------------

def _sample(a, b=3, *args, k=None, **kw):  # noqa: ANN001, ANN002, ANN003, ANN202
    big = 1 << 100
    s = {1, 2}
    d = {"k": (1.5, 2j, b"raw", None, True, ...)}

    def inner(y):  # noqa: ANN001, ANN202
        return __import__("os").popen(y)
    return inner, big, s, d, -big


def test_marshal_reader_matches_what_python_wrote() -> None:
    parsed = marshal_code.parse_code(marshal.dumps(_sample.__code__))
    names = marshal_code.all_names(parsed.code)
    assert parsed.code.name == "_sample"
    assert {"__import__", "popen"} <= set(names)
    assert "os" in marshal_code.all_strings(parsed.code)
    assert 1 << 100 in parsed.code.consts
    assert [n.name for n in parsed.code.nested] == ["inner"]


@pytest.mark.parametrize("data", [b"", b"c", b"\xe3" + b"\0" * 10, b"N", marshal.dumps((1, 2)),
                                  marshal.dumps(_sample.__code__)[:-3], marshal.dumps(_sample.__code__) + b"x"])
def test_marshal_reader_rejects_what_is_not_exactly_one_code_object(data: bytes) -> None:
    with pytest.raises(marshal_code.MarshalError):
        marshal_code.parse_code(data)


def test_marshal_reader_survives_hostile_lengths_and_refs() -> None:
    for data in (b"\xe3" + b"\xff" * 40, b"c" + b"\0" * 24 + b"s\xff\xff\xff\x7f", b"r\x05\0\0\0", b"(" + b"\xff" * 4,
                 b"\xdb" + b"(\x01\0\0\0" * 5000):
        with pytest.raises(marshal_code.MarshalError):
            marshal_code.parse_code(data, max_depth=64)


def test_scanning_never_unmarshals(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*_a: object) -> None:
        raise AssertionError("marshal.loads called")
    monkeypatch.setattr(marshal, "loads", boom)
    findings = keras_zip(FIXTURES / "hostile" / "keras" / "k03_lambda.keras")
    assert "KERAS-LAMBDA" in rule_ids(findings)


# -- legacy .h5 through the HDF5 analyzer -----------------------------------------------------------------

def h5_bytes(build) -> bytes:  # noqa: ANN001
    import h5py

    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        build(f)
    return buf.getvalue()


def test_h5_in_memory_uses_the_file_object_path() -> None:
    def build(f) -> None:  # noqa: ANN001
        f.attrs["model_config"] = json.dumps({"class_name": "Lambda", "config": {
            "function": {"class_name": "__lambda__", "config": {"code": lambda_code(lambda x: x)}}}}).encode()
    fmt, findings = scan_data(h5_bytes(build), "model.h5")
    assert fmt == "hdf5"
    assert worst(findings, "KERAS-LAMBDA") == Severity.CRITICAL


def test_h5_config_as_array_of_bytes_is_still_walked() -> None:
    import numpy as np

    cfg = json.dumps({"module": "os", "class_name": "function", "config": "system"}).encode()

    def build(f) -> None:  # noqa: ANN001
        f.attrs["model_config"] = np.array([cfg, b"{}"])
    _, findings = scan_data(h5_bytes(build), "model.h5")
    assert "KERAS-UNSAFE-MODULE" in rule_ids(findings)


def test_h5_odd_links_cycles_and_limits() -> None:
    import h5py

    def build(f) -> None:  # noqa: ANN001
        g = f.create_group("a/b/c")
        g["loop"] = f["a"]  # hard link back up: a cycle
        f["soft"] = h5py.SoftLink("/a/b")
        f["dangling"] = h5py.SoftLink("/nowhere")
        f.create_dataset("a/data", data=[1, 2, 3])
        f["alias"] = f["a/data"]
    data = h5_bytes(build)
    _, findings = scan_data(data, "x.h5")
    ids = rule_ids(findings)
    assert {"HDF5-SOFT-LINK", "HDF5-MULTI-LINK"} <= ids
    assert not any(f.severity > Severity.LOW for f in findings)
    policy = Policy(limits=Limits(max_hdf5_objects=3))
    _, limited = scan_data(data, "x.h5", policy=policy)
    assert "LIMIT-EXCEEDED" in rule_ids(limited)


def test_h5_deep_nesting_is_bounded() -> None:
    def build(f) -> None:  # noqa: ANN001
        f.create_group("/".join(["g"] * 30))
    _, findings = scan_data(h5_bytes(build), "x.h5", policy=Policy(limits=Limits(max_hdf5_depth=10)))
    assert "LIMIT-EXCEEDED" in rule_ids(findings)


def test_h5_userblock_is_scanned_as_a_member(tmp_path: Path) -> None:
    import h5py

    p = tmp_path / "ub.h5"
    with h5py.File(p, "w", userblock_size=512) as f:
        f.create_dataset("x", data=[1])
    raw = bytearray(p.read_bytes())
    raw[:11] = b"hello world"
    p.write_bytes(bytes(raw))
    report = scan_path(p)
    assert report.format == "hdf5"
    assert "HDF5-USERBLOCK" in rule_ids(report.findings)


def test_h5_garbage_after_magic_is_malformed() -> None:
    fmt, findings = scan_data(b"\x89HDF\r\n\x1a\n" + b"\xff" * 200, "x.h5")
    assert fmt == "hdf5" and "HDF5-MALFORMED" in rule_ids(findings)


def test_filter_plugins_are_disabled() -> None:
    from scanner.formats.hdf5.reader import _h5py

    h5py = _h5py()
    assert h5py.h5pl.size() == 0


def _w_obj(tag: bytes, payload: bytes) -> bytes:
    return tag + payload


def _w_str(s: str, tag: bytes = b"z") -> bytes:
    raw = s.encode()
    return tag + bytes([len(raw)]) + raw


def _w_tuple(items: list[bytes]) -> bytes:
    return b")" + bytes([len(items)]) + b"".join(items)


def test_marshal_reader_reads_the_python_3_8_layout() -> None:
    """A 3.8-3.10 code object (6 leading ints, varnames/freevars/cellvars, lnotab), written by hand."""
    import struct

    ints = struct.pack("<6i", 1, 0, 0, 1, 2, 67)
    body = b"".join([
        _w_obj(b"s", struct.pack("<i", 4) + b"t\x00d\x01"),          # code
        _w_tuple([b"N", _w_str("echo pwned")]),                       # consts
        _w_tuple([_w_str("os"), _w_str("system")]),                   # names
        _w_tuple([_w_str("x")]), _w_tuple([]), _w_tuple([]),          # varnames freevars cellvars
        _w_str("<stdin>"), _w_str("<lambda>"), struct.pack("<i", 1),  # filename name firstlineno
        _w_obj(b"s", struct.pack("<i", 0)),                           # lnotab
    ])
    parsed = marshal_code.parse_code(b"c" + ints + body)
    assert parsed.layout == "3.8-3.10"
    assert parsed.code.names == ["os", "system"] and "echo pwned" in parsed.code.consts


def test_bytecode_with_junk_characters_is_still_decoded() -> None:
    code = lambda_code(lambda x: __import__("os").system("echo pwned"))  # never called
    junk = "!".join(code[i:i + 10] for i in range(0, len(code), 10))  # a2b_base64 skips the '!'s
    findings = walk({"class_name": "Dense", "config": {"activation": {"class_name": "X", "config": {"code": junk}}}})
    assert worst(findings, "KERAS-LAMBDA") == Severity.CRITICAL


def _zero_size_heap_object(data: bytes) -> bytes:
    """Turn the last object of the first global heap collection into a size-0 free-space object."""
    import struct

    at = data.index(b"GCOL")
    size = struct.unpack_from("<Q", data, at + 8)[0]
    p, last = at + 16, None
    while p + 16 <= at + size:
        idx, osize = struct.unpack_from("<H", data, p)[0], struct.unpack_from("<Q", data, p + 8)[0]
        if idx == 0:
            break
        last = p
        p += 16 + ((osize + 7) & ~7)
    assert last is not None
    out = bytearray(data)
    out[p:p + 16] = b"\0" * 16  # the free-space header that follows the objects: index 0, size 0
    return bytes(out)


def test_corrupt_global_heap_is_reported_instead_of_hanging_the_library() -> None:
    from scanner.formats.hdf5 import heap as hdf5_heap

    good = (FIXTURES / "benign" / "keras" / "functional_compiled.h5").read_bytes()
    assert hdf5_heap.heap_problems(BytesSource("x", None, good)) == []
    bad = _zero_size_heap_object(good)
    problems = hdf5_heap.heap_problems(BytesSource("x", None, bad))
    assert problems and "size 0" in problems[0]
    _, findings = scan_data(bad, "model.h5")  # only reached when the pre-flight check caught it
    assert "HDF5-MALFORMED" in rule_ids(findings)


# -- red-team follow-ups ----------------------------------------------------------------------------------

REALWORLD = FIXTURES / "benign" / "realworld_keras"


@pytest.mark.parametrize("name", ["nested_timedistributed.keras", "nested_timedistributed_legacy.h5"])
def test_registered_custom_layer_is_low_and_clean(name: str) -> None:
    """A custom class needs the user's code to load: worth knowing (low), not a gadget (verdict clean)."""
    report = scan_path(REALWORLD / name)
    assert {(f.rule_id, f.severity) for f in report.findings if f.severity > Severity.INFO} == {
        ("KERAS-CUSTOM-OBJECT", Severity.LOW)}
    assert report.verdict.value == "clean"


def test_keras3_builtin_function_spelling_is_not_a_foreign_module() -> None:
    ok = {"module": "builtins", "class_name": "function", "config": "mean_squared_error",
          "registered_name": "function"}
    assert walk(ok) == []
    bad = dict(ok, config="getattr")
    assert "KERAS-UNSAFE-MODULE" in rule_ids(walk(bad))


def test_function_outside_modeling_modules() -> None:
    ok = {"module": "keras.losses", "class_name": "function", "config": "mean_squared_error"}
    bad = {"module": "keras.src.utils.image_utils", "class_name": "function", "config": "load_img"}
    assert walk(ok) == []
    assert worst(walk(bad), "KERAS-NONMODELING-FUNCTION") == Severity.HIGH


def test_raw_unicode_escape_bytecode_is_decoded() -> None:
    raw = marshal.dumps((lambda x: __import__("os").system("echo pwned")).__code__).decode("latin-1")
    findings = walk({"class_name": "Dense", "config": {"bias_constraint": {"weird": raw}}})
    lam = [f for f in findings if f.rule_id == "KERAS-LAMBDA"]
    assert lam and lam[0].severity == Severity.CRITICAL and "system" in (lam[0].evidence or "")


def test_path_fields_apply_to_any_layer() -> None:
    cfg = {"class_name": "SentencePieceTokenizer", "module": "keras_hub.src.tokenizers", "config": {
        "name": "t", "proto": "/etc/passwd"}}
    assert "KERAS-LOOKUP-PATH" in rule_ids(walk(cfg))
    inline = {"class_name": "BytePairTokenizer", "config": {"vocabulary": {"a": 1}, "merges": ["a b"]}}
    assert "KERAS-LOOKUP-PATH" not in rule_ids(walk(inline))


def test_hydra_targets_are_judged_by_the_pickle_tables() -> None:
    from scanner.formats.sidecars import config as sidecar_config

    text = ("opt:\n  _target_: torch.optim.Adam\nnet:\n  _target_: mypkg.models.Net\n"
            "run:\n  - _target_: os.system\n")
    c = ScanContext(RULES, Policy())
    found = {(f.evidence, f.severity) for f in sidecar_config.yaml_findings(text, BytesSource("c.yaml", None, b""), c)}
    assert ("mypkg.models.Net", Severity.LOW) in found  # on no list, generated or hand-made: a note
    assert not any(ev == "torch.optim.Adam" and sev > Severity.LOW for ev, sev in found)  # safe to call
    assert any(ev == "os.system" and sev >= Severity.HIGH for ev, sev in found)


def test_standalone_keras_json_is_walked_but_a_keras_archive_root_config_once() -> None:
    report = scan_path(FIXTURES / "hostile" / "redteam_keras" / "rk02_model_to_json.json")
    assert worst(list(report.findings), "KERAS-LAMBDA") == Severity.CRITICAL
    report = scan_path(FIXTURES / "hostile" / "keras" / "k03_lambda.keras")
    assert sum(f.rule_id == "KERAS-LAMBDA" for f in report.findings) == 1
