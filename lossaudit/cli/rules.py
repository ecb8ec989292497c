"""``lossaudit rules`` and ``lossaudit losses``: the lint rules and the loss registry, listed."""

from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer

from lossaudit.cli.app import (
    Command,
    app,
    fail,
    text_width,
)
from lossaudit.formats import LossesFormat


@app.command(cls=Command)
def rules(
    code: Annotated[Optional[str], typer.Argument(help="A rule code (FL001) to explain; none lists every rule.", show_default=False, metavar="CODE")] = None,
) -> None:
    """List the lint rules, or explain one with a wrong and a right example."""
    from lossaudit.lint.report import render_rule, render_rules
    from lossaudit.lint.rules import RULES_BY_CODE

    if code is None:
        sys.stdout.write(render_rules(text_width()))
    elif code.upper() in RULES_BY_CODE:
        sys.stdout.write(render_rule(code.upper(), text_width()))
    else:
        fail(f"unknown rule code {code}; `lossaudit rules` lists them", False)


@app.command(cls=Command)
def losses(
    format: Annotated[
        LossesFormat, typer.Option("--format", help="Listing format (markdown: the README's tables).", rich_help_panel="Report")
    ] = LossesFormat.text,
) -> None:
    """List every loss compare computes, with its family, when it is a default and its parameters (defaults, allowed values), and the lint kinds."""
    from lossaudit.render.losses import render

    sys.stdout.write(render(LossesFormat(format).value))
