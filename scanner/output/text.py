"""Human-readable report: one block per file with findings, each with its evidence and location."""

from __future__ import annotations

from scanner.findings import Report, Severity, Verdict
from scanner.output.escape import escape

_COLORS = {Severity.CRITICAL: "\x1b[1;31m", Severity.HIGH: "\x1b[31m", Severity.MEDIUM: "\x1b[33m",
           Severity.LOW: "\x1b[36m", Severity.INFO: "\x1b[2m"}
_VERDICT_COLORS = {Verdict.MALICIOUS: "\x1b[1;31m", Verdict.SUSPICIOUS: "\x1b[33m", Verdict.ERROR: "\x1b[35m",
                   Verdict.CLEAN: "\x1b[32m"}
_RESET = "\x1b[0m"


def render(report: Report, color: bool = False, show_info: bool = False) -> str:
    def paint(text: str, code: str) -> str:
        return f"{code}{text}{_RESET}" if color else text

    lines: list[str] = []
    for fr in report.files:
        shown = [f for f in fr.findings if show_info or f.severity != Severity.INFO]
        head = f"{paint(fr.verdict.value.upper(), _VERDICT_COLORS[fr.verdict])}  {escape(fr.path)}  [{fr.format}]"
        if fr.error:
            head += f"  error: {escape(fr.error)}"
        lines.append(head)
        for f in sorted(shown, key=lambda f: -f.severity.rank):
            where = f.location.describe()
            lines.append(f"  {paint(f.severity.value.upper(), _COLORS[f.severity]):<8} {f.rule_id}: {escape(f.message)}")
            if where:
                lines.append(f"           at {escape(where)}")
            if f.evidence:
                lines.append(f"           evidence: {escape(f.evidence)}")
            if f.reference:
                lines.append(f"           ref: {escape(f.reference)}")
    s = report.summary()
    counts = ", ".join(f"{s['findings_' + sev.value]} {sev.value}" for sev in Severity if s["findings_" + sev.value])
    lines.append("")
    lines.append(f"{s['files']} file(s) scanned: {s['files_malicious']} malicious, {s['files_suspicious']} suspicious, "
                 f"{s['files_error']} error, {s['files_clean']} clean" + (f"; findings: {counts}" if counts else ""))
    lines.append(f"verdict: {paint(report.verdict.value, _VERDICT_COLORS[report.verdict])} "
                 f"(fail-on {report.fail_on.value}, exit {report.exit_code()})")
    return "\n".join(lines) + "\n"
