"""The pre-load gate: verify-or-scan, refusals, the cache, and loading exactly the bytes that were checked."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import scanner
from scanner import gate
from scanner.attest.attest import attest, default_output
from scanner.attest.sign import KeySigner, generate_key
from scanner.attest.verify import Requirements
from scanner.findings import Severity
from scanner.rules import Policy

ALL = frozenset({"clean", "suspicious", "malicious", "error"})
LENIENT = Requirements(allow_verdicts=ALL)
# protocol-0 pickle calling os.system: written as bytes, never loaded
HOSTILE_PICKLE = b"cos\nsystem\n(S'echo pwned'\ntR."



@pytest.fixture(scope="module")
def key():
    return generate_key("p256")


@pytest.fixture(scope="module")
def other_key():
    return generate_key("p384")


def sign(path: Path, priv: bytes) -> Path:
    out = default_output(path)
    out.write_bytes(attest(path, Policy(), KeySigner.from_pem(priv)).document())
    return out


def model_folder(tmp_path: Path) -> Path:
    m = tmp_path / "model"
    m.mkdir()
    (m / "config.json").write_text('{"a": 1}\n')
    (m / "weights.txt").write_text("0.1 0.2 0.3\n")
    return m


def test_unsafe_model_error_is_exported():
    assert scanner.UnsafeModelError is gate.UnsafeModelError


def test_attested_folder_is_verified_not_scanned(tmp_path, key, monkeypatch):
    m = model_folder(tmp_path)
    sign(m, key[0])
    import scanner.attest.attest as att

    monkeypatch.setattr(att, "scan_digested", lambda *a, **k: pytest.fail("scanned despite an attestation"))
    g = gate.Gate(gate.Trust(public_keys=[key[1]]), requirements=LENIENT)
    r = g.check(m)
    assert r.source == "attestation"
    assert r.attestation.kind == "modelseal"


def test_attestation_by_untrusted_key_falls_back_or_refuses(tmp_path, key, other_key):
    m = model_folder(tmp_path)
    sign(m, other_key[0])
    g = gate.Gate(gate.Trust(public_keys=[key[1]]), require_attestation=True, requirements=LENIENT)
    with pytest.raises(gate.UnsafeModelError, match="no trusted attestation.*not a trusted key"):
        g.check(m)
    lenient_scan = gate.Gate(gate.Trust(public_keys=[key[1]]), requirements=LENIENT,
                             policy=Policy(fail_on=Severity.CRITICAL))
    assert lenient_scan.check(m).source == "scan"


def test_require_attestation_without_any(tmp_path, key):
    m = model_folder(tmp_path)
    with pytest.raises(gate.UnsafeModelError, match="none found"):
        gate.check(m, trust=gate.Trust(public_keys=[key[1]]), require_attestation=True)


def test_hostile_file_is_refused_with_findings(tmp_path):
    p = tmp_path / "model.pkl"
    p.write_bytes(HOSTILE_PICKLE)
    with pytest.raises(gate.UnsafeModelError) as ei:
        gate.check(p)
    assert ei.value.report is not None
    assert ei.value.findings
    assert ei.value.report.files[0].path == str(p)


def test_attested_hostile_model_is_refused_by_verdict(tmp_path, key):
    p = tmp_path / "model.pkl"
    p.write_bytes(HOSTILE_PICKLE)
    sign(p, key[0])
    g = gate.Gate(gate.Trust(public_keys=[key[1]]), require_attestation=True)
    with pytest.raises(gate.UnsafeModelError, match="scan verdict is"):
        g.check(p)


def test_modified_attested_file_is_not_trusted(tmp_path, key):
    p = tmp_path / "w.txt"
    p.write_text("weights")
    sign(p, key[0])
    g = gate.Gate(gate.Trust(public_keys=[key[1]]), require_attestation=True, requirements=LENIENT)
    assert g.check(p).source == "attestation"
    p.write_text("weights, edited")
    with pytest.raises(gate.UnsafeModelError, match="was modified"):
        g.check(p)


def test_swap_after_verification_is_not_loaded(tmp_path, key):
    """The file is replaced by a hostile one between the check and the load: the loader still reads the
    verified bytes, and the next check of the swapped file refuses it."""
    p = tmp_path / "model.bin"
    good = os.urandom(4096)
    p.write_bytes(good)
    sign(p, key[0])
    g = gate.Gate(gate.Trust(public_keys=[key[1]]), require_attestation=True, requirements=LENIENT)
    with g.open_verified(p) as fh:
        tmp = tmp_path / "swap"
        tmp.write_bytes(HOSTILE_PICKLE)
        os.replace(tmp, p)                        # the attacker's swap
        assert p.read_bytes() == HOSTILE_PICKLE
        assert fh.read() == good                  # what gets loaded is what was checked
        assert Path(fh.name) != p
    with pytest.raises(gate.UnsafeModelError):
        with g.open_verified(p) as fh:
            pytest.fail("a swapped file was handed out")


def test_open_verified_cleans_up_its_copy(tmp_path, key):
    p = tmp_path / "w.txt"
    p.write_text("w")
    sign(p, key[0])
    g = gate.Gate(gate.Trust(public_keys=[key[1]]), requirements=LENIENT)
    with g.open_verified(p) as fh:
        copy = Path(fh.name)
        assert copy.name == "w.txt" and copy.exists()
    assert not copy.exists()


def test_member_of_an_attested_folder(tmp_path, key):
    m = model_folder(tmp_path)
    (m / "sub").mkdir()
    (m / "sub" / "shard.txt").write_text("shard")
    sign(m, key[0])
    g = gate.Gate(gate.Trust(public_keys=[key[1]]), require_attestation=True, requirements=LENIENT)
    with g.open_verified(m / "sub" / "shard.txt") as fh:
        assert fh.read() == b"shard"
    (m / "sub" / "shard.txt").write_text("other")
    with pytest.raises(gate.UnsafeModelError, match="sub/shard.txt was modified"):
        g.check(m / "sub" / "shard.txt")


def test_cache_by_content_digest(tmp_path, monkeypatch):
    import scanner.attest.attest as att

    m = model_folder(tmp_path)
    cache = gate.GateCache()
    g = gate.Gate(cache=cache, policy=Policy(fail_on=Severity.CRITICAL), requirements=LENIENT)
    first = g.check(m)
    assert first.source == "scan" and len(cache.entries) == 1
    calls = []
    real = att.scan_digested
    monkeypatch.setattr(att, "scan_digested", lambda *a, **k: calls.append(1) or real(*a, **k))
    assert g.check(m).source == "cache" and not calls
    # a copy elsewhere with the same bytes is the same model
    other = tmp_path / "copy"
    other.mkdir()
    for f in m.iterdir():
        (other / f.name).write_bytes(f.read_bytes())
    assert g.check(other).source == "cache"
    (m / "weights.txt").write_text("changed")
    assert g.check(m).source == "scan" and calls
    # a gate without the cache object shares nothing
    assert gate.Gate(policy=Policy(fail_on=Severity.CRITICAL), requirements=LENIENT).check(other).source == "scan"


def test_refusals_are_not_cached(tmp_path):
    p = tmp_path / "model.pkl"
    p.write_bytes(HOSTILE_PICKLE)
    cache = gate.GateCache()
    g = gate.Gate(cache=cache)
    for _ in range(2):
        with pytest.raises(gate.UnsafeModelError):
            g.check(p)
    assert not cache.entries


def test_symlinked_folder_member_is_refused(tmp_path):
    m = model_folder(tmp_path)
    (m / "link").symlink_to(m / "config.json")
    with pytest.raises(gate.UnsafeModelError, match="symlink"):
        gate.check(m)


def test_torch_load_through_the_gate(tmp_path, key):
    torch = pytest.importorskip("torch")
    p = tmp_path / "state.pt"
    torch.save({"w": torch.arange(4)}, p)
    sign(p, key[0])
    g = gate.Gate(gate.Trust(public_keys=[key[1]]), require_attestation=True, requirements=LENIENT)
    state = gate.torch_load(p, gate=g)
    assert state["w"].tolist() == [0, 1, 2, 3]
    p.write_bytes(HOSTILE_PICKLE)
    with pytest.raises(gate.UnsafeModelError):
        gate.torch_load(p, gate=g)


def test_safetensors_load_through_the_gate(tmp_path, key):
    np = pytest.importorskip("numpy")
    st = pytest.importorskip("safetensors.numpy")
    p = tmp_path / "w.safetensors"
    st.save_file({"w": np.arange(3, dtype=np.float32)}, str(p))
    sign(p, key[0])
    g = gate.Gate(gate.Trust(public_keys=[key[1]]), require_attestation=True, requirements=LENIENT)
    assert gate.safetensors_load(p, gate=g)["w"].tolist() == [0.0, 1.0, 2.0]


def test_gate_reports_the_attestation_bundle(tmp_path, key):
    p = tmp_path / "w.txt"
    p.write_text("w")
    bundle = sign(p, key[0])
    moved = tmp_path / "elsewhere.json"
    bundle.rename(moved)
    r = gate.Gate(gate.Trust(public_keys=[key[1]]), requirements=LENIENT).check(p, bundle=moved)
    assert r.source == "attestation" and r.attestation.bundle == moved
    assert json.loads(moved.read_text())["verificationMaterial"]["publicKey"]["hint"]


def test_benign_folder_passes_a_default_scan(tmp_path):
    m = model_folder(tmp_path)
    r = gate.check(m)
    assert r.source == "scan" and r.verdict == "clean"
    assert r.report is not None and {Path(f.path).name for f in r.report.files} == {"config.json", "weights.txt"}
