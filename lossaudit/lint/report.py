"""Render lint results: ruff-like text, and the JSON document of ``lint --format json``."""

from __future__ import annotations

import json

from lossaudit import __version__
from lossaudit.lint.findings import TargetResult
from lossaudit.lint.rules import RULES, SEVERITIES

SCHEMA_VERSION = 1


def summary(results: list[TargetResult]) -> dict[str, int]:
    counts = {severity: 0 for severity in SEVERITIES}
    for result in results:
        for finding in result.findings:
            counts[finding.severity] += 1
    return {"errors": counts["error"], "warnings": counts["warning"], "infos": counts["info"]}


def render_json(results: list[TargetResult]) -> str:
    document = {
        "version": __version__,
        "schema_version": SCHEMA_VERSION,
        "targets": [result.to_dict() for result in results],
        "summary": summary(results),
    }
    return json.dumps(document, indent=2, default=str) + "\n"


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def _detected_line(result: TargetResult) -> str:
    d = result.detected
    if not d or d.get("inputs") is None:
        return f"{result.target}: could not be called"
    error = d.get("max_rel_error")
    error_text = f"{error:.2g}" if isinstance(error, float) else "n/a"
    reason = f" ({d['kind_reason']})" if d.get("kind_reason") and d["kind_reason"] != "given" else ""
    closest = "" if d.get("matched") else " (closest, no match)"
    return (
        f"{result.target}: {d['kind']} kind{reason}; called with {d['inputs']} and {d['targets']} targets; "
        f"reference {d['reference']}; normalisation {d['normalisation']}{closest}; max relative error {error_text}"
    )


def render_text(results: list[TargetResult], verbose: bool = False) -> str:
    lines: list[str] = []
    for result in results:
        lines.append(_detected_line(result))
        for finding in sorted(result.findings, key=lambda f: (SEVERITIES.index(f.severity), f.code)):
            where = f"{finding.path}:{finding.line}" if finding.path and finding.line else finding.path or result.target
            lines.append(f"{where}: {finding.code} [{finding.name}] {finding.severity}: {finding.message}")
            if finding.evidence:
                lines.append(f"  evidence: {json.dumps(finding.evidence, default=str)}")
            lines.append(f"  fix: {finding.fix}")
        if verbose:
            lines += [f"  note: {note}" for note in result.notes]
        counts = summary([result])
        lines.append(
            f"Found {_plural(counts['errors'], 'error')}, {_plural(counts['warnings'], 'warning')}, "
            f"{_plural(counts['infos'], 'info')} in {result.target}"
        )
        lines.append("")
    return "\n".join(lines)


def render_rules() -> str:
    width = max(len(rule.name) for rule in RULES)
    return "\n".join(f"{rule.code}  {rule.name:<{width}}  {rule.severity:<7}  {rule.summary}" for rule in RULES) + "\n"


def render_rule(code: str) -> str:
    from lossaudit.lint.rules import RULES_BY_CODE

    rule = RULES_BY_CODE[code]
    indent = lambda text: "\n".join("    " + line for line in text.splitlines())  # noqa: E731
    return (
        f"{rule.code} [{rule.name}] ({rule.severity})\n\n{rule.summary}.\n\n{rule.explanation}\n\n"
        f"Wrong:\n{indent(rule.wrong)}\n\nRight:\n{indent(rule.right)}\n\nFix: {rule.fix}.\n"
    )
