"""`modelseal explain FILE`: the triage view in the terminal, and optionally as one HTML page."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    @app.command()
    def explain(
        paths: Annotated[list[Path], typer.Argument(help="Suspect model file(s) (directories recursively).")],
        html: Annotated[Path | None, typer.Option(
            "--html", help="Also write a self-contained HTML report here (no scripts, no external assets).")] = None,
        config: Annotated[Path | None, typer.Option(
            "--config", help="TOML config: a pyproject.toml with [tool.modelseal], or a standalone file.")] = None,
        fail_on: Annotated[str | None, typer.Option(
            "--fail-on", help="Lowest severity that fails the run: critical, high, medium, low, info.")] = None,
        context: Annotated[int, typer.Option("--context", min=0, max=200,
                                             help="Opcodes shown either side of a finding.")] = 6,
        show_info: Annotated[bool, typer.Option("--show-info", help="Also show info findings in the terminal.")]
        = False,
        quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No terminal output (with --html).")] = False,
        width: Annotated[int, typer.Option("--width", min=60, max=400, help="Terminal width to render for.")]
        = 120,
    ) -> None:
        """Show each finding with its surroundings: decompiled pickle, opcodes, members, bytecode, graph.

        Nothing is executed. Exit codes as for `scan`: 0 clean, 1 findings at or above --fail-on, 2 error."""
        from scanner.cli import fail, policy_for
        from scanner.explain.collect import ExplainOptions
        from scanner.explain.collect import explain as run_explain

        policy = policy_for(config, fail_on, paths)
        explanation = run_explain(paths, policy, options=ExplainOptions(context_opcodes=context))
        if html is not None:
            from scanner.explain.render_html import render as render_html
            from scanner.inventory.explain_block import html_block

            page = render_html(explanation).replace("</body>", html_block(paths) + "</body>", 1)
            try:
                html.write_text(page, encoding="utf-8")
            except OSError as e:
                raise fail(f"cannot write {html}: {e.strerror or e}") from None
        if not quiet:
            from scanner.explain.render_text import render as render_text

            sys.stdout.write(render_text(explanation, color=sys.stdout.isatty(), width=width,
                                         show_info=show_info))
            from scanner.inventory.explain_block import text_block

            sys.stdout.write(text_block(paths))
        raise typer.Exit(explanation.report.exit_code())
