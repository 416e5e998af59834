"""Store-wide scan benchmark: `--jobs 1` vs `--jobs N`, and a second run with `--cache`.

Writes N small, distinct model files (pickles of protocols 2-5, NumPy .npy, safetensors, PyTorch zips
when torch is installed, a few configs and sources) into a temporary folder, then times the real CLI:

    python benchmarks/bench_jobs.py --files 1000 --jobs 2

Each timing is the best of --repeat runs: wall clock (interpreter start included) and the CPU time of
the command with its worker processes (a pool that adds little CPU scales on an idle machine).
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import random
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path


def _safetensors(rng: random.Random) -> bytes:
    n = rng.randint(1, 64)
    header = json.dumps({"w": {"dtype": "F32", "shape": [n], "data_offsets": [0, 4 * n]},
                         "__metadata__": {"id": str(rng.random())}}).encode()
    return struct.pack("<Q", len(header)) + header + os.urandom(4 * n)


def _npy(rng: random.Random) -> bytes:
    n = rng.randint(1, 64)
    header = f"{{'descr': '<f4', 'fortran_order': False, 'shape': ({n},), }}".encode()
    header += b" " * (63 - (10 + len(header)) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + os.urandom(4 * n)


def _pickle(rng: random.Random, scale: int = 1) -> bytes:
    data = OrderedDict((f"layer{i}.weight", [rng.random() for _ in range(rng.randint(10, 100))])
                       for i in range(rng.randint(20, 200) * scale))
    return pickle.dumps({"state": data, "epoch": rng.randint(0, 99), "name": f"m{rng.random()}"},
                        protocol=rng.choice([2, 3, 4, 5]))


def generate(folder: Path, count: int, seed: int = 1, scale: int = 1) -> dict[str, int]:
    rng = random.Random(seed)
    try:
        import torch
    except ImportError:  # torch is optional here: the other formats still make a mixed store
        torch = None
    kinds: dict[str, int] = {}
    for i in range(count):
        sub = folder / f"model{i // 100:02d}"
        sub.mkdir(parents=True, exist_ok=True)
        kind = ["pickle", "pickle", "npy", "safetensors", "torch", "config", "source"][i % 7]
        if kind == "torch" and torch is None:
            kind = "pickle"
        if kind == "pickle":
            (sub / f"f{i}.pkl").write_bytes(_pickle(rng, scale))
        elif kind == "npy":
            (sub / f"f{i}.npy").write_bytes(_npy(rng))
        elif kind == "safetensors":
            (sub / f"f{i}.safetensors").write_bytes(_safetensors(rng))
        elif kind == "torch":
            assert torch is not None
            sd = OrderedDict((f"l{j}", torch.randn(rng.randint(1, 16))) for j in range(rng.randint(1, 6) * scale))
            torch.save(sd, sub / f"f{i}.pt")
        elif kind == "config":
            (sub / f"f{i}.json").write_text(json.dumps({"hidden": rng.randint(1, 4096), "id": i}))
        else:
            (sub / f"f{i}.py").write_text(f"def f{i}(x):\n    return x * {rng.random()}\n")
        kinds[kind] = kinds.get(kind, 0) + 1
    return kinds


# Runs the real CLI entry point and, at exit, records its own CPU time apart from its workers'.
WRAPPER = ("import atexit, json, os, sys\n"
           "def _dump():\n"
           "    t = os.times()\n"
           "    with open(os.environ['BENCH_TIMES'], 'w') as fh:\n"
           "        json.dump([t.user + t.system, t.children_user + t.children_system], fh)\n"
           "atexit.register(_dump)\n"
           "sys.argv = ['modelseal', *sys.argv[1:]]\n"
           "from scanner.cli import main\n"
           "main()\n")


@dataclass(frozen=True)
class Timing:
    wall: float
    parent_cpu: float   # interpreter start, walk, collecting results, rendering
    worker_cpu: float   # the pool processes

    @property
    def cpu(self) -> float:
        return self.parent_cpu + self.worker_cpu

    def idle_projection(self, jobs: int) -> float:
        """Wall time on `jobs` idle cores: the parent's work plus the workers' work spread evenly."""
        return self.parent_cpu + self.worker_cpu / jobs


def timed(args: list[str], env: dict[str, str], times_file: Path) -> Timing:
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", WRAPPER, *args], stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, env={**env, "BENCH_TIMES": str(times_file)}, text=True)
    elapsed = time.perf_counter() - t0
    if out.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(args)} failed ({out.returncode}): {out.stderr[-2000:]}")
    parent, workers = json.loads(times_file.read_text())
    return Timing(elapsed, parent, workers)


def best(runs: list[Timing]) -> Timing:
    return min(runs, key=lambda t: t.wall)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=1000)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--keep", type=Path, help="generate into this folder and keep it")
    ap.add_argument("--scale", type=int, default=1,
                    help="multiply the entries of each pickle and torch file (1: ~17 KB a file on average)")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="modelseal-bench-"))
    store = args.keep or tmp / "store"
    try:
        kinds = generate(store, args.files, scale=args.scale)
        exe = ["scan", str(store), "--format", "json"]
        tf = tmp / "times.json"
        env = {**os.environ, "MODELSEAL_CACHE_KEY": "bench"}
        load_before = os.getloadavg()
        rows: list[tuple[str, Timing]] = []
        serial = best([timed([*exe, "--jobs", "1"], env, tf) for _ in range(args.repeat)])
        rows.append(("--jobs 1", serial))
        parallel = best([timed([*exe, "--jobs", str(args.jobs)], env, tf) for _ in range(args.repeat)])
        rows.append((f"--jobs {args.jobs}", parallel))
        cold, warm = [], []
        for r in range(args.repeat):
            cache = tmp / f"cache{r}"
            cold.append(timed([*exe, "--jobs", str(args.jobs), "--cache", str(cache)], env, tf))
            warm.append(timed([*exe, "--jobs", str(args.jobs), "--cache", str(cache)], env, tf))
        rows.append((f"--jobs {args.jobs} --cache DIR (empty cache)", best(cold)))
        rows.append((f"--jobs {args.jobs} --cache DIR (second run)", best(warm)))
        load_after = os.getloadavg()
        size = sum(p.stat().st_size for p in store.rglob("*") if p.is_file())
        print(f"files: {args.files}, {size / 1e6:.1f} MB ({', '.join(f'{v} {k}' for k, v in sorted(kinds.items()))}); "
              f"cores: {os.cpu_count()}; python {sys.version.split()[0]}; best of {args.repeat}; "
              f"load average {load_before[0]:.2f} before, {load_after[0]:.2f} after")
        print("| command | wall s | CPU s (main process + workers) | idle-machine projection s |")
        print("| --- | --- | --- | --- |")
        for name, t in rows:
            n = 1 if name == "--jobs 1" else args.jobs
            print(f"| `modelseal scan DIR --format json {name}` | {t.wall:.2f} | "
                  f"{t.cpu:.2f} ({t.parent_cpu:.2f} + {t.worker_cpu:.2f}) | {t.idle_projection(n):.2f} |")
        print(f"speed-up --jobs {args.jobs} vs --jobs 1: measured {serial.wall / parallel.wall:.2f}x, "
              f"projected for idle cores {serial.idle_projection(1) / parallel.idle_projection(args.jobs):.2f}x; "
              f"second cached run / first cached run: {best(warm).wall / best(cold).wall:.0%} "
              f"(CPU {best(warm).cpu / best(cold).cpu:.0%}), / uncached --jobs {args.jobs} run: "
              f"{best(warm).wall / parallel.wall:.0%}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
