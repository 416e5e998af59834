"""Run by test_no_execution.py in a fresh interpreter: scan fixtures under an audit hook.

Warm-up scans (benign fixtures) load every module the scanner legitimately needs; then a hook is installed
that fails on code execution, process spawning, network, native loading, deserializers, and on importing
any new module whose name appears in the bytes being scanned.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from conftest import FIXTURES, load_manifests, scan_path  # noqa: E402

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
    state = {"active": False, "current": b"", "violations": []}

    def hook(event: str, args: tuple) -> None:
        if not state["active"]:
            return
        if event in ("exec", "compile") and _is_module_import(event, args):
            return  # the scanner importing its own or a library's module from disk
        if event == "marshal.loads" and _inside_import():
            return  # a library module loaded from its .pyc
        if event in FORBIDDEN_EVENTS:
            state["violations"].append((event, repr(args)[:200]))
        elif event == "import":
            name = args[0]
            if name and name not in sys.modules and name.encode() in state["current"]:
                state["violations"].append((event, name))

    sys.addaudithook(hook)
    scanned = 0
    for path in hostile:
        state["current"] = path.read_bytes()
        state["active"] = True
        try:
            scan_path(path)
        finally:
            state["active"] = False
        scanned += 1
    print(json.dumps({"scanned": scanned, "violations": state["violations"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
