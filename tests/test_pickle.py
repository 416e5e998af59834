from __future__ import annotations

import io
import pickle
import re
import struct
import sys
import zipfile

import pytest

from conftest import FIXTURES, rule_ids, scan_data, scan_path
from scanner.context import ScanContext
from scanner.findings import Severity
from scanner.formats.pickle.ops import OpError, read_op
from scanner.formats.pickle.policy import Classifier
from scanner.formats.pickle.scan import Call, Global, looks_like_pickle, scan_pickle
from scanner.limits import Limits
from scanner.rules import DenyEntry, Policy, load_ruleset
from scanner.source import BytesSource

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

sys.path.insert(0, str(FIXTURES))
from gen_pickle import CMD, by, call, g, os_system, p2, p4, proto, sg, tup, u  # noqa: E402

RULES = load_ruleset()
MANIFEST = tomllib.loads((FIXTURES / "manifest-pickle.toml").read_text(encoding="utf-8"))


def ctx(policy: Policy | None = None) -> ScanContext:
    return ScanContext(RULES, policy or Policy())


def scan(data: bytes, policy: Policy | None = None, multi: bool = True):
    c = ctx(policy)
    results = scan_pickle(BytesSource("t.pkl", None, data), c, data, multi=multi)
    return results, [f for r in results for f in r.findings]


def worst(findings) -> Severity | None:
    return max((f.severity for f in findings), key=lambda s: s.rank, default=None)


# -- tokenizer: CPython _pickle.c semantics ------------------------------------------------------------

@pytest.mark.parametrize(("line", "value"), [
    (b"I0x10\n", 16), (b"I010\n", 8), (b"I00\n", False), (b"I01\n", True), (b"I 1\n", True),
    (b"I-5\n", -5), (b"I1_000\n", 1000), (b"I99999999999999999999\n", 99999999999999999999),
    (b"L0x10L\n", 16), (b"L12L\n", 12), (b"L7\n", 7),
])
def test_text_integers_follow_the_c_unpickler(line: bytes, value: object) -> None:
    op = read_op(line, 0, len(line))
    assert op.arg == value and type(op.arg) is type(value)


@pytest.mark.parametrize("line", [b"I08\n", b"Ixyz\n", b"I\n", b"L010L\n", b"I0x\n"])
def test_text_integers_rejected_by_cpython_are_errors(line: bytes) -> None:
    with pytest.raises(OpError):
        read_op(line, 0, len(line))


def test_int_differential_is_reported_and_value_is_cpythons() -> None:
    results, findings = scan(b"I0x10\n.")
    assert results[0].value == 16
    assert "PICKLE-TEXT-DIFFERENTIAL" in rule_ids(findings)
    _, clean = scan(b"I16\n.")
    assert not clean


def test_declared_4gb_length_is_truncation_not_allocation() -> None:
    data = proto(2) + b"X\xff\xff\xff\xff" + b"a" * 90
    results, findings = scan(data)
    assert not results[0].complete
    assert rule_ids(findings) == {"PICKLE-MALFORMED"}
    assert "truncated" in findings[0].message


# -- calls, imports and evidence -----------------------------------------------------------------------

def test_os_system_evidence_and_location() -> None:
    data = os_system()
    (res,), findings = scan(data)
    (f,) = findings
    assert f.rule_id == "PICKLE-DANGEROUS-CALL" and f.severity is Severity.CRITICAL
    assert f.evidence == "os.system('echo pwned')"
    assert f.location.opcode_index == 5 and f.location.offset == data.index(b"R")
    assert res.globals == [("os", "system")] and res.complete


def test_getattr_import_chain_resolves_to_os_system() -> None:
    data = p2(call(call(g("builtins", "getattr"), call(g("builtins", "__import__"), u("os")), u("system")), u(CMD)))
    _, findings = scan(data)
    ev = [f.evidence for f in findings if f.rule_id == "PICKLE-DANGEROUS-CALL"]
    assert "builtins.getattr(builtins.__import__('os'), 'system')('echo pwned')" in ev
    assert any("calls os.system" in f.message for f in findings)


def test_real_reduce_pickle_is_critical_in_every_protocol() -> None:
    class Payload:
        def __reduce__(self):  # writing only: never unpickled
            import os
            return (os.system, (CMD,))

    for protocol in range(6):
        _, findings = scan(pickle.dumps(Payload(), protocol=protocol))
        assert worst(findings) is Severity.CRITICAL, protocol


def test_python2_names_map_only_below_protocol_3() -> None:
    low = proto(2) + call(g("__builtin__", "eval"), u("1")) + b"."
    high = proto(3) + call(g("__builtin__", "eval"), u("1")) + b"."
    (r_low,), f_low = scan(low)
    assert r_low.globals == [("builtins", "eval")] and worst(f_low) is Severity.CRITICAL
    (r_high,), f_high = scan(high)
    assert r_high.globals == [("__builtin__", "eval")] and worst(f_high) is Severity.HIGH  # P29: no such module


def test_commands_maps_to_subprocess() -> None:
    (res,), findings = scan(p2(call(g("commands", "getoutput"), u(CMD))))
    assert res.globals == [("subprocess", "getoutput")]
    assert worst(findings) is Severity.CRITICAL


def test_memo_feeds_stack_global() -> None:
    data = p4(u("os") + b"\x94" + u("system") + b"\x94" + b"00" + b"h\x00h\x01\x93" + tup(u(CMD)) + b"R")
    (res,), findings = scan(data)
    assert res.globals == [("os", "system")]
    assert worst(findings) is Severity.CRITICAL


def test_stack_global_edge_cases_do_not_crash() -> None:
    for data in (proto(4) + b"\x93.", p4(by(b"os") + by(b"system") + b"\x93"), p4(u("os") + b"\x93")):
        (res,), findings = scan(data)
        assert not res.complete and "PICKLE-MALFORMED" in rule_ids(findings)


def test_unknown_global_is_high_with_exact_name() -> None:
    _, findings = scan(p2(call(g("mylib.evil", "Thing"), u("x"))))
    (f,) = findings
    assert f.rule_id == "PICKLE-UNKNOWN-GLOBAL" and f.severity is Severity.HIGH and "mylib.evil.Thing" in f.message


def test_denied_import_without_call_is_still_reported() -> None:
    _, findings = scan(p2(b"}" + u("f") + g("subprocess", "Popen") + b"s"))
    (f,) = findings
    assert f.rule_id == "PICKLE-DANGEROUS-GLOBAL" and f.severity is Severity.HIGH


def test_popped_call_and_inst_obj_forms() -> None:
    for data in (p2(call(g("os", "system"), u(CMD)) + b"0N"), b"(" + b"S'x'\n" + b"ios\nsystem\n.",
                 p2(b"(" + g("os", "system") + u(CMD) + b"o")):
        _, findings = scan(data)
        assert worst(findings) is Severity.CRITICAL


def test_copyreg_reconstructor_counts_its_class_as_called() -> None:
    data = p2(call(g("copyreg", "_reconstructor"), g("subprocess", "Popen"), g("builtins", "object"), b"N"))
    _, findings = scan(data)
    assert any(f.rule_id == "PICKLE-DANGEROUS-CALL" and "via copyreg._reconstructor" in f.message for f in findings)


def test_setstate_hijack_calls_planted_callable() -> None:
    data = p2(call(g("collections", "OrderedDict")) + b"}" + u("__setstate__") + g("os", "system") + b"sb"
              + u(CMD) + b"b")
    _, findings = scan(data)
    assert {"PICKLE-SETSTATE-HIJACK", "PICKLE-DANGEROUS-CALL"} <= rule_ids(findings)
    assert worst(findings) is Severity.CRITICAL


def test_payload_then_garbage_keeps_the_call() -> None:
    data = proto(2) + call(g("os", "system"), u(CMD)) + b"\xff"
    (res,), findings = scan(data)
    assert not res.complete
    assert {"PICKLE-DANGEROUS-CALL", "PICKLE-MALFORMED"} <= rule_ids(findings)


def test_concatenated_pickles_and_trailing_bytes() -> None:
    data = p2(b"}") + os_system() + b"junk"
    results, findings = scan(data)
    assert len(results) == 2 and results[1].complete
    assert "PICKLE-TRAILING-DATA" in rule_ids(findings) and worst(findings) is Severity.CRITICAL
    single, f1 = scan(data, multi=False)
    assert len(single) == 1 and not f1 and single[0].end == len(p2(b"}"))


def test_frame_straddle_is_reported() -> None:
    data = proto(4) + b"\x95" + struct.pack("<Q", 5) + call(sg("os", "system"), u(CMD)) + b"."
    _, findings = scan(data)
    assert "PICKLE-FRAME-MISMATCH" in rule_ids(findings)


def test_real_frames_are_clean() -> None:
    data = pickle.dumps({"a": list(range(20000)), "b": "x" * 70000}, protocol=5)
    _, findings = scan(data)
    assert not findings


def test_extension_codes_and_persistent_ids() -> None:
    _, f_ext = scan(p2(b"\x82\x01"))
    assert rule_ids(f_ext) == {"PICKLE-EXTENSION-CODE"}
    (res,), f_pid = scan(p2(tup(u("os.system"), u(CMD)) + b"Q"))
    assert rule_ids(f_pid) == {"PICKLE-PERSISTENT-ID"} and res.persistent_ids == [("os.system", CMD)]


# -- nested payloads -----------------------------------------------------------------------------------

def test_base64_nested_pickle_is_decoded_and_scanned() -> None:
    import base64

    data = p2(call(g("pickle", "loads"), call(g("base64", "b64decode"), u(base64.b64encode(os_system()).decode()))))
    _, findings = scan(data)
    inner = [f for f in findings if f.location.member and "<payload@" in f.location.member]
    assert inner and inner[0].evidence == "os.system('echo pwned')" and inner[0].severity is Severity.CRITICAL


def test_nested_depth_is_bounded() -> None:
    data = os_system()
    for _ in range(8):
        data = p2(call(g("pickle", "loads"), by(data)))
    _, findings = scan(data)
    assert "LIMIT-EXCEEDED" in rule_ids(findings)
    assert worst(findings) is Severity.CRITICAL  # what could not be scanned stays at the deny severity


def test_load_from_bytes_with_clean_payload_is_info_only() -> None:
    data = p2(call(g("torch.storage", "_load_from_bytes"), by(pickle.dumps([1, 2], protocol=2))))
    _, findings = scan(data)
    assert all(f.severity is Severity.INFO for f in findings)


# -- policy ----------------------------------------------------------------------------------------------

def test_user_allow_list_exact_and_pattern() -> None:
    data = p2(call(g("mylib.models", "Net"), u("x")))
    assert scan(data)[1]
    assert not scan(data, Policy(allow_globals=("mylib.models.Net",)))[1]
    assert not scan(data, Policy(allow_globals=("mylib.*",)))[1]
    assert scan(data, Policy(allow_globals=("mylibx.*",)))[1]


def test_user_deny_list_overrides_allow_list() -> None:
    data = p2(call(g("collections", "OrderedDict")))
    assert not scan(data)[1]
    deny = (DenyEntry("collections.OrderedDict", Severity.MEDIUM, "house rule"),)
    (f,) = scan(data, Policy(deny_globals=deny))[1]
    assert f.rule_id == "PICKLE-DANGEROUS-CALL" and f.severity is Severity.MEDIUM


def test_deny_matches_components_and_tails() -> None:
    c = Classifier(RULES, Policy())
    assert c.classify("torch.serialization.os.system").severity is Severity.CRITICAL
    assert c.classify("collections.__builtins__.eval").severity is Severity.CRITICAL
    assert c.classify("os.path.join").severity is Severity.HIGH
    assert c.classify("subprocess._posixsubprocess.fork_exec").severity is Severity.CRITICAL
    assert c.classify("osx.system").status == "unknown"


def test_no_allowed_name_sits_under_a_denied_prefix() -> None:
    c = Classifier(RULES, Policy())
    exempt = {n for g in RULES.doc("pickle-globals").get("allow", []) if g.get("overrides_deny") for n in g["names"]}
    assert exempt and all(n not in c.t.deny for n in exempt)  # only whole-module denies are overridden
    for name in c.t.allow - exempt:
        parts = name.split(".")
        assert not any(".".join(parts[:i]) in c.t.deny for i in range(1, len(parts) + 1)), name
    for risky in ("builtins.getattr", "functools.partial", "builtins.eval", "operator.attrgetter"):
        assert risky not in c.t.allow


# -- limits ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("limit", "data"), [
    ("max_pickle_stack", proto(2) + b"N" + b"2" * 500 + b"."),
    ("max_pickle_opcodes", proto(2) + b"N0" * 500 + b"N."),
    ("max_pickle_memo", proto(4) + b"N" + b"\x94" * 500 + b"."),
    ("max_pickle_streams", (b"N." * 200)),
])
def test_limits_end_in_limit_exceeded(limit: str, data: bytes) -> None:
    policy = Policy(limits=Limits().with_overrides({limit: 100}))
    _, findings = scan(data, policy)
    assert any(f.rule_id == "LIMIT-EXCEEDED" and limit in (f.evidence or "") for f in findings)


# -- joblib ------------------------------------------------------------------------------------------------

def test_joblib_arrays_are_skipped_exactly() -> None:
    data = (FIXTURES / "benign/joblib/arrays.joblib").read_bytes()
    results, findings = scan(data)
    assert len(results) == 1 and results[0].complete and results[0].end == len(data)
    assert not findings


def test_joblib_truncated_array_is_a_finding() -> None:
    data = (FIXTURES / "benign/joblib/pipeline.joblib").read_bytes()
    cut = data[: data.index(b"numpy_array_alignment_bytes") + 40]
    _, findings = scan(cut)
    assert {"PICKLE-JOBLIB-ARRAY", "PICKLE-MALFORMED"} & rule_ids(findings)


def test_joblib_object_array_nested_pickle_is_scanned() -> None:
    wrapper = (sg("joblib.numpy_pickle", "NumpyArrayWrapper") + b")\x81" + b"}(" + u("dtype")
               + call(sg("numpy", "dtype"), u("O8"), b"\x89", b"\x88") + u("shape") + b"K\x01\x85" + b"ub")
    data = p4(wrapper)
    data = data[:-1] + os_system() + b"."
    _, findings = scan(data)
    assert worst(findings) is Severity.CRITICAL


# -- benign files written by the real libraries --------------------------------------------------------------

def _pickles_in(path):
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            return [(n, z.read(n)) for n in z.namelist() if n.endswith(".pkl")]
    return [(path.name, path.read_bytes())]


@pytest.mark.parametrize("lib", ["torch", "transformers"])
def test_torch_zip_data_pkl_members_are_clean(lib: str) -> None:
    for path in sorted((FIXTURES / "benign" / lib).glob("*")):
        if not zipfile.is_zipfile(path):
            continue
        for name, data in _pickles_in(path):
            results, findings = scan(data)
            assert not [f for f in findings if f.severity > Severity.INFO], (path.name, name, findings)
            assert results[0].persistent_ids or "training_args" in path.name


def test_legacy_torch_stacked_pickles_read_one_at_a_time() -> None:
    data = (FIXTURES / "benign/torch/legacy_dict.pt").read_bytes()
    pos, values = 0, []
    for _ in range(5):
        (r,) = scan_pickle(BytesSource("l.pt", None, data), ctx(), data, pos, multi=False)
        assert r.complete and not r.findings
        values.append(r.value)
        pos = r.end
    assert values[0] == 0x1950A86A20F9469CFC6C and values[1] == 1001 and isinstance(values[4], list)


def test_hostile_manifest_entries_hit_their_rule() -> None:
    for entry in MANIFEST["hostile"]:
        report = scan_path(FIXTURES / entry["path"])
        assert any(f.rule_id == entry["rule"] and f.severity.value == entry["severity"] for f in report.findings), entry
        assert report.verdict.value != "clean"


def test_every_threat_class_has_a_fixture() -> None:
    threats = {e["threat"] for e in MANIFEST["hostile"]}
    assert threats >= {f"P{i:02d}" for i in range(1, 30)}


def test_raw_benign_pickles_are_clean() -> None:
    for entry in MANIFEST["benign"]:
        path = FIXTURES / entry["path"]
        data = path.read_bytes()
        if data[:2] != b"\x80" or zipfile.is_zipfile(path):
            continue
        _, findings = scan(data)
        assert not [f for f in findings if f.severity > Severity.INFO], (entry, findings)


# -- sniffing headless protocol 0/1 pickles ---------------------------------------------------------------

@pytest.mark.parametrize("protocol", [0, 1])
def test_text_pickles_are_recognised(protocol: int) -> None:
    data = pickle.dumps({"a": [1, 2.5, "x"], "b": (None, True)}, protocol=protocol)
    assert looks_like_pickle(data[:4096], len(data))
    assert scan_data(data, "x.bin")[0] == "pickle"


def test_long_text_pickle_truncated_at_window_is_recognised() -> None:
    data = pickle.dumps(list(range(5000)), protocol=0)
    assert len(data) > 4096 and looks_like_pickle(data[:4096], len(data))


@pytest.mark.parametrize("text", [
    b"Hello world, this is prose.\n", b'{"a": 1, "b": [1, 2]}', b"a,b,c\n1,2,3\n", b"N. Smith wrote this.\n",
    "Größenordnung äöü – naïve café\n".encode(), "日本語のテキスト\n".encode(), b"I am here\n", b"(hello)\n",
    b"Please read me\n", b"0 1 2 3\n", b"\n\n", b"# comment\nimport os\n",
])
def test_text_is_not_a_pickle(text: bytes) -> None:
    assert not looks_like_pickle(text, len(text))


def test_python_source_is_not_a_pickle() -> None:
    src = (FIXTURES / "gen_pickle.py").read_bytes()
    assert not looks_like_pickle(src[:4096], len(src))
    from scanner.formats.pickle import scan as engine

    body = io.BytesIO(engine.__doc__.encode()).read()
    assert not looks_like_pickle(body, len(body))


def test_found_objects_are_symbolic() -> None:
    (res,), _ = scan(p2(call(g("collections", "OrderedDict"))))
    assert isinstance(res.value, Call) and isinstance(res.value.func, Global)
    assert res.value.func.full == "collections.OrderedDict"


# -- inline loop: same results as the general path ------------------------------------------------------

def _general_only(data: bytes, policy: Policy | None = None) -> tuple[list, list]:
    """The same scan with every opcode forced through Machine._step (no inline loop)."""
    from scanner.formats.pickle import machine as pickle_machine

    real = pickle_machine.Machine._loop

    def stepped(self, max_ops: int, max_stack: int, max_memo: int) -> object:
        while True:
            value = self._step(max_ops, max_stack, max_memo)
            if value is not pickle_machine._RUNNING:
                return value

    pickle_machine.Machine._loop = stepped
    try:
        return scan(data, policy)
    finally:
        pickle_machine.Machine._loop = real


def _key(findings) -> list[tuple]:
    return [(f.rule_id, f.severity, f.message, f.location, f.evidence) for f in findings]


@pytest.mark.parametrize("data", [
    p2(b"h\x05"),                                             # memo miss
    p2(b"(N\x94"),                                            # MEMOIZE right after MARK
    p2(b"}(Nu"),                                              # odd SETITEMS
    p2(b"}(]Nu"),                                             # unhashable key
    p2(b"N(e"),                                               # APPENDS on None
    p2(b"\x8c\x02\xff\xfe"),                                  # bad UTF-8
    p2(b"X\x05\x00\x00\x00ab"),                               # truncated
    proto(4) + b"\x95\x03\x00\x00\x00\x00\x00\x00\x00]K\x01a0N.",  # BININT1 straddles the frame end
    proto(4) + b"\x95\x02\x00\x00\x00\x00\x00\x00\x00]]aN.",  # frame ends exactly
    p2(b"]" + b"K\x01a" * 50 + b"0" + os_system()[2:-1]),
    p4(b"}" + b"(" + b"\x8c\x01k\x94K\x01" * 30 + b"u"),
])
def test_inline_loop_matches_the_general_path(data: bytes) -> None:
    for policy in (None, Policy(limits=Limits(max_pickle_stack=3, max_pickle_memo=4))):
        results, findings = scan(data, policy)
        ref_results, ref_findings = _general_only(data, policy)
        assert _key(findings) == _key(ref_findings)
        assert [(r.start, r.end, r.complete, r.globals) for r in results] == \
            [(r.start, r.end, r.complete, r.globals) for r in ref_results]
        assert repr(results[0].value) == repr(ref_results[0].value)


def test_general_opcodes_charge_more_of_the_budget() -> None:
    from scanner.formats.pickle.machine import GENERAL_COST

    inline = p2(b"N0" * 150 + b"N")  # 303 opcodes, PROTO and STOP outside the inline loop
    general = b"I1\n0" * 30 + b"N."  # 62 opcodes, the text ones outside it
    budget = 301 + 2 * GENERAL_COST
    assert 30 * (GENERAL_COST + 1) > budget
    policy = Policy(limits=Limits(max_pickle_opcodes=budget))
    assert not scan(inline, policy)[1]
    assert any(f.rule_id == "LIMIT-EXCEEDED" for f in scan(general, policy)[1])


def test_dotted_global_reimported_after_proto_switch_is_not_capped() -> None:
    """A dotted name first seen below protocol 4 (where it cannot resolve) and imported again after PROTO 4
    must be judged at the protocol that resolves it."""
    data = (b"\x80\x02cposixpath\nos.system\n0"
            b"\x80\x04\x8c\x09posixpath\x8c\x09os.system\x93\x8c\x0aecho pwned\x85R.")
    _fmt, findings = scan_data(data, "x.pkl")
    calls = [f for f in findings if f.rule_id == "PICKLE-DANGEROUS-CALL"]
    assert calls and calls[0].severity is Severity.CRITICAL


def test_string_arg_rules_match_the_dangerous_part_anywhere() -> None:
    """Each string_args rule flags its bad examples alone and embedded in a larger string (pandas parses zones
    out of 'datetime64[ns, <zone>]'), and leaves its good examples alone."""
    entries = RULES.doc("pickle-globals").get("string_args", [])
    assert entries
    for e in entries:
        pattern = re.compile(e["pattern"])
        assert e["bad"] and e["good"], e["callee_prefix"]
        for bad in e["bad"]:
            assert pattern.search(bad), bad
            assert pattern.search(f"datetime64[ns, {bad}]"), bad
        for good in e["good"]:
            assert not pattern.search(good), good


def test_dateutil_zone_inside_a_dtype_string_is_flagged() -> None:
    def dtype(text: str) -> bytes:
        raw = text.encode()
        return proto(2) + b"cpandas\nDatetimeTZDtype\nX" + struct.pack("<I", len(raw)) + raw + b"\x85R."
    bad = dtype("datetime64[ns, dateutil//etc/hostname]")
    assert "PICKLE-DANGEROUS-CALL" in rule_ids(scan(bad)[1])
    assert "PICKLE-DANGEROUS-CALL" not in rule_ids(scan(dtype("datetime64[ns, dateutil/Europe/Paris]"))[1])
