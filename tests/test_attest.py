"""Attestations: digests, statement, key signing, verification and every tamper case; the CLI."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from typer.testing import CliRunner

from scanner.attest import digest as dg
from scanner.attest.attest import attest, default_output
from scanner.attest.dsse import key_hint, pae, parse_bundle
from scanner.attest.sign import KeySigner, SignError, generate_key, load_public_key
from scanner.attest.statement import PAYLOAD_TYPE, PREDICATE_TYPE, canonical_json
from scanner.attest.verify import (
    Requirements,
    Trust,
    VerificationFailure,
    parse_duration,
    verify_bundle,
    verify_model,
)
from scanner.cli import app
from scanner.rules import Policy

ALL_VERDICTS = frozenset({"clean", "suspicious", "malicious", "error"})
# protocol-0 pickle calling os.system: written as bytes, never loaded
HOSTILE_PICKLE = b"cos\nsystem\n(S'echo pwned'\ntR."



@pytest.fixture(scope="module")
def keys():
    out = {}
    for curve in ("p256", "p384"):
        priv, pub = generate_key(curve)
        out[curve] = (priv, pub)
    return out


def make_model(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.json").write_text('{"hidden_size": 8}\n')
    (root / "tokenizer.txt").write_text("a b c\n")
    (root / "sub").mkdir(exist_ok=True)
    (root / "sub" / "notes.txt").write_text("notes\n")
    return root


def signed(model: Path, priv: bytes, policy: Policy | None = None) -> tuple[Path, object]:
    att = attest(model, policy or Policy(), KeySigner.from_pem(priv))
    out = default_output(model)
    out.write_bytes(att.document())
    return out, att


def lenient(**kw) -> Requirements:
    return Requirements(allow_verdicts=ALL_VERDICTS, **kw)


# -- digests ----------------------------------------------------------------------------------------

def test_hash_file_matches_hashlib(tmp_path):
    data = os.urandom(3 * dg.READ_CHUNK // 2)
    p = tmp_path / "blob"
    p.write_bytes(data)
    assert dg.hash_file(p) == (hashlib.sha256(data).hexdigest(), len(data))


def test_manifest_order_is_by_path_components(tmp_path):
    # as strings "a-b" < "a/b"; as path components ("a", "b") < ("a-b",): model-signing uses the latter
    m = tmp_path / "m"
    (m / "a").mkdir(parents=True)
    (m / "a" / "b").write_bytes(b"1")
    (m / "a-b").write_bytes(b"2")
    md = dg.digest_model(m)
    assert [f.name for f in md.files] == ["a/b", "a-b"]
    raw = hashlib.sha256(b"1").digest() + hashlib.sha256(b"2").digest()
    assert md.manifest_digest == hashlib.sha256(raw).hexdigest()


def test_ignored_names_only_at_the_root(tmp_path):
    m = make_model(tmp_path / "m")
    (m / ".git").mkdir()
    (m / ".git" / "HEAD").write_text("ref")
    (m / "model.sig").write_text("{}")
    (m / "other.sigstore.json").write_text("{}")
    (m / "sub" / "model.sig").write_text("nested files are model content")
    md = dg.digest_model(m)
    names = [f.name for f in md.files]
    assert "sub/model.sig" in names
    assert not any(n.startswith(".git") or n in ("model.sig", "other.sigstore.json") for n in names)
    assert set(md.ignored) == {".git", "model.sig", "other.sigstore.json"}


def test_symlinks_are_not_followed_silently(tmp_path):
    m = make_model(tmp_path / "m")
    (m / "link.txt").symlink_to(m / "config.json")
    with pytest.raises(dg.DigestError, match="symlink"):
        dg.digest_model(m)
    md = dg.digest_model(m, allow_symlinks=True)
    assert md.by_name["link.txt"].sha256 == md.by_name["config.json"].sha256
    (m / "out.txt").symlink_to(tmp_path)
    with pytest.raises(dg.DigestError, match="not a file inside"):
        dg.digest_model(m, allow_symlinks=True)


def test_parallel_and_serial_digests_agree(tmp_path):
    m = tmp_path / "m"
    m.mkdir()
    for i in range(6):
        (m / f"f{i}").write_bytes(os.urandom(1000 * (i + 1)))
    assert dg.digest_model(m, workers=1) == dg.digest_model(m, workers=4)


# -- statement ---------------------------------------------------------------------------------------

def test_statement_shape_and_determinism(tmp_path, keys):
    m = make_model(tmp_path / "m")
    a1 = attest(m, Policy(), None)
    a2 = attest(m, Policy(), None)
    st = a1.statement
    assert st["_type"] == "https://in-toto.io/Statement/v1"
    assert st["predicateType"] == PREDICATE_TYPE
    assert {s["name"] for s in st["subject"]} == {"config.json", "tokenizer.txt", "sub/notes.txt"}
    for s in st["subject"]:
        assert s["digest"]["sha256"] == hashlib.sha256((m / s["name"]).read_bytes()).hexdigest()
    pred = st["predicate"]
    assert pred["scanner"]["name"] == "modelseal" and pred["scanner"]["rulesDigest"].startswith("sha256:")
    assert pred["model"]["manifestDigest"]["sha256"] == a1.model.manifest_digest
    assert pred["verdict"] == a1.report.verdict.value
    assert pred["policy"]["failOn"] == "medium"
    # the signed bytes are canonical JSON: same statement, same bytes, keys sorted, no spaces
    a2_stmt = dict(a2.statement, predicate=dict(a2.statement["predicate"], scanStartedOn=pred["scanStartedOn"],
                                                scanFinishedOn=pred["scanFinishedOn"]))
    assert canonical_json(a2_stmt) == a1.payload
    assert a1.payload == json.dumps(st, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def test_attest_hashes_each_file_once(tmp_path, monkeypatch):
    """The engine must reuse the parallel digests, not hash the files again."""
    import scanner.engine

    def boom(*a, **k):
        raise AssertionError("file hashed twice")

    monkeypatch.setattr(scanner.engine, "sha256_file", boom)
    m = make_model(tmp_path / "m")
    att = attest(m, Policy(), None)
    assert all(fr.sha256 for fr in att.report.files)
    assert {fr.sha256 for fr in att.report.files} == {f.sha256 for f in att.model.files}


def test_scan_findings_are_recorded(tmp_path):
    m = make_model(tmp_path / "m")
    (m / "model.pkl").write_bytes(HOSTILE_PICKLE)
    att = attest(m, Policy(), None)
    assert att.report.verdict.value != "clean"
    paths = {f["path"] for f in att.statement["predicate"]["findings"]}
    assert "model.pkl" in paths
    assert att.statement["predicate"]["summary"]["files"] == 4


# -- sign / verify round trips and tampering ------------------------------------------------------------

@pytest.mark.parametrize("curve", ["p256", "p384"])
def test_round_trip(tmp_path, keys, curve):
    priv, pub = keys[curve]
    m = make_model(tmp_path / "m")
    bundle, att = signed(m, priv)
    doc = json.loads(bundle.read_text())
    assert doc["mediaType"] == "application/vnd.dev.sigstore.bundle.v0.3+json"
    assert doc["verificationMaterial"]["publicKey"]["hint"] == hashlib.sha256(pub).hexdigest()
    assert doc["dsseEnvelope"]["payloadType"] == PAYLOAD_TYPE
    (v,) = verify_model(m, [], Trust(public_keys=(pub,)), lenient())
    assert v.kind == "modelseal" and v.verdict == att.report.verdict.value
    assert set(v.files) == {"config.json", "tokenizer.txt", "sub/notes.txt"}


def test_single_file_round_trip(tmp_path, keys):
    priv, pub = keys["p256"]
    f = tmp_path / "weights.txt"
    f.write_text("weights")
    bundle, att = signed(f, priv)
    assert bundle.name == "weights.txt.modelseal.sigstore.json"
    assert att.statement["subject"][0]["name"] == "weights.txt"
    (v,) = verify_model(f, [], Trust(public_keys=(pub,)), lenient())
    assert v.files == ("weights.txt",)
    f.write_text("weights!")
    with pytest.raises(VerificationFailure, match="modified"):
        verify_model(f, [], Trust(public_keys=(pub,)), lenient())


def test_signature_covers_the_pae(keys):
    priv, pub = keys["p256"]
    b = KeySigner.from_pem(priv).sign(PAYLOAD_TYPE, b"{}")
    sig = base64.b64decode(b["dsseEnvelope"]["signatures"][0]["sig"])
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    load_public_key(pub).verify(sig, b"DSSEv1 28 application/vnd.in-toto+json 2 {}", ec.ECDSA(hashes.SHA256()))
    assert pae(PAYLOAD_TYPE, b"{}") == b"DSSEv1 28 application/vnd.in-toto+json 2 {}"


def _rewrite(bundle: Path, fn) -> None:
    doc = json.loads(bundle.read_text())
    fn(doc)
    bundle.write_text(json.dumps(doc))


def _edit_payload(doc):
    st = json.loads(base64.b64decode(doc["dsseEnvelope"]["payload"]))
    st["predicate"]["verdict"] = "clean"
    st["predicate"]["findings"] = []
    doc["dsseEnvelope"]["payload"] = base64.b64encode(canonical_json(st)).decode()


def _edit_signature(doc):
    sig = bytearray(base64.b64decode(doc["dsseEnvelope"]["signatures"][0]["sig"]))
    sig[-1] ^= 1
    doc["dsseEnvelope"]["signatures"][0]["sig"] = base64.b64encode(bytes(sig)).decode()


def _edit_payload_type(doc):
    doc["dsseEnvelope"]["payloadType"] = "application/json"


@pytest.mark.parametrize(("edit", "reason"), [
    (_edit_payload, "signature does not verify"),
    (_edit_signature, "signature does not verify"),
    (_edit_payload_type, "signature does not verify"),
])
def test_envelope_tampering_fails(tmp_path, keys, edit, reason):
    priv, pub = keys["p384"]
    m = make_model(tmp_path / "m")
    bundle, _ = signed(m, priv)
    _rewrite(bundle, edit)
    with pytest.raises(VerificationFailure, match=reason):
        verify_model(m, [], Trust(public_keys=(pub,)), lenient())


@pytest.mark.parametrize(("change", "reason"), [
    (lambda m: (m / "sub" / "notes.txt").write_text("changed\n"), "sub/notes.txt was modified"),
    (lambda m: (m / "extra.bin").write_bytes(b"x"), "unattested file extra.bin"),
    (lambda m: (m / "tokenizer.txt").unlink(), "tokenizer.txt is missing"),
])
def test_file_tampering_fails(tmp_path, keys, change, reason):
    priv, pub = keys["p256"]
    m = make_model(tmp_path / "m")
    signed(m, priv)
    verify_model(m, [], Trust(public_keys=(pub,)), lenient())
    change(m)
    with pytest.raises(VerificationFailure, match=reason):
        verify_model(m, [], Trust(public_keys=(pub,)), lenient())


def test_allow_extra_accepts_unattested_files(tmp_path, keys):
    priv, pub = keys["p256"]
    m = make_model(tmp_path / "m")
    signed(m, priv)
    (m / "README.md").write_text("hi")
    verify_model(m, [], Trust(public_keys=(pub,)), lenient(allow_extra=True))


def test_wrong_key_fails(tmp_path, keys):
    m = make_model(tmp_path / "m")
    signed(m, keys["p256"][0])
    with pytest.raises(VerificationFailure, match="not a trusted key"):
        verify_model(m, [], Trust(public_keys=(keys["p384"][1],)), lenient())
    # a key claiming the right hint still has to produce the signature
    _rewrite(default_output(m), lambda d: d["verificationMaterial"]["publicKey"].update(
        hint=key_hint(keys["p384"][1])))
    with pytest.raises(VerificationFailure, match="signature does not verify"):
        verify_model(m, [], Trust(public_keys=(keys["p384"][1],)), lenient())


def test_wrong_predicate_type_is_refused_where_a_scan_is_required(tmp_path, keys):
    priv, pub = keys["p256"]
    m = make_model(tmp_path / "m")
    att = attest(m, Policy(), None)
    other = dict(att.statement, predicateType="https://example.com/not-a-scan/v1")
    bundle = KeySigner.from_pem(priv).sign(PAYLOAD_TYPE, canonical_json(other))
    raw = json.dumps(bundle).encode()
    with pytest.raises(VerificationFailure, match="predicate type"):
        verify_bundle(m, raw, Trust(public_keys=(pub,)), lenient(), accept_types=[PREDICATE_TYPE])
    # a plain in-toto statement still verifies its subjects, and records no verdict
    v = verify_bundle(m, raw, Trust(public_keys=(pub,)), Requirements())
    assert v.kind == "in-toto" and v.verdict is None


def test_verdict_not_allowed(tmp_path, keys):
    priv, pub = keys["p256"]
    m = make_model(tmp_path / "m")
    (m / "model.pkl").write_bytes(HOSTILE_PICKLE)
    _, att = signed(m, priv)
    verdict = att.report.verdict.value
    assert verdict != "clean"
    with pytest.raises(VerificationFailure, match=f"scan verdict is {verdict}"):
        verify_model(m, [], Trust(public_keys=(pub,)), Requirements())
    verify_model(m, [], Trust(public_keys=(pub,)), Requirements(allow_verdicts=frozenset({verdict})))


def test_too_old_and_future(tmp_path, keys):
    priv, pub = keys["p256"]
    m = make_model(tmp_path / "m")
    signed(m, priv)
    later = datetime.now(timezone.utc) + timedelta(days=31)
    with pytest.raises(VerificationFailure, match="too old"):
        verify_model(m, [], Trust(public_keys=(pub,)), lenient(max_age=timedelta(days=30), now=later))
    verify_model(m, [], Trust(public_keys=(pub,)), lenient(max_age=timedelta(days=32), now=later))
    earlier = datetime.now(timezone.utc) - timedelta(days=1)
    with pytest.raises(VerificationFailure, match="future"):
        verify_model(m, [], Trust(public_keys=(pub,)), lenient(now=earlier))


def test_manifest_digest_must_match_subjects(tmp_path, keys):
    priv, pub = keys["p256"]
    m = make_model(tmp_path / "m")
    att = attest(m, Policy(), None)
    st = json.loads(att.payload)
    st["predicate"]["model"]["manifestDigest"]["sha256"] = "0" * 64
    raw = json.dumps(KeySigner.from_pem(priv).sign(PAYLOAD_TYPE, canonical_json(st))).encode()
    with pytest.raises(VerificationFailure, match="manifest digest"):
        verify_bundle(m, raw, Trust(public_keys=(pub,)), lenient())


def test_subject_escaping_the_model_is_refused(tmp_path, keys):
    priv, pub = keys["p256"]
    m = make_model(tmp_path / "m")
    (tmp_path / "outside.txt").write_text("x")
    st = {"_type": "https://in-toto.io/Statement/v1", "predicateType": "https://example.com/x",
          "subject": [{"name": "../outside.txt",
                       "digest": {"sha256": hashlib.sha256(b"x").hexdigest()}}], "predicate": {}}
    raw = json.dumps(KeySigner.from_pem(priv).sign(PAYLOAD_TYPE, canonical_json(st))).encode()
    with pytest.raises(VerificationFailure, match="not a path inside"):
        verify_bundle(m, raw, Trust(public_keys=(pub,)), lenient(allow_extra=True))


def test_keyless_bundle_needs_an_identity(tmp_path, keys):
    doc = KeySigner.from_pem(keys["p256"][0]).sign(PAYLOAD_TYPE, b"{}")
    doc["verificationMaterial"] = {"certificate": {"rawBytes": ""}, "tlogEntries": []}
    with pytest.raises(VerificationFailure, match="no trusted identity"):
        verify_bundle(tmp_path, json.dumps(doc).encode(), Trust(public_keys=(keys["p256"][1],)), lenient())


def test_parse_bundle_rejects_garbage():
    for raw in (b"", b"[]", b'{"mediaType": "x"}', b'{"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json"}'):
        with pytest.raises(ValueError):
            parse_bundle(raw)


def test_encrypted_key(keys):
    priv, _ = generate_key("p256", b"s3cret")
    with pytest.raises(SignError):
        KeySigner.from_pem(priv)
    with pytest.raises(SignError):
        KeySigner.from_pem(priv, b"wrong")
    assert KeySigner.from_pem(priv, b"s3cret").hint


def test_parse_duration():
    assert parse_duration("30d") == timedelta(days=30)
    assert parse_duration("12h") == timedelta(hours=12)
    with pytest.raises(ValueError):
        parse_duration("soon")


# -- CLI ----------------------------------------------------------------------------------------------

runner = CliRunner()


def run(*args: str, env: dict[str, str] | None = None):
    return runner.invoke(app, [str(a) for a in args], env=env)


@pytest.mark.parametrize("curve", ["p256", "p384"])
def test_cli_keygen_attest_verify(tmp_path, curve):
    key = tmp_path / "k.pem"
    r = run("keygen", key, "--curve", curve, "--password-env", "PW", env={"PW": "pw"})
    assert r.exit_code == 0, r.output
    assert (tmp_path / "k.pub.pem").exists() and (key.stat().st_mode & 0o777) == 0o600
    m = make_model(tmp_path / "m")
    r = run("attest", m, "--key", key, "--key-password-env", "PW", env={"PW": "pw"})
    verdict = json.loads(base64.b64decode(json.loads((m / "modelseal.sigstore.json").read_text())
                                          ["dsseEnvelope"]["payload"]))["predicate"]["verdict"]
    assert r.exit_code == (0 if verdict == "clean" else 1), r.output
    r = run("verify", m, "--key", tmp_path / "k.pub.pem", "--allow-verdict", verdict)
    assert r.exit_code == 0, r.output
    assert "OK" in r.output
    (m / "config.json").write_text("{}")
    r = run("verify", m, "--key", tmp_path / "k.pub.pem", "--allow-verdict", verdict)
    assert r.exit_code == 1
    assert "config.json was modified" in r.output


def test_cli_attest_writes_even_when_the_scan_fails(tmp_path):
    key = tmp_path / "k.pem"
    assert run("keygen", key).exit_code == 0
    m = make_model(tmp_path / "m")
    (m / "model.pkl").write_bytes(HOSTILE_PICKLE)
    out = tmp_path / "att.json"
    r = run("attest", m, "--key", key, "-o", out)
    assert r.exit_code == 1, r.output
    assert out.exists()
    r = run("verify", m, "--bundle", out, "--key", tmp_path / "k.pub.pem")
    assert r.exit_code == 1 and "scan verdict is" in r.output


def test_cli_unsigned(tmp_path):
    f = tmp_path / "w.txt"
    f.write_text("w")
    run("attest", f, "--unsigned")
    st = json.loads((tmp_path / "w.txt.modelseal.intoto.json").read_text())
    assert st["subject"][0] == {"name": "w.txt", "digest": {"sha256": hashlib.sha256(b"w").hexdigest()}}


def test_cli_usage_errors_exit_2(tmp_path):
    m = make_model(tmp_path / "m")
    assert run("attest", m).exit_code == 2                                  # no signing mode
    assert run("attest", m, "--unsigned", "--keyless").exit_code == 2
    assert run("attest", tmp_path / "nope", "--unsigned").exit_code == 2
    assert run("verify", m).exit_code == 2                                  # no trust
    assert run("verify", m, "--identity", "a@b.c").exit_code == 2           # no issuer
    assert run("verify", m, "--key", tmp_path / "missing.pem").exit_code == 2
    key = tmp_path / "k.pem"
    run("keygen", key)
    assert run("verify", m, "--key", tmp_path / "k.pub.pem", "--max-age", "soon").exit_code == 2
    assert run("verify", m, "--key", tmp_path / "k.pub.pem", "--allow-verdict", "fine").exit_code == 2
    assert run("keygen", key).exit_code == 2                                # never overwrites
    assert run("keygen", tmp_path / "x.pem", "--curve", "p999").exit_code == 2
    r = run("verify", m, "--key", tmp_path / "k.pub.pem")                  # nothing to verify: a failure
    assert r.exit_code == 1 and "no attestation found" in r.output


def test_cli_keyless_uses_the_signer(tmp_path, monkeypatch):
    """--keyless goes through sigstore's signer; here a fake stands in (no network in tests)."""
    from scanner.attest import sign

    seen = {}

    def fake_sign(self, payload_type, payload):
        seen.update(token=self.identity_token, staging=self.staging, payload=payload)
        return {"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json", "fake": True}

    monkeypatch.setattr(sign.KeylessSigner, "sign", fake_sign)
    f = tmp_path / "w.txt"
    f.write_text("w")
    run("attest", f, "--keyless", "--identity-token", "tok", "--staging")
    assert seen["token"] == "tok" and seen["staging"] is True
    assert json.loads(seen["payload"])["predicateType"] == PREDICATE_TYPE
    assert json.loads((tmp_path / "w.txt.modelseal.sigstore.json").read_text())["fake"] is True


def test_keyless_without_token_is_a_clean_error(tmp_path, monkeypatch):
    import sigstore.oidc

    monkeypatch.setattr(sigstore.oidc, "detect_credential", lambda *a, **k: None)
    f = tmp_path / "w.txt"
    f.write_text("w")
    r = run("attest", f, "--keyless")
    assert r.exit_code == 2 and "identity token" in r.output


@pytest.mark.skipif(not os.environ.get("MODELSEAL_LIVE_SIGSTORE"),
                    reason="live Sigstore test: set MODELSEAL_LIVE_SIGSTORE=1 with ambient OIDC credentials, "
                           "MODELSEAL_LIVE_IDENTITY and MODELSEAL_LIVE_ISSUER")
def test_live_keyless_round_trip(tmp_path):  # pragma: no cover - opt-in, needs the network
    m = make_model(tmp_path / "m")
    staging = os.environ.get("MODELSEAL_LIVE_STAGING") == "1"
    r = run("attest", m, "--keyless", *(["--staging"] if staging else []))
    assert r.exit_code in (0, 1), r.output
    r = run("verify", m, "--identity", os.environ["MODELSEAL_LIVE_IDENTITY"], "--issuer",
            os.environ["MODELSEAL_LIVE_ISSUER"], "--allow-verdict", "clean,suspicious",
            *(["--staging"] if staging else []))
    assert r.exit_code == 0, r.output


def test_clean_model_verifies_with_default_requirements(tmp_path, keys):
    """Text and JSON files are not model formats (info only): the scan is clean and verify's defaults hold."""
    priv, pub = keys["p256"]
    m = make_model(tmp_path / "m")
    _, att = signed(m, priv)
    assert att.report.verdict.value == "clean"
    (v,) = verify_model(m, [], Trust(public_keys=(pub,)), Requirements())
    assert v.verdict == "clean"


def test_signed_but_malformed_predicate_fails_closed(tmp_path, keys):
    priv, pub = keys["p256"]
    m = make_model(tmp_path / "m")
    st = json.loads(attest(m, Policy(), None).payload)
    st["predicate"]["policy"] = "not an object"
    raw = json.dumps(KeySigner.from_pem(priv).sign(PAYLOAD_TYPE, canonical_json(st))).encode()
    with pytest.raises(VerificationFailure, match="malformed"):
        verify_bundle(m, raw, Trust(public_keys=(pub,)), lenient())


def test_pipelined_hash_matches_hashlib(tmp_path):
    """Large files overlap reading with hashing; the digest must be the plain sha256 of the bytes."""
    from scanner.attest import digest as dg

    data = os.urandom(3 * dg.PIPELINE_CHUNK + 12345)
    p = tmp_path / "big.bin"
    p.write_bytes(data)
    with open(p, "rb", buffering=0) as fh:
        assert dg.hash_stream_pipelined(fh) == (hashlib.sha256(data).hexdigest(), len(data))
    empty = tmp_path / "empty.bin"
    empty.write_bytes(b"")
    with open(empty, "rb", buffering=0) as fh:
        assert dg.hash_stream_pipelined(fh) == (hashlib.sha256(b"").hexdigest(), 0)
