"""Soundness of pickle-bearing containers: bytes joblib skips are opcodes to pickle.load, NumPy's dtype state
decides what joblib reads, storage records np.load reads as .npy, companions joblib opens and unpickles.
docs/soundness-pickle-containers.md lists the loader rules these tests hold the scanner to."""

from __future__ import annotations

import io
import os
import pickle
import struct
import sys
import types
import zipfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from conftest import FIXTURES, rule_ids, scan_data, scan_path
from scanner.findings import Severity, Verdict
from scanner.formats.numpy import joblib_arrays as pickle_joblib
from scanner.formats.pickle.machine import Counters, Machine
from scanner.formats.pickle.policy import Classifier
from scanner.rules import Policy, load_ruleset

ORACLE = Path(os.environ.get("MODELSEAL_ORACLE_PYTHON", "/work/oracle/bin/python"))
HOSTILE = FIXTURES / "hostile" / "soundness_containers"
BENIGN = FIXTURES / "benign" / "soundness_containers"
PAYLOAD_OPS = b"cos\nsystem\n(Vtouch pwned_marker\ntR0"


# -- joblib classes as joblib pickles them, without joblib installed (the writer only needs the names) --------

@contextmanager
def fake_joblib():
    """Register stand-in classes under joblib's module names so `pickle.dumps` writes joblib's globals."""
    saved = {k: sys.modules.get(k) for k in ("joblib", "joblib.numpy_pickle", "joblib.numpy_pickle_compat")}
    pkg, mod, compat = (types.ModuleType(k) for k in saved)
    pkg.numpy_pickle, pkg.numpy_pickle_compat = mod, compat

    class NumpyArrayWrapper:
        pass

    class NDArrayWrapper:
        pass

    for cls, m in ((NumpyArrayWrapper, mod), (NDArrayWrapper, compat)):
        cls.__module__, cls.__qualname__ = m.__name__, cls.__name__
        setattr(m, cls.__name__, cls)
    sys.modules.update({"joblib": pkg, "joblib.numpy_pickle": mod, "joblib.numpy_pickle_compat": compat})
    try:
        yield NumpyArrayWrapper, NDArrayWrapper
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


def wrapper_pickle(array_bytes: bytes, dtype: object, shape: tuple, *, align: int | None = None,
                   protocol: int = 2) -> bytes:
    """What joblib.dump writes for one array: the wrapper pickle, then the array section, then STOP."""
    with fake_joblib() as (W, _):
        w = W()
        w.__dict__.update(subclass=np.ndarray, shape=shape, order="C", dtype=dtype, allow_mmap=False)
        if align is not None:
            w.numpy_array_alignment_bytes = align
        head = pickle.dumps(w, protocol=protocol)
    assert head.endswith(b".")
    return head[:-1] + array_bytes + b"."


class _Reduce:
    """Writes exactly `numpy.dtype(descr, False, True)` + BUILD `state`, the layout of dtype.__reduce__."""

    def __init__(self, descr: str, state: tuple) -> None:
        self.descr, self.state = descr, state

    def __reduce__(self):
        return (np.dtype, (self.descr, False, True), self.state)


def _symbolic_dtype(obj: object):
    rules = load_ruleset()
    # a classifier makes the machine keep BUILD states (without one it only checks syntax)
    m = Machine(pickle.dumps(obj, protocol=2), None, None, Classifier(rules, Policy()), Counters())
    r = m.run(0)
    assert r.complete
    return r.value


# -- dtype: itemsize and hasobject as numpy's dtype.__setstate__ sets them --------------------------------------

REAL_DTYPES = ["f8", ">i4", "?", "c16", "O", "U5", "S3", "V7", "M8[ns]", [("a", "f8"), ("b", "O")],
               ("f8", (2, 2)), ("O", (3,)), [("a", "<i2"), ("m", "f4", (3,))]]


@pytest.mark.parametrize("spec", REAL_DTYPES, ids=repr)
def test_dtype_info_matches_numpy_for_real_pickles(spec) -> None:
    d = np.dtype(spec)
    assert pickle_joblib.dtype_info(_symbolic_dtype(d)) == (d.itemsize, d.hasobject)


CRAFTED = [  # states numpy accepts; its own setstate decides (numpy trusts the flags of versions 3 and 4)
    ("V8", (3, "|", None, None, None, 8, 1, 63)),      # no fields, flags say objects
    ("O8", (3, "|", None, None, None, -1, -1, 0)),     # object descr, flags say none
    ("f8", (3, "<", None, None, None, 4, 1, 0)),       # fixed kind: elsize of the state is ignored
    ("V8", (3, "|", None, None, None, 100, 1, 0)),     # flexible kind: elsize of the state wins
    ("U5", (3, "<", None, None, None, 7, 4, 0)),
    ("V8", (4, "|", None, None, None, 8, 1, 1, None)),
]


@pytest.mark.parametrize(("descr", "state"), CRAFTED, ids=repr)
def test_dtype_info_follows_numpy_setstate(descr: str, state: tuple) -> None:
    real = np.dtype(descr, False, True)  # copy=True: a private instance, setstate does not touch the singleton
    real.__setstate__(state)
    assert pickle_joblib.dtype_info(_symbolic_dtype(_Reduce(descr, state))) == (real.itemsize, real.hasobject)


@pytest.mark.parametrize("state", [(2, "|", None, None, None, 8, 1), (3, "|", None, None, None, 8, 1, "x"),
                                   (3, "|", None, None, None, 8, 1, 0, None, 1)], ids=repr)
def test_dtype_info_refuses_states_it_does_not_model(state: tuple) -> None:
    assert pickle_joblib.dtype_info(_symbolic_dtype(_Reduce("V8", state))) is None


def test_dtype_info_requires_numpy_dtype_class() -> None:
    class Other:
        def __reduce__(self):
            return (np.ndarray, ("f8", False, True), (3, "<", None, None, None, -1, -1, 0))

    assert pickle_joblib.dtype_info(_symbolic_dtype(Other())) is None


# -- the two readings of one joblib stream ------------------------------------------------------------------

def _worst(data: bytes, name: str = "x.pkl") -> tuple[Severity, set[str]]:
    _, findings = scan_data(data, name)
    worst = max((f.severity for f in findings), key=lambda s: s.rank, default=Severity.INFO)
    return worst, rule_ids(findings)


def test_raw_array_bytes_are_scanned_as_opcodes_for_plain_loaders() -> None:
    data = wrapper_pickle(PAYLOAD_OPS, np.dtype("u1"), (len(PAYLOAD_OPS),))
    worst, ids = _worst(data)
    assert worst is Severity.CRITICAL and "PICKLE-DANGEROUS-CALL" in ids


def test_honest_raw_array_stays_clean() -> None:
    arr = np.random.default_rng(1).standard_normal(257)
    data = wrapper_pickle(b"\x0f" + b"\xff" * 15 + arr.tobytes(), np.dtype("f8"), (257,), align=16)
    worst, _ = _worst(data)
    assert worst <= Severity.LOW


def test_plain_reading_keeps_libraries_no_table_names_high() -> None:
    """A payload in array bytes importing a third-party module the policy tables do not name (sympy's
    `sympify` evaluates its argument) is not excused as memo-shift garbage: only recombined names are."""
    report = scan_path(HOSTILE / "joblib_array_opcodes_library.pkl")
    assert report.verdict is not Verdict.CLEAN
    hits = [f for f in report.findings if "sympy.sympify" in f.message]
    assert hits and all(f.severity.rank >= Severity.HIGH.rank for f in hits)


@pytest.mark.parametrize("name", sorted(p.name for p in BENIGN.glob("*.joblib")
                                        if p.name.startswith(("list_", "dict_"))))
def test_containers_of_object_arrays_stay_clean(name: str) -> None:
    """Several object arrays in one joblib file: read plainly, their nested pickles meet the outer memo and
    import recombined names (`NumpyArrayWrapper.dtype`) or hand STACK_GLOBAL an array; the loader raises."""
    report = scan_path(BENIGN / name)
    assert report.verdict is Verdict.CLEAN, [(f.rule_id, f.message) for f in report.findings]


def test_no_allowed_stdlib_name_is_a_str() -> None:
    """The plain reading treats an allowed global as never an exact str (STACK_GLOBAL raises on it): check
    that every allow-listed standard-library name resolves to something other than a str or bytes."""
    import importlib

    from scanner.formats.pickle.policy import tables
    from scanner.rules import load_ruleset

    checked = 0
    for full in sorted(tables(load_ruleset()).allow):
        parts = full.split(".")
        if parts[0] not in sys.stdlib_module_names:
            continue
        for i in range(len(parts) - 1, 0, -1):
            try:
                obj = importlib.import_module(".".join(parts[:i]))
            except ImportError:
                continue
            try:
                for part in parts[i:]:
                    obj = getattr(obj, part)
            except AttributeError:
                break
            checked += 1
            assert not isinstance(obj, (str, bytes)), full
            break
    assert checked > 50


def test_opcodes_in_alignment_padding_are_found() -> None:
    body = PAYLOAD_OPS[1:]
    pad = b"c" + body + b"N0" * ((0x63 - len(body)) // 2) + b"N" * ((0x63 - len(body)) % 2)
    data = wrapper_pickle(pad + bytes(16), np.dtype("u1"), (16,), align=16)
    worst, _ = _worst(data)
    assert worst is Severity.CRITICAL


def _payload_pickle(multiple: int) -> bytes:
    body = b"\x80\x02" + PAYLOAD_OPS + b"N"
    pad = (-(len(body) + 1)) % multiple
    if pad % 2:
        body, pad = body + b"0K\x00", (pad - 3) % multiple
    return body + b"0N" * (pad // 2) + b"."


def test_dtype_flags_decide_nested_pickle() -> None:
    # numpy trusts the state's flags: 'V8' flagged NPY_ITEM_HASOBJECT makes joblib read a nested pickle
    nested = _payload_pickle(8)
    assert len(nested) % 8 == 0
    data = wrapper_pickle(nested, _Reduce("V8", (3, "|", None, None, None, 8, 1, 63)), (len(nested) // 8,))
    worst, _ = _worst(data)
    assert worst is Severity.CRITICAL


def test_wrapper_inside_nested_object_pickle_is_not_skipped() -> None:
    # joblib reads object arrays with a plain Unpickler: a wrapper there has no array section
    inner = wrapper_pickle(PAYLOAD_OPS, np.dtype("u1"), (len(PAYLOAD_OPS),))
    data = wrapper_pickle(inner, np.dtype("O"), (1,))
    worst, _ = _worst(data)
    assert worst is Severity.CRITICAL


def test_wrapper_built_by_calling_the_class_is_not_sized_from_state() -> None:
    with fake_joblib() as (W, _):
        class Call:
            def __reduce__(self):
                return (W, (np.ndarray, (4,), "C", np.dtype("u1")), {"shape": (4,), "dtype": np.dtype("u1")})

        head = pickle.dumps(Call(), protocol=2)
    _, findings = scan_data(head[:-1] + bytes(4) + b".", "x.pkl")
    assert any(f.rule_id == "PICKLE-JOBLIB-ARRAY" and f.severity >= Severity.HIGH for f in findings)


def test_build_on_a_value_derived_from_a_wrapper_is_reported() -> None:
    import copy

    with fake_joblib() as (W, _):
        w = W()  # no attributes: NEWOBJ without BUILD, nothing for joblib to read yet

        class Derived:
            def __reduce__(self):
                return (copy.copy, (w,), {"shape": (4,), "dtype": np.dtype("u1")})

        head = pickle.dumps([Derived()], protocol=2)
    _, findings = scan_data(head, "x.pkl")
    assert any(f.rule_id == "PICKLE-JOBLIB-ARRAY" and "built from a joblib array wrapper" in f.message
               for f in findings), [(f.rule_id, f.message) for f in findings]


# -- old joblib companions ------------------------------------------------------------------------------------

def _compat(folder: Path, filename: str) -> Path:
    with fake_joblib() as (_, ND):
        w = ND()
        w.__dict__.update(filename=filename, subclass=np.ndarray, allow_mmap=True)
        data = pickle.dumps({"coef": w}, protocol=2)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.pkl").write_bytes(data)
    return folder / "model.pkl"


def _joblib_array(report) -> list:
    return [f for f in report.findings if f.rule_id == "PICKLE-JOBLIB-ARRAY" and f.severity >= Severity.HIGH]


def test_companion_present_and_honest_is_clean(tmp_path: Path) -> None:
    p = _compat(tmp_path / "m", "model.pkl_01.npy")
    np.save(tmp_path / "m" / "model.pkl_01.npy", np.arange(6.0))
    assert scan_path(p).verdict is Verdict.CLEAN


def test_companion_with_object_pickle_is_scanned(tmp_path: Path) -> None:
    p = _compat(tmp_path / "m", "sub/a.npy")
    (tmp_path / "m" / "sub").mkdir()
    (tmp_path / "m" / "sub" / "a.npy").write_bytes(b"\x80\x02" + PAYLOAD_OPS + b"N.")
    report = scan_path(p)
    assert any(f.rule_id == "PICKLE-DANGEROUS-CALL" for f in report.findings)


def test_companion_of_a_gzip_joblib_file_resolves_next_to_it(tmp_path: Path) -> None:
    import gzip

    p = _compat(tmp_path / "m", "model.pkl_01.npy")
    gz = p.with_suffix(".pkl.gz")
    gz.write_bytes(gzip.compress(p.read_bytes()))
    p.unlink()
    (tmp_path / "m" / "model.pkl_01.npy").write_bytes(b"\x80\x02" + PAYLOAD_OPS + b"N.")
    assert any(f.rule_id == "PICKLE-DANGEROUS-CALL" for f in scan_path(gz).findings)


@pytest.mark.parametrize("name", ["missing.npy", "../outside.npy", "/etc/passwd", "C:\\x.npy", "link.npy"])
def test_companion_not_scannable_is_reported(tmp_path: Path, name: str) -> None:
    p = _compat(tmp_path / "m", name)
    (tmp_path / "outside.npy").write_bytes(b"\x80\x02" + PAYLOAD_OPS + b"N.")
    if name == "link.npy":
        os.symlink(tmp_path / "outside.npy", tmp_path / "m" / "link.npy")
    report = scan_path(p)
    assert _joblib_array(report), [(f.rule_id, f.message) for f in report.findings]
    assert report.verdict is not Verdict.CLEAN


# -- zip members np.load reads as .npy --------------------------------------------------------------------------

def _replace_storage(src: Path, member_data) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if "/data/" in info.filename and not info.filename.endswith(".pkl"):
                data = member_data(len(data))
            zout.writestr(info, data)
    return out.getvalue()


def test_storage_record_with_numeric_npy_is_clean() -> None:
    def numeric(n: int) -> bytes:
        buf = io.BytesIO()
        np.save(buf, np.zeros(n - 128, dtype=np.uint8))
        assert len(buf.getvalue()) == n
        return buf.getvalue()

    data = _replace_storage(HOSTILE / "torch_storage_is_npy.pt", numeric)
    _, findings = scan_data(data, "m.pt")
    assert not [f for f in findings if f.severity >= Severity.MEDIUM], findings


def test_storage_record_with_object_npy_is_scanned() -> None:
    _, findings = scan_data((HOSTILE / "torch_storage_is_npy.pt").read_bytes(), "m.pt")
    assert "NPY-OBJECT-ARRAY" in rule_ids(findings)
    assert any(f.rule_id == "PICKLE-DANGEROUS-CALL" for f in findings)


# -- precision: Python 2 npy headers, legacy whole-module torch.save ------------------------------------------

def _npy(header: str, version: bytes, data: bytes) -> bytes:
    hl = "<H" if version == b"\x01\x00" else "<I"
    pre = 8 + struct.calcsize(hl)
    header += " " * ((64 - (pre + len(header) + 1) % 64) % 64) + "\n"
    return b"\x93NUMPY" + version + struct.pack(hl, len(header)) + header.encode("latin-1") + data


@pytest.mark.parametrize("version", [b"\x01\x00", b"\x02\x00"])
def test_python2_long_suffix_parses_in_v1_v2(version: bytes) -> None:
    raw = _npy("{'descr': '<f8', 'fortran_order': False, 'shape': (2L, 3L), }", version, bytes(48))
    _, findings = scan_data(raw, "a.npy")
    assert not [f for f in findings if f.severity >= Severity.MEDIUM], findings


def test_python2_long_suffix_rejected_in_v3_like_numpy() -> None:
    raw = _npy("{'descr': '<f8', 'fortran_order': False, 'shape': (2L, 3L), }", b"\x03\x00", bytes(48))
    _, findings = scan_data(raw, "a.npy")
    assert "NPY-MALFORMED" in rule_ids(findings)


def test_npy_subarray_tuple_descr_sizes_like_descr_to_dtype() -> None:
    raw = _npy("{'descr': ('<f4', (2,)), 'fortran_order': False, 'shape': (3,), }", b"\x01\x00", bytes(24))
    _, findings = scan_data(raw, "a.npy")
    assert not [f for f in findings if f.severity >= Severity.MEDIUM], findings
    _, findings = scan_data(raw + b"x", "a.npy")
    assert "NPY-TRAILING-DATA" in rule_ids(findings)


def test_legacy_whole_module_torch_save_is_not_malformed() -> None:
    report = scan_path(BENIGN / "torch_legacy_whole_module.pt")
    assert "TORCH-MALFORMED" not in rule_ids(report.findings)
    assert report.verdict is Verdict.CLEAN


# -- the real loaders run the hostile fixtures (skips without the oracle venv) ---------------------------------

@pytest.mark.skipif(not ORACLE.exists(), reason="no oracle venv with numpy/joblib/torch")
def test_real_loaders_fire_on_hostile_fixtures() -> None:
    sys.path.insert(0, str(FIXTURES))
    try:
        import gen_soundness_containers as gen
    finally:
        sys.path.pop(0)
    cases = [("joblib_padding_opcodes.pkl", "pickle"), ("joblib_array_opcodes.pkl", "pickle"),
             ("joblib_dtype_flags_object.pkl", "joblib"), ("joblib_nested_wrapper.pkl", "joblib"),
             ("torch_storage_is_npy.pt", "npz"), ("compat_companion/model.pkl", "joblib")]
    for name, loader in cases:
        fired, outcome = gen.run_loader(HOSTILE / name, loader, python=str(ORACLE))
        if "No module named" in outcome:
            pytest.skip(outcome)
        assert fired, (name, loader, outcome)
        assert scan_path(HOSTILE / name).verdict is Verdict.MALICIOUS
    fired, outcome = gen.run_loader(HOSTILE / "joblib_array_opcodes_library.pkl", "pickle", python=str(ORACLE))
    assert fired, outcome
    for name in ("list_two_dicts.joblib", "list_object_arrays.joblib", "dict_names_weights.joblib"):
        fired, outcome = gen.run_loader(BENIGN / name, "joblib", python=str(ORACLE))
        assert not fired and outcome == "loaded", (name, outcome)
    fired, outcome = gen.run_loader(BENIGN / "joblib_structured_object.pkl", "joblib", python=str(ORACLE))
    assert not fired and outcome == "loaded"
