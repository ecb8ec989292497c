"""``lossaudit explain``: one example worked through focal loss step by step."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional, cast

import typer

from lossaudit.cli.app import (
    Command,
    PlotOption,
    VerboseOption,
    app,
    fail,
    text_width,
)
from lossaudit.errors import InputError
from lossaudit.formats import DiffFormat
from lossaudit.losses.registry import PARAMS

if TYPE_CHECKING:
    from lossaudit.losses.spec import PerClassParam


@app.command(cls=Command)
def explain(
    logit: Annotated[Optional[float], typer.Option("--logit", help="Sigmoid: the element's logit.", metavar="X", rich_help_panel="Sigmoid")] = None,
    prob: Annotated[
        Optional[float],
        typer.Option("--prob", help="Sigmoid: the element's probability instead of its logit (0 < P < 1).", metavar="P", rich_help_panel="Sigmoid"),
    ] = None,
    target: Annotated[
        int,
        typer.Option("--target", help="Sigmoid: 1 for a positive, 0 for a negative; softmax: the target class index.", metavar="K", rich_help_panel="Example"),
    ] = 1,
    logits: Annotated[
        Optional[str],
        typer.Option("--logits", help="Softmax: the row's logits, comma-separated (2,0.5,-1).", metavar="X,...", rich_help_panel="Softmax"),
    ] = None,
    alpha: Annotated[
        Optional[float],
        typer.Option(
            "--alpha",
            help="Focal alpha: positives' weight for sigmoid (default 0.25; -1 off); for softmax, a scalar shown as the rescaling it is.",
            metavar="A",
            rich_help_panel="Example",
        ),
    ] = None,
    alpha_per_class: Annotated[
        Optional[str],
        typer.Option(
            "--alpha-per-class", help="Softmax: " + PARAMS["alpha_per_class"].help, metavar=PARAMS["alpha_per_class"].metavar, rich_help_panel="Softmax"
        ),
    ] = None,
    gamma: Annotated[float, typer.Option("--gamma", help="Focal gamma.", metavar="G", min=0.0, rich_help_panel="Example")] = 2.0,
    dump: Annotated[
        Optional[Path],
        typer.Option("--dump", help="Sigmoid: a dump whose data sets GHM-C's weight for this example's g.", metavar="DUMP", rich_help_panel="Sigmoid"),
    ] = None,
    ghm_bins: Annotated[int, typer.Option("--ghm-bins", help="GHM-C bins for --dump.", metavar="N", min=1, rich_help_panel="Sigmoid")] = 10,
    format: Annotated[DiffFormat, typer.Option("--format", help="Report format.", rich_help_panel="Report")] = DiffFormat.text,
    plot: PlotOption = None,
    verbose: VerboseOption = False,
) -> None:
    """Work one example through focal loss step by step: p, p_t, alpha_t, the factor, CE, FL and their gradients."""
    try:
        import json
        import math

        from lossaudit import explain as whiteboard

        if plot is not None:
            from lossaudit.render.plots import check_plot_path

            check_plot_path(plot)
        if (logits is None) == (logit is None and prob is None):
            raise InputError("give --logit X or --prob P (sigmoid), or --logits X,... (softmax)")
        if logits is not None:
            row = _numbers(logits, "--logits")
            per_class = list(cast("PerClassParam", PARAMS["alpha_per_class"]).parse(alpha_per_class)) if alpha_per_class else None
            steps = whiteboard.softmax_steps(row, target, gamma, alpha, per_class)
            title = f"softmax focal loss, logits {logits}, target class {target}"
        else:
            if logit is not None and prob is not None:
                raise InputError("--logit and --prob: give one")
            if prob is not None and not 0 < prob < 1:
                raise InputError(f"--prob {prob}: expected 0 < P < 1")
            x = logit if logit is not None else math.log(cast(float, prob) / (1 - cast(float, prob)))
            steps = whiteboard.sigmoid_steps(x, target, 0.25 if alpha is None else alpha, gamma)
            if dump is not None:
                from lossaudit.api import compare as compare_api
                from lossaudit.losses.density import GHM

                report = compare_api(dump, losses=[GHM], bins=ghm_bins, ghm_bins=ghm_bins).to_dict()
                steps["ghm_weight"] = whiteboard.ghm_weight_in(report, steps["g"]["value"])
            title = f"sigmoid focal loss, one {'positive' if target == 1 else 'negative'} at p = {steps['p']['value']:.4g}"
        sys.stdout.write(json.dumps(steps, indent=2) + "\n" if format is DiffFormat.json else whiteboard.render(steps, title, text_width()))
        if plot is not None:
            from lossaudit.render.plots import explain_figure, save

            save(explain_figure(steps, target, gamma), plot)
    except (InputError, ValueError) as error:  # bad options, and the whiteboard's argument checks
        fail(str(error), verbose)


def _numbers(text: str, option: str) -> list[float]:
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise InputError(f"{option} {text!r}: expected comma-separated numbers") from None
