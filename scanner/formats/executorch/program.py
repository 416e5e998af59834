"""ExecuTorch programs (`.pte`, format `executorch`): read the flatbuffer strictly, never run it.

Layout (executorch/exir/_serialize/program.fbs, _program.py): a uint32 root offset, the file identifier
`ET12` at bytes 4..8, then optionally the extended header `eh00` (length, program_size, segment_base_offset,
segment_data_size) that the serializer inserts at byte 8; the flatbuffer fills [0, program_size) and the
segments (constants, delegate blobs, named data) follow from segment_base_offset.

What runs: no Python. The C++ runtime calls, per instruction, a kernel registered under the operator's
`name` (`namespace::op`) and `overload`, and hands each delegate's processed blob to the native backend
registered under the delegate `id`. So an operator namespace no ExecuTorch kernel library registers is a
native kernel the application links (code the scan cannot see), an unknown backend id is a native parser
of an opaque blob, and any offset or index that leaves its table is the out-of-bounds class of the runtime
advisories (Program::load defaults to minimal verification: the flatbuffer is not verified before use).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

from scanner.findings import Finding, Severity
from scanner.formats.executorch.flatbuf import FlatbufferError, Reader
from scanner.record import field, record
from scanner.source import Source

IDENTIFIER = b"ET12"
_OTHER_VERSION = re.compile(rb"ET[0-9]{2}")
EH_OFFSET = 8          # the extended header sits right after the root offset and identifier
EH_MAGIC = b"eh00"
EH_MIN_LENGTH = 24     # magic, length, program_size, segment_base_offset
EH_FULL_LENGTH = 32    # + segment_data_size

# table field indices, in program.fbs declaration order
PROGRAM_EXECUTION_PLAN, PROGRAM_CONSTANT_BUFFER, PROGRAM_DELEGATE_DATA, PROGRAM_SEGMENTS = 1, 2, 3, 4
PROGRAM_CONSTANT_SEGMENT, PROGRAM_MUTABLE_SEGMENTS, PROGRAM_NAMED_DATA = 5, 6, 7
PLAN_NAME, PLAN_VALUES, PLAN_CHAINS, PLAN_OPERATORS, PLAN_DELEGATES = 0, 2, 5, 6, 7
CHAIN_INSTRUCTIONS = 2
INSTRUCTION_TYPE, INSTRUCTION_ARGS = 0, 1
KERNEL_CALL, DELEGATE_CALL = 1, 2  # InstructionArguments union tags (0 is NONE)
LOCATION_INLINE, LOCATION_SEGMENT = 0, 1


def is_pte(head: bytes, size: int) -> bool:
    """Root offset (aligned, inside the file) then an `ETnn` identifier; other versions still go to the
    analyzer, which reports that the runtime of this schema refuses them."""
    if len(head) < 8 or not _OTHER_VERSION.fullmatch(head[4:8]):
        return False
    root = int.from_bytes(head[:4], "little")
    return 8 <= root < size and root % 4 == 0


@record(frozen=True)
class Header:
    program_size: int
    segment_base_offset: int
    segment_data_size: int


@record
class Program:
    header: Header | None
    operators: list[tuple[str, str, str]] = field(default_factory=list)   # (plan, name, overload)
    delegates: list[tuple[str, str, int, int]] = field(default_factory=list)  # (plan, id, location, index)
    segments: list[tuple[int, int]] = field(default_factory=list)         # (offset, size) from the base
    inline_blobs: int = 0
    problems: list[str] = field(default_factory=list)                     # out-of-bounds offsets and indices


def read_header(src: Source) -> Header | None:
    """The extended header when its magic is there (the runtime's ExtendedHeader::Parse), else None."""
    head = src.read_at(EH_OFFSET, EH_FULL_LENGTH)
    if head[:4] != EH_MAGIC:
        return None
    length = int.from_bytes(head[4:8], "little")
    if length < EH_MIN_LENGTH or len(head) < EH_MIN_LENGTH:
        raise FlatbufferError(f"extended header of {length} bytes (at least {EH_MIN_LENGTH})")
    seg_size = int.from_bytes(head[24:32], "little") if length >= EH_FULL_LENGTH and len(head) >= 32 else 0
    return Header(int.from_bytes(head[8:16], "little"), int.from_bytes(head[16:24], "little"), seg_size)


def read_program(src: Source, limit: int, tick: Callable[[], None] | None = None) -> Program:
    """Parse what a runtime follows: plans, operators, delegates, segments, instructions (indices checked).
    `tick` is called every few thousand instructions (the caller's deadline check)."""
    header = read_header(src)
    prog = Program(header)
    end = src.size
    if header is not None:
        if not 8 <= header.program_size <= src.size:
            raise FlatbufferError(f"program_size {header.program_size} outside the file of {src.size} bytes")
        end = header.program_size
    r = Reader(src, end)
    root = r.root()
    for plan in r.tables(root, PROGRAM_EXECUTION_PLAN, limit):
        _read_plan(r, plan, prog, limit, tick)
    prog.inline_blobs = r.vector(root, PROGRAM_DELEGATE_DATA, 4, limit)[1]
    for seg in r.tables(root, PROGRAM_SEGMENTS, limit):
        prog.segments.append((r.scalar(seg, 0, "Q"), r.scalar(seg, 1, "Q")))
    _check_segments(src, r, root, prog, limit)
    return prog


def _read_plan(r: Reader, plan: int, prog: Program, limit: int, tick: Callable[[], None] | None) -> None:
    name = r.string(plan, PLAN_NAME) or ""
    n_values = r.vector(plan, PLAN_VALUES, 4, limit)[1]
    ops = r.tables(plan, PLAN_OPERATORS, limit)
    for op in ops:
        prog.operators.append((name, r.string(op, 0) or "", r.string(op, 1) or ""))
    delegates = r.tables(plan, PLAN_DELEGATES, limit)
    for d in delegates:
        ref = r.table(d, 1)
        loc = r.scalar(ref, 0, "B") if ref is not None else -1
        idx = r.scalar(ref, 1, "I") if ref is not None else -1
        prog.delegates.append((name, r.string(d, 0) or "", loc, idx))
    budget = limit
    for chain in r.tables(plan, PLAN_CHAINS, limit):
        for ins in r.tables(chain, CHAIN_INSTRUCTIONS, max(budget, 0)):
            budget -= 1
            if tick is not None and budget % 4096 == 0:
                tick()
            kind = r.scalar(ins, INSTRUCTION_TYPE, "B")
            if kind not in (KERNEL_CALL, DELEGATE_CALL):
                continue
            call = r.table(ins, INSTRUCTION_ARGS)
            if call is None:
                prog.problems.append(f"plan {name!r}: an instruction without arguments")
                continue
            target = r.scalar(call, 0, "i")
            count, what = (len(ops), "operator") if kind == KERNEL_CALL else (len(delegates), "delegate")
            if not 0 <= target < count:
                prog.problems.append(f"plan {name!r}: {what} index {target} of {count}")
            first, n = r.vector(call, 1, 4, limit)
            for i in range(n):
                v = r.i32(first + 4 * i)
                if not 0 <= v < n_values:
                    prog.problems.append(f"plan {name!r}: {what} call argument {v} of {n_values} values")
                    break
            if len(prog.problems) > 20:
                return


def _check_segments(src: Source, r: Reader, root: int, prog: Program, limit: int) -> None:
    """Segments must lie inside the file after the base; delegate, constant and named-data indices inside
    their tables (each is an unchecked read in runtimes older than the advisories' fixes)."""
    h = prog.header
    if prog.segments and h is None:
        prog.problems.append(f"{len(prog.segments)} segment(s) but no extended header to place them")
    if h is not None and h.segment_base_offset:
        if not h.program_size <= h.segment_base_offset <= src.size:
            prog.problems.append(f"segment_base_offset {h.segment_base_offset} outside "
                                 f"{h.program_size}..{src.size}")
        if h.segment_data_size and h.segment_base_offset + h.segment_data_size > src.size:
            prog.problems.append(f"segment data {h.segment_base_offset}+{h.segment_data_size} past the end "
                                 f"of the file ({src.size})")
    if h is not None:
        room = src.size - h.segment_base_offset
        for i, (off, size) in enumerate(prog.segments):
            if off + size > room:
                prog.problems.append(f"segment {i} at {off}+{size} past the end of the file "
                                     f"(base {h.segment_base_offset}, size {src.size})")
    for plan, did, loc, idx in prog.delegates:
        count = prog.inline_blobs if loc == LOCATION_INLINE else len(prog.segments)
        if loc not in (LOCATION_INLINE, LOCATION_SEGMENT) or not 0 <= idx < count:
            prog.problems.append(f"plan {plan!r}: delegate {did!r} data at location {loc} index {idx} "
                                 f"of {count}")
    const = r.table(root, PROGRAM_CONSTANT_SEGMENT)
    if const is not None:
        _check_subsegment(r, const, prog, "constant_segment", limit)
    for i, sub in enumerate(r.tables(root, PROGRAM_MUTABLE_SEGMENTS, limit)):
        _check_subsegment(r, sub, prog, f"mutable_data_segments[{i}]", limit)
    for nd in r.tables(root, PROGRAM_NAMED_DATA, limit):
        idx = r.scalar(nd, 1, "I")
        if idx >= len(prog.segments):
            prog.problems.append(f"named data {r.string(nd, 0)!r} in segment {idx} of {len(prog.segments)}")


def _check_subsegment(r: Reader, sub: int, prog: Program, what: str, limit: int) -> None:
    idx = r.scalar(sub, 0, "I")
    first, n = r.vector(sub, 1, 8, limit)
    if n == 0:
        return
    if idx >= len(prog.segments):
        prog.problems.append(f"{what} in segment {idx} of {len(prog.segments)}")
        return
    size = prog.segments[idx][1]
    for i in range(n):
        off = r.u64(first + 8 * i)
        if off > size:
            prog.problems.append(f"{what} offset {off} past its segment of {size} bytes")
            return


# -- findings -------------------------------------------------------------------------------------------

def analyze(src: Source, ctx: Any) -> Iterable[Finding]:
    ident = src.read_at(4, 4)
    if ident != IDENTIFIER:
        return [ctx.finding("EXECUTORCH-MALFORMED", f"ExecuTorch identifier {ident!r}: this schema's runtime "
                            "(ET12) refuses it, another runtime may not; not parsed", src, offset=4,
                            evidence=ident.decode("ascii", "replace"))]
    try:
        prog = read_program(src, ctx.limits.max_graph_nodes, lambda: ctx.check_deadline(src))
    except FlatbufferError as e:
        return [ctx.finding("EXECUTORCH-OUT-OF-BOUNDS", "the program's flatbuffer could not be read within "
                            "its bounds: a runtime without verification follows such offsets", src,
                            evidence=str(e)[:200])]
    out: list[Finding] = []
    for p in prog.problems[:20]:
        out.append(ctx.finding("EXECUTORCH-OUT-OF-BOUNDS", f"ExecuTorch program: {p}", src, evidence=p[:200]))
    cfg = _config(ctx)
    for ns in dict.fromkeys(_namespace(name) for _, name, _ in prog.operators):
        if ns not in cfg["namespaces"]:
            ops = sorted({f"{n}.{o}" if o else n for _, n, o in prog.operators if _namespace(n) == ns})
            out.append(ctx.finding("EXECUTORCH-CUSTOM-OP", f"operator namespace {ns!r}: no ExecuTorch kernel "
                                   "library registers it; the application links a native kernel for it",
                                   src, evidence=", ".join(ops)[:300]))
    for plan, did, _loc, _idx in prog.delegates:
        if did not in cfg["backends"]:
            out.append(ctx.finding("EXECUTORCH-UNKNOWN-DELEGATE", f"delegate backend {did!r} (plan {plan!r}) "
                                   "is not one ExecuTorch ships: a native backend parses its blob", src,
                                   evidence=f"backend id={did}"))
    out.append(ctx.finding("EXECUTORCH-PROGRAM", _summary(prog), src, severity=Severity.INFO,
                           evidence=", ".join(sorted({f"{n}.{o}" if o else n for _, n, o in prog.operators}))[:300]
                           or None))
    return out


def _namespace(name: str) -> str:
    return name.split("::", 1)[0] if "::" in name else ""


def _summary(prog: Program) -> str:
    backends = sorted({d for _, d, _, _ in prog.delegates})
    return (f"ExecuTorch program: {len(prog.operators)} operator(s), {len(prog.delegates)} delegate(s)"
            + (f" ({', '.join(backends)})" if backends else "") + f", {len(prog.segments)} segment(s)")


def _config(ctx: Any) -> dict[str, frozenset[str]]:
    def build() -> dict[str, frozenset[str]]:
        doc = ctx.rules.doc("executorch").get("executorch", {})
        return {"namespaces": frozenset(str(x) for x in doc.get("kernel_namespaces", [])),
                "backends": frozenset(str(x) for x in doc.get("backends", []))}
    return ctx.rules.cached("executorch", build)  # type: ignore[no-any-return]
