"""Run one function in a forked child with a deadline, a memory cap and a pipe of bytes as the only way back.

For native libraries that are not hardened against hostile files (the HDF5 C library has been made to spin
forever and can crash): whatever the file does to the child, the parent gets bytes or an outcome it can
report. The channel carries bytes only; callers encode data (JSON), never objects, so a child corrupted by
the file cannot hand the parent anything but text to validate.
"""

from __future__ import annotations

import gc
import os
import select
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import NoReturn

_READ_CHUNK = 1 << 20
EXIT_ERROR = 70        # the work raised
EXIT_NO_MEMORY = 71    # the work raised MemoryError (the address-space cap was hit in Python)


@dataclass(frozen=True)
class Outcome:
    """`data` when the child exited 0 within the bounds; otherwise `problem` names what went wrong."""

    data: bytes | None
    problem: str | None = None   # timeout | signal | exit | oversized | spawn
    detail: str = ""


def available() -> bool:
    return hasattr(os, "fork")


def run(work: Callable[[], bytes], *, seconds: float, max_output: int, memory: int) -> Outcome:
    """Call `work()` in a forked child and return what it produced. Never raises for what the child does."""
    r, w = os.pipe()
    try:
        pid = os.fork()
    except OSError as e:
        os.close(r)
        os.close(w)
        return Outcome(None, "spawn", f"fork failed: {e}")
    if pid == 0:
        _child(r, w, work, memory)
    os.close(w)
    try:
        return _parent(pid, r, seconds, max_output)
    finally:
        os.close(r)


# -- child ------------------------------------------------------------------------------------------------

def _child(r: int, w: int, work: Callable[[], bytes], memory: int) -> NoReturn:
    code = EXIT_ERROR
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; it kills us
        # inherited file objects must not be finalized here: their fds are closed below and reused
        gc.disable()
        os.close(r)
        w = _isolate_fds(w)
        _cap_resources(memory)
        _write_all(w, work())
        code = 0
    except MemoryError:
        code = EXIT_NO_MEMORY
    except BaseException:  # noqa: BLE001 - nothing may escape into the parent's code running in this copy
        code = EXIT_ERROR
    finally:
        os._exit(code)


def _isolate_fds(w: int) -> int:
    """Standard streams to /dev/null, every other inherited descriptor closed but the result pipe."""
    if w < 3:
        import fcntl

        w = fcntl.fcntl(w, fcntl.F_DUPFD, 3)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        if devnull != fd:
            os.dup2(devnull, fd)
    try:
        max_fd = int(os.sysconf("SC_OPEN_MAX"))
    except (AttributeError, OSError, ValueError):
        max_fd = 65536
    os.closerange(3, w)
    os.closerange(w + 1, max(max_fd, w + 1))
    return w


def _cap_resources(memory: int) -> None:
    try:
        import resource
    except ImportError:
        return
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))   # a crash must not write a core file
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))  # nor anything else: the child only reads
    current = _address_space()
    if current is None:
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = current + memory
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    if soft == resource.RLIM_INFINITY or cap < soft:
        resource.setrlimit(resource.RLIMIT_AS, (cap, hard))


def _address_space() -> int | None:
    """Bytes of address space mapped now (the child starts as a copy of a possibly large parent)."""
    try:
        with open("/proc/self/statm", "rb") as fh:
            pages = int(fh.read().split()[0])
        return pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


# -- parent -----------------------------------------------------------------------------------------------

def _parent(pid: int, r: int, seconds: float, max_output: int) -> Outcome:
    deadline = time.monotonic() + seconds
    pidfd = _pidfd(pid)
    reaped = False
    try:
        chunks: list[bytes] = []
        total = 0
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return Outcome(None, "timeout", f"no result within {seconds} s")
            ready, _, _ = select.select([r], [], [], left)
            if not ready:
                continue
            block = os.read(r, _READ_CHUNK)
            if not block:
                break
            total += len(block)
            if total > max_output:
                return Outcome(None, "oversized", f"result larger than {max_output} bytes")
            chunks.append(block)
        status = _wait(pid, pidfd, deadline)
        if status is None:
            return Outcome(None, "timeout", f"child did not exit within {seconds} s")
        reaped = True
        code = os.waitstatus_to_exitcode(status)
        if code < 0:
            return Outcome(None, "signal", _signal_name(-code))
        if code != 0:
            return Outcome(None, "exit", f"exit status {code}")
        return Outcome(b"".join(chunks))
    finally:
        if pidfd is not None:
            os.close(pidfd)
        if not reaped:
            _kill(pid)


def _pidfd(pid: int) -> int | None:
    opener = getattr(os, "pidfd_open", None)
    if opener is None:
        return None
    try:
        return int(opener(pid))
    except OSError:
        return None


def _wait(pid: int, pidfd: int | None, deadline: float) -> int | None:
    """The child's wait status, or None if it is still running at the deadline."""
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        if pidfd is not None:
            select.select([pidfd], [], [], left)
        else:
            select.select([], [], [], min(left, 0.01))  # no pidfd: poll the exit (rare: old kernels)


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


def _signal_name(n: int) -> str:
    try:
        return signal.Signals(n).name
    except ValueError:
        return f"signal {n}"
