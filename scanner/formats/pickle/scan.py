"""The pickle engine: scan pickle streams symbolically (never unpickling them) and report what a loader
would import and call. Public API: scan_pickle, analyze, looks_like_pickle, PickleResult, Global, Call,
Unknown. The opcode reader is pickle_ops, the machine pickle_machine, the rule lookup pickle_policy."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING

from scanner.findings import Finding, Severity
from scanner.formats.numpy import joblib_arrays as pickle_joblib
from scanner.formats.pickle import nested as pickle_nested
from scanner.formats.pickle.machine import Counters, Machine, StreamResult
from scanner.formats.pickle.ops import OPNAMES
from scanner.formats.pickle.policy import Classifier, Tables, tables
from scanner.formats.pickle.values import Call, Global, PersistentRef, Unknown, const, render
from scanner.record import replace

if TYPE_CHECKING:
    from scanner.context import ScanContext
    from scanner.source import Source

__all__ = ["Call", "Global", "PickleResult", "Unknown", "analyze", "looks_like_pickle", "scan_pickle",
           "source_looks_like_pickle"]

PAYLOAD_TAG = "<payload@"


# one parsed stream: offsets, complete (STOP reached), findings, symbolic value, persistent ids, globals
PickleResult = StreamResult


# -- hooks the machine calls back into ---------------------------------------------------------------

class _Hooks:
    """Folding of decoder / resolver calls, nested payload scanning, joblib arrays, persistent ids."""

    def __init__(self, src: Source, ctx: ScanContext) -> None:
        self.src = src
        self.ctx = ctx
        self._t: Tables | None = None
        self.depth = (src.member or "").count(PAYLOAD_TAG)

    @property
    def t(self) -> Tables:
        # built when a global is first called (a pickle without globals never parses the tables)
        if self._t is None:
            self._t = tables(self.ctx.rules)
        return self._t

    def plain(self, name: str) -> bool:
        """after_call does nothing for calls to `name`: it must list every table after_call consults."""
        t = self.t
        return not (name in t.decoders or name in t.getattr_like or name in t.import_like
                    or name in t.module_name_like or name in t.nested or name in (t.by_target or {}))

    def after_call(self, m: Machine, func: object, call: Call) -> object:
        if not isinstance(func, Global):
            return None
        d = m.decide(func)
        name = d.name
        codec = self.t.decoders.get(name)
        if codec is not None:
            call.const = pickle_nested.fold(codec, call.args, self.ctx.limits.max_string_bytes)
            return None
        target = self._resolve(name, call)
        if target is not None:
            return Global(target[0], target[1], via=render(call, 300))
        nested = self.t.nested.get(name)
        if nested is not None:
            self._nested(m, nested, call)
        return None

    def _resolve(self, name: str, call: Call) -> tuple[str, str] | None:
        """(module, dotted name) a resolver call with constant operands reaches: getattr(Global, 'attr'),
        __import__('mod'), f('mod', 'name')."""
        args = call.args if isinstance(call.args, tuple) else ()
        if name in self.t.getattr_like and len(args) >= 2:
            obj, attr = args[0], const(args[1])
            if isinstance(obj, Global) and isinstance(attr, str):
                return obj.module, f"{obj.name}.{attr}" if obj.name else attr
        elif name in self.t.import_like and args:
            mod = const(args[0])
            if isinstance(mod, str) and mod:
                return mod, ""
        elif name in self.t.module_name_like and len(args) == 2:
            mod, attr = const(args[0]), const(args[1])
            if isinstance(mod, str) and mod and isinstance(attr, str) and attr:
                return mod, attr
        return None

    def nested_severity(self, m: Machine, func: Global, call: Call, severity: Severity) -> Severity:
        """Severity of a call to a denied global: a resolver whose constant target is on the allow list is
        reported as info (zoneinfo.ZoneInfo._unpickle reached through getattr, numpy's old ufunc pickles);
        what it returns is checked when it is used."""
        name = m.decide(func).name
        target = self._resolve(name, call)
        if target is not None and m.classifier is not None:
            full = f"{target[0]}.{target[1]}" if target[1] else target[0]
            if m.classifier.classify(full).status == "allow":
                return Severity.INFO
        if m.classifier is not None and self._harmless_target(m, name, call):
            return Severity.INFO
        nested = self.t.nested.get(m.decide(func).name)
        if nested is None or nested.payload not in ("pickle", "auto"):
            return severity
        if pickle_nested.payload_bytes(call.args) is None or self.depth >= self.ctx.limits.max_nested_payload_depth:
            return severity
        return nested.severity

    def _harmless_target(self, m: Machine, name: str, call: Call) -> bool:
        """A powerful construct aimed at a harmless target: functools.partial of a function the policy allows
        to be called, getattr of a known method on a value of known type (`getattr(re._compile(...),
        'search')`). What the target is gets checked on its own (call-through), so this only sets how loud the
        construct itself is."""
        assert m.classifier is not None
        args = call.args if isinstance(call.args, tuple) else ()
        index = (self.t.by_target or {}).get(name)
        if index is not None:
            if index >= len(args) or type(args[index]) is not Global:
                return False
            d = m.decide(args[index])  # type: ignore[arg-type]
            return d.status == "allow" and m.classifier.construct_only(d.name) is None
        if name in self.t.getattr_like and len(args) == 2 and isinstance(args[0], Call):
            producer, attr = args[0].func, const(args[1])
            if type(producer) is Global and isinstance(attr, str):
                return attr in (self.t.typed_methods or {}).get(m.decide(producer).name, frozenset())
        return False

    def _nested(self, m: Machine, nested: object, call: Call) -> None:
        from scanner.formats.pickle.policy import Nested

        assert isinstance(nested, Nested)
        data = pickle_nested.payload_bytes(call.args)
        if data is None:
            return
        op = m.op
        offset = op.offset if op else 0
        if nested.payload == "marshal":
            m.emit("PICKLE-NESTED-PAYLOAD", f"marshal bytes handed to {nested.name} (code objects; shown, never"
                   " loaded)", evidence=pickle_nested.preview(data), severity=Severity.CRITICAL, key=nested.name)
            return
        if nested.payload not in ("pickle", "auto"):
            return
        if self.depth >= self.ctx.limits.max_nested_payload_depth:
            m.emit("LIMIT-EXCEEDED", f"nested payload deeper than {self.ctx.limits.max_nested_payload_depth}"
                   " levels not scanned", evidence="max_nested_payload_depth", key="nested-depth")
            return
        self.ctx.charge(len(data), self.src)
        child = self.src.child_bytes(f"{PAYLOAD_TAG}{offset}>", data)
        if nested.payload == "pickle":
            inner = [f for r in scan_pickle(child, self.ctx, data) for f in r.findings]
        else:
            inner = self.ctx.scan_child(child)
        worst = max((f.severity for f in inner), key=lambda s: s.rank, default=Severity.INFO)
        if nested.severity > Severity.INFO or worst > Severity.INFO:
            m.emit("PICKLE-NESTED-PAYLOAD", f"{len(data)} bytes handed to {nested.name} were scanned as a nested"
                   f" payload ({len(inner)} findings inside)", evidence=pickle_nested.preview(data),
                   severity=nested.severity, key=nested.name)
        m.findings.extend(inner)

    def after_build(self, m: Machine, inst: Call) -> None:
        pickle_joblib.after_build(m, inst)

    def persistent(self, m: Machine, pid: object) -> object:
        if isinstance(pid, tuple) and pid and pid[0] == "module" and len(pid) >= 2 and isinstance(pid[1], Global):
            return pid[1]  # legacy torch.save of whole modules: the id stands for the class itself
        if not _torch_storage_pid(pid):
            m.emit("PICKLE-PERSISTENT-ID", "persistent id that is not a torch storage reference: the loader's"
                   " persistent_load decides what it becomes", evidence=lambda: render(pid, 200), key="persid")
        return PersistentRef(pid)


def _torch_storage_pid(pid: object) -> bool:
    return (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage" and isinstance(pid[1], Global)
            and isinstance(const(pid[2]), str) and isinstance(const(pid[3]), str))


# -- public API ----------------------------------------------------------------------------------------

def scan_pickle(src: Source, ctx: ScanContext, data: bytes, offset: int = 0, *,
                multi: bool = True) -> list[PickleResult]:
    """Scan the pickle starting at `offset`; with `multi`, also the pickles concatenated after it, and
    report bytes after the last STOP."""
    return _scan(src, ctx, data, offset, multi, Counters())


def _scan(src: Source, ctx: ScanContext, data: bytes, offset: int, multi: bool,
          counters: Counters) -> list[PickleResult]:
    classifier = Classifier(ctx.rules, ctx.policy)
    hooks = _Hooks(src, ctx)
    results: list[PickleResult] = []
    pos = offset
    while True:
        m = Machine(data, src, ctx, classifier, counters, hooks=hooks)
        r = m.run(pos)
        counters.streams += 1
        results.append(r)
        if not multi or not r.complete or r.end >= len(data):
            break
        if not _trailing(src, ctx, data, r.end, results[-1], counters):
            break
        pos = r.end
    _soften([f for res in results for f in res.findings], [res.findings for res in results])
    return results


def _soften(findings: list[Finding], holders: list[list[Finding]]) -> None:
    """Trailing pickles that were scanned and found harmless (nothing at medium or above) are reported as
    info: a second benign pickle after STOP runs nothing a loader reading on would not also report."""
    trailing = [f for f in findings if f.rule_id == "PICKLE-TRAILING-DATA" and _ANOTHER in f.message]
    if not trailing:
        return
    loud = any(f.severity >= Severity.MEDIUM for f in findings if f.rule_id != "PICKLE-TRAILING-DATA")
    if loud:
        return
    soft = {id(f): replace(f, severity=Severity.INFO, message=f.message + "; scanned: harmless")
            for f in trailing}
    for h in holders:
        h[:] = [soft.get(id(f), f) for f in h]


_ANOTHER = "(another pickle)"


def _trailing(src: Source, ctx: ScanContext, data: bytes, pos: int, last: PickleResult, counters: Counters) -> bool:
    """Report bytes after STOP; True when they start another pickle to scan."""
    rest = len(data) - pos
    tail = data[pos:pos + 4096]
    if len(tail) == rest and not bytes(tail).strip(b" \t\r\n"):
        # a newline an editor or `echo >>` added: no loader reads anything from it
        last.findings.append(ctx.finding("PICKLE-TRAILING-DATA", f"{rest} bytes of whitespace after STOP at offset"
                                         f" {pos}", src, offset=pos, severity=Severity.INFO,
                                         evidence=pickle_nested.preview(bytes(tail))))
        return False
    another = starts_pickle(data, pos)
    what = _ANOTHER if another else "(data that is not a pickle)"
    last.findings.append(ctx.finding("PICKLE-TRAILING-DATA", f"{rest} bytes after STOP at offset {pos} {what}",
                                     src, offset=pos, evidence=pickle_nested.preview(data[pos:pos + 64])))
    if another and counters.streams >= ctx.limits.max_pickle_streams:
        last.findings.append(ctx.finding("LIMIT-EXCEEDED", f"more than {ctx.limits.max_pickle_streams} pickles in"
                                         " one stream; the rest is not scanned", src, offset=pos,
                                         evidence="max_pickle_streams"))
        return False
    return another


def starts_pickle(data: bytes, pos: int) -> bool:
    if pos + 1 < len(data) and data[pos] == 0x80 and data[pos + 1] <= 5:
        return True
    window = bytes(data[pos:pos + SNIFF_CAP])
    if Machine(window, None, None, None, Counters()).run(0).complete:
        return True  # right after a STOP any complete stream is the loader's next pickle
    return _prefix_verdict(window, len(data) - pos) != "no"


def analyze(src: Source, ctx: ScanContext) -> Iterable[Finding]:
    """A whole raw pickle file (or member): every pickle in it, legacy torch files included."""
    data = src.read_all(ctx.limits.max_read_bytes)
    counters = Counters()
    first = _scan(src, ctx, data, 0, False, counters)
    out = list(first[0].findings)
    r = first[0]
    if r.complete and r.end < len(data):
        holder = PickleResult(r.start, r.end, True, [], None, [], [])
        more = _trailing(src, ctx, data, r.end, holder, counters)
        out.extend(holder.findings)
        if more:
            for res in _scan(src, ctx, data, r.end, True, counters):
                out.extend(res.findings)
        _soften(out, [out])
    yield from out


_IMPORT_OPS = frozenset({"GLOBAL", "INST", "STACK_GLOBAL"})
_CALL_OPS = frozenset({"REDUCE", "INST", "OBJ", "NEWOBJ", "NEWOBJ_EX", "BUILD"})
SNIFF_CAP = 64 << 20  # bytes a sniff may read while the stream still parses (then: treat it as a pickle)


def _prefix_verdict(data: bytes, size: int) -> str:
    """'yes', 'no', or 'more' (every opcode so far is valid and the window ends inside one)."""
    if not data or data[0] not in OPNAMES:
        return "no"
    m = Machine(data, None, None, None, Counters())
    r = m.run(0)
    if r.complete:
        return "yes" if m.ops_run >= 1 and _plausible_stop(data, r.end, size) else "no"
    if len(data) < size and m.error is not None and m.error.truncated and m.pos >= len(data) - (1 << 16):
        return "more"
    # the loader runs what parsed before the error (payload-then-garbage): an import it would perform
    return "yes" if _runs_an_import(data, r.end, m.index) else "no"


def _runs_an_import(data: bytes, stop: int, executed: int) -> bool:
    """An import followed by a call, or an import of a module that exists for sure (import side effects),
    among the `executed` opcodes that ran before the stream broke. Text that merely starts with 'c' or 'i'
    fails (INST checks its MARK before it imports)."""
    from scanner.formats.pickle.ops import OpError, read_op

    imported = False
    pos = 0
    seen = 0
    while pos < stop and seen < min(executed, 100_000):
        try:
            op = read_op(data, pos, stop)
        except OpError:
            break
        seen += 1
        if op.name in _IMPORT_OPS:
            if op.name != "STACK_GLOBAL" and isinstance(op.arg, str):
                top = op.arg.split(".")[0]
                if top in sys.stdlib_module_names:  # importing it surely runs its module code
                    return True
            imported = True
        if imported and op.name in _CALL_OPS:
            return True
        pos = op.end
    return False


def looks_like_pickle(head: bytes, size: int) -> bool:
    """Whether bytes without the PROTO magic are a protocol 0/1 pickle, judged on `head` alone (the first
    bytes of a stream of `size`): it parses to STOP, or breaks after an import a loader would run, or every
    opcode is valid to the end of a long run of the window."""
    verdict = _prefix_verdict(head, size)
    if verdict == "more":
        m = Machine(head, None, None, None, Counters())
        m.run(0)
        return m.ops_run >= 16
    return verdict == "yes"


def source_looks_like_pickle(src: Source) -> bool:
    """Like looks_like_pickle, reading on while every opcode stays valid: a long string opcode up front must
    not hide the payload behind it from a fixed-size sniff window."""
    window = 4096
    while True:
        head = src.read_at(0, window)
        verdict = _prefix_verdict(head, src.size)
        if verdict != "more":
            return verdict == "yes"
        if window >= SNIFF_CAP:
            return True  # still a valid opcode stream this far: fail closed, the engine decides
        window = min(window * 16, SNIFF_CAP, src.size)


def _plausible_stop(head: bytes, end: int, size: int) -> bool:
    # a lone "N." or "0." prefix of prose is not a pickle: require the STOP to end the data or more structure
    return end == size or end >= 8




