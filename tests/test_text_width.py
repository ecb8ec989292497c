"""Plain-text outputs honour the terminal width (issue 26 point 6): ``rules``, ``rules CODE`` and
``explain`` wrap to ``$COLUMNS`` (or the terminal) without cutting or losing a word; piped without
``$COLUMNS`` they stay as wide as their content. Before: 94–107 character lines at 60 columns."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from lossaudit.cli import app
from lossaudit.lint.rules import RULES

pytestmark = pytest.mark.torch_free  # also run without torch, on every Python (.ci/run)

COMMANDS = [
    ["rules"],
    *(["rules", rule.code] for rule in RULES[:: max(len(RULES) // 6, 1)]),
    ["explain", "--logit", "2", "--target", "1"],
    ["explain", "--prob", "0.3", "--target", "0", "--alpha", "0.5"],
    ["explain", "--logits", "1,2,-3", "--target", "2", "--alpha-per-class", "0.2,0.3,0.5"],
]


def _run(arguments: list[str], columns: int | None) -> str:
    """stdout of ``lossaudit ARGUMENTS`` not on a terminal, with ``$COLUMNS`` set or unset."""
    result = CliRunner().invoke(app, arguments, env={"COLUMNS": str(columns) if columns else None})
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.mark.parametrize("arguments", COMMANDS, ids=" ".join)
@pytest.mark.parametrize("columns", [40, 60, 80])
def test_text_fits_the_width_and_keeps_every_word(arguments, columns):
    wide, narrow = _run(arguments, None), _run(arguments, columns)
    code = set(wide.splitlines()) if arguments[0] == "rules" and len(arguments) == 2 else set()  # a rule's examples stay as written
    code = {line for line in code if line.startswith("    ")}
    assert all(len(line) <= columns for line in narrow.splitlines() if line not in code), narrow
    assert narrow.split() == wide.split()


def test_piped_without_columns_each_rule_is_one_line():
    assert len(_run(["rules"], None).splitlines()) == len(RULES)
