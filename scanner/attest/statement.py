"""The in-toto Statement v1 that records a scan (design §7), and its deterministic encoding."""

from __future__ import annotations

import os
from typing import Any

from scanner.attest.digest import ModelDigest
from scanner.findings import Report
from scanner.rules import Policy

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PAYLOAD_TYPE = "application/vnd.in-toto+json"
PREDICATE_TYPE = "https://modelseal.dev/attestation/model-scan/v1"
OMS_PREDICATE_TYPE = "https://model_signing/signature/v1.0"
OMS_PREDICATE_TYPE_COMPAT = "https://model_signing/Digests/v0.1"


def canonical_json(value: object) -> bytes:
    """RFC 8785 (JCS) bytes: what gets signed, so any verifier can re-derive them."""
    import rfc8785  # ships with sigstore

    return rfc8785.dumps(value)


def relative_name(model: ModelDigest, display: str) -> str:
    """The subject name of a file the engine reported under `display` (a path under the model root)."""
    if model.single_file:
        return model.root.name
    rel = os.path.relpath(os.path.abspath(display), os.path.abspath(model.root))
    return rel.replace(os.sep, "/")


def policy_dict(policy: Policy) -> dict[str, Any]:
    return {
        "failOn": policy.fail_on.value,
        "allowGlobals": sorted(policy.allow_globals),
        "denyGlobals": sorted(d.name for d in policy.deny_globals),
        "ignorePaths": list(policy.ignore_paths),
        "severityOverrides": {k: v.value for k, v in sorted(policy.severity_overrides.items())},
    }


def build_statement(model: ModelDigest, report: Report, policy: Policy) -> dict[str, Any]:
    """Subjects are the digested files; the predicate is the scan's outcome for exactly those bytes."""
    findings: list[dict[str, Any]] = []
    for fr, f in report.findings:
        findings.append({
            "path": relative_name(model, fr.path),
            "ruleId": f.rule_id,
            "severity": f.severity.value,
            "message": f.message,
            "location": {k: v for k, v in f.location.to_dict().items() if v is not None},
            **({"evidence": f.evidence} if f.evidence is not None else {}),
            **({"reference": f.reference} if f.reference is not None else {}),
        })
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": fd.name, "digest": {"sha256": fd.sha256}} for fd in model.files],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "scanner": {"name": "modelseal", "version": report.scanner_version,
                        "rulesDigest": report.rules_digest},
            "policy": policy_dict(policy),
            "verdict": report.verdict.value,
            "summary": report.summary(),
            "findings": findings,
            "model": {"manifestDigest": {"sha256": model.manifest_digest}},
            "scanStartedOn": report.started_on,
            "scanFinishedOn": report.finished_on,
        },
    }


def parse_statement(payload: bytes) -> dict[str, Any]:
    """Parse a signed payload into a statement dict; ValueError when it is not one."""
    from scanner.attest.strictjson import loads

    doc = loads(payload, "signed payload")  # StrictJSONError is a ValueError
    if not isinstance(doc, dict):
        raise ValueError("payload is not a JSON object")
    if doc.get("_type") != STATEMENT_TYPE:
        raise ValueError(f"payload is not an in-toto Statement v1 (_type {doc.get('_type')!r})")
    subjects = doc.get("subject")
    if not isinstance(subjects, list) or not all(_valid_subject(s) for s in subjects):
        raise ValueError("statement subjects are malformed")
    if not isinstance(doc.get("predicateType"), str):
        raise ValueError("statement has no predicateType")
    return doc


def _valid_subject(s: object) -> bool:
    return (isinstance(s, dict) and isinstance(s.get("name", ""), str) and isinstance(s.get("digest"), dict)
            and all(isinstance(k, str) and isinstance(v, str) for k, v in s["digest"].items()))
