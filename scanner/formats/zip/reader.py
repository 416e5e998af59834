"""Zip analyzer (format `zip`): our own structure parse, two-reader differentials, bounded member reads, and
flavour routing (PyTorch, TorchScript, NumPy .npz, Keras v3). Never trusts Python's zipfile."""

from __future__ import annotations

import re
import stat
import zlib
from collections.abc import Iterator
from typing import Any

from scanner.findings import Finding, Severity
from scanner.formats.archives.inflate import Spool, SpoolSource, as_bytes, inflate, make_decompressor
from scanner.formats.zip import structure as zs
from scanner.record import field, record
from scanner.source import LimitExceeded, Source

HEAD_SNIFF = 64 * 1024
CRC_READ_MAX = 16 * 1024 * 1024     # stored members up to this size are CRC-checked when not known storages
GAP_CHUNK = 1 << 20
DRIVE = re.compile(r"^[A-Za-z]:")
BOMB_HEAD = 1 << 20                 # bytes inflated from a bomb to see what it is


@record(frozen=True)
class ZipConfig:
    methods: frozenset[int]
    flag_bits: tuple[tuple[int, str, str, str | None], ...]
    benign_flags: int
    record_names: frozenset[str]
    element_size: dict[str, int]


def _config(ctx: Any) -> ZipConfig:
    def build() -> ZipConfig:
        doc = ctx.rules.doc("containers")
        z = doc.get("zip", {})
        t = doc.get("torch", {})
        return ZipConfig(
            frozenset(int(m["id"]) for m in z.get("supported_methods", [])),
            tuple((int(b["mask"]), b["rule"], b["reason"], b.get("reference")) for b in z.get("flag_bits", [])),
            int(z.get("benign_flag_mask", 0x80E)),
            frozenset(t.get("record_names", [])),
            {k: int(v) for k, v in t.get("element_size", {}).items()},
        )
    return ctx.rules.cached("containers.zip", build)  # type: ignore[no-any-return]


@record
class _State:
    src: Source
    ctx: Any
    cfg: ZipConfig
    out: list[Finding] = field(default_factory=list)
    scanned_offsets: set[int] = field(default_factory=set)

    def add(self, rule: str, msg: str, *, offset: int | None = None, evidence: str | None = None,
            severity: Severity | None = None, src: Source | None = None) -> None:
        self.out.append(self.ctx.finding(rule, msg, src or self.src, offset=offset, evidence=evidence,
                                         severity=severity))


def analyze(src: Source, ctx: Any) -> Iterator[Finding]:
    st = _State(src, ctx, _config(ctx))
    try:
        layout = zs.parse_layout(src, max_members=ctx.limits.max_members, max_cd_bytes=ctx.limits.max_header_bytes)
    except zs.ZipError as e:
        st.add("ZIP-MALFORMED", f"not a readable zip: {e}; walking local headers instead")
        _walk_locals(st, 0, src.size, label="local header without central directory")
        return st.out
    try:
        _structure(st, layout)
        _members(st, layout)
    except LimitExceeded as e:  # a shared budget ran out: keep what was found so far
        st.out.extend(ctx.limit_findings(e, src))
    return st.out


# npy scans its own trailing bytes; the others stop at their own end
APPENDED_HOSTS = frozenset({"pickle", "torch-legacy", "data", "text", "safetensors", "gguf", "hdf5", "onnx"})


def appended_zip(src: Source, fmt: str, ctx: Any) -> list[Finding]:
    """Engine hook: content sniffed as `fmt` whose last bytes are a zip end record (exactly at the end of the
    file, as writers put it) also opens as a zip. Only hosts where that is a trick are looked at."""
    if fmt not in APPENDED_HOSTS or src.size < zs.EOCD_LEN:
        return []
    offsets, _tail, _ = zs.find_end_records(src)
    # zipfile._EndRecData takes the last signature with a whole record, comment or trailing bytes after it
    # notwithstanding: that one opens as a zip even when it does not end the file
    exact = bool(offsets) and _zipfile_opens(src, offsets[0])
    for off in offsets:
        rec = src.read_at(off, zs.EOCD_LEN)
        clen = int.from_bytes(rec[20:22], "little")
        if off + zs.EOCD_LEN + clen == src.size:
            exact = True
            break
    if not exact:
        return []
    return analyze_appended(src, ctx)


def _zipfile_opens(src: Source, off: int) -> bool:
    """zipfile reads the central directory `cd_size` bytes before the end record (the `concat` shift) and
    needs a central header there (or no members)."""
    rec = src.read_at(off, zs.EOCD_LEN)
    n_total, cd_size = int.from_bytes(rec[10:12], "little"), int.from_bytes(rec[12:16], "little")
    return n_total > 0 and cd_size <= off and src.read_at(off - cd_size, 4) == zs.CDH_SIG


def analyze_appended(src: Source, ctx: Any, *, announce: bool = True) -> list[Finding]:
    """A file sniffed as something else whose tail holds a zip end record (pickle + zip polyglot): scan the
    zip part, leaving the head to the analyzer that already read it. `announce=False`: the caller already
    reported the layout (an executable carrying a zip, as llamafiles do)."""
    try:
        layout = zs.parse_layout(src, max_members=ctx.limits.max_members, max_cd_bytes=ctx.limits.max_header_bytes)
    except (zs.ZipError, LimitExceeded):
        return []
    if not layout.entries:
        return []
    st = _State(src, ctx, _config(ctx))
    first = min((e.local.offset for e in layout.entries if e.local), default=layout.cd_start)
    if announce:
        st.add("POLYGLOT", f"a zip archive of {len(layout.entries)} members follows {first} bytes of other "
               "content; zip readers load the archive, other loaders the head", offset=first,
               evidence=", ".join(e.name for e in layout.entries[:8]))
    _structure(st, layout, prefix_scanned=True)
    _members(st, layout)
    return st.out


# -- structure --------------------------------------------------------------------------------------------

def _structure(st: _State, layout: zs.ZipLayout, prefix_scanned: bool = False) -> None:
    src, end = st.src, layout.end
    for p in layout.problems:
        st.add("ZIP-MALFORMED", p)
    inside = [(e.local.data_offset, e.local.data_offset + e.csize) for e in layout.entries if e.local]
    eocds = [o for o in layout.all_eocds if o == end.offset or not any(a <= o < b for a, b in inside)]
    layout.all_eocds[:] = eocds  # end records inside a member's data belong to a nested archive
    if len(layout.all_eocds) > 1:
        st.add("ZIP-MULTIPLE-EOCD", f"{len(layout.all_eocds)} end-of-central-directory records; readers searching "
               "differently see different archives", evidence=", ".join(map(str, layout.all_eocds)))
        for alt in layout.all_eocds[1:]:
            _alternate_directory(st, layout, alt)
    tail = end.offset + zs.EOCD_LEN + end.comment_len
    if tail > src.size:
        st.add("ZIP-MALFORMED", f"end record comment length {end.comment_len} runs past the end of the file",
               offset=end.offset)
    elif tail < src.size:
        st.add("ZIP-TRAILING-DATA", f"{src.size - tail} bytes after the end record", offset=tail)
        _polyglot_check(st, tail, src.size - tail, "after the zip end record")
        _scan_region(st, tail, src.size - tail, "<after end record>")
    comment = src.read_at(end.offset + zs.EOCD_LEN, min(end.comment_len, src.size))
    if zs.LFH_SIG in comment or zs.CDH_SIG in comment:
        st.add("ZIP-CLOAKED-MEMBER", "zip comment holds zip header signatures (a second archive for streaming "
               "readers)", offset=end.offset + zs.EOCD_LEN, evidence=repr(comment[:80]))
        _walk_locals(st, end.offset + zs.EOCD_LEN, len(comment), label="local header in the zip comment")

    entries = layout.entries
    located = [e for e in entries if e.local is not None]
    for e in entries:
        if e.local_error:
            st.add("ZIP-MALFORMED", f"member {e.name!r}: {e.local_error}", offset=e.header_offset)
        for p in e.problems:
            st.add("ZIP-MALFORMED", f"member {e.name!r}: {p}")
    _names(st, entries)
    for e in located:
        _compare_headers(st, e, layout.shift)
        _flags(st, e)
        _link(st, e)

    # prefix: content before the first member (polyglot or self-extractor stub)
    first = min((e.local.offset for e in located if e.local), default=layout.cd_start)  # type: ignore[union-attr]
    if first > 0 and not prefix_scanned:
        st.add("POLYGLOT", f"{first} bytes before the first zip member: loaders reading from the start see "
               "other content than zip readers", offset=0, evidence=repr(src.read_at(0, 32)))
        _scan_region(st, 0, first, "<before first member>")
    if layout.shift and layout.shift != first:
        st.add("ZIP-MALFORMED", f"recorded offsets are shifted by {layout.shift} bytes: Python's zipfile and "
               "miniz resolve members at different places", evidence=f"shift={layout.shift}")

    # overlaps and gaps, in file order
    spans = sorted(((e.local.offset, _span_end(st.src, e), e) for e in located), key=lambda t: (t[0], t[1]))
    cursor = first
    prev: zs.Entry | None = None
    for start, stop, e in spans:
        if prev is not None and start < cursor:
            st.add("ZIP-OVERLAPPING-MEMBERS", f"member {e.name!r} overlaps {prev.name!r}", offset=start,
                   evidence=f"{prev.name!r} ends at {cursor}, {e.name!r} starts at {start}")
        elif start > cursor:
            _gap(st, cursor, start)
        if stop > cursor:
            cursor, prev = stop, e
        elif prev is None:
            prev = e
    if layout.cd_start > cursor:
        _gap(st, cursor, layout.cd_start)
    elif layout.cd_start < cursor:
        st.add("ZIP-OVERLAPPING-MEMBERS", "member data runs into the central directory", offset=layout.cd_start)
    cd_end = layout.cd_start + end.cd_size
    record = end.zip64_offset if end.zip64_offset is not None else end.offset
    if record > cd_end:
        _gap(st, cd_end, record)


def _span_end(src: Source, e: zs.Entry) -> int:
    assert e.local is not None
    end = e.local.data_offset + e.csize
    return end + zs.data_descriptor_len(src, e)


def _gap(st: _State, start: int, stop: int) -> None:
    """Bytes no member accounts for: look for hidden local headers, else report the gap."""
    if _walk_locals(st, start, stop - start, label="local header not in the central directory"):
        return
    st.add("ZIP-UNREFERENCED-DATA", f"{stop - start} bytes between members belong to no member", offset=start,
           evidence=repr(st.src.read_at(start, 32)))
    if stop - start >= 16:
        _scan_region(st, start, stop - start, f"<unreferenced bytes at {start}>")


def _walk_locals(st: _State, start: int, length: int, *, label: str) -> int:
    """Find local file headers in [start, start+length) and scan each as a cloaked member. Returns count."""
    src, found = st.src, 0
    pos, end = start, start + length
    while pos < end:
        chunk = src.read_at(pos, min(GAP_CHUNK, end - pos) + 3)
        i = chunk.find(zs.LFH_SIG)
        if i < 0 or pos + i >= end:
            pos += max(1, len(chunk) - 3)
            if not chunk:
                break
            continue
        off = pos + i
        lh = zs.read_local_header(src, off)
        pos = off + 4
        if lh is None or off in st.scanned_offsets:
            continue
        found += 1
        if found > min(st.ctx.limits.max_members, st.ctx.limits.max_hidden_members):
            raise LimitExceeded("max_hidden_members", "too many hidden local headers", src.loc(off))
        name = zs.decode_name(lh.name, lh.flags)
        st.add("ZIP-CLOAKED-MEMBER", f"{label}: {name!r}", offset=off,
               evidence=f"method={lh.method} flags=0x{lh.flags:04x} csize={lh.csize} usize={lh.usize}")
        entry = zs.Entry(-1, lh.name, name, lh.flags, lh.method, lh.crc, lh.csize, lh.usize, off, 0, 0,
                         lh.extra, b"", local=lh)
        if entry.csize == 0 and entry.flags & 0x8:
            entry.csize = _guess_length(src, lh, end)
        st.scanned_offsets.add(off)
        _scan_entry(st, entry, f"{name} (cloaked@{off})", storages={})
        pos = max(pos, lh.data_offset + entry.csize)
    return found


def _guess_length(src: Source, lh: zs.LocalHeader, end: int) -> int:
    """Streaming members (bit 3, sizes zero): deflate ends by itself; stored runs to the next signature."""
    nxt = src.read_at(lh.data_offset, min(GAP_CHUNK * 16, max(0, end - lh.data_offset)))
    cut = [i for i in (nxt.find(zs.DD_SIG), nxt.find(zs.LFH_SIG), nxt.find(zs.CDH_SIG)) if i >= 0]
    return min(cut) if cut else len(nxt)


def _alternate_directory(st: _State, layout: zs.ZipLayout, eocd_offset: int) -> None:
    """A second end record: its directory may list members the chosen one does not. Scan those."""
    known = {e.local.offset for e in layout.entries if e.local}
    try:
        alt = zs.parse_layout(st.src, max_members=st.ctx.limits.max_members,
                              max_cd_bytes=st.ctx.limits.max_header_bytes, eocd_offset=eocd_offset)
    except (zs.ZipError, LimitExceeded):
        return
    for e in alt.entries:
        if e.local is None or e.local.offset in known or e.local.offset in st.scanned_offsets:
            continue
        st.scanned_offsets.add(e.local.offset)
        st.add("ZIP-CLOAKED-MEMBER", f"member {e.name!r} is listed only by the end record at {eocd_offset}",
               offset=e.local.offset)
        _scan_entry(st, e, f"{e.name} (alt-directory)", storages={})


def _names(st: _State, entries: list[zs.Entry]) -> None:
    exact: dict[str, list[zs.Entry]] = {}
    folded: dict[str, list[zs.Entry]] = {}
    for e in entries:
        exact.setdefault(e.name, []).append(e)
        folded.setdefault(e.name.casefold(), []).append(e)
        _name_shape(st, e)
    for name, group in exact.items():
        if len(group) > 1:
            st.add("ZIP-DUPLICATE-MEMBER", f"{len(group)} members named {name!r}: Python's zipfile reads the last "
                   f"(#{group[-1].index}), torch's reader binary-searches and may pick any; all were scanned",
                   offset=group[0].header_offset, evidence=", ".join(f"#{e.index}@{e.header_offset}" for e in group))
    for _key, group in folded.items():
        names = sorted({e.name for e in group})
        if len(names) > 1:
            st.add("ZIP-DUPLICATE-MEMBER", f"member names differ only in case: {', '.join(map(repr, names))}; "
                   "torch's reader matches names case-insensitively", offset=group[0].header_offset,
                   evidence=", ".join(map(repr, names)))


def _name_shape(st: _State, e: zs.Entry) -> None:
    from scanner.formats.pathcheck import escapes, lookalikes

    name = e.name
    unified = name.replace("\\", "/")
    parts = unified.split("/")
    spelled = escapes(name, lookalikes(st.ctx.rules))  # lookalikes: best-fit extractors read them as '..'
    if spelled is not None:
        shown = "" if spelled == name else f" (read as {spelled!r})"
        st.add("ARCHIVE-PATH-TRAVERSAL", f"member name {name!r}{shown} escapes the extraction folder",
               offset=e.header_offset, evidence=name)
    odd = []
    if "\\" in name:
        odd.append("backslash")
    if any(ord(c) < 32 or ord(c) == 0x7F for c in name):
        odd.append("control character")
    if any(p in ("", ".") for p in parts[:-1]) and not unified.startswith("/"):
        odd.append("empty or '.' path part")
    if e.flags & 0x800:
        try:
            e.name_raw.decode("utf-8")
        except UnicodeDecodeError:
            odd.append("invalid UTF-8 with the UTF-8 flag set")
    if len(parts) >= 2:
        rest = "/".join(parts[1:])
        if rest != rest.lower() and rest.lower() in st.cfg.record_names:
            odd.append("case-mangled torch record name")
        elif rest.lower().endswith(".pkl") and not rest.endswith(".pkl"):
            odd.append("case-mangled .pkl extension")
    if odd:
        st.add("ZIP-NONSTANDARD-NAME", f"member name {name!r}: {', '.join(odd)}", offset=e.header_offset,
               evidence=repr(e.name_raw[:200]))


def _compare_headers(st: _State, e: zs.Entry, shift: int) -> None:
    lh = e.local
    assert lh is not None
    if lh.name != e.name_raw:
        st.add("ZIP-NAME-MISMATCH", f"central directory says {e.name!r}, local header says "
               f"{zs.decode_name(lh.name, lh.flags)!r}", offset=lh.offset,
               evidence=f"central={e.name_raw[:120]!r} local={lh.name[:120]!r}")
    diffs = []
    if lh.flags != e.flags:
        diffs.append(f"flags central=0x{e.flags:04x} local=0x{lh.flags:04x}")
    if lh.method != e.method:
        diffs.append(f"method central={e.method} local={lh.method}")
    streamed = bool(lh.flags & 0x8)
    if not (streamed and lh.crc == 0) and lh.crc != e.crc:
        diffs.append(f"crc central=0x{e.crc:08x} local=0x{lh.crc:08x}")
    if not (streamed and lh.csize == 0) and lh.csize != e.csize:
        diffs.append(f"compressed size central={e.csize} local={lh.csize}")
    if not (streamed and lh.usize == 0) and lh.usize != e.usize:
        diffs.append(f"size central={e.usize} local={lh.usize}")
    if diffs:
        st.add("ZIP-HEADER-MISMATCH", f"member {e.name!r}: local header and central directory disagree",
               offset=lh.offset, evidence="; ".join(diffs))


def _flags(st: _State, e: zs.Entry) -> None:
    flags = e.flags | (e.local.flags if e.local else 0)
    reported: set[str] = set()
    for mask, rule, reason, _ref in st.cfg.flag_bits:
        if flags & mask and (rule, reason) not in reported:
            reported.add((rule, reason))
            st.add(rule, f"member {e.name!r}: flag bits 0x{flags & mask:04x}: {reason}", offset=e.header_offset,
                   evidence=f"flags=0x{flags:04x}")
    if e.method not in st.cfg.methods:
        st.add("ZIP-UNSUPPORTED-METHOD", f"member {e.name!r} uses compression method {e.method}; not scanned",
               offset=e.header_offset, evidence=f"method={e.method}")


def _link(st: _State, e: zs.Entry) -> None:
    host = e.made_by >> 8
    mode = e.external_attr >> 16
    if host == 3 and mode:
        kind = stat.S_IFMT(mode)
        if kind == stat.S_IFLNK:
            target = st.src.read_at(e.data_offset or 0, min(e.csize, 1024)) if e.method == 0 else b"?"
            st.add("ARCHIVE-LINK-MEMBER", f"member {e.name!r} is a symbolic link", offset=e.header_offset,
                   evidence=f"target={target[:300]!r}")
        elif kind not in (stat.S_IFREG, stat.S_IFDIR, 0):
            st.add("ARCHIVE-SPECIAL-MEMBER", f"member {e.name!r} has file type 0o{kind:o}", offset=e.header_offset)


# -- members ----------------------------------------------------------------------------------------------

def _members(st: _State, layout: zs.ZipLayout) -> None:
    from scanner.formats.zip import torch_zip as torchzip

    entries = [e for e in layout.entries if e.local is not None and not e.is_dir]
    plan = torchzip.plan(st, entries)
    for note in plan.findings:
        st.out.append(note)
    json_members: list[tuple[str, Source]] = []  # every copy: zip readers disagree on which duplicate wins
    seen_data: set[tuple[int, int, int]] = set()
    inside = _overlap_bomb(st, entries)
    for e in entries:
        if e.local is None:
            continue
        st.scanned_offsets.add(e.local.offset)
        if e.index in plan.handled or e.index in inside:
            continue
        key = (e.local.data_offset, e.csize, e.method)
        if key in seen_data:
            continue  # entries sharing one body (overlap bombs): scanned once, reported as overlapping
        seen_data.add(key)
        if e.name in ("config.json", "metadata.json") and e.method in st.cfg.methods:
            child, _ = _member_source(st, e, e.name)
            if child is not None:
                json_members.append((e.name, child))
        _scan_entry(st, e, e.name, storages=plan.storages)
    if any(name == "config.json" for name, _ in json_members):
        try:
            from scanner.formats.hdf5.keras import analyze_keras_zip
        except ImportError:
            return
        st.out.extend(analyze_keras_zip(st.src, json_members, st.ctx))


def _overlap_bomb(st: _State, entries: list[zs.Entry]) -> set[int]:
    """Members whose data lies inside another member's data (decided before inflating anything): reported as
    a bomb and not inflated again; the covering member, scanned, holds their bytes."""
    inside = zs.overlapping(entries)
    if inside:
        declared = sum(e.usize for e in entries if e.index in inside)
        first = next(iter(inside.values()))
        st.add("ARCHIVE-BOMB", f"{len(inside)} members' compressed data overlaps other members' (an "
               f"overlapping-entry bomb declaring {declared} bytes); only the covering members are inflated",
               offset=first.header_offset, evidence=f"overlapping={len(inside)} declared={declared}")
    return set(inside)


def _scan_entry(st: _State, e: zs.Entry, label: str, *, storages: dict[int, Any]) -> None:
    """Read one member (no copy when stored, bounded inflate otherwise) and scan it as a child."""
    if e.index in storages:
        return
    if e.method not in st.cfg.methods:
        return
    child, full = _member_source(st, e, label)
    if child is None:
        return
    if full is not None and e.index >= 0:
        _crc(st, e, full, child)
    elif isinstance(child, SpoolSource) and child.crc is not None and e.index >= 0:
        _crc_value(st, e, child.crc, child)
    elif e.method == 0 and e.usize <= CRC_READ_MAX and e.index >= 0:
        _crc(st, e, child.read_at(0, child.size), child)
    st.out.extend(st.ctx.scan_child(child))


def _crc(st: _State, e: zs.Entry, data: bytes, child: Source) -> None:
    _crc_value(st, e, zlib.crc32(data), child)


def _crc_value(st: _State, e: zs.Entry, crc: int, child: Source) -> None:
    crc &= 0xFFFFFFFF
    if crc != e.crc:
        st.add("ZIP-BAD-CRC", f"member {e.name!r}: CRC-32 0x{crc:08x} does not match the recorded 0x{e.crc:08x}",
               evidence=f"computed=0x{crc:08x} recorded=0x{e.crc:08x}", src=child)


def member_bytes(st: _State, e: zs.Entry, label: str) -> bytes | None:
    """Whole member content (bounded), or None when it cannot be read."""
    child, full = _member_source(st, e, label)
    if child is None:
        return None
    if full is not None:
        return full
    return child.read_all(st.ctx.limits.max_read_bytes)


def _member_source(st: _State, e: zs.Entry, label: str) -> tuple[Source | None, bytes | None]:
    """(source, inflated bytes or None for stored slices). Bombs and errors become findings."""
    assert e.local is not None
    src, ctx, lim = st.src, st.ctx, st.ctx.limits
    start = e.local.data_offset
    if start + e.csize > src.size:
        st.add("ZIP-MALFORMED", f"member {e.name!r}: data runs past the end of the file", offset=start,
               evidence=f"data at {start}, {e.csize} bytes, file {src.size}")
    if e.method == 0:
        if e.csize != e.usize:
            st.add("ZIP-HEADER-MISMATCH", f"stored member {e.name!r} has different compressed and uncompressed "
                   "sizes", offset=e.header_offset, evidence=f"csize={e.csize} usize={e.usize}")
        return src.child_slice(label, start, e.csize), None
    declared_ratio = e.usize / max(1, e.csize)
    cap = min(lim.max_member_bytes, lim.max_read_bytes)
    bomb = e.usize > cap or (e.usize > _ratio_floor(lim) and declared_ratio > lim.max_ratio)
    if bomb:
        st.add("ARCHIVE-BOMB", f"member {e.name!r} declares {e.usize} bytes from {e.csize} "
               f"(ratio {declared_ratio:.0f}); not inflated whole, first {BOMB_HEAD} bytes scanned",
               offset=e.header_offset, evidence=f"usize={e.usize} csize={e.csize} limit={cap} ratio<={lim.max_ratio}")
        cap = BOMB_HEAD
    else:
        cap = min(cap, e.usize)
    try:
        props = b""
        kind = {8: "deflate", 12: "bz2", 14: "lzma-zip"}[e.method]
        skip = 0
        if e.method == 14:
            hdr = src.read_at(start, 4)
            plen = int.from_bytes(hdr[2:4], "little") if len(hdr) == 4 else 0
            props = src.read_at(start + 4, plen)
            skip = 4 + plen
        decomp = make_decompressor(kind, props)
    except (KeyError, ValueError, Exception) as ex:  # noqa: BLE001 - lzma props may be garbage
        st.add("ZIP-MALFORMED", f"member {e.name!r}: cannot set up decompression: {type(ex).__name__}",
               offset=start)
        return None, None
    spool = Spool()  # large members go to a temporary file, never into memory whole
    res = inflate(src, start + skip, e.csize - skip, decomp, cap=cap, max_ratio=lim.max_ratio,
                  ratio_floor=_ratio_floor(lim), charge=lambda n: ctx.charge(n, src), sink=spool)
    if res.error:
        st.add("ZIP-MALFORMED", f"member {e.name!r}: compressed data is corrupt ({res.error}); scanned what "
               "inflated", offset=start)
    elif res.bomb and not bomb:
        st.add("ARCHIVE-BOMB", f"member {e.name!r} inflates beyond ratio {lim.max_ratio}; stopped at "
               f"{res.size} bytes", offset=e.header_offset)
    elif res.over_cap and not bomb:
        st.add("ZIP-HEADER-MISMATCH", f"member {e.name!r} inflates to more than its declared {e.usize} bytes",
               offset=e.header_offset, evidence=f"declared={e.usize}")
    elif not res.eof and not bomb:
        st.add("ZIP-MALFORMED", f"member {e.name!r}: compressed stream is truncated", offset=start)
    elif res.size != e.usize and not bomb:
        st.add("ZIP-HEADER-MISMATCH", f"member {e.name!r} inflates to {res.size} bytes, declared {e.usize}",
               offset=e.header_offset)
    child = spool.source(src, label)
    whole = not bomb and res.eof and not res.over_cap
    if isinstance(child, SpoolSource):
        child.crc = spool.crc if whole else None
        return child, None
    return child, (as_bytes(child) if whole else None)


def _ratio_floor(lim: Any) -> int:
    return int(getattr(lim, "min_bomb_bytes", 16 * 1024 * 1024))


def _polyglot_check(st: _State, start: int, length: int, where: str) -> None:
    from scanner.context import NOT_A_MODEL
    from scanner.sniff import sniff

    fmt = sniff(st.src.child_slice("<probe>", start, length))
    if fmt not in NOT_A_MODEL:
        st.add("POLYGLOT", f"{where}: {length} bytes of {fmt} content that other loaders read", offset=start,
               evidence=f"sniffed={fmt}")


def _scan_region(st: _State, start: int, length: int, label: str) -> None:
    child = st.src.child_slice(label, start, length)
    st.out.extend(st.ctx.scan_child(child))
