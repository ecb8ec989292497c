"""Fit the text report to a width: prose wrapped without splitting a formula, tables split into
column groups that fit, so that no number or class name is ever cut.

A table is a label column (class, loss, bin) and groups of value columns (counts, shares…). When
the whole table is wider than the width, each part keeps the label column and takes as many whole
groups as fit; a group wider than the width on its own is split column by column. Value columns
never wrap; only a label longer than the whole width folds onto several lines.

Rich is imported by the functions that measure or draw (its tables and console cost ~20 ms to
import): the reports that draw no text (JSON, markdown, GitHub, JUnit) build their
:class:`Section` rows without it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

OPERATORS = frozenset({"<", ">", "≤", "≥", "=", "−", "+", "×", "÷", "·", "/", "→"})
"""A line never breaks next to these, so ``g ≥ 0.9`` or ``g = |p − y|`` stays on one line."""


@dataclass
class Section:
    """One table: a title, column headers, rows of strings, an optional total row, a note, and the
    column groups it may be split into (``(name, column indices)``; index 0, the label, is in every
    part). No groups: each value column is its own group."""

    title: str
    headers: list[str]
    rows: list[list[str]]
    total: list[str] | None = None
    note: str = ""
    groups: list[tuple[str, list[int]]] = field(default_factory=list)


def atoms(text: str) -> list[str]:
    """Words of ``text``, with every operator glued to its neighbours."""
    result: list[str] = []
    glue = False
    for token in text.split(" "):
        if not token:
            continue
        if result and (glue or token in OPERATORS):
            result[-1] += " " + token
        else:
            result.append(token)
        glue = token in OPERATORS
    return result


def wrap(text: str, width: int, first: str = "", rest: str = "") -> list[str]:
    """Lines of at most ``width`` cells: ``first`` prefixes the first line, ``rest`` the others.
    Breaks only between :func:`atoms`; an atom longer than a line is split into its words, and a
    single word longer than a line stands alone on its own (it is never cut)."""
    from rich.cells import cell_len

    lines, line = [], first
    empty = True

    def pieces(atom: str) -> list[str]:
        return [atom] if cell_len(rest) + cell_len(atom) <= width else atom.split(" ")

    for atom in atoms(text):
        for piece in pieces(atom):
            if not empty and cell_len(line) + 1 + cell_len(piece) > width:
                lines.append(line)
                line, empty = rest, True
            line += ("" if empty else " ") + piece
            empty = False
    lines.append(line)
    return lines


COLUMN_GAP = 3
"""Cells between two columns: the right padding, the divider and the left padding (no edges)."""


def _table(section: Section, columns: list[int], label_width: int | None = None) -> Table:
    """Cells are :class:`~rich.text.Text`, never markup: a class named ``[person]`` stays visible."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 1))
    for i in columns:
        if i == 0:
            table.add_column(Text(section.headers[0]), justify="left", overflow="fold", max_width=label_width)
        else:
            table.add_column(Text(section.headers[i]), justify="right", no_wrap=True)
    for row in section.rows:
        table.add_row(*(Text(row[i]) for i in columns))
    if section.total:
        table.add_section()
        table.add_row(*(Text(section.total[i]) for i in columns), style="bold")
    return table


def column_widths(section: Section) -> list[int]:
    """Cells each column takes unwrapped: its widest header, row or total cell."""
    from rich.cells import cell_len

    lines = [section.headers, *section.rows, *([section.total] if section.total else [])]
    return [max(cell_len(line[i]) for line in lines) for i in range(len(section.headers))]


def natural_width(section: Section, columns: list[int] | None = None) -> int:
    """Cells the table (of ``columns``, default all) takes with nothing wrapped: arithmetic on the
    cells, as Rich lays out :func:`_table` (``tests/test_report_width.py`` checks it against Rich's
    own measurement), since measuring each candidate split with Rich cost more than drawing the report."""
    widths = column_widths(section)
    columns = columns if columns is not None else list(range(len(widths)))
    return sum(widths[i] for i in columns) + COLUMN_GAP * (len(columns) - 1)


def parts(section: Section, width: int) -> list[tuple[str, list[int]]]:
    """The table's parts for ``width``: ``(title suffix, columns)``; one part, suffix "", when it fits."""
    everything = list(range(len(section.headers)))
    if natural_width(section) <= width:
        return [("", everything)]
    groups = section.groups or [(section.headers[i], [i]) for i in everything[1:]]

    def fits(columns: list[int]) -> bool:
        return natural_width(section, [0] + columns) <= width

    result: list[tuple[list[str], list[int]]] = []
    for name, columns in groups:
        if result and fits(result[-1][1] + columns):
            result[-1][0].append(name)
            result[-1][1].extend(columns)
        elif fits(columns):
            result.append(([name], list(columns)))
        else:
            pieces: list[list[int]] = []
            for column in columns:
                if pieces and fits(pieces[-1] + [column]):
                    pieces[-1].append(column)
                else:
                    pieces.append([column])
            result += [([f"{name} ({k}/{len(pieces)})" if len(pieces) > 1 else name], piece) for k, piece in enumerate(pieces, 1)]
    return [(", ".join(names), [0] + columns) for names, columns in result]


def print_section(console: Console, section: Section, width: int) -> None:
    """The section's title, its table (in parts if need be) and its note, at most ``width`` wide."""
    for suffix, columns in parts(section, width):
        title = section.title + (f": {suffix}" if suffix else "")
        print_lines(console, [""] + wrap(title, width), style="bold")
        others = natural_width(section, columns) - natural_width(section, [0])
        label = natural_width(section, [0])
        label_width = max(width - others, 8) if label + others > width else None
        console.print(_table(section, columns, label_width))
    if section.note:
        print_lines(console, wrap(section.note, width))


def print_lines(console: Console, lines: list[str], style: str | None = None) -> None:
    """Lines already wrapped: printed as they are (no markup, no highlighting, no re-wrapping)."""
    for line in lines:
        console.print(line, style=style, markup=False, highlight=False, soft_wrap=True)
