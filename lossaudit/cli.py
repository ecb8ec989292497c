"""Command line: parse options, call the library, pick a renderer, choose the exit code.

Exit codes: 0 done, 1 findings that fail the run (``--strict``), 2 could not run. torch is
imported inside the commands, so ``--help`` and ``--version`` stay fast.
"""

from __future__ import annotations

import inspect
import os
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import (
    escape as plain,  # help is rendered as Rich markup: "[tool.lossaudit]" must stay text
)

from lossaudit import __version__
from lossaudit.errors import InputError
from lossaudit.losses.registry import BASE_LOSSES, LINT_KINDS, LOSS_IDS, LOSSES, PARAMS

EXIT_OK, EXIT_FINDINGS, EXIT_ERROR = 0, 1, 2


class _PlainHelp:
    """Help without Python type placeholders: ``-h/--help`` is a flag (Typer shows ``<bool>``;
    lossaudit's own flags say so with ``metavar=""``), and an argument is named by its metavar
    alone (Typer adds ``<list[Path]>``)."""

    def get_help_option(self, ctx):
        option = super().get_help_option(ctx)
        if option is not None:
            option.metavar = ""
        return option

    def get_params(self, ctx):
        params = super().get_params(ctx)
        for param in params:
            if isinstance(param, typer.core.TyperArgument):
                param.display_type_rich = _no_type
        return params


def _no_type(ctx) -> None:
    return None


class Command(_PlainHelp, typer.core.TyperCommand):
    pass


class Group(_PlainHelp, typer.core.TyperGroup):
    pass


app = typer.Typer(
    cls=Group,
    name="lossaudit",
    help=plain("Audit focal, GHM and cross-entropy losses on your predictions and your loss code."),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
stderr = Console(stderr=True)


class TargetEncoding(str, Enum):
    auto = "auto"
    index = "index"
    onehot = "onehot"
    soft = "soft"
    heatmap = "heatmap"


class Inputs(str, Enum):
    auto = "auto"
    logits = "logits"
    probs = "probs"


class CompareFormat(str, Enum):
    text = "text"
    json = "json"
    markdown = "markdown"
    github = "github"
    junit = "junit"
    html = "html"


class DiffFormat(str, Enum):
    text = "text"
    json = "json"


class LintFormat(str, Enum):
    text = "text"
    json = "json"
    sarif = "sarif"
    github = "github"
    junit = "junit"
    markdown = "markdown"


Kind = Enum("Kind", [("auto", "auto")] + [(kind.replace("-", "_"), kind) for kind in LINT_KINDS], type=str)
"""``lint --kind``: auto, or a kind of the loss registry."""


class LintTargets(str, Enum):
    auto = "auto"
    index = "index"
    onehot = "onehot"


class Severity(str, Enum):
    error = "error"
    warning = "warning"
    info = "info"


ConfigOption = Annotated[
    Optional[Path],
    typer.Option("--config", metavar="FILE", rich_help_panel="CI", help=plain("Read options from this pyproject.toml ([tool.lossaudit]) or lossaudit.yaml instead of the nearest one.")),
]
IsolatedOption = Annotated[bool, typer.Option("--isolated", metavar="", rich_help_panel="CI", help=plain("Ignore configuration files."))]
OutputOption = Annotated[Optional[Path], typer.Option(metavar="FILE", rich_help_panel="Report", help=plain("Write the report to this file instead of stdout (whole: a temporary file, then a rename)."))]
PlotOption = Annotated[Optional[Path], typer.Option("--plot", metavar="FILE", rich_help_panel="Report", help=plain("Also draw the plots to this new .png or .svg file (needs the plot extra: pip install 'lossaudit[plot]'); never overwrites a file."))]
VerboseOption = Annotated[bool, typer.Option("--verbose", "-v", metavar="", rich_help_panel="Report", help=plain("Show tracebacks of errors (lint: also the probes that could not run)."))]
INIT_HELP = "KEY=VALUE keyword for the constructor (lint: a class target, or the call of a function; compare: the --arch class); values are Python literals. Repeatable."


# Input options of compare and sweep, declared once.
LogitsKeyOption = Annotated[Optional[str], typer.Option(help=plain("Key of the logits (default: logits, pred, preds, outputs, scores)."), metavar='KEY', rich_help_panel='Input')]
TargetsKeyOption = Annotated[Optional[str], typer.Option(help=plain("Key of the targets (default: targets, labels, target, label, gt, y)."), metavar='KEY', rich_help_panel='Input')]
TargetsOption = Annotated[TargetEncoding, typer.Option(help=plain("Target encoding; auto detects it."), rich_help_panel='Input')]
BackgroundIndexOption = Annotated[Optional[int], typer.Option(help=plain("Index label meaning background (default: C, the number of classes)."), metavar='N', rich_help_panel='Input')]
IgnoreIndexOption = Annotated[int, typer.Option(help=plain("Index label meaning ignore."), metavar='N', rich_help_panel='Input')]
ClassDimOption = Annotated[Optional[int], typer.Option(help=plain("Class axis of the logits (default: last for 2-D/3-D, 1 for 4-D)."), metavar='AXIS', rich_help_panel='Input')]
InputsOption = Annotated[Inputs, typer.Option(help=plain("Whether the dump holds logits or probabilities; auto reads logits and warns if they look like probabilities."), rich_help_panel='Input')]
ClassNamesOption = Annotated[Optional[Path], typer.Option(help=plain("File of class names: one per line, a YAML list or a YAML mapping {index: name}."), metavar='FILE', rich_help_panel='Input')]
BinsOption = Annotated[int, typer.Option(help=plain("Difficulty bins of g for the per-difficulty table."), metavar='N', rich_help_panel='Losses')]


def _losses_help() -> str:
    """``--losses``'s help, from the registry: every loss, the defaults and the data that adds some."""
    extras: dict[str, list[str]] = {}
    for loss, spec in LOSSES.items():
        if spec.default_when is not None and spec.default_on:
            extras.setdefault(spec.default_on, []).append(loss)
    added = ", ".join(f"+{','.join(losses)} for {data}" for data, losses in extras.items())
    return f"Comma list of {', '.join(LOSS_IDS)} [default: {','.join(BASE_LOSSES)}; {added}]."


def with_loss_options(after: str):
    """Add an option for every hyper-parameter of the loss registry to a command, after its
    parameter ``after``, in the Losses panel; the command takes them as ``**loss_options``."""

    def add(command):
        signature = inspect.signature(command, eval_str=True)
        params = [p for p in signature.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
        at = [p.name for p in params].index(after) + 1
        options = []
        for name, param in PARAMS.items():
            kind = Optional[str] if param.default is None else int if param.integer else float
            option = typer.Option(param.option, help=plain(param.help), metavar=param.metavar, rich_help_panel="Losses", show_default=param.default is not None)
            options.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=param.default, annotation=Annotated[kind, option]))
        params = params[:at] + [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in params[at:]]
        params[at:at] = options
        command.__signature__ = signature.replace(parameters=params)
        command.__annotations__ = {**command.__annotations__, **{p.name: p.annotation for p in options}}
        return command

    return add


def init_option(panel: str):
    """``--init``, shown in ``panel`` (compare: Model; lint: Target)."""
    return Annotated[Optional[list[str]], typer.Option("--init", metavar="KEY=VALUE", rich_help_panel=panel, help=plain(INIT_HELP))]


def _config_values(ctx: typer.Context, section: dict, skip: tuple[str, ...] = ()) -> dict[str, object]:
    """Values from a configuration section for the options the command line left at their default."""
    values = {}
    for key, value in section.items():
        name = key.replace("-", "_")
        if key in skip or name not in ctx.params:
            continue
        if ctx.get_parameter_source(name).name == "DEFAULT":
            values[name] = ",".join(value) if isinstance(value, list) else value
    return values


def _version(value: bool) -> None:
    if value:
        print(f"lossaudit {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[
        bool, typer.Option("--version", metavar="", callback=_version, is_eager=True, help=plain("Print the version and exit."))
    ] = False,
) -> None:
    """Audit focal, GHM and cross-entropy losses on your predictions and your loss code."""


@app.command(cls=Command)
@with_loss_options(after="losses")
def compare(
    ctx: typer.Context,
    paths: Annotated[Optional[list[Path]], typer.Argument(help=plain("Dumps: .npz, .npy, .pt/.pth files, or folders of them (one batch per file). Optional with --model."), show_default=False, metavar='DUMP')] = None,
    logits_key: LogitsKeyOption = None,
    targets_key: TargetsKeyOption = None,
    targets: TargetsOption = TargetEncoding.auto,
    background_index: BackgroundIndexOption = None,
    ignore_index: IgnoreIndexOption = -1,
    class_dim: ClassDimOption = None,
    inputs: InputsOption = Inputs.auto,
    class_names: ClassNamesOption = None,
    losses: Annotated[Optional[str], typer.Option(help=plain(_losses_help()), show_default=False, metavar='LOSS,...', rich_help_panel='Losses')] = None,
    bins: BinsOption = 10,
    top: Annotated[Optional[int], typer.Option(help=plain("Show only the K classes with the largest loss (of the loss with the largest total, or --top-by)."), min=1, metavar='K', rich_help_panel='Report')] = None,
    top_by: Annotated[Optional[str], typer.Option(help=plain("The loss --top ranks classes by (one of those shown)."), metavar='LOSS', rich_help_panel='Report')] = None,
    baseline: Annotated[Optional[Path], typer.Option("--baseline", help=plain("A previous report (compare --format json) to show the changes since: loss shares per class and per difficulty bin, findings that appeared or disappeared."), metavar='REPORT', rich_help_panel='CI')] = None,
    fail_if_share_moves: Annotated[Optional[float], typer.Option("--fail-if-share-moves", help=plain("With --baseline: exit 1 when a loss's share of a class or difficulty bin moves by at least PCT percentage points."), metavar='PCT', min=0.0, rich_help_panel='CI')] = None,
    strict: Annotated[bool, typer.Option("--strict", help=plain("Exit 1 on a data finding that gates: non-finite logits, labels out of range, probabilities saved as logits, dumps of mixed runs, and background or multi-hot rows when a softmax loss was asked for."), metavar='', rich_help_panel='CI')] = False,
    format: Annotated[CompareFormat, typer.Option("--format", help=plain("Report format."), rich_help_panel='Report')] = CompareFormat.text,
    output: OutputOption = None,
    plot: PlotOption = None,
    model: Annotated[Optional[Path], typer.Option("--model", help=plain("Checkpoint to run instead of reading dumps: a state dict (with --arch), .safetensors, TorchScript or .pt2 (with --trust-model)."), metavar='FILE', rich_help_panel='Model')] = None,
    data: Annotated[Optional[Path], typer.Option("--data", help=plain("With --model: .npz/.pt holding the model input (inputs, x or images) and the targets."), metavar='FILE', rich_help_panel='Model')] = None,
    arch: Annotated[Optional[str], typer.Option("--arch", help=plain("With a state dict: the model class, package.module:Class or path/to/file.py:Class."), metavar='TARGET', rich_help_panel='Model')] = None,
    init: init_option("Model") = None,
    trust_model: Annotated[bool, typer.Option("--trust-model", help=plain("Allow TorchScript and torch.export checkpoints, which run code from the file when loaded."), metavar='', rich_help_panel='Model')] = False,
    inputs_key: Annotated[Optional[str], typer.Option(help=plain("Key of the model input in --data (default: inputs, x, images)."), metavar='KEY', rich_help_panel='Model')] = None,
    output_key: Annotated[Optional[str], typer.Option(help=plain("Which output holds the logits when the model returns a tuple (an index) or a dict (a key; default: logits)."), metavar='KEY', rich_help_panel='Model')] = None,
    batch_size: Annotated[int, typer.Option(help=plain("Samples per model call."), min=1, metavar='N', rich_help_panel='Model')] = 256,
    device: Annotated[str, typer.Option(help=plain("cpu or cuda (cuda only when available)."), metavar='DEVICE', rich_help_panel='Model')] = "cpu",
    save_logits: Annotated[Optional[Path], typer.Option(help=plain("Write the model's logits and targets to this .npz (or folder), in lossaudit's dump format; never overwrites."), metavar='FILE', rich_help_panel='Model')] = None,
    config: ConfigOption = None,
    isolated: IsolatedOption = False,
    verbose: VerboseOption = False,
    **loss_options: object,
) -> None:
    """Compare cross-entropy, focal, softmax focal, GHM-C and related losses on saved predictions or a model's outputs."""
    try:
        from lossaudit.api import compare as compare_api
        from lossaudit.compare.report.baseline import render_changes
        from lossaudit.compare.report.build import gating
        from lossaudit.io.config import load_config
        from lossaudit.io.readers import SUFFIXES as DUMP_SUFFIXES
        from lossaudit.io.symbols import parse_init
        from lossaudit.render.compare import (
            print_text,
            ranking_loss,
            render_github,
            render_json,
            render_junit,
            render_markdown,
            render_text,
        )
        from lossaudit.render.formats import refuse_overwriting_inputs, write_report
        from lossaudit.render.html import render_html

        settings_file = load_config(config, isolated)
        o = {**ctx.params, **_config_values(ctx, settings_file.compare)}
        read = [*(paths or []), settings_file.source, *(Path(o[key]) for key in ("class_names", "alpha_per_class", "baseline") if isinstance(o[key], (str, Path))), model, data]
        refuse_overwriting_inputs(output, read, DUMP_SUFFIXES)
        if plot is not None:
            from lossaudit.render.plots import check_plot_path

            check_plot_path(plot, output)
        if o["fail_if_share_moves"] is not None and not o["baseline"]:
            raise InputError("--fail-if-share-moves goes with --baseline REPORT")
        report = compare_api(
            paths or None,
            class_names=o["class_names"],
            losses=o["losses"],
            **{name: o[name] for name in PARAMS},
            bins=o["bins"],
            logits_key=o["logits_key"],
            targets_key=o["targets_key"],
            targets_encoding=TargetEncoding(o["targets"]).value,
            background_index=o["background_index"],
            ignore_index=o["ignore_index"],
            class_dim=o["class_dim"],
            inputs=Inputs(o["inputs"]).value,
            model=model,
            data=data,
            arch=arch,
            init=parse_init(init) if init else None,
            trust_model=trust_model,
            inputs_key=inputs_key,
            output_key=output_key,
            batch_size=batch_size,
            device=device,
            save_logits=save_logits,
            baseline=o["baseline"],
        ).to_dict()
        chosen, strict, top, top_by = CompareFormat(o["format"]), o["strict"], o["top"], o["top_by"]
        if top_by is not None:
            ranking_loss(report, top_by)  # an unknown loss is an error whatever the format
        since = render_changes(report["baseline"]) if o["baseline"] else ""
        if chosen is CompareFormat.text and output is None and sys.stdout.isatty():
            print_text(report, Console(), top, top_by)
            sys.stdout.write(("\n" + since) if since else "")
        elif chosen is CompareFormat.text:
            write_report(render_text(report, _piped_width(output), top, top_by) + (("\n" + since) if since else ""), output)
        elif chosen is CompareFormat.markdown and since:
            write_report(render_markdown(report, top, top_by) + f"\n```\n{since}```\n", output)
        else:
            renderers = {
                CompareFormat.json: lambda: render_json(report),
                CompareFormat.markdown: lambda: render_markdown(report, top, top_by),
                CompareFormat.github: lambda: render_github(report, strict),
                CompareFormat.junit: lambda: render_junit(report),
                CompareFormat.html: lambda: render_html(report, top, top_by, since),
            }
            write_report(renderers[chosen](), output)
        if plot is not None:
            from lossaudit.render.plots import plot_report

            plot_report(report, plot)
    except InputError as error:
        _fail(str(error), verbose)
    except Exception as error:  # an internal error must not exit 1 by accident
        _fail(f"internal error: {type(error).__name__}: {error}", verbose)
    gates = gating(report)
    if strict and gates:
        stderr.print(f"--strict: {', '.join(gates)}", highlight=False)
        raise typer.Exit(EXIT_FINDINGS)
    if "baseline" in report:
        _gate_share_moves(report["baseline"], o["fail_if_share_moves"])


def _gate_share_moves(section: dict, threshold: float | None) -> None:
    """Exit 1 when the largest share move reaches ``--fail-if-share-moves``."""
    from lossaudit.compare.report.baseline import describe_move, moved_too_far

    if moved_too_far(section, threshold):
        move = section["largest_move"]
        stderr.print(f"--fail-if-share-moves {threshold:g}: {describe_move(move)} moved {move['points']:+.1f} points", highlight=False, markup=False)
        raise typer.Exit(EXIT_FINDINGS)


@app.command(cls=Command)
def explain(
    logit: Annotated[Optional[float], typer.Option("--logit", help=plain("Sigmoid: the element's logit."), metavar="X", rich_help_panel="Sigmoid")] = None,
    prob: Annotated[Optional[float], typer.Option("--prob", help=plain("Sigmoid: the element's probability instead of its logit (0 < P < 1)."), metavar="P", rich_help_panel="Sigmoid")] = None,
    target: Annotated[int, typer.Option("--target", help=plain("Sigmoid: 1 for a positive, 0 for a negative; softmax: the target class index."), metavar="K", rich_help_panel="Example")] = 1,
    logits: Annotated[Optional[str], typer.Option("--logits", help=plain("Softmax: the row's logits, comma-separated (2,0.5,-1)."), metavar="X,...", rich_help_panel="Softmax")] = None,
    alpha: Annotated[Optional[float], typer.Option("--alpha", help=plain("Focal alpha: positives' weight for sigmoid (default 0.25; -1 off); for softmax, a scalar shown as the rescaling it is."), metavar="A", rich_help_panel="Example")] = None,
    alpha_per_class: Annotated[Optional[str], typer.Option("--alpha-per-class", help=plain("Softmax: " + PARAMS["alpha_per_class"].help), metavar=PARAMS["alpha_per_class"].metavar, rich_help_panel="Softmax")] = None,
    gamma: Annotated[float, typer.Option("--gamma", help=plain("Focal gamma."), metavar="G", min=0.0, rich_help_panel="Example")] = 2.0,
    dump: Annotated[Optional[Path], typer.Option("--dump", help=plain("Sigmoid: a dump whose data sets GHM-C's weight for this example's g."), metavar="DUMP", rich_help_panel="Sigmoid")] = None,
    ghm_bins: Annotated[int, typer.Option("--ghm-bins", help=plain("GHM-C bins for --dump."), metavar="N", min=1, rich_help_panel="Sigmoid")] = 10,
    format: Annotated[DiffFormat, typer.Option("--format", help=plain("Report format."), rich_help_panel="Report")] = DiffFormat.text,
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
            per_class = list(PARAMS["alpha_per_class"].parse(alpha_per_class)) if alpha_per_class else None
            steps = whiteboard.softmax_steps(row, target, gamma, alpha, per_class)
            title = f"softmax focal loss, logits {logits}, target class {target}"
        else:
            if logit is not None and prob is not None:
                raise InputError("--logit and --prob: give one")
            if prob is not None and not 0 < prob < 1:
                raise InputError(f"--prob {prob}: expected 0 < P < 1")
            x = logit if logit is not None else math.log(prob / (1 - prob))
            steps = whiteboard.sigmoid_steps(x, target, 0.25 if alpha is None else alpha, gamma)
            if dump is not None:
                from lossaudit.api import compare as compare_api

                from lossaudit.losses.density import GHM

                report = compare_api(dump, losses=[GHM], bins=ghm_bins, ghm_bins=ghm_bins).to_dict()
                steps["ghm_weight"] = whiteboard.ghm_weight_in(report, steps["g"]["value"])
            title = f"sigmoid focal loss, one {'positive' if target == 1 else 'negative'} at p = {steps['p']['value']:.4g}"
        sys.stdout.write(json.dumps(steps, indent=2) + "\n" if format is DiffFormat.json else whiteboard.render(steps, title))
        if plot is not None:
            from lossaudit.render.plots import explain_figure, save

            save(explain_figure(steps, target, gamma), plot)
    except (InputError, ValueError) as error:  # bad options, and the whiteboard's argument checks
        _fail(str(error), verbose)


def _piped_width(output: Path | None) -> int | None:
    """The width of a text report that is not printed to a terminal: ``$COLUMNS`` when it goes to
    stdout and is set, else None (as wide as its content)."""
    columns = os.environ.get("COLUMNS", "") if output is None else ""
    return int(columns) if columns.isdigit() else None


def _numbers(text: str, option: str) -> list[float]:
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise InputError(f"{option} {text!r}: expected comma-separated numbers") from None


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
            write_report(render_text(document, _piped_width(output)), output)
        if plot is not None:
            from lossaudit.render.plots import plot_sweep

            plot_sweep(document, plot)
    except InputError as error:
        _fail(str(error), verbose)
    except Exception as error:  # an internal error must not exit 1 by accident
        _fail(f"internal error: {type(error).__name__}: {error}", verbose)


@app.command(cls=Command)
def diff(
    old: Annotated[Path, typer.Argument(help=plain("The baseline report (compare --format json)."), metavar="OLD", show_default=False)],
    new: Annotated[Path, typer.Argument(help=plain("The new report."), metavar="NEW", show_default=False)],
    format: Annotated[DiffFormat, typer.Option("--format", help=plain("Report format."), rich_help_panel="Report")] = DiffFormat.text,
    fail_if_share_moves: Annotated[Optional[float], typer.Option("--fail-if-share-moves", help=plain("Exit 1 when a loss's share of a class or difficulty bin moves by at least PCT percentage points."), metavar="PCT", min=0.0, rich_help_panel="CI")] = None,
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
        _fail(str(error), verbose)
    _gate_share_moves(section, fail_if_share_moves)


@app.command(cls=Command)
def lint(
    ctx: typer.Context,
    targets: Annotated[Optional[list[str]], typer.Argument(help=plain("path/to/file.py:Symbol, package.module:Symbol, or a file or folder to discover losses in [default: the configured lint.targets]."), show_default=False, metavar='TARGET')] = None,
    init: init_option("Target") = None,
    kind: Annotated[Kind, typer.Option(help=plain("The intended semantics; auto infers it."), rich_help_panel='Target')] = Kind.auto,
    inputs: Annotated[Inputs, typer.Option(help=plain("Whether the loss takes logits or probabilities; auto tries both."), rich_help_panel='Target')] = Inputs.auto,
    targets_encoding: Annotated[LintTargets, typer.Option("--targets", help=plain("Whether the loss takes class indices or one-hot targets; auto tries both."), rich_help_panel='Target')] = LintTargets.auto,
    num_classes: Annotated[Optional[int], typer.Option(help=plain("Classes in the probe batches [default: 5, or the length of a per-class alpha]."), min=1, show_default=False, metavar='N', rich_help_panel='Probes')] = None,
    ignore_index: Annotated[Optional[int], typer.Option(help=plain("Ignore label to probe (default: the loss's own ignore_index parameter)."), metavar='N', rich_help_panel='Probes')] = None,
    select: Annotated[Optional[str], typer.Option(help=plain("Only these rule codes (comma list; a prefix like FL01 selects a range)."), metavar='CODES', rich_help_panel='Report')] = None,
    ignore: Annotated[Optional[str], typer.Option(help=plain("Skip these rule codes (comma list)."), metavar='CODES', rich_help_panel='Report')] = None,
    fail_on: Annotated[Severity, typer.Option(help=plain("Lowest severity that makes the exit code 1."), rich_help_panel='CI')] = Severity.error,
    seed: Annotated[int, typer.Option(help=plain("Seed of the probe batches."), metavar='N', rich_help_panel='Probes')] = 0,
    timeout: Annotated[float, typer.Option(help=plain("Seconds allowed for importing the target and for each call of it."), min=0.1, metavar='SECONDS', rich_help_panel='Probes')] = 10.0,
    exclude: Annotated[Optional[list[str]], typer.Option("--exclude", help=plain("Glob of files or folders discovery skips, matched against paths below the folder given and against names (replaces the configured exclude). Repeatable."), show_default=False, metavar='GLOB', rich_help_panel='Target')] = None,
    jobs: Annotated[Optional[int], typer.Option(help=plain("Targets audited at once, each in its own child process [default: one per core]."), min=1, show_default=False, metavar='N', rich_help_panel='Probes')] = None,
    memory_limit: Annotated[Optional[int], typer.Option("--memory-limit", help=plain("Address-space limit of each audit's child process, in MiB [default: half the machine's memory, at least 2048]."), min=256, show_default=False, metavar='MIB', rich_help_panel='Probes')] = None,
    format: Annotated[LintFormat, typer.Option("--format", help=plain("Report format."), rich_help_panel='Report')] = LintFormat.text,
    output: OutputOption = None,
    exit_zero: Annotated[bool, typer.Option("--exit-zero", help=plain("Exit 0 even when findings fail the run."), metavar='', rich_help_panel='CI')] = False,
    config: ConfigOption = None,
    isolated: IsolatedOption = False,
    verbose: VerboseOption = False,
) -> None:
    """Audit your own focal-loss implementation against the reference losses."""
    try:
        from lossaudit.io.config import load_config
        from lossaudit.io.symbols import parse_init
        from lossaudit.lint import session
        from lossaudit.lint.report import render
        from lossaudit.lint.rules import parse_codes
        from lossaudit.lint.runner import AuditOptions
        from lossaudit.render.formats import refuse_overwriting_inputs, write_report

        settings_file = load_config(config, isolated)
        o = {**ctx.params, **_config_values(ctx, settings_file.lint, skip=("targets", "exclude"))}
        settings = session.LintSettings(
            audit=AuditOptions(
                kind=Kind(o["kind"]).value,
                inputs=Inputs(o["inputs"]).value,
                targets=targets_encoding.value,
                num_classes=o["num_classes"],
                ignore_index=o["ignore_index"],
                seed=o["seed"],
                timeout=o["timeout"],
                memory_limit_mb=o["memory_limit"],
            ),
            init=parse_init(init),
            select=parse_codes(o["select"], "--select"),
            ignore=parse_codes(o["ignore"], "--ignore"),
            fail_on=Severity(o["fail_on"]).value,
            exclude=tuple(exclude or settings_file.lint.get("exclude", [])),
            jobs=o["jobs"],
        )
        plan = session.plan(targets or [], settings_file.lint.get("targets", []), settings)
        named = [Path(target.rpartition(":")[0] if ":" in target else target) for target in targets or []]
        refuse_overwriting_inputs(output, [settings_file.source, *named, *(item.spec.file for item in plan.targets)], (".py",))
        for notice in plan.notices:
            stderr.print(f"lossaudit: {notice}", highlight=False, markup=False, soft_wrap=True)
        results = session.run(plan.targets, settings)
        write_report(render(LintFormat(o["format"]).value, results, plan.discovered, settings.fail_on, verbose), output)
    except InputError as error:
        _fail(str(error), verbose)
    except Exception as error:  # an internal error must not exit 1 by accident
        _fail(f"internal error: {type(error).__name__}: {error}", verbose)
    if not exit_zero and session.failed(results, settings.fail_on):
        raise typer.Exit(EXIT_FINDINGS)


@app.command(cls=Command)
def rules(
    code: Annotated[Optional[str], typer.Argument(help=plain("A rule code (FL001) to explain; none lists every rule."), show_default=False, metavar="CODE")] = None,
) -> None:
    """List the lint rules, or explain one with a wrong and a right example."""
    from lossaudit.lint.report import render_rule, render_rules
    from lossaudit.lint.rules import RULES_BY_CODE

    if code is None:
        sys.stdout.write(render_rules())
    elif code.upper() in RULES_BY_CODE:
        sys.stdout.write(render_rule(code.upper()))
    else:
        _fail(f"unknown rule code {code}; `lossaudit rules` lists them", False)


class LossesFormat(str, Enum):
    text = "text"
    markdown = "markdown"
    json = "json"


@app.command(cls=Command)
def losses(
    format: Annotated[LossesFormat, typer.Option("--format", help=plain("Listing format (markdown: the README's tables)."), rich_help_panel="Report")] = LossesFormat.text,
) -> None:
    """List every loss compare computes, with its family, when it is a default and its parameters (defaults, allowed values), and the lint kinds."""
    from lossaudit.render.losses import render

    sys.stdout.write(render(LossesFormat(format).value))


def _fail(message: str, verbose: bool) -> None:
    if verbose:
        stderr.print_exception()
    one_line = " ".join(message.split())
    stderr.print(f"lossaudit: error: {one_line}", highlight=False, markup=False, soft_wrap=True)
    raise typer.Exit(EXIT_ERROR)


def main() -> None:
    """The ``lossaudit`` program: Typer's usage errors (an unknown option, a bad choice, a missing
    value) are printed in lossaudit's one-line form and exit 2, like its own errors."""
    from typer._click.exceptions import NoArgsIsHelpError

    try:
        code = app(prog_name="lossaudit", standalone_mode=False)
    except NoArgsIsHelpError as error:
        sys.stdout.write(error.ctx.get_help() + "\n")
        code = EXIT_ERROR
    except typer.TyperException as error:  # click's ClickException and UsageError, as Typer vendors them
        stderr.print(f"lossaudit: error: {' '.join(error.format_message().split())}", highlight=False, markup=False, soft_wrap=True)
        code = EXIT_ERROR
    except typer.Abort:
        stderr.print("lossaudit: error: aborted", highlight=False, markup=False)
        code = EXIT_ERROR
    sys.exit(code if isinstance(code, int) else EXIT_OK)
