"""Run by test_inventory.py in a fresh interpreter: `inventory` over every hostile fixture under the audit
hook of audit_scan.py (no exec, spawn, network, deserializer, or import of a name found in the file; the
HDF5 attribute read forks through scanner/sandbox.py only)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from audit_scan import (  # noqa: E402
    FORBIDDEN_EVENTS,
    SANDBOX_EVENTS,
    ChildLog,
    _from_sandbox,
    _inside_import,
    _is_module_import,
)

from conftest import FIXTURES, load_manifests  # noqa: E402
from scanner.inventory.collect import collect  # noqa: E402


def main() -> int:
    entries = load_manifests()
    for e in entries:
        if e["kind"] == "benign":
            collect(FIXTURES / e["path"])
    hostile = [FIXTURES / e["path"] for e in entries if e["kind"] == "hostile"]
    state = {"active": False, "current": b"", "path": "", "violations": [], "parent": os.getpid()}
    child_log = ChildLog()

    def violation(event: str, args: tuple) -> tuple[str, str] | None:
        if event in ("exec", "compile") and _is_module_import(event, args):
            return None
        if event == "marshal.loads" and _inside_import():
            return None
        if event in SANDBOX_EVENTS and os.getpid() == state["parent"] and _from_sandbox():
            return None
        if event in FORBIDDEN_EVENTS:
            return (event, repr(args)[:200])
        if event == "import" and args[0] and args[0] not in sys.modules and args[0].encode() in state["current"]:
            return (event, args[0])
        return None

    def hook(event: str, args: tuple) -> None:
        if not state["active"] or (found := violation(event, args)) is None:
            return
        if os.getpid() != state["parent"]:
            child_log.add([*found, str(state["path"])])
            raise PermissionError(f"audit: {event} in a sandbox child")
        state["violations"].append([*found, str(state["path"])])
        if event in ("os.fork", "os.forkpty"):
            raise PermissionError(f"audit: {event} outside the sandbox")

    sys.addaudithook(hook)
    n = 0
    for path in hostile:
        state["current"], state["path"], state["active"] = path.read_bytes(), path, True
        try:
            collect(path)
        finally:
            state["active"] = False
        n += 1
    print(json.dumps({"collected": n, "violations": state["violations"] + child_log.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
