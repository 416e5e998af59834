"""Signing a statement: offline with an EC key (cryptography + DSSE), or keyless with sigstore-python."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from scanner.attest.dsse import key_bundle, key_hint, pae

CURVES = {"p256": "secp256r1", "p384": "secp384r1"}
SUPPORTED_CURVES = frozenset({"secp256r1", "secp384r1", "secp521r1"})  # what model-signing accepts

_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z ]+)-----\r?\n.*?-----END \1-----", re.S)


class SignError(Exception):
    """Signing could not be done (bad key, wrong password, no identity token, network)."""


class Signer(Protocol):
    def sign(self, payload_type: str, payload: bytes) -> dict[str, Any]:
        """Return a Sigstore bundle (as a JSON object) whose DSSE envelope signs `payload`."""
        ...


def ec_hash(curve_bits: int) -> Any:
    """The digest paired with each curve (model-signing's `get_ec_key_hash`)."""
    from cryptography.hazmat.primitives import hashes

    return {256: hashes.SHA256(), 384: hashes.SHA384(), 521: hashes.SHA512()}[curve_bits]


def pem_blocks(data: bytes) -> list[bytes]:
    """PEM blocks in a file, skipping any text around them (some tools print the key info first)."""
    return [m.group(0) for m in _PEM_BLOCK.finditer(data)]


def load_public_key(data: bytes) -> Any:
    """An EC public key from PEM (a key, or the key of a certificate); ValueError otherwise."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    for block in pem_blocks(data) or [data]:
        try:
            if b"CERTIFICATE-----" in block[:40]:
                key = x509.load_pem_x509_certificate(block).public_key()
            else:
                key = serialization.load_pem_public_key(block)
        except ValueError:
            continue
        if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name not in SUPPORTED_CURVES:
            raise ValueError("only EC P-256, P-384 and P-521 public keys are supported")
        return key
    raise ValueError("no PEM public key found")


def spki_pem(public_key: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return public_key.public_bytes(serialization.Encoding.PEM,  # type: ignore[no-any-return]
                                   serialization.PublicFormat.SubjectPublicKeyInfo)


@dataclass(frozen=True)
class KeySigner:
    """Offline signing with an EC private key; the bundle names the key by `publicKey.hint`."""

    private_key: Any

    @classmethod
    def from_pem(cls, data: bytes, password: bytes | None = None) -> KeySigner:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec

        blocks = [b for b in pem_blocks(data) if b"PRIVATE KEY-----" in b[:40]] or [data]
        try:
            key = serialization.load_pem_private_key(blocks[0], password)
        except TypeError as e:  # password missing or given for an unencrypted key
            raise SignError(f"private key: {e}") from None
        except ValueError as e:
            raise SignError(f"cannot load private key (wrong password or not a PEM key): {e}") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name not in SUPPORTED_CURVES:
            raise SignError("only EC P-256, P-384 and P-521 private keys are supported")
        return cls(key)

    @property
    def hint(self) -> str:
        return key_hint(spki_pem(self.private_key.public_key()))

    def sign(self, payload_type: str, payload: bytes) -> dict[str, Any]:
        from cryptography.hazmat.primitives.asymmetric import ec

        sig = self.private_key.sign(pae(payload_type, payload), ec.ECDSA(ec_hash(self.private_key.curve.key_size)))
        return key_bundle(payload_type, payload, sig, self.hint)


@dataclass(frozen=True)
class KeylessSigner:
    """Sigstore keyless signing (Fulcio certificate + Rekor entry): needs the network and an OIDC token."""

    identity_token: str | None = None   # None: ambient credentials (CI), else an explicit token
    staging: bool = False

    def sign(self, payload_type: str, payload: bytes) -> dict[str, Any]:
        from sigstore.dsse import Statement
        from sigstore.models import ClientTrustConfig
        from sigstore.oidc import IdentityError, IdentityToken, detect_credential
        from sigstore.sign import SigningContext

        if payload_type != "application/vnd.in-toto+json":
            raise SignError("keyless signing only covers in-toto statements")
        try:
            raw = self.identity_token or detect_credential()
        except IdentityError as e:
            raise SignError(f"cannot get ambient credentials: {e}") from None
        if not raw:
            raise SignError("keyless signing needs an OIDC identity token (--identity-token or ambient CI credentials)")
        try:
            token = IdentityToken(raw)
            config = ClientTrustConfig.staging() if self.staging else ClientTrustConfig.production()
            ctx = SigningContext.from_trust_config(config)
            with ctx.signer(token, cache=True) as signer:
                bundle = signer.sign_dsse(Statement(payload))
        except Exception as e:  # noqa: BLE001 - network, OIDC and Sigstore errors all mean "not signed"
            raise SignError(f"keyless signing failed: {type(e).__name__}: {e}") from None
        return json.loads(bundle.to_json())  # type: ignore[no-any-return]


def generate_key(curve: str = "p256", password: bytes | None = None) -> tuple[bytes, bytes]:
    """A new EC key pair as (private PKCS#8 PEM, public SPKI PEM)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    curve_cls = {"p256": ec.SECP256R1, "p384": ec.SECP384R1}[curve]
    key = ec.generate_private_key(curve_cls())
    enc = (serialization.BestAvailableEncryption(password) if password
           else serialization.NoEncryption())
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc)
    return private, spki_pem(key.public_key())


def write_key_pair(private_path: Path, public_path: Path, curve: str, password: bytes | None) -> None:
    """Write the private key with owner-only permissions (created, never overwritten)."""
    import os

    private, public = generate_key(curve, password)
    for p in (private_path, public_path):
        if p.exists():
            raise FileExistsError(f"{p} exists; not overwritten")
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(private)
    public_path.write_bytes(public)
