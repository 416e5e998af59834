"""JSON report (schema documented in docs/json-schema.md; bump SCHEMA on any breaking change)."""

from __future__ import annotations

import json

from scanner.findings import Report

SCHEMA = "https://modelseal.dev/schemas/report/v1"


def report_dict(report: Report) -> dict[str, object]:
    return {
        "schema": SCHEMA,
        "scanner": {"name": "modelseal", "version": report.scanner_version, "rules_digest": report.rules_digest},
        "fail_on": report.fail_on.value,
        "verdict": report.verdict.value,
        "exit_code": report.exit_code(),
        "started_on": report.started_on,
        "finished_on": report.finished_on,
        "summary": report.summary(),
        "files": [fr.to_dict() for fr in report.files],
    }


def render(report: Report) -> str:
    return json.dumps(report_dict(report), indent=2, sort_keys=False) + "\n"
