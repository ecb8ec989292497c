"""``lossaudit sweep``: sigmoid focal loss under a grid of gamma and alpha, from one pass."""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape as plain  # help is rendered as Rich markup: "[tool.lossaudit]" must stay text

from lossaudit.cli.app import (
    BackgroundIndexOption,
    BinsOption,
    ClassDimOption,
    ClassNamesOption,
    Command,
    IgnoreIndexOption,
    Inputs,
    InputsOption,
    LogitsKeyOption,
    OutputOption,
    PlotOption,
    TargetEncoding,
    TargetsKeyOption,
    TargetsOption,
    VerboseOption,
    app,
    fail,
    piped_width,
)
from lossaudit.errors import InputError


class SweepFormat(str, Enum):
    text = "text"
    json = "json"


@app.command(cls=Command)
def sweep(
    paths: Annotated[Optional[list[Path]], typer.Argument(help=plain("Dumps: .npz, .npy, .pt/.pth files, or folders of them (one batch per file)."), show_default=False, metavar="DUMP")] = None,
    gamma: Annotated[str, typer.Option("--gamma", help=plain("Comma list of focal gammas (each ≥ 0)."), metavar="X,...", rich_help_panel="Settings")] = "0,0.5,1,2,5",
    alpha: Annotated[str, typer.Option("--alpha", help=plain("Comma list of focal alphas (each in [0, 1], or -1: no weighting)."), metavar="X,...", rich_help_panel="Settings")] = "0.25,0.5,0.75,-1",
    bins: BinsOption = 10,
    logits_key: LogitsKeyOption = None,
    targets_key: TargetsKeyOption = None,
    targets: TargetsOption = TargetEncoding.auto,
    background_index: BackgroundIndexOption = None,
    ignore_index: IgnoreIndexOption = -1,
    class_dim: ClassDimOption = None,
    inputs: InputsOption = Inputs.auto,
    class_names: ClassNamesOption = None,
    format: Annotated[SweepFormat, typer.Option("--format", help=plain("Report format."), rich_help_panel="Report")] = SweepFormat.text,
    output: OutputOption = None,
    plot: PlotOption = None,
    verbose: VerboseOption = False,
) -> None:
    """Sigmoid focal loss under every --gamma × --alpha setting, from one pass over the dumps: shares of loss and gradient, top classes, cumulative loss."""
    try:
        from lossaudit.io.dataset import LoadOptions, read_class_names
        from lossaudit.io.readers import SUFFIXES as DUMP_SUFFIXES
        from lossaudit.render.compare import render_json
        from lossaudit.render.formats import refuse_overwriting_inputs, write_report
        from lossaudit.sweep.render import print_text, render_text
        from lossaudit.sweep.run import run as run_sweep

        refuse_overwriting_inputs(output, [*(paths or []), *([class_names] if class_names else [])], DUMP_SUFFIXES)
        if plot is not None:
            from lossaudit.render.plots import check_plot_path

            check_plot_path(plot, output)
        options = LoadOptions(logits_key=logits_key, targets_key=targets_key, targets=TargetEncoding(targets).value, background_index=background_index,
                              ignore_index=ignore_index, class_dim=class_dim, inputs=Inputs(inputs).value,
                              class_names=read_class_names(class_names) if class_names else None)
        document = run_sweep(paths or [], options, gamma, alpha, bins)
        if format is SweepFormat.json:
            write_report(render_json(document), output)
        elif output is None and sys.stdout.isatty():
            print_text(document, Console())
        else:
            write_report(render_text(document, piped_width(output)), output)
        if plot is not None:
            from lossaudit.render.plots import plot_sweep

            plot_sweep(document, plot)
    except InputError as error:
        fail(str(error), verbose)
    except Exception as error:  # an internal error must not exit 1 by accident
        fail(f"internal error: {type(error).__name__}: {error}", verbose)
