"""The ``lossaudit`` program's frame: the Typer app, the help's look, the options several commands
share (declared once), configuration defaults, error output and exit codes.

Exit codes: 0 done, 1 findings that fail the run (``--strict``, lint findings), 2 could not run.
Each command lives in its own module of :mod:`lossaudit.cli` and only parses its options, calls the
library, picks a renderer and chooses the exit code; torch is imported inside the commands, so
``--help`` and ``--version`` stay fast.
"""

from __future__ import annotations

import os
import sys
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional, TypeVar, cast

import typer
from rich.console import Console
from rich.markup import escape as plain  # help is rendered as Rich markup: "[tool.lossaudit]" must stay text

from lossaudit._version import __version__

EXIT_OK, EXIT_FINDINGS, EXIT_ERROR = 0, 1, 2


if TYPE_CHECKING:  # a mixin of Typer's command and group classes
    from typer._click.core import ParameterSource

    _HelpBase = typer.core.TyperCommand
else:
    _HelpBase = object

_E = TypeVar("_E", bound=Enum)


class _PlainHelp(_HelpBase):
    """Help without Python type placeholders: ``-h/--help`` is a flag (Typer shows ``<bool>``;
    lossaudit's own flags say so with ``metavar=""``), and an argument is named by its metavar
    alone (Typer adds ``<list[Path]>``)."""

    def format_help(self, ctx, formatter):
        """Typer's rich help; on a terminal too narrow for its tables, with the options stacked
        (:mod:`lossaudit.cli.narrow_help`)."""
        from lossaudit.cli.narrow_help import print_help

        print_help(lambda: super(_PlainHelp, self).format_help(ctx, formatter))

    def get_help_option(self, ctx):
        option = super().get_help_option(ctx)
        if option is not None:
            option.metavar = ""
            option.get_runtime_param = lambda: _FLAG  # type: ignore[method-assign,assignment,return-value]  # a flag needs no validator: building one imports pydantic (~60 ms a process)
        return option

    def get_params(self, ctx):
        params = super().get_params(ctx)
        for param in params:
            if isinstance(param, typer.core.TyperArgument):
                param.display_type_rich = _no_type  # type: ignore[method-assign]
        return params


class _Flag:
    """How ``-h/--help`` coerces its value: it is a bool, or None when the flag is not given
    (Typer would build a validator for it, importing pydantic, on every command line)."""

    @staticmethod
    def coerce(value: object, param: object, ctx: object) -> object:
        return value


_FLAG = _Flag()


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
    index = "index"  # type: ignore[assignment]  # the member shadows str.index
    onehot = "onehot"
    soft = "soft"
    heatmap = "heatmap"


class Inputs(str, Enum):
    auto = "auto"
    logits = "logits"
    probs = "probs"


class DumpInputs(str, Enum):
    """``compare --inputs``: what a dump holds (``probs`` chooses by the row sums)."""

    auto = "auto"
    logits = "logits"
    probs = "probs"
    softmax_probs = "softmax-probs"
    sigmoid_probs = "sigmoid-probs"


ConfigOption = Annotated[
    Optional[Path],
    typer.Option(
        "--config",
        metavar="FILE",
        rich_help_panel="CI",
        help=plain("Read options from this pyproject.toml ([tool.lossaudit]) or lossaudit.yaml instead of the nearest one."),
    ),
]


IsolatedOption = Annotated[bool, typer.Option("--isolated", metavar="", rich_help_panel="CI", help=plain("Ignore configuration files."))]


AlsoOption = Annotated[
    Optional[list[str]],
    typer.Option(
        "--also",
        metavar="FORMAT=FILE",
        rich_help_panel="Report",
        show_default=False,
        help=plain("Also write the report in FORMAT to FILE, from the same run (repeatable): e.g. --also sarif=lint.sarif --also markdown=summary.md."),
    ),
]


def parse_also(values: list[str] | None, formats: type[_E], output: Path | None) -> list[tuple[_E, Path]]:
    """The ``--also FORMAT=FILE`` pairs, each format a member of ``formats``.

    Raises:
        InputError: a value without ``=``, an unknown format, or two reports (``--output``
            included) to one file.
    """
    from lossaudit.errors import InputError

    pairs = []
    for value in values or []:
        name, equals, file = value.partition("=")
        if not equals or not file:
            raise InputError(f"--also {value}: expected FORMAT=FILE, e.g. --also json=report.json")
        try:
            chosen = formats(name)
        except ValueError:
            raise InputError(f"--also {value}: expected one of {', '.join(member.value for member in formats)} before '='") from None
        pairs.append((chosen, Path(file)))
    files = [file.resolve() for _, file in pairs] + ([output.resolve()] if output is not None else [])
    if len(set(files)) < len(files):
        raise InputError(f"--also {' '.join(values or [])}: two reports to one file; give each its own")
    return pairs


OutputOption = Annotated[
    Optional[Path],
    typer.Option(
        metavar="FILE", rich_help_panel="Report", help=plain("Write the report to this file instead of stdout (whole: a temporary file, then a rename).")
    ),
]


PlotOption = Annotated[
    Optional[Path],
    typer.Option(
        "--plot",
        metavar="FILE",
        rich_help_panel="Report",
        help=plain("Also draw the plots to this new .png or .svg file (needs the plot extra: pip install 'lossaudit[plot]'); never overwrites a file."),
    ),
]


VerboseOption = Annotated[
    bool,
    typer.Option("--verbose", "-v", metavar="", rich_help_panel="Report", help=plain("Show tracebacks of errors (lint: also the probes that could not run).")),
]


INIT_HELP = "KEY=VALUE keyword for the constructor (lint: a class target, or the call of a function; compare: the --arch class); values are Python literals. Repeatable."


LogitsKeyOption = Annotated[
    Optional[str], typer.Option(help=plain("Key of the logits (default: logits, pred, preds, outputs, scores)."), metavar="KEY", rich_help_panel="Input")
]


TargetsKeyOption = Annotated[
    Optional[str], typer.Option(help=plain("Key of the targets (default: targets, labels, target, label, gt, y)."), metavar="KEY", rich_help_panel="Input")
]


TargetsOption = Annotated[TargetEncoding, typer.Option(help=plain("Target encoding; auto detects it."), rich_help_panel="Input")]


BackgroundIndexOption = Annotated[
    Optional[int], typer.Option(help=plain("Index label meaning background (default: C, the number of classes)."), metavar="N", rich_help_panel="Input")
]


IgnoreIndexOption = Annotated[int, typer.Option(help=plain("Index label meaning ignore."), metavar="N", rich_help_panel="Input")]


ClassDimOption = Annotated[
    Optional[int], typer.Option(help=plain("Class axis of the logits (default: last for 2-D/3-D, 1 for 4-D)."), metavar="AXIS", rich_help_panel="Input")
]


InputsOption = Annotated[
    Inputs,
    typer.Option(
        help=plain("Whether the dump holds logits or probabilities; auto reads logits and warns if they look like probabilities."), rich_help_panel="Input"
    ),
]


DumpInputsOption = Annotated[
    DumpInputs,
    typer.Option(
        help=plain(
            "What the dump holds: logits; softmax-probs (softmax losses from log p; the sigmoid losses cannot be computed); sigmoid-probs (every loss from logit p); probs picks softmax-probs when every row sums to 1, else sigmoid-probs; auto reads logits and warns if they look like probabilities."
        ),
        rich_help_panel="Input",
    ),
]


LabelBaseOption = Annotated[
    int,
    typer.Option(
        "--label-base",
        help=plain("Index label of the first class: 0 (labels 0..C-1), or 1 (labels 1..C; the background label then defaults to 0)."),
        min=0,
        max=1,
        metavar="0|1",
        rich_help_panel="Input",
    ),
]


ClassNamesOption = Annotated[
    Optional[Path],
    typer.Option(help=plain("File of class names: one per line, a YAML list or a YAML mapping {index: name}."), metavar="FILE", rich_help_panel="Input"),
]


BinsOption = Annotated[int, typer.Option(help=plain("Difficulty bins of g for the per-difficulty table."), metavar="N", rich_help_panel="Losses")]


def init_option(panel: str):
    """``--init``, shown in ``panel`` (compare: Model; lint: Target)."""
    return Annotated[Optional[list[str]], typer.Option("--init", metavar="KEY=VALUE", rich_help_panel=panel, help=plain(INIT_HELP))]


def config_values(ctx: typer.Context, section: dict, skip: tuple[str, ...] = ()) -> dict[str, object]:
    """Values from a configuration section for the options the command line left at their default."""
    values = {}
    for key, value in section.items():
        name = key.replace("-", "_")
        if key in skip or name not in ctx.params:
            continue
        if cast("ParameterSource", ctx.get_parameter_source(name)).name == "DEFAULT":
            values[name] = ",".join(value) if isinstance(value, list) else value
    return values


def version_lines() -> list[str]:
    """lossaudit's version, then Python's and those of numpy and torch (what a bug report needs),
    read from the installed packages' metadata: neither numpy nor torch is imported."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    def installed(package: str) -> str:
        try:
            return f"{package} {version(package)}"
        except PackageNotFoundError:
            return f"{package} not installed"

    python = f"Python {platform.python_version()} ({platform.python_implementation()}, {platform.system()} {platform.machine()})"
    return [f"lossaudit {__version__}", python, installed("numpy"), installed("torch")]


def _version(value: bool) -> None:
    if value:
        print("\n".join(version_lines()))
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[
        bool,
        typer.Option(
            "--version", metavar="", callback=_version, is_eager=True, help=plain("Print the versions of lossaudit, Python, numpy and torch, and exit.")
        ),
    ] = False,
) -> None:
    """Audit focal, GHM and cross-entropy losses on your predictions and your loss code."""


def gate_share_moves(section: dict, threshold: float | None) -> None:
    """Exit 1 when the largest share move reaches ``--fail-if-share-moves``; with a threshold, say
    what was compared; warn on stderr when the baseline shares no class with the new report."""
    from lossaudit.compare.report.baseline import describe_move, moved_too_far

    if threshold is None:
        return
    for warning in section.get("warnings", []):
        stderr.print(f"--fail-if-share-moves {threshold:g}: warning: {warning}", highlight=False, markup=False, soft_wrap=True)
    if moved_too_far(section, threshold):
        move = section["largest_move"]
        compared = f" (compared {section['compared']})" if "compared" in section else ""
        stderr.print(
            f"--fail-if-share-moves {threshold:g}: {describe_move(move)} moved {move['points']:+.1f} points{compared}",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )
        raise typer.Exit(EXIT_FINDINGS)


def piped_width(output: Path | None) -> int | None:
    """The width of a text report that is not printed to a terminal: ``$COLUMNS`` when it goes to
    stdout and is set, else None (as wide as its content)."""
    columns = os.environ.get("COLUMNS", "") if output is None else ""
    return int(columns) if columns.isdigit() else None


def text_width() -> int | None:
    """The width of plain text printed to stdout: the terminal's when it is one, else
    :func:`piped_width` (``$COLUMNS``, or as wide as the content)."""
    if sys.stdout.isatty():
        import shutil

        return shutil.get_terminal_size().columns
    return piped_width(None)


def fail_internal(error: Exception, verbose: bool) -> None:
    """Exit 2 for an error that is not the input's: torch missing where a path needs it (said in
    words, with what works without it), else an internal error with its type, never a traceback
    unless ``verbose``."""
    if isinstance(error, ModuleNotFoundError) and (error.name or "").split(".")[0] == "torch":
        from lossaudit.errors import NEEDS_TORCH

        fail(NEEDS_TORCH, verbose)
    fail(f"internal error: {type(error).__name__}: {error}", verbose)


def fail(message: str, verbose: bool) -> None:
    if verbose:
        stderr.print_exception()
    one_line = " ".join(message.split())
    stderr.print(f"lossaudit: error: {one_line}", highlight=False, markup=False, soft_wrap=True)
    raise typer.Exit(EXIT_ERROR)


VALIDATION_WORDS = {
    "int_parsing": "expected an integer",
    "int_type": "expected an integer",
    "int_from_float": "expected an integer",
    "float_parsing": "expected a number",
    "float_type": "expected a number",
    "finite_number": "expected a finite number",
    "bool_parsing": "expected true or false",
    "greater_than_equal": "expected at least {ge}",
    "greater_than": "expected more than {gt}",
    "less_than_equal": "expected at most {le}",
    "less_than": "expected less than {lt}",
}
"""lossaudit's words for the validation errors of the library Typer converts option values with
(pydantic), by error type; ``{ge}`` and the like come from the error's context."""


def usage_message(error: typer.TyperException) -> str:
    """A usage error in lossaudit's form, ``--OPTION VALUE: expected ...`` (as its own checks say
    it), where Typer's message is the validation library's ("Input should be a valid integer,
    unable to parse string as an integer"); other usage errors as Typer words them."""
    import re

    cause: Any = error.__cause__
    param = getattr(error, "param", None)
    if not (hasattr(cause, "errors") and param is not None and cause.errors()):
        return error.format_message()
    detail = cause.errors()[0]
    value = detail.get("input")
    option = max(getattr(param, "opts", None) or [param.human_readable_name], key=len)
    choices = re.search(r"is not one of (.*?)\.?$", str((detail.get("ctx") or {}).get("error", "")))
    if choices:
        said = "expected one of " + ", ".join(choice.strip(" '") for choice in choices.group(1).split(","))
    elif detail.get("type") in VALIDATION_WORDS:
        said = VALIDATION_WORDS[detail["type"]].format(**(detail.get("ctx") or {}))
    else:
        said = re.sub(r"^Input should be", "expected", str(detail.get("msg", "")).split(",")[0])
    return f"{option} {value}: {said}" if value is not None else f"{option}: {said}"


def main() -> None:
    """The ``lossaudit`` program: Typer's usage errors (an unknown option, a bad choice, a missing
    value) are printed in lossaudit's one-line form and exit 2, like its own errors."""
    from typer._click.exceptions import NoArgsIsHelpError

    try:
        code = app(prog_name="lossaudit", standalone_mode=False)
    except NoArgsIsHelpError as error:  # the help, once: rich help prints itself as the error is built
        if error.format_message():
            sys.stdout.write(error.format_message() + "\n")
        code = EXIT_ERROR
    except typer.TyperException as error:  # click's ClickException and UsageError, as Typer vendors them
        stderr.print(f"lossaudit: error: {' '.join(usage_message(error).split())}", highlight=False, markup=False, soft_wrap=True)
        code = EXIT_ERROR
    except typer.Abort:
        stderr.print("lossaudit: error: aborted", highlight=False, markup=False)
        code = EXIT_ERROR
    sys.exit(code if isinstance(code, int) else EXIT_OK)
