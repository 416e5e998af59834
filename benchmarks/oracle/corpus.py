"""The committed fixtures as oracle inputs, and the honest ones the calibration learns from."""

from __future__ import annotations

import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "fixtures"
MAX_INPUT = 4 << 20  # larger fixtures are skipped (a few MB keeps every load well under the timeout)


def _ext(p: Path) -> str:
    return p.suffix if p.suffix else ".bin"


def fixture_files() -> list[Path]:
    """Every committed fixture file (generators and manifests excluded), sorted."""
    out = []
    for p in sorted(FIXTURES.rglob("*")):
        if not p.is_file() or p.parent == FIXTURES:
            continue
        if p.stat().st_size > MAX_INPUT or "__pycache__" in p.parts:
            continue
        out.append(p)
    return out


def manifest_entries() -> list[dict]:
    out = []
    for m in sorted(FIXTURES.glob("manifest-*.toml")):
        doc = tomllib.loads(m.read_text(encoding="utf-8"))
        for kind in ("hostile", "benign"):
            for entry in doc.get(kind, []):
                out.append({**entry, "kind": kind, "manifest": m.name})
    return out


def benign_fixtures() -> list[Path]:
    paths = {FIXTURES / e["path"] for e in manifest_entries() if e["kind"] == "benign"}
    return sorted(p for p in paths if p.is_file() and p.stat().st_size <= MAX_INPUT)


def ext_of(p: Path) -> str:
    return _ext(p)
