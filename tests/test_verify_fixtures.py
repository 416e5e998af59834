"""Real Sigstore bundles (OpenSSF Model Signing, sigstore-conformance) verify offline; tampered ones fail.

The repository owns models signed by the real model_signing with local keys (fixtures/attest/oms, written by
fixtures/gen_oms.py): those tests always run. The keyless bundles live in ../shared/sigstore-fixtures (or
$MODELSEAL_SHARED), an optional extra: the tests marked `needs_shared` skip without them, and
`test_no_verification_test_skips_with_repo_fixtures_only` proves nothing else does.
Tampering works on copies under tmp_path.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import FIXTURES, SHARED, tomllib
from scanner.attest.digest import digest_model
from scanner.attest.statement import PREDICATE_TYPE
from scanner.attest.verify import Requirements, Trust, VerificationFailure, verify_bundle, verify_model
from scanner.cli import app

SIG = SHARED / "sigstore-fixtures"
SHARED_SKIP = "optional extra: ../shared/sigstore-fixtures (keyless Sigstore bundles) not present"
needs_shared = pytest.mark.skipif(not SIG.is_dir(), reason=SHARED_SKIP)
OMS = FIXTURES / "attest" / "oms"
CASES = tomllib.loads((OMS / "cases.toml").read_text())["case"]

IBM = ("stefanb@us.ibm.com", "https://sigstore.verify.ibm.com/oauth2")
BEACON = ("https://github.com/sigstore-conformance/extremely-dangerous-public-oidc-beacon/.github/workflows/"
          "extremely-dangerous-oidc-beacon.yml@refs/heads/main", "https://token.actions.githubusercontent.com")
GITHUB_WHL = ("https://github.com/trailofbits/rfc8785.py/.github/workflows/release.yml@refs/tags/v0.1.2",
              "https://token.actions.githubusercontent.com")
OMS_VERSIONS = ["mt-v0.3.1-sigstore", "mt-v1.0.0-sigstore", "mt-v1.0.1-sigstore", "mt-v1.1.0-sigstore"]


def copy_model(name: str, tmp_path: Path) -> Path:
    dst = tmp_path / name
    shutil.copytree(SIG / name, dst)
    for p in [dst, *dst.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)  # the shared copies are read-only
    return dst


def oms(model: Path, trust: Trust, **req):
    # v1.0.1 and earlier did not record their ignored paths; their test scripts pass --ignore-paths
    return verify_model(model, [model / "model.sig"], trust, Requirements(ignore=("ignore-me",), **req))


# -- OMS signatures the repository owns (real model_signing, local keys) -------------------------------------

@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c['model']}@{Path(c['key']).stem}")
def test_repo_oms_fixture(case):
    model = OMS / case["model"]
    trust = Trust(public_keys=(OMS / case["key"],))
    if case["expect"] == "ok":
        (v,) = verify_model(model, [], trust, Requirements())
        assert v.kind == "oms" and set(v.files) == set(case["files"])
        assert v.signer.startswith("key ")
    else:
        with pytest.raises(VerificationFailure, match=case["expect"]) as e:
            verify_model(model, [], trust, Requirements())
        assert "\n" not in str(e.value)


def test_repo_oms_cases_cover_every_fixture_and_both_outcomes():
    listed = {c["model"].split("/")[0] for c in CASES}
    on_disk = {p.name for p in OMS.iterdir() if p.is_dir() and p.name != "keys"}
    assert listed == on_disk
    assert {c["expect"] == "ok" for c in CASES} == {True, False}
    assert all(c["real"] in ("accepts", "refuses") for c in CASES)
    # every twin the real tool refuses, modelseal refuses too
    assert all(c["expect"] != "ok" for c in CASES if c["real"] == "refuses")


def test_repo_oms_digest_equals_model_signing_subject():
    for name in ("p256", "p521"):
        (v,) = verify_model(OMS / name, [], Trust(public_keys=(OMS / "keys" / f"{name}.pub.pem",)), Requirements())
        assert digest_model(OMS / name).manifest_digest == v.statement["subject"][0]["digest"]["sha256"]


def test_repo_oms_cli(tmp_path):
    runner = CliRunner()
    r = runner.invoke(app, ["verify", str(OMS / "p256"), "--key", str(OMS / "keys" / "p256.pub.pem")])
    assert r.exit_code == 0, r.output
    assert r.output.startswith("OK: model.sig: OMS model signature signed by key ")
    r = runner.invoke(app, ["verify", str(OMS / "tamper-modified"), "--key", str(OMS / "keys" / "p256.pub.pem")])
    assert r.exit_code == 1 and r.output.count("\n") == 1 and "weights.bin was modified" in r.output
    # the gate refuses an OMS signature as a scan attestation: it proves who signed, not what a scan found
    from scanner import gate

    with pytest.raises(gate.UnsafeModelError, match="no trusted attestation"):
        gate.Gate(gate.Trust(public_keys=[OMS / "keys" / "p256.pub.pem"]), require_attestation=True).check(OMS / "p256")


def test_no_verification_test_skips_with_repo_fixtures_only(tmp_path):
    """A fresh clone has no ../shared: run the verification tests that way; only the optional keyless-extra
    tests may skip, and the repository's own signature tests must all run and pass."""
    import os
    import subprocess
    import sys

    if os.environ.get("MODELSEAL_INNER_RUN"):
        pytest.skip("inner run")
    env = {**os.environ, "MODELSEAL_SHARED": str(tmp_path / "no-shared"), "MODELSEAL_INNER_RUN": "1"}
    root = Path(__file__).resolve().parent.parent
    junit = tmp_path / "junit.xml"
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs",
                          f"--junitxml={junit}", "tests/test_verify_fixtures.py", "tests/test_attest.py",
                          "tests/test_gate.py", "-k", "not test_no_verification_test_skips"],
                         cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    import xml.etree.ElementTree as ET

    cases = ET.parse(junit).getroot().iter("testcase")
    ran, skipped = [], []
    for c in cases:
        sk = c.find("skipped")
        (skipped if sk is not None else ran).append((c.get("name"), sk.get("message", "") if sk is not None else ""))
    allowed = (SHARED_SKIP, "live Sigstore test", "could not import 'torch'")
    bad = [(n, m) for n, m in skipped if not any(a in m for a in allowed)]
    assert not bad, bad
    names = {n.split("[")[0] for n, _ in ran}
    assert {"test_repo_oms_fixture", "test_repo_oms_cli", "test_oms_key_signature_from_model_signing_verifies",
            "test_key_message_signature"} <= names
    assert sum(1 for n, _ in ran if n.startswith("test_repo_oms_fixture")) == len(CASES)

@needs_shared
def test_our_manifest_digest_equals_model_signing(tmp_path):
    payload = json.loads(base64.b64decode(json.loads((SIG / "mt-v1.1.0-sigstore" / "model.sig").read_text())
                                          ["dsseEnvelope"]["payload"]))
    md = digest_model(SIG / "mt-v1.1.0-sigstore", ignore=lambda rel: rel == "ignore-me")
    assert md.manifest_digest == payload["subject"][0]["digest"]["sha256"]
    assert [{"name": f.name, "digest": f.sha256} for f in md.files] == [
        {"name": r["name"], "digest": r["digest"]} for r in payload["predicate"]["resources"]]


@needs_shared
@pytest.mark.parametrize("version", OMS_VERSIONS)
def test_oms_keyless_signatures_verify(version):
    (v,) = oms(SIG / version, Trust(identities=(IBM,)))
    assert v.kind == "oms"
    assert v.signer.startswith("stefanb@us.ibm.com")
    assert set(v.files) == {"signme-1", "signme-2"}


@needs_shared
def test_oms_ignore_paths_recorded_in_v1_1_0_are_honoured():
    # no --ignore: the predicate's own ignore_paths leave ignore-me out
    (v,) = verify_model(SIG / "mt-v1.1.0-sigstore", [], Trust(identities=(IBM,)), Requirements())
    assert v.kind == "oms"
    with pytest.raises(VerificationFailure, match="unattested file ignore-me"):
        verify_model(SIG / "mt-v1.0.1-sigstore", [], Trust(identities=(IBM,)), Requirements())


@needs_shared
def test_oms_elliptic_key_signature_verifies_with_preamble_pem():
    pem = SIG / "mt-keys" / "signing-key-pub.pem"
    assert not pem.read_bytes().startswith(b"-----")  # the text preamble is the point
    (v,) = oms(SIG / "mt-v1.1.0-elliptic-key", Trust(public_keys=(pem,)))
    assert v.kind == "oms" and v.signer.startswith("key e8450dec4eb99dae")


@needs_shared
def test_oms_wrong_identity_fails():
    with pytest.raises(VerificationFailure, match="SANs do not match"):
        oms(SIG / "mt-v1.1.0-sigstore", Trust(identities=(("someone@example.com", IBM[1]),)))
    with pytest.raises(VerificationFailure, match="OIDCIssuer does not match"):
        oms(SIG / "mt-v1.1.0-sigstore", Trust(identities=((IBM[0], "https://accounts.google.com"),)))


@needs_shared
def test_oms_key_signature_needs_the_key():
    with pytest.raises(VerificationFailure, match="no trusted public key"):
        oms(SIG / "mt-v1.1.0-elliptic-key", Trust(identities=(IBM,)))
    with pytest.raises(VerificationFailure, match="not a trusted key"):
        oms(SIG / "mt-v1.1.0-elliptic-key", Trust(public_keys=(FIXTURES / "attest" / "oms-signing.pub.pem",)))


@needs_shared
@pytest.mark.parametrize("name", ["mt-v1.1.0-sigstore", "mt-v1.1.0-elliptic-key"])
def test_oms_tampering_fails(tmp_path, name):
    trust = Trust(identities=(IBM,), public_keys=(SIG / "mt-keys" / "signing-key-pub.pem",))
    m = copy_model(name, tmp_path)
    oms(m, trust)
    (m / "signme-1").write_bytes(b"edited\n")
    with pytest.raises(VerificationFailure, match="signme-1 was modified"):
        oms(m, trust)

    m = copy_model(name, tmp_path / "extra")
    (m / "signme-3").write_bytes(b"new\n")
    with pytest.raises(VerificationFailure, match="unattested file signme-3"):
        oms(m, trust)
    oms(m, trust, allow_extra=True)

    m = copy_model(name, tmp_path / "removed")
    (m / "signme-2").unlink()
    with pytest.raises(VerificationFailure, match="signme-2 is missing"):
        oms(m, trust)

    m = copy_model(name, tmp_path / "envelope")
    doc = json.loads((m / "model.sig").read_text())
    st = json.loads(base64.b64decode(doc["dsseEnvelope"]["payload"]))
    st["predicate"]["resources"] = st["predicate"]["resources"][:1]
    doc["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(st).encode()).decode()
    (m / "model.sig").write_text(json.dumps(doc))
    with pytest.raises(VerificationFailure, match="verification failed|signature does not verify"):
        oms(m, trust)


def test_oms_key_signature_from_model_signing_verifies():
    """fixtures/attest/oms-key-model/model.sig was written by `model_signing` (fixtures/gen_attest.py)."""
    m = FIXTURES / "attest" / "oms-key-model"
    trust = Trust(public_keys=(FIXTURES / "attest" / "oms-signing.pub.pem",))
    (v,) = verify_model(m, [], trust, Requirements())
    assert v.kind == "oms" and set(v.files) == {"config.json", "sub/vocab.txt", "weights.bin"}
    assert digest_model(m, ignore=lambda rel: rel == "ignore-me").manifest_digest == \
        v.statement["subject"][0]["digest"]["sha256"]


def test_oms_key_signature_from_model_signing_detects_edits(tmp_path):
    m = tmp_path / "m"
    shutil.copytree(FIXTURES / "attest" / "oms-key-model", m)
    (m / "weights.bin").write_bytes(b"\0" * 1024)
    with pytest.raises(VerificationFailure, match="weights.bin was modified"):
        verify_model(m, [], Trust(public_keys=(FIXTURES / "attest" / "oms-signing.pub.pem",)), Requirements())


# -- sigstore-conformance bundles ------------------------------------------------------------------------

@needs_shared
def test_conformance_happy_path_verifies_against_artifact():
    b = SIG / "conf" / "happy-path-intoto-in-dsse-v3" / "bundle.sigstore.json"
    (v,) = verify_model(SIG / "conf" / "a.txt", [b], Trust(identities=(BEACON,)), Requirements())
    assert v.kind == "in-toto" and v.files == ("a.txt",)


@needs_shared
def test_conformance_happy_path_rejects_another_artifact(tmp_path):
    b = SIG / "conf" / "happy-path-intoto-in-dsse-v3" / "bundle.sigstore.json"
    other = tmp_path / "a.txt"
    other.write_text("not the attested bytes\n")
    with pytest.raises(VerificationFailure, match="matches no subject"):
        verify_model(other, [b], Trust(identities=(BEACON,)), Requirements())


@needs_shared
def test_conformance_rekor_v2_with_its_own_root():
    d = SIG / "conf" / "rekor2-dsse-happy-path"
    (v,) = verify_model(SIG / "conf" / "a.txt", [d / "bundle.sigstore.json"],
                        Trust(identities=(BEACON,), trusted_root=d / "trusted_root.json"), Requirements())
    assert v.kind == "in-toto"


@needs_shared
@pytest.mark.parametrize("name", ["dsse-invalid-sig_fail", "dsse-mismatch-envelope_fail", "dsse-mismatch-sig_fail"])
def test_conformance_failures_are_rejected(name):
    raw = (SIG / "conf" / name / "bundle.sigstore.json").read_bytes()
    with pytest.raises(VerificationFailure, match="Sigstore verification failed"):
        verify_bundle(SIG / "conf" / "a.txt", raw, Trust(identities=(BEACON,)), Requirements(allow_extra=True))


@needs_shared
def test_conformance_expired_certificate_is_rejected():
    d = SIG / "conf" / "intoto-expired-certificate_fail"
    with pytest.raises(VerificationFailure, match="Sigstore verification failed"):
        verify_model(d / "artifact", [d / "bundle.sigstore.json"],
                     Trust(identities=(BEACON,), trusted_root=d / "trusted_root.json"), Requirements())


@needs_shared
def test_conformance_message_signature_verifies_against_artifact(tmp_path):
    b = SIG / "conf" / "happy-path-v0.3" / "bundle.sigstore.json"
    (v,) = verify_model(SIG / "conf" / "a.txt", [b], Trust(identities=(BEACON,)), Requirements())
    assert v.kind == "message" and v.files == ("a.txt",)
    assert v.digests["a.txt"] == hashlib.sha256((SIG / "conf" / "a.txt").read_bytes()).hexdigest()
    other = tmp_path / "a.txt"
    other.write_text("not the signed bytes\n")
    with pytest.raises(VerificationFailure, match="a.txt was modified"):
        verify_model(other, [b], Trust(identities=(BEACON,)), Requirements())


@needs_shared
def test_message_signature_is_not_a_scan_attestation_for_the_gate():
    raw = (SIG / "conf" / "happy-path-v0.3" / "bundle.sigstore.json").read_bytes()
    with pytest.raises(VerificationFailure, match="plain message signature"):
        verify_bundle(SIG / "conf" / "a.txt", raw, Trust(identities=(BEACON,)), Requirements(),
                      accept_types=[PREDICATE_TYPE])


@needs_shared
def test_pinned_client_trust_config_works():
    (v,) = oms(SIG / "mt-v1.1.0-sigstore",
               Trust(identities=(IBM,), trusted_root=SIG / "public-good.trustconfig.json"))
    assert v.kind == "oms"


# -- plain message signatures (no DSSE) -------------------------------------------------------------

WHL = SIG / "sp-github" / "bundle_v3_github.whl"
WHL_BUNDLE = SIG / "sp-github" / "bundle_v3_github.whl.sigstore"


@needs_shared
def test_github_wheel_message_signature_verifies():
    (v,) = verify_model(WHL, [WHL_BUNDLE], Trust(identities=(GITHUB_WHL,)), Requirements())
    assert v.kind == "message" and v.files == (WHL.name,)
    assert v.signer == f"{GITHUB_WHL[0]} ({GITHUB_WHL[1]})"
    assert v.digests[WHL.name] == hashlib.sha256(WHL.read_bytes()).hexdigest()


@needs_shared
def test_github_wheel_wrong_identity_fails():
    other = (GITHUB_WHL[0].replace("v0.1.2", "v0.1.3"), GITHUB_WHL[1])
    with pytest.raises(VerificationFailure, match="SANs do not match"):
        verify_model(WHL, [WHL_BUNDLE], Trust(identities=(other,)), Requirements())
    with pytest.raises(VerificationFailure, match="OIDCIssuer does not match"):
        verify_model(WHL, [WHL_BUNDLE], Trust(identities=((GITHUB_WHL[0], "https://accounts.google.com"),)),
                     Requirements())
    with pytest.raises(VerificationFailure, match="no trusted identity"):
        verify_model(WHL, [WHL_BUNDLE], Trust(public_keys=(FIXTURES / "attest" / "oms-signing.pub.pem",)),
                     Requirements())


@needs_shared
def test_github_wheel_edited_fails(tmp_path):
    whl = tmp_path / WHL.name
    whl.write_bytes(WHL.read_bytes() + b"\0")
    with pytest.raises(VerificationFailure, match=f"{WHL.name} was modified: sha256 .* is not the signed c4e92e9e"):
        verify_model(whl, [WHL_BUNDLE], Trust(identities=(GITHUB_WHL,)), Requirements())


@needs_shared
def test_message_signature_needs_a_file_not_a_folder():
    with pytest.raises(VerificationFailure, match="is a folder, but a message-signature bundle signs exactly one"):
        verify_model(WHL.parent, [WHL_BUNDLE], Trust(identities=(GITHUB_WHL,)), Requirements())


@needs_shared
@pytest.mark.parametrize(("name", "reason"), [
    ("bundle_no_cert_v1.txt.sigstore", "unsupported bundle mediaType"),          # v0.1, public key only
    ("bundle_v3_no_signed_time.txt.sigstore.json", "inclusion promise or signed timestamp"),
])
def test_sigstore_python_broken_production_bundles_are_rejected(name, reason):
    # their artifacts are not shipped; they fail on their own before any digest is compared
    b = SIG / "sp" / "test" / "assets" / name
    with pytest.raises(VerificationFailure, match=reason):
        verify_model(SIG / "conf" / "a.txt", [b], Trust(identities=(GITHUB_WHL,)), Requirements())


def _key_message_bundle(data: bytes, key, *, with_digest: bool = True, hint: str = "") -> bytes:
    """The shape of a key-signed message signature (cosign sign-blob --bundle): ECDSA over the bytes."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    algo = hashes.SHA256() if key.curve.key_size == 256 else hashes.SHA384()
    doc = {"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
           "verificationMaterial": {"publicKey": {"hint": hint}, "tlogEntries": []},
           "messageSignature": {"signature": base64.b64encode(key.sign(data, ec.ECDSA(algo))).decode()}}
    if with_digest:
        h = hashlib.new(algo.name, data).digest()
        doc["messageSignature"]["messageDigest"] = {"algorithm": "SHA2_256" if algo.name == "sha256" else "SHA2_384",
                                                    "digest": base64.b64encode(h).decode()}
    return json.dumps(doc).encode()


ARTIFACT = Requirements(artifact_signature=True)


def _pub_pem(key, path: Path) -> Path:
    from cryptography.hazmat.primitives import serialization

    path.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo))
    return path


@pytest.mark.parametrize(("curve", "with_digest"), [("P256", True), ("P384", True), ("P384", False)])
def test_key_message_signature(tmp_path, curve, with_digest):
    from cryptography.hazmat.primitives.asymmetric import ec

    key = getattr(ec, f"SECP{curve[1:]}R1")()
    key = ec.generate_private_key(key)
    model = tmp_path / "model.bin"
    model.write_bytes(b"weights" * 1000)
    bundle = tmp_path / "model.bin.sig"
    bundle.write_bytes(_key_message_bundle(model.read_bytes(), key, with_digest=with_digest, hint="not ours"))
    trust = Trust(public_keys=(_pub_pem(key, tmp_path / "pub.pem"),))
    with pytest.raises(VerificationFailure, match="--artifact-signature"):
        verify_model(model, [], trust, Requirements())
    (v,) = verify_model(model, [], trust, ARTIFACT)
    assert v.kind == "message" and v.signer.startswith("key ")
    assert v.digests == {"model.bin": hashlib.sha256(model.read_bytes()).hexdigest()}

    other = _pub_pem(ec.generate_private_key(key.curve), tmp_path / "other.pem")
    with pytest.raises(VerificationFailure, match="does not verify with the trusted key"):
        verify_model(model, [], Trust(public_keys=(other,)), ARTIFACT)
    with pytest.raises(VerificationFailure, match="no trusted public key"):
        verify_model(model, [], Trust(identities=(BEACON,)), ARTIFACT)
    with pytest.raises(VerificationFailure, match="is a folder"):
        verify_model(tmp_path, [bundle], trust, ARTIFACT)

    model.write_bytes(model.read_bytes() + b"\0")
    with pytest.raises(VerificationFailure, match="model.bin was modified" if with_digest else "may have been modified"):
        verify_model(model, [], trust, ARTIFACT)


# -- the CLI on real bundles -------------------------------------------------------------------------

@needs_shared
def test_cli_verify_real_bundles(tmp_path):
    runner = CliRunner()
    r = runner.invoke(app, ["verify", str(SIG / "mt-v1.0.1-sigstore"), "--identity", IBM[0], "--issuer", IBM[1],
                            "--ignore", "ignore-me"])
    assert r.exit_code == 0, r.output
    assert "OMS model signature signed by stefanb@us.ibm.com" in r.output
    r = runner.invoke(app, ["verify", str(SIG / "mt-v1.1.0-sigstore"), "--identity", "mallory@example.com",
                            "--issuer", IBM[1]])
    assert r.exit_code == 1
    assert "FAILED" in r.output and "mallory@example.com" in r.output
    assert "Traceback" not in r.output


@needs_shared
def test_cli_verify_message_signature(tmp_path):
    runner = CliRunner()
    args = ["--bundle", str(WHL_BUNDLE), "--identity", GITHUB_WHL[0], "--issuer", GITHUB_WHL[1]]
    r = runner.invoke(app, ["verify", str(WHL), *args])
    assert r.exit_code == 0, r.output
    assert f"Sigstore message signature signed by {GITHUB_WHL[0]}" in r.output and WHL.name in r.output
    r = runner.invoke(app, ["verify", str(WHL.parent), *args])
    assert r.exit_code == 1 and "is a folder" in r.output and "Traceback" not in r.output
    edited = tmp_path / WHL.name
    edited.write_bytes(WHL.read_bytes() + b"\0")
    r = runner.invoke(app, ["verify", str(edited), *args])
    assert r.exit_code == 1 and "was modified" in r.output
