"""The context every format analyzer gets: rules, policy, limits, the per-file budget, and how to scan a member.

It sits below the analyzers and the engine: analyzers import it, never the engine. Scanning a member found in
a container goes back through `dispatch` (the engine's scan_source), handed in by the engine.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from scanner.findings import Finding, Location, Severity
from scanner.limits import Limits
from scanner.record import field, record
from scanner.rules import Policy, RuleSet
from scanner.source import LimitExceeded, Source

# formats that are no model: reported `FORMAT-NOT-MODEL` at the top level
NOT_A_MODEL = ("text", "data", "empty")


@record
class Budget:
    """Counters shared by everything scanned under one top-level file (nested archives share one budget)."""

    total_bytes: int = 0
    members: int = 0
    deadline: float | None = None   # time.monotonic() by which the scan of the file must end
    bomb_at: int | None = None      # total_bytes when the first bomb was reported: what follows is capped
    stopped: LimitExceeded | None = None  # the bound that stopped the scan: later members are not scanned
    stop_reported: bool = False


@record
class ScanContext:
    rules: RuleSet
    policy: Policy
    depth: int = 0
    budget: Budget = field(default_factory=Budget)
    root: Path | None = None  # the model folder (ONNX external data resolves against it)
    # the engine's scan_source: sniff and analyze a member (set by the engine on every context it runs)
    dispatch: Callable[[Source, ScanContext, str | None], tuple[str, list[Finding]]] | None = None

    @property
    def limits(self) -> Limits:
        return self.policy.limits

    def finding(self, rule_id: str, message: str, src: Source | None = None, *, offset: int | None = None,
                opcode_index: int | None = None, evidence: str | None = None,
                severity: Severity | None = None, reference: str | None = None) -> Finding:
        """Build a finding; severity and reference default to the rule catalog, then the user's overrides."""
        meta = self.rules.meta(rule_id)
        if meta is None:
            raise KeyError(f"rule {rule_id} is not declared in rules/*.toml")
        sev = self.policy.severity_overrides.get(rule_id, severity or meta.severity)
        loc = src.loc(offset, opcode_index) if src is not None else None
        if evidence is not None and len(evidence) > self.limits.max_evidence_chars:
            evidence = evidence[: self.limits.max_evidence_chars] + "…"
        if rule_id == "ARCHIVE-BOMB" and self.budget.bomb_at is None:
            self.budget.bomb_at = self.budget.total_bytes  # a file that is a bomb gets little more inflating
        return Finding(rule_id, sev, message, loc or Location(), evidence, reference or meta.reference)

    def charge(self, nbytes: int, src: Source) -> None:
        """Account decompressed bytes against the per-file total; raise when the budget is spent."""
        b, lim = self.budget, self.limits
        b.total_bytes += nbytes
        if b.total_bytes > lim.max_total_bytes:
            self._stop(LimitExceeded("max_total_bytes",
                                     f"more than {lim.max_total_bytes} decompressed bytes in one file", src.loc()))
        if b.bomb_at is not None and b.total_bytes - b.bomb_at > lim.max_bytes_after_bomb:
            self._stop(LimitExceeded("max_bytes_after_bomb", f"a bomb was found and {lim.max_bytes_after_bomb} "
                                     "more bytes were decompressed; rest of the file not scanned", src.loc()))
        self.check_deadline(src)

    def check_deadline(self, src: Source) -> None:
        """Raise once the file's wall-clock budget (max_file_seconds) is spent; analyzers call it in long loops."""
        if self.budget.deadline is not None and time.monotonic() > self.budget.deadline:
            self._stop(LimitExceeded("max_file_seconds", f"scan of the file took longer than "
                                     f"{self.limits.max_file_seconds} s; rest not scanned", src.loc()))

    def _stop(self, e: LimitExceeded) -> None:
        if self.budget.stopped is None:
            self.budget.stopped = e
        raise self.budget.stopped  # the same exception all the way up: reported once

    def limit_findings(self, e: LimitExceeded, src: Source) -> list[Finding]:
        """The finding for a LimitExceeded caught by an analyzer or the engine (a budget stop only once)."""
        if e is self.budget.stopped:
            if self.budget.stop_reported:
                return []
            self.budget.stop_reported = True
        return [Finding("LIMIT-EXCEEDED", rule_severity(self, "LIMIT-EXCEEDED"), str(e), e.location or src.loc(), e.limit)]

    def scan_child(self, src: Source, fmt: str | None = None) -> list[Finding]:
        """Scan a member found inside a container (sniffed unless `fmt` is given), one level deeper."""
        if self.budget.stopped is not None:
            return []  # reported once where it happened (and by scan_file if an analyzer swallowed it)
        try:
            self.check_deadline(src)
        except LimitExceeded as e:
            return self.limit_findings(e, src)
        self.budget.members += 1
        if self.budget.members > self.limits.max_members:
            return [self.finding("LIMIT-EXCEEDED", f"more than {self.limits.max_members} members; rest not scanned",
                                 src, evidence="max_members")]
        if self.depth + 1 > self.limits.max_depth:
            return [self.finding("LIMIT-EXCEEDED", f"nesting deeper than {self.limits.max_depth}; member not scanned",
                                 src, evidence="max_depth")]
        child = ScanContext(self.rules, self.policy, self.depth + 1, self.budget, self.root, self.dispatch)
        dispatch = self.dispatch
        if dispatch is None:  # a context built by hand (tests, benchmarks) scans members like the engine
            from scanner.engine import scan_source as dispatch
        return dispatch(src, child, fmt)[1]




def rule_severity(ctx: ScanContext, rule_id: str) -> Severity:
    """The catalog severity of `rule_id` after the user's overrides (high when the rule is unknown)."""
    meta = ctx.rules.meta(rule_id)
    return ctx.policy.severity_overrides.get(rule_id, meta.severity if meta else Severity.HIGH)
