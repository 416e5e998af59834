"""Hydra configs are read as OmegaConf.load + hydra.utils.instantiate read them: any file name, YAML or JSON,
escaped keys and values, interpolated targets (fixtures/gen_soundness_configs.py proves the hostile ones)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import FIXTURES, scan_data, scan_path
from scanner.findings import Severity, Verdict
from scanner.formats.sidecars import hydra

ORACLE = Path(os.environ.get("MODELSEAL_ORACLE_PYTHON", "/work/oracle/bin/python"))
HOSTILE = FIXTURES / "hostile" / "soundness_configs"
BENIGN = FIXTURES / "benign" / "soundness_configs"
RULE = "SIDECAR-CONFIG-INSTANTIATION"


def _targets(text: str) -> list[hydra.Target]:
    roots = hydra.compose(text)
    assert roots is not None
    return list(hydra.targets(roots))


def _worst(data: bytes, name: str) -> Severity | None:
    _, findings = scan_data(data, name)
    sev = [f.severity for f in findings if f.rule_id == RULE]
    return max(sev, key=lambda s: s.rank) if sev else None


@pytest.mark.parametrize(("text", "names"), [
    ("a: s\nx: {_target_: 'o${a}.system'}\n", ("os.system",)),
    ("t: os.system\nx:\n  _target_: ${t}\n", ("os.system",)),
    ("x:\n  t: os.system\n  y:\n    _target_: ${..t}\n", ("os.system",)),
    ("x:\n  t: os.system\n  _target_: ${.t}\n", ("os.system",)),
    ("l: [os.system]\nx: {_target_: '${l[0]}'}\n", ("os.system",)),
    ("l: [os.system]\nx: {_target_: '${l.0}'}\n", ("os.system",)),
    ("x: {_target_: '${oc.select:nope,os.system}'}\n", ("os.system",)),
    ("k: os.system\nx: {_target_: '${oc.select:k,builtins.dict}'}\n", ("os.system",)),
    ("a: ${b}\nb: os.system\nx: {_target_: '${a}'}\n", ("os.system",)),
    ("m: sys\nn: t\nx: {_target_: 'o${n}.${m}tem'}\n", ("ot.system",)),  # a name, not os.system
    ("x: {_target_: 'plain\\${not}'}\n", ("plain${not}",)),
])
def test_interpolated_targets_resolve_like_omegaconf(text: str, names: tuple[str, ...]) -> None:
    (t,) = _targets(text)
    assert t.names == names and not t.unresolved


@pytest.mark.parametrize("value", ["${oc.env:X,os.system}", "${oc.decode:\"os.system\"}", "${nope}", "${a.${b}",
                                   "${my_resolver:1}", "${oc.create:{a: 1}}"])
def test_targets_the_file_does_not_decide_are_reported(value: str) -> None:
    (t,) = _targets(f"x:\n  _target_: '{value}'\n")
    assert t.unresolved
    assert _worst(f"x:\n  _target_: '{value}'\n".encode(), "c.yaml") is Severity.HIGH


def test_interpolation_cycles_and_fan_out_are_bounded() -> None:
    (t,) = _targets("a: ${b}\nb: ${a}\nx: {_target_: '${a}'}\n")
    assert t.unresolved
    chain = "".join(f"v{i}: ${{v{i + 1}}}${{v{i + 1}}}\n" for i in range(40)) + "v40: os.system\n"
    (t,) = _targets(chain + "x: {_target_: '${v0}'}\n")
    assert t.unresolved and not t.names  # deeper than the bound: reported, in bounded time


def test_shared_and_recursive_nodes_are_walked_once() -> None:
    laughs = "a: &a [{_target_: os.system}]\n" + "".join(
        f"{c}: &{c} [{', '.join(['*' + p] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi", strict=True))
    assert [t.names for t in _targets(laughs)] == [("os.system",)]
    assert [t.names for t in _targets("x: &x {_target_: os.system, self: *x}\n")] == [("os.system",)]


@pytest.mark.parametrize(("data", "name"), [
    (b'x: {"\\x5ftarget_": "os.sys\\x74em"}\n', "c.yaml"),
    (b'x:\n  ? "_tar\\\n    get_"\n  : os.system\n', "c.yaml"),
    (b'{"x": {"\\u005ftarget_": "os.system"}}', "c.json"),
    (b'{"x": {"_target_": "os.system"}}', "config.json"),
    (b'{"x": {"_target_": "os.system"}}', "tokenizer_config.json"),
    (b"x:\n  _target_: os.system\n", "run.cfg"),
    (b"x:\n  _target_: os.system\n", "README"),
    (b"- _target_: os.system\n", "list.yml"),
    (b"x:\n  <<: {_target_: os.system}\n", "merge.yaml"),
    (b"x: {a: 1, b: [{_target_: !!str os.system}]}\n", "c.yaml"),
])
def test_every_spelling_and_name_of_a_config_is_read(data: bytes, name: str) -> None:
    assert _worst(data, name) is Severity.CRITICAL


def test_prefilter_sees_escapes_of_the_key_letters_only() -> None:
    assert hydra.could_hold_targets(b'"\\U0000005ftarget_"')
    assert hydra.could_hold_targets(b'"_tar\\\r\nget_"')
    assert not hydra.could_hold_targets(b'path: "C:\\\\data\\\\new"\n')
    assert not hydra.could_hold_targets(b'{"tok": "\\u0120the"}')


def test_stdlib_and_public_writer_targets_fail_closed_user_code_stays_a_note() -> None:
    assert _worst(b"x: {_target_: wave.open, f: out, mode: wb}\n", "c.yaml") is Severity.MEDIUM
    assert _worst(b"x: {_target_: numpy.save, file: out, arr: [1]}\n", "c.yaml") is Severity.HIGH
    assert _worst(b"x: {_target_: hydra.utils.get_method, path: os.system}\n", "c.yaml") is Severity.CRITICAL
    assert _worst(b"x: {_target_: mypkg.models.Net}\n", "c.yaml") is Severity.LOW
    assert _worst(b"x: {_target_: sklearn.datasets.dump_svmlight_file, f: out}\n", "c.yaml") is Severity.MEDIUM
    assert _worst(b"x: {_target_: mypkg.store.save_all, path: out}\n", "c.yaml") is Severity.MEDIUM
    assert _worst(b"x: {_target_: torch.optim.SGD, lr: 0.1}\n", "c.yaml") is None


def test_without_pyyaml_targets_the_lines_cannot_name_are_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "yaml", None)  # import yaml raises ImportError
    assert hydra.compose("a: 1\n") is None
    assert _worst(b"x:\n  _target_: ${t}\nt: builtins.open\n", "c.yaml") is Severity.MEDIUM
    assert _worst(b"x:\n  _target_: os.system\n", "c.yaml") is Severity.CRITICAL


def test_text_without_targets_is_not_parsed() -> None:
    _, findings = scan_data(b"some notes: with colons\nand \"quotes\\n\"\n", "notes.txt")
    assert all(f.severity <= Severity.INFO for f in findings)


def test_config_too_large_to_read_with_a_target_is_reported(tmp_path: Path) -> None:
    big = tmp_path / "huge.cfg"
    big.write_bytes(b"# pad\n" * (3 << 20) + b"x:\n  _target_: mypkg.Net\n")
    report = scan_path(big)
    assert any(f.rule_id == "LIMIT-EXCEEDED" for f in report.findings)
    assert report.verdict is not Verdict.CLEAN


@pytest.mark.skipif(not ORACLE.exists(), reason="no oracle venv with hydra-core")
def test_real_instantiate_fires_on_hostile_configs_and_loads_honest_ones(tmp_path: Path) -> None:
    code = ("import sys, hydra.utils\nfrom omegaconf import OmegaConf\n"
            "hydra.utils.instantiate(OmegaConf.load(sys.argv[1]))\n")
    for name in ("interp_node.yaml", "flow_escaped.yaml", "escaped_key.json", "experiment.cfg",
                 "stdlib_writer.yaml"):
        run = tmp_path / name
        run.mkdir()
        r = subprocess.run([str(ORACLE), "-c", code, str(HOSTILE / name)], cwd=run, capture_output=True,
                           text=True, timeout=300, env={"PATH": os.environ.get("PATH", ""), "HOME": str(run)})
        if "No module named" in r.stderr:
            pytest.skip(r.stderr[-200:])
        assert any(run.glob("pwned*")), (name, r.stderr[-400:])
        assert scan_path(HOSTILE / name).verdict is not Verdict.CLEAN
    r = subprocess.run([str(ORACLE), "-c", code, str(BENIGN / "train.yaml")], cwd=tmp_path, capture_output=True,
                       text=True, timeout=300, env={"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path)})
    assert r.returncode == 0, r.stderr[-400:]
    assert scan_path(BENIGN / "train.yaml").verdict is Verdict.CLEAN


def test_line_continuations_without_the_key_are_not_composed() -> None:
    script = b"echo a \\\n  b\nC:\\x64\\new \\u0041\n" * 1000
    assert not hydra.could_hold_targets(script)
    assert hydra.could_hold_targets(b'k: "\\x5f\\\n    targe\\u0074_"')
