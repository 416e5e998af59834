"""Archives and compressed streams (formats tar, gzip, bz2, xz, lzma, zlib, 7z): bounded streaming
decompression (joblib's compressed pickles included), tar members with traversal / link / device checks,
nesting through `ctx.scan_child` (depth-limited by the engine)."""

from __future__ import annotations

import re
import tarfile
from collections.abc import Iterator
from typing import Any

from scanner.findings import Finding, Severity
from scanner.formats.archives.inflate import Inflated, Spool, inflate, make_decompressor
from scanner.sniff import ZF_HEADER, joblib_zf_length
from scanner.source import LimitExceeded, Source

DRIVE = re.compile(r"^[A-Za-z]:")
STREAM_MAGIC = {"gzip": b"\x1f\x8b", "bz2": b"BZh", "xz": b"\xfd7zXZ\x00"}
BOMB_HEAD = 1 << 20
ARCHIVE_FORMATS = frozenset({"tar", "7z", "gzip", "bz2", "xz", "lzma", "zlib", "lz4"})


def analyze(src: Source, ctx: Any) -> Iterator[Finding]:
    from scanner.sniff import is_tar_header, joblib_codec, sniff

    fmt = sniff(src)
    if fmt not in ARCHIVE_FORMATS:  # routed here as an alternate reading of a polyglot (engine._alternates)
        fmt = joblib_codec(src) or ("tar" if is_tar_header(src.head(512)) else fmt)
    out: list[Finding] = []
    try:
        if fmt == "tar":
            _tar(src, ctx, out)
        elif fmt == "7z":
            from scanner.formats.archives.sevenzip import analyze_7z

            out.extend(analyze_7z(src, ctx))
        elif fmt in ("gzip", "bz2", "xz", "lzma", "zlib", "lz4"):
            _stream(src, ctx, fmt, out)
        else:
            out.append(ctx.finding("ARCHIVE-MALFORMED", f"archive analyzer got content sniffed as {fmt}", src))
    except LimitExceeded as e:  # a bound stopped the work: keep what was found before it
        out.extend(ctx.limit_findings(e, src))
    return out


def _lim(ctx: Any) -> tuple[int, int]:
    cap = min(ctx.limits.max_member_bytes, ctx.limits.max_read_bytes)
    return cap, int(getattr(ctx.limits, "min_bomb_bytes", 16 * 1024 * 1024))


def _stream(src: Source, ctx: Any, fmt: str, out: list[Finding]) -> list[Finding]:
    cap, floor = _lim(ctx)
    start = 0
    kind = {"gzip": "gzip", "bz2": "bz2", "xz": "xz", "lzma": "lzma-alone", "zlib": "zlib", "lz4": "lz4"}[fmt]
    if fmt == "zlib" and src.head(2) == b"ZF":
        # joblib skips one space after the length (python 2 era writers)
        start = ZF_HEADER + (src.read_at(ZF_HEADER, 1) == b" ")
        if joblib_zf_length(src.head(ZF_HEADER)) is None:
            out.append(ctx.finding("ARCHIVE-MALFORMED", "joblib ZF header with an unreadable length", src, offset=0))
    # concatenated members form one content; it never sits in memory whole, and a tar inside is counted as
    # it comes out, so a listing bomb stops before it is inflated
    spool = Spool(watch=TarCounter(ctx.limits.max_members, src).feed)
    total = 0
    pos = start
    streams = 0
    while pos < src.size:
        streams += 1
        if streams > ctx.limits.max_pickle_streams:
            out.append(ctx.finding("LIMIT-EXCEEDED", "too many concatenated compressed streams", src, offset=pos,
                                   evidence="max_pickle_streams"))
            break
        if fmt == "gzip":
            out.extend(gzip_header_checks(src, ctx, pos))
        try:
            decomp = make_decompressor(kind)
        except (ValueError, Exception) as e:  # noqa: BLE001 - lzma may reject settings
            out.append(ctx.finding("ARCHIVE-MALFORMED", f"cannot start {fmt} decompression: {e}", src, offset=pos))
            break
        res: Inflated = inflate(src, pos, src.size - pos, decomp, cap=cap - total, max_ratio=ctx.limits.max_ratio,
                                ratio_floor=floor, charge=lambda n: ctx.charge(n, src), sink=spool)
        total += res.size
        if res.error:
            out.append(ctx.finding("ARCHIVE-MALFORMED", f"{fmt} stream is corrupt: {res.error}; scanned what "
                                   "decompressed", src, offset=pos))
            break
        if res.bomb:
            out.append(ctx.finding("ARCHIVE-BOMB", f"{fmt} stream inflates beyond ratio {ctx.limits.max_ratio}; "
                                   f"stopped at {total} bytes", src, offset=pos,
                                   evidence=f"out={total} in={res.consumed}"))
            break
        if res.over_cap:
            out.append(ctx.finding("ARCHIVE-BOMB", f"{fmt} stream inflates beyond {cap} bytes; stopped", src,
                                   offset=pos, evidence=f"cap={cap}"))
            break
        if not res.eof:
            out.append(ctx.finding("ARCHIVE-MALFORMED", f"{fmt} stream is truncated; scanned what decompressed",
                                   src, offset=pos))
            break
        end = pos + res.consumed - len(res.unused)
        pos = end
        rest = src.read_at(pos, 8)
        if not rest:
            break
        magic = STREAM_MAGIC.get(fmt)
        if magic and rest.startswith(magic):
            continue  # multi-member stream: readers concatenate
        if magic and fmt in ("gzip", "xz") and rest[:1] == b"\x00":
            # NUL padding between members / streams (xz stream padding, gzip zero padding): readers skip it
            # and go on with the next stream, so the scan must too
            nxt = _skip_nuls(src, pos)
            if nxt < src.size and src.read_at(nxt, len(magic)) == magic:
                pos = nxt
                continue
        if fmt == "gzip" and rest.strip(b"\x00") == b"" and src.read_at(pos, src.size - pos).strip(b"\x00") == b"":
            break  # zero padding, which gzip readers skip
        out.append(ctx.finding("ARCHIVE-TRAILING-DATA", f"{src.size - pos} bytes after the end of the {fmt} stream",
                               src, offset=pos, evidence=repr(rest)))
        out.extend(ctx.scan_child(src.child_slice(f"<after {fmt} stream>", pos, src.size - pos)))
        break
    inner = spool.source(src, _inner_name(src, fmt))
    try:
        out.extend(ctx.scan_child(inner))
    finally:
        inner.close()
    return out


class TarCounter:
    """Counts tar member headers in a stream as it is inflated (only when the stream starts like a tar) and
    raises LimitExceeded past `limit`: tar.gz listing bombs are refused without inflating them whole."""

    _META = frozenset(b"xgLKX")  # pax / GNU long-name headers describe the next member: not members

    def __init__(self, limit: int, src: Source) -> None:
        self.limit, self.src = limit, src
        self.buf = bytearray()   # bytes from `base` on
        self.base = 0            # stream offset of buf[0]
        self.next = 0            # stream offset of the next header
        self.count = 0
        self.active: bool | None = None

    def feed(self, data: bytes) -> None:
        if self.active is False:
            return
        self.buf += data
        while self.next + 512 <= self.base + len(self.buf):
            at = self.next - self.base
            hdr = bytes(self.buf[at:at + 512])
            if self.active is None:
                self.active = _is_tar_header(hdr)
                if not self.active:
                    self.buf.clear()
                    return
            if hdr == bytes(512):
                self.next += 512
                continue
            size = _tar_size(hdr[124:136])
            if size is None:
                self.active = False  # tarfile reports the bad header; nothing more to count
                self.buf.clear()
                return
            if hdr[156] not in self._META:
                self.count += 1
                if self.count > self.limit:
                    raise LimitExceeded("max_members", f"more than {self.limit} tar members (counted while "
                                        "decompressing; the archive was not inflated further)", self.src.loc())
            self.next += 512 + (size + 511) // 512 * 512
        drop = min(len(self.buf), self.next - self.base)
        if drop > 0:
            del self.buf[:drop]
            self.base += drop


def _is_tar_header(hdr: bytes) -> bool:
    if hdr[257:262] == b"ustar":
        return True
    digits = hdr[148:156].replace(b"\x00", b" ").strip()
    try:
        return int(digits or b"x", 8) == sum(hdr[:148]) + 256 + sum(hdr[156:])
    except ValueError:
        return False


def _tar_size(field: bytes) -> int | None:
    if field[:1] in (b"\x80", b"\xff"):  # base-256 (GNU)
        n = int.from_bytes(field[1:], "big")
        return None if field[:1] == b"\xff" else n
    digits = field.replace(b"\x00", b" ").strip()
    try:
        return int(digits or b"0", 8)
    except ValueError:
        return None


def _skip_nuls(src: Source, pos: int, limit: int = 1 << 20) -> int:
    end = min(src.size, pos + limit)
    while pos < end:
        chunk = src.read_at(pos, min(65536, end - pos))
        stripped = chunk.lstrip(b"\x00")
        pos += len(chunk) - len(stripped)
        if stripped:
            break
    return pos


def gzip_header_checks(src: Source, ctx: Any, pos: int = 0) -> list[Finding]:
    """RFC 1952 optional header fields: FEXTRA can carry any bytes (scanned when they start like a code-bearing
    format), FNAME is the name `gunzip -N` restores (checked like a member name)."""
    from scanner.sniff import sniff

    head = src.read_at(pos, 10)
    if len(head) < 10 or head[3] & 0x1C == 0:
        return []
    flags, p, out = head[3], pos + 10, []
    if flags & 0x04:
        xlen = int.from_bytes(src.read_at(p, 2), "little")
        extra = src.read_at(p + 2, xlen)
        parts, q = [(0, extra)], 0
        while q + 4 <= len(extra):  # subfields: 2-byte id, 2-byte length, data
            n = int.from_bytes(extra[q + 2:q + 4], "little")
            parts.append((q + 4, extra[q + 4:q + 4 + n]))
            q += 4 + n
        for rel, blob in parts:
            child = src.child_bytes(f"<gzip FEXTRA@{p + 2 + rel}>", blob)
            fmt = sniff(child) if blob else "empty"
            if fmt not in ("data", "text", "empty"):
                out.append(ctx.finding("POLYGLOT", f"gzip FEXTRA field holds a {fmt} stream ({len(blob)} bytes)",
                                       src, offset=p + 2 + rel, evidence=blob[:24].hex()))
                out.extend(ctx.scan_child(child, fmt))
                break
        p += 2 + xlen
    if flags & 0x08:
        raw = src.read_at(p, 4096)
        name = raw.split(b"\x00", 1)[0]
        # Python's gzip never reads FNAME and `gunzip -N` keeps only its base name (gzip.c get_method:
        # gzip_base_name), while Python <= 2.6 stored the path it was given (`/tmp/x.nii`): a note, not an escape
        for f in member_name_checks(src, ctx, name.decode("latin-1"), p):
            if f.rule_id == "ARCHIVE-PATH-TRAVERSAL":
                f = ctx.finding(f.rule_id, f"gzip FNAME {f.evidence!r} names a path outside the folder; gunzip -N "
                                "restores only its base name", src, offset=p, evidence=f.evidence,
                                severity=Severity.LOW)
            out.append(f)
    return out


def _inner_name(src: Source, fmt: str) -> str:
    base = src.name
    for ext in (".gz", ".gzip", ".bz2", ".xz", ".lzma", ".z", ".zlib", ".lz4", ".tgz"):
        if base.lower().endswith(ext):
            base = base[: -len(ext)] + (".tar" if ext == ".tgz" else "")
            break
    return f"<{fmt}>{base}" if base else f"<{fmt} content>"


# -- tar ------------------------------------------------------------------------------------------------------

def _tar(src: Source, ctx: Any, out: list[Finding]) -> list[Finding]:
    members: list[tarfile.TarInfo] = []
    fh = src.open()
    try:
        tf = tarfile.open(fileobj=fh, mode="r:")  # noqa: SIM115 - closed below
        try:
            while True:
                if len(members) >= ctx.limits.max_members:
                    out.append(ctx.finding("LIMIT-EXCEEDED", f"more than {ctx.limits.max_members} tar members", src,
                                           evidence="max_members"))
                    break
                try:
                    info = tf.next()
                except (tarfile.TarError, EOFError, ValueError) as e:
                    out.append(ctx.finding("ARCHIVE-MALFORMED", f"tar header error after {len(members)} members: {e}",
                                           src))
                    break
                if info is None:
                    break
                members.append(info)
        finally:
            tf.members = []
            tf.close()
    except (tarfile.TarError, EOFError, ValueError) as e:
        out.append(ctx.finding("ARCHIVE-MALFORMED", f"not a readable tar archive: {e}", src, offset=0))
        return out
    finally:
        fh.close()
    seen: dict[str, int] = {}
    regular: dict[str, Source] = {}
    for m in members:
        seen[m.name] = seen.get(m.name, 0) + 1
        out.extend(_tar_member_checks(src, ctx, m))
        if m.isreg():
            if m.offset_data + m.size > src.size:
                out.append(ctx.finding("ARCHIVE-MALFORMED", f"tar member {m.name!r} runs past the end of the file",
                                       src, offset=m.offset))
            regular[m.name] = src.child_slice(m.name, m.offset_data, m.size)
    for name, n in seen.items():
        if n > 1:
            out.append(ctx.finding("ARCHIVE-MALFORMED", f"{n} tar members named {name!r}: extraction keeps the last, "
                                   "readers by name may take either; all scanned", src, evidence=name))
    legacy = set(regular) >= {"pickle", "storages", "tensors"}
    if legacy:
        from scanner.formats.zip.torch_legacy import analyze_legacy_tar

        try:
            out.extend(analyze_legacy_tar(regular, ctx))
        except ImportError:
            out.append(ctx.finding("TORCH-MALFORMED", "pickle engine unavailable; legacy torch tar not scanned", src))
    for m in members:
        if not m.isreg():
            continue
        if legacy and m.name in ("storages", "tensors", "pickle"):
            continue
        out.extend(ctx.scan_child(src.child_slice(m.name, m.offset_data, m.size)))
    return out


def member_name_checks(src: Source, ctx: Any, name: str, offset: int | None = None) -> list[Finding]:
    from scanner.formats.pathcheck import escapes, lookalikes

    # lookalike spellings too: extractors on Windows code pages turn fullwidth dots into '..'
    spelled = escapes(name, lookalikes(ctx.rules))
    if spelled is not None:
        shown = "" if spelled == name else f" (read as {spelled!r})"
        return [ctx.finding("ARCHIVE-PATH-TRAVERSAL", f"member {name!r}{shown} escapes the extraction folder", src,
                            offset=offset, evidence=name)]
    return []


def _tar_member_checks(src: Source, ctx: Any, m: tarfile.TarInfo) -> list[Finding]:
    name = m.name
    out = member_name_checks(src, ctx, name, m.offset)
    if m.issym() or m.islnk():
        target = m.linkname
        kind = "symbolic" if m.issym() else "hard"
        out.append(ctx.finding("ARCHIVE-LINK-MEMBER", f"tar member {name!r} is a {kind} link to {target!r}", src,
                               offset=m.offset, evidence=f"{name} -> {target}"))
    elif m.ischr() or m.isblk() or m.isfifo() or m.issparse() or not (m.isreg() or m.isdir()):
        out.append(ctx.finding("ARCHIVE-SPECIAL-MEMBER", f"tar member {name!r} is of type {m.type!r}", src,
                               offset=m.offset, evidence=f"type={m.type!r}"))
    return out
