"""HDF5 containers: the object graph, link records, dataset creation properties and string attributes.

Never read: dataset values, external link targets, soft link targets, filter plugins. The HDF5 C library is
not hardened against hostile files, so the walk runs in a forked child (`scanner.sandbox`) with a deadline
and a memory cap; it hands back JSON (`hdf5_result`), and Keras `model_config` / `training_config`
attributes are walked here, in the parent, by the Keras config walker.
"""

from __future__ import annotations

import itertools
import os
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from scanner import sandbox
from scanner.findings import Finding
from scanner.formats.hdf5 import heap as hdf5_heap
from scanner.formats.hdf5 import result as hdf5_result
from scanner.formats.hdf5.result import ConfigText, RawFinding, WalkResult
from scanner.source import BytesSource, FileSource, LimitExceeded, Source

if TYPE_CHECKING:
    from scanner.context import ScanContext

# HDF5 looks for plugins here; a path under /dev/null can never be a directory
_NO_PLUGINS = "/dev/null/modelseal-no-hdf5-plugins"
_MAX_PER_RULE = 100


def _h5py() -> Any:
    """Import h5py with filter-plugin loading disabled before the HDF5 library initializes."""
    if "h5py" not in sys.modules:
        os.environ["HDF5_PLUGIN_PATH"] = _NO_PLUGINS
        os.environ["HDF5_PLUGIN_PRELOAD"] = "::"  # HDF5's documented "load no plugins" value
    import h5py
    from h5py import h5a, h5d, h5pl  # noqa: F401 - imported before a fork so children need not import

    # h5py may have been imported before us (with default search paths): empty the search path list
    while h5pl.size() > 0:
        h5pl.remove(0)
    return h5py


@dataclass(frozen=True)
class _Rules:
    builtin_filters: frozenset[int]
    config_attrs: frozenset[str]


def _rules(ctx: ScanContext) -> _Rules:
    def build() -> _Rules:
        doc = ctx.rules.doc("hdf5")
        return _Rules(frozenset(int(e["id"]) for e in doc.get("builtin_filter", [])),
                      frozenset(e["name"] for e in doc.get("config_attribute", [])))
    return ctx.rules.cached("hdf5", build)  # type: ignore[no-any-return]


def analyze(src: Source, ctx: ScanContext) -> Iterator[Finding]:
    _h5py()  # in the parent, so every child starts with the library loaded and plugins off
    _rules(ctx)
    if sandbox.available():
        result = _sandboxed(src, ctx)
        if isinstance(result, Finding):
            yield result
            return
    else:
        result = walk(src, ctx)  # no fork (Windows): in process, unprotected
    yield from report(result, src, ctx)


def _sandboxed(src: Source, ctx: ScanContext) -> WalkResult | Finding:
    limits = ctx.limits
    if src.path is not None:
        path = src.path
        data = b""
    else:
        path = None
        data = src.data if isinstance(src, BytesSource) else src.read_all(limits.max_read_bytes)

    def work() -> bytes:
        # the child reads through a source of its own: descriptors it inherited are closed by now
        mine: Source = FileSource(path, src.display) if path is not None else BytesSource(src.display, src.member,
                                                                                          data)
        return hdf5_result.encode(walk(mine, ctx))

    outcome = sandbox.run(work, seconds=limits.max_hdf5_seconds, max_output=max_result_bytes(ctx),
                          memory=limits.max_hdf5_memory)
    if outcome.data is not None:
        try:
            return hdf5_result.decode(outcome.data, known_rule=lambda r: ctx.rules.meta(r) is not None,
                                      file_size=src.size)
        except hdf5_result.ResultError as e:
            return ctx.finding("HDF5-MALFORMED", "the sandboxed HDF5 walk returned an invalid result; file not "
                               "analyzed", src, evidence=f"rejected result: {e}")
    if outcome.problem == "timeout":
        return ctx.finding("LIMIT-EXCEEDED", f"the HDF5 library did not finish within {limits.max_hdf5_seconds} s "
                           "(killed); file not analyzed", src, evidence=f"max_hdf5_seconds: {outcome.detail}")
    if outcome.problem == "exit" and outcome.detail == f"exit status {sandbox.EXIT_NO_MEMORY}":
        return ctx.finding("LIMIT-EXCEEDED", "the HDF5 library ran out of its memory allowance; file not analyzed",
                           src, evidence=f"max_hdf5_memory: {outcome.detail}")
    if outcome.problem == "spawn":
        return ctx.finding("SCAN-INTERNAL-ERROR", "could not start the HDF5 sandbox; file not analyzed", src,
                           evidence=outcome.detail)
    what = f"crashed (killed by {outcome.detail})" if outcome.problem == "signal" else f"failed ({outcome.detail})"
    return ctx.finding("HDF5-MALFORMED", f"the HDF5 library {what} on this file; file not analyzed", src,
                       evidence=f"sandbox {outcome.problem}: {outcome.detail}")


def max_result_bytes(ctx: ScanContext) -> int:
    """Configs are capped at max_header_bytes in total (base64 on the wire), findings per rule."""
    return ctx.limits.max_header_bytes * 3 // 2 + (8 << 20)


def walk(src: Source, ctx: ScanContext) -> WalkResult:
    """Open and walk the file with h5py (the part that runs in the sandbox child)."""
    h5py = _h5py()
    fh = None
    try:
        if src.path is not None:
            f = h5py.File(str(src.path), "r", locking=False)
        else:
            fh = src.open()
            f = h5py.File(fh, "r", locking=False)
    except Exception as e:  # noqa: BLE001 - h5py raises OSError, ValueError, KeyError... on bad files
        if fh is not None:
            fh.close()
        return WalkResult((RawFinding("HDF5-MALFORMED", "the HDF5 library cannot open this file",
                                      f"{type(e).__name__}: {e}"[:300]),), 0, ())
    walker = _Walker(h5py, f, src, ctx)
    try:
        walker.run()
    except LimitExceeded as e:
        walker.add("LIMIT-EXCEEDED", str(e), e.limit)
    except MemoryError:
        walker.add("LIMIT-EXCEEDED", "out of memory while walking the file", "max_hdf5_memory")
    except Exception as e:  # noqa: BLE001 - whatever h5py raises on a corrupt file: the rest is unread
        walker.add("HDF5-MALFORMED", "the HDF5 walk stopped on an error", f"{type(e).__name__}: {e}"[:300])
    finally:
        try:
            f.close()
        finally:
            if fh is not None:
                fh.close()
    return WalkResult(tuple(walker.findings), walker.userblock, tuple(walker.configs))


def report(result: WalkResult, src: Source, ctx: ScanContext) -> Iterator[Finding]:
    """Turn a walk result into findings: the walk's own, the user block as a member, the Keras configs."""
    from scanner.formats.hdf5 import keras

    for f in result.findings:
        yield ctx.finding(f.rule, f.message, src, evidence=f.evidence)
    if result.userblock > 0:
        yield from ctx.scan_child(src.child_slice("userblock", 0, result.userblock))
    for c in result.configs:
        for v in c.values:
            yield from keras.analyze_config_text(v, src, ctx, f"attribute {c.path}@{c.name}")


class _Walker:
    def __init__(self, h5py: Any, f: Any, src: Source, ctx: ScanContext) -> None:
        self.h5py = h5py
        self.f = f
        self.src = src
        self.ctx = ctx
        self.rules = _rules(ctx)
        self.visited = 0
        self.seen: dict[tuple[int, int], str] = {}
        self.findings: list[RawFinding] = []
        self.counts: Counter[str] = Counter()
        self.configs: list[ConfigText] = []
        self.config_bytes = 0
        self.userblock = 0
        self.stopped = False
        self._heap_ok: bool | None = None

    def add(self, rule_id: str, message: str, evidence: str | None = None) -> None:
        self.counts[rule_id] += 1
        n = self.counts[rule_id]
        if n > _MAX_PER_RULE:
            return
        if n == _MAX_PER_RULE:
            message = f"{message} (further {rule_id} findings in this file suppressed)"
        if evidence is not None and len(evidence) > self.ctx.limits.max_evidence_chars:
            evidence = evidence[: self.ctx.limits.max_evidence_chars] + "…"
        self.findings.append(RawFinding(rule_id, message[:hdf5_result.MAX_MESSAGE_CHARS], evidence))

    def count(self) -> bool:
        """Charge one visited object; False (and a finding) once the bound is hit."""
        self.visited += 1
        if self.visited > self.ctx.limits.max_hdf5_objects:
            if not self.stopped:
                self.add("LIMIT-EXCEEDED", f"more than {self.ctx.limits.max_hdf5_objects} HDF5 objects; rest not "
                         "analyzed", "max_hdf5_objects")
            self.stopped = True
        return not self.stopped

    def run(self) -> None:
        ub = int(self.f.userblock_size or 0)
        if ub > 0:
            self.add("HDF5-USERBLOCK", f"{ub} bytes before the HDF5 superblock", f"userblock_size={ub}")
            self.userblock = min(ub, self.src.size)
        try:
            root = self.f["/"]
            self.remember(root, "/")
        except Exception as e:  # noqa: BLE001 - corrupt root object header
            self.add("HDF5-MALFORMED", "cannot open the root group", f"{type(e).__name__}: {e}"[:300])
            return
        stack: list[tuple[Any, str, int]] = [(root, "/", 0)]
        self.attributes(root, "/")
        while stack and not self.stopped:
            group, path, depth = stack.pop()
            for name, child, child_path in self.children(group, path):
                if self.stopped:
                    break
                if child is None:
                    continue
                kind = type(child).__name__
                if _text(name) in self.rules.config_attrs:
                    self.add("HDF5-ODD-CONFIG", f"{kind} named {name!r} at {child_path}", child_path)
                try:
                    first_time = self.remember(child, child_path)
                except Exception as e:  # noqa: BLE001 - corrupt object header
                    self.add("HDF5-MALFORMED", f"cannot read object header of {child_path}",
                             f"{type(e).__name__}: {e}"[:300])
                    continue
                if not first_time:
                    continue
                self.attributes(child, child_path)
                if isinstance(child, self.h5py.Group):
                    if depth + 1 >= self.ctx.limits.max_hdf5_depth:
                        self.add("LIMIT-EXCEEDED", f"groups nested deeper than {self.ctx.limits.max_hdf5_depth} at "
                                 f"{child_path}; not descended", "max_hdf5_depth")
                        continue
                    stack.append((child, child_path, depth + 1))

    def remember(self, obj: Any, path: str) -> bool:
        """True the first time an object is met; later names for it are reported (and cycles cut)."""
        info = self.h5py.h5o.get_info(obj.id)
        key = (int(info.fileno), int(info.addr))
        first = self.seen.get(key)
        if first is not None:
            self.add("HDF5-MULTI-LINK", f"{path} is the same object as {first}", f"{first} == {path}")
            return False
        self.seen[key] = path
        return True

    def children(self, group: Any, path: str) -> Iterator[tuple[str, Any, str]]:
        h5py = self.h5py
        try:
            names = list(self._names(group))
        except Exception as e:  # noqa: BLE001 - corrupt B-trees / heaps
            self.add("HDF5-MALFORMED", f"cannot list group {path}", f"{type(e).__name__}: {e}"[:300])
            return
        for name in names:
            if not self.count():
                return
            child_path = path.rstrip("/") + "/" + _text(name)
            try:
                link = group.get(name, getlink=True)
            except Exception as e:  # noqa: BLE001 - user-defined link classes raise here
                self.add("HDF5-UNKNOWN-LINK", f"link {child_path} cannot be classified",
                         f"{type(e).__name__}: {e}"[:300])
                continue
            if isinstance(link, h5py.ExternalLink):
                self.add("HDF5-EXTERNAL-LINK", f"{child_path} links to {link.path!r} in file {link.filename!r}",
                         f"{child_path} -> {link.filename}:{link.path}")
                continue
            if isinstance(link, h5py.SoftLink):
                self.add("HDF5-SOFT-LINK", f"{child_path} is a soft link to {link.path!r} (not followed)",
                         f"{child_path} -> {link.path}")
                continue
            if not isinstance(link, h5py.HardLink):
                self.add("HDF5-UNKNOWN-LINK", f"{child_path} is a {type(link).__name__}", repr(link)[:200])
                continue
            try:
                yield name, self.open(group, name, child_path), child_path
            except Exception as e:  # noqa: BLE001
                self.add("HDF5-MALFORMED", f"cannot open {child_path}", f"{type(e).__name__}: {e}"[:300])

    def _names(self, group: Any) -> Iterator[str]:
        # iterating a group lists link names (H5Literate) without resolving any of them; take no more
        # names than the object budget can still pay for
        budget = self.ctx.limits.max_hdf5_objects - self.visited + 1
        yield from itertools.islice(group, max(budget, 0))

    def open(self, group: Any, name: str, path: str) -> Any:
        h5py = self.h5py
        # opening reads the object header only; external files, virtual sources and filters are touched
        # when values are read, which never happens here
        obj = group[name]
        if isinstance(obj, h5py.Dataset):
            self.dataset(obj, path)
        return obj

    def dataset(self, ds: Any, path: str) -> None:
        from h5py import h5d

        dcpl = ds.id.get_create_plist()
        for i in range(dcpl.get_nfilters()):
            code, _flags, values, fname = dcpl.get_filter(i)
            if int(code) not in self.rules.builtin_filters:
                label = fname.decode("utf-8", "replace") if isinstance(fname, bytes) else str(fname)
                self.add("HDF5-USER-FILTER", f"dataset {path} needs filter {code} ({label!r}), a plugin",
                         f"filter_id={code} name={label!r} params={tuple(values)[:8]}")
        n_ext = dcpl.get_external_count()
        if n_ext > 0:
            files = []
            for i in range(min(n_ext, 32)):
                fname, offset, size = dcpl.get_external(i)
                files.append(f"{_text(fname)}@{offset}+{size}")
            self.add("HDF5-EXTERNAL-STORAGE", f"dataset {path} reads its data from {n_ext} external file(s)",
                     ", ".join(files))
        if dcpl.get_layout() == h5d.VIRTUAL:
            sources = []
            for i in range(min(dcpl.get_virtual_count(), 64)):
                fname = _text(dcpl.get_virtual_filename(i))
                if fname != ".":
                    sources.append(f"{fname}:{_text(dcpl.get_virtual_dsetname(i))}")
            if sources:
                self.add("HDF5-VIRTUAL-DATASET", f"virtual dataset {path} maps data from other files",
                         ", ".join(sources))

    def attributes(self, obj: Any, path: str) -> None:
        from h5py import h5a

        try:
            names = list(obj.attrs)
        except Exception as e:  # noqa: BLE001
            self.add("HDF5-MALFORMED", f"cannot list attributes of {path}", f"{type(e).__name__}: {e}"[:300])
            return
        for aname in names:
            if not self.count():
                return
            try:
                raw_name = aname if isinstance(aname, bytes) else aname.encode("utf-8", "surrogateescape")
                aid = h5a.open(obj.id, raw_name)
                if not _is_string_type(aid.dtype):
                    continue
                if aid.dtype.kind == "O" and not self.heap_ok():
                    continue
                size = aid.get_storage_size()
                if size > self.ctx.limits.max_header_bytes:
                    self.add("LIMIT-EXCEEDED", f"attribute {path}@{aname} of {size} bytes not read",
                             "max_header_bytes")
                    continue
                values = _strings(obj.attrs[aname])
            except Exception as e:  # noqa: BLE001
                self.add("HDF5-MALFORMED", f"cannot read attribute {path}@{aname}", f"{type(e).__name__}: {e}"[:300])
                continue
            self.config_attribute(path, _text(aname), values)

    def heap_ok(self) -> bool:
        """Variable-length strings live in global heap collections; a corrupt one hangs the library."""
        if self._heap_ok is None:
            base = int(self.f.userblock_size or 0)
            problems = hdf5_heap.heap_problems(self.src, hdf5_heap.size_of_lengths(self.src, base))
            self._heap_ok = not problems
            if problems:
                self.add("HDF5-MALFORMED", "corrupt global heap: variable-length attributes (Keras configs) were "
                         "not read", "; ".join(problems))
        return self._heap_ok

    def config_attribute(self, path: str, aname: str, values: list[str | bytes]) -> None:
        """Keep config-like string values for the parent's Keras walker (bounded in total)."""
        is_config = aname in self.rules.config_attrs
        if is_config and path != "/":
            self.add("HDF5-ODD-CONFIG", f"{aname} attribute on {path} (loaders read it on / only)",
                     f"{path}@{aname}")
        total = 0
        keep: list[str | bytes] = []
        for v in values:
            text = v.decode("utf-8", "replace") if isinstance(v, bytes) else v
            total += len(text)
            if total > self.ctx.limits.max_header_bytes:
                self.add("LIMIT-EXCEEDED", f"attribute {path}@{aname} too large to analyze", "max_header_bytes")
                return
            looks_keras = text.lstrip()[:1] in ("{", "[") and "class_name" in text
            if is_config or looks_keras:
                keep.append(v)
        if not keep:
            return
        size = sum(len(v.encode("utf-8", "surrogatepass") if isinstance(v, str) else v) for v in keep)
        if self.config_bytes + size > self.ctx.limits.max_header_bytes:
            self.add("LIMIT-EXCEEDED", f"configs beyond attribute {path}@{aname} exceed max_header_bytes in total; "
                     "not analyzed", "max_header_bytes")
            return
        self.config_bytes += size
        self.configs.append(ConfigText(path, aname, tuple(keep)))


def _text(value: object) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _is_string_type(dtype: Any) -> bool:
    import h5py

    if dtype.kind in ("S", "U"):
        return True
    return h5py.check_string_dtype(dtype) is not None


def _strings(value: Any) -> list[str | bytes]:
    """An attribute value as a flat list of strings (scalar, numpy scalar or array of strings)."""
    if isinstance(value, (str, bytes)):
        return [value]
    tolist = getattr(value, "tolist", None)
    if tolist is not None:
        flat = tolist()
        items = flat if isinstance(flat, list) else [flat]
        out: list[str | bytes] = []
        stack = list(reversed(items))
        while stack:
            cur = stack.pop()
            if isinstance(cur, list):
                stack.extend(reversed(cur))
            elif isinstance(cur, (str, bytes)):
                out.append(cur)
        return out
    return []
