"""One line per finding, for hooks and editors: `path[!member]: SEVERITY RULE-ID message [evidence]`.

Clean files print nothing; a summary line follows only when something was printed. Every field is
escaped to one printable line: file and member names come from the scanned tree and must not be able to
forge lines or send terminal control sequences.
"""

from __future__ import annotations

from scanner.findings import FileReport, Finding, Report, Severity
from scanner.output.escape import escape


def one_line(text: str) -> str:
    """Escape control and format characters (newlines, ESC, bidi, ...) so a field can never span or fake lines."""
    return escape(text)


def finding_line(fr: FileReport, f: Finding) -> str:
    where = fr.path + (f"!{f.location.member}" if f.location.member else "")
    line = f"{one_line(where)}: {f.severity.value.upper()} {f.rule_id} {one_line(f.message)}"
    if f.evidence:
        line += f" [{one_line(f.evidence)}]"
    return line


def file_lines(fr: FileReport, show_info: bool = False) -> list[str]:
    """The lines of one file: its error (if it could not be scanned) and its findings, worst first."""
    lines = []
    if fr.error:
        lines.append(f"{one_line(fr.path)}: ERROR SCAN-ERROR {one_line(fr.error)}")
    shown = [f for f in fr.findings if show_info or f.severity is not Severity.INFO]
    for f in sorted(shown, key=lambda f: -f.severity.rank):
        lines.append(finding_line(fr, f))
    return lines


def summary_line(report: Report, printed: int) -> str:
    s = report.summary()
    counts = ", ".join(f"{s['findings_' + sev.value]} {sev.value}" for sev in Severity
                       if s["findings_" + sev.value] and (sev is not Severity.INFO))
    flagged = sum(1 for fr in report.files if fr.error or any(f.severity is not Severity.INFO for f in fr.findings))
    return (f"modelseal: {printed} line(s) for {flagged} of {s['files']} file(s)"
            + (f" ({counts})" if counts else "")
            + f"; verdict {report.verdict.value}, fail-on {report.fail_on.value}, exit {report.exit_code()}")


def render(report: Report, show_info: bool = False) -> str:
    lines = [line for fr in report.files for line in file_lines(fr, show_info)]
    if not lines:
        return ""
    lines.append(summary_line(report, len(lines)))
    return "\n".join(lines) + "\n"
