"""How the text and markdown reports and the summary sentences write numbers: shares as
percentages with one decimal, loss values with four significant digits, counts with thousands
separators, and ``—`` where a value is undefined."""

from __future__ import annotations

import math

MISSING = "—"


def pct(value: float | None) -> str:
    """A share (fraction) as ``12.3%``; below 0.1%, two significant digits (``0.046%``)."""
    if value is None:
        return MISSING
    percent = 100 * value
    if 0 < abs(percent) < 0.1:
        return f"{percent:.{1 - math.floor(math.log10(abs(percent)))}f}%"
    return f"{percent:.1f}%"


def num(value: float | None) -> str:
    """A loss value or a ratio, four significant digits."""
    return MISSING if value is None else f"{value:.4g}"


def count(value: int | float) -> str:
    """A count, ``12,345``."""
    return f"{int(value):,}"


def names(items: list[str], limit: int = 5) -> str:
    """``a, b, c`` with at most ``limit`` items, then ``and N more``."""
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")
