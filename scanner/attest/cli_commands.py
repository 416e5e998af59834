"""`modelseal attest`, `verify` and `keygen`. Registered on the typer app by scanner/cli.py; every heavy
import (cryptography, sigstore, the engine) happens inside the command that needs it."""

from __future__ import annotations

import os
import posixpath
from pathlib import Path
from typing import Annotated

import typer


def _fail(message: str, code: int = 2) -> typer.Exit:
    from scanner.output.escape import escape

    typer.echo(f"modelseal: error: {escape(message)}", err=True)
    return typer.Exit(code)


def _say(message: str, err: bool = False) -> None:
    """Paths, names and signer identities come from the model and its bundle: escaped, one line."""
    from scanner.output.escape import escape

    typer.echo(escape(message), err=err)


def _password(env: str | None) -> bytes | None:
    if env is None:
        return None
    value = os.environ.get(env)
    if value is None:
        raise _fail(f"environment variable {env} is not set")
    return value.encode()


def attest(
    path: Annotated[Path, typer.Argument(help="Model file or folder to scan and attest.")],
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="Where to write the bundle (default: <file>.modelseal.sigstore.json next to a "
                               "file, modelseal.sigstore.json inside a folder).")] = None,
    key: Annotated[Path | None, typer.Option("--key", help="EC private key (PEM) to sign with, offline.")] = None,
    key_password_env: Annotated[str | None, typer.Option(
        "--key-password-env", help="Name of an environment variable holding the key's password.")] = None,
    keyless: Annotated[bool, typer.Option("--keyless", help="Sign with Sigstore (Fulcio + Rekor; needs the network "
                                                            "and an OIDC token).")] = False,
    identity_token: Annotated[str | None, typer.Option(
        "--identity-token", help="OIDC token for --keyless (default: ambient CI credentials).")] = None,
    staging: Annotated[bool, typer.Option("--staging", help="Use Sigstore's staging instance.")] = False,
    unsigned: Annotated[bool, typer.Option("--unsigned", help="Write the bare in-toto statement, unsigned.")] = False,
    fail_on: Annotated[str | None, typer.Option("--fail-on", help="Lowest severity that fails the run.")] = None,
    config: Annotated[Path | None, typer.Option("--config", help="TOML config (as for scan).")] = None,
    allow_symlinks: Annotated[bool, typer.Option(
        "--allow-symlinks", help="Include symlinks to files inside the model (hashed as their target).")] = False,
    dataset: Annotated[list[str] | None, typer.Option(
        "--dataset", help="Training dataset NAME=PATH|sha256:DIGEST[,license=SPDX][,uri=URI] (repeatable): adds a "
                          "signed SLSA provenance statement (<bundle>.provenance.sigstore.json).")] = None,
    base_model: Annotated[str | None, typer.Option(
        "--base-model", help="Model fine-tuned from: PATH or sha256:DIGEST (provenance).")] = None,
    framework: Annotated[list[str] | None, typer.Option(
        "--framework", help="Training framework NAME==VERSION (repeatable; provenance).")] = None,
    storage_option: Annotated[list[str] | None, typer.Option(
        "--storage-option", help="key=value for the fsspec filesystem of a URL model (s3://, gs://, https://, "
                                 "hf://).")] = None,
) -> None:
    """Scan a model and write a signed attestation of the result.

    A URL (s3://, gs://, http(s)://, hf://) is streamed once into a private temporary folder, hashed as it
    arrives and scanned from that copy; the bundle then goes to the current folder by default.

    The attestation is written whatever the verdict (it records the verdict); the exit code is the scan's:
    0 nothing at or above --fail-on, 1 findings at or above it, 2 the scan or signing could not be done.
    """
    modes = sum([key is not None, keyless, unsigned])
    if modes != 1:
        raise _fail("choose exactly one of --key KEY.pem, --keyless, --unsigned")
    from scanner.remote import parse_storage_options, url_from_arg

    url = url_from_arg(path)
    if url is None and not path.exists():
        raise _fail(f"no such file or directory: {path}")
    try:
        options = parse_storage_options(storage_option)
    except ValueError as e:
        raise _fail(str(e)) from None
    from scanner.attest.attest import attest as run_attest
    from scanner.attest.attest import default_output
    from scanner.attest.digest import DigestError
    from scanner.attest.sign import KeylessSigner, KeySigner, Signer, SignError
    from scanner.rules import ConfigError, load_policy

    try:
        policy = load_policy(config, fail_on)
    except ConfigError as e:
        raise _fail(str(e)) from None
    deps, frameworks = _provenance_args(dataset, base_model, framework)
    signer: Signer | None = None
    try:
        if key is not None:
            try:
                pem = key.read_bytes()
            except OSError as e:
                raise _fail(f"cannot read key {key}: {e.strerror or e}") from None
            signer = KeySigner.from_pem(pem, _password(key_password_env))
        elif keyless:
            signer = KeylessSigner(identity_token, staging)
        result = run_attest(url if url is not None else path, policy, signer, allow_symlinks=allow_symlinks,
                            storage_options=options)
    except (SignError, DigestError) as e:
        raise _fail(str(e)) from None
    if url is not None:  # next to nothing on disk: <last URL component>.modelseal.<suffix> in the current folder
        out = output or Path(f"{posixpath.basename(url.rstrip('/'))}.modelseal."
                             f"{'intoto' if unsigned else 'sigstore'}.json")
    else:
        out = output or default_output(path, signed=not unsigned)
    try:
        out.write_bytes(result.document())
    except OSError as e:
        raise _fail(f"cannot write {out}: {e.strerror or e}") from None
    report = result.report
    _say(f"{url or path}: verdict {report.verdict.value}, {len(result.model.files)} file(s), "
         f"manifest sha256:{result.model.manifest_digest}")
    _say(f"wrote {'statement' if unsigned else 'attestation'} {out}")
    if deps or frameworks:
        _write_provenance(result, signer, deps, frameworks, out)
    raise typer.Exit(report.exit_code())


def _provenance_args(dataset: list[str] | None, base_model: str | None,
                     framework: list[str] | None) -> tuple[list, list[tuple[str, str]]]:
    from scanner.attest.provenance import ProvenanceError, parse_base_model, parse_dataset, parse_framework

    try:
        deps = [parse_dataset(d) for d in dataset or []]
        if base_model:
            deps.append(parse_base_model(base_model))
        return deps, [parse_framework(f) for f in framework or []]
    except ProvenanceError as e:
        raise _fail(str(e)) from None


def _write_provenance(result: object, signer: object, deps: list, frameworks: list[tuple[str, str]],
                      scan_out: Path) -> None:
    from scanner.attest.provenance import build_provenance, provenance_output, sign_provenance
    from scanner.attest.sign import SignError

    statement = build_provenance(result.statement["subject"], result.model.manifest_digest,  # type: ignore[attr-defined]
                                 deps, frameworks)
    out = provenance_output(scan_out)
    try:
        out.write_bytes(sign_provenance(statement, signer))
    except SignError as e:
        raise _fail(str(e)) from None
    except OSError as e:
        raise _fail(f"cannot write {out}: {e.strerror or e}") from None
    _say(f"wrote provenance {out} ({sum(d.role == 'dataset' for d in deps)} dataset(s))")


def verify(
    path: Annotated[Path, typer.Argument(help="Model file or folder to verify.")],
    bundle: Annotated[list[Path] | None, typer.Option(
        "--bundle", "-b", help="Attestation or OMS signature (repeatable; default: the names attest and "
                               "model_signing write next to the model). Every one must verify.")] = None,
    key: Annotated[list[Path] | None, typer.Option("--key", help="Trusted EC public key (PEM); repeatable.")] = None,
    identity: Annotated[list[str] | None, typer.Option(
        "--identity", help="Trusted keyless signer identity (email or URI); pair each with --issuer.")] = None,
    issuer: Annotated[list[str] | None, typer.Option("--issuer", help="OIDC issuer URL of that identity.")] = None,
    trusted_root: Annotated[Path | None, typer.Option(
        "--trusted-root", help="Pinned Sigstore trusted root (or client trust config) JSON.")] = None,
    staging: Annotated[bool, typer.Option("--staging", help="Trust Sigstore's staging root.")] = False,
    allow_extra: Annotated[bool, typer.Option("--allow-extra", help="Accept files the attestation does not "
                                                                    "cover.")] = False,
    allow_verdict: Annotated[list[str] | None, typer.Option(
        "--allow-verdict", help="Scan verdicts accepted (repeatable or comma-separated; default clean).")] = None,
    max_age: Annotated[str | None, typer.Option("--max-age", help="Oldest scan accepted, e.g. 30d, 12h.")] = None,
    ignore: Annotated[list[str] | None, typer.Option(
        "--ignore", help="Path (relative to the model) left out of the check, as model_signing --ignore-paths.")] = None,
    allow_symlinks: Annotated[bool, typer.Option("--allow-symlinks", help="Follow symlinks inside the model.")] = False,
    require_provenance: Annotated[bool, typer.Option(
        "--require-provenance", help="Require a signed training provenance statement.")] = False,
    provenance: Annotated[Path | None, typer.Option(
        "--provenance", help="The provenance bundle (default: <bundle>.provenance.sigstore.json by the model).")] = None,
    require_dataset: Annotated[list[str] | None, typer.Option(
        "--require-dataset", help="sha256:DIGEST of a dataset the model must have been trained on (repeatable).")] = None,
    deny_dataset: Annotated[list[str] | None, typer.Option(
        "--deny-dataset", help="sha256:DIGEST of a dataset the model must not have been trained on.")] = None,
    allow_license: Annotated[list[str] | None, typer.Option(
        "--allow-license", help="SPDX licenses every training dataset must declare one of (repeatable).")] = None,
    dataset_path: Annotated[list[Path] | None, typer.Option(
        "--dataset-path", help="A local copy of a training dataset: digested, matched, its own signature "
                               "verified (repeatable).")] = None,
    artifact_signature: Annotated[bool, typer.Option(
        "--artifact-signature", help="Accept a key-signed plain message signature of FILE (cosign sign-blob "
        "style). Without it only attestations, OMS signatures and keyless message signatures verify.")] = False,
) -> None:
    """Verify attestations, OMS signatures and Sigstore artifact signatures against the model on disk, offline.

    Exit 0 when every check holds, 1 with the first reason that failed, 2 for usage errors.
    """
    from scanner.attest.verify import Requirements, Trust, VerificationFailure, parse_duration, verify_model

    identities = identity or []
    issuers = issuer or []
    if len(identities) != len(issuers):
        raise _fail("give one --issuer per --identity")
    if not key and not identities:
        raise _fail("give a trusted --key PUB.pem or --identity ID --issuer URL")
    if not path.exists():
        raise _fail(f"no such file or directory: {path}")
    verdicts = {v.strip() for item in (allow_verdict or ["clean"]) for v in item.split(",") if v.strip()}
    unknown = verdicts - {"clean", "suspicious", "malicious", "error"}
    if unknown:
        raise _fail(f"unknown verdict(s) {', '.join(sorted(unknown))}")
    try:
        age = parse_duration(max_age) if max_age else None
    except ValueError as e:
        raise _fail(str(e)) from None
    for k in key or []:
        if not k.is_file():
            raise _fail(f"no such key file: {k}")
    trust = Trust(tuple(key or ()), tuple(zip(identities, issuers, strict=True)), trusted_root, staging)
    req = Requirements(allow_extra, frozenset(verdicts), age, tuple(ignore or ()), allow_symlinks,
                       artifact_signature=artifact_signature)
    try:
        results = verify_model(path, bundle or [], trust, req)
    except VerificationFailure as e:
        _say(f"FAILED: {path}: {e}", err=True)
        raise typer.Exit(1) from None
    from scanner.attest.provenance_verify import ProvenancePolicy, verify_provenance

    try:
        ppolicy = ProvenancePolicy.of(require=require_provenance, require_datasets=require_dataset or (),
                                      deny_datasets=deny_dataset or (), allow_licenses=allow_license,
                                      dataset_paths=dataset_path or ())
    except ValueError as e:
        raise _fail(str(e)) from None
    pv = None
    note: str | None = None
    try:
        pv = verify_provenance(path, [provenance] if provenance else [], trust, req, ppolicy)
    except VerificationFailure as e:
        if ppolicy.active or provenance is not None:
            _say(f"FAILED: {path}: {e}", err=True)
            raise typer.Exit(1) from None
        note = f"note: {e} (not required: pass --require-provenance to enforce)"
    for v in results:
        _say(f"OK: {v.bundle.name if v.bundle else path}: {v.describe()}")
    if pv is not None:
        for line in pv.chain(str(path)):
            _say(f"OK: {line}" if line.startswith(str(path)) else line)
    elif note is not None:
        _say(note)
    if not any(v.kind == "modelseal" for v in results):
        typer.echo("note: no modelseal scan attestation among them: the scan verdict was not checked")


def keygen(
    private: Annotated[Path, typer.Argument(help="Where to write the private key (PEM, mode 0600).")],
    public: Annotated[Path | None, typer.Option(
        "--public", help="Where to write the public key (default: PRIVATE with .pub.pem).")] = None,
    curve: Annotated[str, typer.Option("--curve", help="p256 or p384.")] = "p256",
    password_env: Annotated[str | None, typer.Option(
        "--password-env", help="Encrypt the private key with the password in this environment variable.")] = None,
) -> None:
    """Write a new EC key pair for `attest --key` / `verify --key`."""
    from scanner.attest.sign import CURVES, write_key_pair

    if curve not in CURVES:
        raise _fail(f"unknown curve {curve!r} (use p256 or p384)")
    pub = public or private.with_name(private.name.removesuffix(".pem") + ".pub.pem")
    try:
        write_key_pair(private, pub, curve, _password(password_env))
    except (OSError, FileExistsError) as e:
        raise _fail(str(e)) from None
    _say(f"wrote {private} (private) and {pub} (public)")


def register(app: typer.Typer) -> None:
    app.command()(attest)
    app.command()(verify)
    app.command()(keygen)
