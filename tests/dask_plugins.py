"""A Dask worker plugin for tests: the first worker to start its N-th scan task dies on the spot (os._exit),
exactly once per marker file, with the task still running — what an OOM kill or a lost node does."""

from __future__ import annotations

import os

from distributed import WorkerPlugin


class KillOnce(WorkerPlugin):
    name = "modelseal-test-kill-once"

    def __init__(self, marker: str, after: int) -> None:
        self.marker = marker
        self.after = after
        self.started = 0

    def transition(self, key, start, finish, **kwargs):  # type: ignore[no-untyped-def]
        if finish != "executing" or not str(key).startswith("modelseal-scan"):
            return
        self.started += 1
        if self.started < self.after:
            return
        try:
            fd = os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        except FileExistsError:
            return
        os.write(fd, f"{os.getpid()} {key}\n".encode())
        os.close(fd)
        os._exit(17)
