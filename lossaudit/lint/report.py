"""Render lint results in every format: text (ruff-like), json, sarif, github, junit, markdown.

Each renderer takes the results and the discovered candidates and returns the whole report as a
string; :func:`render` maps the ``--format`` names to them. Adding a format touches no rule. The
text format, and what the formats share (counts, locations, the detected line), are in
:mod:`lossaudit.lint.text`. A target that was not audited (status ``uncallable``, ``error`` or
``skipped``, see :mod:`lossaudit.lint.session`) appears in every format with its ``hint``;
``error`` fails the run. The checks that could not run on a target (``unchecked``) appear in
every format too: JSON lists them per target, SARIF as notifications (one per target and reason,
with the codes and the reason as properties), GitHub as a notice per target, JUnit as skipped
rule cases, Markdown in the target's line; with ``--require-checks`` they fail the run, and are
errors and failures where the format has them.
"""

from __future__ import annotations

import json
from typing import Any

from lossaudit._version import __version__
from lossaudit.lint.discover import Candidate
from lossaudit.lint.findings import Finding, TargetResult
from lossaudit.lint.rules import RULES, RULES_BY_CODE, SEVERITIES
from lossaudit.lint.text import (
    defined_at,
    detected_line,
    place_of,
    render_text,
    summary,
    unchecked_line,
    unchecked_reasons,
)
from lossaudit.render.formats import (
    annotation,
    junit_xml,
    repository_relative,
    repository_root,
)
from lossaudit.render.formatting import plural
from lossaudit.render.layout import wrap

SCHEMA_VERSION = 1
INFORMATION_URI = "https://github.com/lossaudit/lossaudit"
SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
SARIF_LEVELS = {"error": "error", "warning": "warning", "info": "note"}


def render_json(results: list[TargetResult], discovered: list[Candidate]) -> str:
    """Every target's result (``unchecked``: the checks that could not run, with the reason), the
    discovered candidates (a skipped one with ``skipped``: why it was not run) and the counts."""
    document = {
        "version": __version__,
        "schema_version": SCHEMA_VERSION,
        "discovered": [{"target": c.target, "line": c.line, "reason": c.reason, **({"skipped": c.skip} if c.skip else {})} for c in discovered],
        "targets": [result.to_dict() for result in results],
        "summary": summary(results),
    }
    return json.dumps(document, indent=2, default=str) + "\n"


def _sarif_rule(rule) -> dict:
    return {
        "id": rule.code,
        "name": rule.name,
        "shortDescription": {"text": rule.summary},
        "fullDescription": {"text": rule.explanation},
        "help": {"text": f"{rule.explanation}\n\nFix: {rule.fix}.\n\nWrong:\n{rule.wrong}\n\nRight:\n{rule.right}"},
        "helpUri": f"{INFORMATION_URI}#rules",
        "defaultConfiguration": {"level": SARIF_LEVELS[rule.severity]},
    }


def _sarif_location(result: TargetResult, root) -> dict:
    return (
        {
            "locations": [
                {
                    "physicalLocation": {
                        "artifactLocation": {"uri": repository_relative(result.location["path"], root), "uriBaseId": "%SRCROOT%"},
                        "region": {"startLine": result.location.get("line") or 1},
                    }
                }
            ]
        }
        if result.location.get("path")
        else {}
    )


def _sarif_notification(result: TargetResult, root) -> dict:
    """A target that was not audited, as a tool execution notification (an error for one that
    cannot be imported, a note otherwise)."""
    notification = {"level": "error" if result.status == "error" else "note", "message": {"text": detected_line(result)}}
    properties = {"target": result.target, "status": result.status, **({"hint": result.hint} if result.hint else {})}
    return {**notification, **_sarif_location(result, root), "properties": properties}


def _sarif_unchecked(result: TargetResult, root, require_checks: bool) -> list[dict]:
    """The checks that could not run on an audited target, one notification per reason (an error
    under ``--require-checks``, a warning otherwise), with the codes and the reason as properties."""
    return [
        {
            "level": "error" if require_checks else "warning",
            "message": {"text": f"{result.target}: {', '.join(item['codes'])} could not run: {item['reason']}"},
            **_sarif_location(result, root),
            "properties": {"target": result.target, "status": "unchecked", "codes": item["codes"], "reason": item["reason"], "probe": item.get("probe", "")},
        }
        for item in result.unchecked
    ]


def render_sarif(results: list[TargetResult], discovered: list[Candidate], require_checks: bool = False) -> str:
    """SARIF 2.1.0 as GitHub code scanning reads it; suppressed findings carry a suppression, and
    targets that were not audited, and the checks that could not run on audited ones, are
    notifications of the run's invocation."""
    root = repository_root()
    index = {rule.code: i for i, rule in enumerate(RULES)}

    def sarif_result(finding: Finding, result: TargetResult, suppressed: bool) -> dict:
        path, line = place_of(finding, result)
        entry = {
            "ruleId": finding.code,
            "ruleIndex": index[finding.code],
            "level": SARIF_LEVELS[finding.severity],
            "message": {"text": f"{result.target}: {finding.message}. Fix: {finding.fix}."},
            "locations": [
                {
                    "physicalLocation": {
                        "artifactLocation": {"uri": repository_relative(path or result.target.rpartition(":")[0], root), "uriBaseId": "%SRCROOT%"},
                        "region": {"startLine": line or 1},
                    }
                }
            ],
            "properties": {"target": result.target, "evidence": finding.evidence},
        }
        if suppressed:
            entry["suppressions"] = [{"kind": "inSource", "justification": "lossaudit: ignore comment on the definition line"}]
        return entry

    sarif_results = [
        sarif_result(finding, result, suppressed)
        for result in results
        for findings, suppressed in ((result.findings, False), (result.suppressed, True))
        for finding in findings
    ]
    document = {
        "$schema": SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "lossaudit",
                        "version": __version__,
                        "semanticVersion": __version__,
                        "informationUri": INFORMATION_URI,
                        "rules": [_sarif_rule(rule) for rule in RULES],
                    }
                },
                "originalUriBaseIds": {"%SRCROOT%": {"uri": root.as_uri() + "/"}},
                "invocations": [
                    {
                        "executionSuccessful": not any(result.status == "error" for result in results),
                        "toolExecutionNotifications": [_sarif_notification(result, root) for result in results if result.status != "audited"]
                        + [notification for result in results for notification in _sarif_unchecked(result, root, require_checks)],
                    }
                ],
                "results": sarif_results,
            }
        ],
    }
    return json.dumps(document, indent=2, default=str) + "\n"


def render_github(results: list[TargetResult], discovered: list[Candidate], require_checks: bool = False) -> str:
    """GitHub workflow-command annotations, one per finding, per target not audited (a notice), per
    target that cannot be imported (an error), and per target on which checks could not run (a
    warning, an error under ``--require-checks``)."""
    root = repository_root()
    lines = []
    for result in results:
        path = result.location.get("path")
        file = repository_relative(path, root) if path else None
        if result.status == "uncallable":
            lines.append(annotation("info", result.hint, file=file, title=f"lossaudit: {result.target} not audited"))
        elif result.status == "error":
            lines.append(annotation("error", result.hint, file=file, line=result.location.get("line"), title=f"lossaudit: {result.target} cannot be imported"))
        elif result.status == "skipped":
            lines.append(annotation("info", result.hint, file=file, line=result.location.get("line"), title=f"lossaudit: {result.target} skipped"))
        if result.unchecked:
            lines.append(
                annotation(
                    "error" if require_checks else "warning",
                    "\n".join(unchecked_reasons(result)),
                    file=file,
                    line=result.location.get("line"),
                    title=f"lossaudit: {unchecked_line(result, require_checks)}",
                )
            )
        for finding in result.findings:
            path, line = place_of(finding, result)
            lines.append(
                annotation(
                    finding.severity,
                    f"{finding.message}\nFix: {finding.fix}",
                    file=repository_relative(path, root) if path else None,
                    line=line,
                    title=f"{finding.code} {finding.name} ({result.target})",
                )
            )
    return "\n".join(lines) + ("\n" if lines else "")


def render_junit(results: list[TargetResult], discovered: list[Candidate], fail_on: str = "error", require_checks: bool = False) -> str:
    """One test case per target × rule: a failure for a finding at or above ``fail_on``,
    skipped when the rule was suppressed, could not run (a failure under ``require_checks``) or
    the target was not audited, passed (with the message as output) otherwise; a target that
    cannot be imported adds a failing 'import' case."""
    threshold = SEVERITIES.index(fail_on)
    cases = []
    for result in results:
        if result.status == "error":
            details = defined_at(result) if result.location.get("path") else result.message or result.hint
            cases.append({"classname": result.target, "name": "import", "failure": (result.hint, details), "type": "error"})
        fired = {f.code: f for f in result.findings}
        suppressed = {f.code for f in result.suppressed}
        unchecked = {code: item["reason"] for item in result.unchecked for code in item["codes"]}
        for rule in RULES:
            case: dict[str, Any] = {"classname": result.target, "name": f"{rule.code} {rule.name}"}
            finding = fired.get(rule.code)
            if finding is not None and SEVERITIES.index(finding.severity) <= threshold:
                path, line = place_of(finding, result)
                case["failure"] = (finding.message, f"{path}:{line}\nevidence: {json.dumps(finding.evidence, default=str)}\nfix: {finding.fix}")
                case["type"] = finding.severity
            elif finding is not None:
                case["output"] = f"{finding.severity}: {finding.message}"
            elif rule.code in suppressed:
                case["skipped"] = "suppressed by a lossaudit: ignore comment"
            elif rule.code in unchecked and require_checks:
                case["failure"] = (f"could not run: {unchecked[rule.code]}", "--require-checks: a check that could not run fails the target")
                case["type"] = "unchecked"
            elif rule.code in unchecked:
                case["skipped"] = f"could not run: {unchecked[rule.code]}"
            elif result.status != "audited":
                case["skipped"] = "not audited: " + result.hint
            cases.append(case)
    return junit_xml("lossaudit lint", cases)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(results: list[TargetResult], discovered: list[Candidate], require_checks: bool = False) -> str:
    """A summary for ``$GITHUB_STEP_SUMMARY``: one table of findings and one line per target (with
    the checks that could not run on it, and why)."""
    counts = summary(results)
    unchecked = sum(len(result.unchecked_codes) for result in results)
    out = [
        "## lossaudit lint",
        "",
        f"{plural(counts['errors'], 'error')}, {plural(counts['warnings'], 'warning')}, {plural(counts['infos'], 'info')}"
        f" in {plural(len(results), 'target')} ({counts['suppressed']} suppressed, {counts['uncallable']} not audited,"
        f" {counts['import_errors']} not imported, {counts['skipped']} skipped)"
        + (f"; {plural(unchecked, 'check')} could not run{' (--require-checks: fails)' if require_checks else ''}" if unchecked else ""),
        "",
    ]
    rows = [
        (result.target, *place_of(finding, result), finding)
        for result in results
        for finding in sorted(result.findings, key=lambda f: (SEVERITIES.index(f.severity), f.code))
    ]
    if rows:
        out += ["| target | location | rule | severity | message |", "| --- | --- | --- | --- | --- |"]
        out += [f"| `{_cell(t)}` | `{path}:{line}` | {f.code} `{f.name}` | {f.severity} | {_cell(f.message)} |" for t, path, line, f in rows]
        out.append("")
    out += ["### Targets", ""]
    for r in results:
        out.append(f"- `{_cell(r.target)}`: {_cell(detected_line(r).split(': ', 1)[1])}")
        if r.unchecked:
            out.append(f"  - {_cell(unchecked_line(r, require_checks))}: " + "; ".join(_cell(reason) for reason in unchecked_reasons(r)))
    return "\n".join(out) + "\n"


def render(
    format: str,
    results: list[TargetResult],
    discovered: list[Candidate],
    fail_on: str = "error",
    verbose: bool = False,
    require_checks: bool = False,
    width: int | None = None,
) -> str:
    """The report in ``format`` (text, json, sarif, github, junit, markdown); the text wrapped to ``width`` when given."""
    if format == "text":
        return render_text(results, discovered, verbose, require_checks, width)
    if format == "junit":
        return render_junit(results, discovered, fail_on, require_checks)
    if format == "json":
        return render_json(results, discovered)
    return {"sarif": render_sarif, "github": render_github, "markdown": render_markdown}[format](results, discovered, require_checks)


SUMMARY_MIN = 24
"""The narrowest column ``rules`` wraps a summary in beside its code, name and severity; on a
narrower terminal the summary goes on the lines below, indented."""


def render_rules(width: int | None = None) -> str:
    """One line per rule: code, name, severity, summary; with ``width``, the summary wrapped to it
    (words never cut)."""
    name_width = max(len(rule.name) for rule in RULES)
    lines = []
    for rule in RULES:
        prefix = f"{rule.code}  {rule.name:<{name_width}}  {rule.severity:<7}  "
        if width is None:
            lines.append(prefix + rule.summary)
        elif width - len(prefix) >= SUMMARY_MIN:
            lines += wrap(rule.summary, width, first=prefix, rest=" " * len(prefix))
        else:
            lines += [*wrap(f"{rule.code} {rule.name} {rule.severity}", width, rest="    "), *wrap(rule.summary, width, first="    ", rest="    ")]
    return "\n".join(lines) + "\n"


def render_rule(code: str, width: int | None = None) -> str:
    """One rule: its summary, explanation and fix (wrapped to ``width`` when given), and its wrong
    and right examples as written."""
    rule = RULES_BY_CODE[code]

    def indent(text: str) -> str:
        return "\n".join("    " + line for line in text.splitlines())

    def paragraph(text: str) -> str:
        return text if width is None else "\n".join(wrap(text, width))

    return (
        f"{paragraph(f'{rule.code} [{rule.name}] ({rule.severity})')}\n\n{paragraph(rule.summary + '.')}\n\n{paragraph(rule.explanation)}\n\n"
        f"Wrong:\n{indent(rule.wrong)}\n\nRight:\n{indent(rule.right)}\n\n{paragraph(f'Fix: {rule.fix}.')}\n"
    )
