"""Findings and audit results as plain data, shared by the worker, the runner and the reporters."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from lossaudit.lint.rules import RULES_BY_CODE, SEVERITIES
from lossaudit.lint.text import render_text


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
    """The audit of one target: what was detected and what fired.

    ``location`` is the target's ``def``/``class`` line (``{"path", "line"}``), where suppression
    comments are read. ``status`` is 'audited', or 'uncallable' for a discovered candidate that
    could not be called with any convention (``hint`` says how to configure it).

    ``unchecked`` lists the checks that could not run on this target, one item per reason:
    ``{"codes": ["FL001", ...], "reason": "...", "probe": "..."}`` (``probe``: the probe or rule
    group that would have run them; may be empty).
    """

    target: str
    detected: dict = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    location: dict = field(default_factory=dict)
    suppressed: list[Finding] = field(default_factory=list)
    status: str = "audited"
    hint: str = ""
    unchecked: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "target": self.target,
            "status": self.status,
            "detected": self.detected,
            "location": self.location,
            "findings": [finding.to_dict() for finding in self.findings],
            "suppressed": [finding.to_dict() for finding in self.suppressed],
            "notes": self.notes,
            "unchecked": self.unchecked,
            **({"hint": self.hint} if self.hint else {}),
        }

    @classmethod
    def from_dict(cls, data: dict) -> TargetResult:
        return cls(
            target=data["target"],
            detected=data.get("detected", {}),
            findings=[Finding(**finding) for finding in data.get("findings", [])],
            notes=data.get("notes", []),
            location=data.get("location", {}),
            suppressed=[Finding(**finding) for finding in data.get("suppressed", [])],
            status=data.get("status", "audited"),
            hint=data.get("hint", ""),
            unchecked=[dict(item) for item in data.get("unchecked", [])],
        )


@dataclass(frozen=True)
class LintReport:
    """What ``lossaudit.lint`` returns: one :class:`TargetResult` per audited target."""

    targets: tuple[TargetResult, ...]

    @property
    def findings(self) -> tuple[Finding, ...]:
        """Every target's findings, in target order."""
        return tuple(finding for result in self.targets for finding in result.findings)

    def ok(self, fail_on: str = "error") -> bool:
        """No finding at or above ``fail_on`` ('error', 'warning' or 'info'), and every target was
        audited (a target that could not be imported is not ok)."""
        threshold = SEVERITIES.index(fail_on)
        return all(result.status in ("audited", "skipped") for result in self.targets) and not any(
            SEVERITIES.index(finding.severity) <= threshold for finding in self.findings)

    def to_dict(self) -> dict:
        """The ``targets`` of ``lint --format json``."""
        return {"targets": [result.to_dict() for result in self.targets]}

    def text(self, verbose: bool = False) -> str:
        """The report as ``lossaudit lint`` prints it (:func:`lossaudit.lint.text.render_text`)."""
        return render_text(list(self.targets), [], verbose)
