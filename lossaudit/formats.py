"""The output formats of each command, declared once: the choices of its ``--format`` option and of
the ``format`` key of its configuration section (:mod:`lossaudit.io.config`). The first member is
the default."""

from __future__ import annotations

from enum import Enum


class CompareFormat(str, Enum):
    text = "text"
    json = "json"
    markdown = "markdown"
    github = "github"
    junit = "junit"
    html = "html"


class LintFormat(str, Enum):
    text = "text"
    json = "json"
    sarif = "sarif"
    github = "github"
    junit = "junit"
    markdown = "markdown"


class SweepFormat(str, Enum):
    text = "text"
    json = "json"
    markdown = "markdown"


class DiffFormat(str, Enum):
    """``diff`` and ``explain``."""

    text = "text"
    json = "json"


class LossesFormat(str, Enum):
    text = "text"
    markdown = "markdown"
    json = "json"


FORMATS: dict[str, tuple[str, ...]] = {
    command: tuple(member.value for member in enum)
    for command, enum in (("compare", CompareFormat), ("lint", LintFormat), ("sweep", SweepFormat), ("diff", DiffFormat), ("losses", LossesFormat))
}
"""Each command's formats by name, for the configuration's checks."""
