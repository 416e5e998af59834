"""modelseal's side of the property: scan a file in-process with the default policy (scanning parses only)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from scanner.engine import scan_file
from scanner.findings import Severity
from scanner.rules import Policy, RuleSet, load_ruleset
from scanner.walk import WalkEntry


@dataclass(frozen=True)
class ScanVerdict:
    flagged: bool  # any finding >= medium: `modelseal scan` exits 1
    verdict: str
    format: str
    rules: tuple[str, ...]  # rule ids of the findings >= medium
    error: str | None = None


class Scanner:
    def __init__(self, rules: RuleSet | None = None, policy: Policy | None = None) -> None:
        self.rules = rules or load_ruleset()
        self.policy = policy or Policy()

    def scan(self, path: Path) -> ScanVerdict:
        path = Path(path)
        rep = scan_file(WalkEntry(path, str(path), path.resolve().parent), self.rules, self.policy, digest=False)
        loud = tuple(sorted({f.rule_id for f in rep.findings if f.severity >= Severity.MEDIUM}))
        return ScanVerdict(bool(loud), rep.verdict.value, rep.format, loud, rep.error)
