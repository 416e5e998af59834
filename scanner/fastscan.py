"""The `modelseal` entry point: a plain `modelseal scan PATH... [options]` runs without importing the CLI
framework (typer + click cost more start-up than the whole scan of a small file); every other command line,
and any scan line this parser is not sure about, goes to scanner.cli unchanged."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

_VALUE = {"--format": "fmt", "-f": "fmt", "--output": "output", "-o": "output", "--fail-on": "fail_on",
          "--config": "config", "--jobs": "jobs", "-j": "jobs", "--cache": "cache"}
_FLAG = {"--show-info": "show_info", "--digest": "digest"}
_FORMATS = ("text", "json", "sarif", "lines", "jsonl")


def parse(argv: list[str]) -> dict[str, object] | None:
    """The options of a `scan` command line, or None when anything is unusual (help, unknown or repeated
    option, a bad value, `--`, no path): scanner.cli then parses and reports it exactly as always."""
    if not argv or argv[0] != "scan":
        return None
    opts: dict[str, object] = {"paths": []}
    it = iter(argv[1:])
    for tok in it:
        if tok.startswith("-") and tok != "-":
            name, eq, value = tok.partition("=")
            if name in _FLAG and not eq:
                key = _FLAG[name]
                if key in opts:
                    return None
                opts[key] = True
                continue
            if name not in _VALUE or (eq and not name.startswith("--")):  # click reads `-f=x` as "=x"
                return None
            if not eq:
                value = next(it, None)  # type: ignore[assignment]
                if value is None:
                    return None
            key = _VALUE[name]
            if key in opts:
                return None
            opts[key] = value
        else:
            opts["paths"].append(tok)  # type: ignore[attr-defined]
    if not opts["paths"] or opts.get("fmt", "text") not in _FORMATS:
        return None
    if "jobs" in opts:
        j = str(opts["jobs"])
        if not j.isdigit() or int(j) < 1:
            return None
        opts["jobs"] = int(j)
    return opts


def run(opts: dict[str, object]) -> int | None:
    """scanner.cli.scan's work for parsed options; None (nothing done yet) when the policy, a path or the
    cache is not usable, so that scanner.cli reports the problem in its own words."""
    from scanner.rules import ConfigError, load_policy

    paths = [Path(str(p)) for p in opts["paths"]]  # type: ignore[attr-defined]
    config = Path(str(opts["config"])) if "config" in opts else None
    try:
        policy = load_policy(config, opts.get("fail_on"))  # type: ignore[arg-type]
    except ConfigError:
        return None
    if any(not p.exists() and not p.is_symlink() for p in paths):
        return None
    from scanner.batch import open_cache
    from scanner.rules import load_ruleset

    ruleset = load_ruleset()
    cache_spec = None
    if "cache" in opts:
        try:
            cache_spec = open_cache(Path(str(opts["cache"])), ruleset, policy)
        except (OSError, ValueError):
            return None
    return execute(paths, policy, ruleset, cache_spec, fmt=str(opts.get("fmt", "text")),
                   output=Path(str(opts["output"])) if "output" in opts else None, jobs=opts.get("jobs"),  # type: ignore[arg-type]
                   digest=bool(opts.get("digest", False)), show_info=bool(opts.get("show_info", False)))


def execute(paths: list[Path], policy: Any, ruleset: Any, cache_spec: Any, *, fmt: str, output: Path | None,
            jobs: int | None, digest: bool, show_info: bool, **where: Any) -> int:
    """Scan and write the report in `fmt`; the exit code (2 after a one-line error). Shared by this entry
    point and `scanner.cli.scan`, so both print the same bytes. `where`: storage_options / cluster for URL
    arguments and Dask (scanner.remote, scanner.cluster)."""
    from scanner.batch import JsonlWriter, Progress, scan_batch

    remote_errors: tuple[type[Exception], ...] = ()  # scanner.remote only when a URL or a cluster is named
    if where.get("cluster") or any(":/" in str(p) for p in paths):  # `s3://x`, or `s3:/x` as Path folds it
        from scanner.remote import RemoteError

        remote_errors = (RemoteError,)

    progress = Progress()
    if fmt == "jsonl":  # streamed: every file is written (and flushed) as soon as it is scanned
        try:
            out = sys.stdout if output is None else open(output, "w", encoding="utf-8")  # noqa: SIM115
        except OSError as e:
            return _fail(f"cannot write {output}: {e.strerror or e}")
        writer = JsonlWriter(out)
        try:
            report = scan_batch(paths, policy, ruleset, jobs=jobs, cache=cache_spec, on_file=writer.file,
                                digest=digest, progress=progress, **where)
            writer.summary(report)
        except remote_errors as e:
            return _fail(str(e))
        finally:
            if out is not sys.stdout:
                out.close()
        return report.exit_code()
    try:
        report = scan_batch(paths, policy, ruleset, jobs=jobs, cache=cache_spec, progress=progress, digest=digest,
                            **where)
    except remote_errors as e:
        return _fail(str(e))
    if fmt == "json":
        from scanner.output.json import render as render_json

        text = render_json(report)
    elif fmt == "sarif":
        from scanner.output.sarif import render as render_sarif

        text = render_sarif(report)
    elif fmt == "lines":
        from scanner.output.lines import render as render_lines

        text = render_lines(report, show_info=show_info)
    else:
        from scanner.output.text import render as render_text

        text = render_text(report, color=output is None and sys.stdout.isatty(), show_info=show_info)
    if output is None:
        sys.stdout.write(text)
    else:
        try:
            output.write_text(text, encoding="utf-8")
        except OSError as e:
            return _fail(f"cannot write {output}: {e.strerror or e}")
    return report.exit_code()


def _fail(message: str) -> int:
    from scanner.output.escape import escape

    sys.stderr.write(f"modelseal: error: {escape(message)}\n")
    return 2


def main() -> None:
    opts = parse(sys.argv[1:])
    if opts is not None:
        try:
            code = run(opts)
        except KeyboardInterrupt:
            sys.stderr.write("modelseal: interrupted\n")
            sys.exit(130)
        except Exception as e:  # noqa: BLE001 - never a traceback for the user
            sys.stderr.write(f"modelseal: internal error: {type(e).__name__}: {e}\n")
            sys.exit(2)
        if code is not None:
            sys.stdout.flush()
            sys.exit(code)
    from scanner.cli import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
