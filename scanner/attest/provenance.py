"""Training provenance: a second in-toto statement next to the scan attestation, with a SLSA Provenance v1
predicate saying what the model was trained from (datasets, base model) and with (framework versions).

Its subjects are the scan statement's subjects (the same model bytes). Datasets and base models given as
paths are digested like models: a file by its sha256, a folder by the OMS manifest digest
(scanner/attest/digest.py), so a data publisher can sign its dataset with modelseal or model-signing and
the verifier can match that signature to the digest recorded here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from scanner.attest.statement import STATEMENT_TYPE

SLSA_PREDICATE_TYPE = "https://slsa.dev/provenance/v1"
TRAINING_BUILD_TYPE = "https://modelseal.dev/training/v1"
BUILDER_ID = "https://modelseal.dev/attest"
_HEX = re.compile(r"^(?:sha256:)?([0-9a-fA-F]{64})$")


class ProvenanceError(Exception):
    """A --dataset / --base-model / --framework argument is malformed or cannot be digested."""


@dataclass(frozen=True)
class Dependency:
    role: str                    # "dataset", "base-model"
    name: str
    sha256: str
    digest_method: str           # "file-sha256", "oms-manifest" (a folder), "given"
    license: str | None = None
    uri: str | None = None

    def descriptor(self) -> dict[str, Any]:
        """A SLSA v1 ResourceDescriptor."""
        annotations: dict[str, Any] = {"role": self.role, "digestMethod": self.digest_method}
        if self.license:
            annotations["license"] = self.license
        out: dict[str, Any] = {"name": self.name, "digest": {"sha256": self.sha256}, "annotations": annotations}
        if self.uri:
            out["uri"] = self.uri
        return out


def parse_digest(text: str) -> str | None:
    m = _HEX.match(text.strip())
    return m.group(1).lower() if m else None


def digest_path(p: Path) -> tuple[str, str]:
    """(sha256, method): a file's own sha256, or a folder's OMS manifest digest."""
    from scanner.attest.digest import DigestError, digest_model, hash_file

    try:
        if p.is_dir():
            return digest_model(p).manifest_digest, "oms-manifest"
        sha, _ = hash_file(p)
        return sha, "file-sha256"
    except (DigestError, OSError) as e:
        raise ProvenanceError(f"cannot digest {p}: {e}") from None


def parse_dataset(spec: str) -> Dependency:
    """`NAME=PATH|sha256:DIGEST[,license=SPDX][,uri=URI]`."""
    name, sep, rest = spec.partition("=")
    if not sep or not name.strip() or not rest:
        raise ProvenanceError(f"--dataset {spec!r}: expected NAME=PATH|sha256:DIGEST[,license=SPDX][,uri=URI]")
    source, *opts = rest.split(",")
    extra: dict[str, str] = {}
    for o in opts:
        k, eq, v = o.partition("=")
        if not eq or k not in ("license", "uri") or not v:
            raise ProvenanceError(f"--dataset {spec!r}: unknown option {o!r} (license=SPDX, uri=URI)")
        extra[k] = v
    sha, method = _source(source, f"--dataset {name}")
    return Dependency("dataset", name.strip(), sha, method, extra.get("license"), extra.get("uri"))


def parse_base_model(spec: str) -> Dependency:
    sha, method = _source(spec, "--base-model")
    name = Path(spec).name if method != "given" else f"sha256:{sha}"
    return Dependency("base-model", name, sha, method)


def _source(text: str, what: str) -> tuple[str, str]:
    sha = parse_digest(text) if text.startswith("sha256:") or not Path(text).exists() else None
    if sha is not None:
        return sha, "given"
    p = Path(text)
    if not p.exists():
        raise ProvenanceError(f"{what}: {text!r} is neither an existing path nor sha256:<64 hex digits>")
    return digest_path(p)


def parse_framework(spec: str) -> tuple[str, str]:
    name, sep, version = spec.partition("==")
    if not sep or not name.strip() or not version.strip():
        raise ProvenanceError(f"--framework {spec!r}: expected NAME==VERSION")
    return name.strip(), version.strip()


def build_provenance(subjects: list[dict[str, Any]], manifest_sha256: str, deps: list[Dependency],
                     frameworks: list[tuple[str, str]], started: str | None = None) -> dict[str, Any]:
    resolved = [d.descriptor() for d in deps]
    resolved += [{"name": f"pkg:pypi/{n}@{v}", "uri": f"pkg:pypi/{n}@{v}", "annotations": {"role": "framework"}}
                 for n, v in frameworks]
    return {
        "_type": STATEMENT_TYPE,
        "subject": subjects,
        "predicateType": SLSA_PREDICATE_TYPE,
        "predicate": {
            "buildDefinition": {
                "buildType": TRAINING_BUILD_TYPE,
                "externalParameters": {
                    "model": {"manifestDigest": {"sha256": manifest_sha256}},
                    "frameworks": {n: v for n, v in frameworks},
                },
                "resolvedDependencies": resolved,
            },
            "runDetails": {
                "builder": {"id": BUILDER_ID},
                "metadata": {"startedOn": started or datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")},
            },
        },
    }


def provenance_output(scan_output: Path) -> Path:
    """`x.sigstore.json` -> `x.provenance.sigstore.json` (and the same for `.intoto.json`)."""
    name = scan_output.name
    for suffix in (".sigstore.json", ".intoto.json"):
        if name.endswith(suffix):
            return scan_output.with_name(name[: -len(suffix)] + ".provenance" + suffix)
    return scan_output.with_name(name + ".provenance.sigstore.json")


def sign_provenance(statement: dict[str, Any], signer: Any) -> bytes:
    """The document to write: a signed bundle, or the bare statement when `signer` is None."""
    import json

    from scanner.attest.statement import PAYLOAD_TYPE, canonical_json

    payload = canonical_json(statement)
    if signer is None:
        return payload + b"\n"
    return json.dumps(signer.sign(PAYLOAD_TYPE, payload), indent=2).encode() + b"\n"
