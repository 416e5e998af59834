"""One self-contained HTML page for an Explanation, to attach to a ticket.

No external assets and no script. Every string from the scanned file is escaped (`html.escape` with quotes)
after control characters are made visible, and a Content-Security-Policy forbids scripts and any fetch,
so even a mistake in escaping could not run code or call out.
"""

from __future__ import annotations

import html

from scanner import __version__
from scanner.explain.collect import Block, Explanation, FileView, FindingView
from scanner.explain.textsafe import printable

_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'"

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;margin:2rem;color:#1b1f24;background:#fff}
h1{font-size:1.4rem;margin:0 0 .3rem} h2{font-size:1.15rem;margin:2rem 0 .5rem;word-break:break-all}
.meta{color:#57606a} .sum{margin:.5rem 0 1.5rem}
.badge{display:inline-block;padding:.05rem .45rem;border-radius:.3rem;font-weight:600;font-size:.8rem;
color:#fff;margin-right:.4rem}
.critical,.malicious{background:#a40e26}.high{background:#cf222e}.medium,.suspicious{background:#9a6700}
.low{background:#0969da}.info{background:#6e7781}.clean{background:#1a7f37}.error{background:#8250df}
.finding{border:1px solid #d0d7de;border-left-width:6px;border-radius:.4rem;padding:.6rem 1rem;margin:.8rem 0}
.finding.sev-critical{border-left-color:#a40e26}.finding.sev-high{border-left-color:#cf222e}
.finding.sev-medium{border-left-color:#9a6700}.finding.sev-low{border-left-color:#0969da}
.finding.sev-info{border-left-color:#6e7781}
.rule{font-family:ui-monospace,monospace;font-weight:700} .msg{font-weight:600;margin:.3rem 0}
dl{display:grid;grid-template-columns:max-content auto;gap:.15rem .8rem;margin:.3rem 0}
dt{color:#57606a} dd{margin:0;word-break:break-all}
pre{background:#f6f8fa;padding:.6rem;border-radius:.3rem;overflow-x:auto;font-size:12.5px;white-space:pre-wrap;
word-break:break-all}
span.mark{background:#fff8c5;font-weight:700;display:block}
table{border-collapse:collapse;font-size:12.5px;margin:.3rem 0;font-family:ui-monospace,monospace}
th,td{border:1px solid #d0d7de;padding:.15rem .45rem;text-align:left;vertical-align:top;overflow-wrap:anywhere}
th{background:#f6f8fa} tr.mark td{background:#fff8c5;font-weight:700}
.block-title{font-weight:600;margin-top:.7rem} .note{color:#57606a}
footer{margin-top:3rem;color:#57606a;font-size:.8rem}
"""


def _e(text: object, *, newlines: bool = False) -> str:
    return html.escape(printable(str(text), keep_newlines=newlines), quote=True)


def render(explanation: Explanation, *, show_info: bool = True) -> str:
    report = explanation.report
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">',
        '<meta name="referrer" content="no-referrer">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>modelseal explain: {_e(', '.join(f.report.path for f in explanation.files))[:300]}</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>modelseal triage report</h1>",
        f'<div class="meta">modelseal {_e(__version__)} · rules {_e(report.rules_digest)} · '
        f"scanned {_e(report.started_on)}</div>",
        f'<div class="sum"><span class="badge {_e(report.verdict.value)}">{_e(report.verdict.value.upper())}'
        f"</span> fail-on {_e(report.fail_on.value)}, exit code {report.exit_code()}</div>",
    ]
    for fv in explanation.files:
        parts.append(_file(fv, show_info))
    parts.append("<footer>Static analysis only: nothing in the scanned file was executed, imported or "
                 "deserialized to produce this page. All file content is shown escaped.</footer>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _file(fv: FileView, show_info: bool) -> str:
    fr = fv.report
    out = [f'<section class="file"><h2><span class="badge {_e(fr.verdict.value)}">{_e(fr.verdict.value.upper())}'
           f"</span>{_e(fr.path)}</h2>",
           "<dl>", f"<dt>format</dt><dd>{_e(fr.format)}</dd>",
           f"<dt>size</dt><dd>{_e(fr.size if fr.size is not None else '?')} bytes</dd>"]
    if fr.sha256:
        out.append(f"<dt>sha256</dt><dd>{_e(fr.sha256)}</dd>")
    if fr.error:
        out.append(f"<dt>error</dt><dd>{_e(fr.error)}</dd>")
    out.append("</dl>")
    shown = [v for v in fv.findings if show_info or v.finding.severity.value != "info"]
    out.append(f"<h3>Findings ({len(shown)})</h3>")
    if not shown:
        out.append('<p class="note">No findings.</p>')
    for view in shown:
        out.append(_finding(view))
    if fv.blocks:
        out.append("<h3>File context</h3>")
        for block in fv.blocks:
            out.append(_block(block, open_=False))
    out.append("</section>")
    return "\n".join(out)


def _finding(view: FindingView) -> str:
    f = view.finding
    sev = _e(f.severity.value)
    out = [f'<div class="finding sev-{sev}">',
           f'<div><span class="badge {sev}">{_e(f.severity.value.upper())}</span>'
           f'<span class="rule">{_e(f.rule_id)}</span></div>',
           f'<div class="msg">{_e(f.message)}</div>', "<dl>"]
    where = f.location.describe()
    if where:
        out.append(f"<dt>location</dt><dd>{_e(where)}</dd>")
    out.append(f"<dt>rule</dt><dd>{_e(view.title)}</dd>")
    if view.help and view.help != view.title:
        out.append(f"<dt>why</dt><dd>{_e(view.help)}</dd>")
    if f.reference:
        out.append(f"<dt>reference</dt><dd>{_e(f.reference)}</dd>")
    if f.evidence:
        out.append(f"<dt>evidence</dt><dd><code>{_e(f.evidence)}</code></dd>")
    out.append("</dl>")
    for block in view.blocks:
        out.append(_block(block, open_=True))
    out.append("</div>")
    return "\n".join(out)


def _block(block: Block, *, open_: bool) -> str:
    title = f'<div class="block-title">{_e(block.title)}</div>'
    if block.kind == "table":
        head = "".join(f"<th>{_e(c)}</th>" for c in block.columns)
        rows = []
        for i, row in enumerate(block.rows):
            cls = ' class="mark"' if i in block.marked else ""
            rows.append(f"<tr{cls}>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>")
        body = f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    elif block.kind == "code":
        lines = []
        for i, line in enumerate(block.text.splitlines()):
            text = _e(line)
            lines.append(f'<span class="mark">{text}</span>' if i in block.marked else text + "\n")
        body = f"<pre>{''.join(lines)}</pre>"
    else:
        return f'<p><span class="block-title">{_e(block.title)}:</span> <span class="note">{_e(block.text)}</span></p>'
    if open_ or len(block.rows) + block.text.count("\n") < 40:
        return title + body
    return f"<details><summary>{_e(block.title)}</summary>{body}</details>"
