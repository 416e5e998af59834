"""Store-wide scans on Dask (`modelseal scan --cluster local:N | tcp://scheduler:8786`).

Each file is one Dask task running the same `batch.Worker` code as `--jobs`; the largest files go first
(task priority = size), results land in the parent as they finish (`as_completed`) and go through the same
`land` callback as a local run (jsonl streaming, progress, the cache writer). A worker that dies takes its
running tasks with it; the scheduler reruns them elsewhere, and the parent keeps the first result per file,
so nothing is lost or doubled. A file whose task keeps killing workers (Dask's `allowed-failures`) is
reported as SCAN-INTERNAL-ERROR, as `--jobs` does for a file that kills its process: fail closed.

The workers must run the same scanner code as the client (checked by fingerprint before any work) and reach
the files: a shared path for local files, the object store for URLs (credentials from each worker's own
environment). dask/distributed are the optional `.[dask]` extra, imported only here.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterator
from typing import Any

from scanner.findings import FileReport, Finding, Location, Severity
from scanner.remote import RemoteError
from scanner.rules import Policy, RuleSet

MAX_IN_FLIGHT_PER_WORKER = 8  # bounded look-ahead (in tasks): the client holds no future per file of the store
CHUNK_FILES = 32  # small files per task
CHUNK_BYTES = 64 << 20  # a task's files together (a bigger file is a task of its own)

# per worker thread (`dask worker --nthreads N` runs tasks in threads; a Worker's cache connection and outbox
# are not shared): the Worker built once from the scattered rule set and policy, keyed by the run's token
_LOCAL = threading.local()
_TOKENS: set[str] = set()  # runs seen by this process (tests check both workers took part)


def _worker_for(setup: tuple[Any, ...]) -> Any:
    from scanner.batch import Worker
    from scanner.rules import RuleSet as _RuleSet

    token, docs, digest, policy, cache, hash_files = setup
    if getattr(_LOCAL, "token", None) != token:
        _LOCAL.worker = Worker(_RuleSet(docs, digest), policy, cache, hash_files)
        _LOCAL.token = token
        _TOKENS.add(token)
    return _LOCAL.worker


def _scan_task(setup: tuple[Any, ...], chunk: list[tuple[int, Any]]) -> tuple[list[tuple[int, FileReport]], list[Any]]:
    return _worker_for(setup).scan_chunk(chunk)  # type: ignore[no-any-return]


def _fingerprint() -> str:
    from scanner.batch import scanner_fingerprint

    return scanner_fingerprint()


def _size(entry: Any) -> int:
    size = getattr(entry, "size", None)
    if isinstance(size, int):
        return size
    try:
        return int(entry.path.stat().st_size)
    except (OSError, AttributeError):
        return 0


def connect(spec: str) -> tuple[Any, Any]:
    """(client, cluster to close or None) for `local:N` or a scheduler address."""
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError:
        raise RemoteError("--cluster needs the optional extra: pip install 'modelseal[dask]'") from None
    if spec.startswith("local:") or spec == "local":
        n_text = spec.partition(":")[2] or str(os.cpu_count() or 1)
        if not n_text.isdigit() or int(n_text) < 1:
            raise RemoteError(f"--cluster local:N wants a number of workers, got {spec!r}")
        cluster = LocalCluster(n_workers=int(n_text), threads_per_worker=1, processes=True,
                               dashboard_address=None, silence_logs=logging.ERROR)
        return Client(cluster), cluster
    if "://" not in spec:
        raise RemoteError(f"--cluster wants local:N or a scheduler address such as tcp://host:8786, got {spec!r}")
    try:
        return Client(spec, timeout=30), None
    except (OSError, TimeoutError) as e:
        raise RemoteError(f"cannot reach the Dask scheduler {spec}: {e}") from None


def run_on_cluster(spec: str | Any, entries: list[tuple[int, Any]], rules: RuleSet, policy: Policy, cache: Any,
                   digest: bool, land: Callable[[list[tuple[int, FileReport]], list[Any]], None]) -> None:
    """Scan `entries` (walk position, entry) on a cluster; `spec` is a --cluster string or a dask Client."""
    if isinstance(spec, str):
        client, cluster = connect(spec)
    else:
        client, cluster = spec, None
    try:
        _run(client, entries, rules, policy, cache, digest, land)
    finally:
        if cluster is not None:
            client.close()
            cluster.close()


def _run(client: Any, entries: list[tuple[int, Any]], rules: RuleSet, policy: Policy, cache: Any, digest: bool,
         land: Callable[[list[tuple[int, FileReport]], list[Any]], None]) -> None:
    from dask.distributed import as_completed

    mine = _fingerprint()
    theirs = {fp for fp in client.run(_fingerprint).values()}
    if theirs - {mine}:
        raise RemoteError(f"the Dask workers run other scanner code ({', '.join(sorted(theirs))}) than this client "
                          f"({mine}); install the same modelseal on every worker")
    token = f"{mine}:{rules.digest}:{os.getpid()}:{id(entries)}"
    setup = client.scatter((token, rules.docs, rules.digest, policy, cache, digest), broadcast=True, hash=False)
    order = sorted(entries, key=lambda item: -_size(item[1]))  # largest first: the tail of the run stays short
    workers = max(1, len(client.scheduler_info().get("workers", {})))
    window = workers * MAX_IN_FLIGHT_PER_WORKER
    landed: set[int] = set()
    by_future: dict[Any, list[tuple[int, Any]]] = {}
    tasks = 0

    def submit(chunk: list[tuple[int, Any]]) -> Any:
        nonlocal tasks
        tasks += 1
        fut = client.submit(_scan_task, setup, chunk, key=f"modelseal-scan-{token}-{tasks}",
                            priority=max(_size(e) for _, e in chunk), retries=2, pure=False)
        by_future[fut] = chunk
        return fut

    pending = iter(_chunks(order))
    queue = as_completed([submit(chunk) for _, chunk in zip(range(window), pending, strict=False)])
    for fut in queue:
        chunk = by_future.pop(fut)
        try:
            results, new_entries = fut.result()
        except Exception as e:  # noqa: BLE001 - KilledWorker, a worker-side crash
            if len(chunk) > 1:  # rerun the files one by one: only the one that fails is reported failed
                for item in chunk:
                    queue.add(submit([item]))
                fut.release()
                continue
            results, new_entries = [(chunk[0][0], _failed(chunk[0][1], rules, policy, e))], []
        fut.release()
        fresh = [(i, fr) for i, fr in results if i not in landed]  # first result per file wins
        landed.update(i for i, _ in fresh)
        if fresh:
            land(fresh, new_entries)
        nxt = next(pending, None)
        if nxt is not None:
            queue.add(submit(nxt))


def _chunks(order: list[tuple[int, Any]]) -> Iterator[list[tuple[int, Any]]]:
    """Small files travel in groups (one task per file costs the scheduler more than scanning it); a big
    file is a task of its own, so the largest-first order still spreads the heavy work."""
    chunk: list[tuple[int, Any]] = []
    weight = 0
    for item in order:
        size = _size(item[1])
        if chunk and (len(chunk) >= CHUNK_FILES or weight + size > CHUNK_BYTES):
            yield chunk
            chunk, weight = [], 0
        chunk.append(item)
        weight += size
    if chunk:
        yield chunk


def _failed(entry: Any, rules: RuleSet, policy: Policy, error: BaseException) -> FileReport:
    meta = rules.meta("SCAN-INTERNAL-ERROR")
    sev = policy.severity_overrides.get("SCAN-INTERNAL-ERROR", meta.severity if meta else Severity.HIGH)
    what = type(error).__name__
    f = Finding("SCAN-INTERNAL-ERROR", sev, f"the cluster could not scan this file ({what})", Location(),
                str(error)[:300], meta.reference if meta else None)
    return FileReport(entry.display, _size(entry) or None, None, "unknown", (*entry.findings, f))
