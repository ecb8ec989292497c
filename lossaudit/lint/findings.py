"""Findings and audit results as plain data, shared by the worker, the runner and the reporters."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from lossaudit.lint.rules import RULES_BY_CODE, SEVERITIES
from lossaudit.lint.text import NOT_CHECKED_NOTE, render_text, summary
from lossaudit.render.formatting import plural


@dataclass
class Finding:
    """One rule that fired on one target. ``line`` is 1-based; ``evidence`` holds the numbers."""

    code: str
    message: str
    path: str | None = None
    line: int | None = None
    evidence: dict[str, Any] = field(default_factory=dict)
    severity: str = ""
    name: str = ""
    fix: str = ""

    def __post_init__(self) -> None:
        rule = RULES_BY_CODE[self.code]
        self.name = self.name or rule.name
        self.severity = self.severity or rule.severity
        self.fix = self.fix or rule.fix

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TargetResult:
    """The audit of one target: what was detected and what fired.

    ``location`` is the target's ``def``/``class`` line (``{"path", "line"}``), where suppression
    comments are read. ``status`` is 'audited', or 'uncallable' for a discovered candidate that
    could not be called with any convention (``hint`` says how to configure it).

    ``unchecked`` lists the checks that could not run on this target, one item per reason:
    ``{"codes": ["FL001", ...], "reason": "...", "probe": "..."}`` (``probe``: the probe or rule
    group that would have run them; may be empty). A check that does not apply to the target
    (it has no ignore index, no alpha parameter) is not one of them. ``message`` is, for a target
    that was not audited because it could not be imported, the one-line message lossaudit prints
    on stderr.
    """

    target: str
    detected: dict[str, Any] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    location: dict[str, Any] = field(default_factory=dict)
    suppressed: list[Finding] = field(default_factory=list)
    status: str = "audited"
    hint: str = ""
    unchecked: list[dict[str, Any]] = field(default_factory=list)
    message: str = ""

    @property
    def unchecked_codes(self) -> list[str]:
        """The codes of the checks that could not run, each once, in order."""
        return list(dict.fromkeys(code for item in self.unchecked for code in item["codes"]))

    def to_dict(self) -> dict[str, Any]:
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
            **({"message": self.message} if self.message else {}),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TargetResult:
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
            message=data.get("message", ""),
        )


NOT_APPLICABLE = re.compile(
    r"\b(?:has|have|takes|take) no\b|no ignore index|alpha is per class|by design|class weights are probed on"
    r"|is not set to a scalar|not on an? [\w-]+ loss"
)
"""Reasons of a note that say a check does not apply to the target (it has or takes no such
parameter, input or label), rather than that it could not run."""


def unchecked_from_notes(notes: list[str]) -> list[dict[str, Any]]:
    """The checks that could not run, read from the battery's ``not checked`` notes: a fallback for
    results whose ``unchecked`` the battery did not fill."""
    items = []
    for note in notes:
        match = NOT_CHECKED_NOTE.match(note)
        if match is not None:
            items.append({"codes": match["codes"].split("/"), "reason": match["prefix"] + match["reason"], "probe": ""})
    return items


def applies(item: dict[str, Any]) -> bool:
    """Whether an ``unchecked`` item is a check that could not run, rather than one that does not
    apply to the target: ``"applies": false`` on the item, or a reason that says the target has or
    takes no such parameter or label (:data:`NOT_APPLICABLE`)."""
    return item.get("applies", True) is not False and not NOT_APPLICABLE.search(item.get("reason", ""))


def fill_unchecked(result: TargetResult) -> TargetResult:
    """``result`` with ``unchecked`` read from its notes when the battery left it empty (a fallback
    for results of an older battery), without the checks that do not apply (:func:`applies`);
    items with the same reason are merged."""
    if result.status != "audited":
        return result
    items: dict[str, dict[str, Any]] = {}
    for item in result.unchecked or unchecked_from_notes(result.notes):
        if not applies(item):
            continue
        merged = items.setdefault(item["reason"], {"codes": [], "reason": item["reason"], "probe": item.get("probe", "")})
        merged["codes"] += [code for code in item["codes"] if code not in merged["codes"]]
        if item.get("probe") and item["probe"] not in merged["probe"].split(", "):
            merged["probe"] = ", ".join(filter(None, (merged["probe"], item["probe"])))
    result.unchecked = list(items.values())
    return result


def filter_unchecked(result: TargetResult, keep: Callable[[str], bool]) -> None:
    """Keep in ``result.unchecked`` only the codes ``keep(code)`` accepts (``--select``,
    ``--ignore``, suppression comments); items left without a code go."""
    items = []
    for item in result.unchecked:
        codes = [code for code in item["codes"] if keep(code)]
        if codes:
            items.append({**item, "codes": codes})
    result.unchecked = items


@dataclass(frozen=True, repr=False)
class LintReport:
    """What ``lossaudit.lint`` returns: one :class:`TargetResult` per audited target."""

    targets: tuple[TargetResult, ...]

    @property
    def findings(self) -> tuple[Finding, ...]:
        """Every target's findings, in target order."""
        return tuple(finding for result in self.targets for finding in result.findings)

    @property
    def unchecked(self) -> tuple[tuple[str, dict[str, Any]], ...]:
        """Every check that could not run, as ``(target, {"codes", "reason", "probe"})``."""
        return tuple((result.target, item) for result in self.targets for item in result.unchecked)

    def ok(self, fail_on: str = "error", require_checks: bool = False) -> bool:
        """No finding at or above ``fail_on`` ('error', 'warning' or 'info'), and every target was
        audited (a target that could not be imported is not ok); with ``require_checks``, no
        check that could not run either."""
        threshold = SEVERITIES.index(fail_on)
        return (
            all(result.status in ("audited", "skipped") for result in self.targets)
            and not any(SEVERITIES.index(finding.severity) <= threshold for finding in self.findings)
            and not (require_checks and self.unchecked)
        )

    def to_dict(self) -> dict[str, Any]:
        """The ``targets`` of ``lint --format json``."""
        return {"targets": [result.to_dict() for result in self.targets]}

    def __str__(self) -> str:
        return self.text()

    def __repr__(self) -> str:
        counts = summary(list(self.targets))
        return (
            f"<lossaudit LintReport: {plural(len(self.targets), 'target')}; {plural(counts['errors'], 'error')}, "
            f"{plural(counts['warnings'], 'warning')}, {plural(counts['infos'], 'info')}>"
        )

    def _repr_html_(self) -> str:
        """The text report, preformatted (what a notebook shows)."""
        from html import escape

        from lossaudit.render.html import html_fragment

        return html_fragment(f"<h1>lossaudit lint</h1>\n<pre>{escape(self.text())}</pre>")

    def text(self, verbose: bool = False, require_checks: bool = False, width: int | None = None) -> str:
        """The report as ``lossaudit lint`` prints it (:func:`lossaudit.lint.text.render_text`),
        wrapped to ``width`` columns when given."""
        return render_text(list(self.targets), [], verbose, require_checks, width)
