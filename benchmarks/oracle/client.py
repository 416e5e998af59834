"""The parent side of the oracle: persistent workers (one per loader set) under the oracle python.

`Oracle.run(inputs)` writes each input into the sandbox, routes it to the loaders that could open it, sends
the batch to every worker at once (they load in parallel) and returns, per input, the dangerous events
each loader produced. Scanning with modelseal happens in the caller's process, never here.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

WORKER = Path(__file__).resolve().parent / "worker.py"
SETS = ("pt", "keras", "ort", "text")
SET_OF = {"pickle": "pt", "numpy": "pt", "joblib": "pt", "torch": "pt", "torch-weights-only": "pt",
          "torch-jit": "pt", "keras": "keras", "onnxruntime": "ort", "jinja-sandbox": "text",
          "jinja-plain": "text", "hydra": "text", "gguf": "text"}


def oracle_python(explicit: str | None = None) -> str:
    return explicit or os.environ.get("MODELSEAL_ORACLE_PYTHON") or sys.executable


@dataclass
class Input:
    id: str
    data: bytes
    ext: str = ".bin"  # the name the file travels under (the scan and the loaders see the same name)
    origin: str = ""  # fixture path, payload form or mutation recipe
    name: str = ""  # the file name loaders and the scan see (a fixture keeps its own: side files go by name)

    @property
    def filename(self) -> str:
        return self.name or f"input{self.ext}"


@dataclass
class Outcome:
    input: Input
    events: list[dict] = field(default_factory=list)  # dangerous events, each with its loader
    loaders: dict[str, dict] = field(default_factory=dict)  # loader -> {"status", "error"}
    tainted: dict[str, str] = field(default_factory=dict)  # set -> why its child was not reused after this input

    @property
    def dangerous(self) -> bool:
        return bool(self.events)


def _texty(data: bytes) -> bool:
    if b"\x00" in data[:4096] and not data.startswith(b"\xef\xbb\xbf"):
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            return False
    try:
        data[:65536].decode("utf-8")
    except UnicodeDecodeError as e:
        if e.start < 65530:
            return False
    return True


def route(data: bytes, ext: str) -> list[str]:
    """The loaders that could accept these bytes, decided as generously as the loaders decide: pickle-family
    loaders read anything; the others only where their own first check could pass."""
    head = data[:8]
    out = ["pickle", "numpy", "joblib", "torch", "torch-weights-only"]
    is_zip = head.startswith(b"PK") or b"PK\x05\x06" in data[-66000:]
    if is_zip:
        out.append("torch-jit")
    if is_zip or head.startswith(b"\x89HDF\r\n\x1a\n") or b"\x89HDF\r\n\x1a\n" in data[:1 << 16]:
        out.append("keras")
    if ext == ".onnx" or head[:1] == b"\x08":
        out.append("onnxruntime")
    if head.startswith(b"GGUF"):
        out += ["gguf", "jinja-sandbox", "jinja-plain"]
    elif _texty(data):
        if b"{" in data:
            out += ["jinja-sandbox", "jinja-plain"]
        if b"_target_" in data or b"\\" in data:  # YAML / JSON escapes can spell the key
            out.append("hydra")
    return out


class Oracle:
    def __init__(self, python: str | None = None, *, timeout: float = 3.0, batch: int = 16,
                 allowed: Path | None = None, sets: tuple[str, ...] = SETS, workdir: Path | None = None) -> None:
        self.python = oracle_python(python)
        self.timeout = timeout
        self.batch = batch
        self.allowed = Path(allowed).resolve() if allowed else None
        if workdir is None and os.access("/dev/shm", os.W_OK):
            workdir = Path("/dev/shm")  # tmpfs: every input is written, read and removed
        self.root = Path(tempfile.mkdtemp(prefix="oracle-", dir=workdir))
        self.inputs = self.root / "in"
        self.home = self.root / "home"
        self.cwd = self.root / "cwd"
        for d in (self.inputs, self.home, self.cwd, self.root / "tmp"):
            d.mkdir()
        self.workers: dict[str, subprocess.Popen] = {}
        self.loaders: dict[str, list[str]] = {}
        self.versions: dict[str, str] = {}
        self.worker_cpu: dict[str, float] = {}  # set -> CPU seconds its forked children used so far
        self.forks: dict[str, int] = {}
        self._start(sets)

    def _env(self) -> dict[str, str]:
        keep = {k: os.environ[k] for k in ("PATH", "LANG", "LC_ALL") if k in os.environ}
        return {**keep, "HOME": str(self.home), "TMPDIR": str(self.root / "tmp"), "KERAS_BACKEND": "torch",
                "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1",
                "TF_CPP_MIN_LOG_LEVEL": "3", "HF_HUB_OFFLINE": "1", "PYTHONHASHSEED": "0",
                "XDG_CACHE_HOME": str(self.home / ".cache"),
                **({"MODELSEAL_ORACLE_DEBUG": "1"} if os.environ.get("MODELSEAL_ORACLE_DEBUG") else {})}

    def _start(self, sets: tuple[str, ...]) -> None:
        procs = {}
        for s in sets:
            cmd = [self.python, "-I", str(WORKER), "--set", s, "--sandbox", str(self.root), "--cwd",
                   str(self.cwd), "--timeout", str(self.timeout)]
            if self.allowed:
                cmd += ["--allowed", str(self.allowed)]
            procs[s] = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=(self.root / f"worker-{s}.log").open("wb"), cwd=self.cwd, env=self._env())
        for s, p in procs.items():
            line = p.stdout.readline() if p.stdout else b""
            if not line:
                p.kill()
                p.wait()
                continue
            hello = json.loads(line)["hello"]
            if hello["loaders"]:
                self.workers[s] = p
                self.loaders[s] = hello["loaders"]
                self.versions.update(hello.get("versions", {}))
                self.versions["python"] = hello.get("python", "")
            else:
                p.stdin.close()
                p.wait()

    @property
    def available(self) -> list[str]:
        return [n for s in SETS for n in self.loaders.get(s, [])]

    def run(self, inputs: list[Input], *, calibrate: bool = False, loaders: list[str] | None = None) -> list[Outcome]:
        return self.collect(self.submit(inputs, calibrate=calibrate, loaders=loaders))

    def submit(self, inputs: list[Input], *, calibrate: bool = False,
               loaders: list[str] | None = None) -> tuple[list[Input], list[str]]:
        """Write the inputs and send them to the workers; `collect` waits for the answers."""
        per_set: dict[str, list[dict]] = {}
        avail = set(self.available)
        for inp in inputs:
            (self.inputs / inp.id).mkdir()
            path = self.inputs / inp.id / inp.filename
            path.write_bytes(inp.data)
            names = [n for n in (loaders or route(inp.data, inp.ext)) if n in avail]
            for n in names:
                items = per_set.setdefault(SET_OF[n], [])
                if items and items[-1]["id"] == inp.id:
                    items[-1]["loaders"].append(n)
                else:
                    items.append({"id": inp.id, "path": str(path), "loaders": [n]})
        sent = []
        for s, items in per_set.items():
            p = self.workers[s]
            for k in range(0, len(items), self.batch):
                req = {"batch": items[k:k + self.batch], "calibrate": calibrate}
                p.stdin.write((json.dumps(req) + "\n").encode())
                sent.append(s)
            p.stdin.flush()
        return inputs, sent

    def collect(self, handle: tuple[list[Input], list[str]]) -> list[Outcome]:
        inputs, sent = handle
        outcomes = {i.id: Outcome(i) for i in inputs}
        try:
            for s in sent:
                line = self.workers[s].stdout.readline()
                if not line:
                    raise RuntimeError(f"oracle worker {s!r} died")
                msg = json.loads(line)
                self.worker_cpu[s] = msg.get("children_cpu", 0.0)
                self.forks[s] = msg.get("forks", 0)
                for res in msg["results"]:
                    o = outcomes[res["id"]]
                    o.loaders.update(res["loaders"])
                    o.events.extend(res["events"])
                    if res.get("tainted"):
                        o.tainted[s] = res["tainted"]
        finally:
            for inp in inputs:
                shutil.rmtree(self.inputs / inp.id, ignore_errors=True)
        return [outcomes[i.id] for i in inputs]

    def close(self) -> None:
        for p in self.workers.values():
            try:
                p.stdin.close()
            except OSError:
                pass
        for p in self.workers.values():
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.workers.clear()
        if not os.environ.get("MODELSEAL_ORACLE_DEBUG"):
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> Oracle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
