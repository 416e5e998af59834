"""Plain Sigstore message signatures: a bundle whose `messageSignature` signs one artifact's digest, no DSSE
(`sigstore sign FILE`, `cosign sign-blob --bundle`). Keyless ones go through sigstore-python's
`Verifier.verify_artifact`; key-signed ones are ECDSA over the artifact's bytes (prehashed with the
bundle's `messageDigest` algorithm), checked here with `cryptography` because sigstore-python has no key mode."""

from __future__ import annotations

import base64
import binascii
import hashlib
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scanner.attest.verify import (
    Requirements,
    Trust,
    VerificationFailure,
    Verified,
    cert_signer,
    load_trusted_keys,
    sigstore_verifier,
)

# messageDigest.algorithm (sigstore protobuf HashAlgorithm) -> hashlib name
HASHES = {"SHA2_256": "sha256", "SHA2_384": "sha384", "SHA2_512": "sha512"}
CHUNK = 1 << 20
PAE_PREFIXES = (b"DSSEv1 ", b"DSSEV1 ")  # scanner/attest/dsse.py pae, pae_compat


@dataclass(frozen=True)
class MessageBundle:
    raw: bytes
    signature: bytes
    algorithm: str | None         # hashlib name from messageDigest, None when the bundle names none
    digest: bytes | None          # messageDigest.digest
    hint: str | None
    keyless: bool
    has_key: bool


def is_message_bundle(raw: bytes) -> bool:
    """True for a bundle with a message signature and no DSSE envelope."""
    from scanner.attest.strictjson import StrictJSONError, loads

    try:
        doc = loads(raw, "bundle")
    except StrictJSONError:
        return False  # then parsed as a DSSE bundle, which reports why
    return isinstance(doc, dict) and "messageSignature" in doc and "dsseEnvelope" not in doc


def parse_message_bundle(raw: bytes) -> MessageBundle:
    from scanner.attest.dsse import ACCEPTED_BUNDLE_MEDIA_TYPES
    from scanner.attest.strictjson import StrictJSONError, loads

    try:
        doc = loads(raw, "bundle")
    except StrictJSONError as e:
        raise VerificationFailure(str(e)) from None
    media = doc.get("mediaType")
    if media not in ACCEPTED_BUNDLE_MEDIA_TYPES:
        raise VerificationFailure(f"unsupported bundle mediaType {media!r}")
    ms, vm = doc.get("messageSignature"), doc.get("verificationMaterial")
    if not isinstance(ms, dict) or not isinstance(vm, dict):
        raise VerificationFailure("message-signature bundle is malformed")
    md = ms.get("messageDigest")
    algorithm = digest = None
    try:
        signature = base64.b64decode(ms.get("signature", ""), validate=True)
        if md is not None:
            if not isinstance(md, dict) or md.get("algorithm") not in HASHES:
                raise VerificationFailure(f"message digest algorithm {md.get('algorithm') if isinstance(md, dict) else md!r}"
                                          " is not supported")
            algorithm, digest = HASHES[md["algorithm"]], base64.b64decode(md.get("digest", ""), validate=True)
    except (binascii.Error, TypeError, ValueError):
        raise VerificationFailure("message signature or digest is not valid base64") from None
    if not signature:
        raise VerificationFailure("message-signature bundle has no signature")
    pk = vm.get("publicKey")
    hint = pk.get("hint") if isinstance(pk, dict) else None
    return MessageBundle(raw, signature, algorithm, digest, hint if isinstance(hint, str) else None,
                         "certificate" in vm or "x509CertificateChain" in vm, isinstance(pk, dict))


def verify_message_bundle(path: Path, raw: bytes, trust: Trust, req: Requirements,
                          bundle_path: Path | None = None) -> Verified:
    """Verify a message signature over the single file at `path`; VerificationFailure with the first reason."""
    bundle = parse_message_bundle(raw)
    _check_is_file(path, req)
    if bundle.keyless:
        digests = _hash_file(path, ["sha256"])
        signer = _verify_keyless(bundle, path, digests["sha256"], trust)
    elif bundle.has_key:
        from scanner.attest.sign import ec_hash

        # Domain separation: a key-signed message bundle has no log entry saying what kind of thing was
        # signed, and the same key may sign DSSE envelopes: a file holding an envelope's PAE bytes would
        # "verify" as a message the key never signed. So only when the caller asks for an artifact signature,
        # and never over bytes that are a DSSE pre-authentication encoding.
        if not req.artifact_signature:
            raise VerificationFailure("bundle is a plain message signature made with a key, not an attestation; "
                                      "accept it only as such with --artifact-signature")
        _refuse_pae(path)
        keys = load_trusted_keys(trust)
        if not keys:
            raise VerificationFailure("bundle is signed with a key, but no trusted public key was given (--key)")
        algorithms = {bundle.algorithm} if bundle.algorithm else {ec_hash(k.curve.key_size).name for k, _ in keys}
        digests = _hash_file(path, sorted(algorithms | {"sha256"}))
        if bundle.algorithm and bundle.digest != digests[bundle.algorithm]:
            raise _modified(path, bundle.algorithm, digests[bundle.algorithm], bundle.digest)
        signer = _verify_key(bundle, digests, keys)
    else:
        raise VerificationFailure("bundle carries neither a certificate nor a public key")
    sha = digests["sha256"].hex()
    return Verified(bundle_path, "message", signer, {}, (path.name,), digests={path.name: sha})


def _refuse_pae(path: Path) -> None:
    try:
        with path.open("rb") as f:
            head = f.read(len(PAE_PREFIXES[0]))
    except OSError as e:
        raise VerificationFailure(f"cannot read {path}: {e.strerror or e}") from None
    if head in PAE_PREFIXES:
        raise VerificationFailure(f"{path.name} holds a DSSE pre-authentication encoding: a signature over it "
                                  "is an envelope's signature, not a signature of this file")


def _check_is_file(path: Path, req: Requirements) -> None:
    try:
        st = path.lstat()
    except OSError as e:
        raise VerificationFailure(f"cannot access {path}: {e.strerror or e}") from None
    if stat.S_ISLNK(st.st_mode):
        if not req.allow_symlinks:
            raise VerificationFailure(f"{path} is a symlink; not followed")
        st = path.stat()
    if stat.S_ISDIR(st.st_mode):
        raise VerificationFailure(f"{path} is a folder, but a message-signature bundle signs exactly one file; "
                                  "give that file")
    if not stat.S_ISREG(st.st_mode):
        raise VerificationFailure(f"{path} is not a regular file")


def _hash_file(path: Path, algorithms: list[str]) -> dict[str, bytes]:
    hs = {a: hashlib.new(a) for a in algorithms}
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    try:
        with path.open("rb") as f:
            while n := f.readinto(buf):
                for h in hs.values():
                    h.update(view[:n])
    except OSError as e:
        raise VerificationFailure(f"cannot read {path}: {e.strerror or e}") from None
    return {a: h.digest() for a, h in hs.items()}


def _modified(path: Path, algorithm: str, have: bytes, signed: bytes | None) -> VerificationFailure:
    want = f"the signed {signed.hex()[:16]}…" if signed else "what was signed"
    return VerificationFailure(f"{path.name} was modified: {algorithm} {have.hex()[:16]}… is not {want}")


def _verify_keyless(bundle: MessageBundle, path: Path, sha256: bytes, trust: Trust) -> str:
    verifier, pol = sigstore_verifier(trust)
    from sigstore.hashes import Hashed
    from sigstore.models import Bundle
    from sigstore_models.common.v1 import HashAlgorithm

    from scanner.attest.strictjson import brief

    try:
        sb = Bundle.from_json(bundle.raw)
    except Exception as e:  # noqa: BLE001 - any parse error of untrusted input is a failure
        raise VerificationFailure(f"invalid Sigstore bundle: {brief(e)}") from None
    try:
        verifier.verify_artifact(Hashed(algorithm=HashAlgorithm.SHA2_256, digest=sha256), sb, pol)
    except Exception as e:  # noqa: BLE001 - VerificationError and malformed-bundle errors alike
        # the certificate and identity are checked first; a digest mismatch after them means the file changed
        if bundle.algorithm == "sha256" and bundle.digest != sha256 and "digest mismatch" in str(e):
            raise _modified(path, "sha256", sha256, bundle.digest) from None
        raise VerificationFailure(f"Sigstore verification failed: {brief(e)}") from None
    return cert_signer(sb.signing_certificate)


def _verify_key(bundle: MessageBundle, digests: dict[str, bytes], keys: list[tuple[Any, str]]) -> str:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

    from scanner.attest.sign import ec_hash

    # the hint names the key when it is ours (hex sha256 of the SPKI PEM); other tools' hints only narrow nothing
    candidates = [(k, h) for k, h in keys if bundle.hint == h] or keys
    for key, hint in candidates:
        algorithm = bundle.algorithm or ec_hash(key.curve.key_size).name
        algo = {"sha256": hashes.SHA256, "sha384": hashes.SHA384, "sha512": hashes.SHA512}[algorithm]()
        try:
            key.verify(bundle.signature, digests[algorithm], ec.ECDSA(Prehashed(algo)))
        except InvalidSignature:
            continue
        return f"key {hint[:16]}"
    if bundle.digest is None:
        raise VerificationFailure("signature does not verify with the trusted key(s) over this file "
                                  "(the file may have been modified)")
    raise VerificationFailure("signature does not verify with the trusted key(s)")
