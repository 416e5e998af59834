"""Our own zip structure parser: end records (zip64 included), central directory and every local header,
read through `Source.read_at`. It reports what it sees; deciding what is suspicious is zipfile.py's job."""

from __future__ import annotations

import struct

from scanner.record import field, record
from scanner.source import LimitExceeded, Source

EOCD_SIG = b"PK\x05\x06"
Z64_LOC_SIG = b"PK\x06\x07"
Z64_EOCD_SIG = b"PK\x06\x06"
CDH_SIG = b"PK\x01\x02"
LFH_SIG = b"PK\x03\x04"
DD_SIG = b"PK\x07\x08"
EOCD_LEN = 22
CDH_LEN = 46
LFH_LEN = 30
MAX_COMMENT = 0xFFFF


class ZipError(Exception):
    """The archive cannot be read as a zip at all."""


@record(frozen=True)
class EndRecord:
    offset: int            # where the EOCD record starts
    entries: int
    cd_size: int
    cd_offset: int
    comment_len: int
    zip64_offset: int | None  # offset of the zip64 end record when one is used


@record
class LocalHeader:
    offset: int
    flags: int
    method: int
    crc: int
    csize: int
    usize: int
    name: bytes
    extra: bytes
    data_offset: int


@record
class Entry:
    """One central-directory record plus what its local header says."""

    index: int
    name_raw: bytes
    name: str
    flags: int
    method: int
    crc: int
    csize: int
    usize: int
    header_offset: int      # as recorded (before any prefix shift)
    made_by: int
    external_attr: int
    extra: bytes
    comment: bytes
    local: LocalHeader | None = None
    local_error: str | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def data_offset(self) -> int | None:
        return self.local.data_offset if self.local else None

    @property
    def data_end(self) -> int | None:
        if self.local is None:
            return None
        return self.local.data_offset + self.csize

    @property
    def is_dir(self) -> bool:
        return self.name.endswith("/") and self.usize == 0


@record
class ZipLayout:
    end: EndRecord
    all_eocds: list[int]
    shift: int              # bytes of prefix the recorded offsets do not account for
    cd_start: int
    entries: list[Entry]
    problems: list[str]


def decode_name(raw: bytes, flags: int) -> str:
    """As Python's zipfile: UTF-8 when flag bit 11 says so, else cp437."""
    if flags & 0x800:
        return raw.decode("utf-8", "replace")
    return raw.decode("cp437")


def find_end_records(src: Source) -> tuple[list[int], bytes, int]:
    """Offsets of every plausible EOCD in the last 64 KiB + 22 bytes (last one first)."""
    tail_len = min(src.size, MAX_COMMENT + EOCD_LEN + 20)
    tail_off = src.size - tail_len
    tail = src.read_at(tail_off, tail_len)
    found: list[int] = []
    pos = len(tail)
    while pos > 0:
        i = tail.rfind(EOCD_SIG, 0, pos)
        if i < 0:
            break
        if i + EOCD_LEN <= len(tail):
            found.append(tail_off + i)
        pos = i
    return found, tail, tail_off


def _parse_eocd(src: Source, off: int) -> EndRecord | None:
    rec = src.read_at(off, EOCD_LEN)
    if len(rec) < EOCD_LEN or rec[:4] != EOCD_SIG:
        return None
    (_sig, disk, cd_disk, n_disk, n_total, cd_size, cd_off, clen) = struct.unpack("<4sHHHHIIH", rec)
    z64: int | None = None
    if off >= 20:
        loc = src.read_at(off - 20, 20)
        if loc[:4] == Z64_LOC_SIG:
            (_s, _d, z64_off, _n) = struct.unpack("<4sIQI", loc)
            # Python's zipfile looks right before the locator; miniz follows the recorded offset
            for at in dict.fromkeys((off - 20 - 56, z64_off)):
                z = src.read_at(at, 56) if at >= 0 else b""
                if len(z) == 56 and z[:4] == Z64_EOCD_SIG:
                    (_s, _sz, _vm, _vn, _d1, _d2, _n1, n_total64, cd_size64, cd_off64) = struct.unpack(
                        "<4sQHHIIQQQQ", z)
                    return EndRecord(off, n_total64, cd_size64, cd_off64, clen, at)
    return EndRecord(off, n_total, cd_size, cd_off, clen, z64)


def choose_end(src: Source, eocd_offset: int | None = None) -> tuple[EndRecord, list[int], list[str]]:
    """Pick the EOCD the way Python's zipfile and miniz do (the last signature in the tail), and list every
    other one that also parses as an end record pointing at a central directory."""
    offsets, _tail, _ = find_end_records(src)
    problems: list[str] = []
    valid: list[EndRecord] = []
    for off in offsets:
        rec = _parse_eocd(src, off)
        if rec is None:
            continue
        cd_base = rec.zip64_offset if rec.zip64_offset is not None else rec.offset
        if rec.cd_size > cd_base:
            continue
        start = cd_base - rec.cd_size
        if rec.entries and src.read_at(start, 4) != CDH_SIG and src.read_at(rec.cd_offset, 4) != CDH_SIG:
            continue
        valid.append(rec)
    if not valid:
        raise ZipError("no end-of-central-directory record")
    end = valid[0]
    if eocd_offset is not None:
        end = next((r for r in valid if r.offset == eocd_offset), end)
    return end, [r.offset for r in valid], problems


PREFETCH_BATCH = 512


def parse_layout(src: Source, *, max_members: int, max_cd_bytes: int, eocd_offset: int | None = None) -> ZipLayout:
    end, eocds, problems = choose_end(src, eocd_offset)
    cd_base = end.zip64_offset if end.zip64_offset is not None else end.offset
    shift = cd_base - end.cd_size - end.cd_offset
    if shift < 0:
        problems.append(f"central directory offset {end.cd_offset} + size {end.cd_size} runs past its end record")
        shift = 0
    if end.entries > max_members:
        raise LimitExceeded("max_members", f"zip declares {end.entries} members (limit {max_members})", src.loc())
    if end.cd_size > max_cd_bytes:
        raise LimitExceeded("max_header_bytes", f"central directory of {end.cd_size} bytes", src.loc())
    cd_start = end.cd_offset + shift
    cd = src.read_at(cd_start, end.cd_size)
    if len(cd) < end.cd_size:
        problems.append("central directory truncated")
    entries: list[Entry] = []
    pos = 0
    while pos + CDH_LEN <= len(cd) and len(entries) < max_members:
        if cd[pos:pos + 4] != CDH_SIG:
            problems.append(f"bad central directory signature at offset {cd_start + pos}")
            break
        (_s, made_by, _need, flags, method, _t, _d, crc, csize, usize, nlen, elen, clen, disk, _ia, ea,
         lho) = struct.unpack("<4sHHHHHHIIIHHHHHII", cd[pos:pos + CDH_LEN])
        name = cd[pos + CDH_LEN:pos + CDH_LEN + nlen]
        extra = cd[pos + CDH_LEN + nlen:pos + CDH_LEN + nlen + elen]
        comment = cd[pos + CDH_LEN + nlen + elen:pos + CDH_LEN + nlen + elen + clen]
        nxt = pos + CDH_LEN + nlen + elen + clen
        if nxt > len(cd):
            problems.append(f"central directory entry {len(entries)} runs past the directory")
            break
        entry = Entry(len(entries), name, decode_name(name, flags), flags, method, crc, csize, usize, lho,
                      made_by, ea, extra, comment)
        _apply_zip64(entry, extra, disk)
        entries.append(entry)
        pos = nxt
    if len(entries) >= max_members and pos + CDH_LEN <= len(cd):
        # readers list every record the directory holds, whatever the count says: more than the limit is a
        # listing bomb, refused before any local header is read
        raise LimitExceeded("max_members", f"central directory holds more than {max_members} members", src.loc())
    if len(entries) != end.entries:
        problems.append(f"end record declares {end.entries} entries, central directory holds {len(entries)}")
    elif pos != len(cd):
        problems.append(f"{len(cd) - pos} unparsed bytes at the end of the central directory")
    # remote sources fetch the local headers (and each member's first bytes) a batch per round trip instead of
    # one request after another; a batch fits the remote source's cache
    for i in range(0, len(entries), PREFETCH_BATCH):
        batch = entries[i:i + PREFETCH_BATCH]
        src.prefetch([(e.header_offset + shift, LFH_LEN + len(e.name_raw) + len(e.extra) + 16) for e in batch])
        for e in batch:
            _read_local(src, e, shift)
    return ZipLayout(end, eocds, shift, cd_start, entries, problems)


def _apply_zip64(e: Entry, extra: bytes, disk: int) -> None:
    for tag, body in iter_extra(extra):
        if tag != 1:
            continue
        vals = []
        for i in range(0, len(body) - 7, 8):
            vals.append(struct.unpack_from("<Q", body, i)[0])
        it = iter(vals)
        try:
            if e.usize == 0xFFFFFFFF:
                e.usize = next(it)
            if e.csize == 0xFFFFFFFF:
                e.csize = next(it)
            if e.header_offset == 0xFFFFFFFF:
                e.header_offset = next(it)
        except StopIteration:
            e.problems.append("zip64 extra field too short for the values it replaces")
        return


def iter_extra(extra: bytes) -> list[tuple[int, bytes]]:
    out = []
    pos = 0
    while pos + 4 <= len(extra):
        tag, ln = struct.unpack_from("<HH", extra, pos)
        out.append((tag, extra[pos + 4:pos + 4 + ln]))
        pos += 4 + ln
    return out


def read_local_header(src: Source, off: int) -> LocalHeader | None:
    hdr = src.read_at(off, LFH_LEN)
    if len(hdr) < LFH_LEN or hdr[:4] != LFH_SIG:
        return None
    (_s, _need, flags, method, _t, _d, crc, csize, usize, nlen, elen) = struct.unpack("<4sHHHHHIIIHH", hdr)
    rest = src.read_at(off + LFH_LEN, nlen + elen)
    if len(rest) < nlen + elen:
        return None
    name, extra = rest[:nlen], rest[nlen:]
    for tag, body in iter_extra(extra):
        if tag == 1 and len(body) >= 16:
            if usize == 0xFFFFFFFF:
                usize = struct.unpack_from("<Q", body, 0)[0]
            if csize == 0xFFFFFFFF:
                csize = struct.unpack_from("<Q", body, 8)[0]
    return LocalHeader(off, flags, method, crc, csize, usize, name, extra, off + LFH_LEN + nlen + elen)


def _read_local(src: Source, e: Entry, shift: int) -> None:
    """Find the local header: where the record says (miniz), or shifted by a prefix (Python's zipfile)."""
    candidates = [e.header_offset + shift] if shift else [e.header_offset]
    if shift:
        candidates.append(e.header_offset)
    for off in candidates:
        lh = read_local_header(src, off)
        if lh is not None:
            e.local = lh
            return
    e.local_error = f"no local header at offset {candidates[0]}"


def data_descriptor_len(src: Source, e: Entry) -> int:
    """Length of the data descriptor after a member's data (flag bit 3), 0 if none found."""
    if e.local is None or not (e.flags & 0x8):
        return 0
    end = e.local.data_offset + e.csize
    head = src.read_at(end, 24)
    zip64 = e.csize >= 0xFFFFFFFF or e.usize >= 0xFFFFFFFF or any(t == 1 for t, _ in iter_extra(e.local.extra))
    size = 4 + (16 if zip64 else 8)
    if head[:4] == DD_SIG:
        return size + 4
    return size


def overlapping(entries: list[Entry]) -> dict[int, Entry]:
    """Members whose compressed data lies inside another member's data span, found from the directory and
    local headers alone (nothing inflated): entry index -> the member whose span covers it. Entries sharing
    exactly one body are left to the caller's duplicate handling. This is David Fifield's overlapping-entry
    bomb: N headers whose data all run into one kernel inflate N times without N times the bytes."""
    spans = sorted(((e.local.data_offset, e.local.data_offset + e.csize, e) for e in entries
                    if e.local is not None and e.csize > 0), key=lambda t: (t[0], -t[1]))
    out: dict[int, Entry] = {}
    cover: tuple[int, int, Entry] | None = None
    for start, stop, e in spans:
        if cover is not None and start < cover[1] and (start, stop) != (cover[0], cover[1]):
            out[e.index] = cover[2]
            continue
        if cover is None or stop > cover[1]:
            cover = (start, stop, e)
    return out
