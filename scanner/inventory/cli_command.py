"""`modelseal inventory`: registered on the typer app by scanner/cli.py."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer


class InventoryFormat(str, Enum):
    text = "text"
    json = "json"
    cyclonedx = "cyclonedx"


def inventory(
    paths: Annotated[list[Path], typer.Argument(help="Model files or folders.")],
    fmt: Annotated[InventoryFormat, typer.Option("--format", "-f", help="text, json or cyclonedx (1.6 ML-BOM).")]
    = InventoryFormat.text,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write here instead of stdout.")] = None,
    allow_symlinks: Annotated[bool, typer.Option("--allow-symlinks", help="Follow symlinks inside a folder.")]
    = False,
) -> None:
    """What each model file records about itself (producer, versions, card, chat template), read statically.

    Exit 0 when listed, 2 when a path cannot be read. Not a scan: run `modelseal scan` for gadgets.
    """
    from scanner.attest.digest import DigestError
    from scanner.cli import fail, write_output
    from scanner.inventory.collect import collect_all

    for p in paths:
        if not p.exists() and not p.is_symlink():
            raise fail(f"no such file or directory: {p}")
    try:
        models = collect_all(paths, allow_symlinks=allow_symlinks)
    except DigestError as e:
        raise fail(str(e)) from None
    if fmt is InventoryFormat.json:
        from scanner.inventory.render import render_json as render
    elif fmt is InventoryFormat.cyclonedx:
        from scanner.inventory.cyclonedx import render_cyclonedx as render
    else:
        from scanner.inventory.render import render_text as render
    write_output(render(models), output)


def register(app: typer.Typer) -> None:
    app.command()(inventory)
