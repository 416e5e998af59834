"""Models where they live: s3://, gs://, http(s)://, hf:// read by ranged requests through fsspec.

Analyzers read a few regions of a file (a safetensors header, a zip's directory and pickle members, an
ONNX skeleton), so a remote file is never downloaded whole: `RemoteSource` fetches aligned blocks on
demand, coalesces the missing blocks of one read into a single request, reads ahead on the first request
and keeps a small LRU. It counts requests and bytes fetched, reported per file in `--format json`.

fsspec and the filesystem packages (s3fs, gcsfs, huggingface_hub, aiohttp) are optional extras imported
only here and only for a URL, so a local scan imports none of them. Credentials are whatever each
filesystem finds the usual way (environment, the SDKs' config files) plus the user's `--storage-option`;
nothing in the scanned store configures the filesystem.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import re
import sys
import tempfile
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scanner.findings import FileReport, Finding
from scanner.rules import Policy, RuleSet
from scanner.source import FileSource, Source

# (sha256, name, size) -> a cached (format, findings), or None
CacheLookup = Callable[[str, str, int], "tuple[str, tuple[Finding, ...]] | None"]

# scheme -> the extra that provides its filesystem (named in the error when it is missing)
SCHEMES: dict[str, str] = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs", "http": "http", "https": "http",
                           "hf": "hf"}
_URL = re.compile(r"^([a-z][a-z0-9+.-]*)://", re.IGNORECASE)
_MANGLED = re.compile(r"^([a-z][a-z0-9+.-]*):/(?!/)", re.IGNORECASE)  # what pathlib leaves of `s3://`

FIRST_READ = 1 << 20  # the first request of a file: headers, zip heads and small files in one go
TAIL_READ = 128 << 10  # fetched with the head: every scan searches the last 64 KiB for a zip end record
MIN_AHEAD = 16 << 10  # an isolated small read (a zip local header) fetches this much
MAX_AHEAD = 8 << 20  # sequential reads double their read-ahead up to this
COALESCE_GAP = 128 << 10  # announced regions closer than this are fetched as one range (small zip members)
CACHE_BYTES = 32 << 20  # fetched extents kept per open file (LRU)
CACHE_EXTENTS = 4096
PAGE = 4096
SYNC_THREADS = 8  # concurrent range reads on a synchronous filesystem (hf://)
STREAM_CHUNK = 8 << 20  # whole-file reads (--digest) in requests of this size


class RemoteError(Exception):
    """A URL that cannot be listed or read; the CLI turns it into a one-line error (exit 2)."""


def url_scheme(text: str) -> str | None:
    m = _URL.match(text)
    if m and m.group(1).lower() in SCHEMES:
        return m.group(1).lower()
    return None


def is_url(text: str) -> bool:
    return url_scheme(text) is not None


def url_from_arg(arg: str | Path) -> str | None:
    """The URL a command-line argument names, or None for a local path. Typer hands arguments over as
    `Path`, which folds `s3://b/k` into `s3:/b/k`; an argument of that shape that is not a local file is
    taken as the URL."""
    text = str(arg)
    if is_url(text):
        return text
    m = _MANGLED.match(text)
    if m and m.group(1).lower() in SCHEMES and not Path(text).exists():
        for raw in sys.argv[1:]:  # the argument as typed: pathlib also drops a trailing '/' (an index URL)
            if is_url(raw) and str(Path(raw)) == text:
                return raw
        return f"{m.group(1)}://{text[m.end():]}"
    return None


def parse_storage_options(items: list[str] | None) -> dict[str, Any]:
    """`--storage-option key=value`: JSON values (numbers, booleans, objects) or plain strings."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--storage-option wants key=value, got {item!r}")
        try:
            out[key.strip()] = json.loads(value)
        except ValueError:
            out[key.strip()] = value
    return out


def filesystem(url: str, options: Mapping[str, Any] | None = None) -> tuple[Any, str]:
    """(fsspec filesystem, path inside it) for a URL; RemoteError when the extra is not installed."""
    scheme = url_scheme(url) or ""
    try:
        import fsspec
        from fsspec.core import url_to_fs
    except ImportError:
        raise RemoteError(f"{scheme}:// needs the optional extra: pip install 'modelseal[{SCHEMES.get(scheme, 'all')}]'"
                          ) from None
    del fsspec
    try:
        fs, path = url_to_fs(url, **dict(options or {}))
    except ImportError as e:
        raise RemoteError(f"{scheme}:// needs the optional extra: pip install 'modelseal[{SCHEMES.get(scheme, 'all')}]' "
                          f"({e})") from None
    except (ValueError, TypeError, OSError) as e:
        raise RemoteError(f"cannot open {url}: {e}") from None
    return fs, path


# -- reading one file by range ---------------------------------------------------------------------------

@dataclass
class Transfer:
    """What reading one file cost: requests made, payload bytes received, and round trips (requests sent
    together, concurrently or as one multi-range request, count one round trip)."""

    requests: int = 0
    bytes_fetched: int = 0
    round_trips: int = 0

    def to_dict(self) -> dict[str, int]:
        return {"requests": self.requests, "bytes_fetched": self.bytes_fetched, "round_trips": self.round_trips}


class RemoteSource(Source):
    """A whole remote file read through `fs.cat_file(path, start, end)` (one ranged GET each).

    Fetched extents are kept in a small LRU; a read fully inside one is free. A read continuing where the
    last one ended doubles the read-ahead (a parser walking a pickle member), an isolated read fetches a
    little (a zip local header): scattered headers cost one small request each, sequential parsing a few."""

    def __init__(self, fs: Any, path: str, size: int, display: str, *, first_read: int = FIRST_READ,
                 min_ahead: int = MIN_AHEAD, max_ahead: int = MAX_AHEAD, cache_bytes: int = CACHE_BYTES) -> None:
        super().__init__(display, None, size)
        self.fs = fs
        self.fs_path = path
        self.first_read = first_read
        self.min_ahead = min_ahead
        self.max_ahead = max_ahead
        self.cache_bytes = cache_bytes
        self.extents: OrderedDict[int, bytes] = OrderedDict()  # start -> bytes, least recently used first
        self.cached = 0
        self.ahead = min_ahead
        self.last_end = -1
        self.transfer = Transfer()
        self.multi_range = True  # HTTP: until the server shows it does not answer multi-range requests

    @property
    def name(self) -> str:
        return posixpath.basename(self.fs_path.rstrip("/"))

    def _is_http(self) -> bool:
        return type(self.fs).__name__ == "HTTPFileSystem"

    def _fetch(self, start: int, end: int) -> bytes:
        self.transfer.requests += 1
        self.transfer.round_trips += 1
        if self._is_http():
            # fsspec's HTTP cat_file reads whatever body comes back: a server ignoring Range would send the
            # whole file into memory. remote_http stops at the asked length or refuses a non-range reply.
            from scanner.remote_http import fetch_one

            data = fetch_one(self.fs, self.fs_path, start, end)
        else:
            data = self.fs.cat_file(self.fs_path, start=start, end=end)
        self.transfer.bytes_fetched += len(data)
        if len(data) != end - start:
            raise OSError(f"short read: asked bytes {start}-{end} of {self.display}, got {len(data)}")
        return bytes(data)

    def _find(self, offset: int) -> tuple[int, bytes] | None:
        for start, data in reversed(self.extents.items()):  # most recent first
            if start <= offset < start + len(data):
                self.extents.move_to_end(start)
                return start, data
        return None

    def _covered(self, pos: int) -> int:
        """The end of the cached extent reaching furthest towards `pos` from below (0 if none)."""
        best = 0
        for start, data in self.extents.items():
            stop = start + len(data)
            if stop <= pos and stop > best:
                best = stop
        return best

    def _keep(self, start: int, data: bytes) -> None:
        if len(data) > self.cache_bytes:
            return
        old = self.extents.pop(start, None)
        if old is not None:
            self.cached -= len(old)
        self.extents[start] = data
        self.cached += len(data)
        while self.cached > self.cache_bytes or len(self.extents) > CACHE_EXTENTS:
            _, dropped = self.extents.popitem(last=False)
            self.cached -= len(dropped)

    def read_at(self, offset: int, n: int) -> bytes:
        if offset < 0 or n <= 0 or offset >= self.size:
            return b""
        end = min(self.size, offset + n)
        if self.transfer.requests == 0 and offset < self.first_read and self.size > self.first_read + TAIL_READ:
            # one round trip (one request over HTTP) for the head and the tail (a zip's directory)
            self.prefetch([(offset - offset % PAGE, self.first_read), (self.size - TAIL_READ, TAIL_READ)])
        sequential = offset == self.last_end
        self.last_end = end
        out = b""
        pos = offset
        while pos < end:
            hit = self._find(pos)
            if hit is not None:
                start, data = hit
                piece = data[pos - start:end - start]
                out += piece
                pos += len(piece)
                continue
            if self.transfer.requests == 0:
                want = self.first_read
            else:
                self.ahead = min(self.ahead * 2, self.max_ahead) if sequential else self.min_ahead
                want = self.ahead
            # isolated reads start at a page boundary: the bytes just before a zip local header (the data
            # descriptor of the previous member) are read next
            begin = pos if sequential or self.transfer.requests == 0 else max(pos - pos % PAGE, self._covered(pos))
            stop = min(self.size, max(end, pos + want))
            data = self._fetch(begin, stop)
            self._keep(begin, data)
            out += data[pos - begin:end - begin]
            pos = min(end, stop)
        return out

    def prefetch(self, ranges: list[tuple[int, int]]) -> None:
        """Fetch the regions no cached extent covers in one round trip: page-aligned and at least `min_ahead`
        long as isolated reads are, neighbours closer than COALESCE_GAP merged into one range. Over HTTP one
        multi-range request (concurrent single ranges if the server refuses it); elsewhere `fs.cat_ranges`
        (concurrent on async filesystems such as s3fs, one range per GET: S3 and GCS serve no multi-range)."""
        wanted: list[tuple[int, int]] = []
        for off, n in sorted(ranges):
            if off < 0 or off >= self.size or n <= 0 or self._find(off) is not None:
                continue
            start = max(off - off % PAGE, self._covered(off))
            stop = min(self.size, max(off + n, off + self.min_ahead))
            if wanted and start <= wanted[-1][1]:
                wanted[-1] = (wanted[-1][0], max(wanted[-1][1], stop))
            else:
                wanted.append((start, stop))
        total = sum(b - a for a, b in wanted)
        if len(wanted) < 2 or total > self.cache_bytes:
            return  # one region is read on demand anyway; more than the cache holds would be thrown away
        spans = wanted[:1]
        # close neighbours become one range while the bytes stay within a quarter of the cache: the zip's
        # structure pass reads every member's surroundings again after its batches were fetched
        for a, b in wanted[1:]:
            gap = a - spans[-1][1]
            if gap <= COALESCE_GAP and total + gap <= self.cache_bytes // 4:
                spans[-1] = (spans[-1][0], b)
                total += gap
            else:
                spans.append((a, b))
        if self._is_http():
            from scanner.remote_http import fetch_many

            got = fetch_many(self.fs, self.fs_path, spans, multi=self.multi_range)
            if got.multi_refused:
                self.multi_range = False  # refused: this file's next batches go straight to single ranges
            datas: list[Any] = got.datas
            self.transfer.requests += got.requests
            self.transfer.round_trips += got.round_trips
            self.transfer.bytes_fetched += got.bytes_fetched
        elif getattr(self.fs, "async_impl", False):  # s3fs, gcsfs: concurrent on the filesystem's loop
            datas = self.fs.cat_ranges([self.fs_path] * len(spans), [a for a, _ in spans], [b for _, b in spans],
                                       on_error="return")
        else:  # synchronous filesystems (hf://, local): concurrent in threads
            datas = self._threaded(spans)
        if not self._is_http():
            self.transfer.requests += len(spans)
            self.transfer.round_trips += 1
            self.transfer.bytes_fetched += sum(len(d) for d in datas if isinstance(d, bytes | bytearray))
        for (a, b), data in zip(spans, datas, strict=True):
            if isinstance(data, bytes | bytearray) and len(data) == b - a:
                self._keep(a, bytes(data))  # anything else is read again on demand, where a failure is a finding

    def _threaded(self, spans: list[tuple[int, int]]) -> list[Any]:
        from concurrent.futures import ThreadPoolExecutor

        def one(span: tuple[int, int]) -> Any:
            try:
                return self.fs.cat_file(self.fs_path, start=span[0], end=span[1])
            except Exception as e:  # noqa: BLE001 - read again on demand, where a failure becomes a finding
                return e

        with ThreadPoolExecutor(max_workers=min(SYNC_THREADS, len(spans))) as pool:
            return list(pool.map(one, spans))

    def sha256(self) -> str:
        """The whole file streamed once, hashed, kept nowhere."""
        return self.spool(None)

    def spool(self, target: Path | None) -> str:
        """Stream the whole file once (STREAM_CHUNK requests) into `target` (a new file), returning its sha256:
        the digest and any scan of `target` then see the very same bytes."""
        h = hashlib.sha256()
        with open(target, "xb") if target is not None else nullcontext() as fh:
            for start in range(0, self.size, STREAM_CHUNK):
                data = self._fetch(start, min(self.size, start + STREAM_CHUNK))
                h.update(data)
                if fh is not None:
                    fh.write(data)
        return h.hexdigest()

    def close(self) -> None:
        self.extents.clear()
        self.cached = 0


class SpooledSource(FileSource):
    """A remote file streamed into a private temporary file (`--digest`, `attest`): read locally, but
    reported under its URL and, like a RemoteSource, with no folder on disk around it."""

    @property
    def path(self) -> Path | None:
        return None


# -- listing a store ---------------------------------------------------------------------------------------

@dataclass
class RemoteEntry:
    """One remote file to scan (picklable: the filesystem is rebuilt from the URL in each worker)."""

    url: str  # as reported
    root_url: str  # the argument it was listed under (its filesystem and options)
    fs_path: str
    size: int | None
    options: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    findings: list[Finding] = field(default_factory=list)
    scan: bool = True

    @property
    def display(self) -> str:
        return self.url


def _join(root_url: str, root_path: str, path: str) -> str:
    rel = path[len(root_path):].lstrip("/") if path.startswith(root_path) else path
    return root_url.rstrip("/") + "/" + rel if rel else root_url


def walk_url(url: str, policy: Policy, options: Mapping[str, Any] | None = None) -> Iterator[RemoteEntry]:
    """The files under a URL (a file, or every file below a prefix), sorted, with sizes from the listing."""
    opts = dict(options or {})
    fs, path = filesystem(url, opts)
    try:
        if url_scheme(url) in ("http", "https") and not url.endswith("/"):
            # one file: listing it would GET the whole body looking for links; an index URL ends with '/'
            listing = {path: fs.info(path)}
        else:
            listing = fs.find(path, detail=True, withdirs=False)
        if not listing:
            info = fs.info(path)
            listing = {path: info} if info.get("type") != "directory" else {}
    except FileNotFoundError:
        yield RemoteEntry(url, url, path, None, opts, error="cannot access: no such file or prefix")
        return
    except OSError as e:
        yield RemoteEntry(url, url, path, None, opts, error=f"cannot list: {e}")
        return
    root_path = fs._strip_protocol(path) if hasattr(fs, "_strip_protocol") else path
    prefix = root_path.rstrip("/") + "/"
    for p in sorted(listing):
        info = listing[p]
        if info.get("type") == "directory":
            continue
        if p != root_path and (not p.startswith(prefix) or {".", ".."} & set(p[len(prefix):].split("/"))):
            continue  # a listing (an HTML index) naming files elsewhere does not steer the scan off the prefix
        child = _join(url, root_path, p) if p != root_path else url
        rel = posixpath.relpath(p, root_path) if p != root_path else posixpath.basename(p)
        if policy.ignored(rel):
            continue
        size = info.get("size")
        yield RemoteEntry(child, url, p, size if isinstance(size, int) else None, opts)


def scan_remote(entry: RemoteEntry, rules: RuleSet, policy: Policy, *, digest: bool = False,
                cache: CacheLookup | None = None) -> FileReport:
    """`engine.scan_file` for a remote file: same sniffing and analyzers, bytes read by range. With `digest`
    the file is streamed once into a private temporary file and scanned from there, so the sha256 reported
    (and the `cache` lookup keyed on it) is of exactly the bytes scanned."""
    from scanner.engine import ScanContext, scan_source

    if entry.error is not None:
        return FileReport(entry.url, None, None, "unknown", tuple(entry.findings), entry.error)
    ctx = ScanContext(rules, policy, root=None)  # no folder on disk: ONNX external data is reported unverifiable
    try:
        fs, _ = filesystem(entry.root_url, entry.options)
        size = entry.size if entry.size is not None else int(fs.info(entry.fs_path)["size"])
    except (RemoteError, OSError, KeyError, ValueError, TypeError) as e:  # TypeError: a server without sizes
        return FileReport(entry.url, None, None, "unknown", tuple(entry.findings), f"cannot read: {e}")
    src = RemoteSource(fs, entry.fs_path, size, entry.url)
    try:
        if size > policy.limits.max_file_bytes:
            f = ctx.finding("LIMIT-EXCEEDED", f"file of {size} bytes exceeds max_file_bytes; not scanned",
                            src, evidence="max_file_bytes")
            return FileReport(entry.url, size, None, "unknown", (*entry.findings, f), transfer=src.transfer.to_dict())
        if not digest:
            fmt, findings = scan_source(src, ctx)
            return FileReport(entry.url, size, None, fmt, (*entry.findings, *findings), transfer=src.transfer.to_dict())
        with tempfile.TemporaryDirectory(prefix="modelseal-remote-") as tmp:
            local = Path(tmp) / "file"
            sha = src.spool(local)
            hit = cache(sha, src.name, size) if cache is not None else None
            if hit is not None:
                fmt, found = hit
                return FileReport(entry.url, size, sha, fmt, (*entry.findings, *found),
                                  transfer=src.transfer.to_dict())
            spooled = SpooledSource(local, entry.url)
            try:
                fmt, findings = scan_source(spooled, ctx)
            finally:
                spooled.close()
        return FileReport(entry.url, size, sha, fmt, (*entry.findings, *findings), transfer=src.transfer.to_dict())
    except Exception as e:  # noqa: BLE001 - network errors of any client library: an error, never clean
        return FileReport(entry.url, size, None, "unknown", tuple(entry.findings),
                          f"cannot read: {type(e).__name__}: {e}", transfer=src.transfer.to_dict())
    finally:
        src.close()
