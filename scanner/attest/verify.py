"""Verify attestations and model signatures against the bytes on disk (design §7).

Checks, in order, and the first that fails is the reason: the signature (a trusted EC key, or a Sigstore
identity checked offline against the embedded or a pinned trusted root), payload and predicate types,
every file's digest against its subject, no unattested extra files, the scan verdict, the scan's age.

Three kinds of statement are understood: modelseal scan attestations, OpenSSF Model Signing (OMS)
signatures (`model.sig` from `model_signing sign`, predicate v1.0 and the v0.1 compat form), and any
other in-toto statement (subjects checked, nothing else). Plain message signatures over one file (no
DSSE) are handed to scanner/attest/message.py.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import re
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path, PurePosixPath
from typing import Any

from scanner.attest.digest import DigestError, ModelDigest, digest_files, list_model, manifest_digest
from scanner.attest.dsse import ParsedBundle, pae, pae_compat, parse_bundle
from scanner.attest.statement import (
    OMS_PREDICATE_TYPE,
    OMS_PREDICATE_TYPE_COMPAT,
    PAYLOAD_TYPE,
    PREDICATE_TYPE,
    parse_statement,
)
from scanner.attest.strictjson import brief, loads

CLOCK_SKEW = timedelta(minutes=5)


class VerificationFailure(Exception):
    """Verification failed; `str(e)` is the one-line reason."""


@dataclass(frozen=True)
class Trust:
    """Who may sign: EC public keys (PEM bytes, or paths to PEM files) and keyless identities
    (identity, OIDC issuer) checked against Sigstore's production root, staging, or a pinned root."""

    public_keys: tuple[bytes | str | os.PathLike[str], ...] = ()
    identities: tuple[tuple[str, str], ...] = ()
    trusted_root: Path | None = None
    staging: bool = False
    provenance: Any = None   # a ProvenancePolicy (scanner/attest/provenance_verify.py) the gate enforces

    def __post_init__(self) -> None:
        object.__setattr__(self, "public_keys", tuple(self.public_keys))
        object.__setattr__(self, "identities", tuple(tuple(i) for i in self.identities))

    @property
    def empty(self) -> bool:
        return not self.public_keys and not self.identities


@dataclass(frozen=True)
class Requirements:
    allow_extra: bool = False
    allow_verdicts: frozenset[str] = frozenset({"clean"})
    max_age: timedelta | None = None
    ignore: tuple[str, ...] = ()          # more paths (relative to the model root) to leave out
    allow_symlinks: bool = False
    now: datetime | None = None
    artifact_signature: bool = False      # a key-signed plain message signature is what the caller expects


@dataclass(frozen=True)
class Verified:
    bundle: Path | None
    kind: str                     # "modelseal", "oms", "in-toto", "message" (no statement)
    signer: str                   # "key <hint>" or "<identity> (<issuer>)"
    statement: dict[str, Any]
    files: tuple[str, ...]        # names whose digests were checked
    verdict: str | None = None    # modelseal only
    scan_finished: str | None = None
    digests: dict[str, str] = field(default_factory=dict)  # name -> sha256 as checked on disk

    def describe(self) -> str:
        what = {"modelseal": "modelseal scan attestation", "oms": "OMS model signature",
                "in-toto": "in-toto statement", "message": "Sigstore message signature"}[self.kind]
        if self.kind == "message":
            (name, sha), = self.digests.items()
            return f"{what} signed by {self.signer}: {name} (sha256 {sha[:16]}…) matches"
        extra = f", verdict {self.verdict}, scanned {self.scan_finished}" if self.kind == "modelseal" else ""
        return f"{what} signed by {self.signer}: {len(self.files)} file(s) match{extra}"


# -- signatures ---------------------------------------------------------------------------------------

def load_trusted_keys(trust: Trust) -> list[tuple[Any, str]]:
    """(public key, hint) for every trusted key; VerificationFailure on an unreadable key."""
    from scanner.attest.dsse import key_hint
    from scanner.attest.sign import load_public_key, spki_pem

    out = []
    for k in trust.public_keys:
        try:
            data = k if isinstance(k, bytes) else Path(k).read_bytes()
            key = load_public_key(data)
        except (OSError, ValueError) as e:
            raise VerificationFailure(f"trusted key {k if not isinstance(k, bytes) else '(PEM)'}: {brief(e)}") from None
        out.append((key, key_hint(spki_pem(key))))
    return out


def verify_key_signature(bundle: ParsedBundle, trust: Trust) -> tuple[str, bool]:
    """('key <hint>', compat) when a trusted key signed the envelope; compat: the pre-1.0 model-signing PAE."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric import ec

    from scanner.attest.sign import ec_hash

    keys = load_trusted_keys(trust)
    if not keys:
        raise VerificationFailure("bundle is signed with a key, but no trusted public key was given (--key)")
    candidates = [(k, h) for k, h in keys if not bundle.hint or bundle.hint == h]
    if not candidates:
        raise VerificationFailure(f"bundle was signed by key {bundle.hint[:16]}…, which is not a trusted key")
    for key, hint in candidates:
        algo = ec.ECDSA(ec_hash(key.curve.key_size))
        for sig in bundle.signatures:
            for encode, compat in ((pae, False), (pae_compat, True)):
                try:
                    key.verify(sig, encode(bundle.payload_type, bundle.payload), algo)
                except InvalidSignature:
                    continue
                return f"key {hint[:16]}", compat
    raise VerificationFailure("signature does not verify with the trusted key(s)")


def verify_keyless_signature(bundle: ParsedBundle, trust: Trust) -> str:
    """Sigstore verification (certificate chain, log entry or timestamp, identity), offline."""
    verifier, pol = sigstore_verifier(trust)
    from sigstore.models import Bundle

    try:
        sb = Bundle.from_json(bundle.raw)
    except Exception as e:  # noqa: BLE001 - any parse error of untrusted input is a failure
        raise VerificationFailure(f"invalid Sigstore bundle: {brief(e)}") from None
    try:
        payload_type, payload = verifier.verify_dsse(sb, pol)
    except Exception as e:  # noqa: BLE001 - VerificationError and malformed-bundle errors alike
        raise VerificationFailure(f"Sigstore verification failed: {brief(e)}") from None
    if payload_type != bundle.payload_type or payload != bundle.payload:
        raise VerificationFailure("verified payload differs from the envelope")
    return cert_signer(sb.signing_certificate)


def sigstore_verifier(trust: Trust) -> tuple[Any, Any]:
    """(sigstore Verifier, identity policy) for keyless bundles, offline; VerificationFailure without identities."""
    if not trust.identities:
        raise VerificationFailure("bundle is signed keyless, but no trusted identity was given (--identity/--issuer)")
    logging.getLogger("sigstore").setLevel(logging.ERROR)  # its offline-mode warning is not a failure
    from sigstore.errors import Error as SigstoreError
    from sigstore.models import ClientTrustConfig, TrustedRoot
    from sigstore.verify import Verifier, policy

    try:
        if trust.trusted_root is not None:
            raw = trust.trusted_root.read_text(encoding="utf-8")
            loads(raw, "trusted root")  # duplicate keys: refused before the protobuf reader sees it
            if '"signingConfig"' in raw:  # a ClientTrustConfig rather than a bare trusted root
                verifier = Verifier(trusted_root=ClientTrustConfig.from_json(raw).trusted_root)
            else:
                verifier = Verifier(trusted_root=TrustedRoot.from_file(str(trust.trusted_root)))
        elif trust.staging:
            verifier = Verifier.staging(offline=True)
        else:
            verifier = Verifier.production(offline=True)
    except (OSError, ValueError, SigstoreError) as e:
        raise VerificationFailure(f"cannot load the trusted root: {brief(e)}") from None
    ids = [policy.Identity(identity=i, issuer=iss) for i, iss in trust.identities]
    return verifier, ids[0] if len(ids) == 1 else policy.AnyOf(ids)  # a single policy gives the clearer reason


def cert_signer(cert: Any) -> str:
    """'<identity> (<issuer>)' as the signing certificate states them."""
    return f"{_san(cert) or '?'} ({_issuer(cert) or '?'})"


def _san(cert: Any) -> str | None:
    from cryptography import x509

    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    for v in (*san.get_values_for_type(x509.RFC822Name), *san.get_values_for_type(x509.UniformResourceIdentifier)):
        return str(v)
    return None


def _issuer(cert: Any) -> str | None:
    from cryptography import x509

    for oid in ("1.3.6.1.4.1.57264.1.8", "1.3.6.1.4.1.57264.1.1"):
        try:
            value = cert.extensions.get_extension_for_oid(x509.ObjectIdentifier(oid)).value.value
        except x509.ExtensionNotFound:
            continue
        text = value.decode("utf-8", "replace")
        return text[2:] if oid.endswith(".8") and len(text) > 2 and text[0] == "\x0c" else text
    return None


def verify_signature(raw: bytes, trust: Trust) -> tuple[ParsedBundle, str, dict[str, Any]]:
    """Signature, then payload type and statement type. Returns (bundle, signer, statement)."""
    try:
        bundle = parse_bundle(raw)
    except ValueError as e:
        raise VerificationFailure(str(e)) from None
    compat = False
    if bundle.keyless:
        signer = verify_keyless_signature(bundle, trust)
    elif bundle.hint is not None or "publicKey" in bundle.doc["verificationMaterial"]:
        signer, compat = verify_key_signature(bundle, trust)
    else:
        raise VerificationFailure("bundle carries neither a certificate nor a public-key hint")
    if bundle.payload_type != PAYLOAD_TYPE:
        raise VerificationFailure(f"payload type is {bundle.payload_type!r}, expected {PAYLOAD_TYPE}")
    try:
        statement = parse_statement(bundle.payload)
    except ValueError as e:
        raise VerificationFailure(str(e)) from None
    if compat and statement["predicateType"] not in (OMS_PREDICATE_TYPE, OMS_PREDICATE_TYPE_COMPAT):
        raise VerificationFailure("signature uses the legacy model-signing encoding, accepted for OMS only")
    return bundle, signer, statement


# -- what the statement says about the files ------------------------------------------------------------

@dataclass(frozen=True)
class Expected:
    kind: str
    files: dict[str, str]                  # name -> sha256
    ignore: Callable[[str], bool]          # paths the signer left out on purpose
    allow_symlinks: bool = False


def expected_files(statement: dict[str, Any], accept_types: Sequence[str] | None = None) -> Expected:
    """What the statement says the model is; VerificationFailure when it is malformed."""
    try:
        return _expected_files(statement, accept_types)
    except (AttributeError, KeyError, TypeError, ValueError) as e:  # signed but malformed: fail closed
        raise VerificationFailure(f"statement predicate is malformed: {type(e).__name__}") from None


def _expected_files(statement: dict[str, Any], accept_types: Sequence[str] | None) -> Expected:
    ptype = statement["predicateType"]
    if accept_types is not None and ptype not in accept_types:
        raise VerificationFailure(f"predicate type {ptype!r} is not accepted here")
    predicate = statement.get("predicate")
    if ptype == PREDICATE_TYPE:
        if not isinstance(predicate, dict):
            raise VerificationFailure("modelseal predicate is missing")
        patterns = _str_list(predicate.get("policy", {}).get("ignorePaths", []), "policy.ignorePaths")
        files = _subject_files(statement)
        md = predicate.get("model", {}).get("manifestDigest", {})
        want = md.get("sha256") if isinstance(md, dict) else None
        from scanner.attest.digest import sort_key

        if want != manifest_digest(files[n] for n in sorted(files, key=sort_key)):
            raise VerificationFailure("manifest digest does not match the statement's subjects")
        return Expected("modelseal", files, lambda rel: any(fnmatch.fnmatch(rel, p) for p in patterns))
    if ptype == OMS_PREDICATE_TYPE:
        return _oms_expected(statement, predicate)
    if ptype == OMS_PREDICATE_TYPE_COMPAT:
        return Expected("oms", _subject_files(statement), lambda rel: False)
    return Expected("in-toto", _subject_files(statement), lambda rel: False)


def _oms_expected(statement: dict[str, Any], predicate: Any) -> Expected:
    """Mirror model-signing's `dsse_payload_to_manifest`: files serialization, sha256, one subject
    whose digest is the hash over the listed resource digests."""
    if not isinstance(predicate, dict) or not isinstance(predicate.get("serialization"), dict):
        raise VerificationFailure("OMS predicate has no serialization")
    ser = predicate["serialization"]
    if ser.get("method") != "files" or ser.get("hash_type") != "sha256":
        raise VerificationFailure(f"OMS serialization {ser.get('method')}/{ser.get('hash_type')} is not supported "
                                  "(only files/sha256)")
    resources = predicate.get("resources")
    if not isinstance(resources, list):
        raise VerificationFailure("OMS predicate has no resources")
    files: dict[str, str] = {}
    for r in resources:
        if not (isinstance(r, dict) and r.get("algorithm") == "sha256" and isinstance(r.get("name"), str)
                and isinstance(r.get("digest"), str) and _is_sha256(r["digest"])):
            raise VerificationFailure("OMS resource entry is malformed")
        if r["name"] in files:
            raise VerificationFailure(f"OMS resource {r['name']!r} listed twice")
        files[r["name"]] = r["digest"].lower()
    subjects = statement["subject"]
    if len(subjects) != 1:
        raise VerificationFailure(f"OMS signature has {len(subjects)} subjects, expected one")
    if subjects[0]["digest"].get("sha256") != manifest_digest(r["digest"] for r in resources):
        raise VerificationFailure("OMS subject digest does not match its resources")
    ignore_paths = [str(PurePosixPath(p)) for p in _str_list(ser.get("ignore_paths", []), "ignore_paths")]
    allow_symlinks = ser.get("allow_symlinks") in (True, "true", "True")
    return Expected("oms", files, lambda rel: _under_any(rel, ignore_paths), allow_symlinks)


def _subject_files(statement: dict[str, Any]) -> dict[str, str]:
    files: dict[str, str] = {}
    for s in statement["subject"]:
        sha = s["digest"].get("sha256")
        if not isinstance(sha, str) or not _is_sha256(sha):
            raise VerificationFailure(f"subject {s.get('name')!r} has no sha256 digest")
        files[s.get("name", "")] = sha.lower()
    if not files:
        raise VerificationFailure("statement has no subjects")
    return files


def _str_list(value: Any, what: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
        raise VerificationFailure(f"{what} is malformed")
    return value


def _is_sha256(s: str) -> bool:
    return re.fullmatch(r"[0-9a-fA-F]{64}", s) is not None


def _under_any(rel: str, prefixes: Sequence[str]) -> bool:
    return any(rel == p or rel.startswith(p.rstrip("/") + "/") for p in prefixes)


# -- the bytes on disk ------------------------------------------------------------------------------

def check_files(path: Path, expected: Expected, req: Requirements, bundle_path: Path | None) -> dict[str, str]:
    """Hash what the statement names and compare; report extra files. Returns name -> sha256."""
    try:
        st = path.lstat()
    except OSError as e:
        raise VerificationFailure(f"cannot access {path}: {e.strerror or e}") from None
    if stat.S_ISLNK(st.st_mode) and not (req.allow_symlinks or expected.allow_symlinks):
        raise VerificationFailure(f"{path} is a symlink; not followed")
    if path.is_file():
        return _check_single(path, expected)
    if not path.is_dir():
        raise VerificationFailure(f"{path} is not a file or folder")
    allow_links = req.allow_symlinks or expected.allow_symlinks
    items: list[tuple[str, Path]] = []
    root_real = path.resolve()
    for name in sorted(expected.files):
        parts = PurePosixPath(name).parts
        if not name or PurePosixPath(name).is_absolute() or ".." in parts or name in (".", ""):
            raise VerificationFailure(f"subject name {name!r} is not a path inside the model")
        full = path.joinpath(*parts)
        try:
            fst = full.lstat()
        except FileNotFoundError:
            raise VerificationFailure(f"attested file {name} is missing") from None
        except OSError as e:
            raise VerificationFailure(f"cannot access {name}: {e.strerror or e}") from None
        if stat.S_ISLNK(fst.st_mode):
            target = Path(os.path.realpath(full))
            if not allow_links or root_real not in target.parents:
                raise VerificationFailure(f"{name} is a symlink; not followed")
            full = target
        elif not stat.S_ISREG(fst.st_mode):
            raise VerificationFailure(f"{name} is not a regular file")
        items.append((name, full))
    # the tree is listed even with --allow-extra: extra files may be accepted, symlinks never (a symlinked
    # subfolder would put foreign content into what a loader reads). Cheap (no hashing), so it runs first;
    # extras are reported after digests.
    own = _relative(bundle_path, path)
    user = [str(PurePosixPath(p)) for p in req.ignore]

    def ignored(rel: str) -> bool:
        return rel == own or expected.ignore(rel) or _under_any(rel, user)

    try:
        listed, _ = list_model(path, ignore=ignored, allow_symlinks=allow_links)
    except DigestError as e:
        raise VerificationFailure(str(e)) from None
    extras = [] if req.allow_extra else [n for n, _ in listed if n not in expected.files]
    try:
        digests = digest_files(items)
    except DigestError as e:
        raise VerificationFailure(str(e)) from None
    for d in digests:
        if d.sha256 != expected.files[d.name]:
            raise VerificationFailure(f"{d.name} was modified: sha256 {d.sha256[:16]}… is not the attested "
                                      f"{expected.files[d.name][:16]}…")
    if extras:
        more = f" (and {len(extras) - 1} more)" if len(extras) > 1 else ""
        raise VerificationFailure(f"unattested file {extras[0]}{more} (use --allow-extra to accept)")
    return {d.name: d.sha256 for d in digests}


def _check_single(path: Path, expected: Expected) -> dict[str, str]:
    (d,) = digest_files([(path.name, path)])
    return check_file_digest(path.name, d.sha256, expected)


def check_file_digest(name: str, sha256: str, expected: Expected, member: str | None = None) -> dict[str, str]:
    """A single file's digest against a statement: its one subject, or `member` of a folder's statement."""
    if member is not None:
        want = expected.files.get(member)
        if want is None:
            raise VerificationFailure(f"{member} is not covered by the attestation")
        if want != sha256:
            raise VerificationFailure(f"{member} was modified: sha256 {sha256[:16]}… is not the attested {want[:16]}…")
        return {member: sha256}
    if expected.kind in ("modelseal", "oms") and len(expected.files) != 1:
        raise VerificationFailure(f"the attestation covers {len(expected.files)} files; verify their folder")
    if sha256 not in expected.files.values():
        raise VerificationFailure(f"{name} was modified: sha256 {sha256[:16]}… matches no subject")
    return {name: sha256}


def _relative(p: Path | None, root: Path) -> str | None:
    if p is None:
        return None
    try:
        return Path(os.path.abspath(p)).relative_to(os.path.abspath(root)).as_posix()
    except ValueError:
        return None


# -- the scan's outcome -----------------------------------------------------------------------------

def parse_time(text: str) -> datetime:
    t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


def parse_duration(text: str) -> timedelta:
    """`30d`, `12h`, `45m`, `90s`, `2w`; ValueError otherwise."""
    m = re.fullmatch(r"\s*(\d+)\s*([smhdw])\s*", text)
    if not m:
        raise ValueError(f"bad duration {text!r} (use e.g. 30d, 12h, 45m)")
    unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}[m.group(2)]
    return timedelta(**{unit: int(m.group(1))})


def check_scan(statement: dict[str, Any], req: Requirements) -> tuple[str, str]:
    predicate = statement["predicate"]  # a dict: expected_files checked it
    verdict = predicate.get("verdict")
    if not isinstance(verdict, str):
        raise VerificationFailure("attestation records no verdict")
    if verdict not in req.allow_verdicts:
        raise VerificationFailure(f"scan verdict is {verdict}; allowed: {', '.join(sorted(req.allow_verdicts))}")
    finished = predicate.get("scanFinishedOn")
    try:
        when = parse_time(finished)
    except (TypeError, ValueError, AttributeError):
        raise VerificationFailure(f"attestation has no valid scanFinishedOn ({finished!r})") from None
    now = req.now or datetime.now(timezone.utc)
    if when > now + CLOCK_SKEW:
        raise VerificationFailure(f"scan time {finished} is in the future")
    if req.max_age is not None and now - when > req.max_age:
        raise VerificationFailure(f"scan is too old: {finished} is more than {req.max_age} ago")
    return verdict, finished


# -- the whole check ----------------------------------------------------------------------------------

def verify_bundle(path: Path, bundle_raw: bytes, trust: Trust, req: Requirements, *,
                  bundle_path: Path | None = None, accept_types: Sequence[str] | None = None) -> Verified:
    """Verify one bundle against the model at `path`; VerificationFailure with the first reason."""
    from scanner.attest.message import is_message_bundle, verify_message_bundle

    if is_message_bundle(bundle_raw):
        if accept_types is not None:
            raise VerificationFailure("bundle is a plain message signature, not an attestation of the accepted types")
        return verify_message_bundle(Path(path), bundle_raw, trust, req, bundle_path)
    _, signer, statement = verify_signature(bundle_raw, trust)
    expected = expected_files(statement, accept_types)
    digests = check_files(Path(path), expected, req, bundle_path)
    verdict = finished = None
    if expected.kind == "modelseal":
        verdict, finished = check_scan(statement, req)
    return Verified(bundle_path, expected.kind, signer, statement, tuple(sorted(digests)), verdict, finished,
                    digests)


def default_bundles(path: Path) -> list[Path]:
    """Where attest writes (and model-signing writes `model.sig`), in the order they are tried."""
    if path.is_dir():
        cands = [path / "modelseal.sigstore.json", path / "model.sig"]
    else:
        cands = [path.with_name(path.name + ".modelseal.sigstore.json"), path.with_name(path.name + ".sig")]
    return [c for c in cands if c.is_file()]


def verify_model(path: Path, bundles: Sequence[Path], trust: Trust, req: Requirements) -> list[Verified]:
    """Verify every bundle (default names when none given); all must hold."""
    bundles = list(bundles) or default_bundles(path)
    if not bundles:
        raise VerificationFailure(f"no attestation found next to {path} (pass --bundle)")
    out = []
    for b in bundles:
        try:
            raw = b.read_bytes()
        except OSError as e:
            raise VerificationFailure(f"cannot read bundle {b}: {e.strerror or e}") from None
        try:
            out.append(verify_bundle(path, raw, trust, req, bundle_path=b))
        except VerificationFailure as e:
            raise VerificationFailure(f"{b.name}: {e}" if len(bundles) > 1 else str(e)) from None
    return out


def model_from_verified(path: Path, v: Verified) -> ModelDigest:
    """The checked digests as a ModelDigest (the gate caches by its manifest digest)."""
    from scanner.attest.digest import FileDigest, sort_key

    files = tuple(FileDigest(n, Path(path) / n, -1, v.digests[n]) for n in sorted(v.digests, key=sort_key))
    return ModelDigest(Path(path), Path(path).is_file(), files)
