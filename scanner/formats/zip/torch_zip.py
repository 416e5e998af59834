"""PyTorch / TorchScript flavour of a zip: scan every pickle record the way torch reads it, map persistent ids
to storage records (never sniffed, sizes checked, never read), and check TorchScript code/."""

from __future__ import annotations

from typing import Any

from scanner.findings import Finding
from scanner.formats.zip import structure as zs
from scanner.record import field, record, replace
from scanner.source import LimitExceeded


@record
class Plan:
    handled: set[int] = field(default_factory=set)        # entry indexes already scanned here
    storages: dict[int, int] = field(default_factory=dict)  # entry index -> expected byte size
    findings: list[Finding] = field(default_factory=list)


@record(frozen=True)
class StorageRef:
    key: str
    type_name: str
    numel: object
    record: str          # the pickle record that referenced it


def is_torch_layout(entries: list[zs.Entry], record_names: frozenset[str]) -> bool:
    for e in entries:
        parts = e.name.split("/", 1)
        if len(parts) == 2 and parts[1].lower() in record_names:
            return True
    return False


def child_context(ctx: Any, policy: Any = None) -> Any:
    """What `ScanContext.scan_child` builds, for members this module scans with the pickle engine directly."""
    from scanner.context import ScanContext

    ctx.budget.members += 1
    if ctx.budget.members > ctx.limits.max_members:
        raise LimitExceeded("max_members", f"more than {ctx.limits.max_members} members")
    if ctx.depth + 1 > ctx.limits.max_depth:
        raise LimitExceeded("max_depth", f"nesting deeper than {ctx.limits.max_depth}")
    return ScanContext(ctx.rules, policy or ctx.policy, ctx.depth + 1, ctx.budget, ctx.root)


def plan(st: Any, entries: list[zs.Entry]) -> Plan:
    from scanner.formats.zip.reader import member_bytes

    out = Plan()
    cfg = st.cfg
    if not is_torch_layout(entries, cfg.record_names) and not any(e.name.lower().endswith(".pkl") for e in entries):
        return out
    ctx = st.ctx
    by_name: dict[str, zs.Entry] = {}
    by_fold: dict[str, zs.Entry] = {}
    for e in entries:
        by_name.setdefault(e.name, e)
        by_fold.setdefault(e.name.casefold(), e)

    # TorchScript: code/ first, so its classes are known when the pickles are scanned
    code = [e for e in entries if "/code/" in f"/{e.name}" and e.name.endswith(".py")]
    script = bool(code) or any(e.name.split("/")[-1].lower() == "constants.pkl" for e in entries)
    pickle_ctx_policy = ctx.policy
    if script:
        from scanner.formats.zip import torchscript  # imported only for a TorchScript archive

        out.findings.append(ctx.finding(
            "TORCHSCRIPT-ARCHIVE", "TorchScript archive: torch.load hands it to torch.jit.load even with "
            "weights_only=True (torch < 2.6); code/ and pickles scanned", st.src,
            evidence=f"{len(code)} code files"))
        classes: set[str] = set()
        for e in code:
            out.handled.add(e.index)
            data = member_bytes(st, e, e.name)
            if data is None:
                continue
            child = st.src.child_bytes(e.name, data)
            out.findings.extend(torchscript.check_code(child, data, ctx))
            classes |= torchscript.defined_classes(e.name, data, ctx)
        allowed = torchscript.allowable(classes, ctx)
        if allowed:
            pickle_ctx_policy = replace(ctx.policy, allow_globals=tuple(ctx.policy.allow_globals) + tuple(allowed))

    refs: list[tuple[zs.Entry, StorageRef]] = []
    for e in entries:
        if not e.name.lower().endswith(".pkl") or e.method not in cfg.methods:
            continue
        out.handled.add(e.index)
        found, pids = _scan_pickle_member(st, e, pickle_ctx_policy)
        out.findings.extend(found)
        for pid in pids:
            ref = _storage_ref(pid, e.name)
            if ref is not None:
                refs.append((e, ref))
            else:
                out.findings.append(ctx.finding("TORCH-MALFORMED", f"{e.name}: persistent id of unexpected shape",
                                                st.src.child_slice(e.name, 0, 0), evidence=_short(pid)))
    _resolve_storages(st, out, refs, by_name, by_fold)
    return out


def _scan_pickle_member(st: Any, e: zs.Entry, policy: Any) -> tuple[list[Finding], list[object]]:
    """Findings of every pickle in the record plus its persistent ids (engine used directly)."""
    from scanner.formats.zip.reader import _member_source

    child, full = _member_source(st, e, e.name)
    if child is None:
        return [], []
    try:
        from scanner.formats.pickle.scan import scan_pickle
    except ImportError:
        return st.ctx.scan_child(child), []
    data = full if full is not None else child.read_all(st.ctx.limits.max_read_bytes)
    from scanner.formats.zip.reader import _crc
    _crc(st, e, data, child)
    sub = child_context(st.ctx, policy)
    head = data[:2]
    if not (head[:1] == b"\x80" or _plausible_text_pickle(data)):
        # a .pkl name over other content: let the sniffer decide
        return st.ctx.scan_child(child), []
    findings: list[Finding] = []
    pids: list[object] = []
    try:
        results = scan_pickle(child, sub, data, 0, multi=True)
    except LimitExceeded as ex:
        return [st.ctx.finding("LIMIT-EXCEEDED", str(ex), child, evidence=ex.limit)], []
    for r in results:
        findings.extend(r.findings)
        pids.extend(r.persistent_ids)
    return findings, pids


def _plausible_text_pickle(data: bytes) -> bool:
    try:
        from scanner.formats.pickle.scan import SNIFF_CAP, looks_like_pickle
    except ImportError:
        return False
    return bool(looks_like_pickle(data[:SNIFF_CAP], len(data)))


def _storage_ref(pid: object, record: str) -> StorageRef | None:
    if not isinstance(pid, (tuple, list)) or len(pid) < 5 or pid[0] != "storage":
        return None
    stype, key, _loc, numel = pid[1], pid[2], pid[3], pid[4]
    name = getattr(stype, "name", None)
    if not isinstance(key, str) or not isinstance(name, str):
        return None
    return StorageRef(key, name, numel, record)


def _resolve_storages(st: Any, out: Plan, refs: list[tuple[zs.Entry, StorageRef]],
                      by_name: dict[str, zs.Entry], by_fold: dict[str, zs.Entry]) -> None:
    ctx, cfg = st.ctx, st.cfg
    seen: dict[int, StorageRef] = {}
    for rec, ref in refs:
        folder, _, stem = rec.name.rpartition("/")
        stem = stem[:-4]
        base = f"{folder}/" if folder else ""
        cands = [f"{base}{stem}/{ref.key}", f"{base}.data/{ref.key}", f"{base}data/{ref.key}"]
        entry = next((by_name[c] for c in cands if c in by_name), None)
        if entry is None:
            entry = next((by_fold[c.casefold()] for c in cands if c.casefold() in by_fold), None)
        if entry is None:
            out.findings.append(ctx.finding("TORCH-STORAGE-MISSING", f"{rec.name} references storage {ref.key!r} "
                                            "but no such record exists", st.src, evidence=cands[0]))
            continue
        elem = cfg.element_size.get(ref.type_name)
        if elem is None:
            out.findings.append(ctx.finding("TORCH-MALFORMED", f"{rec.name}: unknown storage type "
                                            f"{ref.type_name!r} for {entry.name}", st.src, evidence=ref.type_name))
            continue
        if not isinstance(ref.numel, int) or isinstance(ref.numel, bool) or ref.numel < 0:
            out.findings.append(ctx.finding("TORCH-MALFORMED", f"{rec.name}: storage {ref.key!r} has a non-integer "
                                            "element count", st.src, evidence=_short(ref.numel)))
            continue
        expected = ref.numel * elem
        prev = seen.get(entry.index)
        if prev is not None and (prev.numel, prev.type_name) != (ref.numel, ref.type_name):
            out.findings.append(ctx.finding(
                "TORCH-STORAGE-SIZE-MISMATCH", f"storage {entry.name} is declared twice with different sizes",
                st.src, evidence=f"{prev.type_name}x{prev.numel} vs {ref.type_name}x{ref.numel}"))
        seen[entry.index] = ref
        if not _npz_readable(st, entry):
            out.storages[entry.index] = expected
            out.handled.add(entry.index)
        if entry.usize == 0 and expected and rec.name.rsplit("/", 1)[-1] in _empty_ok(ctx):
            continue  # torch.jit.save writes these empty itself
        if entry.usize != expected:
            out.findings.append(ctx.finding(
                "TORCH-STORAGE-SIZE-MISMATCH", f"storage record {entry.name} holds {entry.usize} bytes but "
                f"{rec.name} declares {ref.numel} x {ref.type_name} = {expected} bytes", st.src,
                offset=entry.header_offset, evidence=f"record={entry.usize} declared={expected}"))


def _npz_readable(st: Any, e: zs.Entry) -> bool:
    """np.load opens any zip as an NpzFile, and NpzFile.__getitem__ reads every member that starts with the
    .npy magic with format.read_array (object arrays unpickle with allow_pickle=True), whatever its name:
    such a storage record is left to the member scan, which reads it as .npy."""
    from scanner.formats.numpy.npy import MAGIC

    if e.local is None:
        return False
    if e.method == 0:
        return bool(st.src.read_at(e.local.data_offset, len(MAGIC)) == MAGIC)
    return True  # torch writes storages stored: a compressed one is sniffed like any other member


def _empty_ok(ctx: Any) -> frozenset[str]:
    return frozenset(ctx.rules.doc("containers").get("torch", {}).get("empty_storage_records", []))


def _short(v: object, n: int = 200) -> str:
    s = repr(v)
    return s if len(s) <= n else s[:n] + "…"
