"""modelseal: static scanner for code-execution gadgets in ML model files."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["scan", "Report", "FileReport", "Finding", "Location", "Severity", "Verdict", "UnsafeModelError",
           "__version__"]


def __getattr__(name: str) -> object:
    # lazy so that `import scanner` stays cheap for the CLI and the gate
    if name == "scan":
        from scanner.engine import scan

        return scan
    if name in {"Report", "FileReport", "Finding", "Location", "Severity", "Verdict"}:
        from scanner import findings

        return getattr(findings, name)
    if name == "UnsafeModelError":
        from scanner.gate import UnsafeModelError

        return UnsafeModelError
    raise AttributeError(name)
