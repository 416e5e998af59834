"""The `modelseal` command. Parsing and printing only: the work happens in engine, attest and gate."""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from scanner.rules import Policy

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Statically scan ML model files for code-execution gadgets; attest and gate.")


class OutputFormat(str, Enum):
    text = "text"
    json = "json"
    sarif = "sarif"
    lines = "lines"
    jsonl = "jsonl"


def fail(message: str, code: int = 2) -> typer.Exit:
    """One escaped line on stderr: messages carry paths and names from the scanned tree."""
    from scanner.output.escape import escape

    typer.echo(f"modelseal: error: {escape(message)}", err=True)
    return typer.Exit(code)


def policy_for(config: Path | None, fail_on: str | None, paths: list[Path]) -> Policy:
    """The user's policy, after checking that every path exists (clear one-line errors, exit 2)."""
    from scanner.rules import ConfigError, load_policy

    try:
        policy = load_policy(config, fail_on)
    except ConfigError as e:
        raise fail(str(e)) from None
    for p in paths:
        if not p.exists() and not p.is_symlink():
            raise fail(f"no such file or directory: {p}")
    return policy


def write_output(text: str, output: Path | None) -> None:
    if output is None:
        sys.stdout.write(text)
        return
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as e:
        raise fail(f"cannot write {output}: {e.strerror or e}") from None


@app.command()
def scan(
    paths: Annotated[list[Path], typer.Argument(help="Files or directories to scan (directories recursively).")],
    fmt: Annotated[OutputFormat, typer.Option("--format", "-f", help="Report format.")] = OutputFormat.text,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write the report here.")] = None,
    fail_on: Annotated[str | None, typer.Option(
        "--fail-on", help="Lowest severity that fails the run: critical, high, medium, low, info.")] = None,
    config: Annotated[Path | None, typer.Option(
        "--config", help="TOML config: a pyproject.toml with [tool.modelseal], or a standalone file.")] = None,
    show_info: Annotated[bool, typer.Option("--show-info", help="Also list info findings in text output.")] = False,
    jobs: Annotated[int | None, typer.Option(
        "--jobs", "-j", min=1, help="Worker processes (default: the number of cores).")] = None,
    cache: Annotated[Path | None, typer.Option(
        "--cache", help="Reuse results for unchanged files from this private directory (see docs).")] = None,
    digest: Annotated[bool, typer.Option(
        "--digest", help="Put each file's sha256 in the report. Reads every byte; without it large models are "
        "scanned from their headers and pickle members only.")] = False,
    storage_option: Annotated[list[str] | None, typer.Option(
        "--storage-option", help="key=value for the fsspec filesystem of URL arguments (s3://, gs://, https://, "
        "hf://), e.g. endpoint_url=http://minio:9000; repeatable.")] = None,
    cluster: Annotated[str | None, typer.Option(
        "--cluster", help="Scan on Dask: local:N (a local cluster of N workers) or tcp://scheduler:8786.")] = None,
) -> None:
    """Scan model files; exit 0 clean, 1 findings at or above --fail-on, 2 the scan could not be done."""
    from scanner.batch import open_cache
    from scanner.remote import parse_storage_options, url_from_arg
    from scanner.rules import load_ruleset

    policy = policy_for(config, fail_on, [p for p in paths if url_from_arg(p) is None])
    try:
        options = parse_storage_options(storage_option)
    except ValueError as e:
        raise fail(str(e)) from None
    where = {"storage_options": options, "cluster": cluster}  # URL arguments and Dask (scanner.remote/.cluster)
    ruleset = load_ruleset()
    try:
        cache_spec = open_cache(cache, ruleset, policy) if cache is not None else None
    except (OSError, ValueError) as e:
        raise fail(f"cannot use cache {cache}: {e}") from None
    from scanner.fastscan import execute

    raise typer.Exit(execute(paths, policy, ruleset, cache_spec, fmt=fmt.value, output=output, jobs=jobs,
                             digest=digest, show_info=show_info, **where))


@app.command()
def rules() -> None:
    """List every rule id with its default severity and title."""
    from scanner.rules import load_ruleset

    rs = load_ruleset()
    for meta in sorted(rs.catalog.values(), key=lambda m: m.id):
        typer.echo(f"{meta.id:<36} {meta.severity.value:<8} {meta.title}")
    typer.echo(f"rules digest: {rs.digest}")


# -- commands of other modules register below (each module keeps its heavy imports inside functions) --

from scanner.explain.cli_command import register as _register_explain  # noqa: E402

_register_explain(app)

from scanner.attest.cli_commands import register as _register_attest  # noqa: E402

_register_attest(app)

from scanner.inventory.cli_command import register as _register_inventory  # noqa: E402

_register_inventory(app)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        typer.echo("modelseal: interrupted", err=True)
        sys.exit(130)
    except Exception as e:  # noqa: BLE001 - never a traceback for the user
        from scanner.output.escape import escape

        typer.echo(f"modelseal: internal error: {type(e).__name__}: {escape(e)}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
