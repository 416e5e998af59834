"""Scan and attest in one step: digest every file once (in parallel), scan with those digests, build the
statement, sign it."""

from __future__ import annotations

import glob
import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scanner.attest.digest import ModelDigest, digest_model
from scanner.attest.sign import Signer
from scanner.attest.statement import PAYLOAD_TYPE, build_statement, canonical_json
from scanner.findings import Report
from scanner.record import replace
from scanner.rules import Policy, RuleSet


@dataclass(frozen=True)
class Attestation:
    model: ModelDigest
    report: Report
    statement: dict[str, Any]
    payload: bytes                       # the canonical JSON that is signed
    bundle: dict[str, Any] | None        # None when unsigned

    def document(self) -> bytes:
        """What gets written: the bundle, or the bare statement when unsigned."""
        if self.bundle is None:
            return self.payload + b"\n"
        return json.dumps(self.bundle, indent=2).encode() + b"\n"


def default_output(model: Path, signed: bool = True) -> Path:
    """`<file>.modelseal.sigstore.json` next to a file; `modelseal.sigstore.json` inside a folder."""
    suffix = "sigstore.json" if signed else "intoto.json"
    if model.is_dir():
        return model / f"modelseal.{suffix}"
    return model.with_name(f"{model.name}.modelseal.{suffix}")


def scan_model(path: Path, policy: Policy, rules: RuleSet | None = None, *,
               allow_symlinks: bool = False) -> tuple[ModelDigest, Report]:
    """Digest then scan the same file set; the engine reuses the digests instead of hashing again."""
    model = digest_model(path, ignore=policy.ignored, allow_symlinks=allow_symlinks)
    return model, scan_digested(model, policy, rules)


def scan_digested(model: ModelDigest, policy: Policy, rules: RuleSet | None = None) -> Report:
    """Scan exactly the files of `model`, handing the engine their digests."""
    from scanner.engine import scan

    if model.single_file:
        digests = {os.path.abspath(model.root): model.files[0].sha256}
        scan_policy = policy
    else:
        digests = {os.path.abspath(model.root / f.name): f.sha256 for f in model.files}
        # leave out of the scan what the digest left out (VCS folders, signature files)
        extra = tuple(p for n in model.ignored for p in (glob.escape(n), glob.escape(n) + "/*"))
        scan_policy = replace(policy, ignore_paths=policy.ignore_paths + extra)
    return scan([model.root], scan_policy, rules, digests=digests)


def attest(path: Path | str, policy: Policy, signer: Signer | None, rules: RuleSet | None = None, *,
           allow_symlinks: bool = False, storage_options: Mapping[str, Any] | None = None) -> Attestation:
    """Attest a local model, or a URL (`str`, see scanner.attest.remote: streamed once, scanned from a private
    copy that is gone when this returns)."""
    if isinstance(path, str):
        from scanner.attest.remote import fetch_model

        with tempfile.TemporaryDirectory(prefix="modelseal-attest-") as tmp:
            model = fetch_model(path, policy, Path(tmp), storage_options)
            report = scan_digested(model, policy, rules)
    else:
        model, report = scan_model(path, policy, rules, allow_symlinks=allow_symlinks)
    statement = build_statement(model, report, policy)
    payload = canonical_json(statement)
    bundle = signer.sign(PAYLOAD_TYPE, payload) if signer is not None else None
    return Attestation(model, report, statement, payload, bundle)
