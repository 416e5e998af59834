"""Findings, severities and verdicts: the data every analyzer produces and every output consumes."""

from __future__ import annotations

import enum

from scanner.record import field, record


class Severity(str, enum.Enum):
    CRITICAL = "critical"
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"
    INFO = "info"

    @property
    def rank(self) -> int:
        return _RANK[self]

    @classmethod
    def parse(cls, text: str) -> Severity:
        try:
            return cls(text.strip().lower())
        except ValueError:
            raise ValueError(f"unknown severity {text!r} (use one of: {', '.join(s.value for s in cls)})") from None

    def __ge__(self, other: object) -> bool:  # type: ignore[override]
        if not isinstance(other, Severity):
            return NotImplemented
        return self.rank >= other.rank

    def __gt__(self, other: object) -> bool:  # type: ignore[override]
        if not isinstance(other, Severity):
            return NotImplemented
        return self.rank > other.rank

    def __le__(self, other: object) -> bool:  # type: ignore[override]
        if not isinstance(other, Severity):
            return NotImplemented
        return self.rank <= other.rank

    def __lt__(self, other: object) -> bool:  # type: ignore[override]
        if not isinstance(other, Severity):
            return NotImplemented
        return self.rank < other.rank


_RANK = {Severity.INFO: 0, Severity.LOW: 1, Severity.MEDIUM: 2, Severity.HIGH: 3, Severity.CRITICAL: 4}


class Verdict(str, enum.Enum):
    CLEAN = "clean"
    SUSPICIOUS = "suspicious"
    MALICIOUS = "malicious"
    ERROR = "error"

    @property
    def rank(self) -> int:
        return {Verdict.CLEAN: 0, Verdict.SUSPICIOUS: 1, Verdict.ERROR: 2, Verdict.MALICIOUS: 3}[self]


@record(frozen=True)
class Location:
    """Where a human can check a finding: member inside containers ("a.zip!archive/data.pkl"),
    byte offset inside that member (or file), and opcode index for pickles."""

    member: str | None = None
    offset: int | None = None
    opcode_index: int | None = None

    def describe(self) -> str:
        parts = []
        if self.member:
            parts.append(f"member {self.member}")
        if self.offset is not None:
            parts.append(f"offset {self.offset}")
        if self.opcode_index is not None:
            parts.append(f"opcode #{self.opcode_index}")
        return ", ".join(parts)

    def to_dict(self) -> dict[str, object]:
        return {"member": self.member, "offset": self.offset, "opcode_index": self.opcode_index}


@record(frozen=True)
class Finding:
    rule_id: str
    severity: Severity
    message: str
    location: Location = field(default_factory=Location)
    evidence: str | None = None
    reference: str | None = None

    def to_dict(self) -> dict[str, object]:
        return {
            "rule_id": self.rule_id,
            "severity": self.severity.value,
            "message": self.message,
            "location": self.location.to_dict(),
            "evidence": self.evidence,
            "reference": self.reference,
        }


def verdict_for(findings: list[Finding] | tuple[Finding, ...], error: bool = False) -> Verdict:
    """Design §5: malicious if any critical, suspicious if any high/medium, error if unscannable."""
    worst = max((f.severity.rank for f in findings), default=-1)
    if worst >= Severity.CRITICAL.rank:
        return Verdict.MALICIOUS
    if error:
        return Verdict.ERROR
    if worst >= Severity.MEDIUM.rank:
        return Verdict.SUSPICIOUS
    return Verdict.CLEAN


@record(frozen=True)
class FileReport:
    path: str
    size: int | None
    sha256: str | None
    format: str
    findings: tuple[Finding, ...]
    error: str | None = None
    transfer: dict[str, int] | None = None  # remote files: {"requests", "bytes_fetched", "round_trips"} (scanner.remote)

    @property
    def verdict(self) -> Verdict:
        return verdict_for(self.findings, error=self.error is not None)

    def worst(self) -> Severity | None:
        if not self.findings:
            return None
        return max((f.severity for f in self.findings), key=lambda s: s.rank)

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            "path": self.path,
            "size": self.size,
            "sha256": self.sha256,
            "format": self.format,
            "verdict": self.verdict.value,
            "error": self.error,
            "findings": [f.to_dict() for f in self.findings],
        }
        if self.transfer is not None:
            out["transfer"] = dict(self.transfer)
        return out


@record(frozen=True)
class Report:
    files: tuple[FileReport, ...]
    scanner_version: str
    rules_digest: str
    fail_on: Severity
    started_on: str
    finished_on: str

    @property
    def verdict(self) -> Verdict:
        return max((f.verdict for f in self.files), key=lambda v: v.rank, default=Verdict.CLEAN)

    @property
    def findings(self) -> list[tuple[FileReport, Finding]]:
        return [(fr, f) for fr in self.files for f in fr.findings]

    def summary(self) -> dict[str, int]:
        counts = {s.value: 0 for s in Severity}
        for _, f in self.findings:
            counts[f.severity.value] += 1
        verdicts = {v.value: 0 for v in Verdict}
        for fr in self.files:
            verdicts[fr.verdict.value] += 1
        return {"files": len(self.files), **{f"findings_{k}": v for k, v in counts.items()},
                **{f"files_{k}": v for k, v in verdicts.items()}}

    def failing(self) -> bool:
        """True when any finding is at or above the fail-on level (exit code 1)."""
        return any(f.severity.rank >= self.fail_on.rank for _, f in self.findings)

    def has_errors(self) -> bool:
        return any(fr.error is not None for fr in self.files)

    def exit_code(self) -> int:
        """0 clean, 1 findings at/above the threshold (wins over errors), 2 scan could not be done."""
        if self.failing():
            return 1
        if self.has_errors():
            return 2
        return 0
