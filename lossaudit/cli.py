"""Command line: parse options, call the library, pick a renderer, choose the exit code.

Exit codes: 0 done, 1 findings that fail the run (``--strict``), 2 could not run. torch is
imported inside the commands, so ``--help`` and ``--version`` stay fast.
"""

from __future__ import annotations

import os
import sys
import tempfile
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from lossaudit import __version__
from lossaudit.errors import InputError

EXIT_OK, EXIT_FINDINGS, EXIT_ERROR = 0, 1, 2
REPORT_WIDTH = 120

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


class LintFormat(str, Enum):
    text = "text"
    json = "json"


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


def write_report(text: str, output: Path | None) -> None:
    """Write to stdout, or to ``output`` whole: a temporary file in the same folder, then a rename."""
    if output is None:
        sys.stdout.write(text)
        return
    folder = output.resolve().parent
    try:
        with tempfile.NamedTemporaryFile("w", dir=folder, prefix=f".{output.name}.", delete=False, encoding="utf-8") as handle:
            handle.write(text)
        os.replace(handle.name, output)
    except OSError as error:
        raise InputError(f"--output {output}: cannot write ({error.strerror})") from None


@app.command()
def compare(
    paths: Annotated[list[Path], typer.Argument(help="Dumps: .npz, .npy, .pt/.pth files, or folders of them (one batch per file).", show_default=False)],
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
    top: Annotated[Optional[int], typer.Option(help="Show only the K classes with the largest loss.", min=1)] = None,
    strict: Annotated[bool, typer.Option("--strict", help="Exit 1 on non-finite logits, labels out of range, background rows fed to a softmax loss, or probabilities saved as logits.")] = False,
    format: Annotated[CompareFormat, typer.Option("--format", help="Report format.")] = CompareFormat.text,
    output: Annotated[Optional[Path], typer.Option(help="Write the report to this file instead of stdout.")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show the traceback of an error.")] = False,
) -> None:
    """Compare cross-entropy, focal, softmax focal, GHM-C and related losses on saved predictions."""
    try:
        from lossaudit import compare as comparison
        from lossaudit.compare.engine import LossSettings
        from lossaudit.compare.render import render_json, render_markdown, render_text
        from lossaudit.compare.report import STRICT_FINDINGS
        from lossaudit.dataset import LoadOptions, read_class_names

        load_options = LoadOptions(
            logits_key=logits_key,
            targets_key=targets_key,
            targets=targets.value,
            background_index=background_index,
            ignore_index=ignore_index,
            class_dim=class_dim,
            inputs=inputs.value,
            class_names=read_class_names(class_names) if class_names else None,
        )
        settings = LossSettings(
            alpha=alpha,
            gamma=gamma,
            alpha_per_class=comparison.read_alpha_per_class(alpha_per_class) if alpha_per_class else None,
            ghm_bins=ghm_bins,
            ghm_momentum=ghm_momentum,
            ohem_ratio=ohem_ratio,
            bins=bins,
        )
        report = comparison.run(paths, load_options, settings, comparison.parse_losses(losses))
        if format is CompareFormat.json:
            write_report(render_json(report), output)
        elif format is CompareFormat.markdown:
            write_report(render_markdown(report, top), output)
        elif output is None:
            render_text(report, _report_console(), top)
        else:
            console = Console(record=True, width=REPORT_WIDTH, file=open(os.devnull, "w"))
            render_text(report, console, top)
            write_report(console.export_text(), output)
    except InputError as error:
        _fail(str(error), verbose)
    except Exception as error:  # an internal error must not exit 1 by accident
        _fail(f"internal error: {type(error).__name__}: {error}", verbose)
    gating = [f["code"] for f in report["findings"] if f["code"] in STRICT_FINDINGS]
    if strict and gating:
        stderr.print(f"--strict: {', '.join(gating)}", highlight=False)
        raise typer.Exit(EXIT_FINDINGS)


@app.command()
def lint(
    targets: Annotated[list[str], typer.Argument(help="Losses to audit: path/to/file.py:Symbol or package.module:Symbol.", show_default=False)],
    init: Annotated[Optional[list[str]], typer.Option("--init", help="KEY=VALUE for the constructor (a class) or the call (a function); values are Python literals. Repeatable.")] = None,
    kind: Annotated[Kind, typer.Option(help="The intended semantics; auto infers it.")] = Kind.auto,
    inputs: Annotated[Inputs, typer.Option(help="Whether the loss takes logits or probabilities; auto tries both.")] = Inputs.auto,
    targets_encoding: Annotated[LintTargets, typer.Option("--targets", help="Whether the loss takes class indices or one-hot targets; auto tries both.")] = LintTargets.auto,
    num_classes: Annotated[Optional[int], typer.Option(help="Classes in the probe batches [default: 5, or the length of a per-class alpha].", min=1, show_default=False)] = None,
    ignore_index: Annotated[Optional[int], typer.Option(help="Ignore label to probe (default: the loss's own ignore_index parameter).")] = None,
    select: Annotated[Optional[str], typer.Option(help="Only these rule codes (comma list; a prefix like FL01 selects a range).")] = None,
    ignore: Annotated[Optional[str], typer.Option(help="Skip these rule codes (comma list).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the probe batches.")] = 0,
    timeout: Annotated[float, typer.Option(help="Seconds allowed for importing the target and for each call of it.", min=0.1)] = 10.0,
    format: Annotated[LintFormat, typer.Option("--format", help="Report format.")] = LintFormat.text,
    output: Annotated[Optional[Path], typer.Option(help="Write the report to this file instead of stdout.")] = None,
    exit_zero: Annotated[bool, typer.Option("--exit-zero", help="Exit 0 even when errors are found.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show the probes that could not run, and tracebacks of errors.")] = False,
) -> None:
    """Audit your own focal-loss implementation against the reference losses."""
    try:
        from lossaudit.lint.report import render_json, render_text
        from lossaudit.lint.rules import parse_codes
        from lossaudit.lint.runner import AuditOptions, audit
        from lossaudit.lint.targets import parse_init, parse_target

        selected, ignored = parse_codes(select, "--select"), parse_codes(ignore, "--ignore")
        init_kwargs = parse_init(init)
        specs = [parse_target(text, init_kwargs) for text in targets]
        options = AuditOptions(kind=kind.value, inputs=inputs.value, targets=targets_encoding.value, num_classes=num_classes,
                               ignore_index=ignore_index, seed=seed, timeout=timeout)
        results = []
        for spec in specs:
            result = audit(spec, options)
            result.findings = [f for f in result.findings if (not selected or f.code in selected) and f.code not in ignored]
            results.append(result)
        write_report(render_json(results) if format is LintFormat.json else render_text(results, verbose), output)
    except InputError as error:
        _fail(str(error), verbose)
    except Exception as error:  # an internal error must not exit 1 by accident
        _fail(f"internal error: {type(error).__name__}: {error}", verbose)
    if not exit_zero and any(f.severity == "error" for r in results for f in r.findings):
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


def _report_console() -> Console:
    """stdout console; wide enough for the tables when stdout is a file or a CI log."""
    piped = not sys.stdout.isatty() and "COLUMNS" not in os.environ
    return Console(width=REPORT_WIDTH if piped else None)


def _fail(message: str, verbose: bool) -> None:
    if verbose:
        stderr.print_exception()
    stderr.print(f"lossaudit: error: {message}", highlight=False, markup=False, soft_wrap=True)
    raise typer.Exit(EXIT_ERROR)


def main() -> None:
    app()
