#!/usr/bin/env python3
"""Large ONNX models on the real CLI: time beyond process start and peak memory.

    python benchmarks/bench_onnx_large.py [--repeat 5] [--size-gb 2]

Writes two sparse models into a temporary folder (nothing big is kept):
  embedded  one .onnx whose initializer declares --size-gb of raw_data (a sparse hole): the skeleton parser
  external  a small .onnx plus a --size-gb sparse `.data` file next to it (external data, location checked)
and times `modelseal scan` on each against `modelseal scan` of a tiny text file (process start + CLI).
"""

from __future__ import annotations

import argparse
import resource
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_measure import run_measured  # noqa: E402

from scanner.protowire import encode_varint as _varint  # noqa: E402


def embedded_model(path: Path, payload: int) -> None:
    from onnx import TensorProto, helper

    g = helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"])], "big",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [payload // 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [payload // 4])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], producer_name="bench")
    tensor = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[payload // 4]).SerializeToString()
    tensor += _varint(9 << 3 | 2) + _varint(payload)
    init = _varint(5 << 3 | 2) + _varint(len(tensor) + payload) + tensor
    graph = m.graph.SerializeToString()
    m.ClearField("graph")
    top = m.SerializeToString() + _varint(7 << 3 | 2) + _varint(len(graph) + len(init) + payload) + graph + init
    with open(path, "wb") as fh:
        fh.write(top)
        fh.truncate(len(top) + payload)


def external_model(folder: Path, payload: int) -> Path:
    from onnx import TensorProto, helper

    t = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[payload // 4], data_location=TensorProto.EXTERNAL)
    for k, v in {"location": "model.onnx.data", "offset": "0", "length": str(payload)}.items():
        t.external_data.add(key=k, value=v)
    g = helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"])], "ext",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [payload // 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [payload // 4])], initializer=[t])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], producer_name="bench")
    model = folder / "model.onnx"
    model.write_bytes(m.SerializeToString())
    with open(folder / "model.onnx.data", "wb") as fh:
        fh.truncate(payload)
    return model


def best(cmd: list[str], repeat: int, workdir: Path) -> tuple[float, float, float, str]:
    """Best wall and best CPU (user + sys of the command) of `repeat` runs, median peak RSS."""
    walls, cpus, rss, out = [], [], [], ""
    for _ in range(repeat):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        r = run_measured(cmd, workdir=workdir)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if r.returncode not in (0, 1):
            raise SystemExit(f"{cmd} failed ({r.returncode}): {r.stderr[-400:]}")
        walls.append(r.wall_s)
        cpus.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
        rss.append(r.peak_rss_mb)
        out = r.stdout
    return min(walls), min(cpus), statistics.median(rss), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--size-gb", type=float, default=2.0)
    args = ap.parse_args()
    payload = int(args.size_gb * (1 << 30)) // 4 * 4
    cli = shutil.which("modelseal") or str(Path(sys.executable).parent / "modelseal")
    with tempfile.TemporaryDirectory(prefix="bench-onnx-") as tmp:
        root = Path(tmp)
        (root / "base").mkdir()
        tiny = root / "base" / "notes.txt"
        tiny.write_text("hello\n")
        (root / "emb").mkdir()
        emb = root / "emb" / "model.onnx"
        embedded_model(emb, payload)
        (root / "ext").mkdir()
        ext = external_model(root / "ext", payload)
        base_s, base_cpu, base_mb, _ = best([cli, "scan", str(tiny)], args.repeat, root)
        rows = [("process start + CLI (tiny text file)", base_s, base_cpu, base_mb, "")]
        gb = f"{args.size_gb:g} GB"
        for label, cmd in ((f"{gb} ONNX, embedded weights (skeleton): `scan model.onnx`", [str(emb)]),
                           (f"{gb} ONNX, external data: `scan model.onnx` (data file checked)", [str(ext)]),
                           (f"{gb} ONNX, external data: `scan FOLDER --jobs 1` (both files)",
                            [str(ext.parent), "--jobs", "1"])):
            wall, cpu, mb, out = best([cli, "scan", *cmd], args.repeat, root)
            verdict = next((ln.split()[0] for ln in out.splitlines() if ln.strip()), "?")
            rows.append((label, wall, cpu, mb, verdict))
    print(f"best of {args.repeat}; beyond start = this run minus the tiny-file run (wall, and CPU user+sys)")
    print("| run | wall s | beyond start (wall) s | CPU s | beyond start (CPU) s | peak RSS MB | verdict |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for label, wall, cpu, mb, verdict in rows:
        bw, bc = ("", "") if not verdict else (f"{wall - base_s:+.3f}", f"{cpu - base_cpu:+.3f}")
        print(f"| {label} | {wall:.3f} | {bw} | {cpu:.3f} | {bc} | {mb:.0f} | {verdict} |")


if __name__ == "__main__":
    main()
