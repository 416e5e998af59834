"""Store-wide scans: process pool, jsonl streaming, result cache, Hugging Face cache layouts, lines output."""

from __future__ import annotations

import io
import json
import multiprocessing
import os
import shutil
import signal
import sqlite3
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

import scanner.engine as engine
from conftest import FIXTURES
from scanner.batch import (
    CACHE_DB,
    CONTEXT_DEPENDENT_FORMATS,
    RACY_NS,
    JsonlWriter,
    Progress,
    ResultCache,
    open_cache,
    policy_fingerprint,
    scan_batch,
)
from scanner.findings import FileReport, Finding, Location, Report, Severity
from scanner.output.lines import render as render_lines
from scanner.rules import Policy, load_ruleset

CLI = [sys.executable, "-m", "scanner.cli"]
SECRET = b"k" * 32

# protocol 0 and 2 pickles that call os.system('echo pwned') when loaded (never loaded here)
EVIL_P0 = b"cposix\nsystem\n(S'echo pwned'\ntR."
EVIL_P2 = b"\x80\x02cos\nsystem\nq\x00X\x0a\x00\x00\x00echo pwnedq\x01\x85q\x02Rq\x03."
BENIGN_P2 = b"\x80\x02}q\x00(X\x01\x00\x00\x00aq\x01K\x01X\x01\x00\x00\x00bq\x02]q\x03(K\x02K\x03eu."


def _safetensors(n: int = 2) -> bytes:
    header = json.dumps({"w": {"dtype": "F32", "shape": [n], "data_offsets": [0, 4 * n]}}).encode()
    return struct.pack("<Q", len(header)) + header + b"\0" * (4 * n)


def _tree(root: Path) -> Path:
    """A small mixed store: hostile and benign pickles, safetensors, source, text, and the fixture set."""
    (root / "models" / "a").mkdir(parents=True)
    (root / "models" / "b").mkdir(parents=True)
    (root / "models" / "a" / "evil.pkl").write_bytes(EVIL_P0)
    (root / "models" / "b" / "evil2.pkl").write_bytes(EVIL_P2)
    (root / "models" / "a" / "ok.pkl").write_bytes(BENIGN_P2)
    (root / "models" / "a" / "model.safetensors").write_bytes(_safetensors())
    (root / "models" / "b" / "truncated.safetensors").write_bytes(_safetensors()[:-3])
    (root / "src.py").write_text("import os\nprint(os.getcwd())\n")
    (root / "README.md").write_text("# models\n")
    benign = FIXTURES / "benign"
    if benign.is_dir():
        shutil.copytree(benign, root / "fixtures")
    time.sleep(RACY_NS / 1e9 * 2)  # files changed just now are not cached (racily clean)
    return root


def _dicts(report: Report) -> list[dict[str, object]]:
    return [fr.to_dict() for fr in report.files]


def test_jobs_do_not_change_the_report(tmp_path: Path) -> None:
    root = _tree(tmp_path / "store")
    serial = scan_batch([root], jobs=1)
    parallel = scan_batch([root], jobs=2)
    assert len(serial.files) >= 7
    assert _dicts(parallel) == _dicts(serial)
    assert _dicts(serial) == _dicts(engine.scan([root]))
    assert parallel.exit_code() == serial.exit_code()


def test_on_file_sees_every_file_once_in_pool(tmp_path: Path) -> None:
    root = _tree(tmp_path / "store")
    seen: list[str] = []
    report = scan_batch([root], jobs=2, on_file=lambda fr: seen.append(fr.path))
    assert sorted(seen) == sorted(fr.path for fr in report.files)
    assert len(seen) == len(set(seen))


def test_hostile_pickle_found_in_parallel(tmp_path: Path) -> None:
    root = _tree(tmp_path / "store")
    report = scan_batch([root], jobs=2)
    by_name = {Path(fr.path).name: fr for fr in report.files}
    assert by_name["evil.pkl"].worst() is Severity.CRITICAL
    assert by_name["evil2.pkl"].worst() is Severity.CRITICAL
    assert report.exit_code() == 1


def test_jsonl_lines_parse_and_are_complete(tmp_path: Path) -> None:
    root = _tree(tmp_path / "store")
    out = subprocess.run([*CLI, "scan", str(root), "--format", "jsonl", "--jobs", "2"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 1, out.stderr
    objs = [json.loads(line) for line in out.stdout.splitlines()]
    files, summary = objs[:-1], objs[-1]
    assert all(o["type"] == "file" for o in files)
    assert summary["type"] == "summary" and summary["exit_code"] == 1 and summary["verdict"] == "malicious"
    # one complete object per file of the tree, each with every field of the json report's files
    on_disk = sorted(str(p) for p in root.rglob("*") if p.is_file())
    assert sorted(o["path"] for o in files) == on_disk
    keys = set(FileReport("x", 1, None, "text", ()).to_dict())
    assert all(set(o) - {"type"} == keys for o in files)
    # the summary agrees with the lines
    counts = summary["summary"]
    assert counts["files"] == len(files)
    for sev in Severity:
        assert counts[f"findings_{sev.value}"] == sum(f["severity"] == sev.value for o in files for f in o["findings"])
    for verdict in ("clean", "suspicious", "malicious", "error"):
        assert counts[f"files_{verdict}"] == sum(o["verdict"] == verdict for o in files)


def test_jsonl_writer_flushes_each_file() -> None:
    class Spy(io.StringIO):
        flushes = 0

        def flush(self) -> None:
            Spy.flushes += 1
            super().flush()

    buf = Spy()
    w = JsonlWriter(buf)
    w.file(FileReport("a.pkl", 1, None, "pickle", ()))
    assert Spy.flushes == 1 and json.loads(buf.getvalue())["path"] == "a.pkl"


# -- cache ------------------------------------------------------------------------------------------

def _count_scans(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    real = engine.scan_file

    def counting(entry, rules, policy, **kw):  # type: ignore[no-untyped-def]
        calls.append(entry.display)
        return real(entry, rules, policy, **kw)

    monkeypatch.setattr(engine, "scan_file", counting)
    return calls


def _spec(tmp_path: Path, policy: Policy | None = None, secret: bytes = SECRET):
    return open_cache(tmp_path / "cache", load_ruleset(), policy or Policy(), secret)


def test_cache_hit_returns_same_findings_and_changed_file_is_rescanned(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    root = _tree(tmp_path / "store")
    first = scan_batch([root], jobs=1, cache=_spec(tmp_path))
    calls = _count_scans(monkeypatch)
    second = scan_batch([root], jobs=1, cache=_spec(tmp_path))
    assert _dicts(second) == _dicts(first)
    cached = {fr.path for fr in first.files if fr.format not in CONTEXT_DEPENDENT_FORMATS
              and not any(f.rule_id == "SCAN-INTERNAL-ERROR" for f in fr.findings)}
    assert str(root / "models" / "a" / "evil.pkl") in cached
    assert not cached & set(calls), "cached files were scanned again"
    # ONNX verdicts depend on files beside the model: always rescanned
    assert {fr.path for fr in first.files if fr.format == "onnx"} <= set(calls)
    # change one file: it alone is rescanned, and its new findings are reported
    calls.clear()
    victim = root / "models" / "a" / "ok.pkl"
    victim.write_bytes(EVIL_P0.replace(b"echo pwned", b"echo other"))  # content not seen before
    third = scan_batch([root], jobs=1, cache=_spec(tmp_path))
    assert str(victim) in calls
    assert not (cached - {str(victim)}) & set(calls)
    assert {fr.path: fr for fr in third.files}[str(victim)].worst() is Severity.CRITICAL


def test_cache_works_across_pool_workers(tmp_path: Path) -> None:
    root = _tree(tmp_path / "store")
    first = scan_batch([root], jobs=2, cache=_spec(tmp_path))
    assert _entries(tmp_path / "cache"), "workers wrote no cache entries"
    assert _dicts(scan_batch([root], jobs=2, cache=_spec(tmp_path))) == _dicts(first)


def _entries(cache_dir: Path) -> list[tuple[str, bytes]]:
    db = sqlite3.connect(cache_dir / CACHE_DB)
    try:
        return db.execute("SELECT key, value FROM results").fetchall()
    finally:
        db.close()


def _only_entry(cache_dir: Path) -> tuple[str, bytes]:
    entries = _entries(cache_dir)
    assert len(entries) == 1
    return entries[0]


def _replace_entry(cache_dir: Path, key: str, value: bytes) -> None:
    db = sqlite3.connect(cache_dir / CACHE_DB)
    with db:
        db.execute("UPDATE results SET value = ? WHERE key = ?", (value, key))
    db.close()


def _hostile_store(tmp_path: Path) -> Path:
    root = tmp_path / "one"
    root.mkdir()
    (root / "evil.pkl").write_bytes(EVIL_P0)
    time.sleep(RACY_NS / 1e9 * 2)  # files changed just now are not cached (racily clean)
    return root


def test_tampered_entry_that_looks_clean_is_not_trusted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _hostile_store(tmp_path)
    fresh = scan_batch([root], jobs=1, cache=_spec(tmp_path))
    assert fresh.files[0].worst() is Severity.CRITICAL
    key, value = _only_entry(tmp_path / "cache")
    outer = json.loads(value)
    body = json.loads(outer["body"])
    body["findings"] = []
    outer["body"] = json.dumps(body, sort_keys=True, separators=(",", ":"))
    _replace_entry(tmp_path / "cache", key, json.dumps(outer).encode())  # same MAC, cleaner body
    calls = _count_scans(monkeypatch)
    again = scan_batch([root], jobs=1, cache=_spec(tmp_path))
    assert calls, "a tampered entry was used instead of a fresh scan"
    assert _dicts(again) == _dicts(fresh)


def test_entry_forged_with_another_key_is_not_trusted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _hostile_store(tmp_path)
    fresh = scan_batch([root], jobs=1, cache=_spec(tmp_path))
    # an attacker who can write the cache directory but does not know the key writes a clean entry
    forged_spec = _spec(tmp_path, secret=b"attacker-key-0000000000000000000")
    ResultCache(forged_spec).put(fresh.files[0].sha256 or "", "evil.pkl", fresh.files[0].size or 0, "pickle", [])
    calls = _count_scans(monkeypatch)
    again = scan_batch([root], jobs=1, cache=_spec(tmp_path))
    assert calls and again.files[0].worst() is Severity.CRITICAL


@pytest.mark.parametrize("garbage", [b"", b"{", b"[]", b'{"mac": 1, "body": 2}', b"\xff" * 100])
def test_garbage_entry_is_a_miss(tmp_path: Path, garbage: bytes) -> None:
    root = _hostile_store(tmp_path)
    scan_batch([root], jobs=1, cache=_spec(tmp_path))
    key, _ = _only_entry(tmp_path / "cache")
    _replace_entry(tmp_path / "cache", key, garbage)
    assert scan_batch([root], jobs=1, cache=_spec(tmp_path)).files[0].worst() is Severity.CRITICAL


def test_same_content_under_another_name_is_scanned_afresh(tmp_path: Path) -> None:
    """Names steer analysis (a pickle named .safetensors is a mismatch): a hit must match the name too."""
    root = tmp_path / "named"
    root.mkdir()
    (root / "ok.pkl").write_bytes(BENIGN_P2)
    first = scan_batch([root], jobs=1, cache=_spec(tmp_path))
    assert first.files[0].worst() in (None, Severity.INFO, Severity.LOW)
    (root / "ok.pkl").rename(root / "weights.safetensors")
    fresh = engine.scan([root])
    cached = scan_batch([root], jobs=1, cache=_spec(tmp_path))
    assert _dicts(cached) == _dicts(fresh)
    assert "FORMAT-EXTENSION-MISMATCH" in {f.rule_id for f in cached.files[0].findings}


def test_damaged_database_is_a_miss(tmp_path: Path) -> None:
    root = _hostile_store(tmp_path)
    scan_batch([root], jobs=1, cache=_spec(tmp_path))
    for name in os.listdir(tmp_path / "cache"):
        (tmp_path / "cache" / name).write_bytes(b"not a database" * 100)
    assert scan_batch([root], jobs=2, cache=_spec(tmp_path)).files[0].worst() is Severity.CRITICAL


def test_cache_key_covers_policy_and_rules(tmp_path: Path) -> None:
    rules = load_ruleset()
    base = ResultCache(open_cache(tmp_path / "c", rules, Policy(), SECRET))
    other_policy = ResultCache(open_cache(tmp_path / "c", rules, Policy(allow_globals=("posix.system",)), SECRET))
    assert base.key("ab" * 32, "m.pkl") != other_policy.key("ab" * 32, "m.pkl")
    assert policy_fingerprint(Policy()) == policy_fingerprint(Policy(fail_on=Severity.HIGH))
    assert base.key("ab" * 32, "m.pkl") != base.key("cd" * 32, "m.pkl")
    assert base.key("ab" * 32, "m.pkl") != base.key("ab" * 32, "m.safetensors")


def test_file_changing_during_scan_is_not_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _hostile_store(tmp_path)
    real = engine.scan_file

    def racing(entry, rules, policy, **kw):  # type: ignore[no-untyped-def]
        entry.path.write_bytes(BENIGN_P2)  # swapped between the digest and the scan
        return real(entry, rules, policy, **kw)

    monkeypatch.setattr(engine, "scan_file", racing)
    scan_batch([root], jobs=1, cache=_spec(tmp_path))
    assert not _entries(tmp_path / "cache")


def test_internal_errors_are_not_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _hostile_store(tmp_path)

    def crashing(entry, rules, policy, **kw):  # type: ignore[no-untyped-def]
        f = Finding("SCAN-INTERNAL-ERROR", Severity.HIGH, "pickle analyzer failed: MemoryError", Location())
        return FileReport(entry.display, entry.path.stat().st_size, engine.sha256_file(entry.path), "pickle", (f,))

    monkeypatch.setattr(engine, "scan_file", crashing)
    scan_batch([root], jobs=1, cache=_spec(tmp_path))
    assert not _entries(tmp_path / "cache")


def test_cache_dir_is_private_and_cli_uses_it(tmp_path: Path) -> None:
    root = _hostile_store(tmp_path)
    env = {**os.environ, "MODELSEAL_CACHE_KEY": "test-key"}
    cmd = [*CLI, "scan", str(root), "--format", "json", "--cache", str(tmp_path / "cli-cache")]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    second = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert first.returncode == second.returncode == 1
    assert json.loads(first.stdout)["files"] == json.loads(second.stdout)["files"]
    assert (tmp_path / "cli-cache").stat().st_mode & 0o077 == 0
    assert _entries(tmp_path / "cli-cache")


def test_cache_key_file_lives_outside_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from scanner.batch import cache_secret

    monkeypatch.delenv("MODELSEAL_CACHE_KEY", raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    key = cache_secret()
    path = tmp_path / "state" / "modelseal" / "cache.key"
    assert path.read_bytes() == key and len(key) == 32
    assert path.stat().st_mode & 0o077 == 0
    assert cache_secret() == key


# -- Hugging Face cache layout ----------------------------------------------------------------------

def _hf_cache(hub: Path) -> Path:
    repo = hub / "models--org--name"
    blobs = repo / "blobs"
    blobs.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    (blobs / "aaa111").write_bytes(EVIL_P2)
    (blobs / "bbb222").write_text('{"architectures": ["Bert"]}')
    (blobs / "ccc333").write_bytes(_safetensors())
    snap = repo / "snapshots" / "0123abcd"
    snap.mkdir(parents=True)
    os.symlink("../../blobs/aaa111", snap / "pytorch_model.bin")
    os.symlink("../../blobs/bbb222", snap / "config.json")
    os.symlink("../../blobs/ccc333", snap / "model.safetensors")
    return repo


def test_hf_cache_reports_snapshot_paths_not_blobs(tmp_path: Path) -> None:
    repo = _hf_cache(tmp_path / "hub")
    for root in (tmp_path / "hub", repo):
        report = scan_batch([root], jobs=2)
        paths = sorted(os.path.relpath(fr.path, repo) for fr in report.files)
        assert paths == ["refs/main", "snapshots/0123abcd/config.json", "snapshots/0123abcd/model.safetensors",
                         "snapshots/0123abcd/pytorch_model.bin"]
        evil = {Path(fr.path).name: fr for fr in report.files}["pytorch_model.bin"]
        assert evil.worst() is Severity.CRITICAL and evil.format == "pickle"


def test_hf_orphan_blob_is_still_scanned(tmp_path: Path) -> None:
    repo = _hf_cache(tmp_path / "hub")
    (repo / "blobs" / "ddd444").write_bytes(EVIL_P0)  # an old revision's blob no snapshot links to
    names = {os.path.relpath(fr.path, repo) for fr in scan_batch([repo], jobs=1).files}
    assert "blobs/ddd444" in names


def test_hf_snapshot_scanned_alone_reports_links_leaving_it(tmp_path: Path) -> None:
    repo = _hf_cache(tmp_path / "hub")
    report = scan_batch([repo / "snapshots" / "0123abcd"], jobs=1)
    assert len(report.files) == 3
    for fr in report.files:
        assert fr.format == "link"
        assert [f.rule_id for f in fr.findings] == ["PATH-SYMLINK-OUTSIDE"]
    assert report.exit_code() == 1


def test_broken_link_inside_root_is_an_error(tmp_path: Path) -> None:
    repo = _hf_cache(tmp_path / "hub")
    os.symlink("../../blobs/missing", repo / "snapshots" / "0123abcd" / "tokenizer.json")
    report = scan_batch([repo], jobs=1)
    broken = [fr for fr in report.files if fr.path.endswith("tokenizer.json")]
    assert len(broken) == 1 and broken[0].error and "broken symlink" in broken[0].error


# -- lines output and progress ----------------------------------------------------------------------

def _one(findings: tuple[Finding, ...], error: str | None = None, path: str = "m/model.pt") -> Report:
    return Report((FileReport(path, 1, None, "zip", findings, error),
                   FileReport("clean.txt", 1, None, "text", (Finding("FORMAT-NOT-MODEL", Severity.INFO, "text"),))),
                  "0", "d", Severity.MEDIUM, "t0", "t1")


def test_lines_format() -> None:
    f = Finding("PICKLE-DANGEROUS-CALL", Severity.CRITICAL, "calls posix.system",
                Location("archive/data.pkl", 12, 3), "posix.system('echo pwned')")
    out = render_lines(_one((f, Finding("X-LOW", Severity.LOW, "minor"))))
    lines = out.splitlines()
    assert lines[0] == ("m/model.pt!archive/data.pkl: CRITICAL PICKLE-DANGEROUS-CALL calls posix.system "
                        "[posix.system('echo pwned')]")
    assert lines[1] == "m/model.pt: LOW X-LOW minor"
    assert len(lines) == 3 and lines[2].startswith("modelseal: ") and "exit 1" in lines[2]
    assert "clean.txt" not in out


def test_lines_clean_run_prints_nothing() -> None:
    assert render_lines(_one(())) == ""


def test_lines_escape_control_characters() -> None:
    f = Finding("X", Severity.HIGH, "m\nfake.pkl: CRITICAL", Location("a\x1b[2Jb"), "e\rvil")
    out = render_lines(_one((f,), path="dir/new\nline.pkl"))
    first = out.splitlines()[0]
    assert "\x1b" not in out and "\r" not in out
    assert first == "dir/new\\x0aline.pkl!a\\x1b[2Jb: HIGH X m\\x0afake.pkl: CRITICAL [e\\x0dvil]"


def test_lines_show_errors() -> None:
    out = render_lines(_one((), error="cannot read: Permission denied"))
    assert out.splitlines()[0] == "m/model.pt: ERROR SCAN-ERROR cannot read: Permission denied"


def test_progress_only_when_enabled() -> None:
    quiet = io.StringIO()
    p = Progress(quiet)  # StringIO is not a TTY
    p.start(5)
    p.advance("a")
    p.finish()
    assert quiet.getvalue() == ""
    loud = io.StringIO()
    p = Progress(loud, enabled=True)
    p.start(2)
    p.advance("a.pkl")
    p.advance("b\x1b.pkl")
    p.finish()
    text = loud.getvalue()
    assert "2/2" in text and "\x1b" not in text and text.endswith("\r")


def test_interrupted_jsonl_keeps_every_line_written(tmp_path: Path) -> None:
    """Ctrl-C (SIGINT to the whole process group, as a terminal sends it) mid-scan: exit 130, and every
    line already written is a complete JSON object."""
    import pickle as stdlib_pickle  # writing a test file only

    root = tmp_path / "many"
    root.mkdir()
    for i in range(400):
        data = {f"layer{j}": [float(i * j + k) for k in range(60)] for j in range(80)}
        (root / f"m{i:03d}.pkl").write_bytes(stdlib_pickle.dumps(data, protocol=4))
    proc = subprocess.Popen([*CLI, "scan", str(root), "--format", "jsonl", "--jobs", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    assert proc.stdout is not None
    first = proc.stdout.readline()  # the scan is under way once a result has streamed out
    os.killpg(proc.pid, signal.SIGINT)
    rest, err = proc.communicate(timeout=120)
    lines = [first, *rest.splitlines()]
    objs = [json.loads(line) for line in lines if line.strip()]
    assert objs and objs[0]["type"] == "file"
    if proc.returncode == 130:
        assert all(o["type"] == "file" for o in objs) and len(objs) < 400
    else:  # the scan won the race and finished
        assert proc.returncode == 0 and objs[-1]["type"] == "summary", err


@pytest.mark.skipif(multiprocessing.get_start_method() != "fork", reason="the crash is injected through fork")
def test_worker_crash_is_reported_and_the_rest_scanned(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file that kills its worker (a native parser crash) is a finding; every other file is still scanned."""
    root = tmp_path / "store"
    root.mkdir()
    for i in range(40):
        (root / f"m{i:02d}.pkl").write_bytes(BENIGN_P2 if i != 17 else EVIL_P0)
    (root / "m23.pkl").write_bytes(b"crash me")
    real = engine.scan_file

    def dying(entry, rules, policy, **kw):  # type: ignore[no-untyped-def]
        if entry.path.name == "m23.pkl":
            os._exit(13)  # inherited by the forked workers
        return real(entry, rules, policy, **kw)

    monkeypatch.setattr(engine, "scan_file", dying)
    report = scan_batch([root], jobs=2)
    assert [Path(fr.path).name for fr in report.files] == sorted(f"m{i:02d}.pkl" for i in range(40))
    by_name = {Path(fr.path).name: fr for fr in report.files}
    assert [f.rule_id for f in by_name["m23.pkl"].findings] == ["SCAN-INTERNAL-ERROR"]
    assert by_name["m17.pkl"].worst() is Severity.CRITICAL
    others = [fr for name, fr in by_name.items() if name not in {"m17.pkl", "m23.pkl"}]
    assert all(fr.format == "pickle" and fr.worst() is None for fr in others)
    assert report.exit_code() == 1
