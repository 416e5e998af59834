"""SARIF 2.1.0 report: one rule per rule id, results with levels, member locations and stable fingerprints."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from urllib.parse import quote

from scanner.findings import Finding, Report, Severity
from scanner.output.escape import escape
from scanner.rules import RuleSet, load_ruleset

SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
_LEVEL = {Severity.CRITICAL: "error", Severity.HIGH: "error", Severity.MEDIUM: "warning", Severity.LOW: "note",
          Severity.INFO: "none"}
_SCORE = {Severity.CRITICAL: "9.5", Severity.HIGH: "8.0", Severity.MEDIUM: "5.5", Severity.LOW: "3.0",
          Severity.INFO: "0.0"}


def _uri(path: str) -> str:
    # a valid URI reference: control, bidi and other unsafe characters of a file name percent-encoded
    p = Path(path)
    if p.is_absolute():
        return p.as_uri()
    return quote(p.as_posix(), safe="/!$&'()*+,;=:@-._~", errors="surrogateescape")


def _fingerprint(path: str, f: Finding) -> str:
    # stable across runs: no timestamps, no ordering; the same finding at the same place hashes the same
    key = "\0".join([path, f.rule_id, f.location.member or "", str(f.location.offset), f.evidence or f.message])
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def sarif_dict(report: Report, rules: RuleSet | None = None) -> dict[str, object]:
    rules = rules or load_ruleset()
    used = sorted({f.rule_id for _, f in report.findings} | set(rules.catalog))
    index = {rid: i for i, rid in enumerate(used)}
    rule_objs = []
    for rid in used:
        meta = rules.meta(rid)
        sev = meta.severity if meta else Severity.HIGH
        rule = {
            "id": rid,
            "name": "".join(part.capitalize() for part in rid.split("-")),
            "shortDescription": {"text": meta.title if meta else rid},
            "fullDescription": {"text": meta.help if meta else rid},
            "help": {"text": meta.help if meta else rid},
            "defaultConfiguration": {"level": _LEVEL[sev]},
            "properties": {"security-severity": _SCORE[sev], "tags": ["security", "ml-model"]},
        }
        if meta and meta.reference and meta.reference.startswith("http"):
            rule["helpUri"] = meta.reference
        rule_objs.append(rule)
    results = []
    for fr, f in report.findings:
        # shown to people by code-scanning UIs: escaped like every other human-facing output
        message = escape(f.message + (f" — evidence: {f.evidence}" if f.evidence else ""))
        physical: dict[str, object] = {"artifactLocation": {"uri": _uri(fr.path)}}
        if f.location.offset is not None and not f.location.member:
            physical["region"] = {"byteOffset": f.location.offset}
        location: dict[str, object] = {"physicalLocation": physical}
        if f.location.member:
            location["logicalLocations"] = [{"name": escape(f.location.member.rsplit("!", 1)[-1]),
                                             "fullyQualifiedName": escape(f"{fr.path}!{f.location.member}"),
                                             "kind": "member"}]
        props: dict[str, object] = {"severity": f.severity.value}
        if f.location.member:
            props["member"] = f.location.member
        if f.location.offset is not None:
            props["offset"] = f.location.offset
        if f.location.opcode_index is not None:
            props["opcodeIndex"] = f.location.opcode_index
        results.append({
            "ruleId": f.rule_id,
            "ruleIndex": index[f.rule_id],
            "level": _LEVEL[f.severity],
            "message": {"text": message},
            "locations": [location],
            "partialFingerprints": {"modelsealFinding/v1": _fingerprint(fr.path, f)},
            "properties": props,
        })
    return {
        "$schema": SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {"name": "modelseal", "version": report.scanner_version,
                                "informationUri": "https://modelseal.dev", "rules": rule_objs}},
            "results": results,
            "invocations": [{"executionSuccessful": not report.has_errors(),
                             "startTimeUtc": report.started_on, "endTimeUtc": report.finished_on}],
            "properties": {"verdict": report.verdict.value, "rulesDigest": report.rules_digest},
        }],
    }


def render(report: Report, rules: RuleSet | None = None) -> str:
    return json.dumps(sarif_dict(report, rules), indent=2) + "\n"
