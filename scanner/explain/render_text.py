"""Terminal rendering of an Explanation with `rich` (imported here only).

Attacker-controlled strings never go through rich's markup parser (only `Text` objects) and are passed
through `printable` first, so a member name or pickle string cannot move the cursor, recolour the
terminal or reorder text with bidi controls.
"""

from __future__ import annotations

import io

from scanner.explain.collect import Block, Explanation, FileView, FindingView
from scanner.explain.textsafe import printable
from scanner.findings import Severity, Verdict

_SEV_STYLE = {Severity.CRITICAL: "bold white on red", Severity.HIGH: "bold red", Severity.MEDIUM: "yellow",
              Severity.LOW: "cyan", Severity.INFO: "dim"}
_VERDICT_STYLE = {Verdict.MALICIOUS: "bold white on red", Verdict.SUSPICIOUS: "bold yellow",
                  Verdict.ERROR: "bold magenta", Verdict.CLEAN: "bold green"}


def render(explanation: Explanation, *, color: bool = False, width: int = 120, show_info: bool = False) -> str:
    from rich.console import Console, Group
    from rich.panel import Panel
    from rich.text import Text

    buf = io.StringIO()
    console = Console(file=buf, width=width, force_terminal=color, no_color=not color, highlight=False,
                      emoji=False, markup=False, color_system="standard" if color else None)
    for fv in explanation.files:
        console.print(_file_header(fv))
        shown = [v for v in fv.findings if show_info or v.finding.severity != Severity.INFO]
        if not shown:
            console.print(Text("  no findings above info", style="green"))
        for view in shown:
            console.print(Panel(Group(*_finding_body(view)), title=_finding_title(view), title_align="left",
                                border_style=_SEV_STYLE[view.finding.severity]))
        if fv.blocks:
            console.print(Text("File context", style="bold underline"))
            for block in fv.blocks:
                console.print(_block(block))
        console.print()
    report = explanation.report
    console.print(Text(f"verdict: {report.verdict.value} (fail-on {report.fail_on.value}, "
                       f"exit {report.exit_code()})", style=_VERDICT_STYLE[report.verdict]))
    return buf.getvalue()


def _file_header(fv: FileView) -> object:
    from rich.text import Text

    fr = fv.report
    t = Text()
    t.append(f" {fr.verdict.value.upper()} ", style=_VERDICT_STYLE[fr.verdict])
    t.append(f"  {printable(fr.path)}", style="bold")
    t.append(f"  [{fr.format}]  {fr.size if fr.size is not None else '?'} bytes")
    if fr.sha256:
        t.append(f"  sha256 {fr.sha256}", style="dim")
    if fr.error:
        t.append(f"  error: {printable(fr.error)}", style="magenta")
    return t


def _finding_title(view: FindingView) -> object:
    from rich.text import Text

    f = view.finding
    t = Text()
    t.append(f" {f.severity.value.upper()} ", style=_SEV_STYLE[f.severity])
    t.append(f" {f.rule_id} ", style="bold")
    return t


def _finding_body(view: FindingView) -> list[object]:
    from rich.text import Text

    f = view.finding
    out: list[object] = [Text(printable(f.message), style="bold")]
    meta = Text()
    where = f.location.describe()
    if where:
        meta.append("at ", style="dim")
        meta.append(printable(where) + "\n")
    meta.append("rule ", style="dim")
    meta.append(printable(view.title) + "\n")
    if view.help and view.help != view.title:
        meta.append(printable(view.help) + "\n", style="italic")
    if f.reference:
        meta.append("reference ", style="dim")
        meta.append(printable(f.reference) + "\n")
    if f.evidence:
        meta.append("evidence ", style="dim")
        meta.append(printable(f.evidence))
    out.append(meta)
    out.extend(_block(b) for b in view.blocks)
    return out


def _block(block: Block) -> object:
    from rich.panel import Panel
    from rich.table import Table
    from rich.text import Text

    title = Text(printable(block.title), style="bold cyan")
    if block.kind == "table":
        table = Table(title=title, title_justify="left", show_lines=False, expand=False)
        table.add_column("", width=1)
        for col in block.columns:
            table.add_column(col, overflow="fold")
        for i, row in enumerate(block.rows):
            marked = i in block.marked
            table.add_row(Text("▶" if marked else ""), *(Text(printable(c)) for c in row),
                          style="bold yellow" if marked else None)
        return table
    if block.kind == "code":
        body = Text()
        for i, line in enumerate(block.text.splitlines()):
            marker = "▶ " if i in block.marked else "  "
            body.append(marker + printable(line) + "\n", style="bold yellow" if i in block.marked else None)
        return Panel(body, title=title, title_align="left", border_style="dim")
    t = Text()
    t.append_text(title)
    t.append(": " + printable(block.text, keep_newlines=True))
    return t
