"""The symbolic pickle machine: stack, marks, memo and protocol as `_pickle.c` keeps them, with imports and
calls checked against the rule tables instead of executed."""

from __future__ import annotations

import _compat_pickle
import re
import struct
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from scanner.findings import Finding, Severity
from scanner.formats.pickle.ops import BIG_BYTES, OPNAMES, Op, OpError, read_op
from scanner.formats.pickle.policy import Classifier, Decision, map_py2
from scanner.formats.pickle.values import NOCONST, Call, Global, PersistentRef, Unknown, const, render
from scanner.record import field, record
from scanner.source import LimitExceeded

if TYPE_CHECKING:
    from scanner.context import ScanContext
    from scanner.source import Source

MAX_SAME_FINDINGS = 5  # per (rule, name) and stream; the rest are counted in one summary

_U32 = struct.Struct("<I").unpack_from
_I32 = struct.Struct("<i").unpack_from
_F64 = struct.Struct(">d").unpack_from
_RUNNING = object()  # what Machine._step returns before STOP
# what an opcode outside the inline loop (imports, calls, text opcodes, frames) is charged against
# max_pickle_opcodes: it costs 10-25 inline opcodes of time, so the budget bounds the time of any mix
GENERAL_COST = 24


# call kinds that only run cls.__new__(cls, ...): a construct-only class's __init__ never runs
_NEW_ONLY = frozenset({"NEWOBJ", "NEWOBJ_EX", "call-through __new__"})


def _string_match(value: object, pattern: re.Pattern[str], budget: int = 256) -> str | None:
    """First constant string inside value (tuples, lists, dict keys and values; bounded) matching pattern."""
    todo = [value]
    while todo and budget > 0:
        budget -= 1
        v = todo.pop()
        if type(v) is str:
            if pattern.search(v):
                return v
        elif type(v) in (tuple, list):
            todo.extend(v)  # type: ignore[arg-type]
        elif type(v) is dict:
            todo.extend(v.keys())  # type: ignore[union-attr]
            todo.extend(v.values())  # type: ignore[union-attr]
    return None

class Stop(Exception):
    """CPython's unpickler raises here: the stream ends, what came before still ran."""

    def __init__(self, message: str, rule: str = "PICKLE-MALFORMED", truncated: bool = False) -> None:
        super().__init__(message)
        self.rule = rule
        self.truncated = truncated


@record
class Counters:
    """Shared by every stream of one scan_pickle call (and its nested payloads)."""

    opcodes: int = 0   # charged against max_pickle_opcodes (an opcode outside the inline loop: GENERAL_COST)
    general: int = 0   # opcodes that ran outside the inline loop
    streams: int = 0

    @property
    def ops(self) -> int:
        """Opcodes run."""
        return self.opcodes - self.general * (GENERAL_COST - 1)


@record
class StreamResult:
    start: int
    end: int
    complete: bool
    findings: list[Finding]
    value: object
    persistent_ids: list[object]
    globals: list[tuple[str, str]]


@record
class _Seen:
    op: Op
    index: int
    decision: Decision
    called: bool = False
    mapped_from: str | None = None
    plain: bool | None = None  # calling it needs no check and no hook (allowed, nothing special): see _plain
    capped: bool = False  # severity lowered because this protocol cannot resolve the name


@record
class Machine:
    data: bytes
    src: Source | None
    ctx: ScanContext | None
    classifier: Classifier | None
    counters: Counters
    nested_depth: int = 0
    hooks: Any = None  # pickle.py's helpers (nested payloads, joblib arrays), None when only sniffing
    stack: list[object] = field(default_factory=list)
    marks: list[int] = field(default_factory=list)
    memo: dict[int, object] = field(default_factory=dict)
    proto: int = 0
    findings: list[Finding] = field(default_factory=list)
    globals: list[tuple[str, str]] = field(default_factory=list)
    persistent_ids: list[object] = field(default_factory=list)
    seen: dict[str, _Seen] = field(default_factory=dict)
    counts: dict[tuple[str, str], int] = field(default_factory=dict)
    frame_end: int | None = None
    pos: int = 0
    end: int = 0
    index: int = 0
    op: Op | None = None
    ops_run: int = 0
    error: Stop | None = None

    # -- driving ---------------------------------------------------------------------------------
    def run(self, start: int, end: int | None = None) -> StreamResult:
        self.pos = start
        self.end = len(self.data) if end is None else end
        complete = False
        value: object = None
        lim = self.ctx.limits if self.ctx else None
        max_ops = lim.max_pickle_opcodes if lim else 1 << 62
        max_stack = lim.max_pickle_stack if lim else 1 << 62
        max_memo = lim.max_pickle_memo if lim else 1 << 62
        try:
            value = self._loop(max_ops, max_stack, max_memo)
            complete = True
        except Stop as e:
            self.error = e
            self._stop_finding(e)
        except LimitExceeded as e:
            self._add(Finding("LIMIT-EXCEEDED", Severity.HIGH, str(e), e.location or self._loc(), e.limit))
        except RecursionError:
            self._stop_finding(Stop("objects nested too deeply to analyze"))
        self._report_imports()
        return StreamResult(start, self.pos, complete, self.findings, value, self.persistent_ids, self.globals)

    def _step(self, max_ops: int, max_stack: int, max_memo: int) -> object:
        """Run one opcode through the tokenizer and its handler; the value at STOP, else _RUNNING."""
        try:
            op = read_op(self.data, self.pos, self.end)
        except OpError as e:
            raise Stop(str(e), truncated=e.truncated) from None
        self.op = op
        self._frame_check(op)
        self.counters.opcodes += GENERAL_COST
        self.counters.general += 1
        if self.counters.opcodes > max_ops:
            raise LimitExceeded("max_pickle_opcodes", f"pickle opcode budget of {max_ops} spent (imports, calls,"
                                f" text and frame opcodes count {GENERAL_COST} each)", self._loc())
        self.pos = op.end
        if op.name == "STOP":
            value = self._pop()
            self.index += 1
            return value
        _DISPATCH[op.name](self, op)
        self.index += 1
        self.ops_run += 1
        if len(self.stack) + len(self.marks) > max_stack:
            raise LimitExceeded("max_pickle_stack", f"pickle stack deeper than {max_stack}", self._loc())
        if len(self.memo) > max_memo:
            raise LimitExceeded("max_pickle_memo", f"pickle memo larger than {max_memo}", self._loc())
        return _RUNNING

    def _loop(self, max_ops: int, max_stack: int, max_memo: int) -> object:
        """Run the stream to STOP and return the value there (Stop / LimitExceeded otherwise).

        The common opcodes run inline (no Op objects, no method calls), everything else one at a time through
        `_step`. Inline code has exactly the semantics of the handlers below: an opcode that would fail, emit
        a finding, cross the end of a FRAME or come near a limit is left, untouched, to `_step`. Stack and
        memo grow by at most one entry per opcode and every opcode takes at least one byte, so no limit can
        be exceeded within `budget` bytes. Calls (REDUCE, NEWOBJ, BINPERSID) run the general code with the
        machine's state brought up to date first; each charges GENERAL_COST, so the inline bound moves in by
        GENERAL_COST - 1 bytes."""
        data, stack, marks, memo = self.data, self.stack, self.marks, self.memo
        push = stack.append
        step = self._step
        while True:
            pos = self.pos
            lim = self.end if self.frame_end is None else self.frame_end
            budget = min(max_ops - self.counters.opcodes, max_stack - len(stack) - len(marks),
                         max_memo - len(memo))
            if pos + budget < lim:
                lim = pos + budget
            i0 = i = self.index
            last = pos
            fence = marks[-1] if marks else 0
            calling = False  # inside the general code of a call: its exceptions are not this loop's to retry
            try:
                while pos < lim:
                    code = data[pos]
                    # a decision tree on the opcode byte, the most frequent opcodes first in each branch
                    if code == 0x68:  # BINGET
                        q = pos + 2
                        if q > lim:
                            break
                        push(memo[data[pos + 1]])
                    elif code < 0x68:
                        if code < 0x4B:
                            if code == 0x47:  # BINFLOAT
                                q = pos + 9
                                if q > lim:
                                    break
                                push(_F64(data, pos + 1)[0])
                            elif code == 0x28:  # MARK
                                q = pos + 1
                                fence = len(stack)
                                marks.append(fence)
                            elif code == 0x29:  # EMPTY_TUPLE
                                q = pos + 1
                                push(())
                            elif code == 0x4A:  # BININT
                                q = pos + 5
                                if q > lim:
                                    break
                                push(_I32(data, pos + 1)[0])
                            elif code == 0x43 or code == 0x42:  # SHORT_BINBYTES / BINBYTES
                                if code == 0x43:
                                    if pos + 2 > lim:
                                        break
                                    s = pos + 2
                                    q = s + data[s - 1]
                                else:
                                    s = pos + 5
                                    if s > lim:
                                        break
                                    q = s + _U32(data, pos + 1)[0]
                                if q > lim:
                                    break
                                push(bytes(data[s:q]) if q - s <= BIG_BYTES else memoryview(data)[s:q])
                            elif code == 0x30:  # POP
                                if marks and marks[-1] == len(stack):
                                    marks.pop()
                                    fence = marks[-1] if marks else 0
                                elif len(stack) > fence:
                                    stack.pop()
                                else:
                                    break
                                q = pos + 1
                            elif code == 0x32:  # DUP
                                if len(stack) <= fence:
                                    break
                                q = pos + 1
                                push(stack[-1])
                            else:
                                break
                        elif code == 0x4B:  # BININT1
                            q = pos + 2
                            if q > lim:
                                break
                            push(data[pos + 1])
                        elif code == 0x4D:  # BININT2
                            q = pos + 3
                            if q > lim:
                                break
                            push(data[pos + 1] | data[pos + 2] << 8)
                        elif code == 0x58:  # BINUNICODE
                            q = pos + 5
                            if q > lim:
                                break
                            q += _U32(data, pos + 1)[0]
                            if q > lim:
                                break
                            push(str(data[pos + 5:q], "utf-8", "surrogatepass"))
                        elif code == 0x52:  # REDUCE
                            if len(stack) - fence < 2 or self.counters.opcodes + i - i0 + GENERAL_COST > max_ops:
                                break
                            calling = True
                            self._call_op("REDUCE", pos, i, i - i0)
                            calling = False
                            i0, q, lim = i + 1, pos + 1, lim - (GENERAL_COST - 1)  # the call is accounted for
                        elif code == 0x4E:  # NONE
                            q = pos + 1
                            push(None)
                        elif code == 0x5D:  # EMPTY_LIST
                            q = pos + 1
                            push([])
                        elif code == 0x65:  # APPENDS
                            if not marks:
                                break
                            mark = marks[-1]
                            if mark == 0 or type(stack[mark - 1]) is not list:
                                break
                            q = pos + 1
                            stack[mark - 1].extend(stack[mark:])
                            del stack[mark:]
                            marks.pop()
                            fence = marks[-1] if marks else 0
                        elif code == 0x51:  # BINPERSID
                            if len(stack) <= fence or self.counters.opcodes + i - i0 + GENERAL_COST > max_ops:
                                break
                            calling = True
                            self._call_op("BINPERSID", pos, i, i - i0)
                            calling = False
                            i0, q, lim = i + 1, pos + 1, lim - (GENERAL_COST - 1)  # the call is accounted for
                        elif code == 0x61:  # APPEND
                            if len(stack) <= fence or len(stack) < 2 or type(stack[-2]) is not list:
                                break
                            q = pos + 1
                            stack[-2].append(stack.pop())
                        else:
                            break
                    elif code < 0x80:
                        if code == 0x71:  # BINPUT
                            q = pos + 2
                            if q > lim or len(stack) <= fence:
                                break
                            memo[data[pos + 1]] = stack[-1]
                        elif code == 0x72:  # LONG_BINPUT
                            q = pos + 5
                            if q > lim or len(stack) <= fence:
                                break
                            memo[_U32(data, pos + 1)[0]] = stack[-1]
                        elif code == 0x75:  # SETITEMS
                            if not marks:
                                break
                            mark = marks[-1]
                            if mark == 0 or (len(stack) - mark) & 1:
                                break
                            target = stack[mark - 1]
                            if type(target) is not dict:
                                break
                            q = pos + 1
                            items = stack[mark:]
                            target.update(zip(items[0::2], items[1::2], strict=True))  # unhashable: general path
                            del stack[mark:]
                            marks.pop()
                            fence = marks[-1] if marks else 0
                        elif code == 0x7D:  # EMPTY_DICT
                            q = pos + 1
                            push({})
                        elif code == 0x74 or code == 0x6C:  # TUPLE / LIST
                            if not marks:
                                break
                            q = pos + 1
                            mark = marks.pop()
                            items = stack[mark:]
                            del stack[mark:]
                            push(tuple(items) if code == 0x74 else items)
                            fence = marks[-1] if marks else 0
                        elif code == 0x73:  # SETITEM
                            if len(stack) - fence < 2 or len(stack) < 3 or type(stack[-3]) is not dict:
                                break
                            q = pos + 1
                            stack[-3][stack[-2]] = stack[-1]  # unhashable: general path
                            del stack[-2:]
                        elif code == 0x6A:  # LONG_BINGET
                            q = pos + 5
                            if q > lim:
                                break
                            push(memo[_U32(data, pos + 1)[0]])
                        else:
                            break
                    elif code == 0x94:  # MEMOIZE
                        if len(stack) <= fence:
                            break
                        q = pos + 1
                        memo[len(memo)] = stack[-1]
                    elif code == 0x8C:  # SHORT_BINUNICODE
                        if pos + 2 > lim:
                            break
                        q = pos + 2 + data[pos + 1]
                        if q > lim:
                            break
                        push(str(data[pos + 2:q], "utf-8", "surrogatepass"))
                    elif code == 0x88:  # NEWTRUE
                        q = pos + 1
                        push(True)
                    elif code == 0x89:  # NEWFALSE
                        q = pos + 1
                        push(False)
                    elif 0x85 <= code <= 0x87:  # TUPLE1 / TUPLE2 / TUPLE3
                        n = code - 0x84
                        if len(stack) - fence < n:
                            break
                        q = pos + 1
                        t = tuple(stack[-n:])
                        del stack[-n:]
                        push(t)
                    elif code == 0x81:  # NEWOBJ
                        if len(stack) - fence < 2 or self.counters.opcodes + i - i0 + GENERAL_COST > max_ops:
                            break
                        calling = True
                        self._call_op("NEWOBJ", pos, i, i - i0)
                        calling = False
                        i0, q, lim = i + 1, pos + 1, lim - (GENERAL_COST - 1)  # the call is accounted for
                    elif code == 0x8A:  # LONG1
                        if pos + 2 > lim:
                            break
                        q = pos + 2 + data[pos + 1]
                        if q > lim:
                            break
                        push(int.from_bytes(data[pos + 2:q], "little", signed=True))
                    elif code == 0x8F:  # EMPTY_SET
                        q = pos + 1
                        push(set())
                    else:
                        break
                    last = pos
                    pos = q
                    i += 1
            except (KeyError, TypeError, ValueError):
                if calling:
                    raise
                # the general path repeats this opcode and reports it exactly
            n = i - i0
            if n:
                self.pos = pos
                self.index = i
                self.ops_run += n
                self.counters.opcodes += n
                self.op = Op(OPNAMES[data[last]], last, pos)
            value = step(max_ops, max_stack, max_memo)
            if value is not _RUNNING:
                return value

    def _call_op(self, name: str, pos: int, index: int, before: int) -> None:
        """A call opcode at `pos` from inside `_loop`, with `before` inline opcodes not yet accounted for.

        Brings the machine up to date as `_step` would have it while running this opcode (position past it,
        its index, the opcode budget charged), runs the call, then counts the opcode as done."""
        q = pos + 1
        self.pos, self.index, self.ops_run = q, index, self.ops_run + before
        self.counters.opcodes += before + GENERAL_COST
        self.counters.general += 1
        self.op = Op(name, pos, q)
        stack = self.stack
        if name == "BINPERSID":
            pid = stack.pop()
            self.persistent_ids.append(pid)
            stack.append(self.hooks.persistent(self, pid) if self.hooks is not None else PersistentRef(pid))
        else:
            args = stack.pop()
            func = stack.pop()
            stack.append(self.call(func, args, name))
        self.index, self.ops_run = index + 1, self.ops_run + 1

    def _stop_finding(self, e: Stop) -> None:
        if self.ctx is None:
            return
        where = "truncated" if e.truncated else "stops being valid"
        msg = f"pickle stream {where} at opcode #{self.index}: {e}"
        if self.seen or self.findings:
            msg += " (everything before this point is still executed by a loader)"
        self.emit(e.rule, msg, evidence=str(e))

    # -- findings --------------------------------------------------------------------------------
    def _loc(self) -> Any:
        if self.src is None:
            return None
        return self.src.loc(self.op.offset if self.op else self.pos, self.index)

    def _add(self, f: Finding) -> None:
        self.findings.append(f)

    def emit(self, rule: str, message: str, *, evidence: str | Callable[[], str] | None = None,
             severity: Severity | None = None, key: str = "", reference: str | None = None, op: Op | None = None,
             index: int | None = None) -> None:
        """Add a finding (evidence may be a function: rendered only when the finding is kept)."""
        if self.ctx is None:
            return
        ck = (rule, key)
        n = self.counts[ck] = self.counts.get(ck, 0) + 1
        if n > MAX_SAME_FINDINGS:
            return
        if callable(evidence):
            evidence = evidence()
        op = op or self.op
        self._add(self.ctx.finding(rule, message, self.src, offset=op.offset if op else self.pos,
                                   opcode_index=self.index if index is None else index,
                                   evidence=evidence, severity=severity, reference=reference))

    def _report_imports(self) -> None:
        for (rule, key), n in self.counts.items():
            if n > MAX_SAME_FINDINGS and self.ctx is not None:
                self._add(self.ctx.finding(rule, f"{n - MAX_SAME_FINDINGS} more {rule} findings for {key or 'this'}"
                                           " in this stream", self.src, evidence=key or None,
                                           severity=Severity.INFO))
        if self.ctx is None:
            return
        for full, s in self.seen.items():
            if s.called:
                continue
            d = s.decision
            alias = f" (Python-2 name {s.mapped_from})" if s.mapped_from else ""
            if d.status == "deny":
                sev = min(d.severity, Severity.HIGH, key=lambda x: x.rank)
                self.emit("PICKLE-DANGEROUS-GLOBAL", f"imports denied global {full}{alias}: {d.reason}",
                          evidence=full, severity=sev, key=full, reference=d.reference, op=s.op, index=s.index)
            elif d.status == "unknown":
                # never called while loading: the loader only imports the library's module and reads the
                # name; a library function or class the generated policy could not decide is noted, not high
                sev = Severity.LOW if d.undecided else None
                self.emit("PICKLE-UNKNOWN-GLOBAL", f"imports {full}{alias}, which is not on the allow list"
                          f" ({d.reason})" + ("; not called while loading" if d.undecided else ""),
                          evidence=full, key=full, op=s.op, index=s.index, severity=sev)

    # -- stack primitives (C semantics: items below the last MARK are out of reach) ---------------
    def _fence(self) -> int:
        return self.marks[-1] if self.marks else 0

    def _pop(self) -> object:
        if len(self.stack) <= self._fence():
            raise Stop("unpickling stack underflow")
        return self.stack.pop()

    def _top(self) -> object:
        if len(self.stack) <= self._fence():
            raise Stop("unpickling stack underflow")
        return self.stack[-1]

    def _pop_mark(self) -> list[object]:
        if not self.marks:
            raise Stop("could not find MARK")
        mark = self.marks.pop()
        items = self.stack[mark:]
        del self.stack[mark:]
        return items

    def _frame_check(self, op: Op) -> None:
        fe = self.frame_end
        if fe is None:
            return
        if op.offset >= fe:
            self.frame_end = None
            return
        if op.end > fe:
            self.emit("PICKLE-FRAME-MISMATCH", f"{op.name} at offset {op.offset} straddles the end of a FRAME at"
                      f" {fe}: the C unpickler reads on, the Python unpickler raises", evidence=f"frame end {fe}",
                      key="straddle")
            self.frame_end = None

    # -- imports ---------------------------------------------------------------------------------
    def import_global(self, module: str, name: str) -> Global:
        mapped = map_py2(module, name, self.proto)
        orig = f"{module}.{name}"
        module, name = mapped
        self.globals.append((module, name))
        g = Global(module, name)
        if self.classifier is None:
            return g
        full = g.full
        prev = self.seen.get(full)
        if prev is None or prev.capped:
            # a name re-imported after PROTO changes may resolve where it did not before: decide again
            d = self.classifier.classify(full)
            capped = False
            if "." in name and self.proto < 4 and d.status != "allow":
                # getattr(module, "a.b") fails below protocol 4 in CPython 3.11: cap at high
                d = Decision(d.status, d.name, min(d.severity, Severity.HIGH, key=lambda x: x.rank),
                             d.reason + "; dotted names only resolve at protocol >= 4", d.reference)
                capped = True
            top = orig.split(".")[0]
            if self.proto >= 3 and top in _compat_pickle.IMPORT_MAPPING and top not in sys.stdlib_module_names:
                # Python-2 module names are only renamed below protocol 3; above they fail to import
                d = Decision(d.status, d.name, min(d.severity, Severity.HIGH, key=lambda x: x.rank),
                             d.reason + f"; {top} only resolves below protocol 3", d.reference)
                capped = True
            if prev is None or (not capped and d.severity.rank > prev.decision.severity.rank):
                self.seen[full] = _Seen(self.op, self.index, d, mapped_from=orig if orig != full else None,
                                        capped=capped)
        return g

    def decide(self, g: Global) -> Decision:
        assert self.classifier is not None
        s = self.seen.get(g.full)
        if s is not None:
            return s.decision
        return self.classifier.classify(g.full)

    # -- calls -----------------------------------------------------------------------------------
    def call(self, func: object, args: object, kind: str, kwargs: object = None) -> object:
        """Record a call and return its symbolic result."""
        if isinstance(func, (Global, Call, Unknown)):
            pass
        else:
            raise Stop(f"{kind} calls a {type(func).__name__} constant, which is not callable")
        if not isinstance(args, tuple):
            c = const(args)
            if c is not NOCONST and not isinstance(c, (list, str, bytes, bytearray, dict, set, frozenset, tuple)):
                raise Stop(f"{kind} argument list is a {type(c).__name__}, not a tuple")
        result = Call(func, args, kind, kwargs)
        if self.classifier is None:
            return result
        if type(func) is Global:
            s = self.seen.get(func.full)
            if s is not None:
                plain = s.plain
                if plain is None:
                    plain = s.plain = self._plain(s.decision)
                if plain:
                    s.called = True
                    return result
        self.check_call(func, result)
        if self.hooks is not None:
            folded = self.hooks.after_call(self, func, result)
            if folded is not None:
                return folded
        return result

    def _plain(self, d: Decision) -> bool:
        """Whether check_call and the hooks do nothing for a call to this imported global but mark it
        called: allowed, no call-through, no decoder / resolver / nested-payload role."""
        assert self.classifier is not None
        return (d.status == "allow" and not self.classifier.t.call_through.get(d.name)
                and self.classifier.construct_only(d.name) is None
                and not any(d.name.startswith(e[0]) for e in self.classifier.t.string_args)
                and (self.hooks is None or self.hooks.plain(d.name)))

    def check_call(self, func: object, call: Call, via: str | None = None, guarded: bool = True) -> None:
        where = f" via {via}" if via else ""
        if isinstance(func, Global):
            s = self.seen.get(func.full)
            if s is not None:
                d = s.decision
                s.called = True
            else:
                d = self.decide(func)
            if guarded and d.status != "allow" and call.kind in ("NEWOBJ", "NEWOBJ_EX") and self.classifier is not None:
                guard = (self.classifier.t.state_guards or {}).get(d.name)
                if guard is not None:
                    call.guard = (via, guard)  # judged at BUILD, which is what runs __setstate__
                    return
            if d.status == "deny":
                sev = d.severity
                if self.hooks is not None:
                    sev = self.hooks.nested_severity(self, func, call, sev)
                self.emit("PICKLE-DANGEROUS-CALL", f"calls {d.name}{where} ({call.kind}): {d.reason}",
                          evidence=lambda: self._evidence(call), severity=sev, key=d.name, reference=d.reference)
            elif d.status == "unknown":
                self.emit("PICKLE-UNKNOWN-GLOBAL", f"calls {d.name}{where} ({call.kind}), which is not on the"
                          f" allow list ({d.reason})", evidence=lambda: self._evidence(call), key=d.name)
            elif d.status == "allow" and self.classifier is not None and call.kind not in _NEW_ONLY:
                unsafe = self.classifier.construct_only(d.name)
                if unsafe is not None:
                    self.emit(unsafe.rule, f"calls {d.name}{where} ({call.kind}): {unsafe.reason}",
                              evidence=lambda: self._evidence(call), severity=unsafe.severity, key=d.name,
                              reference=unsafe.reference)
                codec_at = (self.classifier.t.codec_calls or {}).get(d.name)
                if codec_at is not None:
                    self._codec_lookup(call, codec_at, d.name, where)
                for prefix, pattern, rule in self.classifier.t.string_args:
                    if d.name.startswith(prefix):
                        hit = _string_match((call.args, call.kwargs), pattern)
                        if hit is not None:
                            self.emit("PICKLE-DANGEROUS-CALL", f"calls {d.name}{where} ({call.kind}) with"
                                      f" {hit[:80]!r}: {rule.reason}", evidence=lambda: self._evidence(call),
                                      severity=rule.severity, key=d.name, reference=rule.reference)
            through = self.classifier.t.call_through.get(d.name) if self.classifier else None
            if through and isinstance(call.args, tuple):
                new_only = self.classifier.t.new_only.get(d.name, frozenset()) if self.classifier else frozenset()
                for i in through:
                    if i < len(call.args):
                        self.call_through(call.args[i], d.name, i in new_only)
        elif isinstance(func, Call):
            self.emit("PICKLE-DYNAMIC-CALL", f"calls the result of another call{where} ({call.kind})",
                      evidence=lambda: self._evidence(call), key="dynamic")
        elif isinstance(func, PersistentRef):
            self.emit("PICKLE-DYNAMIC-CALL", f"calls what a persistent id resolves to{where} ({call.kind})",
                      evidence=lambda: self._evidence(call), key="persid")
        elif isinstance(func, Unknown):
            self.emit("PICKLE-DYNAMIC-CALL", f"calls an unknown value ({func.reason}){where} ({call.kind})",
                      evidence=lambda: self._evidence(call), key="unknown")

    def _codec_lookup(self, call: Call, index: int, name: str, where: str) -> None:
        """codecs.encode/decode look the codec up by name: a name Python has not loaded makes the
        encodings search function import `encodings.<name>` (and registered search functions run)."""
        args = call.args if isinstance(call.args, tuple) else ()
        value = args[index] if index < len(args) else (call.kwargs or {}).get("encoding", "utf-8") \
            if isinstance(call.kwargs, dict) else NOCONST
        if isinstance(value, str):
            norm = "".join(ch if ch.isalnum() or ch == "." else "_" for ch in value.strip().lower())
            if norm in self.classifier.t.codec_names:  # type: ignore[union-attr]
                return
            what = f"codec {value[:60]!r}"
        else:
            what = "a codec name that is not a constant"
        self.emit("PICKLE-CODEC-LOOKUP", f"calls {name}{where} with {what}: the codec registry imports "
                  "encodings.<name> (or asks registered search functions) to find it", key=f"codec:{name}",
                  evidence=lambda: self._evidence(call))

    def _evidence(self, call: Call) -> str:
        # rendered only for a finding: most calls are allowed and never shown
        return render(call, self.ctx.limits.max_evidence_chars if self.ctx else 400)

    def call_through(self, target: object, via: str, new_only: bool = False) -> None:
        if isinstance(target, (Global, Call)) or type(target) is Unknown:
            kind = "call-through __new__" if new_only else "call-through"
            self.check_call(target, Call(target, Unknown("arguments"), kind), via)

    # -- opcode handlers ---------------------------------------------------------------------------
    def op_push_arg(self, op: Op) -> None:
        if op.differential:
            self.emit("PICKLE-TEXT-DIFFERENTIAL", f"{op.name} argument: {op.differential}",
                      evidence=op.differential, key=op.name)
        self.stack.append(op.arg)

    def op_mark(self, op: Op) -> None:
        self.marks.append(len(self.stack))

    def op_pop(self, op: Op) -> None:
        if self.marks and self.marks[-1] == len(self.stack):
            self.marks.pop()
        else:
            self._pop()

    def op_pop_mark(self, op: Op) -> None:
        self._pop_mark()

    def op_dup(self, op: Op) -> None:
        self.stack.append(self._top())

    def op_none(self, op: Op) -> None:
        self.stack.append(None)

    def op_true(self, op: Op) -> None:
        self.stack.append(op.name == "NEWTRUE")

    def op_empty(self, op: Op) -> None:
        self.stack.append({"EMPTY_DICT": dict, "EMPTY_LIST": list, "EMPTY_TUPLE": tuple,
                           "EMPTY_SET": set}[op.name]())

    def op_tuple(self, op: Op) -> None:
        self.stack.append(tuple(self._pop_mark()))

    def op_tuple_n(self, op: Op) -> None:
        n = {"TUPLE1": 1, "TUPLE2": 2, "TUPLE3": 3}[op.name]
        items = [self._pop() for _ in range(n)]
        self.stack.append(tuple(reversed(items)))

    def op_list(self, op: Op) -> None:
        self.stack.append(self._pop_mark())

    def op_dict(self, op: Op) -> None:
        items = self._pop_mark()
        if len(items) % 2:
            raise Stop("odd number of items for DICT")
        self.stack.append(self._dict_from(items))

    def op_frozenset(self, op: Op) -> None:
        items = self._pop_mark()
        try:
            self.stack.append(frozenset(items))
        except TypeError:
            raise Stop("unhashable item in FROZENSET") from None

    def _dict_from(self, items: list[object]) -> dict[object, object]:
        d: dict[object, object] = {}
        try:
            for i in range(0, len(items), 2):
                d[items[i]] = items[i + 1]
        except TypeError:
            raise Stop("unhashable dict key") from None
        return d

    def op_append(self, op: Op) -> None:
        value = self._pop()
        self._extend(self._top_any(), [value], "APPEND")

    def op_appends(self, op: Op) -> None:
        items = self._pop_mark()
        self._extend(self._top_any(), items, "APPENDS")

    def _top_any(self) -> object:
        # APPEND(S)/SETITEM(S) reach the item just below the mark (C do_append/do_setitems)
        if not self.stack:
            raise Stop("unpickling stack underflow")
        return self.stack[-1]

    def _extend(self, target: object, items: list[object], what: str) -> None:
        if isinstance(target, list):
            target.extend(items)
        elif isinstance(target, Global):
            self._mutation(target, what, items)
        elif isinstance(target, (Call, Unknown)):
            pass  # its class's own append/extend: checked with the class
        else:
            raise Stop(f"{what} on a {type(target).__name__}, which has no append")

    def op_setitem(self, op: Op) -> None:
        value = self._pop()
        key = self._pop()
        self._setitems(self._top_any(), [key, value], "SETITEM")

    def op_setitems(self, op: Op) -> None:
        items = self._pop_mark()
        if len(items) % 2:
            raise Stop("odd number of items for SETITEMS")
        self._setitems(self._top_any(), items, "SETITEMS")

    def _setitems(self, target: object, items: list[object], what: str) -> None:
        if isinstance(target, dict):
            try:
                for i in range(0, len(items), 2):
                    target[items[i]] = items[i + 1]
            except TypeError:
                raise Stop("unhashable dict key") from None
        elif isinstance(target, Global):
            self._mutation(target, what, items[0::2])
        elif isinstance(target, Call):
            if target.state is None:
                target.state = {}
            if isinstance(target.state, dict):
                try:
                    for i in range(0, len(items), 2):
                        target.state[items[i]] = items[i + 1]
                except TypeError:
                    raise Stop("unhashable dict key") from None
        elif not isinstance(target, (Unknown, list)):
            raise Stop(f"{what} on a {type(target).__name__}")

    def op_additems(self, op: Op) -> None:
        items = self._pop_mark()
        target = self._top_any()
        if isinstance(target, set):
            try:
                target.update(items)
            except TypeError:
                raise Stop("unhashable set item") from None
        elif isinstance(target, Global):
            self._mutation(target, "ADDITEMS", items)
        elif not isinstance(target, (Call, Unknown)):
            raise Stop(f"ADDITEMS on a {type(target).__name__}")

    def _mutation(self, target: Global, what: str, keys: list[object]) -> None:
        self.emit("PICKLE-GLOBAL-MUTATION", f"{what} writes into imported object {target.full}",
                  evidence=f"{target.full} <- {render(keys, 200)}", key=target.full)

    # memo
    def op_put(self, op: Op) -> None:
        idx = int(op.arg)  # type: ignore[call-overload]
        if idx < 0:
            raise Stop(f"negative {op.name} argument")
        self.memo[idx] = self._top()

    def op_memoize(self, op: Op) -> None:
        self.memo[len(self.memo)] = self._top()

    def op_get(self, op: Op) -> None:
        idx = int(op.arg)  # type: ignore[call-overload]
        if idx not in self.memo:
            raise Stop(f"memo value not found at index {idx}")
        self.stack.append(self.memo[idx])

    # imports
    def op_global(self, op: Op) -> None:
        self.stack.append(self.import_global(str(op.arg), str(op.arg2)))

    def op_stack_global(self, op: Op) -> None:
        name = self._pop()
        module = self._pop()
        m, n = const(module), const(name)
        if type(m) is str and type(n) is str:
            self.stack.append(self.import_global(m, n))
            return
        known_bad = [x for x in (m, n) if x is not NOCONST and type(x) is not str]
        if known_bad:
            raise Stop(f"STACK_GLOBAL requires str, got {type(known_bad[0]).__name__}")
        self.emit("PICKLE-UNRESOLVED-GLOBAL", "STACK_GLOBAL imports a name computed at load time",
                  evidence=f"module={render(module, 150)} name={render(name, 150)}", key="stack_global")
        self.stack.append(Unknown("unresolved STACK_GLOBAL"))

    def op_ext(self, op: Op) -> None:
        self.emit("PICKLE-EXTENSION-CODE", f"{op.name} {op.arg} imports whatever copyreg's extension registry"
                  " holds in the loading process (empty in a fresh interpreter)", evidence=f"{op.name} {op.arg}",
                  key=str(op.arg))
        self.stack.append(Unknown(f"extension code {op.arg}"))

    # calls
    def op_reduce(self, op: Op) -> None:
        args = self._pop()
        func = self._pop()
        self.stack.append(self.call(func, args, "REDUCE"))

    def op_newobj(self, op: Op) -> None:
        args = self._pop()
        cls = self._pop()
        self.stack.append(self.call(cls, args, "NEWOBJ"))

    def op_newobj_ex(self, op: Op) -> None:
        kwargs = self._pop()
        args = self._pop()
        cls = self._pop()
        self.stack.append(self.call(cls, args, "NEWOBJ_EX", kwargs))

    def op_inst(self, op: Op) -> None:
        cls = self.import_global(str(op.arg), str(op.arg2))
        args = tuple(self._pop_mark())
        self.stack.append(self.call(cls, args, "INST"))

    def op_obj(self, op: Op) -> None:
        items = self._pop_mark()
        if not items:
            raise Stop("OBJ without a class")
        self.stack.append(self.call(items[0], tuple(items[1:]), "OBJ"))

    def op_build(self, op: Op) -> None:
        state = self._pop()
        inst = self._top()
        if self.classifier is None:
            return
        if isinstance(inst, Global):
            keys = list(state.keys()) if isinstance(state, dict) else [state]
            self._mutation(inst, "BUILD", keys)
            return
        if not isinstance(inst, Call):
            return
        if inst.guard is not None:
            self._guarded_build(inst, state)
        if inst.setstate is not None:
            hijack = Call(inst.setstate, (state,), "BUILD __setstate__")
            if isinstance(inst.setstate, (Global, Call, Unknown)):
                self.check_call(inst.setstate, hijack, "a planted __setstate__")
            return
        self._plant_check(inst, state)
        if type(inst.func) is Global and isinstance(state, tuple) and state and self.classifier is not None:
            # partial.__setstate__((func, args, kwds, dict)) replaces the function the partial was built with
            index = (self.classifier.t.by_target or {}).get(self.decide(inst.func).name)
            if index is not None:
                self.call_through(state[0], f"{inst.func.full}.__setstate__")
        if isinstance(inst.state, dict) and isinstance(state, dict):
            inst.state.update(state)
        else:
            inst.state = state
        if self.hooks is not None:
            self.hooks.after_build(self, inst)

    def _guarded_build(self, inst: Call, state: object) -> None:
        """A class whose __setstate__ reaches a sink only when its state holds one of some keys: safe for a
        dict state of constant str keys without them; anything else is judged as the class itself."""
        via, (keys, _reason, _ref) = inst.guard  # type: ignore[misc]
        if type(state) is dict and all(type(k) is str for k in state) and keys.isdisjoint(state):
            return
        self.check_call(inst.func, inst, via, guarded=False)

    def _plant_check(self, inst: Call, state: object) -> None:
        dicts = [state]
        if isinstance(state, tuple) and len(state) == 2:
            dicts = list(state)
        dunders = self.classifier.t.walk_dunders if self.classifier else frozenset()
        for d in dicts:
            if not isinstance(d, dict):
                continue
            for k in d:
                if type(k) is str and (k in dunders or k == "__setstate__"):
                    self.emit("PICKLE-SETSTATE-HIJACK", f"BUILD sets {k} on {render(inst.func, 120)} instance",
                              evidence=f"{k} = {render(d[k], 200)}", key=k)
                    if k == "__setstate__":
                        inst.setstate = d[k]

    def op_persid(self, op: Op) -> None:
        pid = op.arg if op.name == "PERSID" else self._pop()
        self.persistent_ids.append(pid)
        if self.hooks is not None:
            self.stack.append(self.hooks.persistent(self, pid))
        else:
            self.stack.append(PersistentRef(pid))

    def op_proto(self, op: Op) -> None:
        if int(op.arg) > 5:  # type: ignore[call-overload]
            raise Stop(f"unsupported pickle protocol: {op.arg}")
        self.proto = int(op.arg)  # type: ignore[call-overload]

    def op_frame(self, op: Op) -> None:
        size = int(op.arg)  # type: ignore[call-overload]
        if self.frame_end is not None and op.offset < self.frame_end:
            self.emit("PICKLE-FRAME-MISMATCH", "a FRAME starts inside another frame: the C unpickler accepts it,"
                      " the Python unpickler raises", evidence=f"frame end {self.frame_end}", key="nested")
        if size > self.end - op.end:
            raise Stop(f"FRAME declares {size} bytes but only {self.end - op.end} remain", truncated=True)
        self.frame_end = op.end + size if size else None

    def op_next_buffer(self, op: Op) -> None:
        self.emit("PICKLE-OUT-OF-BAND", "NEXT_BUFFER takes data from the loads() caller, not from the file",
                  key="buffer")
        raise Stop("pickle stream refers to out-of-band data but no buffers argument was given",
                   rule="PICKLE-OUT-OF-BAND")

    def op_readonly_buffer(self, op: Op) -> None:
        self._top()


_DISPATCH: dict[str, Any] = {
    "MARK": Machine.op_mark, "POP": Machine.op_pop, "POP_MARK": Machine.op_pop_mark, "DUP": Machine.op_dup,
    "NONE": Machine.op_none, "NEWTRUE": Machine.op_true, "NEWFALSE": Machine.op_true,
    "EMPTY_DICT": Machine.op_empty, "EMPTY_LIST": Machine.op_empty, "EMPTY_TUPLE": Machine.op_empty,
    "EMPTY_SET": Machine.op_empty, "TUPLE": Machine.op_tuple, "TUPLE1": Machine.op_tuple_n,
    "TUPLE2": Machine.op_tuple_n, "TUPLE3": Machine.op_tuple_n, "LIST": Machine.op_list, "DICT": Machine.op_dict,
    "FROZENSET": Machine.op_frozenset, "APPEND": Machine.op_append, "APPENDS": Machine.op_appends,
    "SETITEM": Machine.op_setitem, "SETITEMS": Machine.op_setitems, "ADDITEMS": Machine.op_additems,
    "PUT": Machine.op_put, "BINPUT": Machine.op_put, "LONG_BINPUT": Machine.op_put, "MEMOIZE": Machine.op_memoize,
    "GET": Machine.op_get, "BINGET": Machine.op_get, "LONG_BINGET": Machine.op_get,
    "GLOBAL": Machine.op_global, "STACK_GLOBAL": Machine.op_stack_global, "EXT1": Machine.op_ext,
    "EXT2": Machine.op_ext, "EXT4": Machine.op_ext, "REDUCE": Machine.op_reduce, "NEWOBJ": Machine.op_newobj,
    "NEWOBJ_EX": Machine.op_newobj_ex, "INST": Machine.op_inst, "OBJ": Machine.op_obj, "BUILD": Machine.op_build,
    "PERSID": Machine.op_persid, "BINPERSID": Machine.op_persid, "PROTO": Machine.op_proto,
    "FRAME": Machine.op_frame, "NEXT_BUFFER": Machine.op_next_buffer, "READONLY_BUFFER": Machine.op_readonly_buffer,
}
for _name in ("INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4", "FLOAT", "BINFLOAT", "STRING",
              "BINSTRING", "SHORT_BINSTRING", "UNICODE", "BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8",
              "BINBYTES", "SHORT_BINBYTES", "BINBYTES8", "BYTEARRAY8"):
    _DISPATCH[_name] = Machine.op_push_arg
