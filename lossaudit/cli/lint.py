"""``lossaudit lint``: audit loss implementations against the reference behaviour."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from lossaudit.cli.app import (
    EXIT_FINDINGS,
    AlsoOption,
    Command,
    ConfigOption,
    Inputs,
    IsolatedOption,
    OutputOption,
    VerboseOption,
    app,
    config_values,
    fail,
    fail_internal,
    init_option,
    parse_also,
    stderr,
    text_width,
)
from lossaudit.errors import InputError
from lossaudit.formats import LintFormat
from lossaudit.losses.registry import LINT_KINDS

Kind = Enum("Kind", [("auto", "auto")] + [(kind.replace("-", "_"), kind) for kind in LINT_KINDS], type=str)  # type: ignore[misc]  # members from the registry
"""``lint --kind``: auto, or a kind of the loss registry."""


class LintTargets(str, Enum):
    auto = "auto"
    index = "index"  # type: ignore[assignment]  # the member shadows str.index
    onehot = "onehot"


class Severity(str, Enum):
    error = "error"
    warning = "warning"
    info = "info"


@app.command(cls=Command)
def lint(
    ctx: typer.Context,
    targets: Annotated[
        Optional[list[str]],
        typer.Argument(
            help="path/to/file.py:Symbol, package.module:Symbol, or a file or folder to discover losses in [default: the configured lint.targets].",
            show_default=False,
            metavar="TARGET",
        ),
    ] = None,
    init: init_option("Target") = None,  # type: ignore[valid-type]
    kind: Annotated[Kind, typer.Option(help="The intended semantics; auto infers it.", rich_help_panel="Target")] = Kind.auto,  # type: ignore[attr-defined]
    inputs: Annotated[Inputs, typer.Option(help="Whether the loss takes logits or probabilities; auto tries both.", rich_help_panel="Target")] = Inputs.auto,
    targets_encoding: Annotated[
        LintTargets,
        typer.Option("--targets", help="Whether the loss takes class indices or one-hot targets; auto tries both.", rich_help_panel="Target"),
    ] = LintTargets.auto,
    num_classes: Annotated[
        Optional[int],
        typer.Option(
            help="Classes in the probe batches [default: 5, or the length of a per-class alpha].",
            min=1,
            show_default=False,
            metavar="N",
            rich_help_panel="Probes",
        ),
    ] = None,
    ignore_index: Annotated[
        Optional[int],
        typer.Option(help="Ignore label to probe (default: the loss's own ignore_index parameter).", metavar="N", rich_help_panel="Probes"),
    ] = None,
    select: Annotated[
        Optional[str],
        typer.Option(help="Only these rule codes (comma list; a prefix like FL01 selects a range).", metavar="CODES", rich_help_panel="Report"),
    ] = None,
    ignore: Annotated[Optional[str], typer.Option(help="Skip these rule codes (comma list).", metavar="CODES", rich_help_panel="Report")] = None,
    fail_on: Annotated[Severity, typer.Option(help="Lowest severity that makes the exit code 1.", rich_help_panel="CI")] = Severity.error,
    seed: Annotated[int, typer.Option(help="Seed of the probe batches.", metavar="N", rich_help_panel="Probes")] = 0,
    timeout: Annotated[
        float,
        typer.Option(help="Seconds allowed for importing the target and for each call of it.", min=0.1, metavar="SECONDS", rich_help_panel="Probes"),
    ] = 10.0,
    exclude: Annotated[
        Optional[list[str]],
        typer.Option(
            "--exclude",
            help="Glob of files or folders discovery skips, matched against paths below the folder given and against names (replaces the configured exclude). Repeatable.",
            show_default=False,
            metavar="GLOB",
            rich_help_panel="Target",
        ),
    ] = None,
    jobs: Annotated[
        Optional[int],
        typer.Option(
            help="Targets audited at once, each in its own child process [default: one per core].",
            min=1,
            show_default=False,
            metavar="N",
            rich_help_panel="Probes",
        ),
    ] = None,
    memory_limit: Annotated[
        Optional[int],
        typer.Option(
            "--memory-limit",
            help="Address-space limit of each audit's child process, in MiB [default: half the machine's memory, at least 2048].",
            min=256,
            show_default=False,
            metavar="MIB",
            rich_help_panel="Probes",
        ),
    ] = None,
    pass_env: Annotated[
        Optional[list[str]],
        typer.Option(
            "--pass-env",
            help="An environment variable the audit's child gets besides those Python and torch need (it gets no others: no CI tokens). Repeatable.",
            show_default=False,
            metavar="NAME",
            rich_help_panel="Probes",
        ),
    ] = None,
    keep_cwd: Annotated[
        bool,
        typer.Option(
            "--keep-cwd",
            help="Run the audit's child in the current folder, for targets that read files relative to it [default: an empty temporary folder, so that files the target writes do not land here].",
            metavar="",
            rich_help_panel="Probes",
        ),
    ] = False,
    format: Annotated[LintFormat, typer.Option("--format", help="Report format.", rich_help_panel="Report")] = LintFormat.text,
    output: OutputOption = None,
    also: AlsoOption = None,
    exit_zero: Annotated[bool, typer.Option("--exit-zero", help="Exit 0 even when findings fail the run.", metavar="", rich_help_panel="CI")] = False,
    require_checks: Annotated[
        bool,
        typer.Option(
            "--require-checks",
            help="Fail a target (exit 1) when a check could not run on it; every format lists those checks either way.",
            metavar="",
            rich_help_panel="CI",
        ),
    ] = False,
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
        o = {**ctx.params, **config_values(ctx, settings_file.lint, skip=("targets", "exclude", "pass-env"))}
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
                pass_env=tuple(pass_env or settings_file.lint.get("pass-env", [])),
                keep_cwd=bool(o["keep_cwd"]),
            ),
            init=parse_init(init),
            select=parse_codes(o["select"], "--select"),
            ignore=parse_codes(o["ignore"], "--ignore"),
            fail_on=Severity(o["fail_on"]).value,
            exclude=tuple(exclude or settings_file.lint.get("exclude", [])),
            jobs=o["jobs"],
            require_checks=bool(o["require_checks"]),
        )
        plan = session.plan(targets or [], settings_file.lint.get("targets", []), settings)
        named = [Path(target.rpartition(":")[0] if ":" in target else target) for target in targets or []]
        also_files = parse_also(also, LintFormat, output)
        for file in [output, *(file for _, file in also_files)]:
            refuse_overwriting_inputs(file, [settings_file.source, *named, *(item.spec.file for item in plan.targets)], (".py",))
        for notice in plan.notices:
            stderr.print(f"lossaudit: {notice}", highlight=False, markup=False, soft_wrap=True)
        results = session.run(plan.targets, settings)
        write_report(
            render(
                LintFormat(o["format"]).value,
                results,
                plan.discovered,
                settings.fail_on,
                verbose,
                settings.require_checks,
                text_width() if output is None else None,
            ),
            output,
        )
        for chosen, file in also_files:
            write_report(render(chosen.value, results, plan.discovered, settings.fail_on, verbose, settings.require_checks), file)
        stopping = session.stopping_errors(plan.targets, results)
    except InputError as error:
        fail(str(error), verbose)
    except Exception as error:  # an internal error must not exit 1 by accident
        fail_internal(error, verbose)
    if stopping:  # a named target that cannot be imported: its result is in the report, and the run exits 2
        for message in stopping[:-1]:
            stderr.print(f"lossaudit: error: {message}", highlight=False, markup=False, soft_wrap=True)
        fail(stopping[-1], False)
    if not exit_zero and session.failed(results, settings.fail_on, settings.require_checks):
        raise typer.Exit(EXIT_FINDINGS)
