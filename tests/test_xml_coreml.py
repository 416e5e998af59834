"""XML models (PMML) and Core ML package manifests: judged as their loaders read them."""

from __future__ import annotations

from conftest import FIXTURES, rule_ids, scan_data
from scanner.findings import Severity

LOGREG = (FIXTURES / "benign" / "pmml" / "logreg.pmml").read_bytes()


def _with_doctype(doctype: bytes) -> bytes:
    head, body = LOGREG.split(b"\n", 1)
    return head + b"\n" + doctype + b"\n" + body


def test_external_entity_found_under_any_name() -> None:
    data = _with_doctype(b'<!DOCTYPE PMML [<!ENTITY x SYSTEM "file:///etc/passwd">]>')
    for name in ("model.pmml", "model.xml", "notes.txt", "weights.bin"):
        _, findings = scan_data(data, name)
        hits = [f for f in findings if f.rule_id == "XML-EXTERNAL-ENTITY"]
        assert hits and hits[0].severity is Severity.HIGH, name


def test_parameter_and_public_entities_and_lowercase_are_found() -> None:
    for decl in (b'<!DOCTYPE PMML [<!ENTITY % p SYSTEM "http://x.invalid/a.dtd"> %p;]>',
                 b'<!DOCTYPE PMML [<!ENTITY x PUBLIC "-//X//Y" "http://x.invalid/y">]>',
                 b'<!doctype PMML [<!entity x system "file:///etc/hostname">]>'):
        _, findings = scan_data(_with_doctype(decl), "m.pmml")
        assert "XML-EXTERNAL-ENTITY" in rule_ids(findings), decl


def test_plain_internal_entity_and_no_doctype_are_clean() -> None:
    _, findings = scan_data(_with_doctype(b'<!DOCTYPE PMML [<!ENTITY author "ACME">]>'), "m.pmml")
    assert all(f.severity <= Severity.INFO for f in findings)
    _, findings = scan_data(LOGREG, "m.pmml")
    assert all(f.severity <= Severity.INFO for f in findings)


def test_unclosed_doctype_is_reported_not_clean() -> None:
    _, findings = scan_data(_with_doctype(b'<!DOCTYPE PMML [<!ENTITY a "x">'), "m.pmml")
    assert any(f.rule_id == "XML-DOCTYPE" and f.severity >= Severity.MEDIUM for f in findings)


def test_coreml_manifest_paths_are_checked_like_the_loader_joins_them() -> None:
    import json

    doc = json.loads((FIXTURES / "benign" / "coreml" / "relu.mlpackage" / "Manifest.json").read_text())
    root = doc["rootModelIdentifier"]
    for path, bad in (("com.apple.CoreML/model.mlmodel", False), ("/etc/passwd", True),
                      ("com.apple.CoreML/../../../x.mlmodel", True), ("..\\..\\x.mlmodel", True)):
        doc["itemInfoEntries"][root]["path"] = path
        _, findings = scan_data(json.dumps(doc).encode(), "Manifest.json")
        assert ("COREML-MANIFEST-PATH" in rule_ids(findings)) is bad, path
    doc["rootModelIdentifier"] = "missing"
    _, findings = scan_data(json.dumps(doc).encode(), "Manifest.json")
    assert "COREML-MANIFEST-MALFORMED" in rule_ids(findings)


def test_other_manifest_json_files_are_not_core_ml_manifests() -> None:
    _, findings = scan_data(b'{"files": ["a.bin"], "version": 1}', "manifest.json")
    assert not {"COREML-MANIFEST-MALFORMED", "COREML-MANIFEST-PATH"} & rule_ids(findings)
    _, findings = scan_data(b'{"rootModelIdentifier": "x", "itemInfoEntries": []}', "Manifest.json")
    assert "COREML-MANIFEST-MALFORMED" in rule_ids(findings)
