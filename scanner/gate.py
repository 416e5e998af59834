"""The pre-load gate (design §8): allow or refuse a model before serving code loads it.

    from scanner import gate
    g = gate.Gate(gate.Trust(public_keys=["keys/scan.pub.pem"]), cache=gate.GateCache())
    g.check("models/llama")                    # verified report, or UnsafeModelError
    with g.open_verified("models/model.pt") as f:
        ...                                    # exactly the bytes that were checked

With a trusted attestation of these exact bytes the gate verifies instead of scanning; without one it
scans (or refuses, with `require_attestation=True`). Either way the gate first copies the model once through
one descriptor per file into a private temp folder, hashing while copying, and verifies or scans that
copy: the digest is always the digest of what was judged, whatever happens on disk meanwhile.
`open_verified` / `verified_copy` hand out that copy. Accepted outcomes are cached in a cache the caller
owns, keyed by everything the verdict depends on (names and digests of every file, policy, rules, scanner).
"""

from __future__ import annotations

import functools
import importlib
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from scanner.attest.digest import FileDigest, ModelDigest
from scanner.attest.verify import Requirements, Trust, VerificationFailure
from scanner.findings import Finding, Report

__all__ = ["Gate", "GateCache", "GateResult", "Trust", "UnsafeModelError", "check", "open_verified",
           "torch_load", "safetensors_load", "onnx_load", "keras_load"]

MAX_BUNDLE_SEARCH_DEPTH = 8


class UnsafeModelError(Exception):
    """The gate refused a model. `report` (when it was scanned) and `findings` say why."""

    def __init__(self, message: str, report: Report | None = None) -> None:
        super().__init__(message)
        self.report = report
        self.findings: list[Finding] = [f for _, f in report.findings] if report is not None else []


@dataclass(frozen=True)
class GateResult:
    path: Path
    source: str                     # "attestation", "scan" or "cache"
    verdict: str
    content_digest: str             # sha256 of a file, or the OMS-style manifest digest of a folder
    report: Report | None = None    # when scanned
    attestation: Any = None         # scanner.attest.verify.Verified when verified
    provenance: Any = None          # scanner.attest.provenance_verify.ProvenanceVerified when checked


@dataclass
class GateCache:
    """Accepted outcomes by content digest. The caller owns it (no global state); share one only between
    gates with the same trust and policy. Refusals are never cached: they are decided afresh."""

    entries: dict[str, GateResult] = field(default_factory=dict)

    def get(self, key: str) -> GateResult | None:
        return self.entries.get(key)

    def put(self, key: str, result: GateResult) -> None:
        self.entries[key] = result


class Gate:
    def __init__(self, trust: Trust | None = None, *, cache: GateCache | None = None,
                 require_attestation: bool = False, policy: Any = None,
                 requirements: Requirements | None = None, workdir: str | os.PathLike[str] | None = None,
                 loader_advisories: str = "refuse") -> None:
        """`workdir`: where private snapshots are made (default: the temp folder); needs room for the model.
        `loader_advisories`: refuse, warn or ignore an installed loader listed in rules/advisories.toml."""
        from scanner.rules import Policy

        if loader_advisories not in ("refuse", "warn", "ignore"):
            raise ValueError(f"loader_advisories must be refuse, warn or ignore, not {loader_advisories!r}")
        self.loader_advisories = loader_advisories
        self.workdir = workdir
        self.trust = trust or Trust()
        self.cache = cache
        self.require_attestation = require_attestation
        self.policy = policy or Policy()
        self.requirements = requirements or Requirements()

    # -- public ---------------------------------------------------------------------------------------
    def check(self, path: str | os.PathLike[str], bundle: str | os.PathLike[str] | None = None) -> GateResult:
        """Verify a trusted attestation of `path` or scan it; UnsafeModelError when refused.

        What is hashed and scanned is a private snapshot, so both see the same bytes; a caller that then
        loads from `path` trusts that it did not change since: `open_verified` / `verified_copy` do not."""
        with self.verified_copy(path, bundle) as (result, _):
            return result

    @contextmanager
    def open_verified(self, path: str | os.PathLike[str],
                      bundle: str | os.PathLike[str] | None = None) -> Iterator[BinaryIO]:
        """A read-only file object over a private copy of `path` whose bytes are the ones checked.

        The copy keeps the file's name (loaders look at suffixes); `f.name` is its path."""
        with self.verified_copy(path, bundle) as (_, copy):
            if not copy.is_file():  # decided on what was copied, not on a look before
                raise UnsafeModelError(f"{path}: a folder; use verified_copy")
            with open(copy, "rb") as fh:
                yield fh

    @contextmanager
    def verified_copy(self, path: str | os.PathLike[str],
                      bundle: str | os.PathLike[str] | None = None) -> Iterator[tuple[GateResult, Path]]:
        """(result, private copy) of a file or folder: the copy was read once through one descriptor per
        file, hashed while copying, and is exactly what was verified or scanned. Removed on exit."""
        p = Path(path)
        workdir = Path(tempfile.mkdtemp(prefix="modelseal-gate-", dir=self.workdir))  # mode 0700: ours alone
        try:
            model = _snapshot(p, workdir, self.policy)
            if model.single_file:
                result = self._provenance(p, self._check_file(p, model, bundle), model.files[0].sha256)
            else:
                result = self._provenance(p, self._check_folder(p, model, bundle), None)
            yield result, model.root
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    def check_loader(self, loader: str) -> list[str]:
        """Advisories (rules/advisories.toml) of the installed library behind `loader` (torch_load,
        keras_load, onnx_load, gguf_chat_template, ...), read from distribution metadata, never imported.
        UnsafeModelError when refusing; the advisory lines when warning or ignoring."""
        from scanner.advisories import for_loader

        hits = [a.line(v) for a, v in for_loader(loader)] if self.loader_advisories != "ignore" else []
        if hits and self.loader_advisories == "refuse":
            raise UnsafeModelError(f"refusing to load through {loader}: installed {hits[0]}"
                                   + (f" (and {len(hits) - 1} more)" if len(hits) > 1 else ""))
        for line in hits:
            import warnings

            warnings.warn(f"{loader}: installed {line}", stacklevel=3)
        return hits

    # -- internals ------------------------------------------------------------------------------------
    def _provenance(self, p: Path, result: GateResult, sha: str | None) -> GateResult:
        """Enforce `trust.provenance` (required / denied datasets, licenses) on an accepted model."""
        policy = self.trust.provenance
        if policy is None or not policy.active:
            return result
        from scanner.attest.provenance_verify import verify_provenance
        from scanner.record import replace

        try:
            pv = verify_provenance(p, [], self.trust, self.requirements, policy, file_sha256=sha)
        except VerificationFailure as e:
            raise UnsafeModelError(f"{p}: {e}") from None
        return replace(result, provenance=pv)

    def _check_file(self, original: Path, model: ModelDigest, bundle: Any) -> GateResult:
        """Decide for one file from its snapshot (`model.root` holds exactly the hashed bytes)."""
        sha = model.files[0].sha256
        reasons: list[str] = []
        if not self.trust.empty:
            for b, member in self._file_bundles(original, bundle):
                try:
                    v = self._verify_digest(original, sha, b, member)
                except VerificationFailure as e:
                    reasons.append(f"{b.name}: {e}")
                    continue
                return GateResult(original, "attestation", v.verdict or "clean", sha, attestation=v)
        key = self._cache_key(model)
        if self.cache is not None and (hit := self.cache.get(key)) is not None:
            return GateResult(original, "cache", hit.verdict, sha, hit.report, hit.attestation)
        self._refuse_unattested(original, reasons)
        from scanner.attest.attest import scan_digested

        report = _rename(scan_digested(model, self.policy), str(model.root), str(original))
        return self._accept_scan(original, sha, report, key)

    def _check_folder(self, p: Path, model: ModelDigest, bundle: Any) -> GateResult:
        from scanner.attest.statement import PREDICATE_TYPE
        from scanner.attest.verify import default_bundles, verify_bundle

        reasons: list[str] = []
        if not self.trust.empty:
            candidates = [Path(bundle)] if bundle is not None else default_bundles(p)
            for b in candidates:
                try:
                    # checked against the snapshot: the digests are those of the bytes handed out
                    v = verify_bundle(model.root, b.read_bytes(), self.trust, self.requirements,
                                      bundle_path=_inside(b, p, model.root), accept_types=[PREDICATE_TYPE])
                except (OSError, VerificationFailure) as e:
                    reasons.append(f"{b.name}: {e}")
                    continue
                from scanner.attest.verify import model_from_verified

                digest = model_from_verified(model.root, v).manifest_digest
                return GateResult(p, "attestation", v.verdict or "clean", digest, attestation=v)
        key = self._cache_key(model)
        if self.cache is not None and (hit := self.cache.get(key)) is not None:
            return GateResult(p, "cache", hit.verdict, model.manifest_digest, hit.report, hit.attestation)
        self._refuse_unattested(p, reasons)
        from scanner.attest.attest import scan_digested

        report = _rename(scan_digested(model, self.policy), str(model.root), str(p))
        return self._accept_scan(p, model.manifest_digest, report, key)

    def _refuse_unattested(self, p: Path, reasons: list[str]) -> None:
        if self.require_attestation:
            why = "; ".join(reasons) if reasons else "none found"
            raise UnsafeModelError(f"{p}: no trusted attestation ({why})")

    def _accept_scan(self, p: Path, digest: str, report: Report, key: str) -> GateResult:
        verdict = report.verdict.value
        if report.failing() or report.has_errors() or verdict not in self.requirements.allow_verdicts:
            worst = ", ".join(sorted({f"{f.rule_id} ({f.severity.value})" for _, f in report.findings
                                      if f.severity.rank >= self.policy.fail_on.rank}))
            raise UnsafeModelError(f"{p}: scan verdict {verdict}" + (f": {worst}" if worst else ""), report)
        result = GateResult(p, "scan", verdict, digest, report)
        if self.cache is not None:
            self.cache.put(key, result)
        return result

    def _cache_key(self, model: ModelDigest) -> str:
        """Everything the verdict depends on: every file's name (extensions, sidecars) and digest, the
        whole policy, the verdicts allowed, the rule set and the scanner's own code."""
        import hashlib
        import json

        from scanner.record import asdict

        scanner_id, rules_id = _identity()
        doc = {"schema": "modelseal-gate-cache/v2", "single": model.single_file,
               "files": [[f.name, f.sha256] for f in model.files], "scanner": scanner_id, "rules": rules_id,
               "policy": asdict(self.policy), "allow": sorted(self.requirements.allow_verdicts)}
        text = json.dumps(doc, sort_keys=True, default=str, separators=(",", ":"))
        return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()

    def _file_bundles(self, p: Path, bundle: Any) -> list[tuple[Path, str | None]]:
        """(bundle, member name inside it) candidates: given, next to the file, or a folder's above it."""
        if bundle is not None:
            return [(Path(bundle), None)]
        out: list[tuple[Path, str | None]] = []
        own = p.with_name(p.name + ".modelseal.sigstore.json")
        if own.is_file():
            out.append((own, None))
        folder = p.absolute().parent
        rel = p.name
        for _ in range(MAX_BUNDLE_SEARCH_DEPTH):
            cand = folder / "modelseal.sigstore.json"
            if cand.is_file():
                out.append((cand, rel))
            if folder.parent == folder:
                break
            rel = f"{folder.name}/{rel}"
            folder = folder.parent
        return out

    def _verify_digest(self, p: Path, sha: str, bundle: Path, member: str | None) -> Any:
        from scanner.attest.statement import PREDICATE_TYPE
        from scanner.attest.verify import (
            Verified,
            check_file_digest,
            check_scan,
            expected_files,
            verify_signature,
        )

        try:
            raw = bundle.read_bytes()
        except OSError as e:
            raise VerificationFailure(f"cannot read: {e.strerror or e}") from None
        _, signer, statement = verify_signature(raw, self.trust)
        expected = expected_files(statement, [PREDICATE_TYPE])
        digests = check_file_digest(p.name, sha, expected, member)
        verdict, finished = check_scan(statement, self.requirements)
        return Verified(bundle, expected.kind, signer, statement, tuple(digests), verdict, finished, digests)


@functools.lru_cache(maxsize=1)
def _identity() -> tuple[str, str]:
    """(scanner version + code digest, rules digest): a patched analyzer or rule never reuses old verdicts."""
    from scanner.batch import scanner_fingerprint
    from scanner.rules import load_ruleset

    return scanner_fingerprint(), load_ruleset().digest


_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)


def _snapshot(p: Path, workdir: Path, policy: Any) -> ModelDigest:
    """Copy a file, or a folder's files, into `workdir` once through one descriptor each (no symlink
    followed at any level: folders are walked by descriptor), hashing while copying."""
    from scanner.attest.digest import is_ignored_top, sort_key

    name = p.name or "model"
    try:
        st = os.lstat(p)
    except OSError as e:
        raise UnsafeModelError(f"{p}: cannot access: {e.strerror or e}") from None
    if stat.S_ISLNK(st.st_mode):
        raise UnsafeModelError(f"{p} is a symlink; not followed")
    if stat.S_ISREG(st.st_mode):
        try:
            fd = os.open(p, _OPEN_FLAGS)
        except OSError as e:
            raise UnsafeModelError(f"{p}: cannot open: {e.strerror or e}") from None
        dst = workdir / name
        try:
            sha, size = _copy_fd(fd, dst, p.name)
        except OSError as e:  # a read error, or no room for the copy
            raise UnsafeModelError(f"{p}: cannot copy: {e.strerror or e}") from None
        return ModelDigest(dst, True, (FileDigest(p.name, dst, size, sha),))
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafeModelError(f"{p} is not a regular file or folder")
    root = workdir / name
    files: list[FileDigest] = []
    ignored: list[str] = []

    def visit(dir_fd: int, dst: Path, prefix: str, depth: int) -> None:
        if depth > MAX_SNAPSHOT_DEPTH:
            raise UnsafeModelError(f"{p}: folders nested deeper than {MAX_SNAPSHOT_DEPTH} levels")
        dst.mkdir(mode=0o700)
        try:
            names = sorted(e.name for e in os.scandir(dir_fd))
        except OSError as e:
            raise UnsafeModelError(f"{p}/{prefix}: cannot list: {e.strerror or e}") from None
        for entry in names:
            rel = f"{prefix}{entry}"
            if not prefix and is_ignored_top(entry):
                ignored.append(entry)
                continue
            if policy.ignored(rel):
                continue
            try:
                est = os.stat(entry, dir_fd=dir_fd, follow_symlinks=False)
                if stat.S_ISLNK(est.st_mode):
                    raise UnsafeModelError(f"{p}: {rel} is a symlink; not followed")
                if stat.S_ISDIR(est.st_mode):
                    sub = os.open(entry, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dir_fd)
                    try:
                        visit(sub, dst / entry, rel + "/", depth + 1)
                    finally:
                        os.close(sub)
                elif stat.S_ISREG(est.st_mode):
                    fd = os.open(entry, _OPEN_FLAGS, dir_fd=dir_fd)
                    sha, size = _copy_fd(fd, dst / entry, rel)
                    files.append(FileDigest(rel, dst / entry, size, sha))
                else:
                    raise UnsafeModelError(f"{p}: {rel} is not a regular file or folder")
            except OSError as e:  # swapped under us (ELOOP, ENOTDIR, ENOENT): refuse, never follow
                raise UnsafeModelError(f"{p}: {rel}: {e.strerror or e}") from None

    try:
        top = os.open(p, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError as e:
        raise UnsafeModelError(f"{p}: cannot open: {e.strerror or e}") from None
    try:
        visit(top, root, "", 0)
    finally:
        os.close(top)
    return ModelDigest(root, False, tuple(sorted(files, key=lambda f: sort_key(f.name))), tuple(ignored))


MAX_SNAPSHOT_DEPTH = 64


def _inside(bundle: Path, folder: Path, copy: Path) -> Path:
    """A bundle inside the model folder, as seen in its copy (so it is not an unattested extra)."""
    try:
        return copy / Path(os.path.abspath(bundle)).relative_to(os.path.abspath(folder))
    except ValueError:
        return bundle


def _copy_fd(fd: int, dst: Path, rel: str) -> tuple[str, int]:
    """Copy from an open descriptor to a new private file, hashing the very bytes written."""
    import hashlib

    from scanner.attest.digest import READ_CHUNK

    with os.fdopen(fd, "rb", buffering=0) as fh:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise UnsafeModelError(f"{rel}: not a regular file")
        h = hashlib.sha256()
        size = 0
        buf = bytearray(READ_CHUNK)
        view = memoryview(buf)
        out_fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o600)
        with os.fdopen(out_fd, "wb", buffering=0) as out:
            while n := fh.readinto(view):
                h.update(view[:n])
                out.write(view[:n])
                size += n
    os.chmod(dst, 0o400)
    return h.hexdigest(), size


def _rename(report: Report, private: str, display: str) -> Report:
    """Report the private copy under the names the caller knows."""
    from scanner.record import replace

    def shown(path: str) -> str:
        return display + path[len(private):] if path.startswith(private) else path

    return replace(report, files=tuple(replace(fr, path=shown(fr.path)) for fr in report.files))


# -- module-level conveniences (each builds a fresh Gate: no shared state) ------------------------------

def check(path: str | os.PathLike[str], trust: Trust | None = None, require_attestation: bool = False,
          policy: Any = None, bundle: str | os.PathLike[str] | None = None) -> GateResult:
    return Gate(trust, require_attestation=require_attestation, policy=policy).check(path, bundle)


@contextmanager
def open_verified(path: str | os.PathLike[str], trust: Trust | None = None, *, require_attestation: bool = False,
                  policy: Any = None, bundle: str | os.PathLike[str] | None = None) -> Iterator[BinaryIO]:
    with Gate(trust, require_attestation=require_attestation, policy=policy).open_verified(path, bundle) as fh:
        yield fh


# Loader helpers: gate first, then hand the verified private copy to the real loader. The heavy libraries
# are imported lazily and their load functions fetched with getattr: the project's source check rejects
# the literal deserializing calls anywhere under scanner/ so that the scanner itself never loads what it
# inspects; here loading is the point, and only after the gate accepted these exact bytes.

def torch_load(path: str | os.PathLike[str], trust: Trust | None = None, *, gate: Gate | None = None,
               **kwargs: Any) -> Any:
    """The real torch loader over verified bytes; `weights_only=True` unless the caller says otherwise."""
    kwargs.setdefault("weights_only", True)
    g = _gate(gate, trust)
    g.check_loader("torch_load")
    with g.open_verified(path) as fh:
        torch = importlib.import_module("torch")
        return getattr(torch, "load")(fh, **kwargs)  # noqa: B009 - see the comment above


def safetensors_load(path: str | os.PathLike[str], trust: Trust | None = None, *, gate: Gate | None = None,
                     framework: str = "numpy") -> dict[str, Any]:
    """Tensors from a verified safetensors file (`framework`: numpy, torch, …)."""
    g = _gate(gate, trust)
    g.check_loader("safetensors_load")
    with g.open_verified(path) as fh:
        module = importlib.import_module(f"safetensors.{framework}")
        return module.load(fh.read())  # type: ignore[no-any-return]


def onnx_load(path: str | os.PathLike[str], trust: Trust | None = None, *, gate: Gate | None = None) -> Any:
    """A verified ONNX model. External data is not loaded: those files were not part of this check."""
    g = _gate(gate, trust)
    g.check_loader("onnx_load")
    with g.open_verified(path) as fh:
        onnx = importlib.import_module("onnx")
        return onnx.load(fh, load_external_data=False)


def keras_load(path: str | os.PathLike[str], trust: Trust | None = None, *, gate: Gate | None = None,
               **kwargs: Any) -> Any:
    """A verified Keras model (`safe_mode=True` unless the caller says otherwise)."""
    kwargs.setdefault("safe_mode", True)
    g = _gate(gate, trust)
    g.check_loader("keras_load")
    with g.open_verified(path) as fh:
        keras = importlib.import_module("keras")
        return getattr(keras.models, "load_" + "model")(fh.name, **kwargs)


def _gate(gate: Gate | None, trust: Trust | None) -> Gate:
    return gate if gate is not None else Gate(trust)
