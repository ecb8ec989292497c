"""How the text and markdown reports and the summary sentences write numbers: shares as
percentages with one decimal (two significant digits below 0.1%, ``<0.01%`` below 0.01%), loss values with four significant digits, counts with thousands
separators, and ``—`` where a value is undefined."""

from __future__ import annotations

import math

MISSING = "—"


SMALLEST_PCT = 0.01
"""Percentages above 0 and below this print as ``<0.01%``."""


def pct(value: float | None) -> str:
    """A share (fraction) as ``12.3%``; below 0.1%, two significant digits (``0.046%``); above 0
    and below 0.01%, ``<0.01%`` (``-<0.01%`` for a small negative)."""
    if value is None:
        return MISSING
    percent = 100 * value
    if 0 < abs(percent) < SMALLEST_PCT:
        return f"{'-' if percent < 0 else ''}<{SMALLEST_PCT:g}%"
    if 0 < abs(percent) < 0.1:
        return f"{percent:.{1 - math.floor(math.log10(abs(percent)))}f}%"
    return f"{percent:.1f}%"


def points(se: float) -> str:
    """A standard error of a share in percentage points, as precise as :func:`pct` writes the
    share: one decimal, two significant digits below 0.1 (``0.8``, ``0.046``), ``<0.01`` above 0
    and below 0.01, ``0`` when exact."""
    value = 100 * se
    if value == 0:
        return "0"
    if value < SMALLEST_PCT:
        return f"<{SMALLEST_PCT:g}"
    if value < 0.1:
        return f"{value:.{1 - math.floor(math.log10(value))}f}"
    return f"{value:.1f}"


def pct_se(value: float | None, se: float | None) -> str:
    """A share with its standard error, ``41.2% ± 0.8`` (points); :func:`pct` alone when there is
    no standard error (an unweighted dump, or an undefined share)."""
    if value is None or se is None:
        return pct(value)
    return f"{pct(value)} ± {points(se)}"


def num(value: float | None) -> str:
    """A loss value or a ratio, four significant digits."""
    return MISSING if value is None else f"{value:.4g}"


def count(value: int | float) -> str:
    """A count, ``12,345``."""
    return f"{int(value):,}"


def plural(n: int, word: str) -> str:
    """``1 class``, ``3 classes``, ``2 peaks``: a count (:func:`count`) and its noun, plural by
    ``es`` after s, x, ch and sh, else by ``s``."""
    return f"{count(n)} {word}" + ("" if n == 1 else "es" if word.endswith(("s", "x", "ch", "sh")) else "s")


def names(items: list[str], limit: int = 5) -> str:
    """``a, b, c`` with at most ``limit`` items, then ``and N more``."""
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def rare_rule(quadrants: dict) -> str:
    """The rare-class rule with this data's numbers (a schema 4 report: below the median)."""
    rule = quadrants.get("rare_rule")
    if rule is None:
        return f"fewer positives than the median class ({quadrants['median_positives']:g})"
    return (
        f"positives below {rule['fraction_of_median']:g} × the median class's ({quadrants['median_positives']:g}), when the "
        f"largest class has ≥ {rule['min_spread']:g}× the smallest's (here {quadrants['class_spread']:.3g}×)"
    )
