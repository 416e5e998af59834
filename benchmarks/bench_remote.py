#!/usr/bin/env python3
"""Remote scans: bytes fetched / file size and requests per file, per format, over HTTP and S3.

    python benchmarks/bench_remote.py [--size-gb 2] [--stores http,s3] [--torch-python /path/to/python]

Writes three large models into a temporary folder, serves them with the Range HTTP server of
tests/test_remote.py and with moto's S3 server (a subprocess, used through s3fs), and scans each with the
real CLI (`--format json`), comparing findings with a local scan of the same file:
  safetensors  header as the format defines it, tensor bytes a sparse hole
  torch        `torch.save` of a state dict (64 tensors; written by torch, run in --torch-python)
  onnx         one .onnx whose initializer embeds --size-gb of raw_data (bench_onnx_large.embedded_model)
Needs the .[s3,http] extras and moto[server] (skips a store whose packages are missing).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(HERE), str(ROOT / "tests"), str(ROOT)]

TORCH_SAVE = """
import sys, torch
n, k = int(sys.argv[2]), 64
# torch.empty: untouched pages cost no memory; torch.save writes them out (zeros) as a real checkpoint
torch.save({f"layers.{i}.weight": torch.empty(n // k // 4, dtype=torch.float32) for i in range(k)}, sys.argv[1])
"""


def make_models(folder: Path, size: int, torch_python: str) -> dict[str, Path]:
    from bench_onnx_large import embedded_model
    from test_remote import sparse_safetensors

    out = {"safetensors": folder / "model.safetensors", "torch": folder / "pytorch_model.bin",
           "onnx": folder / "model.onnx"}
    sparse_safetensors(out["safetensors"], size)
    embedded_model(out["onnx"], min(size, (2 << 30) - (1 << 20)))  # protobuf caps a message below 2 GiB
    subprocess.run([torch_python, "-c", TORCH_SAVE, str(out["torch"]), str(size)], check=True)
    return out


def scan_json(target: str, extra: list[str], env: dict[str, str]) -> tuple[dict, float]:
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "scanner.cli", "scan", target, "-f", "json", *extra],
                       capture_output=True, text=True, env=env, cwd=ROOT)
    if r.returncode not in (0, 1):
        raise SystemExit(f"scan of {target} failed: {r.stderr}")
    (obj,) = json.loads(r.stdout)["files"]
    return obj, time.monotonic() - t0


def same(a: dict, b: dict) -> bool:
    key = lambda o: sorted((f["rule_id"], f["message"]) for f in o["findings"])  # noqa: E731
    return (a["format"], a["verdict"], key(a)) == (b["format"], b["verdict"], key(b))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-gb", type=float, default=2.0)
    ap.add_argument("--stores", default="http,s3")
    ap.add_argument("--torch-python", default="/work/oracle/bin/python" if Path("/work/oracle/bin/python").exists()
                    else sys.executable)
    args = ap.parse_args()
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-remote-") as tmp:
        folder = Path(tmp) / "models"
        folder.mkdir()
        models = make_models(folder, int(args.size_gb * (1 << 30)), args.torch_python)
        local = {fmt: scan_json(str(p), [], env)[0] for fmt, p in models.items()}
        stores = args.stores.split(",")
        if "http" in stores and importlib.util.find_spec("aiohttp"):
            from test_remote import HttpStore

            store = HttpStore(folder)
            try:
                for fmt, p in models.items():
                    obj, secs = scan_json(f"{store.url}/{p.name}", [], env)
                    rows.append(("http", fmt, obj, secs, same(obj, local[fmt])))
            finally:
                store.close()
        if "s3" in stores and importlib.util.find_spec("s3fs") and importlib.util.find_spec("moto"):
            rows += s3_rows(models, local, env)
    print("| store | format | size | bytes fetched | fetched % | requests | same findings as local | seconds |")
    print("|---|---|---|---|---|---|---|---|")
    for store_name, fmt, obj, secs, ok in rows:
        t = obj["transfer"]
        print(f"| {store_name} | {fmt} | {obj['size']:,} | {t['bytes_fetched']:,} | "
              f"{100 * t['bytes_fetched'] / obj['size']:.3f} | {t['requests']} | {ok} | {secs:.1f} |")


def s3_rows(models: dict[str, Path], local: dict[str, dict], env: dict[str, str]) -> list[tuple]:
    import socket

    import s3fs

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    creds = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    rows = []
    try:
        for _ in range(300):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.2)
        fs = s3fs.S3FileSystem(key="testing", secret="testing", endpoint_url=endpoint)
        fs.mkdir("bench")
        for fmt, p in models.items():
            fs.put(str(p), f"bench/{p.name}")
            obj, secs = scan_json(f"s3://bench/{p.name}", ["--storage-option", f"endpoint_url={endpoint}"],
                                  {**env, **creds})
            rows.append(("s3", fmt, obj, secs, same(obj, local[fmt])))
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return rows


if __name__ == "__main__":
    main()
