"""Oracle worker: runs REAL loaders on inputs in forked, audited, rlimited children.

Runs under the oracle interpreter (`--oracle-python`), never inside modelseal. Stand-alone on purpose: it
imports nothing from this repository, so any python with the loader libraries can run it by path.

Protocol (JSON lines): the worker prints {"hello": {...}} once the loader libraries are imported, then for
every request line {"batch": [{"id", "path", "loaders"}], "timeout": s, "calibrate": bool} it prints one
line {"results": [{"id", "loaders": {name: {"status", "error", "events"}}}]}.

A child is forked per batch and handles inputs one after the other while nothing suspicious happened; after
an input with any dangerous event, a non-data pickle global, a crash or a timeout, the next input gets a
fresh child (`--batch 1` forks for every input).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import select
import signal
import sys
import time
import traceback  # noqa: F401  (imported before the hook so error paths never import)

LOADER_SETS: dict[str, tuple[str, ...]] = {
    # the pickle family in one child: an input that fires costs one fresh fork, not one per set
    "pt": ("pickle", "numpy", "joblib", "torch", "torch-weights-only", "torch-jit"),
    "py": ("pickle", "numpy", "joblib"),
    "torch": ("torch", "torch-weights-only", "torch-jit"),
    "keras": ("keras",),
    "ort": ("onnxruntime",),
    "text": ("jinja-sandbox", "jinja-plain", "hydra", "gguf"),
}
# library each loader needs (a loader whose library is not importable is skipped)
NEEDS: dict[str, tuple[str, ...]] = {
    "pickle": ("pickle",), "numpy": ("numpy",), "joblib": ("joblib",),
    "torch": ("torch",), "torch-weights-only": ("torch",), "torch-jit": ("torch",),
    "keras": ("keras",), "onnxruntime": ("onnxruntime",),
    "jinja-sandbox": ("jinja2", "jinja2.sandbox", "jinja2.ext"), "jinja-plain": ("jinja2",),
    "hydra": ("omegaconf", "hydra.utils"), "gguf": ("gguf", "jinja2"),
}
# top-level packages whose own submodules the loaders import lazily (benign: library code, not the file's)
LOADER_PACKAGES = frozenset({"torch", "numpy", "joblib", "keras", "onnxruntime", "jinja2", "markupsafe",
                             "omegaconf", "hydra", "gguf", "h5py", "ml_dtypes", "optree", "yaml", "antlr4",
                             "functorch", "transformers", "namex", "absl", "rich", "sympy", "mpmath"})

# events that are always dangerous, whatever the calibration saw
HARD = {
    "os.system": "exec", "subprocess.Popen": "exec", "os.exec": "exec", "os.posix_spawn": "exec",
    "os.spawn": "exec", "os.fork": "exec", "os.forkpty": "exec", "pty.spawn": "exec", "os.startfile": "exec",
    "os.kill": "signal", "os.killpg": "signal", "signal.pthread_kill": "signal",
    "socket.connect": "network", "socket.bind": "network", "socket.sendto": "network",
    "socket.sendmsg": "network", "socket.getaddrinfo": "network", "socket.gethostbyname": "network",
    "socket.__new__": "network", "urllib.Request": "network", "http.client.connect": "network",
    "ftplib.connect": "network", "smtplib.connect": "network", "poplib.connect": "network",
    "imaplib.open": "network", "nntplib.connect": "network", "telnetlib.Telnet.open": "network",
    "webbrowser.open": "exec",
    "os.rename": "write", "os.remove": "write", "os.rmdir": "write", "os.mkdir": "write",
    "os.chmod": "write", "os.chown": "write", "os.link": "write", "os.symlink": "write",
    "os.truncate": "write", "os.utime": "write", "os.setxattr": "write", "os.removexattr": "write",
    "os.chflags": "write", "os.lchflags": "write", "shutil.copyfile": "write", "shutil.copymode": "write",
    "shutil.copystat": "write", "shutil.copytree": "write", "shutil.move": "write", "shutil.rmtree": "write",
    "shutil.chown": "write", "shutil.make_archive": "write", "shutil.unpack_archive": "write",
    "sqlite3.connect": "write", "tempfile.mkstemp": "write", "tempfile.mkdtemp": "write",
    "os.chdir": "env",
    "sys.addaudithook": "tamper", "sys.settrace": "tamper", "sys.setprofile": "tamper",
    "sys.remote_exec": "tamper", "cpython.run_command": "exec", "cpython.run_file": "exec",
    "cpython.run_module": "exec", "cpython.run_startup": "exec", "cpython.run_interactivehook": "exec",
    "builtins.input": "tamper", "builtins.breakpoint": "tamper", "gc.get_referrers": "introspect", "gc.get_referents": "introspect",
    "gc.get_objects": "introspect", "ctypes.dlsym": "native",
    "ctypes.call_function": "native", "ctypes.string_at": "native", "ctypes.wstring_at": "native",
    "ctypes.PyObj_FromPtr": "native", "_posixsubprocess.fork_exec": "exec",
}
# events that honest loads may cause; allowed only where the calibration saw the same key
# (object.__setattr__ is left out: every class body of a lazily imported module raises it)
SOFT = {"ctypes.dlopen", "code.__new__", "function.__new__", "os.putenv", "os.unsetenv", "import", "exec", "compile", "open", "marshal.loads", "marshal.load", "object.__getattr__", "os.listdir", "os.scandir", "glob.glob", "os.walk",
        "os.fwalk", "mmap.__new__", "ctypes.cdata", "ctypes.addressof", "sys._current_frames",
        "sys._getframemodulename"}
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
NOTE_GLOBALS_SAFE = ("collections", "numpy", "torch", "builtins", "copyreg", "_codecs", "datetime", "decimal")



def _importable(top: str) -> bool:
    """Could `import top` find a module (and so run its code)? Names that are not identifiers (array bytes
    read as a GLOBAL by a plain unpickler) and names nothing provides fail with ModuleNotFoundError first."""
    if not top.isidentifier():
        return False
    if top in sys.modules or top in sys.builtin_module_names:
        return True
    import importlib.machinery

    try:
        return importlib.machinery.PathFinder.find_spec(top) is not None
    except (ImportError, ValueError, OSError):
        return True  # cannot tell: count it

class Blocked(RuntimeError):
    """Raised by the audit hook to stop a dangerous action before it happens."""


def _pre_import(loaders: list[str]) -> list[str]:
    import importlib
    available = []
    for name in loaders:
        try:
            for mod in NEEDS[name]:
                importlib.import_module(mod)
        except Exception:  # noqa: BLE001 - a loader whose library is missing is skipped
            continue
        available.append(name)
    if any(n.startswith("torch") for n in available):
        import torch
        torch.set_num_threads(1)
        try:
            torch.set_num_interop_threads(1)
        except RuntimeError:
            pass
        import torch._weights_only_unpickler  # noqa: F401
        import torch.jit  # noqa: F401
    import encodings
    import pkgutil
    for m in pkgutil.iter_modules(encodings.__path__):  # codecs pickles and templates may name lazily
        if m.name not in ("mbcs", "oem", "cp65001"):
            try:
                importlib.import_module(f"encodings.{m.name}")
            except Exception:  # noqa: BLE001
                pass
    if "numpy" in available or "joblib" in available:
        import numpy.lib.format  # noqa: F401
    if "joblib" in available:
        import joblib.numpy_pickle  # noqa: F401
    if "keras" in available:
        import keras.saving  # noqa: F401
    if "hydra" in available:
        import hydra.utils  # noqa: F401
        import omegaconf  # noqa: F401
    if "jinja-sandbox" in available or "jinja-plain" in available or "gguf" in available:
        import jinja2.ext  # noqa: F401
        import jinja2.sandbox  # noqa: F401
    return available


def _preload(modules) -> None:
    """Import what honest loads import lazily (sklearn, xgboost...) before any fork: children then pay no
    import time, and the libraries' own dlopen/putenv at import happen before the hook is installed."""
    import importlib
    import warnings
    warnings.simplefilter("ignore")
    for name in sorted(modules):
        if name.split(".")[0] in ("winreg", "_winapi", "this", "antigravity") or "__main__" in name:
            continue
        try:
            importlib.import_module(name)
        except BaseException:  # noqa: BLE001 - optional parts of packages may not import here
            pass


# --------------------------------------------------------------------------------------------------------
# the loaders (each gets the input path; what it returns is ignored)
# --------------------------------------------------------------------------------------------------------

def _load_pickle(path: str) -> None:
    import pickle
    with open(path, "rb") as fh:
        pickle.load(fh)


def _load_numpy(path: str) -> None:
    import numpy as np
    obj = np.load(path, allow_pickle=True)
    if hasattr(obj, "files"):  # .npz: every member is read, as users do
        try:
            for key in obj.files:
                obj[key]
        finally:
            obj.close()


def _load_joblib(path: str) -> None:
    import joblib
    joblib.load(path)


def _load_torch(path: str) -> None:
    import torch
    torch.load(path, weights_only=False, map_location="cpu")


def _load_torch_wo(path: str) -> None:
    import torch
    torch.load(path, weights_only=True, map_location="cpu")


def _load_jit(path: str) -> None:
    import torch
    torch.jit.load(path, map_location="cpu")


def _load_keras(path: str) -> None:
    import keras
    keras.saving.load_model(path)  # default safe_mode=True


def _load_ort(path: str) -> None:
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])


MESSAGES = [{"role": "system", "content": "s"}, {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "ok"}, {"role": "user", "content": "bye"}]


def _templates(path: str) -> list[str]:
    """Chat templates a runtime would render from this file: a GGUF's tokenizer.chat_template, a
    tokenizer_config.json's chat_template (string or named list), or the file's text itself."""
    with open(path, "rb") as fh:
        data = fh.read()
    if data[:4] == b"GGUF":
        import gguf
        reader = gguf.GGUFReader(path)
        out = []
        for name, field in reader.fields.items():
            if name.startswith("tokenizer.chat_template"):
                out.append(bytes(field.parts[field.data[0]]).decode("utf-8", "replace"))
        return out
    text = data.decode("utf-8")
    try:
        doc = json.loads(text)
    except ValueError:
        # runtimes render a template file by its name (chat_template.jinja); other text is not rendered
        return [text] if path.lower().endswith((".jinja", ".j2", ".jinja2")) else []
    if isinstance(doc, dict) and "chat_template" in doc:
        ct = doc["chat_template"]
        if isinstance(ct, str):
            return [ct]
        if isinstance(ct, list):
            return [t["template"] for t in ct if isinstance(t, dict) and isinstance(t.get("template"), str)]
    return []


def _render(env, template: str) -> None:
    env.from_string(template).render(messages=MESSAGES, add_generation_prompt=True, bos_token="<s>",
                                     eos_token="</s>", tools=None, documents=None)


def _sandbox_env():
    # as transformers' _compile_jinja_template sets it up (utils/chat_template_utils.py)
    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message):
        raise ValueError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    def strftime_now(fmt):
        return time.strftime(fmt)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env


def _load_jinja_sandbox(path: str) -> None:
    for t in _templates(path):
        _render(_sandbox_env(), t)


def _load_jinja_plain(path: str) -> None:
    import jinja2
    for t in _templates(path):
        _render(jinja2.Environment(), t)


def _load_hydra(path: str) -> None:
    import hydra.utils
    from omegaconf import OmegaConf
    hydra.utils.instantiate(OmegaConf.load(path))


def _load_gguf(path: str) -> None:
    import gguf
    reader = gguf.GGUFReader(path)
    for t in reader.tensors:
        t.data.sum() if t.data.size else None
    for field in reader.fields.values():
        field.contents() if hasattr(field, "contents") else None


LOADERS = {
    "pickle": _load_pickle, "numpy": _load_numpy, "joblib": _load_joblib, "torch": _load_torch,
    "torch-weights-only": _load_torch_wo, "torch-jit": _load_jit, "keras": _load_keras,
    "onnxruntime": _load_ort, "jinja-sandbox": _load_jinja_sandbox, "jinja-plain": _load_jinja_plain,
    "hydra": _load_hydra, "gguf": _load_gguf,
}


# --------------------------------------------------------------------------------------------------------
# the audit hook
# --------------------------------------------------------------------------------------------------------

class Auditor:
    def __init__(self, sandbox: str, allowed: dict[str, set[str]], calibrate: bool, out_fd: int) -> None:
        self.sandbox = os.path.realpath(sandbox)
        self.tmp = os.path.join(self.sandbox, "tmp")
        self.cwd = os.path.join(self.sandbox, "cwd")
        self.allowed = allowed
        self.calibrate = calibrate
        self.out_fd = out_fd
        self.active = False
        self.busy = False
        self.loader = ""
        self.tainted = False
        # the interpreter's trees and the oracle's own source (linecache reads it when a loader's error path
        # formats a warning or traceback about the frame that called the loader: a path the file cannot choose)
        prefixes = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
                    os.path.dirname(os.path.abspath(__file__))}
        prefixes |= {os.path.realpath(p) for p in prefixes}
        self.py_prefixes = tuple(p.rstrip("/") + "/" for p in prefixes)
        self.allowed_modules = set(sys.modules)
        # third-party packages honest loads import (sklearn, xgboost...): any of their submodules is library
        # code; stdlib modules stay allowed one by one
        self.allowed_packages = {m.split(".")[0] for m in allowed.get("import", ())
                                 if m.split(".")[0] not in sys.stdlib_module_names}

    def emit(self, obj: dict) -> None:
        data = (json.dumps(obj) + "\n").encode()
        while data:
            n = os.write(self.out_fd, data)
            data = data[n:]

    def __call__(self, event: str, args: tuple) -> None:
        if not self.active or self.busy:
            return
        self.busy = True
        try:
            verdict = self.judge(event, args)
        finally:
            self.busy = False
        if verdict is None:
            return
        kind, key, hard = verdict
        if not hard and not self.calibrate and key in self.allowed.get(event, ()):
            return
        self.tainted = self.tainted or f"event {event}"
        self.emit({"event": {"loader": self.loader, "kind": kind, "name": event, "key": key, "hard": hard}})
        if hard or not self.calibrate:
            raise Blocked(f"{event}: {key}")

    @staticmethod
    def _from_library_template() -> bool:
        f = sys._getframe(3)
        for _ in range(6):
            if f is None:
                return False
            name, code = f.f_code.co_filename, f.f_code.co_name
            if (code == "namedtuple" and name.endswith(os.path.join("collections", "__init__.py"))) or \
                    name.endswith(os.sep + "traceback.py"):
                return True
            f = f.f_back
        return False

    def _caller(self) -> str:
        f = sys._getframe(3)
        return f"{os.path.basename(f.f_code.co_filename)}:{f.f_code.co_name}"

    def _in_tmp(self, args: tuple) -> bool:
        """Every path argument lies in the sandbox (its TMPDIR or cwd, where honest loaders unpack)."""
        paths = [os.path.realpath(os.fsdecode(a)) for a in args if isinstance(a, (str, bytes))]
        return bool(paths) and all(p.startswith((self.tmp + "/", self.cwd + "/")) for p in paths)

    def _inside(self, path: str) -> bool:
        return path == self.sandbox or path.startswith(self.sandbox + "/")

    def judge(self, event: str, args: tuple) -> tuple[str, str, bool] | None:
        if event == "pickle.find_class":
            # a global that is not a class may have side effects a later input in this child would see
            mod, name = str(args[0]), str(args[1])
            if mod.split(".")[0] not in NOTE_GLOBALS_SAFE and (mod in sys.modules or _importable(mod.split(".")[0])):
                # (a module nothing provides fails to import before any code runs: no side effect)
                obj = sys.modules.get(mod)
                for part in name.split("."):
                    obj = getattr(obj, part, None)
                if not isinstance(obj, type):
                    self.tainted = self.tainted or f"global {mod}.{name}"
            return None
        if event in HARD:
            detail = args[0] if args else ""
            if HARD[event] == "write" and self._in_tmp(args):
                return "write", f"{event}@{self._caller()}", False  # e.g. torch's legacy tar extraction
            return HARD[event], f"{str(detail)[:200]}", True
        if event not in SOFT:
            return None
        if event == "import":
            name = str(args[0])
            top = name.split(".")[0]
            if name in self.allowed_modules or top in LOADER_PACKAGES or top in self.allowed_packages:
                return None
            if not _importable(top):
                return None  # no such module here: the import fails before any module code runs
            return "import", name, False
        if event == "open":
            path, mode, flags = (list(args) + [None, None, None])[:3]
            if isinstance(path, int) or path is None:
                return None
            p = os.fsdecode(path)
            full = os.path.realpath(p) if not p.startswith("/proc/self") else p
            writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or \
                (isinstance(flags, int) and bool(flags & WRITE_FLAGS))
            if writing:
                if self._in_tmp((full,)):
                    return "write", f"open@{self._caller()}", False
                return "write", full, True
            if self._inside(full) or full.startswith(self.py_prefixes) or full == "/dev/null":
                return None
            return "read", full, False
        if event in ("code.__new__", "function.__new__", "exec", "compile", "marshal.loads", "marshal.load", "ctypes.cdata", "ctypes.addressof",
                     "sys._current_frames"):
            caller = self._caller()
            if caller.startswith("<frozen importlib"):
                return None  # the import machinery running a module the "import" event already judged
            if event == "compile" and len(args) > 1 and isinstance(args[1], str) and \
                    args[1].startswith(self.py_prefixes) and isinstance(args[0], (bytes, str)) and \
                    len(args[0]) < 4096 and b"\n" not in (args[0] if isinstance(args[0], bytes) else b""):
                # the interpreter re-parses one source line of a file on disk to print a traceback (C-level
                # display of a loader's internal error); running code needs an "exec" event of its own
                return None
            if event in ("compile", "exec") and self._from_library_template():
                # collections.namedtuple compiles its own __new__ template; the traceback module parses the
                # source line of a frame it prints (a loader's internal error reported as unraisable)
                return None
            return ("native" if event.startswith(("marshal", "ctypes", "sys")) else "code"), caller, False
        if event in ("os.putenv", "os.unsetenv", "ctypes.dlopen"):
            return "env", repr(args[0])[:200], False
        if event == "object.__getattr__":
            obj = args[0]
            owner = obj.__name__ if isinstance(obj, type) else type(obj).__name__
            return "introspect", f"{owner}.{args[1]}", False
        if event in ("os.listdir", "os.scandir", "glob.glob", "os.walk", "os.fwalk"):
            p = args[0] if args else "."
            if isinstance(p, int):
                return None
            full = os.path.realpath(os.fsdecode(p if p is not None else "."))
            if self._inside(full) or full.startswith(self.py_prefixes):
                return None
            return "read", full, False
        if event == "mmap.__new__":
            access = args[3] if len(args) > 3 else None
            import mmap
            if access in (mmap.ACCESS_WRITE,) or (access == mmap.ACCESS_DEFAULT and len(args) > 2
                                                    and (args[2] & mmap.PROT_WRITE) and (args[1] == mmap.MAP_SHARED)):
                return "write", "mmap", False
            return None
        return None


# --------------------------------------------------------------------------------------------------------
# the child: rlimits, hook, loads
# --------------------------------------------------------------------------------------------------------

def _limits(timeout: float, mem_mb: int, nproc: int) -> None:
    """Soft limits only (a lowered hard limit could not be raised again for the next input)."""
    def soft(which: int, value: int) -> None:
        hard = resource.getrlimit(which)[1]
        resource.setrlimit(which, (value if hard == resource.RLIM_INFINITY else min(value, hard), hard))

    used = resource.getrusage(resource.RUSAGE_SELF)
    soft(resource.RLIMIT_CPU, int(used.ru_utime + used.ru_stime + timeout) + 1)
    with open("/proc/self/statm") as fh:
        vsize = int(fh.read().split()[0]) * resource.getpagesize()
    soft(resource.RLIMIT_AS, vsize + mem_mb * (1 << 20))
    soft(resource.RLIMIT_FSIZE, 1 << 20)
    soft(resource.RLIMIT_NPROC, nproc)
    soft(resource.RLIMIT_CORE, 0)


def _child(batch: list[dict], auditor: Auditor, args) -> None:
    sys.addaudithook(auditor)
    for item in batch:
        auditor.tainted = False
        auditor.emit({"start": item["id"]})
        results = {}
        for name in item["loaders"]:
            auditor.loader = name
            path = item["path"]
            if name == "keras":
                path = _keras_name(path)
            _limits(args.timeout, args.mem_mb, args.nproc)
            auditor.emit({"load": name})  # the parent's wall-clock deadline is per load
            auditor.active = True
            status, error = "ok", ""
            t_load = time.monotonic()
            c_load = time.process_time()
            try:
                LOADERS[name](path)
            except Blocked as e:
                status, error = "blocked", str(e)[:300]
            except BaseException as e:  # noqa: BLE001 - any loader failure is a result, not our crash
                status, error = "error", f"{type(e).__name__}: {str(e)[:300]}"
            finally:
                auditor.active = False
            results[name] = {"status": status, "error": error, "s": round(time.monotonic() - t_load, 3),
                             "cpu": round(time.process_time() - c_load, 4)}
            auditor.emit({"res": name, "r": results[name]})  # kept should a later load of this input crash
        auditor.emit({"done": item["id"], "results": results, "tainted": auditor.tainted})
        if auditor.tainted:
            break


def _keras_name(path: str) -> str:
    """keras picks the reader by extension; name the copy after the content (zip -> .keras, else .h5)."""
    with open(path, "rb") as fh:
        head = fh.read(4)
    ext = ".keras" if head == b"PK\x03\x04" else ".h5"
    target = os.path.join(os.path.dirname(path), "keras-copy" + ext)
    if not os.path.exists(target):
        os.link(path, target)
    return target


FORKS = [0]


def run_batch(batch: list[dict], auditor_args: dict, args) -> list[dict]:
    """Every loader of every input runs: after a crash or timeout, a fresh child goes on with the loaders
    of that input that had not run yet, then with the inputs after it."""
    pending = list(batch)
    out: dict[str, dict] = {}
    carried: dict[str, dict] = {}  # id -> results and events of loads before a crash of that input
    while pending:
        r, w = os.pipe()
        FORKS[0] += 1
        pid = os.fork()
        if pid == 0:  # child
            os.close(r)
            try:
                os.chdir(args.cwd)
                auditor = Auditor(out_fd=w, **auditor_args)
                _child(pending, auditor, args)
            except BaseException:  # noqa: BLE001 - reported as a crash of the input in progress
                try:
                    sys.stderr.write(traceback.format_exc())
                    sys.stderr.flush()
                except BaseException:  # noqa: BLE001
                    pass
            finally:
                os._exit(0)
        os.close(w)
        events: dict[str, list] = {}
        current = None
        loading = None
        finished: dict[str, dict] = {}  # results of the current input's loads so far
        done_ids: set[str] = set()
        buf = b""
        wall = 5 * args.timeout + 2  # per load: the CPU rlimit ends busy loads, this ends sleeping ones
        deadline = time.monotonic() + wall
        eof = killed = False
        while not eof:
            left = deadline - time.monotonic()
            if left <= 0:
                os.kill(pid, signal.SIGKILL)
                killed = True
                break
            ready, _, _ = select.select([r], [], [], left)
            if not ready:
                continue
            chunk = os.read(r, 1 << 16)
            if not chunk:
                eof = True
                break
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                msg = json.loads(line)
                if "start" in msg:
                    current = msg["start"]
                    loading = None
                    finished = {}
                    events[current] = []
                    deadline = time.monotonic() + wall
                elif "load" in msg:
                    loading = msg["load"]
                elif "res" in msg and current is not None:
                    finished[msg["res"]] = msg["r"]
                    deadline = time.monotonic() + wall
                elif "event" in msg and current is not None:
                    events[current].append(msg["event"])
                elif "done" in msg:
                    prev = carried.pop(msg["done"], {"loaders": {}, "events": []})
                    out[msg["done"]] = {"id": msg["done"], "loaders": {**prev["loaders"], **msg["results"]},
                                        "events": prev["events"] + events[current], "tainted": msg["tainted"]}
                    done_ids.add(msg["done"])
                    current = None
        os.close(r)
        _, status = os.waitpid(pid, 0)
        if current is not None:  # crashed or killed in the middle of an input
            how = "timeout" if killed else f"crash (status {status})"
            item = next(i for i in pending if i["id"] == current)
            prev = carried.pop(current, {"loaders": {}, "events": []})
            ran = item["loaders"][:item["loaders"].index(loading) + 1] if loading in item["loaders"] else []
            res = {**prev["loaders"], **finished, (loading or "*"): {"status": how, "error": how}}
            evs = prev["events"] + events.get(current, [])
            rest = item["loaders"][len(ran):] if ran else []
            if rest:  # a fresh child runs this input's remaining loaders
                carried[current] = {"loaders": res, "events": evs}
                pending = [dict(i, loaders=rest) if i["id"] == current else i for i in pending]
            else:
                out[current] = {"id": current, "loaders": res, "events": evs, "tainted": how}
                done_ids.add(current)
        before = len(pending)
        pending = [i for i in pending if i["id"] not in done_ids]
        progressed = len(pending) < before or current is not None
        if not progressed:  # the child died before starting anything: give up on this batch
            for i in pending:
                out[i["id"]] = {"id": i["id"], "loaders": {"*": {"status": "crash", "error": "no start"}},
                                "events": []}
            pending = []
    return [out[i["id"]] for i in batch]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--set", required=True, choices=sorted(LOADER_SETS))
    ap.add_argument("--sandbox", required=True, help="the temp dir holding inputs (reads allowed inside)")
    ap.add_argument("--cwd", required=True)
    ap.add_argument("--allowed", help="calibration JSON: {event: [keys]}")
    ap.add_argument("--timeout", type=float, default=3.0)
    ap.add_argument("--mem-mb", type=int, default=1024)
    ap.add_argument("--nproc", type=int, default=4096)
    args = ap.parse_args()
    # the protocol gets a private copy of stdout; fd 1 goes to stderr, so a loader (or a library at import)
    # that prints cannot corrupt the JSON lines
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    sys.dont_write_bytecode = True
    available = _pre_import(list(LOADER_SETS[args.set]))
    allowed: dict[str, set[str]] = {}
    if args.allowed:
        with open(args.allowed) as fh:  # a missing calibration is an error, not an empty allow list
            doc = json.load(fh)
        allowed = {k: set(v) for k, v in doc.get("allowed", doc).items()}
    if args.set in ("pt", "py", "torch"):
        _preload(allowed.get("import", ()))
    # everything imported so far moves to the permanent generation: a collection in a forked child then
    # never walks (and so never copies on write) the libraries' hundreds of MB of objects
    import gc
    gc.collect()
    gc.freeze()
    out = proto
    versions = {}
    for name in available:
        for mod in NEEDS[name][:1]:
            versions[mod] = str(getattr(sys.modules.get(mod), "__version__", "stdlib"))
    out.write(json.dumps({"hello": {"set": args.set, "loaders": available, "pid": os.getpid(),
                                    "python": sys.version.split()[0], "versions": versions}}) + "\n")
    out.flush()
    for line in sys.stdin:
        req = json.loads(line)
        aargs = {"sandbox": args.sandbox, "allowed": allowed, "calibrate": bool(req.get("calibrate"))}
        batch = [dict(i, loaders=[n for n in i["loaders"] if n in available]) for i in req["batch"]]
        t0 = time.monotonic()
        results = run_batch(batch, aargs, args)
        if os.environ.get("MODELSEAL_ORACLE_DEBUG"):
            sys.stderr.write(f"batch {len(batch)} in {time.monotonic() - t0:.2f}s, forks {FORKS[0]}\n")
            sys.stderr.flush()
        ru = resource.getrusage(resource.RUSAGE_CHILDREN)
        out.write(json.dumps({"results": results, "children_cpu": ru.ru_utime + ru.ru_stime, "forks": FORKS[0]}) + "\n")
        out.flush()


if __name__ == "__main__":
    main()
