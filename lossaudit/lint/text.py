"""The report as ``lossaudit lint`` prints it (ruff-like text), and what every format shares:
the counts of a run, where a finding points, the line that says what was detected.

Plain functions of the results: :meth:`lossaudit.lint.findings.LintReport.text` and
:mod:`lossaudit.lint.report` (every other format) both call them.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING

from lossaudit.lint.registry import SEVERITIES
from lossaudit.render.formatting import plural

if TYPE_CHECKING:
    from lossaudit.lint.discover import Candidate
    from lossaudit.lint.findings import Finding, TargetResult

NOT_CHECKED_NOTE = re.compile(r"^(?P<prefix>.*?)(?P<codes>FL\d{3}(?:/FL\d{3})*) not checked: (?P<reason>.+)$")
"""A battery note saying that checks did not run: ``[prefix]FL001/FL002 not checked: REASON``."""


def summary(results: list[TargetResult]) -> dict[str, int]:
    counts = {severity: 0 for severity in SEVERITIES}
    for result in results:
        for finding in result.findings:
            counts[finding.severity] += 1
    return {
        "errors": counts["error"],
        "warnings": counts["warning"],
        "infos": counts["info"],
        "suppressed": sum(len(result.suppressed) for result in results),
        "uncallable": sum(result.status == "uncallable" for result in results),
        "import_errors": sum(result.status == "error" for result in results),
        "skipped": sum(result.status == "skipped" for result in results),
    }


def place_of(finding: Finding, result: TargetResult) -> tuple[str | None, int | None]:
    """The finding's file and line, falling back to the target's definition."""
    return finding.path or result.location.get("path"), finding.line or result.location.get("line")


def defined_at(result: TargetResult) -> str:
    return f"{result.location.get('path')}:{result.location.get('line')}"


def short_name(result: TargetResult) -> str:
    """The target's symbol: ``monai.losses:FocalLoss`` -> ``FocalLoss``."""
    return result.target.rpartition(":")[2] or result.target


def unchecked_line(result: TargetResult, require_checks: bool = False) -> str:
    """``5 checks could not run on FocalLoss: FL001, FL002, FL004, FL023, FL024`` (empty when every
    check ran); with ``require_checks``, said to fail the run."""
    codes = result.unchecked_codes
    if not codes:
        return ""
    fails = " (--require-checks: fails)" if require_checks else ""
    return f"{plural(len(codes), 'check')} could not run on {short_name(result)}{fails}: {', '.join(codes)}"


def unchecked_reasons(result: TargetResult) -> list[str]:
    """One ``FL001, FL002: REASON`` per reason a check could not run."""
    return [f"{', '.join(item['codes'])}: {item['reason']}" for item in result.unchecked]


def _is_unchecked_note(note: str, result: TargetResult) -> bool:
    """Whether a note says what ``result.unchecked`` already shows (not repeated under -v)."""
    match = NOT_CHECKED_NOTE.match(note)
    if match is None:
        return False
    reason, codes = match["prefix"] + match["reason"], set(match["codes"].split("/"))
    return any(item["reason"] == reason and codes <= set(item["codes"]) for item in result.unchecked)


def detected_line(result: TargetResult) -> str:
    d = result.detected
    if result.status == "uncallable":
        return f"{result.target}: not audited: {result.hint}"
    if result.status == "error":
        where = f" ({defined_at(result)})" if result.location.get("path") else ""
        return f"{result.target}: error: cannot be imported{where}: {result.hint}"
    if result.status == "skipped":
        return f"{result.target}: skipped: {result.hint}"
    if not d or d.get("inputs") is None:
        return f"{result.target}: could not be called"
    error = d.get("max_rel_error")
    error_text = f"{error:.2g}" if isinstance(error, float) else "n/a"
    reason = f" ({d['kind_reason']})" if d.get("kind_reason") and d["kind_reason"] != "given" else ""
    closest = "" if d.get("matched") else " (closest, no match)"
    background = f" ({d['background']})" if d.get("background") else ""
    layout = {"spatial": " in (B, C, H, W) layout", "sequence": " in (B, C, L) layout"}.get(d.get("layout"), "")  # type: ignore[arg-type]  # None: rows
    follows = f"; follows {'; '.join(d['follows'])}" if d.get("follows") else ""
    return (
        f"{result.target}: {d['kind']} kind{reason}; called with {d['inputs']} and {d['targets']} targets{background}{layout}; "
        f"reference {d['reference']}; normalisation {d['normalisation']}{closest}; max relative error {error_text}{follows}"
    )


def discovered_line(discovered: list[Candidate]) -> str:
    """``Discovered 3 candidates (1 skipped: not a loss signature): ...``."""
    skipped = sum(bool(c.skip) for c in discovered)
    counted = f" ({skipped} skipped: not a loss signature)" if skipped else ""
    return f"Discovered {plural(len(discovered), 'candidate')}{counted}: " + ", ".join(
        f"{c.target} ({c.reason}{'; skipped' if c.skip else ''})" for c in discovered
    )


def render_text(results: list[TargetResult], discovered: list[Candidate], verbose: bool = False, require_checks: bool = False, width: int | None = None) -> str:
    """The ruff-like report: per target the detected line, its findings, the checks that could not
    run (with their reasons) and a summary line that counts them; with ``width``, each line wrapped
    to it (words never cut; a finding's first line keeps its ``path:line: CODE``)."""
    lines: list[str] = []
    if discovered:
        lines.append(discovered_line(discovered))
        lines.append("")
    for result in results:
        lines.append(detected_line(result))
        if result.status != "audited":
            lines.append("")
            continue
        for finding in sorted(result.findings, key=lambda f: (SEVERITIES.index(f.severity), f.code)):
            path, line = place_of(finding, result)
            where = f"{path}:{line}" if path and line else path or result.target
            lines.append(f"{where}: {finding.code} [{finding.name}] {finding.severity}: {finding.message}")
            if finding.evidence:
                lines.append(f"  evidence: {json.dumps(finding.evidence, default=str)}")
            lines.append(f"  fix: {finding.fix}")
        lines += [f"  not checked: {reason}" for reason in unchecked_reasons(result)]
        if verbose:
            lines += [f"  note: {note}" for note in result.notes if not _is_unchecked_note(note, result)]
        counts = summary([result])
        suppressed = f" ({counts['suppressed']} suppressed)" if counts["suppressed"] else ""
        unchecked = unchecked_line(result, require_checks)
        lines.append(
            f"Found {plural(counts['errors'], 'error')}, {plural(counts['warnings'], 'warning')}, "
            f"{plural(counts['infos'], 'info')}{suppressed} in {result.target}{'; ' + unchecked if unchecked else ''}"
        )
        lines.append("")
    return "\n".join(lines if width is None else [wrapped for line in lines for wrapped in _wrapped(line, width)])


def _wrapped(line: str, width: int) -> list[str]:
    """``line`` in lines of at most ``width`` cells, continued under its own indent plus two."""
    from lossaudit.render.layout import wrap

    if len(line) <= width:
        return [line]
    indent = " " * (len(line) - len(line.lstrip()) + 2)
    return wrap(line.strip(), width, first=line[: len(line) - len(line.lstrip())], rest=indent)
