"""Run by test_no_execution.py in a fresh interpreter: scan fixtures under an audit hook.

Warm-up scans (benign fixtures) load every module the scanner legitimately needs; then a hook is installed
that fails on code execution, process spawning, network, native loading, deserializers, and on importing
any new module whose name appears in the bytes being scanned.

The HDF5 library runs in a child forked by `scanner/sandbox.py`: that fork (and the kill of a child past its
deadline) is the one allowed. The hook lives on in the child; what it catches there is written to a shared
memory page (the child has no descriptors left) and blocked. Probes at the end prove both halves are live.
"""

from __future__ import annotations

import json
import mmap
import os
import struct
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from conftest import FIXTURES, load_manifests, scan_path  # noqa: E402
from scanner import sandbox  # noqa: E402

FORBIDDEN_EVENTS = {
    "exec", "compile", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty",
    "subprocess.Popen", "socket.connect", "socket.bind", "socket.getaddrinfo", "marshal.loads", "marshal.load",
    "pickle.find_class", "ctypes.dlopen", "ctypes.dlsym", "os.startfile", "webbrowser.open", "code.__new__",
    "function.__new__", "cpython.run_command", "cpython.run_file", "cpython.run_module", "os.kill",
    "urllib.Request", "http.client.connect", "os.putenv", "sys.addaudithook",
}


def _is_module_import(event: str, args: tuple) -> bool:
    filename = getattr(args[0], "co_filename", None) if event == "exec" else args[1] if len(args) > 1 else None
    if not isinstance(filename, str) or not filename.endswith(".py"):
        return False
    path = Path(filename)
    return path.is_file() and FIXTURES not in path.resolve().parents


SANDBOX_FILE = str(Path(sandbox.__file__).resolve())
SANDBOX_EVENTS = {"os.fork", "os.kill"}  # allowed only when scanner/sandbox.py itself asks
CHILD_LOG_BYTES = 1 << 20


def _from_sandbox() -> bool:
    frame = sys._getframe(3)  # _from_sandbox <- _violation <- hook <- the function that raised the event
    return frame is not None and str(Path(frame.f_code.co_filename).resolve()) == SANDBOX_FILE


class ChildLog:
    """Violations seen in forked children, in anonymous shared memory: [used length][JSON lines]."""

    def __init__(self) -> None:
        self.mem = mmap.mmap(-1, CHILD_LOG_BYTES, flags=mmap.MAP_SHARED)
        self.mem[:8] = struct.pack("<Q", 8)

    def add(self, item: object) -> None:
        line = (json.dumps(item) + "\n").encode()
        used = struct.unpack("<Q", self.mem[:8])[0]
        if used + len(line) <= CHILD_LOG_BYTES:
            self.mem[used:used + len(line)] = line
            self.mem[:8] = struct.pack("<Q", used + len(line))

    def items(self) -> list:
        used = struct.unpack("<Q", self.mem[:8])[0]
        return [json.loads(x) for x in self.mem[8:used].decode().splitlines()]


def _inside_import() -> bool:
    frame = sys._getframe(2)
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            return True
        frame = frame.f_back
    return False


def main() -> int:
    entries = load_manifests()
    hostile = [FIXTURES / e["path"] for e in entries if e["kind"] == "hostile"]
    for e in entries:
        if e["kind"] == "benign":
            scan_path(FIXTURES / e["path"])
    state = {"active": False, "current": b"", "violations": [], "parent": os.getpid()}
    child_log = ChildLog()

    def _violation(event: str, args: tuple) -> tuple[str, str] | None:
        if event in ("exec", "compile") and _is_module_import(event, args):
            return None  # the scanner importing its own or a library's module from disk
        if event == "marshal.loads" and _inside_import():
            return None  # a library module loaded from its .pyc
        if event in SANDBOX_EVENTS and os.getpid() == state["parent"] and _from_sandbox():
            return None  # the HDF5 sandbox forking its child, or killing it at the deadline
        if event in FORBIDDEN_EVENTS:
            return (event, repr(args)[:200])
        if event == "import":
            name = args[0]
            if name and name not in sys.modules and name.encode() in state["current"]:
                return (event, name)
        return None

    def hook(event: str, args: tuple) -> None:
        if not state["active"]:
            return
        found = _violation(event, args)
        if found is None:
            return
        if os.getpid() != state["parent"]:
            child_log.add([*found, str(state["current_path"])])
            raise PermissionError(f"audit: {event} in a sandbox child")  # blocked, and the child fails closed
        state["violations"].append(found)
        if event in ("os.fork", "os.forkpty"):
            raise PermissionError(f"audit: {event} outside the sandbox")  # never run the scanner twice

    sys.addaudithook(hook)
    scanned = 0
    for path in hostile:
        state["current"] = path.read_bytes()
        state["current_path"] = path
        state["active"] = True
        try:
            scan_path(path)
        finally:
            state["active"] = False
        scanned += 1
    violations = state["violations"] + [tuple(v) for v in child_log.items()]
    probe_errors = _probes(state, child_log) if sandbox.available() else []
    print(json.dumps({"scanned": scanned, "violations": violations, "probes": probe_errors}))
    if probe_errors:
        print("audit probes failed: " + "; ".join(probe_errors), file=sys.stderr)
        return 1
    return 0


def _probes(state: dict, child_log: ChildLog) -> list[str]:
    """The hook is live in sandbox children (exec, spawn and shell are caught and blocked there) and a
    fork from anywhere but scanner/sandbox.py is caught in the parent."""
    from scanner.formats.hdf5 import reader as hdf5

    errors: list[str] = []
    before = len(child_log.items())

    def attempts(_src: object, _ctx: object) -> object:
        for attempt in (lambda: os.execv(sys.executable, [sys.executable, "-c", "pass"]),
                        lambda: os.posix_spawn("/bin/true", ["true"], {}),
                        lambda: os.system("true")):
            try:
                attempt()
            except PermissionError:
                pass
        return hdf5.WalkResult((), 0, ())

    real_walk = hdf5.walk
    hdf5.walk = attempts  # type: ignore[assignment]
    state["current"], state["current_path"], state["active"] = b"", "probe", True
    try:
        scan_path(FIXTURES / "benign" / "keras" / "sequential_dense.h5")
    finally:
        state["active"] = False
        hdf5.walk = real_walk  # type: ignore[assignment]
    seen = {item[0] for item in child_log.items()[before:]}
    for event in ("os.exec", "os.posix_spawn", "os.system"):
        if event not in seen:
            errors.append(f"{event} in a sandbox child was not caught (saw {sorted(seen)})")
    n = len(state["violations"])
    state["active"] = True
    try:
        os.fork()
        errors.append("a fork outside the sandbox was not blocked")
    except PermissionError:
        pass
    finally:
        state["active"] = False
    if [v[0] for v in state["violations"][n:]] != ["os.fork"]:
        errors.append("a fork outside the sandbox was not recorded")
    del state["violations"][n:]
    return errors


if __name__ == "__main__":
    sys.exit(main())
