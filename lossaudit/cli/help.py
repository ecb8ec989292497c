"""``--help``: a command's help (or the program's), laid out in a few milliseconds.

The layout is Typer's rich help: the usage line, the description, then panels (``Arguments``,
``Options`` and one per ``rich_help_panel``, in the order of their first parameter; the program's
``Commands``), a row per parameter: its names, its metavar or choices (and range), its help with
``[default: ...]``. It is built here as lines of text rather than with rich's tables, which took
~0.1 s a process (the import of ``typer.rich_utils`` with rich's markdown parser, and rendering).

- Every column lines up across the panels; a long type (``<auto|logits|...>``) folds at ``|``.
- Where the columns would leave the help under :data:`MIN_HELP` characters, each parameter is
  stacked instead: its names and type on a line, its help indented below. Option names are never
  cut and no line passes the width (``ctx.terminal_width``, ``$TERMINAL_WIDTH``, ``$COLUMNS``,
  the terminal's, else 80).
- Help strings are plain text, shown as written (no markup: ``[tool.lossaudit]`` stays).
- Styles (option names bold cyan, types yellow, borders dim, as Typer's) only where stdout is a
  terminal, by rich's rules (:func:`styles`: ``FORCE_COLOR``, ``NO_COLOR``, ``TERM=dumb``), as ANSI
  codes; rich itself is imported only on Windows, whose legacy console it drives.
"""

from __future__ import annotations

import inspect
import os
import re
import sys
import textwrap
from typing import Any

Segment = tuple[str, str]
"""A run of text and its rich style ("" for none)."""
Line = list[Segment]

MIN_HELP = 30
"""Fewest characters of help per line the column layout may leave; below, parameters are stacked."""
MAX_TYPE = 14
"""Widest the type column grows; a longer type folds onto the row's next lines."""
INDENT = 4
"""Columns a stacked parameter's help is indented by under its names."""
NBSP = "\u00a0"
"""Joins ``[default:`` to a short default while the help is wrapped (written as a space)."""

OPTION, SWITCH, TYPE, BORDER, DIM, REQUIRED, USAGE = "bold cyan", "bold green", "bold yellow", "dim", "dim", "dim red", "yellow"
_MENTION = re.compile(r"(?<![\w-])(--?[A-Za-z][\w-]*)")
"""An option named in a help text (highlighted as Typer's help does)."""


def write_help(command: Any, ctx: Any, formatter: Any) -> None:
    """``command``'s help at the terminal's width: styled where stdout is a terminal (see
    :func:`styles`), written to stdout but for its last newline (click's echo adds it); else as
    plain text into click's ``formatter`` (what ``ctx.get_help()`` returns)."""
    width = terminal_width(ctx)
    lines = help_lines(command, ctx, width)
    mode = styles()
    if mode == "rich":
        from rich.console import Console
        from rich.text import Text

        console = Console(highlight=False, width=width, force_terminal=True if _forced() else None)
        for number, line in enumerate(lines, 1):
            text = Text(no_wrap=True, overflow="ignore")
            for run, style in line:
                text.append(run, style or None)
            console.print(text, soft_wrap=True, crop=False, end="" if number == len(lines) else "\n")
    elif mode:
        sys.stdout.write("\n".join(_ansi(line, colour=mode == "colour") for line in lines))
    else:
        formatter.write("\n".join("".join(run for run, _ in line).rstrip() for line in lines) + "\n")


def terminal_width(ctx: Any) -> int:
    """The width to lay the help out in: click's ``terminal_width`` (a test runner's), Typer's
    ``$TERMINAL_WIDTH``, ``$COLUMNS``, the terminal of stdin, stdout or stderr, else 80 (as rich)."""
    for given in (ctx.terminal_width, os.environ.get("TERMINAL_WIDTH"), os.environ.get("COLUMNS")):
        if given is not None and str(given).isdigit() and int(given) > 0:
            return int(given)
    for stream in (sys.__stdin__, sys.__stdout__, sys.__stderr__):
        if stream is None:
            continue
        try:
            return os.get_terminal_size(stream.fileno()).columns
        except (AttributeError, OSError, ValueError):
            continue
    return 80


def _forced() -> bool:
    """Whether the environment says stdout is a terminal whatever it is (rich's ``FORCE_COLOR`` and
    ``TTY_COMPATIBLE=1``, Typer's ``PY_COLORS`` and ``GITHUB_ACTIONS``)."""
    return any(os.environ.get(name) for name in ("FORCE_COLOR", "PY_COLORS", "GITHUB_ACTIONS")) or os.environ.get("TTY_COMPATIBLE") == "1"


def styles() -> str:
    """How the help is styled, by rich's rules for its console: ``""`` (plain) where stdout is not
    a terminal (and nothing says it is one) or ``$TERM`` is dumb, ``"mono"`` (bold and dim, no
    colours) under ``NO_COLOR``, else ``"colour"``; on Windows, ``"rich"``: printed through rich,
    which drives the legacy console. ANSI codes written here cost ~1 ms where rich's console costs
    ~30 ms a process (its import, its renderer)."""
    try:
        terminal = _forced() or (os.environ.get("TTY_COMPATIBLE") != "0" and sys.stdout.isatty())
    except (AttributeError, ValueError):
        terminal = False
    if not terminal or os.environ.get("TERM", "").lower() in ("dumb", "unknown"):
        return ""
    if sys.platform == "win32":
        return "rich"
    return "mono" if os.environ.get("NO_COLOR") else "colour"


_SGR = {"bold": "1", "dim": "2", "red": "31", "green": "32", "yellow": "33", "cyan": "36"}
"""The ANSI select-graphic-rendition code of each style word the help uses."""


def _ansi(line: Line, colour: bool) -> str:
    """A line with its styles as ANSI codes (without colours unless ``colour``)."""
    out = []
    for run, style in line:
        codes = [_SGR[word] for word in style.split() if colour or word in ("bold", "dim")]
        out.append(f"\x1b[{';'.join(codes)}m{run}\x1b[0m" if codes and run.strip() else run)
    return "".join(out).rstrip()


def help_lines(command: Any, ctx: Any, width: int) -> list[Line]:
    """The help of ``command`` (a Typer command or group) as lines no wider than ``width``."""
    lines: list[Line] = [[], *_paragraph(f"Usage: {ctx.command_path} {' '.join(command.collect_usage_pieces(ctx))}", width, "bold", USAGE), []]
    text = inspect.cleandoc(command.help or "").partition("\f")[0]
    if text:
        first, *rest = text.split("\n\n")
        lines += [*_paragraph(first, width, ""), []]
        for paragraph in rest:
            lines += [*_paragraph(paragraph, width, DIM), []]
    panels = _panels(command, ctx)
    names = max((len(row[0]) for rows in panels.values() for row in rows), default=0)
    types = min(MAX_TYPE, max((len(row[1]) for rows in panels.values() for row in rows), default=0))
    inner = width - 4
    stacked = inner - names - 2 - (types + 2 if types else 0) < MIN_HELP
    for title, rows in panels.items():
        body: list[Line] = []
        for row in rows:
            body += _stacked(row, inner) if stacked else _columns(row, names, types, inner)
        lines += _panel(title, body, width)
    commands = getattr(command, "commands", None)
    if commands is not None:
        listed = [(name, _summary(commands, name)) for name in command.list_commands(ctx)]
        column = max((len(name) for name, _ in listed), default=0)
        body = []
        for name, summary in listed:
            if inner - column - 2 < MIN_HELP:
                body += [[(name, OPTION)], *([(" " * INDENT, ""), *line] for line in _wrap(summary, inner - INDENT, ""))]
            else:
                wrapped = _wrap(summary, inner - column - 2, "") or [[]]
                body += [[(name.ljust(column + 2), OPTION), *line] if i == 0 else [(" " * (column + 2), ""), *line] for i, line in enumerate(wrapped)]
        lines += _panel("Commands", body, width)
    if command.epilog:
        lines += [[], *_paragraph(inspect.cleandoc(command.epilog), width, "")]
    return lines


Row = tuple[str, str, list[Segment]]
"""A parameter's names, its type (metavar or choices, and range), and its help as styled runs."""


def _panels(command: Any, ctx: Any) -> dict[str, list[Row]]:
    """The parameters' rows by panel, in Typer's order: the ``Arguments`` panel, other argument
    panels, ``Options``, other option panels (each in the order of its first parameter)."""
    from typer.core import TyperArgument

    arguments: dict[str, list[Row]] = {"Arguments": []}
    options: dict[str, list[Row]] = {"Options": []}
    for param in command.get_params(ctx):
        if getattr(param, "hidden", False):
            continue
        if isinstance(param, TyperArgument):
            panels, names = arguments, param.display_name_raw + ("..." if param.metavar is None and param.nargs != 1 else "")
        else:
            panels, names = options, ", ".join(sorted([*param.opts, *param.secondary_opts], key=lambda name: not name.startswith("--")))  # long names first
        kind = param.display_type_rich(ctx=ctx) or ""
        bounds = param._get_number_range_help_str()
        panels.setdefault(getattr(param, "rich_help_panel", None) or next(iter(panels)), []).append(
            (names, f"{kind} [{bounds}]".strip() if bounds else kind, _parameter_help(param, ctx))
        )
    return {title: rows for title, rows in {**arguments, **options}.items() if rows}


def _parameter_help(param: Any, ctx: Any) -> list[Segment]:
    """The help text, then ``[default: ...]`` where Typer shows one, then ``[required]``."""
    runs = _mentions(" ".join((param.help or "").split()))
    default = param._extract_default_help_str(ctx=ctx)
    given = isinstance(param.show_default, str)
    if given or (default is not None and (param.show_default or ctx.show_default)):
        shown = param._get_default_string(ctx=ctx, show_default_is_str=given, default_value=default)
        if shown:
            runs.append((f" [default:{NBSP if len(shown) <= 20 else ' '}{shown}]", DIM))
    if param.required:
        runs.append((" [required]", REQUIRED))
    return runs


def _mentions(text: str) -> list[Segment]:
    """``text`` as runs, the options it names highlighted."""
    parts = _MENTION.split(text)
    return [(part, OPTION if i % 2 else "") for i, part in enumerate(parts) if part]


def _columns(row: Row, names: int, types: int, inner: int) -> list[Line]:
    """A row in columns: names, type (folded at ``|``), help (wrapped)."""
    name, kind, help_runs = row
    name_style = OPTION if name.startswith("--") else SWITCH if name.startswith("-") else OPTION
    help_width = inner - names - 2 - (types + 2 if types else 0)
    kinds = _fold(kind, types) if types else []
    helps = _wrap_runs(help_runs, help_width)
    lines = []
    for i in range(max(1, len(kinds), len(helps))):
        line: Line = [(name.ljust(names + 2) if i == 0 else " " * (names + 2), name_style if i == 0 else "")]
        if types:
            line.append(((kinds[i] if i < len(kinds) else "").ljust(types + 2), TYPE))
        line += helps[i] if i < len(helps) else []
        lines.append(line)
    return lines


def _stacked(row: Row, inner: int) -> list[Line]:
    """A row stacked: names (and the type when it fits beside them), then the help indented."""
    name, kind, help_runs = row
    lines: list[Line] = [[(name, OPTION)]]
    if kind and len(name) + 1 + len(kind) <= inner:
        lines[0].append((" " + kind, TYPE))
    elif kind:
        lines += [[(" " * INDENT, ""), (part, TYPE)] for part in _fold(kind, inner - INDENT)]
    lines += [[(" " * INDENT, ""), *line] for line in _wrap_runs(help_runs, inner - INDENT)]
    return lines


def _panel(title: str, body: list[Line], width: int) -> list[Line]:
    """``body`` in a box of ``width`` columns titled ``title``: ``╭─ title ───╮``."""
    top = f"╭─ {title} "
    lines: list[Line] = [[(top + "─" * max(0, width - len(top) - 1) + "╮", BORDER)]]
    for line in body:
        used = sum(len(run) for run, _ in line)
        lines.append([("│ ", BORDER), *line, (" " * max(0, width - 4 - used), ""), (" │", BORDER)])
    lines.append([("╰" + "─" * (width - 2) + "╯", BORDER)])
    return lines


def _paragraph(text: str, width: int, style: str, first: str | None = None) -> list[Line]:
    """A paragraph indented by one column, wrapped to ``width`` (its first word styled ``first``)."""
    lines = [[(" ", ""), *line] for line in _wrap(" ".join(text.split()), width - 2, style)]
    if first is not None and lines:
        (space, _), (run, run_style) = lines[0][:2]
        word, _, rest = run.partition(" ")
        lines[0][1:2] = [(word + " ", first), (rest, run_style)]
    return lines


def _wrap(text: str, width: int, style: str) -> list[Line]:
    """Plain ``text`` wrapped to ``width``, each line one run."""
    return [[(line, style)] for line in textwrap.wrap(text, max(1, width), break_on_hyphens=False)]


def _wrap_runs(runs: list[Segment], width: int) -> list[Line]:
    """Styled runs wrapped to ``width`` at spaces (a word longer than the width is split), each
    line keeping the styles of the characters it holds."""
    text = "".join(run for run, _ in runs).strip()
    offset = len("".join(run for run, _ in runs)) - len("".join(run for run, _ in runs).lstrip())
    spans, start = [], -offset
    for run, style in runs:
        spans.append((start, start + len(run), style))
        start += len(run)
    lines, at = [], 0
    for piece in textwrap.wrap(text, max(1, width), break_on_hyphens=False):
        begin = text.index(piece, at)
        end = at = begin + len(piece)
        lines.append([(text[max(begin, low) : min(end, high)].replace(NBSP, " "), style) for low, high, style in spans if low < end and high > begin])
    return lines


def _fold(text: str, width: int) -> list[str]:
    """``text`` in pieces of at most ``width`` characters, broken after ``|``, ``,`` or a space
    where it can be."""
    pieces: list[str] = []
    for token in re.findall(r"[^|, ]*[|, ]?", text):
        if pieces and len(pieces[-1]) + len(token) <= width:
            pieces[-1] += token
        else:
            pieces.append(token)
    folded = []
    for piece in (piece.rstrip() for piece in pieces if piece):
        folded += [piece[i : i + width] for i in range(0, len(piece), width)] or [""]
    return folded


def _summary(commands: Any, name: str) -> str:
    """The first paragraph of command ``name``'s help (without building it where ``commands`` can
    tell it unbuilt: :meth:`lossaudit.cli.app.Commands.help_text`)."""
    if hasattr(commands, "help_text"):
        text = commands.help_text(name)
    else:
        text = commands[name].short_help or commands[name].help or ""
    return " ".join(inspect.cleandoc(text).split("\n\n")[0].split())
