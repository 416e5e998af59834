"""Issue 10 hardening: the gate checks and caches only the bytes it scanned, file names never become
options, output escapes what came from a file, signed documents parse strictly."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import pytest

from scanner import gate

# protocol-0 pickles, written as bytes, never loaded: a list, and a call of os.system
BENIGN_PICKLE = b"(lp0\nI1\na."
HOSTILE_PICKLE = b"cos\nsystem\n(S'echo pwned'\ntR."
BENIGN_SHA = hashlib.sha256(BENIGN_PICKLE).hexdigest()
HOSTILE_SHA = hashlib.sha256(HOSTILE_PICKLE).hexdigest()


# -- 1. the gate scans and caches exactly the bytes it hashed -----------------------------------------------

def _swap_while_scanning(monkeypatch, target: Path, data: bytes) -> None:
    """Rewrite `target` on disk the moment the scan starts: the worst interleaving, made deterministic."""
    import scanner.attest.attest as att

    real = att.scan_digested

    def swapped(*a, **k):
        target.write_bytes(data)
        return real(*a, **k)

    monkeypatch.setattr(att, "scan_digested", swapped)


def test_file_swapped_between_hash_and_scan_is_not_accepted(tmp_path, monkeypatch):
    p = tmp_path / "model.pkl"
    p.write_bytes(HOSTILE_PICKLE)
    _swap_while_scanning(monkeypatch, p, BENIGN_PICKLE)
    cache = gate.GateCache()
    g = gate.Gate(cache=cache)
    with pytest.raises(gate.UnsafeModelError, match="SYSTEM|PICKLE|malicious"):
        g.check(p)
    assert not cache.entries
    monkeypatch.undo()
    p.write_bytes(HOSTILE_PICKLE)
    with pytest.raises(gate.UnsafeModelError):
        with g.open_verified(p) as fh:
            fh.read()


def test_open_verified_swapped_during_scan_hands_out_what_was_scanned(tmp_path, monkeypatch):
    p = tmp_path / "model.pkl"
    p.write_bytes(BENIGN_PICKLE)
    _swap_while_scanning(monkeypatch, p, HOSTILE_PICKLE)
    with gate.Gate().open_verified(p) as fh:
        assert fh.read() == BENIGN_PICKLE


def test_folder_swapped_between_hash_and_scan_is_not_accepted(tmp_path, monkeypatch):
    m = tmp_path / "model"
    m.mkdir()
    (m / "config.json").write_text('{"a": 1}\n')
    (m / "model.pkl").write_bytes(HOSTILE_PICKLE)
    _swap_while_scanning(monkeypatch, m / "model.pkl", BENIGN_PICKLE)
    cache = gate.GateCache()
    with pytest.raises(gate.UnsafeModelError):
        gate.Gate(cache=cache).check(m)
    assert not cache.entries


def test_verified_copy_of_a_folder_is_the_scanned_one(tmp_path, monkeypatch):
    m = tmp_path / "model"
    (m / "sub").mkdir(parents=True)
    (m / "sub" / "model.pkl").write_bytes(BENIGN_PICKLE)
    _swap_while_scanning(monkeypatch, m / "sub" / "model.pkl", HOSTILE_PICKLE)
    with gate.Gate().verified_copy(m) as (result, copy):
        assert result.source == "scan"
        assert (copy / "sub" / "model.pkl").read_bytes() == BENIGN_PICKLE
        assert copy != m and not (copy / "sub" / "model.pkl").is_symlink()
    assert not copy.exists()


def _race(tmp_path: Path, flip, check, iterations: int = 60) -> None:
    """A thread flips what is at the path while the gate checks it; every acceptance must be of benign bytes."""
    stop = threading.Event()

    def flipper() -> None:
        i = 0
        while not stop.is_set():
            flip(i)
            i += 1

    t = threading.Thread(target=flipper, daemon=True)
    t.start()
    try:
        for _ in range(iterations):
            check()
    finally:
        stop.set()
        t.join()


def test_swapping_thread_never_poisons_the_cache(tmp_path):
    p = tmp_path / "model.pkl"
    p.write_bytes(BENIGN_PICKLE)
    ben, hos = tmp_path / "b.tmp", tmp_path / "h.tmp"

    def flip(i: int) -> None:
        src, data = (ben, BENIGN_PICKLE) if i % 2 else (hos, HOSTILE_PICKLE)
        src.write_bytes(data)
        os.replace(src, p)  # rename flips

    cache = gate.GateCache()
    g = gate.Gate(cache=cache)
    accepted = []

    def check() -> None:
        try:
            accepted.append(g.check(p).content_digest)
        except gate.UnsafeModelError:
            pass
        try:
            with g.open_verified(p) as fh:
                assert fh.read() == BENIGN_PICKLE
        except gate.UnsafeModelError:
            pass

    _race(tmp_path, flip, check)
    assert set(accepted) <= {BENIGN_SHA}
    assert all(r.content_digest == BENIGN_SHA for r in cache.entries.values())


def test_symlink_flips_never_accept_the_hostile_target(tmp_path):
    m = tmp_path / "model"
    m.mkdir()
    (m / "config.json").write_text('{"a": 1}\n')
    good, bad = tmp_path / "good", tmp_path / "bad"
    for d, data in ((good, BENIGN_PICKLE), (bad, HOSTILE_PICKLE)):
        d.mkdir()
        (d / "model.pkl").write_bytes(data)
    (m / "w").mkdir()
    (m / "w" / "model.pkl").write_bytes(BENIGN_PICKLE)
    real_sub = m / "w"
    parked = tmp_path / "parked"

    def flip(i: int) -> None:
        # the subfolder becomes a symlink to the hostile folder and back
        try:
            if i % 2:
                os.replace(real_sub, parked)
                os.symlink(bad, real_sub)
            else:
                os.unlink(real_sub)
                os.replace(parked, real_sub)
        except OSError:
            pass

    g = gate.Gate(cache=gate.GateCache())

    def check() -> None:
        try:
            with g.verified_copy(m) as (_, copy):
                seen = copy / "w" / "model.pkl"
                assert not seen.exists() or seen.read_bytes() == BENIGN_PICKLE  # absent mid-flip is fine
        except gate.UnsafeModelError:
            pass

    _race(tmp_path, flip, check, iterations=40)


def test_cache_key_covers_the_file_name(tmp_path):
    (tmp_path / "n1").mkdir()
    (tmp_path / "n2").mkdir()
    (tmp_path / "n1" / "notes.txt").write_text("hello world\n")
    (tmp_path / "n2" / "notes.bin").write_text("hello world\n")
    g = gate.Gate(cache=gate.GateCache())
    assert g.check(tmp_path / "n1" / "notes.txt").verdict == "clean"
    with pytest.raises(gate.UnsafeModelError, match="FORMAT-EXTENSION-MISMATCH"):
        g.check(tmp_path / "n2" / "notes.bin")
    # the same for folders: same digests, other names
    assert g.check(tmp_path / "n1").verdict == "clean"
    with pytest.raises(gate.UnsafeModelError, match="FORMAT-EXTENSION-MISMATCH"):
        g.check(tmp_path / "n2")


def test_cache_key_covers_policy_rules_and_scanner(tmp_path, monkeypatch):
    from scanner.findings import Severity
    from scanner.rules import Policy

    from scanner.attest.verify import Requirements

    p = tmp_path / "notes.bin"
    p.write_text("hello world\n")
    cache = gate.GateCache()
    lenient = Requirements(allow_verdicts=frozenset({"clean", "suspicious"}))
    strict = Policy(fail_on=Severity.CRITICAL)
    assert gate.Gate(cache=cache, policy=strict, requirements=lenient).check(p).source == "scan"
    with pytest.raises(gate.UnsafeModelError):
        gate.Gate(cache=cache).check(p)
    g = gate.Gate(cache=cache, policy=strict, requirements=lenient)
    assert g.check(p).source == "cache"
    scanner_id, rules_id = gate._identity()
    monkeypatch.setattr(gate, "_identity", lambda: ("modelseal 99+patched", rules_id))
    assert g.check(p).source == "scan"
    monkeypatch.setattr(gate, "_identity", lambda: (scanner_id, "sha256:other-rules"))
    assert g.check(p).source == "scan"


def test_batch_cache_not_poisoned_by_a_swap_and_back_during_the_scan(tmp_path, monkeypatch):
    """A-B-A: hostile when hashed, benign while scanned by path, hostile again when re-hashed."""
    import time

    from scanner import engine
    from scanner.batch import RACY_NS, open_cache, scan_batch
    from scanner.rules import Policy, load_ruleset

    root = tmp_path / "store"
    root.mkdir()
    p = root / "model.pkl"
    p.write_bytes(HOSTILE_PICKLE)
    time.sleep(RACY_NS / 1e9 * 2)
    spec = open_cache(tmp_path / "cache", load_ruleset(), Policy(), b"k" * 32)
    real = engine.scan_source

    def aba(src, ctx, *a, **kw):
        p.write_bytes(BENIGN_PICKLE)
        try:
            return real(engine.FileSource(p, src.display), ctx, *a, **kw)
        finally:
            p.write_bytes(HOSTILE_PICKLE)

    monkeypatch.setattr(engine, "scan_source", aba)
    scan_batch([root], jobs=1, cache=spec)
    monkeypatch.undo()
    again = scan_batch([root], jobs=1, cache=spec)
    assert again.verdict.value == "malicious"


# -- 3. one escaping function for every output ----------------------------------------------------------------

HOSTILE_NAMES = ["evil\nOK  fake.pkl", "evil\x1b[31mred.pkl", "evil\rCLEAN.pkl", "evil\u202ekp.txt",
                 "evil\u2066iso\u2069.pkl", "evil\u200bzw.pkl"]
FORBIDDEN = ["\n", "\x1b", "\r", "\u202e", "\u2066", "\u2069", "\u200b"]


def _cli(args, **kw):
    from typer.testing import CliRunner

    from scanner.cli import app

    return CliRunner().invoke(app, args, **kw)


@pytest.mark.parametrize("fmt", ["text", "lines"])
def test_hostile_file_names_are_escaped_in_reports(tmp_path, fmt):
    for n in HOSTILE_NAMES:
        (tmp_path / n).write_bytes(HOSTILE_PICKLE)
    res = _cli(["scan", "--format", fmt, "--jobs", "1", "--", str(tmp_path)])
    assert res.exit_code == 1, res.output
    body = res.stdout
    report_lines = [ln for ln in body.splitlines() if "evil" in ln]
    for line in report_lines:
        assert not any(c in line for c in FORBIDDEN), repr(line)
    for escaped in ("evil\\x0aOK", "evil\\x1b[31m", "evil\\x0dCLEAN", "evil\\u202ekp", "\\u2066iso\\u2069",
                    "evil\\u200bzw"):
        assert escaped in body, (escaped, body)
    # one report line per hostile file name: no name spans or forges lines
    if fmt == "lines":
        assert len([ln for ln in body.splitlines() if ln.startswith(str(tmp_path))]) >= len(HOSTILE_NAMES)


def test_backslash_is_escaped_so_escapes_are_unambiguous():
    from scanner.output.escape import escape

    assert escape("a\\x1b") == "a\\\\x1b"
    assert escape("a\x1b") == "a\\x1b"
    assert escape("naïve 模型") == "naïve 模型"
    assert escape("a\udc80b") == "a\\udc80b"  # an undecodable byte of a file name


def test_errors_on_stderr_are_escaped(tmp_path):
    res = _cli(["scan", "--", str(tmp_path / "missing\x1b]0;title\x07\n.pkl")])
    assert res.exit_code == 2
    err = res.stderr
    assert err.count("\n") == 1 and "\x1b" not in err and "\x07" not in err
    assert "missing\\x1b]0;title\\x07\\x0a.pkl" in err


def test_verify_failure_names_are_escaped(tmp_path):
    from scanner.attest.sign import generate_key

    priv, pub = generate_key("p256")
    keyfile = tmp_path / "k.pub"
    keyfile.write_bytes(pub)
    m = tmp_path / "m\x1b[2Jodel\u202e.bin"
    m.write_bytes(b"x")
    res = _cli(["verify", str(m), "--key", str(keyfile)])
    assert res.exit_code != 0
    out = res.stdout + res.stderr
    assert "\x1b" not in out and "\u202e" not in out and "m\\x1b[2Jodel\\u202e.bin" in out
