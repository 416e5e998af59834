"""7z archives through py7zr (pure Python, imported lazily): member checks, declared-size bombs, bounded
extraction into memory, every member scanned. Without py7zr the archive is reported unscanned."""

from __future__ import annotations

from typing import Any

from scanner.findings import Finding
from scanner.source import LimitExceeded, Source


class _Overflow(Exception):
    pass


def analyze_7z(src: Source, ctx: Any) -> list[Finding]:
    try:
        import py7zr
        from py7zr.io import Py7zIO, WriterFactory
    except ImportError:
        return [ctx.finding("ARCHIVE-UNSCANNED", "7z archive: py7zr is not installed, members not scanned",
                            src, offset=0, evidence="7z")]
    cap = min(ctx.limits.max_member_bytes, ctx.limits.max_read_bytes)
    out: list[Finding] = []
    fh = src.open()
    try:
        try:
            archive = py7zr.SevenZipFile(fh, mode="r")
        except Exception as e:  # noqa: BLE001 - py7zr raises many types on hostile headers
            return [ctx.finding("ARCHIVE-MALFORMED", f"not a readable 7z archive: {type(e).__name__}: {e}", src,
                                offset=0)]
        with archive:
            try:
                infos = archive.list()
                encrypted = archive.needs_password()
            except Exception as e:  # noqa: BLE001
                return [ctx.finding("ARCHIVE-MALFORMED", f"7z header unreadable: {type(e).__name__}: {e}", src)]
            if len(infos) > ctx.limits.max_members:
                return [ctx.finding("LIMIT-EXCEEDED", f"more than {ctx.limits.max_members} 7z members", src,
                                    evidence="max_members")]
            if encrypted:
                return [ctx.finding("ARCHIVE-UNSCANNED", "7z archive is encrypted: members cannot be scanned", src,
                                    evidence="encrypted")]
            from scanner.formats.archives.archive import member_name_checks

            declared = 0
            for info in infos:
                out.extend(member_name_checks(src, ctx, info.filename))
                if info.is_symlink:
                    out.append(ctx.finding("ARCHIVE-LINK-MEMBER", f"7z member {info.filename!r} is a symbolic link",
                                           src, evidence=info.filename))
                declared += int(info.uncompressed or 0)
            floor = int(getattr(ctx.limits, "min_bomb_bytes", 16 << 20))
            if declared > cap or (declared > floor and declared > ctx.limits.max_ratio * max(src.size, 1)):
                out.append(ctx.finding("ARCHIVE-BOMB", f"7z members declare {declared} bytes from {src.size}; "
                                       "not extracted", src, evidence=f"declared={declared} cap={cap}"))
                return out
            members: dict[str, bytearray] = {}
            # headers can lie about sizes: bound the real output by the cap and by the ratio as it streams
            budget = {"left": min(cap, max(floor, ctx.limits.max_ratio * max(src.size, 1)))}

            class Sink(Py7zIO):
                def __init__(self, name: str) -> None:
                    self.buf = members.setdefault(name, bytearray())

                def write(self, s: bytes | bytearray) -> int:
                    budget["left"] -= len(s)
                    if budget["left"] < 0:
                        raise _Overflow(f"7z members inflate beyond the cap or ratio {ctx.limits.max_ratio}; stopped")
                    ctx.charge(len(s), src)
                    self.buf += s
                    return len(s)

                def read(self, size: int | None = None) -> bytes:
                    return b""

                def seek(self, offset: int, whence: int = 0) -> int:
                    return 0

                def flush(self) -> None:
                    return None

                def size(self) -> int:
                    return len(self.buf)

            class Factory(WriterFactory):
                def create(self, filename: str) -> Py7zIO:
                    return Sink(filename)

            try:
                archive.extractall(factory=Factory())
            except _Overflow as e:
                out.append(ctx.finding("ARCHIVE-BOMB", str(e), src, evidence=f"cap={cap}"))
            except LimitExceeded as e:  # the file's shared budget (bytes, deadline) ran out while extracting
                out.extend(ctx.limit_findings(e, src))
                return out
            except Exception as e:  # noqa: BLE001 - corrupt streams: scan what came out, report the rest
                out.append(ctx.finding("ARCHIVE-MALFORMED", f"7z extraction failed: {type(e).__name__}: {e}; "
                                       "scanned what was extracted", src))
    finally:
        fh.close()
    for name, data in members.items():
        out.extend(ctx.scan_child(src.child_bytes(name, bytes(data))))
    return out
