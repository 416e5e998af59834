#!/usr/bin/env python3
"""Remote scans: bytes fetched / file size and requests per file, per format, over HTTP and S3.

    python benchmarks/bench_remote.py [--size-gb 2] [--stores http,http-single,s3] [--torch-python PYTHON]

Writes three large models into a temporary folder, serves them with the Range HTTP server of
tests/test_remote.py (`http`: multi-range requests answered as nginx/Apache do; `http-single`: a multi-range
request answered with the whole body, as S3 and some CDNs do) and with moto's S3 server (a subprocess, used
through s3fs; uploaded by boto3 in 512 MiB parts, ranged GETs served by benchmarks/moto_ranged.py so a GET
does not read the whole object), and scans each with the real CLI (`--format json`), comparing findings with
a local scan of the same file:
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
    ap.add_argument("--stores", default="http,http-single,s3")
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
        for name in ("http", "http-single"):
            if name not in stores or not importlib.util.find_spec("aiohttp"):
                continue
            from test_remote import HttpStore

            store = HttpStore(folder)
            store.server.multi_range = name == "http"  # type: ignore[attr-defined]
            try:
                for fmt, p in models.items():
                    obj, secs = scan_json(f"{store.url}/{p.name}", [], env)
                    rows.append((name, fmt, obj, secs, same(obj, local[fmt])))
            finally:
                store.close()
        if "s3" in stores and importlib.util.find_spec("s3fs") and importlib.util.find_spec("moto"):
            rows += s3_rows(models, local, env)
    print("| store | format | size | bytes fetched | fetched % | requests | round trips | same findings as local "
          "| seconds |")
    print("|---|---|---|---|---|---|---|---|---|")
    for store_name, fmt, obj, secs, ok in rows:
        t = obj["transfer"]
        print(f"| {store_name} | {fmt} | {obj['size']:,} | {t['bytes_fetched']:,} | "
              f"{100 * t['bytes_fetched'] / obj['size']:.3f} | {t['requests']} | {t['round_trips']} | {ok} | "
              f"{secs:.1f} |", flush=True)


def s3_rows(models: dict[str, Path], local: dict[str, dict], env: dict[str, str]) -> list[tuple]:
    import socket

    import boto3
    from boto3.s3.transfer import TransferConfig

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, str(HERE / "moto_ranged.py"), "-H", "127.0.0.1", "-p", str(port)],
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
        s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="testing", aws_secret_access_key="testing",
                          region_name="us-east-1")
        s3.create_bucket(Bucket="bench")
        # moto cannot assemble a 2 GiB upload from s3fs's 50 MiB parts within its request timeout; 512 MiB parts
        # (4 for a 2 GiB model) it can
        parts = TransferConfig(multipart_threshold=512 << 20, multipart_chunksize=512 << 20, max_concurrency=2)
        for fmt, p in models.items():
            t0 = time.monotonic()
            s3.upload_file(str(p), "bench", p.name, Config=parts)
            print(f"uploaded {p.name} in {time.monotonic() - t0:.0f} s", file=sys.stderr, flush=True)
            obj, secs = scan_json(f"s3://bench/{p.name}", ["--storage-option", f"endpoint_url={endpoint}"],
                                  {**env, **creds})
            rows.append(("s3", fmt, obj, secs, same(obj, local[fmt])))
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return rows


if __name__ == "__main__":
    main()
