"""``--help`` on a narrow terminal: option names whole, help text below them.

Typer's rich help puts each option on one table row (names, type, help); below about 78 columns
(``compare``'s options) the table no longer fits and rich cuts cells with "…", option names
included. :func:`print_help` renders Typer's help as usual into a buffer at the terminal's width;
when nothing is cut it prints that, else it prints the same panels with each option stacked: its
names and type on one line, its help (defaults, ranges) indented below, wrapped to the width.

Typer builds each options panel in ``typer.rich_utils._print_options_panel``; the stacked layout
stands in for that function while the help is printed, and reuses Typer's own help text
(``_get_parameter_help``), so both layouts say the same.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

CUT = "…"
"""What rich puts where a table cell was cut (lossaudit's help texts never contain it)."""
INDENT = 4
"""Columns an option's help is indented by under its names."""


def print_help(render: Callable[[], None]) -> None:
    """Run ``render`` (Typer's rich help, printed to its console): as is when it fits the
    terminal, else again with the options stacked (see the module docstring)."""
    from typer import rich_utils

    make_console = rich_utils._get_rich_console
    buffer = io.StringIO()

    def buffered(stderr: bool = False):
        console = make_console(stderr)
        console.file = buffer
        return console

    rich_utils._get_rich_console = buffered
    try:
        render()
    finally:
        rich_utils._get_rich_console = make_console
    if CUT not in buffer.getvalue():
        print(buffer.getvalue(), end="")
        return
    table = rich_utils._print_options_panel
    rich_utils._print_options_panel = _stacked_panel
    try:
        render()
    finally:
        rich_utils._print_options_panel = table


def _names(param, ctx) -> str:
    """The option's names (``--format``, ``-o, --output``) or the argument's metavar, and its type or range."""
    from typer.core import TyperArgument

    if isinstance(param, TyperArgument):
        names = param.display_name_raw + ("..." if param.metavar is None and param.nargs != 1 else "")
    else:
        names = ", ".join(sorted([*param.opts, *param.secondary_opts], key=lambda name: name.startswith("--")))
    kind = param.display_type_rich(ctx=ctx)
    range_help = param._get_number_range_help_str()
    return " ".join(part for part in (names, kind, f"[{range_help}]" if range_help else None, "(required)" if param.required else None) if part)


def _stacked_panel(*, name: str, params: list, ctx, markup_mode, console) -> None:
    """One options panel, each option's names on a line of their own and its help below."""
    from rich.console import Group
    from rich.padding import Padding
    from rich.panel import Panel
    from rich.text import Text
    from typer import rich_utils

    if not params:
        return
    items: list[Any] = []
    for param in params:
        items.append(rich_utils.highlighter(Text(_names(param, ctx), style=rich_utils.STYLE_OPTION)))
        items.append(Padding(rich_utils._get_parameter_help(param=param, ctx=ctx, markup_mode=markup_mode), (0, 0, 0, INDENT)))
    console.print(Panel(Group(*items), border_style=rich_utils.STYLE_OPTIONS_PANEL_BORDER, title=name, title_align=rich_utils.ALIGN_OPTIONS_PANEL))
