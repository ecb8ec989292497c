"""Command line: parse options, call the library, pick a renderer, choose the exit code.

Exit codes: 0 done, 1 findings that fail the run (``--strict``), 2 could not run. torch is
imported inside the commands, so ``--help`` and ``--version`` stay fast.
"""

from __future__ import annotations

import os
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from lossaudit import __version__
from lossaudit.errors import InputError

EXIT_OK, EXIT_FINDINGS, EXIT_ERROR = 0, 1, 2

app = typer.Typer(
    name="lossaudit",
    help="Audit focal, GHM and cross-entropy losses on your predictions and your loss code.",
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


class LintFormat(str, Enum):
    text = "text"
    json = "json"
    sarif = "sarif"
    github = "github"
    junit = "junit"
    markdown = "markdown"


class Kind(str, Enum):
    auto = "auto"
    sigmoid = "sigmoid"
    softmax = "softmax"
    binary = "binary"
    centernet = "centernet"


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
    typer.Option("--config", help="Read options from this pyproject.toml ([tool.lossaudit]) or lossaudit.yaml instead of the nearest one."),
]
IsolatedOption = Annotated[bool, typer.Option("--isolated", help="Ignore configuration files.")]
OutputOption = Annotated[Optional[Path], typer.Option(help="Write the report to this file instead of stdout (whole: a temporary file, then a rename).")]
InitOption = Annotated[
    Optional[list[str]],
    typer.Option("--init", help="KEY=VALUE keyword for the constructor (lint: a class target, or the call of a function; compare: the --arch class); values are Python literals. Repeatable."),
]
VerboseOption = Annotated[bool, typer.Option("--verbose", "-v", help="Show tracebacks of errors (lint: also the probes that could not run).")]


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
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Audit focal, GHM and cross-entropy losses on your predictions and your loss code."""


@app.command()
def compare(
    ctx: typer.Context,
    paths: Annotated[Optional[list[Path]], typer.Argument(help="Dumps: .npz, .npy, .pt/.pth files, or folders of them (one batch per file). Optional with --model.", show_default=False)] = None,
    logits_key: Annotated[Optional[str], typer.Option(help="Key of the logits (default: logits, pred, preds, outputs, scores).")] = None,
    targets_key: Annotated[Optional[str], typer.Option(help="Key of the targets (default: targets, labels, target, label, gt, y).")] = None,
    targets: Annotated[TargetEncoding, typer.Option(help="Target encoding; auto detects it.")] = TargetEncoding.auto,
    background_index: Annotated[Optional[int], typer.Option(help="Index label meaning background (default: C, the number of classes).")] = None,
    ignore_index: Annotated[int, typer.Option(help="Index label meaning ignore.")] = -1,
    class_dim: Annotated[Optional[int], typer.Option(help="Class axis of the logits (default: last for 2-D/3-D, 1 for 4-D).")] = None,
    inputs: Annotated[Inputs, typer.Option(help="Whether the dump holds logits or probabilities; auto reads logits and warns if they look like probabilities.")] = Inputs.auto,
    class_names: Annotated[Optional[Path], typer.Option(help="File of class names: one per line, a YAML list or a YAML mapping {index: name}.")] = None,
    losses: Annotated[Optional[str], typer.Option(help="Comma list of ce, bce, focal, softmax-focal, ghm, centernet, ohem [default: ce,bce,focal,softmax-focal,ghm; +centernet for heatmaps].", show_default=False)] = None,
    alpha: Annotated[float, typer.Option(help="Focal alpha for positives (negatives get 1 - alpha); -1 disables it.")] = 0.25,
    gamma: Annotated[float, typer.Option(help="Focal gamma (focal and softmax-focal).")] = 2.0,
    alpha_per_class: Annotated[Optional[Path], typer.Option(help="File of one alpha per class (one per line or YAML list): softmax-focal indexes it by target, focal by class column.")] = None,
    ghm_bins: Annotated[int, typer.Option(help="GHM-C bins.")] = 10,
    ghm_momentum: Annotated[float, typer.Option(help="GHM-C momentum (one call from a fresh state, as mmdet's first iteration).")] = 0.0,
    ohem_ratio: Annotated[float, typer.Option(help="OHEM negatives kept per positive.")] = 3.0,
    bins: Annotated[int, typer.Option(help="Difficulty bins of g for the per-difficulty table.")] = 10,
    top: Annotated[Optional[int], typer.Option(help="Show only the K classes with the largest loss (of the loss with the largest total, or --top-by).", min=1)] = None,
    top_by: Annotated[Optional[str], typer.Option(help="The loss --top ranks classes by (one of those shown).")] = None,
    strict: Annotated[bool, typer.Option("--strict", help="Exit 1 on non-finite logits, labels out of range, background rows fed to a softmax loss, or probabilities saved as logits.")] = False,
    format: Annotated[CompareFormat, typer.Option("--format", help="Report format.")] = CompareFormat.text,
    output: OutputOption = None,
    model: Annotated[Optional[Path], typer.Option("--model", help="Checkpoint to run instead of reading dumps: a state dict (with --arch), .safetensors, TorchScript or .pt2 (with --trust-model).")] = None,
    data: Annotated[Optional[Path], typer.Option("--data", help="With --model: .npz/.pt holding the model input (inputs, x or images) and the targets.")] = None,
    arch: Annotated[Optional[str], typer.Option("--arch", help="With a state dict: the model class, package.module:Class or path/to/file.py:Class.")] = None,
    init: InitOption = None,
    trust_model: Annotated[bool, typer.Option("--trust-model", help="Allow TorchScript and torch.export checkpoints, which run code from the file when loaded.")] = False,
    inputs_key: Annotated[Optional[str], typer.Option(help="Key of the model input in --data (default: inputs, x, images).")] = None,
    output_key: Annotated[Optional[str], typer.Option(help="Which output holds the logits when the model returns a tuple (an index) or a dict (a key; default: logits).")] = None,
    batch_size: Annotated[int, typer.Option(help="Samples per model call.", min=1)] = 256,
    device: Annotated[str, typer.Option(help="cpu or cuda (cuda only when available).")] = "cpu",
    save_logits: Annotated[Optional[Path], typer.Option(help="Write the model's logits and targets to this .npz (or folder), in lossaudit's dump format; never overwrites.")] = None,
    config: ConfigOption = None,
    isolated: IsolatedOption = False,
    verbose: VerboseOption = False,
) -> None:
    """Compare cross-entropy, focal, softmax focal, GHM-C and related losses on saved predictions or a model's outputs."""
    try:
        from lossaudit import compare as comparison
        from lossaudit.compare.engine import LossSettings
        from lossaudit.compare.render import (
            print_text,
            ranking_loss,
            render_github,
            render_json,
            render_junit,
            render_markdown,
            render_text,
        )
        from lossaudit.compare.report import gating
        from lossaudit.config import load_config
        from lossaudit.dataset import LoadOptions, read_class_names
        from lossaudit.readers import SUFFIXES as DUMP_SUFFIXES
        from lossaudit.reporting import refuse_overwriting_inputs, write_report

        settings_file = load_config(config, isolated)
        o = {**ctx.params, **_config_values(ctx, settings_file.compare)}
        read = [*(paths or []), settings_file.source, *(Path(o[key]) for key in ("class_names", "alpha_per_class") if o[key]), model, data]
        refuse_overwriting_inputs(output, read, DUMP_SUFFIXES)
        load_options = LoadOptions(
            logits_key=o["logits_key"],
            targets_key=o["targets_key"],
            targets=TargetEncoding(o["targets"]).value,
            background_index=o["background_index"],
            ignore_index=o["ignore_index"],
            class_dim=o["class_dim"],
            inputs=Inputs(o["inputs"]).value,
            class_names=read_class_names(Path(o["class_names"])) if o["class_names"] else None,
        )
        settings = LossSettings(
            alpha=o["alpha"],
            gamma=o["gamma"],
            alpha_per_class=comparison.read_alpha_per_class(Path(o["alpha_per_class"])) if o["alpha_per_class"] else None,
            ghm_bins=o["ghm_bins"],
            ghm_momentum=o["ghm_momentum"],
            ohem_ratio=o["ohem_ratio"],
            bins=o["bins"],
        )
        source = None
        if model is not None:
            from lossaudit.inference import RunOptions
            from lossaudit.symbols import parse_init

            if data is None:
                raise InputError("--model needs --data: a .npz/.pt file with the model input and the targets")
            run_options = RunOptions(data=data, inputs_key=inputs_key, targets_key=o["targets_key"], output_key=output_key, batch_size=batch_size, device=device)
            source = comparison.ModelSource(model, run_options, arch=arch, init=parse_init(init), trust=trust_model, save_logits=save_logits)
        elif any(value is not None for value in (data, arch, init, save_logits)):
            raise InputError("--data, --arch, --init and --save-logits go with --model")
        report = comparison.run(paths or [], load_options, settings, comparison.parse_losses(o["losses"]), source)
        chosen, strict, top, top_by = CompareFormat(o["format"]), o["strict"], o["top"], o["top_by"]
        if top_by is not None:
            ranking_loss(report, top_by)  # an unknown loss is an error whatever the format
        if chosen is CompareFormat.text and output is None and sys.stdout.isatty():
            print_text(report, Console(), top, top_by)
        elif chosen is CompareFormat.text:
            columns = os.environ.get("COLUMNS", "") if output is None else ""
            write_report(render_text(report, int(columns) if columns.isdigit() else None, top, top_by), output)
        else:
            renderers = {
                CompareFormat.json: lambda: render_json(report),
                CompareFormat.markdown: lambda: render_markdown(report, top, top_by),
                CompareFormat.github: lambda: render_github(report, strict),
                CompareFormat.junit: lambda: render_junit(report),
            }
            write_report(renderers[chosen](), output)
    except InputError as error:
        _fail(str(error), verbose)
    except Exception as error:  # an internal error must not exit 1 by accident
        _fail(f"internal error: {type(error).__name__}: {error}", verbose)
    gates = gating(report)
    if strict and gates:
        stderr.print(f"--strict: {', '.join(gates)}", highlight=False)
        raise typer.Exit(EXIT_FINDINGS)


@app.command()
def lint(
    ctx: typer.Context,
    targets: Annotated[Optional[list[str]], typer.Argument(help="path/to/file.py:Symbol, package.module:Symbol, or a file or folder to discover losses in [default: the configured lint.targets].", show_default=False)] = None,
    init: InitOption = None,
    kind: Annotated[Kind, typer.Option(help="The intended semantics; auto infers it.")] = Kind.auto,
    inputs: Annotated[Inputs, typer.Option(help="Whether the loss takes logits or probabilities; auto tries both.")] = Inputs.auto,
    targets_encoding: Annotated[LintTargets, typer.Option("--targets", help="Whether the loss takes class indices or one-hot targets; auto tries both.")] = LintTargets.auto,
    num_classes: Annotated[Optional[int], typer.Option(help="Classes in the probe batches [default: 5, or the length of a per-class alpha].", min=1, show_default=False)] = None,
    ignore_index: Annotated[Optional[int], typer.Option(help="Ignore label to probe (default: the loss's own ignore_index parameter).")] = None,
    select: Annotated[Optional[str], typer.Option(help="Only these rule codes (comma list; a prefix like FL01 selects a range).")] = None,
    ignore: Annotated[Optional[str], typer.Option(help="Skip these rule codes (comma list).")] = None,
    fail_on: Annotated[Severity, typer.Option(help="Lowest severity that makes the exit code 1.")] = Severity.error,
    seed: Annotated[int, typer.Option(help="Seed of the probe batches.")] = 0,
    timeout: Annotated[float, typer.Option(help="Seconds allowed for importing the target and for each call of it.", min=0.1)] = 10.0,
    exclude: Annotated[Optional[list[str]], typer.Option("--exclude", help="Glob of files or folders discovery skips, matched against paths below the folder given and against names (replaces the configured exclude). Repeatable.", show_default=False)] = None,
    jobs: Annotated[Optional[int], typer.Option(help="Targets audited at once, each in its own child process [default: one per core].", min=1, show_default=False)] = None,
    memory_limit: Annotated[Optional[int], typer.Option("--memory-limit", help="Address-space limit of each audit's child process, in MiB [default: half the machine's memory, at least 2048].", min=256, show_default=False)] = None,
    format: Annotated[LintFormat, typer.Option("--format", help="Report format.")] = LintFormat.text,
    output: OutputOption = None,
    exit_zero: Annotated[bool, typer.Option("--exit-zero", help="Exit 0 even when findings fail the run.")] = False,
    config: ConfigOption = None,
    isolated: IsolatedOption = False,
    verbose: VerboseOption = False,
) -> None:
    """Audit your own focal-loss implementation against the reference losses."""
    try:
        from lossaudit.config import load_config
        from lossaudit.lint import session
        from lossaudit.lint.report import render
        from lossaudit.lint.rules import parse_codes
        from lossaudit.lint.runner import AuditOptions
        from lossaudit.reporting import refuse_overwriting_inputs, write_report
        from lossaudit.symbols import parse_init

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


@app.command()
def rules(
    code: Annotated[Optional[str], typer.Argument(help="A rule code (FL001) to explain; none lists every rule.", show_default=False)] = None,
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


def _fail(message: str, verbose: bool) -> None:
    if verbose:
        stderr.print_exception()
    one_line = " ".join(message.split())
    stderr.print(f"lossaudit: error: {one_line}", highlight=False, markup=False, soft_wrap=True)
    raise typer.Exit(EXIT_ERROR)


def main() -> None:
    app()
