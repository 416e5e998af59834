"""rules/advisories.toml: every entry matches its affected range and not its fix, checked against fake
distribution metadata on sys.path (no old version is installed); the gate refuses or warns per policy."""

from __future__ import annotations

from pathlib import Path

import pytest

from scanner import gate
from scanner.advisories import for_loader, for_producer, installed_version, load_advisories

# advisory -> (a version the advisory lists as affected, the first fixed version), from the advisories
EXPECTED = {
    "CVE-2025-32434": ("2.5.1", "2.6.0"),
    "CVE-2026-24747": ("2.9.1", "2.10.0"),
    "CVE-2024-3660": ("2.12.0", "2.13.1"),
    "CVE-2025-1550": ("3.8.0", "3.9.0"),
    "CVE-2025-8747": ("3.10.0", "3.11.0"),
    "CVE-2025-9906": ("3.10.0", "3.11.0"),
    "CVE-2025-9905": ("3.11.2", "3.11.3"),
    "CVE-2024-34359": ("0.2.71", "0.2.72"),
    "CVE-2024-3568": ("4.37.2", "4.38.0"),
    "CVE-2023-7018": ("4.35.2", "4.36.0"),
    "CVE-2022-25882": ("1.12.0", "1.13.0"),
    "CVE-2024-27318": ("1.15.0", "1.16.0"),
    "CVE-2026-27489": ("1.20.1", "1.21.0"),
    "CVE-2022-21797": ("1.1.0", "1.1.1"),
}
ADVISORIES = load_advisories()


def fake_dist(root: Path, name: str, version: str) -> None:
    d = root / f"{name.replace('-', '_')}-{version}.dist-info"
    d.mkdir(parents=True)
    (d / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Install fake distributions (metadata only) ahead of everything on sys.path."""
    def install(name: str, version: str) -> None:
        root = tmp_path / f"site-{name}-{version}"
        fake_dist(root, name, version)
        monkeypatch.syspath_prepend(str(root))
    return install


def test_every_entry_is_complete_and_tested() -> None:
    assert {a.id for a in ADVISORIES} == set(EXPECTED)
    for a in ADVISORIES:
        assert a.id.startswith("CVE-") and a.package and a.loaders and a.enables
        assert a.reference.startswith("https://")


@pytest.mark.parametrize("adv", ADVISORIES, ids=lambda a: a.id)
def test_entry_matches_installed_affected_version(adv, env) -> None:
    bad, fixed = EXPECTED[adv.id]
    env(adv.package, bad)
    assert installed_version(adv.package) == bad
    hits = {a.id for a, v in for_loader(adv.loaders[0])}
    assert adv.id in hits


@pytest.mark.parametrize("adv", ADVISORIES, ids=lambda a: a.id)
def test_entry_spares_the_fixed_version(adv, env) -> None:
    bad, fixed = EXPECTED[adv.id]
    env(adv.package, fixed)
    assert adv.id not in {a.id for a, v in for_loader(adv.loaders[0])}
    assert adv.covers(bad) and not adv.covers(fixed)


def test_not_installed_is_not_affected(monkeypatch) -> None:
    assert installed_version("modelseal-no-such-distribution") is None


def test_unparsable_installed_version_fails_closed() -> None:
    (torch,) = [a for a in ADVISORIES if a.id == "CVE-2025-32434"]
    assert torch.covers("not-a-version")


def test_gate_refuses_a_vulnerable_torch_and_names_the_advisory(env, tmp_path) -> None:
    env("torch", "2.5.1")
    p = tmp_path / "w.pt"
    p.write_bytes(b"\x80\x04K\x01.")
    with pytest.raises(gate.UnsafeModelError) as e:
        gate.torch_load(p)
    msg = str(e.value)
    assert "CVE-2025-32434" in msg and "torch 2.5.1" in msg and "\n" not in msg


def test_gate_refuses_a_vulnerable_keras(env, tmp_path) -> None:
    env("keras", "3.8.0")
    p = tmp_path / "m.keras"
    p.write_bytes(b"PK\x05\x06" + bytes(18))
    with pytest.raises(gate.UnsafeModelError, match="CVE-2025-1550"):
        gate.keras_load(p)


def test_gate_warn_and_ignore_policies(env) -> None:
    env("keras", "3.11.2")
    with pytest.warns(UserWarning, match="CVE-2025-9905"):
        lines = gate.Gate(loader_advisories="warn").check_loader("keras_load")
    assert any("CVE-2025-9905" in x for x in lines)
    assert gate.Gate(loader_advisories="ignore").check_loader("keras_load") == []
    with pytest.raises(ValueError):
        gate.Gate(loader_advisories="maybe")


def test_gate_passes_a_fixed_loader(env) -> None:
    env("torch", "2.13.0")
    assert gate.Gate().check_loader("torch_load") == []


def test_llama_cpp_python_chat_template_path(env) -> None:
    env("llama-cpp-python", "0.2.71")
    with pytest.raises(gate.UnsafeModelError, match="CVE-2024-34359"):
        gate.Gate().check_loader("gguf_chat_template")


def test_producer_versions() -> None:
    assert {a.id for a in for_producer("keras", "3.8.0")} >= {"CVE-2025-1550", "CVE-2025-9906"}
    assert for_producer("keras", "3.15.1") == []
    assert [a.id for a in for_producer("pytorch", "2.5.0")] == ["CVE-2025-32434", "CVE-2026-24747"]
    assert for_producer("unknown-lib", "0.1") == []
