"""Legacy PyTorch serialization (before the zip format, T06) and the legacy tar layout (T07).

Stacked format: magic-number pickle, protocol-version pickle, sys_info pickle, the main pickle (persistent ids
name storages), the sorted storage-key list pickle, then for each key: 8-byte little-endian element count and
count x element-size raw bytes. Every pickle is scanned; storages are skipped by their declared sizes (never
read); anything left over is reported."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Any

from scanner.findings import Finding
from scanner.record import field, record
from scanner.source import LimitExceeded, Source

MAGIC = 0x1950A86A20F9469CFC6C
PROTOCOL_VERSION = 1001
_MAGIC_LONG1 = b"\x8a\x0a" + MAGIC.to_bytes(10, "little")
FIRST_WINDOW = 1 << 20
LEGACY_TAR_MEMBERS = frozenset({"sys_info", "pickle", "tensors", "storages"})


def is_legacy_torch(head: bytes) -> bool:
    """Does the stream start with a pickle of torch's legacy magic number?"""
    pos = 0
    if head[:1] == b"\x80" and len(head) >= 2:
        pos = 2
        if head[pos:pos + 1] == b"\x95":  # protocol 4+ FRAME
            pos += 9
    if head[pos:pos + 12] == _MAGIC_LONG1:
        return True
    for op in (b"L", b"I"):
        text = op + str(MAGIC).encode()
        if head[pos:pos + len(text)] == text:
            return True
    return False


@record
class _Stack:
    """Reads pickles one after another from a growing prefix of the source."""

    src: Source
    ctx: Any
    out: list[Finding] = field(default_factory=list)
    data: bytes = b""
    pos: int = 0

    def pickle(self, what: str) -> Any | None:
        from scanner.formats.pickle.scan import scan_pickle

        want = FIRST_WINDOW
        while True:
            if len(self.data) < min(self.src.size, self.pos + want):
                limit = self.ctx.limits.max_read_bytes
                if self.pos + want > limit and self.src.size > limit:
                    raise LimitExceeded("max_read_bytes", f"legacy torch {what} pickle is larger than the read limit",
                                        self.src.loc(self.pos))
                self.data = self.src.read_at(0, min(self.src.size, self.pos + want))
            results = scan_pickle(self.src, self.ctx, self.data, self.pos, multi=False)
            if not results:
                self.out.append(self.ctx.finding("TORCH-MALFORMED", f"no {what} pickle where one must be", self.src,
                                                 offset=self.pos))
                return None
            r = results[0]
            if not r.complete and len(self.data) < self.src.size and r.end >= len(self.data) - 16:
                want *= 4
                continue
            self.out.extend(r.findings)
            if not r.complete:
                self.out.append(self.ctx.finding("TORCH-MALFORMED", f"the {what} pickle does not parse to its end",
                                                 self.src, offset=self.pos))
                return None
            self.pos = r.end
            return r


def analyze(src: Source, ctx: Any) -> Iterator[Finding]:
    return analyze_legacy(src, ctx)


def analyze_legacy(src: Source, ctx: Any) -> list[Finding]:
    st = _Stack(src, ctx)
    st.out.append(ctx.finding("TORCH-LEGACY-FORMAT", "legacy PyTorch stacked-pickle file", src, offset=0))
    try:
        _walk(st)
    except ImportError:
        st.out.append(ctx.finding("TORCH-MALFORMED", "pickle engine unavailable; legacy file not scanned", src))
    return st.out


def _walk(st: _Stack) -> None:
    src, ctx = st.src, st.ctx
    magic = st.pickle("magic number")
    if magic is None:
        return _rest(st)
    if magic.value != MAGIC:
        st.out.append(ctx.finding("TORCH-MALFORMED", "first pickle is not torch's magic number", src,
                                  offset=magic.start, evidence=_short(magic.value)))
    proto = st.pickle("protocol version")
    if proto is None:
        return _rest(st)
    if proto.value != PROTOCOL_VERSION:
        st.out.append(ctx.finding("TORCH-MALFORMED", f"protocol version {_short(proto.value)}, torch expects "
                                  f"{PROTOCOL_VERSION}", src, offset=proto.start))
    if st.pickle("sys_info") is None:
        return _rest(st)
    main = st.pickle("main")
    if main is None:
        return _rest(st)
    keys = st.pickle("storage keys")
    if keys is None:
        return _rest(st)
    declared = _declared_storages(st, main.persistent_ids)
    if not isinstance(keys.value, list) or not all(isinstance(k, str) for k in keys.value):
        st.out.append(ctx.finding("TORCH-MALFORMED", "storage key list is not a list of strings: raw storage "
                                  "bytes cannot be delimited", src, offset=keys.start, evidence=_short(keys.value)))
        return _rest(st, scan=False)
    elem_sizes = _element_sizes(ctx)
    pos = st.pos
    for key in keys.value:
        decl = declared.get(key)
        if decl is None:
            st.out.append(ctx.finding("TORCH-MALFORMED", f"storage key {key!r} is not referenced by the main pickle",
                                      src, offset=pos))
            return _rest(st, scan=False, at=pos)
        type_name, numel = decl
        elem = elem_sizes.get(type_name)
        raw = src.read_at(pos, 8)
        if elem is None or len(raw) < 8:
            st.out.append(ctx.finding("TORCH-MALFORMED", f"storage {key!r}: unknown type {type_name!r} or "
                                      "truncated size field", src, offset=pos))
            return _rest(st, scan=False, at=pos)
        (count,) = struct.unpack("<q", raw)
        if count < 0:
            st.out.append(ctx.finding("TORCH-MALFORMED", f"storage {key!r}: negative element count", src, offset=pos))
            return _rest(st, scan=False, at=pos)
        if isinstance(numel, int) and count != numel:
            st.out.append(ctx.finding("TORCH-STORAGE-SIZE-MISMATCH", f"storage {key!r}: file says {count} "
                                      f"elements, the pickle declares {numel}", src, offset=pos,
                                      evidence=f"file={count} declared={numel} type={type_name}"))
        pos += 8 + count * elem
        if pos > src.size:
            st.out.append(ctx.finding("TORCH-MALFORMED", f"storage {key!r} runs past the end of the file", src,
                                      offset=pos - count * elem))
            return None
    if pos < src.size:
        st.pos = pos
        _rest(st, at=pos)
    return None


def _rest(st: _Stack, *, scan: bool = True, at: int | None = None) -> None:
    pos = st.pos if at is None else at
    left = st.src.size - pos
    if left <= 0:
        return
    st.out.append(st.ctx.finding("TORCH-MALFORMED", f"{left} bytes after the last storage are not accounted for",
                                 st.src, offset=pos, evidence=repr(st.src.read_at(pos, 32))))
    if scan:
        st.out.extend(st.ctx.scan_child(st.src.child_slice(f"<unaccounted bytes at {pos}>", pos, left)))


def _declared_storages(st: _Stack, pids: list[object]) -> dict[str, tuple[str, object]]:
    out: dict[str, tuple[str, object]] = {}
    for pid in pids:
        if (isinstance(pid, (tuple, list)) and len(pid) >= 5 and pid[0] == "storage"
                and isinstance(pid[2], str) and isinstance(getattr(pid[1], "name", None), str)):
            out.setdefault(pid[2], (pid[1].name, pid[4]))
        elif _module_pid(pid):
            continue  # the class was imported by the pickle itself (checked by the pickle policy)
        else:
            st.out.append(st.ctx.finding("TORCH-MALFORMED", "persistent id of unexpected shape", st.src,
                                         evidence=_short(pid)))
    return out


def _element_sizes(ctx: Any) -> dict[str, int]:
    table = ctx.rules.doc("containers").get("torch", {}).get("element_size", {})
    return {k: int(v) for k, v in table.items()}


# -- legacy tar (torch <= 0.1.x) ------------------------------------------------------------------------------

def analyze_legacy_tar(members: dict[str, Source], ctx: Any) -> list[Finding]:
    """`storages` and `tensors` interleave pickles with raw bytes: walk them the way torch's legacy_load does,
    then scan `pickle`, whose persistent ids are the string keys those records declared."""
    from scanner.formats.pickle.scan import scan_pickle
    from scanner.record import replace

    out: list[Finding] = []
    keys: set[str] = set()
    if "storages" in members:
        out.extend(_walk_tar_member(members["storages"], ctx, _storages_record, keys))
    if "tensors" in members:
        extra = tuple(ctx.rules.doc("containers").get("torch", {}).get("legacy_tensor_types", []))
        tctx = _with_policy(ctx, replace(ctx.policy, allow_globals=tuple(ctx.policy.allow_globals) + extra))
        out.extend(_walk_tar_member(members["tensors"], tctx, _tensors_record, keys))
    main = members.get("pickle")
    if main is not None:
        data = main.read_all(ctx.limits.max_read_bytes)
        results = scan_pickle(main, _with_policy(ctx, ctx.policy), data, 0, multi=True)
        pids = [p for r in results for p in r.persistent_ids]
        known = all(isinstance(p, str) and p in keys or _container_pid(p) for p in pids)
        for r in results:
            out.extend(f for f in r.findings if not (known and f.rule_id == "PICKLE-PERSISTENT-ID"))
    return out


def _container_pid(pid: object) -> bool:
    """('module', <class>, source file, source): torch 0.1 saved module sources next to the class."""
    return (isinstance(pid, tuple) and len(pid) == 4 and pid[0] == "module"
            and all(isinstance(x, str) for x in pid[2:]))


def _module_pid(pid: object) -> bool:
    """Whole-module torch.save: ('module', <class>, source file, source). torch/serialization.py
    _legacy_load.persistent_load returns data[0], the class the pickle's own GLOBAL imported (the policy
    judges it there); source file and source are None when inspect could not read them, and only feed a
    warning (_check_container_source)."""
    from scanner.formats.pickle.values import Global

    return (isinstance(pid, tuple) and len(pid) == 4 and pid[0] == "module" and isinstance(pid[1], Global)
            and all(x is None or isinstance(x, str) for x in pid[2:]))


def _with_policy(ctx: Any, policy: Any) -> Any:
    from scanner.formats.zip.torch_zip import child_context

    return child_context(ctx, policy)


def _walk_tar_member(src: Source, ctx: Any, record: Any, keys: set[str]) -> list[Finding]:
    st = _Stack(src, ctx)
    count = st.pickle("count")
    if count is None:
        return st.out
    n = count.value
    if not isinstance(n, int) or n < 0 or n > ctx.limits.max_members:
        st.out.append(ctx.finding("TORCH-MALFORMED", "record count is not a small non-negative integer", src,
                                  evidence=_short(n)))
        return st.out
    for _ in range(n):
        if not record(st, keys):
            return st.out
    if src.name == "storages":
        st.pickle("storage views")
    if st.pos < src.size:
        _rest(st)
    return st.out


def _storages_record(st: _Stack, keys: set[str]) -> bool:
    args = st.pickle("storage record")
    if args is None:
        return False
    v = args.value
    if isinstance(v, (tuple, list)) and v and isinstance(v[0], str):
        keys.add(v[0])
    type_name = getattr(v[2], "name", None) if isinstance(v, (tuple, list)) and len(v) == 3 else None
    elem = _element_sizes(st.ctx).get(type_name or "")
    raw = st.src.read_at(st.pos, 8)
    if elem is None or len(raw) < 8:
        st.out.append(st.ctx.finding("TORCH-MALFORMED", "storage record of unexpected shape", st.src, offset=st.pos,
                                     evidence=_short(v)))
        return False
    (count,) = struct.unpack("<q", raw)
    end = st.pos + 8 + count * elem
    if count < 0 or end > st.src.size:
        st.out.append(st.ctx.finding("TORCH-MALFORMED", "storage runs past the end of the member", st.src,
                                     offset=st.pos))
        return False
    st.pos = end
    return True


def _tensors_record(st: _Stack, keys: set[str]) -> bool:
    rec = st.pickle("tensor record")
    if rec is None:
        return False
    if isinstance(rec.value, (tuple, list)) and rec.value and isinstance(rec.value[0], str):
        keys.add(rec.value[0])
    raw = st.src.read_at(st.pos, 8)
    if len(raw) < 8:
        return False
    (ndim,) = struct.unpack_from("<i", raw)
    if ndim < 0 or ndim > 64:
        st.out.append(st.ctx.finding("TORCH-MALFORMED", f"tensor record with {ndim} dimensions", st.src,
                                     offset=st.pos))
        return False
    end = st.pos + 8 + 16 * ndim + 8
    if end > st.src.size:
        st.out.append(st.ctx.finding("TORCH-MALFORMED", "tensor record runs past the end of the member", st.src,
                                     offset=st.pos))
        return False
    st.pos = end
    return True


def _short(v: object, n: int = 200) -> str:
    s = repr(v)
    return s if len(s) <= n else s[:n] + "…"
