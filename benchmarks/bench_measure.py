"""Run one command and measure it: wall time, peak resident memory, exit code, captured output.

Peak memory comes from GNU time (`/usr/bin/time -f %M`) when it is installed, else from wait4. The detour
matters: Linux carries a process's peak RSS across fork and exec, so a child forked straight from a large
Python parent reports at least the parent's size. GNU time is a small C program, so what it reports is the
command's own peak (and that of the children it waited for)."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

GNU_TIME = "/usr/bin/time"


@dataclass(frozen=True)
class Measured:
    cmd: tuple[str, ...]
    returncode: int
    wall_s: float
    peak_rss_mb: float
    stdout: str
    stderr: str
    timed_out: bool = False


def run_measured(cmd: list[str], *, env: dict[str, str] | None = None, cwd: Path | None = None,
                 timeout: float = 3600.0, workdir: Path | None = None) -> Measured:
    """Spawn `cmd` in its own process group; outputs go to files (no pipe deadlocks on big outputs)."""
    workdir = workdir or Path(os.environ.get("TMPDIR", "/tmp"))
    workdir.mkdir(parents=True, exist_ok=True)
    out_path = workdir / f"measure-{os.getpid()}-{time.monotonic_ns()}.out"
    err_path = out_path.with_suffix(".err")
    time_path = out_path.with_suffix(".time")
    if os.access(GNU_TIME, os.X_OK):
        cmd = [GNU_TIME, "-f", "%M", "-o", str(time_path), *cmd]
    timed_out = threading.Event()
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env, cwd=cwd,
                                start_new_session=True)

        def kill() -> None:
            timed_out.set()
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

        timer = threading.Timer(timeout, kill)
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
        wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)  # tell Popen the child is reaped
    stdout = out_path.read_text(encoding="utf-8", errors="replace")
    stderr = err_path.read_text(encoding="utf-8", errors="replace")
    peak_kib = usage.ru_maxrss  # Linux reports KiB
    if time_path.exists():
        lines = [ln for ln in time_path.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
        if lines and lines[-1].strip().isdigit():
            peak_kib = int(lines[-1])
    for p in (out_path, err_path, time_path):
        p.unlink(missing_ok=True)
    return Measured(tuple(cmd), proc.returncode, wall, peak_kib / 1024.0, stdout, stderr, timed_out.is_set())


def replace_section(path: Path, begin: str, end: str, section: str) -> None:
    """Write `section` (which starts with `begin` and ends with `end`) into path, replacing the old one."""
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmark results\n"
    if begin in text and end in text:
        pre, rest = text.split(begin, 1)
        _, post = rest.split(end, 1)
        text = pre + section + post
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(text, encoding="utf-8")
