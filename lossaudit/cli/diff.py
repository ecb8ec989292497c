"""``lossaudit diff``: the changes between two ``compare`` reports, and the share-move gate."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from lossaudit.cli.app import (
    Command,
    OutputOption,
    VerboseOption,
    app,
    fail,
    gate_share_moves,
)
from lossaudit.errors import InputError
from lossaudit.formats import DiffFormat


@app.command(cls=Command)
def diff(
    old: Annotated[Path, typer.Argument(help="The baseline report (compare --format json).", metavar="OLD", show_default=False)],
    new: Annotated[Path, typer.Argument(help="The new report.", metavar="NEW", show_default=False)],
    format: Annotated[DiffFormat, typer.Option("--format", help="Report format.", rich_help_panel="Report")] = DiffFormat.text,
    fail_if_share_moves: Annotated[
        Optional[float],
        typer.Option(
            "--fail-if-share-moves",
            help="Exit 1 when a loss's share of a class or difficulty bin moves by at least PCT percentage points.",
            metavar="PCT",
            min=0.0,
            rich_help_panel="CI",
        ),
    ] = None,
    output: OutputOption = None,
    verbose: VerboseOption = False,
) -> None:
    """Show how two compare reports differ: loss shares per class and difficulty bin, findings."""
    try:
        import json

        from lossaudit.compare.report.baseline import (
            changes,
            read_report,
            render_changes,
        )
        from lossaudit.render.formats import refuse_overwriting_inputs, write_report

        refuse_overwriting_inputs(output, [old, new], (".json",))
        section = changes(read_report(new), read_report(old), str(old))
        write_report(json.dumps(section, indent=2) + "\n" if format is DiffFormat.json else render_changes(section), output)
    except InputError as error:
        fail(str(error), verbose)
    gate_share_moves(section, fail_if_share_moves)
