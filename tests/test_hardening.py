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


def _race(tmp_path: Path, flip, check, iterations: int = 40) -> None:
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


def test_symlink_flips_of_a_file_never_accept_the_hostile_target(tmp_path):
    p = tmp_path / "model.pkl"
    p.write_bytes(BENIGN_PICKLE)
    bad = tmp_path / "bad.pkl"
    bad.write_bytes(HOSTILE_PICKLE)
    good = tmp_path / "good.tmp"
    link = tmp_path / "link.tmp"

    def flip(i: int) -> None:
        if i % 2:
            link.unlink(missing_ok=True)
            link.symlink_to(bad)
            os.replace(link, p)  # the path becomes a symlink to hostile bytes
        else:
            good.write_bytes(BENIGN_PICKLE)
            os.replace(good, p)

    cache = gate.GateCache()
    g = gate.Gate(cache=cache)
    accepted = []

    def check() -> None:
        try:
            accepted.append(g.check(p).content_digest)
            with g.open_verified(p) as fh:
                assert fh.read() == BENIGN_PICKLE
        except gate.UnsafeModelError:
            pass

    _race(tmp_path, flip, check)
    assert set(accepted) <= {BENIGN_SHA}
    assert all(r.content_digest == BENIGN_SHA for r in cache.entries.values())


def test_swapping_thread_in_a_folder_never_poisons_the_cache(tmp_path):
    m = tmp_path / "model"
    m.mkdir()
    (m / "config.json").write_text('{"a": 1}\n')
    p = m / "model.pkl"
    p.write_bytes(BENIGN_PICKLE)
    ben, hos = tmp_path / "b.tmp", tmp_path / "h.tmp"

    def flip(i: int) -> None:
        src, data = (ben, BENIGN_PICKLE) if i % 2 else (hos, HOSTILE_PICKLE)
        src.write_bytes(data)
        os.replace(src, p)

    cache = gate.GateCache()
    g = gate.Gate(cache=cache)
    accepted = 0

    def check() -> None:
        nonlocal accepted
        try:
            with g.verified_copy(m) as (result, copy):
                assert (copy / "model.pkl").read_bytes() == BENIGN_PICKLE
                accepted += 1
        except gate.UnsafeModelError:
            pass

    _race(tmp_path, flip, check, iterations=40)
    for r in cache.entries.values():
        assert r.report is not None and not r.report.failing()
    assert all(r.content_digest == _manifest(m, BENIGN_PICKLE) for r in cache.entries.values())


def _manifest(m: Path, pkl: bytes) -> str:
    from scanner.attest.digest import manifest_digest

    return manifest_digest([hashlib.sha256((m / "config.json").read_bytes()).hexdigest(),
                            hashlib.sha256(pkl).hexdigest()])


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
    from scanner.attest.verify import Requirements
    from scanner.findings import Severity
    from scanner.rules import Policy

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


# -- 4. signed documents parse strictly, fail in one line, never accept symlinks or a foreign domain ----------

@pytest.fixture(scope="module")
def key_pair():
    from scanner.attest.sign import generate_key

    return generate_key("p256")


def _signed_folder(tmp_path: Path, key_pair) -> tuple[Path, Path]:
    from scanner.attest.attest import attest, default_output
    from scanner.attest.sign import KeySigner
    from scanner.rules import Policy

    m = tmp_path / "model"
    m.mkdir()
    (m / "config.json").write_text('{"a": 1}\n')
    (m / "weights.txt").write_text("0.1 0.2\n")
    out = default_output(m)
    out.write_bytes(attest(m, Policy(), KeySigner.from_pem(key_pair[0])).document())
    pub = tmp_path / "pub.pem"
    pub.write_bytes(key_pair[1])
    return m, pub


def _verify(m: Path, pub: Path, *extra: str):
    return _cli(["verify", str(m), "--key", str(pub), *extra])


def _one_failed_line(res) -> str:
    out = res.stdout + res.stderr
    assert res.exit_code == 1, out
    assert out.count("\n") == 1 and out.startswith("FAILED: "), out
    assert "Traceback" not in out
    return out


def _dup_outer(raw: str) -> str:
    # a second mediaType after the first: json.loads keeps the last, protobuf refuses the document
    return raw.replace('"mediaType"', '"mediaType": "x/evil", "mediaType"', 1)


def _dup_envelope(raw: str) -> str:
    return raw.replace('"payloadType"', '"payloadType": "text/plain", "payloadType"', 1)


@pytest.mark.parametrize("mutate", [_dup_outer, _dup_envelope], ids=["bundle", "envelope"])
def test_duplicate_keys_in_a_bundle_are_refused(tmp_path, key_pair, mutate):
    m, pub = _signed_folder(tmp_path, key_pair)
    b = m / "modelseal.sigstore.json"
    assert _verify(m, pub).exit_code == 0
    b.write_text(mutate(b.read_text()))
    out = _one_failed_line(_verify(m, pub))
    assert "duplicate key" in out


def test_duplicate_keys_in_a_signed_statement_are_refused(tmp_path, key_pair):
    import json

    from scanner.attest.attest import scan_model
    from scanner.attest.sign import KeySigner
    from scanner.attest.statement import PAYLOAD_TYPE, build_statement, canonical_json
    from scanner.rules import Policy

    m, pub = _signed_folder(tmp_path, key_pair)
    model, report = scan_model(m, Policy())
    payload = canonical_json(build_statement(model, report, Policy())).decode()
    # a duplicate "predicateType" a first-wins reader would take as another kind of statement
    assert payload.startswith("{")
    dup = '{"predicateType":"https://in-toto.io/attestation/other",' + payload[1:]
    bundle = KeySigner.from_pem(key_pair[0]).sign(PAYLOAD_TYPE, dup.encode())
    (m / "modelseal.sigstore.json").write_text(json.dumps(bundle))
    out = _one_failed_line(_verify(m, pub))
    assert "duplicate key 'predicateType'" in out


@pytest.mark.parametrize("raw", [b'{"a": 1, "a": 2}', b'{"a": NaN}', b"[" * 100_000, b'{"a": "\xff"}', b"{"])
def test_strict_json_errors_are_one_line(raw):
    from scanner.attest.strictjson import StrictJSONError, loads

    with pytest.raises(StrictJSONError) as e:
        loads(raw, "bundle")
    assert "\n" not in str(e.value) and str(e.value).startswith("bundle is not valid JSON")


def test_malformed_certificate_chain_fails_in_one_line(tmp_path, key_pair):
    import json

    m, pub = _signed_folder(tmp_path, key_pair)
    b = m / "modelseal.sigstore.json"
    doc = json.loads(b.read_text())
    doc["verificationMaterial"] = {"x509CertificateChain": {"certificates": [{"rawBytes": "bm90IGEgY2VydA=="},
                                                                             {"rawBytes": 5}]},
                                   "tlogEntries": [{"logIndex": "x"}]}
    b.write_text(json.dumps(doc))
    res = _cli(["verify", str(m), "--identity", "a@example.com", "--issuer", "https://issuer.example"])
    assert "invalid Sigstore bundle" in _one_failed_line(res)  # pydantic's many lines folded into one


def test_allow_extra_never_accepts_a_symlinked_subfolder(tmp_path, key_pair):
    m, pub = _signed_folder(tmp_path, key_pair)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "evil.pkl").write_bytes(HOSTILE_PICKLE)
    assert _verify(m, pub, "--allow-extra").exit_code == 0
    (m / "extra.txt").write_text("more\n")
    assert _verify(m, pub, "--allow-extra").exit_code == 0  # extra files: accepted when asked
    (m / "plugins").symlink_to(elsewhere, target_is_directory=True)
    out = _one_failed_line(_verify(m, pub, "--allow-extra"))
    assert "symlink" in out
    (m / "plugins").unlink()
    (m / "cfg-link.json").symlink_to(m / "config.json")
    assert "symlink" in _one_failed_line(_verify(m, pub, "--allow-extra"))


def _pae_blob_and_message_bundle(tmp_path: Path, key_pair) -> tuple[Path, Path]:
    """The PAE of an attestation the key really signed, as a file, with that DSSE signature as a 'message
    signature' of the file: the key never signed this file."""
    import base64
    import json

    from scanner.attest.dsse import pae

    m, _ = _signed_folder(tmp_path, key_pair)
    doc = json.loads((m / "modelseal.sigstore.json").read_text())
    env = doc["dsseEnvelope"]
    blob = tmp_path / "payload.bin"
    blob.write_bytes(pae(env["payloadType"], base64.b64decode(env["payload"])))
    msg = {"mediaType": doc["mediaType"], "verificationMaterial": doc["verificationMaterial"],
           "messageSignature": {"signature": env["signatures"][0]["sig"]}}
    bundle = tmp_path / "payload.bin.sig"
    bundle.write_text(json.dumps(msg))
    return blob, bundle


def test_message_signature_is_not_a_fallback_for_an_attestation_key(tmp_path, key_pair):
    blob, bundle = _pae_blob_and_message_bundle(tmp_path, key_pair)
    pub = tmp_path / "pub.pem"
    out = _one_failed_line(_verify(blob, pub, "--bundle", str(bundle)))
    assert "--artifact-signature" in out
    # even when asked for, bytes that are a DSSE encoding are an envelope's, not a signed file
    out = _one_failed_line(_verify(blob, pub, "--bundle", str(bundle), "--artifact-signature"))
    assert "pre-authentication" in out


def test_key_message_signature_verifies_when_asked(tmp_path, key_pair):
    import base64
    import json

    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    priv = load_pem_private_key(key_pair[0], None)
    f = tmp_path / "artifact.bin"
    f.write_bytes(b"weights" * 100)
    sig = priv.sign(f.read_bytes(), ec.ECDSA(hashes.SHA256()))
    b = tmp_path / "artifact.bin.sig"
    b.write_text(json.dumps({"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
                             "verificationMaterial": {"publicKey": {"hint": "x"}, "tlogEntries": []},
                             "messageSignature": {"signature": base64.b64encode(sig).decode()}}))
    pub = tmp_path / "pub.pem"
    pub.write_bytes(key_pair[1])
    assert _verify(f, pub, "--artifact-signature").exit_code == 0
    assert "--artifact-signature" in _one_failed_line(_verify(f, pub))


def test_gate_refuses_cleanly_when_the_copy_cannot_be_made(tmp_path, monkeypatch):
    p = tmp_path / "model.pkl"
    p.write_bytes(BENIGN_PICKLE)

    def full(*a):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(gate, "_copy_fd", full)
    with pytest.raises(gate.UnsafeModelError, match="No space left"):
        gate.Gate().check(p)
    m = tmp_path / "m"
    m.mkdir()
    (m / "a.txt").write_text("x")
    with pytest.raises(gate.UnsafeModelError, match="No space left"):
        gate.Gate().check(m)


def test_mutated_bundles_fail_in_one_line(tmp_path):
    """Byte flips, truncations, certificate-chain and statement mutations of a real model_signing bundle:
    every outcome is a one-line VerificationFailure (never another exception, never a multi-line message)."""
    import base64
    import json
    import random
    import shutil

    from conftest import FIXTURES
    from scanner.attest.verify import Requirements, Trust, VerificationFailure, verify_model

    oms = FIXTURES / "attest" / "oms"
    m = tmp_path / "m"
    shutil.copytree(oms / "p256", m)
    raw = (m / "model.sig").read_bytes()
    rnd = random.Random(10)
    trusts = [Trust(public_keys=(oms / "keys" / "p256.pub.pem",)), Trust(identities=(("a@b.c", "https://x"),))]

    def variant(i: int) -> bytes:
        b = bytearray(raw)
        d = json.loads(raw)
        if i % 4 == 0:
            for _ in range(rnd.randint(1, 5)):
                b[rnd.randrange(len(b))] = rnd.randrange(256)
            return bytes(b)
        if i % 4 == 1:
            return bytes(b[:rnd.randrange(len(b))])
        if i % 4 == 2:
            vm = d["verificationMaterial"]
            vm.pop("publicKey", None)
            raw_cert = rnd.choice(["", "AAAA", 5, None, base64.b64encode(rnd.randbytes(50)).decode()])
            vm["x509CertificateChain"] = {"certificates": [{"rawBytes": raw_cert}]}
            vm["tlogEntries"] = rnd.choice([[], [{}], [{"logIndex": "1"}], "x"])
            return json.dumps(d).encode()
        st = json.loads(base64.b64decode(d["dsseEnvelope"]["payload"]))
        st[rnd.choice(["subject", "predicate", "predicateType", "_type"])] = rnd.choice(
            [None, 5, "x", [], {}, [{"name": 5}], {"serialization": 5}])
        d["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(st).encode()).decode()
        return json.dumps(d).encode()

    for i in range(120):
        (m / "model.sig").write_bytes(variant(i))
        for t in trusts:
            try:
                verify_model(m, [], t, Requirements())
            except VerificationFailure as e:
                assert "\n" not in str(e), str(e)


def test_sarif_shows_escaped_text_and_valid_uris(tmp_path):
    import json

    d = tmp_path / "rel"
    d.mkdir()
    (d / "ev\u202eil\n.pkl").write_bytes(HOSTILE_PICKLE)
    os.chdir(tmp_path)
    res = _cli(["scan", "--format", "sarif", "--jobs", "1", "--", "rel"])
    assert res.exit_code == 1, res.output
    doc = json.loads(res.stdout)
    (result,) = doc["runs"][0]["results"][:1]
    uri = result["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
    assert uri == "rel/ev%E2%80%AEil%0A.pkl"
    texts = [r["message"]["text"] for r in doc["runs"][0]["results"]]
    assert all(not any(c in t for c in FORBIDDEN) for t in texts)


def test_batch_cache_still_serves_symlinked_snapshot_files(tmp_path, monkeypatch):
    """Hugging Face cache layout: snapshots/<rev>/name -> ../../blobs/<sha>; hashed through the link's target."""
    import time

    from scanner import engine
    from scanner.batch import RACY_NS, open_cache, scan_batch
    from scanner.rules import Policy, load_ruleset

    repo = tmp_path / "models--x--y"
    (repo / "blobs").mkdir(parents=True)
    (repo / "snapshots" / "abc").mkdir(parents=True)
    (repo / "blobs" / "b1").write_bytes(HOSTILE_PICKLE)
    (repo / "snapshots" / "abc" / "model.pkl").symlink_to("../../blobs/b1")
    time.sleep(RACY_NS / 1e9 * 2)
    spec = open_cache(tmp_path / "cache", load_ruleset(), Policy(), b"k" * 32)
    first = scan_batch([repo], jobs=1, cache=spec)
    calls = []
    real = engine.scan_file
    monkeypatch.setattr(engine, "scan_file", lambda e, *a, **k: calls.append(e.display) or real(e, *a, **k))
    second = scan_batch([repo], jobs=1, cache=spec)
    assert first.verdict.value == second.verdict.value == "malicious"
    assert not calls, calls
    # the link re-pointed to other bytes: rescanned, never served from the old entry
    (repo / "blobs" / "b2").write_bytes(BENIGN_PICKLE)
    (repo / "snapshots" / "abc" / "model.pkl").unlink()
    (repo / "snapshots" / "abc" / "model.pkl").symlink_to("../../blobs/b2")
    (repo / "blobs" / "b1").unlink()
    assert scan_batch([repo], jobs=1, cache=spec).verdict.value == "clean"


def test_trusted_root_with_duplicate_keys_is_refused(tmp_path, key_pair):
    import json

    m, _ = _signed_folder(tmp_path, key_pair)
    doc = json.loads((m / "modelseal.sigstore.json").read_text())
    doc["verificationMaterial"] = {"x509CertificateChain": {"certificates": []}, "tlogEntries": []}
    (m / "modelseal.sigstore.json").write_text(json.dumps(doc))
    root = tmp_path / "root.json"
    root.write_text('{"mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1", '
                    '"tlogs": [], "tlogs": [], "certificateAuthorities": []}')
    res = _cli(["verify", str(m), "--identity", "a@example.com", "--issuer", "https://i.example",
                "--trusted-root", str(root)])
    out = _one_failed_line(res)
    assert "trusted root is not valid JSON: duplicate key 'tlogs'" in out
