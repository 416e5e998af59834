"""Gather what a security engineer needs to see around each finding of one file.

The file is scanned as `modelseal scan` would, then read again, never executed: pickles are listed opcode
by opcode (pickletools' tokenizer only parses) and decompiled by fickling's `Pickled` parser and symbolic
interpreter (which builds a Python AST and never imports or calls anything); zip and tar members are
listed from their headers; Keras Lambda bytecode is disassembled by our read-only marshal reader; ONNX
graphs are parsed without external data. Everything gathered is plain data for the renderers.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import io
import posixpath
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from scanner.findings import FileReport, Finding, Report
from scanner.rules import Policy, RuleSet, load_ruleset
from scanner.sniff import sniff
from scanner.source import BytesSource, FileSource, Source

MiB = 1024 * 1024


@dataclass(frozen=True)
class ExplainOptions:
    """Presentation bounds (what is shown), separate from the scan's own limits (what is checked)."""

    context_opcodes: int = 6            # opcodes shown either side of a finding
    max_opcodes: int = 500_000          # opcodes listed per member (the window needs only a few)
    max_streams: int = 16               # concatenated pickles decompiled per member
    max_decompile_bytes: int = 8 * MiB  # larger pickle streams are listed but not decompiled
    max_program_lines: int = 400
    max_members_listed: int = 2_000
    max_member_read: int = 256 * MiB    # bytes pulled into memory to look inside a member
    max_config_bytes: int = 64 * MiB
    max_arg_chars: int = 160


@dataclass(frozen=True)
class Block:
    """One piece of context: a code listing, a table or a short note."""

    title: str
    kind: str  # "code" | "table" | "note"
    text: str = ""
    language: str = ""
    columns: tuple[str, ...] = ()
    rows: tuple[tuple[str, ...], ...] = ()
    marked: tuple[int, ...] = ()  # row (table) or line (code) indices the finding points at


@dataclass(frozen=True)
class FindingView:
    finding: Finding
    title: str
    help: str
    blocks: tuple[Block, ...]


@dataclass(frozen=True)
class FileView:
    report: FileReport
    blocks: tuple[Block, ...]  # file-wide context: member trees, decompiled programs, graphs
    findings: tuple[FindingView, ...]


@dataclass(frozen=True)
class Explanation:
    report: Report
    files: tuple[FileView, ...]


def explain(paths: list[Path], policy: Policy | None = None, rules: RuleSet | None = None,
            options: ExplainOptions | None = None) -> Explanation:
    from scanner.engine import scan

    policy = policy or Policy()
    rules = rules or load_ruleset()
    options = options or ExplainOptions()
    report = scan(paths, policy, rules)
    views = []
    for fr in report.files:
        views.append(explain_file(fr, rules, options))
    return Explanation(report, tuple(views))


def explain_file(fr: FileReport, rules: RuleSet, options: ExplainOptions) -> FileView:
    """Context for one scanned file; problems reading it again become notes, never exceptions."""
    path = Path(fr.path)
    try:
        top: Source = FileSource(path, fr.path)
    except OSError as e:
        note = Block("File", "note", f"cannot read the file again: {e.strerror or e}")
        return FileView(fr, (note,), tuple(_bare_view(f, rules) for f in fr.findings))
    try:
        gatherer = _Gatherer(top, rules, options)
        return gatherer.run(fr)
    finally:
        top.close()


def _bare_view(f: Finding, rules: RuleSet, blocks: tuple[Block, ...] = ()) -> FindingView:
    meta = rules.meta(f.rule_id)
    return FindingView(f, meta.title if meta else f.rule_id, meta.help if meta else "", blocks)


# -- member resolution ---------------------------------------------------------------------------------

@dataclass
class _Node:
    member: str | None
    src: Source | None
    fmt: str
    note: str | None = None
    blocks: list[Block] = field(default_factory=list)
    ops: _OpListing | None = None
    programs: list[tuple[int, str]] | None = None  # (stream start offset, decompiled source)


class _Gatherer:
    def __init__(self, top: Source, rules: RuleSet, options: ExplainOptions) -> None:
        self.top = top
        self.rules = rules
        self.options = options
        self.nodes: dict[str | None, _Node] = {}

    def run(self, fr: FileReport) -> FileView:
        self._node(None)
        for f in fr.findings:
            self._node(f.location.member)
        views = [self._finding_view(f) for f in sorted(fr.findings, key=lambda f: -f.severity.rank)]
        shown = {id(b) for v in views for b in v.blocks}
        file_blocks: list[Block] = []
        for node in self.nodes.values():
            file_blocks.extend(b for b in node.blocks if id(b) not in shown)  # once is enough
            if node.note:
                file_blocks.append(Block(f"Member {node.member}" if node.member else "File", "note", node.note))
        return FileView(fr, tuple(file_blocks), tuple(views))

    # Each node is read once; its file-wide blocks (tree, program, graph) are built on first use.
    def _node(self, member: str | None) -> _Node:
        if member in self.nodes:
            return self.nodes[member]
        src, note = self._resolve(member)
        fmt = "unknown"
        if src is not None:
            try:
                fmt = sniff(src)
            except Exception as e:  # noqa: BLE001 - context is best effort; the scan already judged
                note = f"format detection failed: {type(e).__name__}"
        node = _Node(member, src, fmt, note)
        self.nodes[member] = node
        if src is not None:
            self._describe(node)
        return node

    def _resolve(self, member: str | None) -> tuple[Source | None, str | None]:
        if not member:
            return self.top, None
        cur: Source = self.top
        rest = member
        while rest:
            child, rest_after, err = _open_child(cur, rest, self.options)
            if child is None:
                return None, err or f"member {member!r} could not be located again"
            cur, rest = child, rest_after
            if rest and cur.member not in self.nodes:
                # a container on the way (tar in gzip, zip in tar): its member tree is context too
                inner = _Node(cur.member, cur, sniff(cur))
                self.nodes[cur.member] = inner
                self._describe(inner)
        return cur, None

    def _describe(self, node: _Node) -> None:
        src = node.src
        assert src is not None
        label = f" of {node.member}" if node.member else ""
        try:
            if node.fmt == "zip":
                node.blocks.append(_zip_tree(src, self.options, label))
                node.blocks.extend(_keras_zip_lambdas(src, self.options, label))
            elif node.fmt == "tar":
                node.blocks.append(_tar_tree(src, self.options, label))
            elif node.fmt in ("gzip", "bz2", "xz", "lzma", "zlib", "lz4"):
                node.blocks.append(_stream_note(src, node.fmt, self.options, label))
            elif node.fmt == "pickle" or node.fmt == "npy":
                self._pickle(node, label)
            elif node.fmt == "onnx":
                node.blocks.extend(_onnx_blocks(src, self.options, label))
            elif node.fmt == "hdf5":
                node.blocks.extend(_hdf5_lambdas(src, self.options, label))
        except Exception as e:  # noqa: BLE001 - context is best effort; the scan already judged
            node.blocks.append(Block(f"Context{label}", "note",
                                     f"could not gather context: {type(e).__name__}: {str(e)[:200]}"))

    def _pickle(self, node: _Node, label: str) -> None:
        src = node.src
        assert src is not None
        start = 0
        if node.fmt == "npy":
            start = _npy_payload_offset(src)
            if start is None:
                return
        if src.size > self.options.max_member_read:
            node.note = f"{src.size} bytes: too large to list here"
            return
        data = src.read_at(0, src.size)
        node.ops = _list_opcodes(data, start, self.options)
        node.programs = []
        for s_start, s_end in node.ops.streams[: self.options.max_streams]:
            node.programs.append((s_start, _decompile(data[s_start:s_end], self.options)))
        for s_start, text in node.programs:
            lines = text.splitlines()
            if len(lines) > self.options.max_program_lines:
                lines = lines[: self.options.max_program_lines] + [
                    f"# … {len(text.splitlines()) - self.options.max_program_lines} more lines"]
            node.blocks.append(Block(f"Decompiled pickle program{label} (stream at offset {s_start})", "code",
                                     "\n".join(lines), language="python"))
        if node.ops.error:
            node.blocks.append(Block(f"Opcode stream{label}", "note", node.ops.error))

    # -- per finding ---------------------------------------------------------------------------------
    def _finding_view(self, f: Finding) -> FindingView:
        node = self.nodes.get(f.location.member)
        blocks: list[Block] = []
        if node is not None and node.note:
            blocks.append(Block("Context", "note", node.note))
        if node is not None and node.ops is not None and node.ops.ops:
            window = node.ops.window(f.location.offset, f.location.opcode_index, self.options.context_opcodes)
            if window is not None:
                rows, marked = window
                blocks.append(Block("Opcodes around the finding", "table", columns=("#", "offset", "opcode", "argument"),
                                    rows=rows, marked=marked))
            if node.programs:
                excerpt = _program_excerpt(node.programs, f)
                if excerpt is not None:
                    blocks.append(excerpt)
        if f.rule_id.startswith("KERAS"):
            blocks.extend(self._lambdas_for(f))
        if f.rule_id.startswith("ONNX") and node is not None:
            want = "ONNX external data" if "EXTERNAL" in f.rule_id else "ONNX nodes outside"
            blocks.extend(b for b in node.blocks if b.title.startswith(want))
        return _bare_view(f, self.rules, tuple(blocks))

    def _lambdas_for(self, f: Finding) -> list[Block]:
        """A Lambda's disassembly goes with the findings naming its layer (with all of them when none does)."""
        lambdas = [b for n in self.nodes.values() for b in n.blocks if b.language == "pycode"]
        text = f"{f.message} {f.evidence or ''}"
        named = [b for b in lambdas if _layer_of(b) and _layer_of(b) in text]
        return named or lambdas[:3]


def _layer_of(block: Block) -> str:
    parts = block.title.split("'")
    return parts[1] if len(parts) >= 3 else ""


def _open_child(cur: Source, rest: str, options: ExplainOptions) -> tuple[Source | None, str, str | None]:
    """Open the first element of a '!'-joined member chain inside `cur` (names may themselves hold '!')."""
    fmt = sniff(cur)
    if fmt == "zip":
        try:
            entries = _zip_entries(cur, options)
        except Exception as e:  # noqa: BLE001 - hostile zips fail in many ways
            return None, "", f"zip directory unreadable: {type(e).__name__}: {e}"
        by_name: dict[str, _ZipEntry] = {}
        for entry in entries:
            by_name.setdefault(entry.name, entry)
        for name, after in _splits(rest):
            entry = by_name.get(name)
            if entry is None:
                continue
            child, err = _zip_member(cur, entry, options)
            return child, after, err
        return None, "", f"no zip member named like {rest!r}"
    if fmt == "tar":
        import tarfile

        try:
            with contextlib.closing(cur.open()) as raw, tarfile.open(fileobj=raw, mode="r:") as tf:
                members = {m.name: m for m in _tar_members(tf, options.max_members_listed)}
        except (tarfile.TarError, OSError, ValueError, EOFError) as e:
            return None, "", f"tar headers unreadable: {e}"
        for name, after in _splits(rest):
            m = members.get(name)
            if m is None or not m.isfile():
                continue
            if m.size > options.max_member_read:
                return None, "", f"member {name!r} larger than {options.max_member_read} bytes"
            return cur.child_slice(name, m.offset_data, m.size), after, None
        return None, "", f"no tar member named like {rest!r}"
    if fmt in ("gzip", "bz2", "xz", "lzma", "zlib", "lz4"):
        data, err = _decompress(cur, fmt, options.max_member_read)
        if data is None:
            return None, "", err
        name, _, after = rest.partition("!")
        return cur.child_bytes(name, data), after, None
    return None, "", f"cannot look inside a {fmt} member"


def _splits(chain: str) -> Iterator[tuple[str, str]]:
    """('a!b!c') -> ('a!b!c', ''), ('a!b', 'c'), ('a', 'b!c'): the longest name first."""
    yield chain, ""
    idx = len(chain)
    while (idx := chain.rfind("!", 0, idx)) > 0:
        yield chain[:idx], chain[idx + 1:]


def _decompress(src: Source, fmt: str, cap: int) -> tuple[bytes | None, str | None]:
    kind = {"lzma": "lzma-alone"}.get(fmt, fmt)
    return _inflate(src, 0, src.size, kind, cap)


def _inflate(src: Source, start: int, length: int, kind: str, cap: int) -> tuple[bytes | None, str | None]:
    """Decompress with the scanner's own bounded inflate (the same decoders and checks as a scan)."""
    from scanner.formats.archives.inflate import inflate, make_decompressor

    try:
        out = inflate(src, start, length, make_decompressor(kind), cap=cap, max_ratio=1 << 30, ratio_floor=cap,
                      charge=lambda _n: None)
    except ValueError as e:
        return None, f"{kind} stream unreadable: {e}"
    if out.error is not None:
        return None, f"{kind} stream unreadable: {out.error}"
    if out.over_cap:
        return None, f"{kind} stream decompresses to more than {cap} bytes"
    return out.data, None


# -- pickles ---------------------------------------------------------------------------------------------

@dataclass
class _OpListing:
    ops: list[tuple[int, int, str, str]]  # (index, offset, opcode name, argument)
    streams: list[tuple[int, int]]        # (start, end) of each complete pickle
    error: str | None = None

    def window(self, offset: int | None, index: int | None, n: int) -> tuple[tuple[tuple[str, ...], ...],
                                                                        tuple[int, ...]] | None:
        pos = None
        if offset is not None:
            # the opcode that contains the offset: the last one starting at or before it
            for i, op in enumerate(self.ops):
                if op[1] <= offset:
                    pos = i
                else:
                    break
        elif index is not None and 0 <= index < len(self.ops):
            pos = index
        if pos is None:
            return self._imports(n)
        lo, hi = max(0, pos - n), min(len(self.ops), pos + n + 1)
        rows = tuple((str(i), str(o), name, arg) for i, o, name, arg in self.ops[lo:hi])
        return rows, (pos - lo,)

    def _imports(self, n: int) -> tuple[tuple[tuple[str, ...], ...], tuple[int, ...]] | None:
        """A finding without a position: show where names are imported and called."""
        keep: set[int] = set()
        marked: list[int] = []
        for i, op in enumerate(self.ops):
            if op[2] in _IMPORT_OPS and len(marked) < 8:
                marked.append(i)
                keep.update(range(max(0, i - 2), min(len(self.ops), i + n + 1)))
        if len(self.ops) <= 4 * n:
            keep = set(range(len(self.ops)))
        if not keep:
            return None
        order = sorted(keep)
        rows = tuple((str(self.ops[i][0]), str(self.ops[i][1]), self.ops[i][2], self.ops[i][3]) for i in order)
        return rows, tuple(order.index(i) for i in marked if i in keep)


_IMPORT_OPS = frozenset({"GLOBAL", "STACK_GLOBAL", "INST", "EXT1", "EXT2", "EXT4"})


def _list_opcodes(data: bytes, start: int, options: ExplainOptions) -> _OpListing:
    """Tokenize every pickle in the stream (concatenated ones too); parsing only, nothing is built.

    The engine's own tokenizer (CPython `_pickle.c` semantics) is preferred so offsets and opcode numbers
    match the findings; pickletools is the fallback when it is not available."""
    try:
        from scanner.formats.pickle.ops import OpError, read_op
    except ImportError:
        return _list_opcodes_pickletools(data, start, options)
    ops: list[tuple[int, int, str, str]] = []
    streams: list[tuple[int, int]] = []
    pos = stream_start = start
    error = None
    end = len(data)
    while pos < end:
        if len(ops) >= options.max_opcodes:
            error = f"listing stopped after {options.max_opcodes} opcodes"
            break
        try:
            op = read_op(data, pos, end)
        except OpError as e:
            what = "trailing bytes" if streams and pos == stream_start else "tokenizer stopped"
            error = f"{what} at offset {pos}: {e}"
            break
        except Exception as e:  # noqa: BLE001 - best effort: never let a listing crash the view
            error = f"tokenizer failed at offset {pos}: {type(e).__name__}: {e}"
            break
        arg = op.arg
        if op.name in ("GLOBAL", "INST"):
            # both lines, read from the bytes themselves, exactly as written
            arg = bytes(data[op.offset + 1:op.end]).decode("utf-8", "replace").rstrip("\n").replace("\n", " ")
        ops.append((len(ops), op.offset, op.name, _arg_text(arg, options.max_arg_chars)))
        pos = op.end
        if op.name == "STOP":
            streams.append((stream_start, pos))
            stream_start = pos
            if len(streams) >= options.max_streams * 4:
                break
    return _OpListing(ops, streams, error)


def _list_opcodes_pickletools(data: bytes, start: int, options: ExplainOptions) -> _OpListing:
    import pickletools

    ops: list[tuple[int, int, str, str]] = []
    streams: list[tuple[int, int]] = []
    pos = start
    error = None
    while pos < len(data) and len(streams) < options.max_streams * 4:
        stream_start = pos
        stopped = False
        try:
            for op, arg, at in pickletools.genops(io.BytesIO(data[pos:])):
                at = (at or 0) + stream_start
                ops.append((len(ops), at, op.name, _arg_text(arg, options.max_arg_chars)))
                if len(ops) >= options.max_opcodes:
                    error = f"listing stopped after {options.max_opcodes} opcodes"
                    break
                if op.name == "STOP":
                    pos = at + 1
                    stopped = True
        except Exception as e:  # noqa: BLE001 - genops raises ValueError and friends on hostile input
            error = f"tokenizer stopped near offset {ops[-1][1] if ops else pos}: {type(e).__name__}: {e}"
        if not stopped:
            break
        streams.append((stream_start, pos))
        if error:
            break
    return _OpListing(ops, streams, error)


def _arg_text(arg: object, limit: int) -> str:
    if arg is None:
        return ""
    if isinstance(arg, memoryview):
        return f"<{arg.nbytes} bytes>"
    text = repr(arg)
    return text if len(text) <= limit else text[:limit] + "…"


def _decompile(stream: bytes, options: ExplainOptions) -> str:
    """fickling's decompiler: `Pickled.load` tokenizes (pickletools), `.ast` runs fickling's symbolic
    interpreter that only builds AST nodes; `ast.unparse` prints them. No import, no call of anything named."""
    if len(stream) > options.max_decompile_bytes:
        return f"# stream of {len(stream)} bytes: larger than the decompile bound ({options.max_decompile_bytes})"
    try:
        import ast

        from fickling.fickle import Pickled
    except ImportError:
        return "# fickling is not installed: no decompiled view"
    warnings = io.StringIO()
    try:
        with contextlib.redirect_stderr(warnings):
            parsed = Pickled.load(stream)
            tree = parsed.ast
            text = ast.unparse(tree)
    except RecursionError:
        return "# fickling could not decompile this stream: nesting too deep"
    except Exception as e:  # noqa: BLE001 - fickling raises many kinds of errors on hostile input
        return f"# fickling could not decompile this stream: {type(e).__name__}: {str(e)[:200]}"
    note = warnings.getvalue().strip()
    if note:
        text = "\n".join(f"# fickling: {line}" for line in note.splitlines()[:5]) + "\n" + text
    return text


def _program_excerpt(programs: list[tuple[int, str]], f: Finding) -> Block | None:
    """Lines of the decompiled program that mention what the finding names (e.g. `from os import system`)."""
    needles = _needles(f)
    if not needles:
        return None
    for start, text in programs:
        lines = text.splitlines()
        hits = [i for i, line in enumerate(lines) if any(n in line for n in needles)]
        if not hits:
            continue
        keep: list[int] = []
        for i in hits[:8]:
            keep.extend(range(max(0, i - 2), min(len(lines), i + 3)))
        keep = sorted(set(keep))
        shown = [lines[i] for i in keep]
        marked = tuple(keep.index(i) for i in hits[:8])
        return Block(f"Decompiled program excerpt (stream at offset {start})", "code", "\n".join(shown),
                     language="python", marked=marked)
    return None


def _needles(f: Finding) -> list[str]:
    """Dotted names quoted in a finding's evidence or message (`os.system`, `builtins.eval`)."""
    import re

    text = f"{f.evidence or ''} {f.message}"
    names = re.findall(r"[A-Za-z_][\w]*(?:\.[A-Za-z_][\w]*)+", text)
    out: list[str] = []
    for name in names:
        module, _, attr = name.rpartition(".")
        out.extend([f"from {module} import {attr}", f"import {module}"])
    return out[:20]


def _npy_payload_offset(src: Source) -> int | None:
    """Object arrays in .npy hold a pickle right after the header."""
    head = src.head(16)
    if len(head) < 10:
        return None
    major = head[6]
    if major == 1:
        (hlen,) = struct.unpack("<H", head[8:10])
        start = 10 + hlen
    else:
        if len(head) < 12:
            return None
        (hlen,) = struct.unpack("<I", head[8:12])
        start = 12 + hlen
    header = src.read_at(0, start)
    return start if b"'O'" in header or b'"O"' in header else None


# -- archives --------------------------------------------------------------------------------------------

_ZIP_METHODS = {0: "stored", 8: "deflate", 9: "deflate64", 12: "bzip2", 14: "lzma", 93: "zstd", 95: "xz",
                99: "aes"}


@dataclass(frozen=True)
class _ZipEntry:
    name: str
    usize: int
    csize: int
    method: int
    flags: int
    crc: int
    header_offset: int
    data_offset: int | None
    local_name: str | None
    problems: tuple[str, ...]


def _zip_entries(src: Source, options: ExplainOptions) -> list[_ZipEntry]:
    """Members as the scanner's zip reader sees them (prefix shifts, zip64, local headers)."""
    from scanner.formats.zip import structure as zipstruct

    layout = zipstruct.parse_layout(src, max_members=options.max_members_listed, max_cd_bytes=options.max_config_bytes)
    out = []
    for e in layout.entries:
        local = e.local
        local_name = zipstruct.decode_name(local.name, local.flags) if local is not None else None
        problems = list(e.problems) + ([e.local_error] if e.local_error else [])
        out.append(_ZipEntry(e.name, e.usize, e.csize, e.method, e.flags, e.crc, e.header_offset,
                             e.data_offset, local_name, tuple(problems)))
    return out


def _zip_member(src: Source, e: _ZipEntry, options: ExplainOptions) -> tuple[Source | None, str | None]:
    """The member's bytes as stored at its local header (the reader that loads models uses those)."""
    if e.flags & 0x1:
        return None, f"member {e.name!r} is encrypted"
    if e.data_offset is None:
        return None, f"member {e.name!r} has no readable local header"
    if e.method == 0:
        return src.child_slice(e.name, e.data_offset, e.csize), None
    if e.method != 8:
        return None, f"member {e.name!r} uses compression method {e.method}: not shown"
    data, err = _inflate(src, e.data_offset, e.csize, "deflate", options.max_member_read)
    if data is None:
        return None, f"member {e.name!r}: {err}"
    return src.child_bytes(e.name, data), None


def _zip_tree(src: Source, options: ExplainOptions, label: str) -> Block:
    try:
        entries = _zip_entries(src, options)
    except Exception as e:  # noqa: BLE001 - hostile zips fail in many ways
        return Block(f"Zip members{label}", "note", f"central directory unreadable: {type(e).__name__}: {e}")
    seen: dict[str, int] = {}
    folded: dict[str, int] = {}
    rows = []
    marked = []
    for e in entries:
        notes = list(e.problems)
        seen[e.name] = seen.get(e.name, 0) + 1
        folded[e.name.lower()] = folded.get(e.name.lower(), 0) + 1
        if seen[e.name] > 1:
            notes.append("duplicate name")
        elif folded[e.name.lower()] > 1:
            notes.append("duplicate name ignoring case")
        if e.flags & 0x1:
            notes.append("encrypted")
        if e.local_name is None:
            notes.append("no local header")
        elif e.local_name != e.name:
            notes.append(f"local header name {e.local_name!r}")
        if e.name.startswith("/") or "\\" in e.name or ".." in posixpath.normpath(e.name).split("/"):
            notes.append("path escapes")
        if e.csize and e.usize / max(e.csize, 1) > 200:
            notes.append(f"ratio {e.usize // max(e.csize, 1)}")
        if notes:
            marked.append(len(rows))
        rows.append((e.name, str(e.usize), str(e.csize), _ZIP_METHODS.get(e.method, str(e.method)),
                     f"0x{e.flags:04x}", f"{e.crc:08x}", str(e.header_offset), "; ".join(notes)))
    title = f"Zip members{label} ({len(entries)}{'+' if len(entries) >= options.max_members_listed else ''})"
    return Block(title, "table",
                 columns=("name", "size", "compressed", "method", "flags", "crc32", "header at", "notes"),
                 rows=tuple(rows), marked=tuple(marked))


def _tar_tree(src: Source, options: ExplainOptions, label: str) -> Block:
    import tarfile

    try:
        with contextlib.closing(src.open()) as raw, tarfile.open(fileobj=raw, mode="r:") as tf:
            members = _tar_members(tf, options.max_members_listed)
    except (tarfile.TarError, OSError, ValueError, EOFError) as e:
        return Block(f"Tar members{label}", "note", f"tar headers unreadable: {e}")
    rows = []
    marked = []
    for m in members:
        kind = ("file" if m.isfile() else "dir" if m.isdir() else "symlink" if m.issym() else
                "hardlink" if m.islnk() else "device" if m.isdev() else "fifo" if m.isfifo() else "other")
        notes = []
        if m.issym() or m.islnk():
            notes.append(f"-> {m.linkname}")
        if m.name.startswith("/") or ".." in posixpath.normpath(m.name).split("/"):
            notes.append("path escapes")
        if notes and (m.issym() or m.islnk() or "path escapes" in notes):
            marked.append(len(rows))
        rows.append((m.name, str(m.size), kind, oct(m.mode), "; ".join(notes)))
    return Block(f"Tar members{label} ({len(members)}{'+' if len(members) >= options.max_members_listed else ''})",
                 "table", columns=("name", "size", "type", "mode", "notes"), rows=tuple(rows), marked=tuple(marked))


def _tar_members(tf: object, limit: int) -> list:  # type: ignore[type-arg]
    """At most `limit` headers: a tar with millions of entries is listed in part, not read whole."""
    members = []
    for m in tf:  # type: ignore[attr-defined]
        members.append(m)
        if len(members) >= limit:
            break
    return members


def _stream_note(src: Source, fmt: str, options: ExplainOptions, label: str) -> Block:
    data, err = _decompress(src, fmt, options.max_member_read)
    if data is None:
        return Block(f"{fmt} stream{label}", "note", err or "unreadable")
    inner = sniff(BytesSource(src.display, None, data))
    ratio = len(data) / max(src.size, 1)
    return Block(f"{fmt} stream{label}", "note",
                 f"{src.size} compressed bytes -> {len(data)} bytes (ratio {ratio:.1f}); content: {inner}")


# -- Keras -------------------------------------------------------------------------------------------------

def _keras_zip_lambdas(src: Source, options: ExplainOptions, label: str) -> list[Block]:
    try:
        entries = [e for e in _zip_entries(src, options) if e.name == "config.json"]
    except Exception:  # noqa: BLE001 - the tree block already reports an unreadable directory
        return []
    if not entries or entries[0].usize > options.max_config_bytes:
        return []
    member, _ = _zip_member(src, entries[0], options)
    if member is None or member.size > options.max_config_bytes:
        return []
    return _lambda_blocks(member.read_at(0, member.size), options, label)


def _hdf5_lambdas(src: Source, options: ExplainOptions, label: str) -> list[Block]:
    """Only the root attributes are read (never dataset values, never external links)."""
    try:
        import h5py
    except ImportError:
        return [Block(f"Keras config{label}", "note", "h5py is not installed: no Lambda view")]
    blocks: list[Block] = []
    with contextlib.closing(src.open()) as fh, h5py.File(fh, "r") as f:
        for key in ("model_config", "training_config"):
            if key not in f.attrs:
                continue
            value = f.attrs[key]
            raw = value if isinstance(value, bytes) else str(value).encode("utf-8", "replace")
            if len(raw) <= options.max_config_bytes:
                blocks.extend(_lambda_blocks(raw, options, f"{label} ({key})"))
    return blocks


def _lambda_blocks(raw: bytes, options: ExplainOptions, label: str) -> list[Block]:
    import json

    try:
        config = json.loads(raw)
    except (ValueError, RecursionError) as e:
        return [Block(f"Keras config{label}", "note", f"config is not JSON: {e}")]
    blocks: list[Block] = []
    for name, fn in _lambda_layers(config):
        for text in _strings(fn):
            listing = _disassemble_b64(text)
            if listing is not None:
                blocks.append(Block(f"Lambda layer '{name}' bytecode{label}", "code", listing, language="pycode"))
            elif "def " in text or "lambda " in text or "lambda:" in text:
                blocks.append(Block(f"Lambda layer '{name}' source{label}", "code", text, language="pycode"))
    return blocks[:50]


def _lambda_layers(config: object) -> Iterator[tuple[str, object]]:
    stack = [config]
    budget = 200_000
    while stack and budget > 0:
        budget -= 1
        cur = stack.pop()
        if isinstance(cur, dict):
            if cur.get("class_name") == "Lambda" and isinstance(cur.get("config"), dict):
                inner = cur["config"]
                yield str(inner.get("name", "?")), inner.get("function")
            stack.extend(cur.values())
        elif isinstance(cur, list):
            stack.extend(cur)


def _strings(node: object) -> Iterator[str]:
    stack = [node]
    while stack:
        cur = stack.pop()
        if isinstance(cur, str):
            yield cur
        elif isinstance(cur, dict):
            stack.extend(cur.values())
        elif isinstance(cur, list):
            stack.extend(cur)


def _disassemble_b64(text: str) -> str | None:
    from scanner.formats.pickle import marshal_code

    if len(text) < 16:
        return None
    try:
        data = binascii.a2b_base64(text.encode("ascii"))
    except (binascii.Error, ValueError, UnicodeEncodeError):
        try:
            data = base64.b64decode(text, validate=False)
        except (binascii.Error, ValueError):
            return None
    if not data or data[0] & 0x7F != ord("c"):
        return None
    try:
        parsed = marshal_code.parse_code(data)
    except marshal_code.MarshalError:
        return None
    info = parsed.code
    lines = [f"# code object {info.name!r} from {info.filename!r} (marshal layout {parsed.layout})",
             f"# names: {', '.join(marshal_code.all_names(info))[:400]}",
             f"# strings: {[s[:80] for s in marshal_code.all_strings(info)[:20]]}"]
    lines.extend(marshal_code.disassemble(parsed, max_instructions=300))
    return "\n".join(lines)


# -- ONNX ----------------------------------------------------------------------------------------------------

_DEFAULT_DOMAINS = ("", "ai.onnx")


def _onnx_blocks(src: Source, options: ExplainOptions, label: str) -> list[Block]:
    """Parse the ModelProto bytes only: external data is never opened, custom ops are never loaded."""
    if src.size > options.max_member_read:
        return [Block(f"ONNX graph{label}", "note", "model too large to parse here")]
    try:
        from onnx import ModelProto
    except ImportError:
        return [Block(f"ONNX graph{label}", "note", "onnx is not installed: no graph view")]
    model = ModelProto()
    model.ParseFromString(src.read_at(0, src.size))
    nodes: list[tuple[str, ...]] = []
    externals: list[tuple[str, ...]] = []
    root = src.path.parent if src.path is not None else None

    def walk_graph(graph: object, where: str, depth: int = 0) -> None:
        if depth > 32:
            return
        for t in getattr(graph, "initializer", []):
            if t.data_location == 1 or t.external_data:
                kv = {e.key: e.value for e in t.external_data}
                loc = kv.get("location", "")
                externals.append((where, t.name, loc, kv.get("offset", ""), kv.get("length", ""),
                                  _resolve_note(root, loc)))
        for i, n in enumerate(getattr(graph, "node", [])):
            if n.domain not in _DEFAULT_DOMAINS and len(nodes) < options.max_members_listed:
                nodes.append((f"{where}/node[{i}]", n.name, n.op_type, n.domain))
            for a in n.attribute:
                if a.HasField("g"):
                    walk_graph(a.g, f"{where}/node[{i}]({n.op_type}).{a.name}", depth + 1)
                for j, g in enumerate(a.graphs):
                    walk_graph(g, f"{where}/node[{i}]({n.op_type}).{a.name}[{j}]", depth + 1)

    walk_graph(model.graph, "graph")
    for k, fn in enumerate(model.functions):
        walk_graph(fn, f"functions[{k}]({fn.domain}:{fn.name})")
    blocks = [Block(f"ONNX opsets{label}", "table", columns=("domain", "version"),
                    rows=tuple((o.domain or "ai.onnx", str(o.version)) for o in model.opset_import))]
    if nodes:
        blocks.append(Block(f"ONNX nodes outside the default domain{label}", "table",
                            columns=("path", "name", "op_type", "domain"), rows=tuple(nodes),
                            marked=tuple(range(len(nodes)))))
    if externals:
        blocks.append(Block(f"ONNX external data{label}", "table",
                            columns=("graph", "tensor", "location", "offset", "length", "resolves to"),
                            rows=tuple(externals),
                            marked=tuple(i for i, r in enumerate(externals) if "outside" in r[5])))
    if model.metadata_props:
        blocks.append(Block(f"ONNX metadata{label}", "table", columns=("key", "value"),
                            rows=tuple((p.key, p.value[:400]) for p in model.metadata_props)))
    return blocks


def _resolve_note(root: Path | None, location: str) -> str:
    if not location:
        return "no location"
    if location.startswith("/") or (len(location) > 1 and location[1] == ":"):
        return "absolute path: outside the model folder"
    norm = posixpath.normpath(location.replace("\\", "/"))
    if norm.startswith("../") or norm == "..":
        return "outside the model folder"
    if root is None:
        return norm
    target = root / norm
    try:
        real = target.resolve()
        if root.resolve() not in real.parents:
            return f"{real}: outside the model folder (symlink)"
        return f"{norm} ({'exists' if target.exists() else 'missing'})"
    except OSError as e:
        return f"{norm} (unresolvable: {e.strerror or e})"
