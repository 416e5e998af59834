"""The pre-load gate (design §8): allow or refuse a model before serving code loads it.

    from scanner import gate
    g = gate.Gate(gate.Trust(public_keys=["keys/scan.pub.pem"]), cache=gate.GateCache())
    g.check("models/llama")                    # verified report, or UnsafeModelError
    with g.open_verified("models/model.pt") as f:
        ...                                    # exactly the bytes that were checked

With a trusted attestation of these exact bytes the gate verifies instead of scanning; without one it
scans (or refuses, with `require_attestation=True`). Accepted outcomes are cached by content digest in a
cache the caller owns. `open_verified` copies the file once through one descriptor into a private temp
file while hashing it, checks that digest, and hands out the copy: swapping the file on disk after the
check changes nothing that gets loaded.
"""

from __future__ import annotations

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
                 requirements: Requirements | None = None, loader_advisories: str = "refuse") -> None:
        from scanner.rules import Policy

        if loader_advisories not in ("refuse", "warn", "ignore"):
            raise ValueError(f"loader_advisories must be refuse, warn or ignore, not {loader_advisories!r}")
        self.loader_advisories = loader_advisories  # installed loader listed in rules/advisories.toml
        self.trust = trust or Trust()
        self.cache = cache
        self.require_attestation = require_attestation
        self.policy = policy or Policy()
        self.requirements = requirements or Requirements()

    # -- public ---------------------------------------------------------------------------------------
    def check(self, path: str | os.PathLike[str], bundle: str | os.PathLike[str] | None = None) -> GateResult:
        """Verify a trusted attestation of `path` or scan it; UnsafeModelError when refused."""
        p = Path(path)
        if p.is_file() and not p.is_symlink():
            from scanner.attest.digest import hash_file

            sha, _ = hash_file(p)
            return self._provenance(p, self._check_file(p, sha, p, bundle), sha)
        return self._provenance(p, self._check_folder(p, bundle), None)

    @contextmanager
    def open_verified(self, path: str | os.PathLike[str],
                      bundle: str | os.PathLike[str] | None = None) -> Iterator[BinaryIO]:
        """A read-only file object over a private copy of `path` whose bytes are the ones checked.

        The copy keeps the file's name (loaders look at suffixes); `f.name` is its path."""
        p = Path(path)
        workdir = Path(tempfile.mkdtemp(prefix="modelseal-gate-"))  # mode 0700: ours alone
        try:
            copy = workdir / p.name
            sha = _copy_and_hash(p, copy)
            self._provenance(p, self._check_file(p, sha, copy, bundle), sha)
            with open(copy, "rb") as fh:
                yield fh
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
        from dataclasses import replace

        from scanner.attest.provenance_verify import verify_provenance

        try:
            pv = verify_provenance(p, [], self.trust, self.requirements, policy, file_sha256=sha)
        except VerificationFailure as e:
            raise UnsafeModelError(f"{p}: {e}") from None
        return replace(result, provenance=pv)

    def _check_file(self, original: Path, sha: str, scan_path: Path, bundle: Any) -> GateResult:
        """Decide for one file whose sha256 is known; `scan_path` holds exactly those bytes."""
        reasons: list[str] = []
        if not self.trust.empty:
            for b, member in self._file_bundles(original, bundle):
                try:
                    v = self._verify_digest(original, sha, b, member)
                except VerificationFailure as e:
                    reasons.append(f"{b.name}: {e}")
                    continue
                return GateResult(original, "attestation", v.verdict or "clean", sha, attestation=v)
        key = self._cache_key(sha)
        if self.cache is not None and (hit := self.cache.get(key)) is not None:
            return GateResult(original, "cache", hit.verdict, sha, hit.report, hit.attestation)
        self._refuse_unattested(original, reasons)
        from scanner.attest.attest import scan_digested
        from scanner.attest.digest import FileDigest, ModelDigest

        model = ModelDigest(scan_path, True, (FileDigest(original.name, scan_path, -1, sha),))
        report = _rename(scan_digested(model, self.policy), str(original))
        return self._accept_scan(original, sha, report, key)

    def _check_folder(self, p: Path, bundle: Any) -> GateResult:
        from scanner.attest.digest import DigestError, digest_model
        from scanner.attest.statement import PREDICATE_TYPE
        from scanner.attest.verify import default_bundles, verify_bundle

        reasons: list[str] = []
        if not self.trust.empty:
            candidates = [Path(bundle)] if bundle is not None else default_bundles(p)
            for b in candidates:
                try:
                    v = verify_bundle(p, b.read_bytes(), self.trust, self.requirements, bundle_path=b,
                                      accept_types=[PREDICATE_TYPE])
                except (OSError, VerificationFailure) as e:
                    reasons.append(f"{b.name}: {e}")
                    continue
                from scanner.attest.verify import model_from_verified

                digest = model_from_verified(p, v).manifest_digest
                return GateResult(p, "attestation", v.verdict or "clean", digest, attestation=v)
        try:
            model = digest_model(p, ignore=self.policy.ignored)
        except DigestError as e:
            raise UnsafeModelError(f"{p}: {e}") from None
        key = self._cache_key(model.manifest_digest)
        if self.cache is not None and (hit := self.cache.get(key)) is not None:
            return GateResult(p, "cache", hit.verdict, model.manifest_digest, hit.report, hit.attestation)
        self._refuse_unattested(p, reasons)
        from scanner.attest.attest import scan_digested

        return self._accept_scan(p, model.manifest_digest, scan_digested(model, self.policy), key)

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

    def _cache_key(self, digest: str) -> str:
        # the same bytes may be judged differently under another policy or verdict list
        pol = self.policy
        return "|".join([digest, pol.fail_on.value, ",".join(sorted(pol.allow_globals)),
                         ",".join(sorted(d.name for d in pol.deny_globals)),
                         ",".join(sorted(self.requirements.allow_verdicts))])

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


def _copy_and_hash(src: Path, dst: Path) -> str:
    """Read `src` once through one descriptor (no symlink followed), writing the copy and hashing it."""
    import hashlib

    from scanner.attest.digest import READ_CHUNK

    try:
        fd = os.open(src, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0))
    except OSError as e:
        raise UnsafeModelError(f"{src}: cannot open: {e.strerror or e}") from None
    with os.fdopen(fd, "rb", buffering=0) as fh:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise UnsafeModelError(f"{src}: not a regular file")
        h = hashlib.sha256()
        buf = bytearray(READ_CHUNK)
        view = memoryview(buf)
        out_fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o600)
        with os.fdopen(out_fd, "wb", buffering=0) as out:
            while n := fh.readinto(view):
                h.update(view[:n])
                out.write(view[:n])
    os.chmod(dst, 0o400)
    return h.hexdigest()


def _rename(report: Report, display: str) -> Report:
    """Report the private copy under the name the caller knows."""
    from dataclasses import replace

    return replace(report, files=tuple(replace(fr, path=display) for fr in report.files))


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
