"""DSSE envelopes (https://github.com/secure-systems-lab/dsse/blob/v1.0.0/protocol.md) and the Sigstore
bundle v0.3 JSON that carries them, for the offline key mode sigstore-python does not offer."""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass
from typing import Any

BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
ACCEPTED_BUNDLE_MEDIA_TYPES = frozenset({
    "application/vnd.dev.sigstore.bundle+json;version=0.2",
    "application/vnd.dev.sigstore.bundle+json;version=0.3",
    BUNDLE_MEDIA_TYPE,
})


def pae(payload_type: str, payload: bytes) -> bytes:
    """Pre-authentication encoding: what a DSSE signature actually covers (lengths in bytes)."""
    t = payload_type.encode("utf-8")
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(payload), payload)


def pae_compat(payload_type: str, payload: bytes) -> bytes:
    """model-signing before 1.0 signed `f"DSSEV1 ... {payload}"` with the bytes' repr inside
    (model_signing/_signing/sign_sigstore_pb.py `pae_compat`); accepted for their key signatures only."""
    return f"DSSEV1 {len(payload_type)} {payload_type} {len(payload)} {payload!r}".encode()


def key_hint(spki_pem: bytes) -> str:
    """`publicKey.hint` as model-signing writes it: hex sha256 of the SubjectPublicKeyInfo PEM."""
    return hashlib.sha256(spki_pem).hexdigest()


def key_bundle(payload_type: str, payload: bytes, signature: bytes, hint: str) -> dict[str, Any]:
    """A bundle v0.3 with a public-key hint and no log entry: the shape of `model_signing sign key`."""
    return {
        "mediaType": BUNDLE_MEDIA_TYPE,
        "verificationMaterial": {"publicKey": {"hint": hint}, "tlogEntries": []},
        "dsseEnvelope": {
            "payload": base64.b64encode(payload).decode("ascii"),
            "payloadType": payload_type,
            "signatures": [{"sig": base64.b64encode(signature).decode("ascii"), "keyid": ""}],
        },
    }


@dataclass(frozen=True)
class ParsedBundle:
    raw: bytes
    doc: dict[str, Any]
    payload_type: str
    payload: bytes
    signatures: tuple[bytes, ...]
    hint: str | None        # publicKey.hint when signed with a plain key
    keyless: bool           # carries a certificate (sigstore keyless)


def parse_bundle(raw: bytes) -> ParsedBundle:
    """Structural parse of a DSSE bundle; ValueError with the reason when it is not one."""
    from scanner.attest.strictjson import loads

    doc = loads(raw, "bundle")  # StrictJSONError is a ValueError
    if not isinstance(doc, dict):
        raise ValueError("bundle is not a JSON object")
    media = doc.get("mediaType")
    if media not in ACCEPTED_BUNDLE_MEDIA_TYPES:
        raise ValueError(f"unsupported bundle mediaType {media!r}")
    env = doc.get("dsseEnvelope")
    if not isinstance(env, dict):
        raise ValueError("bundle has no DSSE envelope (a plain message signature is not an attestation)")
    vm = doc.get("verificationMaterial")
    if not isinstance(vm, dict):
        raise ValueError("bundle has no verificationMaterial")
    sigs = env.get("signatures")
    if not isinstance(sigs, list) or not sigs or not all(isinstance(s, dict) for s in sigs):
        raise ValueError("DSSE envelope has no signatures")
    try:
        payload = base64.b64decode(env.get("payload", ""), validate=True)
        signatures = tuple(base64.b64decode(s.get("sig", ""), validate=True) for s in sigs)
    except (binascii.Error, TypeError, ValueError):
        raise ValueError("DSSE envelope payload or signature is not valid base64") from None
    payload_type = env.get("payloadType")
    if not isinstance(payload_type, str):
        raise ValueError("DSSE envelope has no payloadType")
    pk = vm.get("publicKey")
    hint = pk.get("hint") if isinstance(pk, dict) else None
    keyless = "certificate" in vm or "x509CertificateChain" in vm
    return ParsedBundle(raw, doc, payload_type, payload, signatures, hint if isinstance(hint, str) else None,
                        keyless)
