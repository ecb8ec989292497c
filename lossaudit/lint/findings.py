"""Findings and audit results as plain data, shared by the worker, the runner and the reporters."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from lossaudit.lint.rules import RULES_BY_CODE


@dataclass
class Finding:
    """One rule that fired on one target. ``line`` is 1-based; ``evidence`` holds the numbers."""

    code: str
    message: str
    path: str | None = None
    line: int | None = None
    evidence: dict = field(default_factory=dict)
    severity: str = ""
    name: str = ""
    fix: str = ""

    def __post_init__(self) -> None:
        rule = RULES_BY_CODE[self.code]
        self.name = self.name or rule.name
        self.severity = self.severity or rule.severity
        self.fix = self.fix or rule.fix

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TargetResult:
    """The audit of one target: what was detected and what fired."""

    target: str
    detected: dict = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "target": self.target,
            "detected": self.detected,
            "findings": [finding.to_dict() for finding in self.findings],
            "notes": self.notes,
        }

    @classmethod
    def from_dict(cls, data: dict) -> TargetResult:
        findings = [Finding(**finding) for finding in data.get("findings", [])]
        return cls(target=data["target"], detected=data.get("detected", {}), findings=findings, notes=data.get("notes", []))
