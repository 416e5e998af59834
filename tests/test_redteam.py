"""Red-team findings turned into focused checks: resolvers whose constant target is allowed stay quiet, the
same resolvers reaching a gadget stay loud, numpy's RNG constructors call what they are handed, quoted names
in TorchScript code are data, two-part torch suffixes are not extension mismatches."""

from __future__ import annotations

import sys

from conftest import FIXTURES, scan_data
from scanner.findings import Severity, Verdict

sys.path.insert(0, str(FIXTURES))
from gen_pickle import CMD, call, g, p2, p4, sg, u  # noqa: E402


def _loud(findings) -> list[tuple[str, str]]:
    return [(f.rule_id, f.severity.value) for f in findings if f.severity > Severity.INFO]


def _worst(findings) -> Severity:
    return max((f.severity for f in findings), key=lambda s: s.rank)


def test_getattr_to_allowed_classmethod_is_quiet() -> None:
    # zoneinfo.ZoneInfo pickles as getattr(ZoneInfo, '_unpickle')(key, 1)
    data = p2(call(call(g("builtins", "getattr"), g("zoneinfo", "ZoneInfo"), u("_unpickle")), u("UTC"), b"K\x01"))
    assert _loud(scan_data(data)[1]) == []


def test_getattr_to_gadget_stays_critical() -> None:
    data = p2(call(call(g("builtins", "getattr"), g("zoneinfo", "ZoneInfo"), u("__init__")), u("UTC")))
    assert _worst(scan_data(data)[1]) is Severity.CRITICAL
    data = p2(call(g("builtins", "getattr"), g("zoneinfo", "ZoneInfo"), u("_unpickle")) + b"0"
              + call(call(g("builtins", "getattr"), g("os", "path"), u("os.system")), u(CMD)))
    assert _worst(scan_data(data)[1]) is Severity.CRITICAL


def test_old_numpy_ufunc_pickle_is_quiet_but_resolver_to_os_is_not() -> None:
    ufunc = p2(call(g("numpy.core", "_ufunc_reconstruct"), u("numpy"), u("log1p")))
    assert _loud(scan_data(ufunc)[1]) == []
    evil = p2(call(call(g("numpy.core", "_ufunc_reconstruct"), u("os"), u("system")), u(CMD)))
    fs = scan_data(evil)[1]
    assert any(f.rule_id == "PICKLE-DANGEROUS-CALL" and f.severity is Severity.CRITICAL and "os.system" in f.message
               for f in fs)


def test_getitem_walks_resolve_like_getattr() -> None:
    data = p4(call(call(g("operator", "getitem"), sg("builtins", "__dict__"), u("eval")), u("1+1")))
    assert _worst(scan_data(data)[1]) is Severity.CRITICAL


def test_numpy_rng_ctors_call_their_second_argument() -> None:
    for ctor in ("__randomstate_ctor", "__generator_ctor"):
        data = p2(call(g("numpy.random._pickle", ctor), u(CMD), g("os", "system")))
        fs = scan_data(data)[1]
        assert any(f.rule_id == "PICKLE-DANGEROUS-CALL" and f.severity is Severity.CRITICAL for f in fs), ctor
    benign = p2(call(g("numpy.random._pickle", "__randomstate_ctor"), u("MT19937"),
                     g("numpy.random._pickle", "__bit_generator_ctor")))
    assert _loud(scan_data(benign)[1]) == []


def test_realworld_fixtures_scan_clean_and_redteam_hostile_flagged() -> None:
    from conftest import scan_path

    realworld = sorted((FIXTURES / "benign" / "realworld").glob("*"))
    assert len(realworld) >= 80
    for p in (FIXTURES / "hostile" / "redteam").glob("*"):
        assert scan_path(p).verdict is not Verdict.CLEAN, p.name


def test_torchscript_quoted_exception_name_is_data() -> None:
    import io
    import zipfile

    code = b'def forward(self, x):\n    ops.prim.RaiseException("bad", "builtins.ValueError")\n    return x\n'
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("m/data.pkl", p2(b"}"))
        z.writestr("m/constants.pkl", p2(b")"))
        z.writestr("m/version", b"3\n")
        z.writestr("m/code/__torch__.py", code)
    assert not [f for f in scan_data(buf.getvalue(), "m.pt")[1] if f.rule_id == "TORCHSCRIPT-CODE-CALL"]
    evil = code.replace(b"return x", b"return builtins.eval(x)")
    buf2 = io.BytesIO()
    with zipfile.ZipFile(buf2, "w") as z:
        z.writestr("m/data.pkl", p2(b"}"))
        z.writestr("m/constants.pkl", p2(b")"))
        z.writestr("m/version", b"3\n")
        z.writestr("m/code/__torch__.py", evil)
    assert [f for f in scan_data(buf2.getvalue(), "m.pt")[1] if f.rule_id == "TORCHSCRIPT-CODE-CALL"]


def test_pth_tar_names_torch_output() -> None:
    data = (FIXTURES / "benign" / "realworld" / "old_checkpoint_namespace.pth.tar").read_bytes()
    assert not [f for f in scan_data(data, "model_best.pth.tar")[1] if f.rule_id == "FORMAT-EXTENSION-MISMATCH"]
    assert [f for f in scan_data(data, "weights.tar")[1] if f.rule_id == "FORMAT-EXTENSION-MISMATCH"]
