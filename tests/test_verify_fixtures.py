"""Real Sigstore bundles (OpenSSF Model Signing, sigstore-conformance) verify offline; tampered ones fail.

The bundles live in ../shared/sigstore-fixtures (not part of this project): these tests skip without them.
Tampering works on copies under tmp_path.
"""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import FIXTURES, SHARED
from scanner.attest.digest import digest_model
from scanner.attest.verify import Requirements, Trust, VerificationFailure, verify_bundle, verify_model
from scanner.cli import app

SIG = SHARED / "sigstore-fixtures"
needs_shared = pytest.mark.skipif(not SIG.is_dir(), reason="../shared/sigstore-fixtures not present")

IBM = ("stefanb@us.ibm.com", "https://sigstore.verify.ibm.com/oauth2")
BEACON = ("https://github.com/sigstore-conformance/extremely-dangerous-public-oidc-beacon/.github/workflows/"
          "extremely-dangerous-oidc-beacon.yml@refs/heads/main", "https://token.actions.githubusercontent.com")
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


# -- OMS signatures ----------------------------------------------------------------------------------

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
def test_plain_message_signature_is_not_an_attestation():
    with pytest.raises(VerificationFailure, match="no DSSE envelope"):
        verify_model(SIG / "conf" / "a.txt", [SIG / "conf" / "happy-path-v0.3" / "bundle.sigstore.json"],
                     Trust(identities=(BEACON,)), Requirements())


@needs_shared
def test_pinned_client_trust_config_works():
    (v,) = oms(SIG / "mt-v1.1.0-sigstore",
               Trust(identities=(IBM,), trusted_root=SIG / "public-good.trustconfig.json"))
    assert v.kind == "oms"


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
