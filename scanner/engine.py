"""The scan pipeline: paths -> sources -> sniff -> format analyzers -> findings -> report."""

from __future__ import annotations

import hashlib
import importlib
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

from scanner import __version__
from scanner.context import NOT_A_MODEL, ScanContext
from scanner.context import rule_severity as _sev
from scanner.findings import FileReport, Finding, Location, Report, Severity
from scanner.rules import Policy, RuleSet, load_ruleset
from scanner.sniff import extension, sniff
from scanner.source import FileSource, LimitExceeded, Source
from scanner.walk import WalkEntry, walk_paths

# format name -> module with `analyze(src, ctx) -> Iterable[Finding]` (our own modules, imported lazily)
ANALYZERS: dict[str, str] = {
    "pickle": "scanner.formats.pickle.scan",
    "zip": "scanner.formats.zip.reader",
    "tar": "scanner.formats.archives.archive",
    "gzip": "scanner.formats.archives.archive",
    "bz2": "scanner.formats.archives.archive",
    "xz": "scanner.formats.archives.archive",
    "lzma": "scanner.formats.archives.archive",
    "lz4": "scanner.formats.archives.archive",
    "zlib": "scanner.formats.archives.archive",
    "7z": "scanner.formats.archives.archive",
    "npy": "scanner.formats.numpy.npy",
    "torch-legacy": "scanner.formats.zip.torch_legacy",
    "hdf5": "scanner.formats.hdf5.reader",
    "onnx": "scanner.formats.onnx.model",
    "safetensors": "scanner.formats.safetensors",
    "gguf": "scanner.formats.gguf.reader",
    "tensorflow": "scanner.formats.tensorflow.savedmodel",
    "paddle": "scanner.formats.paddle.program",
    "text": "scanner.formats.sidecars.sidecar",
    "executable": "scanner.formats.executable",
    "tflite": "scanner.formats.tensorflow.tflite",
    "keras-metadata": "scanner.formats.tensorflow.keras_metadata",
    "msgpack": "scanner.formats.flax.checkpoint",
    "mxnet-params": "scanner.formats.mxnet.params",
    "mxnet-symbol": "scanner.formats.mxnet.symbol",
    "executorch": "scanner.formats.executorch.program",
}
def analyzer_for(fmt: str) -> Callable[[Source, ScanContext], Iterable[Finding]] | None:
    module = ANALYZERS.get(fmt)
    if module is None:
        return None
    return importlib.import_module(module).analyze  # type: ignore[no-any-return]


def scan_source(src: Source, ctx: ScanContext, fmt: str | None = None) -> tuple[str, list[Finding]]:
    """Sniff and analyze one source. Never raises: a crash or a limit becomes a finding (fail closed)."""
    if ctx.dispatch is None:
        ctx.dispatch = scan_source
    findings: list[Finding] = []
    try:
        if fmt is None:
            fmt = sniff(src)
            findings.extend(_extension_check(src, fmt, ctx))
            fmt = _refine(src, fmt)
            findings.extend(_leading_pickle(src, fmt, ctx))
            findings.extend(_alternates(src, fmt, ctx))
        findings.extend(_appended_zip(src, fmt, ctx))
        analyze = analyzer_for(fmt)
        if analyze is None:
            if fmt in NOT_A_MODEL and ctx.depth == 0:
                findings.append(ctx.finding("FORMAT-NOT-MODEL", f"not a model format ({fmt})", src))
            return fmt, findings
        for f in analyze(src, ctx):
            findings.append(f)
    except LimitExceeded as e:
        findings.extend(ctx.limit_findings(e, src))
    except RecursionError:
        findings.append(ctx.finding("SCAN-INTERNAL-ERROR", "nesting too deep for the analyzer", src,
                                    evidence="RecursionError"))
    except MemoryError:
        findings.append(ctx.finding("SCAN-INTERNAL-ERROR", "analyzer ran out of memory", src,
                                    evidence="MemoryError"))
    except Exception as e:  # noqa: BLE001 - fail closed: an analyzer bug must not pass a file as clean
        findings.append(ctx.finding("SCAN-INTERNAL-ERROR", f"{fmt or 'unknown'} analyzer failed: {type(e).__name__}",
                                    src, evidence=str(e)[:300]))
    return fmt or "unknown", findings


def _refine(src: Source, fmt: str) -> str:
    """Sub-formats the sniffer leaves to their analyzers: legacy torch files are stacked pickles."""
    if fmt == "pickle":
        from scanner.formats.zip.torch_legacy import is_legacy_torch

        if is_legacy_torch(src.head(64)):
            return "torch-legacy"
    elif fmt == "data":
        from scanner.formats.tensorflow.tflite import is_tflite

        if is_tflite(src.head(8), src.size):
            return "tflite"
        from scanner.formats.executorch.program import is_pte

        if is_pte(src.head(8), src.size):
            return "executorch"
    return fmt


# formats whose sniff already asked the pickle question, or whose first bytes a pickle loader refuses
# (`PK` is PERSID, which needs a persistent_load hook)
_NO_LEADING_PICKLE = frozenset({"pickle", "torch-legacy", "zip", "text", "data", "empty"})


def _leading_pickle(src: Source, fmt: str, ctx: ScanContext) -> list[Finding]:
    """pickle.load, joblib.load and np.load(allow_pickle) read from byte 0 whatever magic sits further in
    (a tar header whose name is a pickle, an HDF5 user block, `MZ` + BININT2) (T12, Z05)."""
    if fmt in _NO_LEADING_PICKLE:
        return []
    from scanner.formats.pickle import scan as pk

    if not pk.source_looks_like_pickle(src):
        return []
    return [ctx.finding("POLYGLOT", f"the first bytes are also a pickle: pickle loaders run it, {fmt} readers "
                        "read the rest; both were scanned", src, offset=0), *pk.analyze(src, ctx)]


def _alternates(src: Source, fmt: str, ctx: ScanContext) -> list[Finding]:
    """Bytes another supported loader reads as a different format from byte 0 (joblib's compressor
    prefixes, tar by checksum, HDF5 user blocks): scanned as that format too (docs/soundness.md)."""
    from scanner.sniff import alternate_formats

    out: list[Finding] = []
    for alt in alternate_formats(src, fmt):
        out.append(ctx.finding("POLYGLOT", f"the same bytes are also {alt} to the loaders that test for it "
                               f"first; {fmt} and {alt} both scanned", src, offset=0, evidence=f"{fmt}+{alt}"))
        out.extend(ctx.scan_child(src, alt))
    return out


def _appended_zip(src: Source, fmt: str, ctx: ScanContext) -> list[Finding]:
    """A zip glued after other content (T12 polyglot): zip readers find it from the end."""
    if fmt == "zip":
        return []
    from scanner.formats.zip.reader import appended_zip

    return appended_zip(src, fmt, ctx)


# AppleDouble (RFC 1740): the resource-fork files macOS archivers add as `__MACOSX/._<name>`; never the
# named file's content, and no loader reads them
_APPLE_DOUBLE = b"\x00\x05\x16\x07"
_INNER = re.compile(r"^<([a-z0-9-]+)>(.+)$")  # a compressed file's content: "<zlib>name" (archive._inner_name)


def _inner_key(src: Source, ext: str) -> str:
    """`<zlib>.npy` for the inflated content of a top-level `x.npy.z`; "" otherwise. Only the scanner names
    a child `<fmt>...` directly under a file whose own name ends in the stripped suffix, so a member or a
    file that merely calls itself `<zlib>x.npy` does not qualify."""
    m = _INNER.match(src.member or "")
    if m is None or "!" in (src.member or ""):
        return ""
    outer = os.path.basename(src.display).lower()
    if not outer.startswith(m.group(2).lower()) or outer[len(m.group(2)):] not in _COMPRESSED_SUFFIXES:
        return ""
    return f"<{m.group(1)}>{ext}"


_COMPRESSED_SUFFIXES = frozenset({".gz", ".gzip", ".bz2", ".xz", ".lzma", ".z", ".zlib", ".lz4"})


def _extension_check(src: Source, fmt: str, ctx: ScanContext) -> list[Finding]:
    """A name that claims one format over content of another is how scanners get bypassed (T05, Z05)."""
    table = ctx.rules.cached("extensions", lambda: _extension_table(ctx.rules))
    name = src.name
    ext = extension(name)
    double = extension(name[: len(name) - len(ext)]) + ext if ext else ""
    if double in table:  # `model_best.pth.tar` names torch.save output, not a tar
        ext = double
    expected = table.get(ext)
    inner = _inner_key(src, ext)
    if inner in table:  # what a compressed file's name holds once inflated
        expected = table[inner]
    if expected is None or fmt in expected["formats"]:
        return []
    if fmt == "data" and name.rsplit("/", 1)[-1].startswith("._") and src.head(4) == _APPLE_DOUBLE:
        return []
    code_bearing = fmt in table_code_bearing(ctx.rules)
    sev = Severity.HIGH if code_bearing and not expected["code_bearing"] else Severity.MEDIUM
    if fmt in NOT_A_MODEL and not expected["code_bearing"]:
        sev = Severity.MEDIUM
    elif fmt in ("text", "empty") and set(expected["formats"]) <= _magic_formats(ctx.rules):
        # text under a name whose readers all demand a magic number (zip, tar, gzip...): no such reader opens
        # it, and the text itself was scanned. Pickle and protobuf (ONNX) names stay medium: protocol-0
        # pickles are text, and protobuf parses whatever bytes it is given
        sev = Severity.LOW
    return [ctx.finding("FORMAT-EXTENSION-MISMATCH",
                        f"name says {ext} ({'/'.join(expected['formats'])}) but content is {fmt}", src,
                        severity=sev, evidence=f"sniffed={fmt} extension={ext}")]


def _extension_table(rules: RuleSet) -> dict[str, dict[str, object]]:
    out: dict[str, dict[str, object]] = {}
    for entry in rules.doc("formats").get("extension", []):
        for ext in entry["extensions"]:
            out[ext] = {"formats": tuple(entry["formats"]), "code_bearing": entry.get("code_bearing", True)}
    return out


def _magic_formats(rules: RuleSet) -> frozenset[str]:
    return rules.cached("magic_formats", lambda: frozenset(rules.doc("formats").get("magic_formats", [])))


def table_code_bearing(rules: RuleSet) -> frozenset[str]:
    return rules.cached("code_bearing", lambda: frozenset(rules.doc("formats").get("code_bearing_formats", [])))


# -- top level ----------------------------------------------------------------------------------------

def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def scan_file(entry: WalkEntry, rules: RuleSet, policy: Policy, *, digest: bool = True,
              known_sha256: str | None = None) -> FileReport:
    """`known_sha256`: the file's digest already computed by the caller (attest hashes in parallel first)."""
    if entry.error is not None:
        return FileReport(entry.display, None, None, "unknown", tuple(entry.findings), entry.error)
    if not entry.scan:
        return FileReport(entry.display, None, None, "link", tuple(entry.findings))
    ctx = ScanContext(rules, policy, root=entry.root)
    try:
        src = FileSource(entry.path, entry.display)
    except OSError as e:
        return FileReport(entry.display, None, None, "unknown", (), f"cannot read: {e.strerror or e}")
    try:
        if src.size > policy.limits.max_file_bytes:
            f = ctx.finding("LIMIT-EXCEEDED", f"file of {src.size} bytes exceeds max_file_bytes; not scanned",
                            src, evidence="max_file_bytes")
            return FileReport(entry.display, src.size, None, "unknown", (*entry.findings, f))
        ctx.budget.deadline = time.monotonic() + policy.limits.max_file_seconds
        fmt, findings = scan_source(src, ctx)
        findings.extend(_stop_finding(ctx, findings))
        sha = known_sha256 or (sha256_file(entry.path) if digest else None)
        return FileReport(entry.display, src.size, sha, fmt, (*entry.findings, *findings))
    except OSError as e:
        return FileReport(entry.display, src.size, None, "unknown", tuple(entry.findings),
                          f"cannot read: {e.strerror or e}")
    finally:
        src.close()


def _stop_finding(ctx: ScanContext, findings: list[Finding]) -> list[Finding]:
    """A budget stop is always reported, even if an analyzer caught the exception on its way up."""
    e = ctx.budget.stopped
    if e is None or ctx.budget.stop_reported:
        return []
    return [Finding("LIMIT-EXCEEDED", _sev(ctx, "LIMIT-EXCEEDED"), str(e), e.location or Location(), e.limit)]


def scan(paths: Sequence[str | os.PathLike[str]], policy: Policy | None = None, rules: RuleSet | None = None,
         *, digest: bool = True, digests: Mapping[str, str] | None = None) -> Report:
    """Scan files and directories; the public entry point behind `modelseal scan`.

    `digests` maps `os.path.abspath(file)` to a sha256 the caller already has, so it is not hashed twice."""
    policy = policy or Policy()
    rules = rules or load_ruleset()
    started = _now()
    reports: list[FileReport] = []
    for entry in walk_paths([Path(p) for p in paths], policy, rules):
        known = digests.get(os.path.abspath(entry.path)) if digests else None
        reports.append(scan_file(entry, rules, policy, digest=digest, known_sha256=known))
    return Report(tuple(reports), __version__, rules.digest, policy.fail_on, started, _now())


def _now() -> str:
    """UTC now as 2026-01-02T03:04:05.123456Z (time, not datetime: one import less at start-up)."""
    sec, ns = divmod(time.time_ns(), 1_000_000_000)
    return f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(sec))}.{ns // 1000:06d}Z"
