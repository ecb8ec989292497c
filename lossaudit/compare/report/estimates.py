"""Standard errors of a weighted dump's estimates (Poisson sampling, issue 24).

A weighted dump holds a Poisson sample of the elements: element ``i`` was kept with probability
``pi_i`` and carries the weight ``w_i = 1 / pi_i`` (1: kept with certainty). Its tally's sums are
Horvitz–Thompson estimates ``Y = Σ_sample w_i y_i``, unbiased, whose variance is estimated by

    V(Y) = Σ_sample w_i (w_i - 1) y_i²            (0 for the elements kept with certainty).

The tally keeps these second moments ``S2 = Σ w (w - 1) y²`` in the same cells as its sums
(:attr:`~lossaudit.compare.settings.Tally.second_moments`: per loss a ``(C, 2, bins, 4)`` table,
class × positive × difficulty bin × difficulty level, and ``"gradient:" + loss`` for the gradient
magnitudes). Each element lies in exactly one cell, so any share of a loss's total that is a union
of cells ("group" ``G``) is a ratio ``R = Y_G / Y`` whose delta-method (linearised) variance,
with ``z_i = (1[i in G] - R) y_i / Y``, is

    V(R) = Σ_sample w_i (w_i - 1) z_i² = ((1 - R)² S2_G + R² (S2 - S2_G)) / Y².

A standard error is the square root of a variance. Nothing here knows what a group means: the
report (:mod:`lossaudit.compare.report.build`) picks the cells; quantities that are not smooth
functions of sums (GHM-C's bin weights, OHEM's top-k, rare-class membership, percentiles, the
mistakes' counts) have no standard error here: they are plug-in estimates, and the report says so.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

Group = Callable[[np.ndarray], np.ndarray]
"""Picks a group's cells out of a ``(C, 2, bins, 4)`` table, e.g. ``lambda t: t[:, 1]`` (the
positives); applied alike to the sums and to the second moments."""


def sum_se(moments: np.ndarray, group: Group | None = None) -> float:
    """The standard error of a Horvitz–Thompson sum over ``group``'s cells (all cells when None):
    ``sqrt(Σ w (w - 1) y²)``."""
    picked = moments if group is None else group(moments)
    return math.sqrt(max(float(picked.sum()), 0.0))


def share_se(sums: np.ndarray, moments: np.ndarray, group: Group) -> float | None:
    """The delta-method standard error of ``group``'s share of the total, ``R = Y_G / Y``, from
    the sums and second moments of the same cells (see the module docstring); None where the total
    is 0 (the share is undefined)."""
    total = float(sums.sum())
    if not total:
        return None
    return float(_share_se(float(group(sums).sum()) / total, float(group(moments).sum()), float(moments.sum()), total))


def class_share_ses(sums: np.ndarray, moments: np.ndarray) -> list[float | None]:
    """:func:`share_se` of each class's share (the cells ``table[c]``) at once: the classes' sums
    and second moments in one reduction each, instead of a pass over the whole table per class
    (a weighted report of C classes and L losses made ``4 C L`` of them)."""
    total = float(sums.sum())
    if not total:
        return [None] * len(sums)
    share = sums.reshape(len(sums), -1).sum(axis=1) / total
    return [float(se) for se in _share_se(share, moments.reshape(len(moments), -1).sum(axis=1), float(moments.sum()), total)]


def _share_se(share: float | np.ndarray, inside: float | np.ndarray, moments: float, total: float) -> np.ndarray:
    """``sqrt(((1 - R)² S2_G + R² (S2 - S2_G)) / Y²)`` (the module docstring), 0 where rounding
    makes the variance negative: ``share`` R and ``inside`` S2_G floats or arrays alike."""
    variance = ((1 - share) ** 2 * inside + share**2 * (moments - inside)) / total**2
    return np.sqrt(np.maximum(np.asarray(variance), 0.0))


PLUG_IN = {
    "ghm_weights": "GHM-C's bin weights",
    "ohem_top_k": "OHEM's kept rows",
    "rare_classes": "which classes are rare",
    "mistakes": "the mistakes' counts",
    "cumulative_shares": "sweep's cumulative loss shares",
}
"""The quantities of a weighted dump's report estimated by plugging the estimated sums in, without
a standard error (``estimate.plug_in`` lists those the report shows), and how the text names them."""
