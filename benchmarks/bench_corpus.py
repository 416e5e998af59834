"""The benchmark corpus: the project's labelled fixtures plus large generated benign models.

Everything is written under `benchmarks/corpus/` (git-ignored) on demand. Large files are sparse where the
format allows (safetensors, ONNX external data); the torch checkpoint is written by real torch (in the
interpreter given by --torch-python) from untouched tensors, so it costs disk writes but little memory.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import struct
import subprocess
import sys
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"
GiB = 1 << 30


@dataclass(frozen=True)
class Labelled:
    path: Path          # absolute path inside the corpus
    kind: str           # "hostile" | "benign" | "honest" (the honest corpus: benign, scored on its own)
    threat: str = ""    # threat id for hostile files
    rule: str = ""      # rule modelseal must report
    producer: str = ""  # honest corpus: package==version or save call that wrote the file
    family: str = ""    # fixtures: the manifest that lists the file (manifest-<family>.toml)


@dataclass(frozen=True)
class Group:
    name: str
    root: Path                      # what every tool is pointed at
    labelled: tuple[Labelled, ...]  # files whose outcome is scored
    note: str = ""


def fixtures_group(corpus: Path, fixtures: Path = FIXTURES, *, limit: int | None = None, copy: bool = True,
                   families: tuple[str, ...] = ()) -> Group:
    """Copy fixtures/{hostile,benign} (symlinks kept as links) and label what the manifests list.

    `families`: only the manifests `manifest-<family>.toml` named, and only the folders their entries live
    in (`hostile/<dir>`, `benign/<dir>`) are copied."""
    dest = corpus / "fixtures"
    manifests = sorted(fixtures.glob("manifest-*.toml"))
    if families:
        manifests = [m for m in manifests if m.stem.removeprefix("manifest-") in families]
        missing = set(families) - {m.stem.removeprefix("manifest-") for m in manifests}
        if missing:
            raise SystemExit(f"no fixtures/manifest-<family>.toml for: {', '.join(sorted(missing))}")
    if copy:
        if dest.exists():
            shutil.rmtree(dest)
        dest.mkdir(parents=True)
        if families:
            for folder in sorted(_entry_folders(manifests)):
                if (fixtures / folder).is_dir():
                    shutil.copytree(fixtures / folder, dest / folder, symlinks=True)
        else:
            for kind in ("hostile", "benign"):
                if (fixtures / kind).is_dir():
                    shutil.copytree(fixtures / kind, dest / kind, symlinks=True)
    # a hostile file counts when one of its entries changes a verdict (medium and up); entries that only
    # expect a low note (remote-code hints, runtime configs) are neither hostile nor benign here
    loud = {"critical", "high", "medium"}
    labels: dict[Path, Labelled] = {}
    for manifest in manifests:
        doc = tomllib.loads(manifest.read_text(encoding="utf-8"))
        for kind in ("hostile", "benign"):
            for entry in doc.get(kind, []):
                target = dest / entry["path"]
                if not (target.exists() or target.is_symlink()):
                    continue
                if kind == "hostile" and entry.get("severity", "high") not in loud:
                    continue
                labels.setdefault(target, Labelled(target, kind, entry.get("threat", ""), entry.get("rule", ""),
                                                   family=manifest.stem.removeprefix("manifest-")))
    labelled = list(labels.values())
    if limit is not None:
        hostile = [x for x in labelled if x.kind == "hostile"][:limit]
        benign = [x for x in labelled if x.kind == "benign"][:limit]
        labelled = hostile + benign
    return Group("fixtures", dest, tuple(labelled), "fixtures/manifest-*.toml")


def _entry_folders(manifests: list[Path]) -> set[Path]:
    """`hostile/<dir>` / `benign/<dir>` of every entry (a package or layout is copied whole)."""
    out: set[Path] = set()
    for manifest in manifests:
        doc = tomllib.loads(manifest.read_text(encoding="utf-8"))
        for kind in ("hostile", "benign"):
            for entry in doc.get(kind, []):
                parts = Path(entry["path"]).parts
                out.add(Path(*parts[:2]))
    return out


def honest_group(root: Path, log=print, *, sample: int | None = None, corpus: Path | None = None,
                 copy: bool = True) -> Group | None:
    """The honest corpus (benchmarks/honest_corpus.py), read from its manifest; built first when absent.

    `sample`: that many files, taken round-robin over the producers (each producer's files in path order) so
    every producer is represented, plus their companions (external data, joblib `.npy` side files), copied to
    `corpus/honest-sample-N` (the tools scan a folder)."""
    manifest = root / "manifest.json"
    if not manifest.exists():
        log(f"building the honest corpus in {root} (pip downloads from the registry; save calls)")
        r = subprocess.run([sys.executable, str(Path(__file__).resolve().parent / "honest_corpus.py"), "build",
                            "--out", str(root)], check=False)
        if r.returncode != 0 or not manifest.exists():
            return None
    doc = json.loads(manifest.read_text(encoding="utf-8"))
    entries = [e for e in doc["entries"] if (root / e["path"]).exists()]
    note = f"{doc['producers']} producers, benchmarks/honest_corpus.py"
    if sample is None or sample >= len(entries):
        labelled = tuple(Labelled(root / e["path"], "honest", producer=e["producer"]) for e in entries)
        return Group("honest", root, labelled, note)
    picked = _with_companions(_round_robin(entries, sample), entries)
    dest = (corpus or root.parent) / f"honest-sample-{sample}"
    if copy:
        if dest.exists():
            shutil.rmtree(dest)
        for e in picked:
            target = dest / e["path"]
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(root / e["path"], target)
    labelled = tuple(Labelled(dest / e["path"], "honest", producer=e["producer"]) for e in picked)
    producers = len({e["producer"] for e in picked})
    return Group("honest", dest, labelled, f"a {len(picked)}-file sample of {len(entries)} "
                 f"({producers} of {doc['producers']} producers), benchmarks/honest_corpus.py")


def _with_companions(picked: list[dict], entries: list[dict]) -> list[dict]:
    """Add the files a picked one loads with: same folder, name extending its name (`m.onnx` ->
    `m.onnx.data`, `x.joblib` -> `x.joblib_01.npy`); without them a loader (and a scanner) sees a broken model."""
    chosen = {e["path"] for e in picked}
    out = list(picked)
    for e in picked:
        folder, _, name = e["path"].rpartition("/")
        for other in entries:
            o_folder, _, o_name = other["path"].rpartition("/")
            if o_folder == folder and o_name != name and o_name.startswith(name) and other["path"] not in chosen:
                chosen.add(other["path"])
                out.append(other)
    return out


def _round_robin(entries: list[dict], n: int) -> list[dict]:
    by: dict[str, list[dict]] = {}
    for e in sorted(entries, key=lambda e: e["path"]):
        by.setdefault(e["producer"], []).append(e)
    queues = [by[p] for p in sorted(by)]
    out: list[dict] = []
    i = 0
    while len(out) < n and any(queues):
        q = queues[i % len(queues)]
        if q:
            out.append(q.pop(0))
        i += 1
    return out


# -- large benign models ----------------------------------------------------------------------------------

def safetensors_group(corpus: Path, size: int = 2 * GiB) -> Group:
    """One tensor spanning `size` bytes; the data region is a hole (sparse), only the header is written."""
    d = corpus / "safetensors-2g"
    d.mkdir(parents=True, exist_ok=True)
    path = d / "model.safetensors"
    n = size // 4
    header = json.dumps({"__metadata__": {"format": "pt"},
                         "weight": {"dtype": "F32", "shape": [n], "data_offsets": [0, n * 4]}},
                        separators=(",", ":")).encode()
    header += b" " * (-len(header) % 8)
    if not path.exists() or path.stat().st_size != 8 + len(header) + n * 4:
        with open(path, "wb") as fh:
            fh.write(struct.pack("<Q", len(header)) + header)
            fh.truncate(8 + len(header) + n * 4)
    return Group("safetensors-2g", d, (Labelled(path, "benign"),), f"{size >> 20} MiB, sparse")


_TORCH_WRITER = r"""
import sys, torch
path, size, parts = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
# torch.empty maps fresh pages: nothing is resident until torch.save reads them (as zeros)
sd = {f"layers.{i}.weight": torch.empty(size // parts // 4, dtype=torch.float32) for i in range(parts)}
torch.save(sd, path)
"""


def torch_group(corpus: Path, torch_python: str, size: int = 2 * GiB) -> Group:
    d = corpus / "torch-2g"
    d.mkdir(parents=True, exist_ok=True)
    path = d / "model.pt"
    if not path.exists() or path.stat().st_size < size:
        tmp = path.with_suffix(".tmp")
        subprocess.run([torch_python, "-c", _TORCH_WRITER, str(tmp), str(size), "8"], check=True)
        tmp.replace(path)
    return Group("torch-2g", d, (Labelled(path, "benign"),), f"{path.stat().st_size >> 20} MiB torch.save zip")


_ONNX_WRITER = r"""
import sys
from onnx import TensorProto, helper, save_model
path, size = sys.argv[1], int(sys.argv[2])
n = size // 4
w = TensorProto()
w.name, w.data_type = "w", TensorProto.FLOAT
w.dims.append(n)
w.data_location = TensorProto.EXTERNAL
for k, v in (("location", "weights.bin"), ("offset", "0"), ("length", str(n * 4))):
    e = w.external_data.add(); e.key, e.value = k, v
x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [n])
y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [n])
g = helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"])], "big", [x], [y], [w])
save_model(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)
"""


def onnx_group(corpus: Path, python: str, size: int = 2 * GiB) -> Group:
    """A small ModelProto whose one initializer lives in a sparse 2 GB `weights.bin` next to it."""
    d = corpus / "onnx-2g"
    d.mkdir(parents=True, exist_ok=True)
    path = d / "model.onnx"
    weights = d / "weights.bin"
    if not path.exists():
        subprocess.run([python, "-c", _ONNX_WRITER, str(path), str(size)], check=True)
    if not weights.exists() or weights.stat().st_size != size // 4 * 4:
        with open(weights, "wb") as fh:
            fh.truncate(size // 4 * 4)
    return Group("onnx-2g", d, (Labelled(path, "benign"),), f"{size >> 20} MiB external data, sparse")


def small_files_group(corpus: Path, count: int = 1000) -> Group:
    """`count` small benign files, four kinds in turn: pickle (plain containers), safetensors, npy, JSON."""
    d = corpus / f"small-{count}"
    marker = d / ".complete"
    if not marker.exists():
        if d.exists():
            shutil.rmtree(d)
        d.mkdir(parents=True)
        for i in range(count):
            kind = i % 4
            sub = d / f"model_{i // 4:04d}"
            sub.mkdir(exist_ok=True)
            if kind == 0:
                state = OrderedDict((f"layer{j}.bias", [float(j + k) for k in range(16)]) for j in range(8))
                (sub / "state.pkl").write_bytes(pickle.dumps({"step": i, "state": state}, protocol=2 + i % 3))
            elif kind == 1:
                _write_small_safetensors(sub / "model.safetensors", i)
            elif kind == 2:
                _write_small_npy(sub / "array.npy", i)
            else:
                (sub / "config.json").write_text(json.dumps({"hidden_size": 64 + i, "model_type": "bench"}))
        marker.write_text("ok")
    files = sorted(p for p in d.rglob("*") if p.is_file() and p.name != ".complete")
    return Group(f"small-{count}", d, tuple(Labelled(p, "benign") for p in files),
                 f"{count} files: pickle, safetensors, npy, json")


def _write_small_safetensors(path: Path, seed: int) -> None:
    n = 32 + seed % 32
    header = json.dumps({"w": {"dtype": "F32", "shape": [n], "data_offsets": [0, 4 * n]}},
                        separators=(",", ":")).encode()
    header += b" " * (-len(header) % 8)
    path.write_bytes(struct.pack("<Q", len(header)) + header + struct.pack(f"<{n}f", *range(n)))


def _write_small_npy(path: Path, seed: int) -> None:
    n = 16 + seed % 16
    header = f"{{'descr': '<f4', 'fortran_order': False, 'shape': ({n},), }}".encode()
    header += b" " * (-(10 + len(header) + 1) % 64) + b"\n"
    path.write_bytes(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header
                     + struct.pack(f"<{n}f", *range(n)))


def many_objects_pickle(path: Path, size: int = 50 << 20) -> Path:
    """A benign pickle of ~`size` bytes made of many small objects (the engine's throughput case)."""
    if path.exists() and size * 0.9 <= path.stat().st_size <= size:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    def rows(n: int) -> list[dict[str, object]]:
        return [{"id": i, "name": f"token{i}", "score": i / 7, "tags": ["a", "b"], "span": (i, i + 1)}
                for i in range(n)]

    n = int(size / (len(pickle.dumps(rows(10_000), protocol=4)) / 10_000))
    data = pickle.dumps(rows(n), protocol=4)
    if len(data) > size:  # later rows are longer (bigger ids): scale down once
        data = pickle.dumps(rows(int(n * size / len(data))), protocol=4)
    path.write_bytes(data)
    return path


def remove(corpus: Path) -> None:
    if corpus.exists():
        shutil.rmtree(corpus)


def disk_free(path: Path) -> int:
    path.mkdir(parents=True, exist_ok=True)
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize
