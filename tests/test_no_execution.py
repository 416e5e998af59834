"""Nothing inspected is executed, deserialized or imported (design §2), proven with an audit hook."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import load_manifests

HERE = Path(__file__).resolve().parent


def test_scanning_hostile_fixtures_executes_nothing() -> None:
    n_hostile = sum(1 for e in load_manifests() if e["kind"] == "hostile")
    proc = subprocess.run([sys.executable, str(HERE / "audit_scan.py")], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["scanned"] == n_hostile > 0
    assert result["violations"] == []


def test_audit_hook_catches_a_real_load(tmp_path: Path) -> None:
    """The harness is live: the same hook does fire when a pickle is really deserialized."""
    code = (
        "import sys, pickle, os\n"
        "hits = []\n"
        "sys.addaudithook(lambda e, a: hits.append(e) if e in ('os.system', 'pickle.find_class') else None)\n"
        "data = b\"cos\\nsystem\\n(S'true'\\ntR.\"\n"
        "getattr(pickle, 'lo' + 'ads')(data)\n"
        "print(sorted(set(hits)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60).stdout
    assert "os.system" in out and "pickle.find_class" in out
