"""Inline suppression: ``# lossaudit: ignore[FL001,FL019]`` (or ``# lossaudit: ignore`` for every
rule) on a target's ``class``/``def`` header: its first line, or any line of a signature that spans
several (as black and ``ruff format`` write a long one, the comment after ``) -> T:``). A target
whose header suppresses every rule is not run at all (:func:`silenced`)."""

from __future__ import annotations

import io
import re
import tokenize
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


def _header_comments(path: str | Path, line: int) -> str:
    """The comments of the definition whose first line (or first decorator's) is line ``line``
    (1-based) of ``path``: its decorators and its header, however many physical lines its signature
    takes, one comment per line; the physical line alone where the rest does not tokenize; empty
    when the file cannot be read."""
    try:
        lines = read_source(path).splitlines(keepends=True)[line - 1 :]
    except (OSError, UnicodeDecodeError, SyntaxError):
        return ""
    if not lines:
        return ""
    comments = []
    decorator = at_start = True  # a decorator's line: the definition's header is the next logical line
    try:
        for token in tokenize.generate_tokens(io.StringIO("".join(lines)).readline):
            if token.type == tokenize.COMMENT:
                comments.append(token.string)
            elif token.type == tokenize.NEWLINE:
                if not decorator:
                    break
                at_start = True
            elif at_start and token.type not in (tokenize.NL, tokenize.INDENT, tokenize.DEDENT):
                decorator, at_start = token.string == "@", False
    except (tokenize.TokenError, IndentationError, SyntaxError):
        return lines[0]
    return "\n".join(comments)


def silenced(path: str | Path, line: int) -> bool:
    """Whether the definition at ``path:line`` suppresses every rule (a bare ``# lossaudit: ignore``)."""
    return suppressed_codes(_header_comments(path, line)) is ALL


def apply_suppressions(result: TargetResult) -> None:
    """Move the findings suppressed on the target's definition line to ``result.suppressed``, and
    drop the suppressed codes from the checks that could not run (``result.unchecked``)."""
    path, line = result.location.get("path"), result.location.get("line")
    if not path or not line:
        return
    codes = suppressed_codes(_header_comments(path, line))
    if not codes:
        return
    keep: list[Finding] = []
    for finding in result.findings:
        (result.suppressed if codes is ALL or finding.code in codes else keep).append(finding)
    result.findings = keep
    filter_unchecked(result, lambda code: codes is not ALL and code not in codes)
