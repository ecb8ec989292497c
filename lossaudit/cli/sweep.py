"""``lossaudit sweep``: a focal loss (sigmoid, or softmax on single-label data) under a grid of settings, from one pass."""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from lossaudit.cli.app import (
    AlsoOption,
    BackgroundIndexOption,
    BinsOption,
    ClassDimOption,
    ClassNamesOption,
    Command,
    DumpInputs,
    DumpInputsOption,
    IgnoreIndexOption,
    LabelBaseOption,
    LogitsKeyOption,
    OutputOption,
    PlotOption,
    TargetEncoding,
    TargetsKeyOption,
    TargetsOption,
    VerboseOption,
    app,
    fail,
    fail_internal,
    parse_also,
    piped_width,
)
from lossaudit.errors import InputError
from lossaudit.formats import SweepFormat
from lossaudit.losses.focusing import FOCAL, SOFTMAX_FOCAL
from lossaudit.losses.registry import PARAMS

SweepLoss = Enum("SweepLoss", [("auto", "auto")] + [(loss.replace("-", "_"), loss) for loss in (FOCAL, SOFTMAX_FOCAL)], type=str)  # type: ignore[misc]  # members from the registry
"""``--loss``: auto, or the focal loss swept (members ``focal`` and ``softmax_focal``)."""


@app.command(cls=Command)
def sweep(
    paths: Annotated[
        Optional[list[Path]],
        typer.Argument(help="Dumps: .npz, .npy, .pt/.pth files, or folders of them (one batch per file).", show_default=False, metavar="DUMP"),
    ] = None,
    loss: Annotated[
        SweepLoss,
        typer.Option(
            "--loss",
            help="The loss swept: focal (sigmoid: --gamma × --alpha), softmax-focal (--gamma × --alpha-per-class), or auto: the one that fits the data (softmax-focal on single-label data, focal on detection-style data and heatmaps).",
            rich_help_panel="Settings",
        ),
    ] = SweepLoss.auto,  # type: ignore[attr-defined]
    gamma: Annotated[str, typer.Option("--gamma", help="Comma list of focal gammas (each ≥ 0).", metavar="X,...", rich_help_panel="Settings")] = "0,0.5,1,2,5",
    alpha: Annotated[
        Optional[str],
        typer.Option(
            "--alpha",
            help="Comma list of focal alphas (each in [0, 1], or -1: no weighting) [default: 0.25,0.5,0.75,-1]; focal only (a scalar alpha only rescales softmax-focal).",
            show_default=False,
            metavar="X,...",
            rich_help_panel="Settings",
        ),
    ] = None,
    alpha_per_class: Annotated[
        Optional[list[str]],
        typer.Option(
            "--alpha-per-class",
            help=PARAMS["alpha_per_class"].help
            + " Repeatable: each one more setting per gamma (softmax-focal: beside no alpha; focal: after the --alpha values).",
            metavar=PARAMS["alpha_per_class"].metavar,
            rich_help_panel="Settings",
        ),
    ] = None,
    bins: BinsOption = 10,
    logits_key: LogitsKeyOption = None,
    targets_key: TargetsKeyOption = None,
    targets: TargetsOption = TargetEncoding.auto,
    background_index: BackgroundIndexOption = None,
    ignore_index: IgnoreIndexOption = -1,
    class_dim: ClassDimOption = None,
    inputs: DumpInputsOption = DumpInputs.auto,
    label_base: LabelBaseOption = 0,
    class_names: ClassNamesOption = None,
    format: Annotated[SweepFormat, typer.Option("--format", help="Report format.", rich_help_panel="Report")] = SweepFormat.text,
    output: OutputOption = None,
    also: AlsoOption = None,
    plot: PlotOption = None,
    verbose: VerboseOption = False,
) -> None:
    """A focal loss under every setting, from one pass over the dumps: the sigmoid focal loss (--gamma × --alpha) or, on single-label data, softmax-focal (--gamma × --alpha-per-class); a summary, shares of loss and gradient, top classes, cumulative loss."""
    try:
        from lossaudit.io.dataset import LoadOptions, read_class_names
        from lossaudit.io.readers import SUFFIXES as DUMP_SUFFIXES
        from lossaudit.render.compare import render_json
        from lossaudit.render.formats import refuse_overwriting_inputs, write_report
        from lossaudit.sweep.render import print_text, render_markdown, render_text
        from lossaudit.sweep.run import run as run_sweep

        vector_files = [Path(text) for text in alpha_per_class or [] if Path(text).is_file()]
        also_files = parse_also(also, SweepFormat, output)
        for file in [output, *(file for _, file in also_files)]:
            refuse_overwriting_inputs(file, [*(paths or []), *([class_names] if class_names else []), *vector_files], DUMP_SUFFIXES)
        if plot is not None:
            from lossaudit.render.plots import check_plot_path

            check_plot_path(plot, output)
        options = LoadOptions(
            logits_key=logits_key,
            targets_key=targets_key,
            targets=TargetEncoding(targets).value,
            background_index=background_index,
            ignore_index=ignore_index,
            class_dim=class_dim,
            inputs=DumpInputs(inputs).value,
            label_base=label_base,
            class_names=read_class_names(class_names) if class_names else None,
        )
        document = run_sweep(paths or [], options, gamma, alpha, bins, SweepLoss(loss).value, alpha_per_class or [])
        for chosen, file in [(SweepFormat(format), output), *also_files]:
            if chosen is SweepFormat.text and file is None and sys.stdout.isatty():
                from rich.console import Console

                print_text(document, Console())
                continue
            renderers = {
                SweepFormat.json: render_json,
                SweepFormat.markdown: render_markdown,
                SweepFormat.text: lambda document: render_text(document, piped_width(file)),
            }
            write_report(renderers[chosen](document), file)
        if plot is not None:
            from lossaudit.render.plots import plot_sweep

            plot_sweep(document, plot)
    except InputError as error:
        fail(str(error), verbose)
    except Exception as error:  # an internal error must not exit 1 by accident
        fail_internal(error, verbose)
