"""Calibration: which soft events (lazy imports, reads, code generation) honest loads cause.

Only soft events are learned (see worker.SOFT); running a command, a socket, any write outside the
sandbox's TMPDIR stay dangerous whatever honest loads do. The calibration set is every benign manifest
fixture;
honest files the test slice generates with the real libraries (tests/differential) are held out, so it
checks that honest files the calibration never saw load without a dangerous event.
"""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.oracle.client import Input, Oracle
from benchmarks.oracle.corpus import ROOT, benign_fixtures, ext_of

CALIBRATION = Path(__file__).resolve().parent / "calibration.json"


def calibration_set() -> list[Path]:
    return benign_fixtures()


def calibrate(python: str | None, files: list[Path] | None = None, *, chunk: int = 16,
              progress: bool = False, base: Path | None = None) -> dict:
    """`base`: an earlier calibration whose imports the workers preload (faster); its keys are kept."""
    files = calibration_set() if files is None else files
    seen: dict[str, set[str]] = {}
    if base is not None and base.exists():
        for k, v in load(base).get("allowed", {}).items():
            seen.setdefault(k, set()).update(v)
    with Oracle(python, batch=chunk, allowed=base) as oracle:
        for k in range(0, len(files), chunk):
            part = files[k:k + chunk]
            inputs = [Input(f"c{k + i}", p.read_bytes(), ext_of(p), str(p.relative_to(ROOT)), p.name)
                      for i, p in enumerate(part)]
            for out in oracle.run(inputs, calibrate=True):
                for ev in out.events:
                    if not ev["hard"]:
                        seen.setdefault(ev["name"], set()).add(ev["key"])
            if progress:
                print(f"  calibrated {min(k + chunk, len(files))}/{len(files)}", flush=True)
        versions = dict(oracle.versions)
    return {"versions": versions, "files": len(files),
            "allowed": {k: sorted(v) for k, v in sorted(seen.items())}}


def load(path: Path = CALIBRATION) -> dict:
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def save(doc: dict, path: Path = CALIBRATION) -> None:
    path.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n", encoding="utf-8")
