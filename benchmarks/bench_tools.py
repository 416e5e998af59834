"""The scanners compared, each as: how to run it on a folder, and how to read its output into a per-file
outcome (detected / clean / error). Peers live in their own virtual environment (benchmarks/.peers-venv)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
PEERS_VENV = HERE / ".peers-venv"
# venv (under PEERS_VENV) -> packages. modelscan 0.8.8 reads .npy through numpy internals that numpy 2 removed,
# while ModelAudit 0.2.x on Python 3.11 requires numpy>=2.4: modelscan gets its own environment with numpy 1.
PEER_ENVS: dict[str, tuple[str, ...]] = {
    ".": ("picklescan[7z]", "modelaudit", "matplotlib"),
    "modelscan-env": ("modelscan", "numpy<2"),
}
PEER_HOME = {"picklescan": ".", "modelaudit": ".", "modelscan": "modelscan-env"}


# ModelAudit (modelaudit/telemetry.py) honours PROMPTFOO_DISABLE_TELEMETRY, NO_ANALYTICS, CI and IS_TESTING;
# DO_NOT_TRACK is set too for anything else that follows the convention.
QUIET_ENV = {"PROMPTFOO_DISABLE_TELEMETRY": "1", "NO_ANALYTICS": "1", "DO_NOT_TRACK": "1",
             "MODELAUDIT_TELEMETRY_DISABLED": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}

DETECTED, CLEAN, ERROR = "detected", "clean", "error"


@dataclass(frozen=True)
class Tool:
    name: str
    command: Callable[[Path, Path], list[str]]          # (target folder, output file) -> argv
    parse: Callable[[str, Path, Path, list[Path]], dict[Path, str]]  # (stdout, out file, root, files)
    version: str = ""
    # (stdout, stderr, out file) -> did the run finish its report (a crash mid-folder leaves a partial one)
    complete: Callable[[str, str, Path], bool] = lambda _o, _e, out: True


def peers_bin(name: str) -> Path:
    return (PEERS_VENV / PEER_HOME.get(name, ".")).resolve() / "bin" / name


def install_peers(log: Callable[[str], None] = print) -> None:
    """Create the peers' virtual environments under benchmarks/.peers-venv (never the project's env)."""
    for sub, packages in PEER_ENVS.items():
        env = (PEERS_VENV / sub).resolve()
        py = env / "bin" / "python"
        if not py.exists():
            log(f"creating {env}")
            subprocess.run([sys.executable, "-m", "venv", str(env)], check=True)
        wanted = [p for p in packages if not _peer_installed(py, p)]
        if wanted:
            log(f"installing {', '.join(wanted)} into {env}")
            subprocess.run([str(py), "-m", "pip", "install", "-q", *packages], check=True)


def _peer_installed(py: Path, requirement: str) -> bool:
    name = re.split(r"[<>=!~ \[]", requirement, maxsplit=1)[0]
    if requirement.endswith("[7z]"):
        name = "py7zr"  # the extra picklescan needs to open .7z archives instead of aborting the run
    r = subprocess.run([str(py), "-c", f"import importlib.metadata as m; print(m.version({name!r}))"],
                       capture_output=True, text=True, check=False)
    if r.returncode != 0:
        return False
    return r.stdout.startswith("1.") if requirement == "numpy<2" else True


def _version(py: Path, package: str) -> str:
    if not py.exists():
        return "?"
    r = subprocess.run([str(py), "-c", f"import importlib.metadata as m; print(m.version({package!r}))"],
                       capture_output=True, text=True, check=False)
    return r.stdout.strip() or "?"


def match_path(reported: str, files: Iterable[Path], root: Path) -> Path | None:
    """Map a path a tool printed (absolute or relative to the root, maybe with ':member' or ' (pos N)')
    to the labelled file it is about: the longest labelled path it starts with."""
    text = reported.strip()
    candidates = [text]
    if not os.path.isabs(text):
        candidates.append(os.path.normpath(str(root / text)) if text else str(root))
    best: Path | None = None
    for cand in candidates:
        for f in files:
            s = str(f)
            if cand == s or (len(cand) > len(s) and cand.startswith(s) and cand[len(s)] in ":! ("):
                if best is None or len(str(f)) > len(str(best)):
                    best = f
    return best


def _merge(out: dict[Path, str], path: Path | None, status: str) -> None:
    if path is None:
        return
    rank = {CLEAN: 0, ERROR: 1, DETECTED: 2}
    if rank[status] > rank.get(out.get(path, CLEAN), 0):
        out[path] = status


# -- modelseal --------------------------------------------------------------------------------------------

def modelseal_tool() -> Tool:
    exe = shutil.which("modelseal", path=str(Path(sys.executable).parent)) or shutil.which("modelseal")
    base = [exe] if exe else [sys.executable, "-m", "scanner.cli"]

    def command(target: Path, out: Path) -> list[str]:
        return [*base, "scan", str(target), "--format", "json", "--output", str(out)]

    def parse(stdout: str, out: Path, root: Path, files: list[Path]) -> dict[Path, str]:
        doc = json.loads(out.read_text(encoding="utf-8"))
        result: dict[Path, str] = {}
        for fr in doc.get("files", []):
            path = match_path(os.path.abspath(fr["path"]), files, root)
            verdict = fr.get("verdict")
            status = DETECTED if verdict in ("malicious", "suspicious") else ERROR if verdict == "error" else CLEAN
            _merge(result, path, status)
        return result

    from scanner import __version__

    return Tool("modelseal", command, parse, __version__, complete=lambda _o, _e, out: out.exists())


# -- ModelAudit -------------------------------------------------------------------------------------------

_POS = re.compile(r"\s+\(pos \d+\)$")


def modelaudit_tool() -> Tool:
    def command(target: Path, out: Path) -> list[str]:
        return [str(peers_bin("modelaudit")), "scan", str(target), "--format", "json", "--output", str(out),
                "--no-cache", "--quiet"]

    def parse(stdout: str, out: Path, root: Path, files: list[Path]) -> dict[Path, str]:
        doc = json.loads(out.read_text(encoding="utf-8"))
        result: dict[Path, str] = {}
        for issue in doc.get("issues", []):
            sev = str(issue.get("severity", "")).lower()
            loc = _POS.sub("", str(issue.get("location") or ""))
            path = match_path(loc, files, root)
            if sev in ("critical", "warning", "high", "medium"):
                _merge(result, path, DETECTED)
            elif "error" in str(issue.get("type", "")).lower():
                _merge(result, path, ERROR)
        return result

    return Tool("modelaudit", command, parse, _version(peers_bin("python"), "modelaudit"),
                complete=lambda _o, _e, out: out.exists())


# -- modelscan ----------------------------------------------------------------------------------------------

def modelscan_tool() -> Tool:
    def command(target: Path, out: Path) -> list[str]:
        return [str(peers_bin("modelscan")), "-p", str(target), "-r", "json", "-o", str(out)]

    def parse(stdout: str, out: Path, root: Path, files: list[Path]) -> dict[Path, str]:
        doc = json.loads(out.read_text(encoding="utf-8"))
        result: dict[Path, str] = {}
        for issue in doc.get("issues", []):
            _merge(result, match_path(str(issue.get("source", "")), files, root), DETECTED)
        for err in doc.get("errors", []):
            if "source" in err:
                _merge(result, match_path(str(err["source"]), files, root), ERROR)
        return result

    return Tool("modelscan", command, parse, _version(peers_bin("modelscan").parent / "python", "modelscan"),
                complete=lambda _o, _e, out: out.exists())


# -- picklescan ---------------------------------------------------------------------------------------------

_PS_FOUND = re.compile(r"^(?P<path>.+?): dangerous import '.*' FOUND")
_PS_ERROR = re.compile(r"^ERROR: parsing pickle in (?P<path>.+?): ")


def picklescan_tool() -> Tool:
    def command(target: Path, out: Path) -> list[str]:
        return [str(peers_bin("picklescan")), "-p", str(target)]

    def parse(stdout: str, out: Path, root: Path, files: list[Path]) -> dict[Path, str]:
        result: dict[Path, str] = {}
        for line in stdout.splitlines():
            if m := _PS_FOUND.match(line):
                _merge(result, match_path(m["path"], files, root), DETECTED)
            elif m := _PS_ERROR.match(line):
                _merge(result, match_path(m["path"], files, root), ERROR)
        return result

    return Tool("picklescan", command, parse, _version(peers_bin("python"), "picklescan"),
                complete=lambda out, _e, _f: "SCAN SUMMARY" in out)


PEERS: dict[str, Callable[[], Tool]] = {"picklescan": picklescan_tool, "modelscan": modelscan_tool,
                                        "modelaudit": modelaudit_tool}


def available_tools(names: list[str], log: Callable[[str], None] = print) -> list[Tool]:
    tools: list[Tool] = []
    for name in names:
        if name == "modelseal":
            tools.append(modelseal_tool())
        elif name in PEERS:
            if peers_bin(name).exists():
                tools.append(PEERS[name]())
            else:
                log(f"skipping {name}: not installed in {PEERS_VENV} (run with --install-peers)")
        else:
            raise SystemExit(f"unknown tool {name!r}; known: modelseal, {', '.join(PEERS)}")
    return tools


def tool_env(home: Path) -> dict[str, str]:
    """The peers see a private HOME (ModelAudit writes ~/.modelaudit) and every telemetry opt-out."""
    home.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **QUIET_ENV, "HOME": str(home)}
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # measure installs as users have them: with bytecode caches
    return env
