"""Store-wide scan benchmark: `--jobs 1` vs `--jobs N`, and a second run with `--cache`.

Writes N small, distinct model files (pickles of protocols 2-5, NumPy .npy, safetensors, PyTorch zips
when torch is installed, a few configs and sources) into a temporary folder, then times the real CLI:

    python benchmarks/bench_jobs.py --files 1000 --jobs 2

Each timing is the best of --repeat runs (wall clock, includes interpreter start).
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


def _pickle(rng: random.Random) -> bytes:
    data = OrderedDict((f"layer{i}.weight", [rng.random() for _ in range(rng.randint(5, 50))])
                       for i in range(rng.randint(3, 30)))
    return pickle.dumps({"state": data, "epoch": rng.randint(0, 99), "name": f"m{rng.random()}"},
                        protocol=rng.choice([2, 3, 4, 5]))


def generate(folder: Path, count: int, seed: int = 1) -> dict[str, int]:
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
            (sub / f"f{i}.pkl").write_bytes(_pickle(rng))
        elif kind == "npy":
            (sub / f"f{i}.npy").write_bytes(_npy(rng))
        elif kind == "safetensors":
            (sub / f"f{i}.safetensors").write_bytes(_safetensors(rng))
        elif kind == "torch":
            assert torch is not None
            sd = OrderedDict((f"l{j}", torch.randn(rng.randint(1, 16))) for j in range(rng.randint(1, 6)))
            torch.save(sd, sub / f"f{i}.pt")
        elif kind == "config":
            (sub / f"f{i}.json").write_text(json.dumps({"hidden": rng.randint(1, 4096), "id": i}))
        else:
            (sub / f"f{i}.py").write_text(f"def f{i}(x):\n    return x * {rng.random()}\n")
        kinds[kind] = kinds.get(kind, 0) + 1
    return kinds


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, int]:
    t0 = time.perf_counter()
    out = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, text=True)
    elapsed = time.perf_counter() - t0
    if out.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(cmd)} failed ({out.returncode}): {out.stderr[-2000:]}")
    return elapsed, out.returncode


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=1000)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--keep", type=Path, help="generate into this folder and keep it")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="modelseal-bench-"))
    store = args.keep or tmp / "store"
    try:
        kinds = generate(store, args.files)
        exe = [sys.executable, "-m", "scanner.cli", "scan", str(store), "--format", "json"]
        env = {**os.environ, "MODELSEAL_CACHE_KEY": "bench"}
        rows = []
        serial = min(timed([*exe, "--jobs", "1"], env)[0] for _ in range(args.repeat))
        rows.append(("--jobs 1", serial))
        parallel = min(timed([*exe, "--jobs", str(args.jobs)], env)[0] for _ in range(args.repeat))
        rows.append((f"--jobs {args.jobs}", parallel))
        cold, warm = [], []
        for r in range(args.repeat):
            cache = tmp / f"cache{r}"
            cold.append(timed([*exe, "--jobs", str(args.jobs), "--cache", str(cache)], env)[0])
            warm.append(timed([*exe, "--jobs", str(args.jobs), "--cache", str(cache)], env)[0])
        rows.append((f"--jobs {args.jobs} --cache (empty)", min(cold)))
        rows.append((f"--jobs {args.jobs} --cache (second run)", min(warm)))
        print(f"files: {args.files} ({', '.join(f'{v} {k}' for k, v in sorted(kinds.items()))}); "
              f"cores: {os.cpu_count()}; python {sys.version.split()[0]}; best of {args.repeat}")
        print("| command | seconds |")
        print("| --- | --- |")
        for name, secs in rows:
            print(f"| `modelseal scan DIR --format json {name}` | {secs:.2f} |")
        print(f"speed-up --jobs {args.jobs} vs --jobs 1: {serial / parallel:.2f}x; "
              f"cached second run / first run: {min(warm) / min(cold):.0%}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
