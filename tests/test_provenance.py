"""Signed training provenance: `attest --dataset/--base-model/--framework` writes a SLSA v1 statement next
to the scan attestation; `verify` and the gate enforce required / denied datasets and licenses, verify a
dataset's own signature, and refuse with one line."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from scanner import gate
from scanner.attest.digest import digest_model
from scanner.attest.provenance import (
    SLSA_PREDICATE_TYPE,
    TRAINING_BUILD_TYPE,
    ProvenanceError,
    parse_dataset,
    parse_framework,
)
from scanner.attest.provenance_verify import ProvenancePolicy
from scanner.attest.sign import generate_key
from scanner.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    d = tmp_path_factory.mktemp("keys")
    out = {}
    for name in ("pub", "data", "other"):
        priv, pub = generate_key("p256")
        (d / f"{name}.pem").write_bytes(priv)
        (d / f"{name}.pub.pem").write_bytes(pub)
        out[name] = (d / f"{name}.pem", d / f"{name}.pub.pem")
    return out


def make_dataset(root: Path, name: str = "corpus", text: str = "a,b\n1,2\n") -> Path:
    d = root / name
    d.mkdir()
    (d / "train.csv").write_text(text)
    (d / "README.md").write_text("# data\n")
    return d


def make_model(root: Path) -> Path:
    m = root / "model"
    m.mkdir()
    (m / "config.json").write_text(json.dumps({"transformers_version": "4.44.0"}))
    (m / "weights.txt").write_text("0.1 0.2\n")
    return m


def cli(*args: str | Path) -> tuple[int, str]:
    r = runner.invoke(app, [str(a) for a in args])
    return r.exit_code, r.output


@pytest.fixture
def trained(tmp_path, keys):
    """A model attested with two datasets (one folder, one given by digest), a base model and frameworks."""
    data = make_dataset(tmp_path)
    model = make_model(tmp_path)
    other_sha = "ab" * 32
    code, out = cli("attest", model, "--key", keys["pub"][0],
                    "--dataset", f"corpus={data},license=MIT,uri=https://example.org/corpus",
                    "--dataset", f"web=sha256:{other_sha},license=CC-BY-4.0",
                    "--base-model", f"sha256:{'cd' * 32}", "--framework", "torch==2.13.0")
    assert code == 0, out
    assert "wrote provenance" in out
    return model, data, other_sha


def test_statement_shape(trained) -> None:
    model, data, other = trained
    doc = json.loads((model / "modelseal.provenance.sigstore.json").read_text())
    st = json.loads(base64.b64decode(doc["dsseEnvelope"]["payload"]))
    scan = json.loads(base64.b64decode(json.loads((model / "modelseal.sigstore.json").read_text())
                                       ["dsseEnvelope"]["payload"]))
    assert st["predicateType"] == SLSA_PREDICATE_TYPE
    assert st["subject"] == scan["subject"]
    bd = st["predicate"]["buildDefinition"]
    assert bd["buildType"] == TRAINING_BUILD_TYPE
    deps = {d["name"]: d for d in bd["resolvedDependencies"]}
    assert deps["corpus"]["digest"]["sha256"] == digest_model(data).manifest_digest
    assert deps["corpus"]["annotations"] == {"role": "dataset", "digestMethod": "oms-manifest", "license": "MIT"}
    assert deps["corpus"]["uri"] == "https://example.org/corpus"
    assert deps["web"]["digest"]["sha256"] == other
    assert deps["pkg:pypi/torch@2.13.0"]["annotations"]["role"] == "framework"
    assert bd["externalParameters"]["frameworks"] == {"torch": "2.13.0"}


def test_verify_require_dataset_passes_and_reports_chain(trained, keys) -> None:
    model, data, _ = trained
    want = digest_model(data).manifest_digest
    code, out = cli("verify", model, "--key", keys["pub"][1], "--require-provenance",
                    "--require-dataset", f"sha256:{want}", "--allow-license", "MIT,CC-BY-4.0")
    assert code == 0, out
    assert "provenance modelseal.provenance.sigstore.json signed by key" in out
    assert "dataset corpus" in out and "license MIT" in out


def _fails(code: int, out: str, *needles: str) -> None:
    assert code == 1, out
    (line,) = [x for x in out.splitlines() if x.startswith("FAILED")]
    for n in needles:
        assert n in line, line


def test_changed_dataset_digest_fails(trained, keys, tmp_path) -> None:
    model, data, _ = trained
    (data / "train.csv").write_text("a,b\n1,3\n")       # the dataset changed after training
    new = digest_model(data).manifest_digest
    code, out = cli("verify", model, "--key", keys["pub"][1], "--require-dataset", f"sha256:{new}")
    _fails(code, out, "required dataset", new[:16])
    code, out = cli("verify", model, "--key", keys["pub"][1], "--dataset-path", data)
    _fails(code, out, "is not a dataset the provenance records")


def test_denied_dataset_fails(trained, keys) -> None:
    model, _, other = trained
    code, out = cli("verify", model, "--key", keys["pub"][1], "--deny-dataset", other)
    _fails(code, out, "denied dataset web")


def test_disallowed_license_fails(trained, keys) -> None:
    model, _, _ = trained
    code, out = cli("verify", model, "--key", keys["pub"][1], "--allow-license", "MIT")
    _fails(code, out, "dataset web has license CC-BY-4.0, not allowed")
    # SPDX identifiers match case-insensitively; the option repeats
    code, out = cli("verify", model, "--key", keys["pub"][1], "--allow-license", "mit", "--allow-license", "cc-by-4.0")
    assert code == 0, out


def test_dataset_without_license_fails_a_license_policy(tmp_path, keys) -> None:
    model = make_model(tmp_path)
    assert cli("attest", model, "--key", keys["pub"][0], "--dataset", "raw=sha256:" + "12" * 32)[0] == 0
    assert cli("verify", model, "--key", keys["pub"][1])[0] == 0
    _fails(*cli("verify", model, "--key", keys["pub"][1], "--allow-license", "MIT"), "dataset raw declares no license")


def test_missing_provenance_fails(tmp_path, keys) -> None:
    model = make_model(tmp_path)
    assert cli("attest", model, "--key", keys["pub"][0])[0] == 0
    assert cli("verify", model, "--key", keys["pub"][1])[0] == 0
    code, out = cli("verify", model, "--key", keys["pub"][1], "--require-provenance")
    _fails(code, out, "no training provenance statement")


def test_provenance_signed_by_another_key_fails(trained, keys) -> None:
    model, data, _ = trained
    # re-attest the provenance with another key, keep the scan attestation by the trusted one
    scan = (model / "modelseal.sigstore.json").read_bytes()
    code, out = cli("attest", model, "--key", keys["other"][0], "--dataset", f"corpus={data},license=MIT")
    assert code == 0, out
    (model / "modelseal.sigstore.json").write_bytes(scan)
    code, out = cli("verify", model, "--key", keys["pub"][1], "--require-provenance")
    _fails(code, out, "provenance modelseal.provenance.sigstore.json", "not a trusted key")
    # not asked for: the scan attestation decides, the unverifiable claim is a note
    code, out = cli("verify", model, "--key", keys["pub"][1])
    assert code == 0, out
    assert "note: provenance modelseal.provenance.sigstore.json" in out and "not a trusted key" in out


def test_model_changed_after_provenance_fails(trained, keys) -> None:
    from scanner.attest.provenance_verify import verify_provenance
    from scanner.attest.verify import Requirements, Trust, VerificationFailure

    model, _, _ = trained
    code, out = cli("verify", model, "--key", keys["pub"][1], "--provenance",
                    model / "modelseal.provenance.sigstore.json")
    assert code == 0, out
    (model / "weights.txt").write_text("0.9\n")
    trust = Trust(public_keys=[keys["pub"][1]])
    with pytest.raises(VerificationFailure, match="provenance .*weights.txt was modified"):
        verify_provenance(model, [], trust, Requirements(), ProvenancePolicy())


def test_dataset_with_its_own_signature_is_verified(tmp_path, keys) -> None:
    data = make_dataset(tmp_path)
    assert cli("attest", data, "--key", keys["data"][0])[0] == 0     # the data publisher signs its dataset
    model = make_model(tmp_path)
    assert cli("attest", model, "--key", keys["pub"][0], "--dataset", f"corpus={data},license=MIT")[0] == 0
    code, out = cli("verify", model, "--key", keys["pub"][1], "--key", keys["data"][1], "--dataset-path", data)
    assert code == 0, out
    data_hint = hashlib.sha256(keys["data"][1].read_bytes()).hexdigest()[:16]
    assert "dataset corpus" in out and f"signed by key {data_hint}" in out
    # the dataset's signer is not trusted: the chain breaks
    code, out = cli("verify", model, "--key", keys["pub"][1], "--dataset-path", data)
    _fails(code, out, "dataset corpus signature")
    # tampered dataset: its digest no longer matches
    (data / "train.csv").write_text("x\n")
    code, out = cli("verify", model, "--key", keys["pub"][1], "--key", keys["data"][1], "--dataset-path", data)
    _fails(code, out, "not a dataset the provenance records")


def test_single_file_model(tmp_path, keys) -> None:
    f = tmp_path / "w.txt"
    f.write_text("weights\n")
    code, out = cli("attest", f, "--key", keys["pub"][0], "--dataset", "d=sha256:" + "11" * 32 + ",license=MIT")
    assert code == 0, out
    assert (tmp_path / "w.txt.modelseal.provenance.sigstore.json").is_file()
    assert cli("verify", f, "--key", keys["pub"][1], "--require-dataset", "11" * 32)[0] == 0
    _fails(*cli("verify", f, "--key", keys["pub"][1], "--require-dataset", "22" * 32), "required dataset")


def test_unsigned_writes_bare_statement(tmp_path) -> None:
    model = make_model(tmp_path)
    code, out = cli("attest", model, "--unsigned", "--framework", "torch==2.13.0")
    assert code == 0, out
    st = json.loads((model / "modelseal.provenance.intoto.json").read_text())
    assert st["predicateType"] == SLSA_PREDICATE_TYPE


@pytest.mark.parametrize("spec", ["noequals", "x=", "x=sha256:zz", "x=/no/such/path", "x=sha256:" + "a" * 64 + ",lic=MIT"])
def test_bad_dataset_specs(spec: str) -> None:
    with pytest.raises(ProvenanceError):
        parse_dataset(spec)
    code, out = cli("attest", ".", "--unsigned", "--dataset", spec)
    assert code == 2


def test_framework_spec() -> None:
    assert parse_framework("torch==2.13.0") == ("torch", "2.13.0")
    with pytest.raises(ProvenanceError):
        parse_framework("torch>=2")


# -- the gate enforces the same ------------------------------------------------------------------------

def _gate(keys, **policy) -> gate.Gate:
    from scanner.attest.verify import Requirements

    trust = gate.Trust(public_keys=[keys["pub"][1]], provenance=ProvenancePolicy.of(**policy))
    return gate.Gate(trust, require_attestation=True, requirements=Requirements())


def test_gate_enforces_datasets_and_licenses(trained, keys) -> None:
    model, data, other = trained
    want = digest_model(data).manifest_digest
    r = _gate(keys, require=True, require_datasets=[want]).check(model)
    assert r.provenance is not None and {d.name for d in r.provenance.datasets} == {"corpus", "web"}
    with pytest.raises(gate.UnsafeModelError, match="denied dataset web"):
        _gate(keys, deny_datasets=[other]).check(model)
    with pytest.raises(gate.UnsafeModelError, match="not allowed"):
        _gate(keys, allow_licenses=["MIT"]).check(model)
    with pytest.raises(gate.UnsafeModelError, match="required dataset"):
        _gate(keys, require_datasets=["ee" * 32]).check(model)


def test_gate_refuses_missing_or_foreign_provenance(tmp_path, keys) -> None:
    model = make_model(tmp_path)
    assert cli("attest", model, "--key", keys["pub"][0])[0] == 0
    with pytest.raises(gate.UnsafeModelError, match="no training provenance"):
        _gate(keys, require=True).check(model)
    assert _gate(keys).check(model).provenance is None      # not required: accepted
    assert cli("attest", model, "--key", keys["other"][0], "--framework", "torch==2.13.0")[0] == 0
    with pytest.raises(gate.UnsafeModelError, match="not a trusted key"):
        _gate(keys, require=True).check(model)


def test_gate_open_verified_single_file(tmp_path, keys) -> None:
    f = tmp_path / "w.txt"
    f.write_text("weights\n")
    assert cli("attest", f, "--key", keys["pub"][0], "--dataset", "d=sha256:" + "11" * 32 + ",license=MIT")[0] == 0
    with _gate(keys, require_datasets=["11" * 32]).open_verified(f) as fh:
        assert fh.read() == b"weights\n"
    with pytest.raises(gate.UnsafeModelError, match="denied dataset d"):
        with _gate(keys, deny_datasets=["11" * 32]).open_verified(f):
            pass


def test_dataset_signed_with_model_signing_is_verified(tmp_path, keys) -> None:
    """A dataset folder signed by `model_signing sign key` (fixtures/attest/oms-key-model): our folder digest is
    the OMS subject digest, and its OMS signature is verified as the dataset's link of the chain."""
    import shutil

    from conftest import FIXTURES

    data = tmp_path / "oms-data"
    shutil.copytree(FIXTURES / "attest" / "oms-key-model", data, ignore=shutil.ignore_patterns("ignore-me"))
    sig = json.loads((data / "model.sig").read_text())
    oms_subject = json.loads(base64.b64decode(sig["dsseEnvelope"]["payload"]))["subject"][0]["digest"]["sha256"]
    assert digest_model(data).manifest_digest == oms_subject
    model = make_model(tmp_path)
    assert cli("attest", model, "--key", keys["pub"][0], "--dataset", f"corpus={data},license=Apache-2.0")[0] == 0
    code, out = cli("verify", model, "--key", keys["pub"][1], "--key", FIXTURES / "attest" / "oms-signing.pub.pem",
                    "--dataset-path", data, "--require-dataset", oms_subject)
    assert code == 0, out
    assert "dataset corpus" in out and "-> signed by key" in out
