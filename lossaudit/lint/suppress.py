"""Inline suppression: ``# lossaudit: ignore[FL001,FL019]`` (or ``# lossaudit: ignore`` for every
rule) on a target's ``class``/``def`` line. A target whose line suppresses every rule is not run at
all (:func:`silenced`)."""

from __future__ import annotations

import re
from pathlib import Path

from lossaudit.io.symbols import read_source
from lossaudit.lint.findings import Finding, TargetResult, filter_unchecked

COMMENT = re.compile(r"#\s*lossaudit:\s*ignore\b(?:\[([^\]]*)\])?", re.IGNORECASE)
ALL = frozenset({"*"})


def suppressed_codes(line_text: str) -> frozenset[str]:
    """The codes a line's comment suppresses: empty, :data:`ALL`, or the listed codes."""
    match = COMMENT.search(line_text)
    if match is None:
        return frozenset()
    if match.group(1) is None:
        return ALL
    return frozenset(code.strip().upper() for code in match.group(1).split(",") if code.strip())


def _line_text(path: str | Path, line: int) -> str:
    """Line ``line`` (1-based) of ``path``; empty when it cannot be read."""
    try:
        return read_source(path).splitlines()[line - 1]
    except (OSError, UnicodeDecodeError, SyntaxError, IndexError):
        return ""


def silenced(path: str | Path, line: int) -> bool:
    """Whether the definition at ``path:line`` suppresses every rule (a bare ``# lossaudit: ignore``)."""
    return suppressed_codes(_line_text(path, line)) is ALL


def apply_suppressions(result: TargetResult) -> None:
    """Move the findings suppressed on the target's definition line to ``result.suppressed``, and
    drop the suppressed codes from the checks that could not run (``result.unchecked``)."""
    path, line = result.location.get("path"), result.location.get("line")
    if not path or not line:
        return
    codes = suppressed_codes(_line_text(path, line))
    if not codes:
        return
    keep: list[Finding] = []
    for finding in result.findings:
        (result.suppressed if codes is ALL or finding.code in codes else keep).append(finding)
    result.findings = keep
    filter_unchecked(result, lambda code: codes is not ALL and code not in codes)
