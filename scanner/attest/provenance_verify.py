"""Verify a training-provenance statement (scanner/attest/provenance.py) against the model on disk and the
user's data policy: required / denied datasets (by digest), allowed licenses. Datasets the verifier has
locally (`dataset_paths`) are digested and matched; one that carries its own signed attestation or OMS
signature is verified too, giving the chain model -> provenance -> dataset -> its signer.

Nothing in the statement steers where we read: dataset paths come from the verifier, never from the
(signed but third-party) statement."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scanner.attest.provenance import SLSA_PREDICATE_TYPE, TRAINING_BUILD_TYPE, digest_path, parse_digest
from scanner.attest.verify import Requirements, Trust, VerificationFailure


@dataclass(frozen=True)
class ProvenancePolicy:
    require: bool = False                          # a provenance statement must be present
    require_datasets: frozenset[str] = frozenset()  # sha256 hex each must be among the datasets
    deny_datasets: frozenset[str] = frozenset()
    allow_licenses: frozenset[str] | None = None   # None: any (or none); else every dataset's license in it
    dataset_paths: tuple[Path, ...] = ()           # local copies to digest, match and verify

    @classmethod
    def of(cls, *, require: bool = False, require_datasets: Sequence[str] = (), deny_datasets: Sequence[str] = (),
           allow_licenses: Sequence[str] | None = None, dataset_paths: Sequence[Path] = ()) -> ProvenancePolicy:
        """From user strings (digests as `sha256:HEX` or HEX; ValueError on a malformed one)."""
        def digests(items: Sequence[str], what: str) -> frozenset[str]:
            out = set()
            for s in items:
                d = parse_digest(s)
                if d is None:
                    raise ValueError(f"{what} {s!r} is not sha256:<64 hex digits>")
                out.add(d)
            return frozenset(out)

        # SPDX license identifiers match case-insensitively (SPDX spec, annex on license expressions)
        licenses = None if allow_licenses is None else frozenset(
            x.strip().lower() for item in allow_licenses for x in item.split(",") if x.strip())
        return cls(require, digests(require_datasets, "--require-dataset"), digests(deny_datasets, "--deny-dataset"),
                   licenses, tuple(Path(p) for p in dataset_paths))

    @property
    def active(self) -> bool:
        return (self.require or bool(self.require_datasets) or bool(self.deny_datasets)
                or self.allow_licenses is not None or bool(self.dataset_paths))


@dataclass(frozen=True)
class DatasetLink:
    name: str
    sha256: str
    license: str | None
    uri: str | None
    local: Path | None = None          # the verifier's copy that matched
    signer: str | None = None          # who signed that copy, when it carries a signature


@dataclass(frozen=True)
class ProvenanceVerified:
    bundle: Path
    signer: str
    datasets: tuple[DatasetLink, ...]
    base_models: tuple[tuple[str, str], ...]          # (name, sha256)
    frameworks: dict[str, str] = field(default_factory=dict)

    def chain(self, model: str) -> list[str]:
        lines = [f"{model} -> provenance {self.bundle.name} signed by {self.signer}"]
        for d in self.datasets:
            lic = f", license {d.license}" if d.license else ""
            who = f" -> signed by {d.signer}" if d.signer else (" (local copy matches, unsigned)" if d.local else "")
            lines.append(f"   -> dataset {d.name} sha256:{d.sha256[:16]}…{lic}{who}")
        for name, sha in self.base_models:
            lines.append(f"   -> base model {name} sha256:{sha[:16]}…")
        if self.frameworks:
            lines.append("   -> frameworks " + ", ".join(f"{k}=={v}" for k, v in self.frameworks.items()))
        return lines


def default_provenance_bundles(path: Path) -> list[Path]:
    if path.is_dir():
        cands = [path / "modelseal.provenance.sigstore.json"]
    else:
        cands = [path.with_name(path.name + ".modelseal.provenance.sigstore.json"),
                 path.parent / "modelseal.provenance.sigstore.json"]
    return [c for c in cands if c.is_file()]


def verify_provenance(path: Path, bundles: Sequence[Path], trust: Trust, req: Requirements,
                      policy: ProvenancePolicy, *, file_sha256: str | None = None) -> ProvenanceVerified | None:
    """None when there is no provenance and none is needed; VerificationFailure (one line) otherwise."""
    candidates = list(bundles) or default_provenance_bundles(path)
    if not candidates:
        if policy.active:
            raise VerificationFailure(f"no training provenance statement found for {path} (attest with --dataset)")
        return None
    b = candidates[0]
    try:
        raw = b.read_bytes()
    except OSError as e:
        raise VerificationFailure(f"cannot read provenance {b}: {e.strerror or e}") from None
    try:
        return _verify(path, b, raw, trust, req, policy, file_sha256)
    except VerificationFailure as e:
        raise VerificationFailure(f"provenance {b.name}: {e}") from None


def _verify(path: Path, bundle: Path, raw: bytes, trust: Trust, req: Requirements, policy: ProvenancePolicy,
            file_sha256: str | None) -> ProvenanceVerified:
    from scanner.attest.verify import check_file_digest, check_files, expected_files, verify_signature

    _, signer, statement = verify_signature(raw, trust)
    if statement["predicateType"] != SLSA_PREDICATE_TYPE:
        raise VerificationFailure(f"predicate type {statement['predicateType']!r} is not SLSA provenance v1")
    try:
        build = statement["predicate"]["buildDefinition"]
        build_type = build["buildType"]
        deps = build.get("resolvedDependencies", [])
        frameworks = build.get("externalParameters", {}).get("frameworks", {})
        if not isinstance(deps, list) or not isinstance(frameworks, dict):
            raise TypeError
    except (KeyError, TypeError, AttributeError):
        raise VerificationFailure("SLSA predicate is malformed") from None
    if build_type != TRAINING_BUILD_TYPE:
        raise VerificationFailure(f"buildType {build_type!r} is not {TRAINING_BUILD_TYPE}")
    expected = expected_files(statement)
    if file_sha256 is not None:
        member = None
        if bundle.parent == path.parent and bundle.name == "modelseal.provenance.sigstore.json":
            member = path.name
        check_file_digest(path.name, file_sha256, expected, member)
    elif path.is_file() and bundle.name == "modelseal.provenance.sigstore.json":
        from scanner.attest.digest import hash_file

        check_file_digest(path.name, hash_file(path)[0], expected, path.name)
    else:
        check_files(path, expected, req, bundle)
    datasets, bases = _dependencies(deps)
    _apply_policy(datasets, policy)
    datasets = _match_local(datasets, policy.dataset_paths, trust, req)
    return ProvenanceVerified(bundle, signer, tuple(datasets), tuple(bases),
                              {str(k): str(v) for k, v in frameworks.items()})


def _dependencies(deps: list[Any]) -> tuple[list[DatasetLink], list[tuple[str, str]]]:
    datasets: list[DatasetLink] = []
    bases: list[tuple[str, str]] = []
    for d in deps:
        if not isinstance(d, dict):
            raise VerificationFailure("resolvedDependencies entry is not an object")
        ann = d.get("annotations") if isinstance(d.get("annotations"), dict) else {}
        role = ann.get("role")
        if role not in ("dataset", "base-model"):
            continue
        sha = d.get("digest", {}).get("sha256") if isinstance(d.get("digest"), dict) else None
        if not isinstance(sha, str) or parse_digest(sha) is None:
            raise VerificationFailure(f"{role} {d.get('name')!r} has no sha256 digest")
        name = str(d.get("name", "?"))
        if role == "dataset":
            lic = ann.get("license")
            datasets.append(DatasetLink(name, sha.lower(), lic if isinstance(lic, str) else None,
                                        d.get("uri") if isinstance(d.get("uri"), str) else None))
        else:
            bases.append((name, sha.lower()))
    return datasets, bases


def _apply_policy(datasets: list[DatasetLink], policy: ProvenancePolicy) -> None:
    for d in datasets:
        if d.sha256 in policy.deny_datasets:
            raise VerificationFailure(f"model was trained on denied dataset {d.name} (sha256:{d.sha256[:16]}…)")
        if policy.allow_licenses is not None:
            if not d.license:
                raise VerificationFailure(f"dataset {d.name} declares no license (allowed: "
                                          f"{', '.join(sorted(policy.allow_licenses))})")
            if d.license.lower() not in policy.allow_licenses:
                raise VerificationFailure(f"dataset {d.name} has license {d.license}, not allowed (allowed: "
                                          f"{', '.join(sorted(policy.allow_licenses))})")
    have = {d.sha256 for d in datasets}
    for want in sorted(policy.require_datasets):
        if want not in have:
            raise VerificationFailure(f"required dataset sha256:{want[:16]}… is not among the model's training "
                                      f"datasets ({len(datasets)} recorded)")


def _match_local(datasets: list[DatasetLink], paths: Sequence[Path], trust: Trust,
                 req: Requirements) -> list[DatasetLink]:
    """Digest each local copy, match it to a recorded dataset, verify its own signature when it has one."""
    from dataclasses import replace

    from scanner.attest.verify import default_bundles, verify_model

    by_sha = {d.sha256: i for i, d in enumerate(datasets)}
    out = list(datasets)
    for p in paths:
        try:
            sha, _ = digest_path(p)
        except Exception as e:  # noqa: BLE001 - ProvenanceError: unreadable copy
            raise VerificationFailure(str(e)) from None
        if sha not in by_sha:
            raise VerificationFailure(f"dataset at {p} (sha256:{sha[:16]}…) is not a dataset the provenance records "
                                      "(changed since training?)")
        signer = None
        if default_bundles(p):
            try:
                results = verify_model(p, [], trust, replace(req, allow_verdicts=req.allow_verdicts | {"clean"}))
            except VerificationFailure as e:
                raise VerificationFailure(f"dataset {datasets[by_sha[sha]].name} signature: {e}") from None
            signer = ", ".join(sorted({v.signer for v in results}))
        i = by_sha[sha]
        out[i] = replace(out[i], local=p, signer=signer)
    return out
