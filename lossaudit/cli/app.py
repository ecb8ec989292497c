"""The ``lossaudit`` program's frame: the Typer app (a process builds only the command it runs:
:class:`Commands`), its command classes (help laid out by :mod:`lossaudit.cli.help`, option values
converted by :mod:`lossaudit.cli.convert`), the options several commands share (declared once),
configuration defaults, error output and exit codes.

Exit codes: 0 done, 1 findings that fail the run (``--strict``, lint findings), 2 could not run.
Each command lives in its own module of :mod:`lossaudit.cli` and only parses its options, calls the
library, picks a renderer and chooses the exit code; torch is imported inside the commands, so
``--help`` and ``--version`` stay fast.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, MutableMapping
from enum import Enum
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional, TypeVar, cast

import typer

from lossaudit._version import __version__

EXIT_OK, EXIT_FINDINGS, EXIT_ERROR = 0, 1, 2


if TYPE_CHECKING:  # a mixin of Typer's command and group classes
    from rich.console import Console
    from typer._click.core import Command as ClickCommand
    from typer._click.core import ParameterSource

    _HelpBase = typer.core.TyperCommand
else:
    _HelpBase = object

_E = TypeVar("_E", bound=Enum)


class _PlainHelp(_HelpBase):
    """lossaudit's help and option values: the help laid out by :mod:`lossaudit.cli.help` (not
    Typer's rich tables), without Python type placeholders (``-h/--help`` is a flag, an argument is
    named by its metavar alone, not ``<list[Path]>``); values converted by
    :mod:`lossaudit.cli.convert` (not Typer's pydantic validators)."""

    def format_help(self, ctx, formatter):
        from lossaudit.cli.help import write_help

        write_help(self, ctx, formatter)

    def get_help_option(self, ctx):
        option = super().get_help_option(ctx)
        if option is not None:
            option.metavar = ""
        return option

    def get_params(self, ctx):
        from lossaudit.cli.convert import converter

        params = super().get_params(ctx)
        for param in params:
            if isinstance(param, typer.core.TyperArgument):
                param.display_type_rich = _no_type  # type: ignore[method-assign]
            if getattr(param, "_runtime_param", None) is None:
                param._runtime_param = converter(param)  # type: ignore[attr-defined]  # Typer's get_runtime_param returns it
        return params


def _no_type(ctx) -> None:
    return None


class Command(_PlainHelp, typer.core.TyperCommand):
    pass


class Group(_PlainHelp, typer.core.TyperGroup):
    def list_commands(self, ctx):
        """The commands' names, in the order registered (without building them, unlike Typer's)."""
        return list(self.commands)


class Commands(MutableMapping[str, "ClickCommand"]):
    """The program's commands by name, in the order registered, each built from its registration
    (its parameters read from the function's signature, 0.2-4 ms a command) when first looked up:
    a process builds the command it runs, not all eight."""

    def __init__(self, registered: typer.Typer) -> None:
        from typer.main import get_command_name

        self.infos = {info.name or get_command_name(info.callback.__name__): info for info in registered.registered_commands if info.callback}
        self.built: dict[str, ClickCommand] = {}
        self.registered = registered

    def __getitem__(self, name: str) -> ClickCommand:
        if name not in self.built:
            from typer.main import get_command_from_info

            self.built[name] = get_command_from_info(
                self.infos[name], pretty_exceptions_short=self.registered.pretty_exceptions_short, rich_markup_mode=self.registered.rich_markup_mode
            )
        return self.built[name]

    def __setitem__(self, name: str, command: ClickCommand) -> None:
        self.built[name] = command
        self.infos.setdefault(name, cast(Any, None))

    def __delitem__(self, name: str) -> None:
        del self.infos[name]
        self.built.pop(name, None)

    def __iter__(self) -> Iterator[str]:
        return iter(self.infos)

    def __len__(self) -> int:
        return len(self.infos)

    def help_text(self, name: str) -> str:
        """Command ``name``'s help, for the program's help: from its registration (the docstring)
        when it is not built, so that listing the commands builds none."""
        import inspect

        if name in self.built:
            return self.built[name].short_help or self.built[name].help or ""
        info = self.infos[name]
        return info.help if info.help is not None else inspect.getdoc(info.callback) or ""


def _program() -> Any:
    """The program's click group, its commands built when looked up (:class:`Commands`)."""
    import copy

    from typer.main import get_group

    bare = copy.copy(app)
    bare.registered_commands = []
    group = get_group(bare)
    group.commands = Commands(app)
    return group


app = typer.Typer(
    cls=Group,
    name="lossaudit",
    help="Audit focal, GHM and cross-entropy losses on your predictions and your loss code.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


class _Stderr:
    """The console for diagnostics (stderr), made when first printed to: importing rich's console
    costs ~14 ms, which a process that prints no diagnostic (``--help``, a clean run) need not pay."""

    @cached_property
    def console(self) -> Console:
        from rich.console import Console

        return Console(stderr=True)

    def print(self, *objects: Any, **options: Any) -> None:
        self.console.print(*objects, **options)

    def print_exception(self) -> None:
        self.console.print_exception()


stderr = _Stderr()


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
        help="Read options from this pyproject.toml ([tool.lossaudit]) or lossaudit.yaml instead of the nearest one.",
    ),
]


IsolatedOption = Annotated[bool, typer.Option("--isolated", metavar="", rich_help_panel="CI", help="Ignore configuration files.")]


AlsoOption = Annotated[
    Optional[list[str]],
    typer.Option(
        "--also",
        metavar="FORMAT=FILE",
        rich_help_panel="Report",
        show_default=False,
        help="Also write the report in FORMAT to FILE, from the same run (repeatable): e.g. --also sarif=lint.sarif --also markdown=summary.md.",
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
    typer.Option(metavar="FILE", rich_help_panel="Report", help="Write the report to this file instead of stdout (whole: a temporary file, then a rename)."),
]


PlotOption = Annotated[
    Optional[Path],
    typer.Option(
        "--plot",
        metavar="FILE",
        rich_help_panel="Report",
        help="Also draw the plots to this new .png or .svg file (needs the plot extra: pip install 'lossaudit[plot]'); never overwrites a file.",
    ),
]


VerboseOption = Annotated[
    bool,
    typer.Option("--verbose", "-v", metavar="", rich_help_panel="Report", help="Show tracebacks of errors (lint: also the probes that could not run)."),
]


INIT_HELP = "KEY=VALUE keyword for the constructor (lint: a class target, or the call of a function; compare: the --arch class); values are Python literals. Repeatable."


LogitsKeyOption = Annotated[
    Optional[str], typer.Option(help="Key of the logits (default: logits, pred, preds, outputs, scores).", metavar="KEY", rich_help_panel="Input")
]


TargetsKeyOption = Annotated[
    Optional[str], typer.Option(help="Key of the targets (default: targets, labels, target, label, gt, y).", metavar="KEY", rich_help_panel="Input")
]


TargetsOption = Annotated[TargetEncoding, typer.Option(help="Target encoding; auto detects it.", rich_help_panel="Input")]


BackgroundIndexOption = Annotated[
    Optional[int], typer.Option(help="Index label meaning background (default: C, the number of classes).", metavar="N", rich_help_panel="Input")
]


IgnoreIndexOption = Annotated[int, typer.Option(help="Index label meaning ignore.", metavar="N", rich_help_panel="Input")]


ClassDimOption = Annotated[
    Optional[int], typer.Option(help="Class axis of the logits (default: last for 2-D/3-D, 1 for 4-D).", metavar="AXIS", rich_help_panel="Input")
]


InputsOption = Annotated[
    Inputs,
    typer.Option(help="Whether the dump holds logits or probabilities; auto reads logits and warns if they look like probabilities.", rich_help_panel="Input"),
]


DumpInputsOption = Annotated[
    DumpInputs,
    typer.Option(
        help="What the dump holds: logits; softmax-probs (softmax losses from log p; the sigmoid losses cannot be computed); sigmoid-probs (every loss from logit p); probs picks softmax-probs when every row sums to 1, else sigmoid-probs; auto reads logits and warns if they look like probabilities.",
        rich_help_panel="Input",
    ),
]


LabelBaseOption = Annotated[
    int,
    typer.Option(
        "--label-base",
        help="Index label of the first class: 0 (labels 0..C-1), or 1 (labels 1..C; the background label then defaults to 0).",
        min=0,
        max=1,
        metavar="0|1",
        rich_help_panel="Input",
    ),
]


ClassNamesOption = Annotated[
    Optional[Path],
    typer.Option(help="File of class names: one per line, a YAML list or a YAML mapping {index: name}.", metavar="FILE", rich_help_panel="Input"),
]


BinsOption = Annotated[int, typer.Option(help="Difficulty bins of g for the per-difficulty table.", metavar="N", rich_help_panel="Losses")]


def init_option(panel: str):
    """``--init``, shown in ``panel`` (compare: Model; lint: Target)."""
    return Annotated[Optional[list[str]], typer.Option("--init", metavar="KEY=VALUE", rich_help_panel=panel, help=INIT_HELP)]


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

    python = f"Python {platform.python_version()} ({platform.python_implementation()}, {platform.system()} {platform.machine()})"
    return [f"lossaudit {__version__}", python, *(f"{package} {installed_version(package) or 'not installed'}" for package in ("numpy", "torch"))]


def installed_version(package: str) -> str | None:
    """The version of an installed distribution: from the name of its ``NAME-VERSION.dist-info``
    folder in the first ``sys.path`` entry that has one (what pip writes; ~1 ms), else from
    :mod:`importlib.metadata` (other layouts: ~25 ms, its import included); None if not installed."""
    prefix = package.replace("-", "_") + "-"
    for entry in sys.path:
        try:
            names = os.listdir(entry or ".")
        except OSError:
            continue
        found = sorted(name for name in names if name.startswith(prefix) and name.endswith(".dist-info"))
        if found:
            return found[0][len(prefix) : -len(".dist-info")]
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


def _version(value: bool) -> None:
    if value:
        print("\n".join(version_lines()))
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[
        bool,
        typer.Option("--version", metavar="", callback=_version, is_eager=True, help="Print the versions of lossaudit, Python, numpy and torch, and exit."),
    ] = False,
) -> None:
    """Audit focal, GHM and cross-entropy losses on your predictions and your loss code."""


def gate_share_moves(section: dict, threshold: float | None) -> None:
    """Exit 1 when the largest share move reaches ``--fail-if-share-moves``; with a threshold, say
    what was compared; warn on stderr when the baseline shares no class with the new report."""
    from lossaudit.compare.report.baseline import move_sentence

    if threshold is None:
        return
    for warning in section.get("warnings", []):
        stderr.print(f"--fail-if-share-moves {threshold:g}: warning: {warning}", highlight=False, markup=False, soft_wrap=True)
    moved = move_sentence(section, threshold)
    if moved is not None:
        stderr.print(f"--fail-if-share-moves {threshold:g}: {moved}", highlight=False, markup=False, soft_wrap=True)
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


def usage_message(error: typer.TyperException) -> str:
    """A usage error in lossaudit's form: a value its parameter refuses as ``--OPTION VALUE:
    expected ...`` (:class:`lossaudit.cli.convert.ValueRefused`, as lossaudit's own checks say
    it); other usage errors (an unknown option, a missing value) as Typer words them."""
    from lossaudit.cli.convert import ValueRefused

    if not isinstance(error, ValueRefused) or error.param is None:
        return error.format_message()
    param: Any = error.param
    option = max(getattr(param, "opts", None) or [param.human_readable_name], key=len)
    return f"{option} {error.value}: {error.said}"


def main() -> None:
    """The ``lossaudit`` program: Typer's usage errors (an unknown option, a bad choice, a missing
    value) are printed in lossaudit's one-line form and exit 2, like its own errors. Only the
    command run is built (:class:`Commands`).

    It ends the process. Its objects are frozen first (:func:`gc.freeze`): the interpreter's
    shutdown would otherwise run the cycle collector over all of them (numpy's, Typer's and
    lossaudit's ~30,000) to free memory the process gives back as it ends, 20-40 ms of a
    ``compare`` run (the shutdown still frees what reference counts free, and runs ``atexit``).

    numpy's OpenBLAS is given one thread (``OPENBLAS_NUM_THREADS=1``, unless the environment sets
    it), before numpy is imported: lossaudit's BLAS calls are small sums (:mod:`~lossaudit.compare.engine.dense`),
    and a pool of BLAS threads spins beside the process and its forked workers (80M-element
    ``compare``, 2 cores: about 50 ms of CPU at numpy's import alone, 0.42 -> 0.39 s)."""
    import gc

    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

    from typer._click.exceptions import NoArgsIsHelpError

    try:
        code = _program()(prog_name="lossaudit", standalone_mode=False)
    except NoArgsIsHelpError as error:  # the help, once (on a terminal, rich printed it as the error was built, but for the last newline)
        sys.stdout.write(error.format_message() + "\n")
        code = EXIT_ERROR
    except typer.TyperException as error:  # click's ClickException and UsageError, as Typer vendors them
        stderr.print(f"lossaudit: error: {' '.join(usage_message(error).split())}", highlight=False, markup=False, soft_wrap=True)
        code = EXIT_ERROR
    except typer.Abort:
        stderr.print("lossaudit: error: aborted", highlight=False, markup=False)
        code = EXIT_ERROR
    gc.freeze()
    sys.exit(code if isinstance(code, int) else EXIT_OK)
