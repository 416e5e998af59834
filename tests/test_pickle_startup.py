"""Start-up path of `modelseal scan` (scanner.fastscan): same reports and exit codes as the typer CLI, no
CLI framework or process pool imported for a one-file scan, rules served from the compiled JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from scanner import fastscan

ROOT = Path(__file__).resolve().parent.parent
FIX = ROOT / "fixtures"
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
CLEAN = FIX / "benign" / "pickle_targets" / "array_p4.pkl"
HOSTILE = FIX / "hostile" / "pickle_targets" / "partial_state_swaps_function.pkl"


def _run(module: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, env=ENV,
                          timeout=120, check=False)


@pytest.mark.parametrize("args", [
    ("scan", str(CLEAN), "--format", "json"),
    ("scan", str(HOSTILE), "-f", "lines"),
    ("scan", str(HOSTILE), str(CLEAN), "--format=jsonl", "--fail-on", "critical"),
    ("scan", str(HOSTILE), "--fail-on=info", "--show-info", "--format", "lines"),
])
def test_fast_path_matches_the_cli(args: tuple[str, ...]) -> None:
    assert fastscan.parse(list(args)) is not None
    fast, slow = _run("scanner.fastscan", *args), _run("scanner.cli", *args)
    assert fast.returncode == slow.returncode
    if "json" in args or "--format=jsonl" in args:
        def strip(v: object) -> object:  # times differ between two runs
            if isinstance(v, dict):
                return {k: strip(x) for k, x in v.items()
                        if not any(w in k for w in ("started", "finished", "duration", "elapsed", "seconds", "_ms"))}
            if isinstance(v, list):
                return [strip(x) for x in v]
            return v

        def norm(text: str) -> list[object]:
            lines = text.splitlines() if "--format=jsonl" in args else [text]
            return sorted((strip(json.loads(line)) for line in lines), key=lambda d: json.dumps(d, sort_keys=True))
        assert norm(fast.stdout) == norm(slow.stdout)
    else:
        assert fast.stdout == slow.stdout


@pytest.mark.parametrize("argv", [
    [], ["rules"], ["scan"], ["scan", "--help"], ["scan", "x", "--bogus"], ["scan", "x", "-fjson"],
    ["scan", "x", "-f=json"], ["scan", "x", "--format", "xml"], ["scan", "x", "--jobs", "0"],
    ["scan", "x", "--format", "json", "--format", "text"], ["scan", "--", "x"], ["scan", "x", "--output"],
])
def test_unusual_command_lines_go_to_the_cli(argv: list[str]) -> None:
    assert fastscan.parse(argv) is None


def test_bad_config_and_missing_path_are_reported_by_the_cli(tmp_path: Path) -> None:
    bad = tmp_path / "c.toml"
    bad.write_text("[tool.modelseal]\nbogus = 1\n")
    for args in (("scan", str(CLEAN), "--config", str(bad)), ("scan", str(tmp_path / "missing.pkl"))):
        fast, slow = _run("scanner.fastscan", *args), _run("scanner.cli", *args)
        assert fast.returncode == slow.returncode == 2
        assert fast.stderr == slow.stderr and "error" in fast.stderr


def test_one_file_scan_imports_no_cli_framework_pool_or_toml_parser() -> None:
    argv = ["modelseal", "scan", str(CLEAN), "--format", "json", "--output", os.devnull]
    code = (f"import sys; sys.argv = {argv!r}\n"
            "from scanner import fastscan\n"
            "try:\n    fastscan.main()\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('typer', 'click', 'multiprocessing', 'concurrent', 'tomllib', 'tomli')))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=120, check=False)
    assert r.stdout.strip().splitlines()[-1] == "[]", r.stdout + r.stderr


def test_entry_point_is_the_fast_path() -> None:
    import tomllib

    doc = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert doc["project"]["scripts"]["modelseal"] == "scanner.fastscan:main"


# imported only when their feature is used: none of them on the path of a one-file scan of a small pickle or
# torch zip (dataclasses/inspect: scanner.record; TorchScript checks: a code/ member; cache: --cache; the
# other output formats: their --format; remote/cluster: a URL or a cluster)
DEFERRED = ("dataclasses", "inspect", "sqlite3", "hmac", "secrets", "tempfile", "datetime", "tomllib",
            "typer", "click", "multiprocessing", "concurrent.futures", "scanner.cli",
            "scanner.formats.zip.torchscript", "scanner.formats.zip.torchscript_ops", "scanner.remote",
            "scanner.cluster", "scanner.gate", "scanner.attest.attest", "scanner.output.text",
            "scanner.output.sarif", "scanner.output.lines")


def _imported_after_scan(path: Path) -> tuple[set[str], int]:
    argv = ["modelseal", "scan", str(path), "--format", "json", "--output", os.devnull]
    code = (f"import sys; sys.argv = {argv!r}\n"
            "from scanner import fastscan\n"
            "try:\n    fastscan.main()\nexcept SystemExit as e:\n    code = e.code\n"
            "print(code, sorted(sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=120, check=False)
    rc, _, mods = r.stdout.strip().splitlines()[-1].partition(" ")
    return set(json.loads(mods.replace("'", '"'))), int(rc)


@pytest.mark.parametrize("path", [CLEAN, FIX / "benign" / "containers" / "state_dict.pt"])
def test_small_scan_leaves_deferred_modules_unimported(path: Path) -> None:
    mods, rc = _imported_after_scan(path)
    assert rc == 0
    assert "scanner.formats.pickle.machine" in mods  # the scan did run the pickle engine
    assert sorted(m for m in DEFERRED if m in mods) == []


def test_torchscript_checks_load_when_a_torchscript_archive_is_scanned() -> None:
    mods, _ = _imported_after_scan(FIX / "benign" / "containers" / "torchscript_scripted.pt")
    assert "scanner.formats.zip.torchscript" in mods
