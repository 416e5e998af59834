"""Bounded HTTP range reads for remote sources: one range, many ranges in one request, many requests at once.

fsspec's HTTP `cat_file`/`cat_ranges` read whatever body a server sends, so a server ignoring `Range` (or
answering 206 with more than was asked) would pour a whole model into memory. Every read here stops at the
bytes asked for. Several regions (a zip's local headers, HDF5 signature probes) go first as ONE multi-range
request (`Range: bytes=a-b,c-d`, answered `multipart/byteranges` by nginx, Apache and most object servers);
a server that refuses or ignores it gets the regions as concurrent single-range requests: one round trip
either way. Runs on the filesystem's own event loop and aiohttp session (its headers, auth, SSL options).
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from typing import Any

PART_OVERHEAD = 256  # multipart boundary + part headers allowed per range before a reply counts as too big
CONCURRENCY = 32
MAX_RANGES = 100  # per multi-range request: Apache's MaxRanges is 200, nginx caps a header line at 8 KB
_CRANGE = re.compile(rb"bytes\s+(\d+)-(\d+)/(\d+|\*)", re.IGNORECASE)
_BOUNDARY = re.compile(r'boundary="?([^";]+)"?', re.IGNORECASE)


@dataclass
class Fetched:
    """What one batch cost: requests sent, payload bytes received, round trips (sequential waits)."""

    datas: list[bytes | None]
    requests: int = 0
    bytes_fetched: int = 0
    round_trips: int = 0
    multi_refused: bool = False  # a multi-range request delivered none of its ranges


class RangeRefused(OSError):
    """The server did not answer a range request with the asked bytes (a 200, a wrong Content-Range)."""


async def _read_bounded(resp: Any, limit: int) -> bytes | None:
    """The body, or None when it runs past `limit` (the connection is then dropped unread)."""
    length = resp.headers.get("Content-Length")
    if length is not None and length.isdigit() and int(length) > limit:
        resp.close()
        return None
    out = bytearray()
    while True:
        chunk = await resp.content.read(min(1 << 20, limit + 1 - len(out)))
        if not chunk:
            return bytes(out)
        out += chunk
        if len(out) > limit:
            resp.close()
            return None


async def _one(fs: Any, session: Any, url: str, start: int, end: int) -> bytes:
    kwargs = fs.kwargs.copy()
    headers = {**kwargs.pop("headers", {}), "Range": f"bytes={start}-{end - 1}"}
    async with session.get(fs.encode_url(url), headers=headers, **kwargs) as r:
        if r.status == 206:
            m = _CRANGE.match(r.headers.get("Content-Range", "").encode())
            if m is None or int(m.group(1)) != start or int(m.group(2)) >= end:
                r.close()
                raise RangeRefused(f"server answered bytes {start}-{end - 1} with "
                                   f"Content-Range {r.headers.get('Content-Range')!r}")
            data = await _read_bounded(r, end - start)
        elif r.status == 200 and start == 0:
            # the whole body: take the head of the stream and hang up
            data = await r.content.read(end)
            while len(data) < end:
                more = await r.content.read(end - len(data))
                if not more:
                    break
                data += more
            r.close()
        else:
            r.close()
            if r.status >= 400:
                raise OSError(f"HTTP {r.status} for bytes {start}-{end - 1}")
            raise RangeRefused(f"server ignored Range (HTTP {r.status}); only the start of the file is readable")
    if data is None:
        raise RangeRefused(f"server sent more than bytes {start}-{end - 1}")
    return data


def _split_multipart(body: bytes, boundary: bytes) -> list[tuple[int, bytes]]:
    """(offset, bytes) of every part, by each part's Content-Range length (binary data may hold the boundary)."""
    parts: list[tuple[int, bytes]] = []
    delim = b"--" + boundary
    pos = body.find(delim)
    while pos >= 0:
        pos += len(delim)
        if body[pos:pos + 2] == b"--":
            break
        hdr_end = body.find(b"\r\n\r\n", pos)
        if hdr_end < 0:
            break
        m = _CRANGE.search(body[pos:hdr_end])
        if m is None:
            break
        a, b = int(m.group(1)), int(m.group(2))
        data = body[hdr_end + 4:hdr_end + 4 + b - a + 1]
        if len(data) != b - a + 1:
            break
        parts.append((a, data))
        pos = body.find(delim, hdr_end + 4 + len(data))
    return parts


async def _multi(fs: Any, session: Any, url: str, spans: list[tuple[int, int]]) -> tuple[list[bytes | None], int]:
    """One multi-range request: the spans it delivered (None for the rest) and the payload bytes received."""
    kwargs = fs.kwargs.copy()
    ranges = ",".join(f"{a}-{b - 1}" for a, b in spans)
    headers = {**kwargs.pop("headers", {}), "Range": f"bytes={ranges}"}
    limit = sum(b - a for a, b in spans) + PART_OVERHEAD * len(spans) + 4096
    got: list[tuple[int, bytes]] = []
    async with session.get(fs.encode_url(url), headers=headers, **kwargs) as r:
        ctype = r.headers.get("Content-Type", "")
        if r.status != 206:
            r.close()  # 200 (Range ignored: the whole file), 416...: not read
        elif ctype.lower().startswith("multipart/byteranges") and _BOUNDARY.search(ctype):
            body = await _read_bounded(r, limit)
            if body is not None:
                got = _split_multipart(body, _BOUNDARY.search(ctype).group(1).encode())  # type: ignore[union-attr]
        else:  # a server may coalesce the ranges into one
            m = _CRANGE.match(r.headers.get("Content-Range", "").encode())
            body = await _read_bounded(r, limit) if m is not None else None
            if m is not None and body is not None and len(body) == int(m.group(2)) - int(m.group(1)) + 1:
                got = [(int(m.group(1)), body)]
            elif m is None:
                r.close()
    out: list[bytes | None] = []
    for a, b in spans:
        piece = next((d[a - off:b - off] for off, d in got if off <= a and b <= off + len(d)), None)
        out.append(piece)
    return out, sum(len(d) for _, d in got)


async def _batch(fs: Any, url: str, spans: list[tuple[int, int]], multi: bool) -> Fetched:
    session = await fs.set_session()
    res = Fetched([None] * len(spans))
    if multi and len(spans) > 1:
        groups = [spans[i:i + MAX_RANGES] for i in range(0, len(spans), MAX_RANGES)]
        res.datas = []
        for datas, n in await asyncio.gather(*(_multi(fs, session, url, g) for g in groups)):
            res.datas += datas
            res.bytes_fetched += n
            res.multi_refused |= n == 0
        res.requests += len(groups)
        res.round_trips += 1
    todo = [i for i, d in enumerate(res.datas) if d is None]
    if todo:
        sem = asyncio.Semaphore(CONCURRENCY)

        async def get(i: int) -> bytes | None:
            async with sem:
                try:
                    return await _one(fs, session, url, *spans[i])
                except Exception:  # noqa: BLE001 - read again on demand, where a failure becomes a finding
                    return None

        for i, data in zip(todo, await asyncio.gather(*(get(i) for i in todo)), strict=True):
            res.datas[i] = data
            res.bytes_fetched += len(data or b"")
        res.requests += len(todo)
        res.round_trips += 1
    return res


def fetch_one(fs: Any, url: str, start: int, end: int) -> bytes:
    from fsspec.asyn import sync

    async def run() -> bytes:
        return await _one(fs, await fs.set_session(), url, start, end)

    return sync(fs.loop, run)  # type: ignore[no-any-return]


def fetch_many(fs: Any, url: str, spans: list[tuple[int, int]], *, multi: bool = True) -> Fetched:
    from fsspec.asyn import sync

    return sync(fs.loop, _batch, fs, url, spans, multi)  # type: ignore[no-any-return]
