#!/usr/bin/env python3
"""Compile rules/*.toml into rules/generated/compiled-rules.json (what a start-up reads instead of parsing TOML).

    python tools/compile_rules.py

Each document is stored with the sha256 of its TOML bytes; a document edited since is parsed from TOML at
start-up (correct, only slower), and tests/test_class_policies.py fails until this is re-run."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scanner.rules import compile_rules  # noqa: E402

if __name__ == "__main__":
    print(compile_rules())
