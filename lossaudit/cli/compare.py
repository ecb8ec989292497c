"""``lossaudit compare``: saved predictions (or a model's) in, the comparison report out, in the format asked for."""

from __future__ import annotations

import inspect
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from lossaudit.cli.app import (
    EXIT_FINDINGS,
    AlsoOption,
    BackgroundIndexOption,
    BinsOption,
    ClassDimOption,
    ClassNamesOption,
    Command,
    ConfigOption,
    DumpInputs,
    DumpInputsOption,
    IgnoreIndexOption,
    IsolatedOption,
    LabelBaseOption,
    LogitsKeyOption,
    OutputOption,
    PlotOption,
    TargetEncoding,
    TargetsKeyOption,
    TargetsOption,
    VerboseOption,
    app,
    config_values,
    fail,
    fail_internal,
    gate_share_moves,
    init_option,
    parse_also,
    piped_width,
    stderr,
)
from lossaudit.errors import InputError
from lossaudit.formats import CompareFormat
from lossaudit.losses.registry import BASE_LOSSES, LOSS_IDS, LOSSES, PARAMS
from lossaudit.losses.spec import except_heatmaps


def _losses_help() -> str:
    """``--losses``'s help, from the registry: every loss, the defaults and the data that adds some."""
    extras: dict[str, list[str]] = {}
    for loss, spec in LOSSES.items():
        if spec.default_when is not None and spec.default_on:
            extras.setdefault(spec.default_on, []).append(loss)
    added = ", ".join(f"+{','.join(losses)} for {data}" for data, losses in extras.items())
    not_on_heatmaps = ",".join(loss for loss in BASE_LOSSES if LOSSES[loss].default_when is except_heatmaps)
    return (
        f"Comma list of {', '.join(LOSS_IDS)} [default: {','.join(BASE_LOSSES)} ({not_on_heatmaps} not on heatmaps); {added}]; also your own: "
        "path/to/file.py:fn, package.module:Class or an installed lossaudit.losses entry point, optionally ending @sigmoid or @softmax."
    )


def _check_configured_losses(ctx, settings_file, losses: str | None, loss_init: list[str] | dict | None) -> None:
    """The configuration's ``losses`` and ``loss-init``, when the command line left them out, read
    as ``--losses`` reads them: a bad one is one line naming the file and the key.

    Raises:
        InputError: a configured user loss or its keywords that cannot be read.
    """
    from lossaudit.losses.user import split_losses

    configured = [key for key in ("losses", "loss-init") if key in settings_file.compare and ctx.get_parameter_source(key.replace("-", "_")).name == "DEFAULT"]
    if not configured:
        return
    try:
        split_losses(losses, loss_init)
    except InputError as error:
        raise InputError(f"{settings_file.source}: {' and '.join(configured)}: {error}") from None


def with_loss_options(after: str):
    """Add an option for every hyper-parameter of the loss registry to a command, after its
    parameter ``after``, in the Losses panel; the command takes them as ``**loss_options``. Its
    annotations become the evaluated ones of its signature: Typer reads them again through
    ``typing.get_type_hints``, which would compile and evaluate each string once more (twice per
    process, ~1.5 ms for compare's ~50 parameters)."""

    def add(command):
        signature = inspect.signature(command, eval_str=True)
        params = [p for p in signature.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
        at = [p.name for p in params].index(after) + 1
        options = []
        for name, param in PARAMS.items():
            kind = Optional[str] if param.default is None else int if param.integer else float
            option = typer.Option(param.option, help=param.help, metavar=param.metavar, rich_help_panel="Losses", show_default=param.default is not None)
            options.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=param.default, annotation=Annotated[kind, option]))
        params = params[:at] + [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in params[at:]]
        params[at:at] = options
        command.__signature__ = signature.replace(parameters=params)
        command.__annotations__ = {**{p.name: p.annotation for p in params}, "return": signature.return_annotation}
        return command

    return add


@app.command(cls=Command)
@with_loss_options(after="losses")
def compare(
    ctx: typer.Context,
    paths: Annotated[
        Optional[list[Path]],
        typer.Argument(
            help="Dumps: .npz, .npy, .pt/.pth files, or folders of them (one batch per file). Optional with --model.", show_default=False, metavar="DUMP"
        ),
    ] = None,
    logits_key: LogitsKeyOption = None,
    targets_key: TargetsKeyOption = None,
    targets: TargetsOption = TargetEncoding.auto,
    background_index: BackgroundIndexOption = None,
    ignore_index: IgnoreIndexOption = -1,
    class_dim: ClassDimOption = None,
    inputs: DumpInputsOption = DumpInputs.auto,
    label_base: LabelBaseOption = 0,
    class_names: ClassNamesOption = None,
    losses: Annotated[Optional[str], typer.Option(help=_losses_help(), show_default=False, metavar="LOSS,...", rich_help_panel="Losses")] = None,
    loss_init: Annotated[
        Optional[list[str]],
        typer.Option(
            "--loss-init",
            help="Keyword argument of a user loss of --losses: its constructor's (a class) or every call's (a function); NAME is its target, symbol or entry point; VALUE a Python literal. Repeatable.",
            metavar="NAME.KEY=VALUE",
            rich_help_panel="Losses",
        ),
    ] = None,
    timeout: Annotated[
        float,
        typer.Option(
            help="Seconds allowed for each call of a user loss (and its import), in its child process, and for the --arch module's import, its constructor and each batch of --model.",
            min=0.1,
            metavar="SECONDS",
            rich_help_panel="Losses",
        ),
    ] = 10.0,
    memory_limit: Annotated[
        Optional[int],
        typer.Option(
            "--memory-limit",
            help="Address-space limit, in MiB, of the child process that runs the user losses; and how much more address space the --arch module's import, its constructor and each batch of --model may map (not with --device cuda) [default: half the machine's memory, at least 2048].",
            min=256,
            show_default=False,
            metavar="MIB",
            rich_help_panel="Losses",
        ),
    ] = None,
    bins: BinsOption = 10,
    top: Annotated[
        Optional[int],
        typer.Option(
            help="Show only the K classes with the largest loss (of the first listed loss that fits the data, or --top-by).",
            min=1,
            metavar="K",
            rich_help_panel="Report",
        ),
    ] = None,
    top_by: Annotated[
        Optional[str], typer.Option(help="The loss --top ranks classes by (one of those shown).", metavar="LOSS", rich_help_panel="Report")
    ] = None,
    baseline: Annotated[
        Optional[Path],
        typer.Option(
            "--baseline",
            help="A previous report (compare --format json) to show the changes since: loss shares per class and per difficulty bin, findings that appeared or disappeared.",
            metavar="REPORT",
            rich_help_panel="CI",
        ),
    ] = None,
    fail_if_share_moves: Annotated[
        Optional[float],
        typer.Option(
            "--fail-if-share-moves",
            help="With --baseline: exit 1 when a loss's share of a class or difficulty bin moves by at least PCT percentage points.",
            metavar="PCT",
            min=0.0,
            rich_help_panel="CI",
        ),
    ] = None,
    strict: Annotated[
        bool,
        typer.Option(
            "--strict",
            help="Exit 1 on a data finding that gates: non-finite logits, labels out of range, probabilities saved as logits, dumps of mixed runs, and background or multi-hot rows when a softmax loss was asked for.",
            metavar="",
            rich_help_panel="CI",
        ),
    ] = False,
    format: Annotated[CompareFormat, typer.Option("--format", help="Report format.", rich_help_panel="Report")] = CompareFormat.text,
    output: OutputOption = None,
    also: AlsoOption = None,
    plot: PlotOption = None,
    model: Annotated[
        Optional[Path],
        typer.Option(
            "--model",
            help="Checkpoint to run instead of reading dumps: a state dict (with --arch), .safetensors, TorchScript or .pt2 (with --trust-model).",
            metavar="FILE",
            rich_help_panel="Model",
        ),
    ] = None,
    data: Annotated[
        Optional[Path],
        typer.Option(
            "--data",
            help="With --model: .npz/.pt holding the model input (inputs, x or images) and the targets.",
            metavar="FILE",
            rich_help_panel="Model",
        ),
    ] = None,
    arch: Annotated[
        Optional[str],
        typer.Option(
            "--arch",
            help="With a state dict: the model class, package.module:Class or path/to/file.py:Class.",
            metavar="TARGET",
            rich_help_panel="Model",
        ),
    ] = None,
    init: init_option("Model") = None,  # type: ignore[valid-type]
    trust_model: Annotated[
        bool,
        typer.Option(
            "--trust-model",
            help="Allow TorchScript and torch.export checkpoints, which run code from the file when loaded.",
            metavar="",
            rich_help_panel="Model",
        ),
    ] = False,
    inputs_key: Annotated[
        Optional[str], typer.Option(help="Key of the model input in --data (default: inputs, x, images).", metavar="KEY", rich_help_panel="Model")
    ] = None,
    output_key: Annotated[
        Optional[str],
        typer.Option(
            help="Which output holds the logits when the model returns a tuple (an index) or a dict (a key; default: logits).",
            metavar="KEY",
            rich_help_panel="Model",
        ),
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Samples per model call.", min=1, metavar="N", rich_help_panel="Model")] = 256,
    device: Annotated[str, typer.Option(help="cpu or cuda (cuda only when available).", metavar="DEVICE", rich_help_panel="Model")] = "cpu",
    save_logits: Annotated[
        Optional[Path],
        typer.Option(
            help="Write the model's logits and targets to this .npz (or folder), in lossaudit's dump format; never overwrites.",
            metavar="FILE",
            rich_help_panel="Model",
        ),
    ] = None,
    config: ConfigOption = None,
    isolated: IsolatedOption = False,
    verbose: VerboseOption = False,
    **loss_options: object,
) -> None:
    """Compare cross-entropy, focal, softmax focal, GHM-C and related losses on saved predictions or a model's outputs."""
    try:
        from lossaudit.api import compare as compare_api
        from lossaudit.compare.report.build import gating
        from lossaudit.io.config import load_config
        from lossaudit.io.readers import SUFFIXES as DUMP_SUFFIXES
        from lossaudit.io.symbols import parse_init
        from lossaudit.render.formats import refuse_overwriting_inputs

        settings_file = load_config(config, isolated)
        o = {**ctx.params, **config_values(ctx, settings_file.compare, skip=("loss-init",))}
        loss_init = loss_init or settings_file.compare.get("loss-init")
        _check_configured_losses(ctx, settings_file, o["losses"], loss_init)
        read = [
            *(paths or []),
            settings_file.source,
            *(Path(o[key]) for key in ("class_names", "alpha_per_class", "baseline") if isinstance(o[key], (str, Path))),
            model,
            data,
        ]
        also_files = parse_also(also, CompareFormat, output)
        for file in [output, *(file for _, file in also_files)]:
            refuse_overwriting_inputs(file, read, DUMP_SUFFIXES)
        if plot is not None:
            from lossaudit.render.plots import check_plot_path

            check_plot_path(plot, output)
        if o["fail_if_share_moves"] is not None and not o["baseline"]:
            raise InputError("--fail-if-share-moves goes with --baseline REPORT")
        report = compare_api(
            paths or None,
            class_names=o["class_names"],
            losses=o["losses"],
            loss_init=loss_init,
            timeout=o["timeout"],
            memory_limit_mb=o["memory_limit"],
            **{name: o[name] for name in PARAMS},
            bins=o["bins"],
            logits_key=o["logits_key"],
            targets_key=o["targets_key"],
            targets_encoding=TargetEncoding(o["targets"]).value,
            background_index=o["background_index"],
            ignore_index=o["ignore_index"],
            class_dim=o["class_dim"],
            inputs=DumpInputs(o["inputs"]).value,
            label_base=o["label_base"],
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
        strict = o["strict"]
        _write(report, CompareFormat(o["format"]), output, o["top"], o["top_by"], strict)
        for chosen, file in also_files:
            _write(report, chosen, file, o["top"], o["top_by"], strict)
        if plot is not None:
            from lossaudit.render.plots import plot_report

            plot_report(report, plot)
    except InputError as error:
        fail(str(error), verbose)
    except Exception as error:  # an internal error must not exit 1 by accident
        fail_internal(error, verbose)
    gates = gating(report)
    if strict and gates:
        stderr.print(f"--strict: {', '.join(gates)}", highlight=False)
        raise typer.Exit(EXIT_FINDINGS)
    if "baseline" in report:
        gate_share_moves(report["baseline"], o["fail_if_share_moves"])


def _write(report: dict, chosen: CompareFormat, output: Path | None, top: int | None, top_by: str | None, strict: bool) -> None:
    """Render ``report`` in the format chosen (with the changes since a baseline, when there is
    one) to ``output`` or stdout; text on a terminal is Rich's. Each format imports what it draws
    with (Rich for text, :mod:`html` for HTML), so a JSON report loads neither."""
    from lossaudit.render import compare as render
    from lossaudit.render.formats import write_report

    if top_by is not None:
        render.ranking_loss(report, top_by)  # an unknown loss is an error whatever the format
    since = ""
    if "baseline" in report:
        from lossaudit.compare.report.baseline import render_changes

        since = render_changes(report["baseline"])
    if chosen is CompareFormat.text and output is None and sys.stdout.isatty():
        from rich.console import Console

        render.print_text(report, Console(), top, top_by)
        sys.stdout.write(("\n" + since) if since else "")
        return
    if chosen is CompareFormat.html:
        from lossaudit.render.html import render_html

        write_report(render_html(report, top, top_by, since), output)
        return
    renderers = {
        CompareFormat.text: lambda: render.render_text(report, piped_width(output), top, top_by) + (("\n" + since) if since else ""),
        CompareFormat.json: lambda: render.render_json(report),
        CompareFormat.markdown: lambda: render.render_markdown(report, top, top_by) + (f"\n```\n{since}```\n" if since else ""),
        CompareFormat.github: lambda: render.render_github(report, strict),
        CompareFormat.junit: lambda: render.render_junit(report),
    }
    write_report(renderers[chosen](), output)
