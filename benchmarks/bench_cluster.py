#!/usr/bin/env python3
"""Files/s of a synthetic store on a Dask LocalCluster against `--jobs N` (same machine, same files).

    python benchmarks/bench_cluster.py [--files 2000] [--workers 2]

(100,000 files: about 16 minutes of wall time and 5 of CPU on a shared 2-core machine, store creation included.)

The store is --files copies of small real fixtures (pickles, torch zips, safetensors, GGUF), so the per-file
work is the scanner's, not the disk's. Each run is the real CLI with `--format jsonl`; the Dask run includes
starting the LocalCluster (reported separately as the time to the first result line is not measured).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SEEDS = ["benign/torch", "benign/safetensors", "hostile/pickle", "benign/gguf"]


def make_store(dest: Path, n: int) -> int:
    seeds = [p for sub in SEEDS for p in sorted((ROOT / "fixtures" / sub).rglob("*")) if p.is_file()]
    for i in range(n):
        src = seeds[i % len(seeds)]
        d = dest / f"d{i // 1000:03d}"
        d.mkdir(exist_ok=True)
        shutil.copyfile(src, d / f"{i:06d}-{src.name}")
    return n


def run(store: Path, extra: list[str]) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds of the CLI and every process it waited for, files reported)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "scanner.cli", "scan", str(store), "-f", "jsonl", *extra],
                       capture_output=True, text=True, env=env, cwd=ROOT)
    secs = time.monotonic() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode not in (0, 1):
        raise SystemExit(r.stderr)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return secs, cpu, sum(1 for line in r.stdout.splitlines() if line.startswith('{"type":"file"'))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=2000)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as tmp:
        store = Path(tmp) / "store"
        store.mkdir()
        make_store(store, args.files)
        print(f"load average before the runs: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
        print("| run | files | seconds | files/s | CPU seconds (waited processes) |")
        print("|---|---|---|---|---|")
        for label, extra in ((f"--jobs {args.workers}", ["-j", str(args.workers)]),
                             (f"--cluster local:{args.workers}", ["--cluster", f"local:{args.workers}"])):
            secs, cpu, n = run(store, extra)
            assert n == args.files, (label, n)
            print(f"| {label} | {n} | {secs:.1f} | {n / secs:.0f} | {cpu:.0f} |", flush=True)


if __name__ == "__main__":
    main()
