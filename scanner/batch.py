"""Store-wide scans: a process pool over files, results streamed as they land, and a result cache.

`scanner.engine.scan()` stays the simple serial API; this module adds, for `modelseal scan`:
- `--jobs N`: files are scanned by N worker processes started once, each loading the rule set once
  (initializer); work goes out in small chunks so IPC stays cheap and results still stream.
- streaming: `on_file` is called in the parent for every file as soon as its chunk is back, so a
  crash or Ctrl-C loses nothing already reported.
- `--cache DIR`: results keyed by the file's sha256 + its name + scanner code + rules digest + policy.

Cache trust model: the cache must never make a file look cleaner than a fresh scan. So an entry is
written only for a complete result of unchanged content (hashed before and after the scan; the same
inode with the same ctime after the scan as when hashed, and not changed just before: an A-B-A swap during
the scan is seen; no analyzer crash, no format whose verdict depends on files next to it), is written
atomically (one SQLite transaction), and is authenticated with an HMAC whose key never lives in the cache directory
(`MODELSEAL_CACHE_KEY`, or a random per-user key file under $XDG_STATE_HOME/modelseal). An entry that fails any check — MAC, key fields, schema,
file size — is ignored and the file rescanned. A poisoned cache (restored from an untrusted CI artifact,
edited by another user) therefore costs a rescan, never a pass. The directory is created private (0700).
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from scanner import __version__
from scanner.findings import FileReport, Finding, Location, Report, Severity
from scanner.record import asdict, record
from scanner.rules import Policy, RuleSet, load_ruleset
from scanner.walk import WalkEntry, walk_paths

if TYPE_CHECKING:  # the process pool is imported when one is started: a one-file scan never pays for it
    import sqlite3  # so is the cache's machinery (sqlite3, hmac, secrets) when a cache is named
    from concurrent.futures import Future, ProcessPoolExecutor

CACHE_SCHEMA = "modelseal-cache/v1"
CACHE_DB = "results-v1.sqlite"
MAX_CACHE_ENTRY_BYTES = 64 * 1024 * 1024
# Verdicts of these formats depend on files beside the model (ONNX external data), so a content-keyed
# result could go stale without the file changing: never cached.
CONTEXT_DEPENDENT_FORMATS = frozenset({"onnx"})
# A crash may be transient (memory); a rescan could find worse, so such results are not cached.
UNCACHEABLE_RULES = frozenset({"SCAN-INTERNAL-ERROR"})

OnFile = Callable[[FileReport], None]
Chunk = list[tuple[int, WalkEntry]]  # (position in the walk, entry)
Landed = list[tuple[int, FileReport]]
CacheEntry = tuple[str, str, int, str, tuple[Finding, ...]]  # sha256, name, size, format, findings


def default_jobs() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


# -- fingerprints -------------------------------------------------------------------------------------

def scanner_fingerprint() -> str:
    """Version plus a digest of the scanner's own sources: a patched analyzer invalidates old results
    even when the version string did not change."""
    h = hashlib.sha256(__version__.encode())
    pkg = Path(__file__).resolve().parent
    for path in sorted(pkg.rglob("*.py")):
        h.update(path.relative_to(pkg).as_posix().encode() + b"\0")
        try:
            h.update(path.read_bytes())
        except OSError:
            h.update(b"<unreadable>")
        h.update(b"\0")
    return f"{__version__}+{h.hexdigest()[:16]}"


def policy_fingerprint(policy: Policy) -> str:
    """Everything in the policy that can change findings (fail-on and ignored paths cannot)."""
    data = asdict(policy)
    data.pop("fail_on", None)
    data.pop("ignore_paths", None)
    text = json.dumps(data, sort_keys=True, default=str, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


# -- the cache ----------------------------------------------------------------------------------------

def cache_secret() -> bytes:
    """The HMAC key: `MODELSEAL_CACHE_KEY` (share it as a CI secret), else a per-user random key file."""
    env = os.environ.get("MODELSEAL_CACHE_KEY")
    if env:
        return hashlib.sha256(b"modelseal-cache-key\0" + env.encode()).digest()
    base = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state") / "modelseal"
    path = base / "cache.key"
    try:
        return _read_key(path)
    except FileNotFoundError:
        pass
    base.mkdir(parents=True, exist_ok=True, mode=0o700)
    import secrets

    key = secrets.token_bytes(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process won the race
        return _read_key(path)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key)
    return key


def _read_key(path: Path) -> bytes:
    key = path.read_bytes()
    if len(key) < 16:
        raise ValueError(f"cache key file {path} is too short")
    return key


@record(frozen=True)
class CacheSpec:
    """What a worker needs to use the cache (picklable)."""

    directory: Path
    secret: bytes
    scanner: str
    rules_digest: str
    policy: str


def open_cache(directory: Path, rules: RuleSet, policy: Policy, secret: bytes | None = None) -> CacheSpec:
    """Create the (private) cache directory and fix the key fields for one run; raises OSError/ValueError."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not directory.is_dir():
        raise ValueError("not a directory")
    return CacheSpec(directory, secret if secret is not None else cache_secret(), scanner_fingerprint(),
                     rules.digest, policy_fingerprint(policy))


class ResultCache:
    """Entries live in one SQLite file in the cache directory (one file per entry costs a file creation
    each, which dominates small scans); each value is the JSON `{"mac", "body"}` checked on every read."""

    def __init__(self, spec: CacheSpec) -> None:
        self.spec = spec
        self.db_path = spec.directory / CACHE_DB
        self._db: sqlite3.Connection | None = None

    def _conn(self) -> sqlite3.Connection:
        # opened lazily, so a connection is never shared across a fork
        if self._db is None:
            import sqlite3

            db = sqlite3.connect(self.db_path, timeout=60, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")  # workers read and write concurrently
            db.execute("PRAGMA synchronous=NORMAL")  # a lost entry only costs a rescan
            db.execute("CREATE TABLE IF NOT EXISTS results (key TEXT PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID")
            self._db = db
        return self._db

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def key(self, sha256: str, name: str) -> str:
        """The file's name is part of the key: names steer analysis (extension checks, sidecar configs)."""
        s = self.spec
        return hashlib.sha256("\0".join((CACHE_SCHEMA, sha256, name, s.scanner, s.rules_digest, s.policy))
                              .encode("utf-8", "surrogateescape")).hexdigest()

    def _mac(self, body_text: str) -> str:
        import hmac

        return hmac.new(self.spec.secret, body_text.encode(), hashlib.sha256).hexdigest()

    def get(self, sha256: str, name: str, size: int, rules: RuleSet) -> tuple[str, tuple[Finding, ...]] | None:
        """(format, findings) of a trusted entry for this content under this name, or None (scan afresh)."""
        import hmac
        import sqlite3

        from scanner.attest.strictjson import loads as strict_loads

        key = self.key(sha256, name)
        try:
            row = self._conn().execute("SELECT value FROM results WHERE key = ?", (key,)).fetchone()
        except sqlite3.Error:
            return None  # a damaged cache costs rescans, nothing else
        if row is None or not isinstance(row[0], (bytes, str)) or len(row[0]) > MAX_CACHE_ENTRY_BYTES:
            return None
        try:
            outer = strict_loads(row[0], "cache entry")
            body_text = outer["body"]
            if not isinstance(body_text, str) or not isinstance(outer.get("mac"), str):
                return None
            if not hmac.compare_digest(outer["mac"], self._mac(body_text)):
                return None
            body = strict_loads(body_text, "cache entry")
            expected = {"schema": CACHE_SCHEMA, "key": key, "sha256": sha256, "size": size,
                        "name": name.encode("utf-8", "surrogateescape").decode("utf-8", "replace"),
                        "scanner": self.spec.scanner, "rules_digest": self.spec.rules_digest,
                        "policy": self.spec.policy}
            if any(body.get(k) != v for k, v in expected.items()):
                return None
            fmt = body["format"]
            if not isinstance(fmt, str) or fmt in CONTEXT_DEPENDENT_FORMATS:
                return None
            findings = tuple(finding_from_dict(d, rules) for d in body["findings"])
        except (ValueError, KeyError, TypeError, AttributeError):
            return None
        return fmt, findings

    def _row(self, sha256: str, name: str, size: int, fmt: str, findings: Sequence[Finding]) -> tuple[str, bytes]:
        key = self.key(sha256, name)
        s = self.spec
        body = {"schema": CACHE_SCHEMA, "key": key, "sha256": sha256, "size": size, "scanner": s.scanner,
                "name": name.encode("utf-8", "surrogateescape").decode("utf-8", "replace"),
                "rules_digest": s.rules_digest, "policy": s.policy, "format": fmt,
                "findings": [f.to_dict() for f in findings]}
        body_text = json.dumps(body, sort_keys=True, separators=(",", ":"))
        return key, json.dumps({"mac": self._mac(body_text), "body": body_text}).encode()

    def put(self, sha256: str, name: str, size: int, fmt: str, findings: Sequence[Finding]) -> None:
        self.put_many([(sha256, name, size, fmt, tuple(findings))])

    def put_many(self, entries: Sequence[CacheEntry]) -> None:
        """Store results in one transaction: readers see the old entries or all the new ones."""
        if not entries:
            return
        import sqlite3

        rows = [self._row(*e) for e in entries]
        try:
            db = self._conn()
            db.execute("BEGIN IMMEDIATE")
            try:
                db.executemany("INSERT OR REPLACE INTO results (key, value) VALUES (?, ?)", rows)
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        except sqlite3.Error:
            pass  # a cache that cannot be written only costs speed


def _opt_int(v: object) -> int | None:
    if v is None:
        return None
    if not isinstance(v, int) or isinstance(v, bool):
        raise TypeError("expected an int")
    return v


def _opt_str(v: object) -> str | None:
    if v is not None and not isinstance(v, str):
        raise TypeError("expected a string")
    return v


def finding_from_dict(d: dict[str, Any], rules: RuleSet) -> Finding:
    """Strict inverse of `Finding.to_dict` (raises on anything unexpected)."""
    rule_id = d["rule_id"]
    if not isinstance(rule_id, str) or rules.meta(rule_id) is None:
        raise ValueError(f"unknown rule {rule_id!r}")
    message = d["message"]
    if not isinstance(message, str):
        raise TypeError("message")
    loc = d["location"]
    if not isinstance(loc, dict):
        raise TypeError("location")
    location = Location(_opt_str(loc["member"]), _opt_int(loc["offset"]), _opt_int(loc["opcode_index"]))
    return Finding(rule_id, Severity.parse(d["severity"]), message, location,
                   _opt_str(d["evidence"]), _opt_str(d["reference"]))


# -- the unit of work ---------------------------------------------------------------------------------

# A file changed this recently may change again within one timestamp tick without its ctime moving, so
# it is not cached (git's "racily clean" rule); older files' ctime moves on any write, rename or utime.
RACY_NS = 20_000_000  # above a 100 Hz kernel tick (10 ms)
COARSE_RACY_NS = 3_000_000_000


Snap = tuple[os.stat_result, "os.stat_result | None"]  # the file's status, and its symlink's (HF caches)
_SAME = ("st_dev", "st_ino", "st_size", "st_ctime_ns", "st_mtime_ns")


def _hash_and_stat(path: Path) -> tuple[str | None, Snap | None]:
    """sha256 of the file and its status read through the same descriptor. An in-tree symlink the walk
    kept (a Hugging Face snapshot link) is hashed as its target, the link's own status recorded too."""
    from scanner.attest.digest import hash_stream

    try:
        link = os.lstat(path) if os.path.islink(path) else None
        target = os.path.realpath(path) if link is not None else path
        fd = os.open(target, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0))
    except OSError:
        return None, None
    with os.fdopen(fd, "rb", buffering=0) as fh:
        st = os.fstat(fd)
        now = time.time_ns()
        sha, _ = hash_stream(fh)
    # a whole-millisecond ctime hints at a file system with coarse timestamps (1 s, 2 s): wait longer
    margin = RACY_NS if st.st_ctime_ns % 1_000_000 else COARSE_RACY_NS
    fresh = any(s.st_ctime_ns >= now - margin for s in (st, link) if s is not None)
    return sha, None if fresh else (st, link)


def _unchanged_since(path: Path, snap: Snap | None) -> bool:
    """The same inodes (link and file), untouched (ctime) since hashing: what was scanned by path is what
    was hashed, even if it was swapped away and back (A-B-A) during the scan."""
    if snap is None:
        return False
    st0, link0 = snap
    try:
        link = os.lstat(path) if link0 is not None else None
        st = os.stat(os.path.realpath(path) if link0 is not None else path, follow_symlinks=False)
    except OSError:
        return False
    if link0 is not None and (link is None or any(getattr(link, a) != getattr(link0, a) for a in _SAME)):
        return False
    return all(getattr(st, a) == getattr(st0, a) for a in _SAME)


class Worker:
    """Scans entries with one rule set and policy; one per process, built once. It only reads the cache:
    new entries collect in `outbox` and the parent writes them (one writer, no lock contention)."""

    def __init__(self, rules: RuleSet, policy: Policy, cache: CacheSpec | None, digest: bool = True) -> None:
        self.rules = rules
        self.policy = policy
        self.cache = ResultCache(cache) if cache is not None else None
        self.digest = digest
        self.outbox: list[CacheEntry] = []

    def scan(self, entry: WalkEntry) -> FileReport:
        from scanner.engine import scan_file

        if not isinstance(entry, WalkEntry):  # a remote file (scanner.remote): read by range
            return self._scan_remote(entry)
        if self.cache is None or entry.error is not None or not entry.scan:
            return scan_file(entry, self.rules, self.policy, digest=self.digest)
        try:
            size = entry.path.stat().st_size
        except OSError:
            return scan_file(entry, self.rules, self.policy, digest=self.digest)
        before, snap = _hash_and_stat(entry.path) if size <= self.policy.limits.max_file_bytes else (None, None)
        name = os.path.basename(entry.display)  # what the analyzers see as the name (Source.name)
        if before is not None:
            hit = self.cache.get(before, name, size, self.rules)
            if hit is not None:
                fmt, findings = hit
                return FileReport(entry.display, size, before, fmt, (*entry.findings, *findings))
        report = scan_file(entry, self.rules, self.policy, digest=True)
        if self._cacheable(report, before, size) and _unchanged_since(entry.path, snap):
            assert before is not None
            self.outbox.append((before, name, size, report.format, report.findings[len(entry.findings):]))
        return report

    def _scan_remote(self, entry: Any) -> FileReport:
        """Cached only with --digest: the file is then streamed once anyway, and the key is the sha256 of the
        very bytes scanned (a store's ETag is an MD5, which collides on demand; docs/scale.md)."""
        from scanner.remote import scan_remote

        cache = self.cache
        if cache is None or not self.digest or entry.error is not None or not entry.scan:
            return scan_remote(entry, self.rules, self.policy, digest=self.digest)
        hits: list[str] = []

        def lookup(sha: str, name: str, size: int) -> tuple[str, tuple[Finding, ...]] | None:
            hit = cache.get(sha, name, size, self.rules)
            if hit is not None:
                hits.append(sha)
            return hit

        report = scan_remote(entry, self.rules, self.policy, digest=True, cache=lookup)
        if not hits and report.size is not None and self._cacheable(report, report.sha256, report.size):
            name = posixpath.basename(entry.fs_path.rstrip("/"))  # what the analyzers saw as the name
            assert report.sha256 is not None
            self.outbox.append((report.sha256, name, report.size, report.format,
                                report.findings[len(entry.findings):]))
        return report

    def _cacheable(self, report: FileReport, before: str | None, size: int) -> bool:
        return (before is not None and report.sha256 == before and report.size == size
                and report.error is None and report.format not in CONTEXT_DEPENDENT_FORMATS
                and not any(f.rule_id in UNCACHEABLE_RULES for f in report.findings))

    def scan_chunk(self, chunk: Chunk) -> tuple[Landed, list[CacheEntry]]:
        results = [(i, self.scan(e)) for i, e in chunk]
        out, self.outbox = self.outbox, []
        return results, out


# One Worker per pool process, set by the initializer: the rule set is built once per process.
_PROCESS_WORKER: list[Worker] = []


def _init_process(docs: dict[str, Any], digest: str, policy: Policy, cache: CacheSpec | None,
                  hash_files: bool) -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    _PROCESS_WORKER[:] = [Worker(RuleSet(docs, digest), policy, cache, hash_files)]


def _run_chunk(chunk: Chunk) -> tuple[Landed, list[CacheEntry]]:
    return _PROCESS_WORKER[0].scan_chunk(chunk)


# -- driving a run ------------------------------------------------------------------------------------

def _chunks(items: list[tuple[int, WalkEntry]], size: int) -> Iterator[list[tuple[int, WalkEntry]]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def scan_batch(paths: Sequence[str | os.PathLike[str]], policy: Policy | None = None, rules: RuleSet | None = None,
               *, jobs: int | None = None, cache: CacheSpec | None = None, on_file: OnFile | None = None,
               progress: Progress | None = None, digest: bool = True,
               storage_options: dict[str, Any] | None = None, cluster: Any = None) -> Report:
    """Scan like `engine.scan`, on `jobs` processes, calling `on_file` as each result lands; `cache`
    comes from `open_cache`.

    The report lists files in walk order whatever the completion order, so it does not depend on `jobs`.
    """
    from scanner.engine import _now

    policy = policy or Policy()
    rules = rules or load_ruleset()
    started = _now()
    entries = list(enumerate(walk_targets(paths, policy, rules, storage_options)))
    jobs = min(jobs or default_jobs(), max(1, len(entries)))
    results: dict[int, FileReport] = {}
    store = ResultCache(cache) if cache is not None else None  # the only writer of the cache
    if progress is not None:
        progress.start(len(entries))

    def land(batch: Landed, new_entries: list[CacheEntry]) -> None:
        if store is not None:
            store.put_many(new_entries)
        for i, fr in batch:
            results[i] = fr
            if on_file is not None:
                on_file(fr)
            if progress is not None:
                progress.advance(fr.path, fr.size or 0)

    try:
        if cluster is not None:  # Dask: the same Worker per file on the cluster's processes (scanner.cluster)
            from scanner.cluster import run_on_cluster

            run_on_cluster(cluster, entries, rules, policy, cache, digest, land)
        elif jobs <= 1:
            worker = Worker(rules, policy, cache, digest)
            for item in entries:
                land(*worker.scan_chunk([item]))
        else:
            _run_pool(entries, jobs, rules, policy, cache, digest, land)
    finally:
        if progress is not None:
            progress.finish()
        if store is not None:
            store.close()
    files = tuple(results[i] for i in sorted(results))
    return Report(files, __version__, rules.digest, policy.fail_on, started, _now())


def _run_pool(entries: Chunk, jobs: int, rules: RuleSet, policy: Policy, cache: CacheSpec | None, digest: bool,
              land: Callable[[Landed, list[CacheEntry]], None]) -> None:
    initargs = (rules.docs, rules.digest, policy, cache, digest)
    todo = entries
    while todo:
        landed, crashed = _pool_round(todo, jobs, initargs, land)
        # the pool is gone: the files of the chunks that were in flight are rescanned one by one, so the one
        # that kills its worker is found and reported (fail closed); the rest of the store goes on in a new pool
        _isolate(crashed, initargs, rules, policy, land)
        finished = landed | {i for i, _ in crashed}
        todo = [item for item in todo if item[0] not in finished]


def _pool_round(entries: Chunk, jobs: int, initargs: tuple[Any, ...],
                land: Callable[[Landed, list[CacheEntry]], None]) -> tuple[set[int], Chunk]:
    """Scan until done or until a worker dies; returns the indices landed and the chunks lost in the crash."""
    # small chunks: IPC per file stays low and results still arrive in a steady stream
    size = max(1, min(16, len(entries) // (jobs * 8)))
    landed: set[int] = set()
    crashed: Chunk = []  # files of chunks whose worker died (a native parser crash, the OOM killer)
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    pending: dict[Future[tuple[Landed, list[CacheEntry]]], Chunk] = {}
    pool = ProcessPoolExecutor(max_workers=jobs, initializer=_init_process, initargs=initargs)

    def collect() -> None:
        done, _ = wait(set(pending), return_when=FIRST_COMPLETED)
        for fut in done:
            chunk = pending.pop(fut)
            try:
                results = fut.result()
            except BrokenProcessPool:
                crashed.extend(chunk)
                continue
            land(*results)
            landed.update(i for i, _ in results[0])

    try:
        for chunk in _chunks(entries, size):
            if crashed:
                break
            try:
                pending[pool.submit(_run_chunk, chunk)] = chunk
            except BrokenProcessPool:  # died before collect() saw it; this chunk waits for the next round
                break
            if len(pending) >= jobs * 4:  # bounded look-ahead: memory does not grow with the store
                collect()
        while pending:
            collect()
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    return landed, crashed


def _isolate(todo: Chunk, initargs: tuple[Any, ...], rules: RuleSet, policy: Policy,
             land: Callable[[Landed, list[CacheEntry]], None]) -> None:
    """One file at a time in a one-worker pool; a file whose worker dies gets a SCAN-INTERNAL-ERROR."""
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    pool: ProcessPoolExecutor | None = None
    try:
        for item in todo:
            if pool is None:
                pool = ProcessPoolExecutor(max_workers=1, initializer=_init_process, initargs=initargs)
            try:
                land(*pool.submit(_run_chunk, [item]).result())
            except BrokenProcessPool:
                pool.shutdown(wait=False)
                pool = None
                land([(item[0], _crash_report(item[1], rules, policy))], [])
    finally:
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)


def walk_targets(paths: Sequence[str | os.PathLike[str]], policy: Policy, rules: RuleSet,
                 storage_options: dict[str, Any] | None = None) -> Iterator[WalkEntry]:
    """`walk_paths`, except that URL arguments are listed through fsspec (scanner.remote, imported only then)."""
    for p in paths:
        url = None
        if ":/" in str(p):  # a URL, or one Path folded (`s3:/x`): only then is scanner.remote imported
            from scanner.remote import url_from_arg

            url = url_from_arg(p)
        if url is None:
            yield from walk_paths([Path(p)], policy, rules)
        else:
            from scanner.remote import walk_url

            yield from walk_url(url, policy, storage_options)  # type: ignore[misc]


def _crash_report(entry: WalkEntry, rules: RuleSet, policy: Policy) -> FileReport:
    meta = rules.meta("SCAN-INTERNAL-ERROR")
    sev = policy.severity_overrides.get("SCAN-INTERNAL-ERROR", meta.severity if meta else Severity.HIGH)
    f = Finding("SCAN-INTERNAL-ERROR", sev, "the scanner process died while analyzing this file", Location(),
                "worker process terminated abruptly", meta.reference if meta else None)
    try:
        size: int | None = entry.path.stat().st_size
    except (OSError, AttributeError):  # AttributeError: a remote entry
        size = getattr(entry, "size", None)
    return FileReport(entry.display, size, None, "unknown", (*entry.findings, f))


# -- streaming output and progress --------------------------------------------------------------------

class JsonlWriter:
    """`--format jsonl`: one object per file as it lands, flushed, then a summary object."""

    def __init__(self, out: TextIO) -> None:
        self.out = out

    def file(self, fr: FileReport) -> None:
        self.out.write(json.dumps({"type": "file", **fr.to_dict()}, separators=(",", ":")) + "\n")
        self.out.flush()

    def summary(self, report: Report) -> None:
        from scanner.output.json import SCHEMA

        obj = {"type": "summary", "schema": SCHEMA,
               "scanner": {"name": "modelseal", "version": report.scanner_version,
                           "rules_digest": report.rules_digest},
               "fail_on": report.fail_on.value, "verdict": report.verdict.value, "exit_code": report.exit_code(),
               "started_on": report.started_on, "finished_on": report.finished_on, "summary": report.summary()}
        self.out.write(json.dumps(obj, separators=(",", ":")) + "\n")
        self.out.flush()


class Progress:
    """A one-line progress bar on stderr; silent unless stderr is a terminal."""

    def __init__(self, stream: TextIO | None = None, enabled: bool | None = None, width: int = 30) -> None:
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.width = width
        self.total = 0
        self.done = 0
        self._last_len = 0
        self._last_draw = 0.0
        self.bytes = 0
        self._t0 = time.monotonic()

    def start(self, total: int) -> None:
        self.total = total
        self.done = 0
        self.bytes = 0
        self._t0 = time.monotonic()
        self._draw("")

    def advance(self, path: str, size: int = 0) -> None:
        self.done += 1
        self.bytes += size
        self._draw(path)

    def rates(self) -> str:
        """files/s, bytes/s and ETA so far (long runs: a store over a cluster)."""
        elapsed = max(time.monotonic() - self._t0, 1e-6)
        fps = self.done / elapsed
        eta = (self.total - self.done) / fps if fps > 0 else 0.0
        return f"{fps:.1f} files/s {_human(self.bytes / elapsed)}/s ETA {int(eta) // 60}m{int(eta) % 60:02d}s"

    def _draw(self, path: str) -> None:
        if not self.enabled or self.total <= 1:
            return
        now = time.monotonic()
        if self.done not in (0, self.total) and now - self._last_draw < 0.1:
            return  # redraw ten times a second at most: thousands of files must not cost a terminal flood
        self._last_draw = now
        frac = self.done / self.total if self.total else 1.0
        filled = int(frac * self.width)
        from scanner.output.escape import escape

        name = escape(os.path.basename(path))[-30:]
        line = f"\r[{'#' * filled}{'.' * (self.width - filled)}] {self.done}/{self.total} {self.rates()} {name}"
        pad = max(0, self._last_len - len(line))
        self._last_len = len(line)
        self.stream.write(line + " " * pad)
        self.stream.flush()

    def finish(self) -> None:
        if self.enabled and self.total > 1 and self._last_len:
            self.stream.write("\r" + " " * self._last_len + "\r")
            self.stream.flush()


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000:
            return f"{n:.0f} {unit}"
        n /= 1000
    return f"{n:.0f} TB"
