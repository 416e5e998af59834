from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from scanner.engine import ScanContext, scan_file, scan_source
from scanner.findings import FileReport, Finding
from scanner.rules import Policy, RuleSet, load_ruleset
from scanner.source import BytesSource
from scanner.walk import WalkEntry

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"
# optional extras outside the repository (keyless Sigstore bundles); a worktree may point at them
SHARED = Path(os.environ.get("MODELSEAL_SHARED") or ROOT.parent / "shared")

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib


@pytest.fixture(autouse=True)
def isolated_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No test writes to the user's home: sigstore's TUF cache, the scan cache key, XDG dirs."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    for var in ("XDG_CACHE_HOME", "XDG_DATA_HOME", "XDG_CONFIG_HOME", "XDG_STATE_HOME"):
        monkeypatch.setenv(var, str(home / var.lower()))
    return home


@pytest.fixture(scope="session")
def ruleset() -> RuleSet:
    return load_ruleset()


def scan_path(path: Path, policy: Policy | None = None, rules: RuleSet | None = None) -> FileReport:
    """Scan one file as `modelseal scan` would (its folder is the model root)."""
    path = Path(path)
    return scan_file(WalkEntry(path, str(path), path.resolve().parent), rules or load_ruleset(), policy or Policy())


def scan_data(data: bytes, name: str = "blob", policy: Policy | None = None,
              rules: RuleSet | None = None) -> tuple[str, list[Finding]]:
    """Scan bytes in memory as a top-level source named `name`."""
    ctx = ScanContext(rules or load_ruleset(), policy or Policy())
    return scan_source(BytesSource(name, None, data), ctx)


def rule_ids(findings) -> set[str]:
    return {f.rule_id for f in findings}


def load_manifests() -> list[dict]:
    """Every fixtures/manifest-*.toml entry, with its area: [[hostile]] and [[benign]] tables."""
    out = []
    for m in sorted(FIXTURES.glob("manifest-*.toml")):
        doc = tomllib.loads(m.read_text(encoding="utf-8"))
        for kind in ("hostile", "benign"):
            for entry in doc.get(kind, []):
                out.append({**entry, "kind": kind, "manifest": m.name})
    return out
