"""Transient signs of life on stderr while large dumps are read and tallied (terminals only).

Below :data:`SHOW_FROM_BYTES`, or when stderr is not a terminal (a CI log, a pipe, a file; also
under ``FORCE_COLOR``, which makes Rich treat a pipe as a terminal), the work runs silently: the
spinner and the bar are a courtesy for a human waiting on a big file, never output a program has
to parse, and they erase themselves when done. Rich's console and progress (~20 ms to import) are
imported only when there is a terminal to draw on.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console

SHOW_FROM_BYTES = 100 * 2**20
"""About 100 MB of float32 logits: a few tenths of a second of tallying, where a bar helps."""


def _terminal(size: int, console: Console | None, show_from_bytes: int) -> Console | None:
    """The console to draw on (by default stderr's), or None: too small, or not a terminal."""
    if size < show_from_bytes:
        return None
    if console is None:
        if sys.stderr is None or not sys.stderr.isatty():
            return None
        from rich.console import Console

        console = Console(stderr=True)
    return console if console.file.isatty() else None


@contextlib.contextmanager
def reading_status(size: int, console: Console | None = None, show_from_bytes: int = SHOW_FROM_BYTES) -> Iterator[None]:
    """A transient spinner while dump files of ``size`` bytes are opened and checked (a compressed
    ``.npz`` member is inflated whole then)."""
    console = _terminal(size, console, show_from_bytes)
    if console is None:
        yield
        return
    with console.status(f"reading {size / 1e6:,.0f} MB of dumps"):
        yield


@contextlib.contextmanager
def tally_progress(rows: int, classes: int, console: Console | None = None, show_from_bytes: int = SHOW_FROM_BYTES) -> Iterator[Callable[[int], None] | None]:
    """Yield a callback ``advance(rows_done)`` that moves a transient bar, or None when no bar is
    shown (under ``show_from_bytes`` of float32 logits, or not a terminal)."""
    console = _terminal(rows * classes * 4, console, show_from_bytes)
    if console is None:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("tallying"), BarColumn(), MofNCompleteColumn(), TextColumn("rows"), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task("tally", total=rows)
        yield lambda done: bar.advance(task, done)
