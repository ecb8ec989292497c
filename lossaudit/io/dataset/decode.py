"""Raw rows of a dump into the parts of a :class:`~lossaudit.io.dataset.chunk.Chunk`: sparse
targets, the rows and elements a mask excludes, non-finite logits, logits from probabilities.

Pure functions of numpy arrays; the statistics a pass gathers on the way (labels out of range, the
range of the logits) are kept by :class:`~lossaudit.io.dataset.reader.DataPlan`."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lossaudit.io.dataset.info import DataInfo

PROBABILITY_EPS = 1e-6
"""``--inputs sigmoid-probs`` converts p to logit(clamp(p, eps, 1 - eps))."""
SOFTMAX_FLOOR = float(np.finfo(np.float32).tiny)
"""``--inputs softmax-probs`` converts p to log(max(p, floor)): a probability of 0 becomes a finite
logit (about -87.3) that softmax maps back to 0 within float32."""
ROW_SUM_TOLERANCE = 1e-3
"""Softmax probabilities: every row sums to 1 within this (float32 rounding over thousands of
classes stays far below it; sigmoid probabilities of C > 1 classes almost never do)."""


@dataclass
class Targets:
    """The targets of ``n`` rows, sparse: the coordinates and values of the non-zero ones.

    Attributes:
        rows, cols: ``(k,)`` int64 coordinates of the non-zero targets, row-major order.
        values: ``(k,)`` float32 target probabilities at those coordinates (1 for index targets).
        ignored_rows: ``(n,)`` bool: the ignore label.
        out_of_range: ``(n,)`` bool: an index label that is no class, background or ignore.
        labels: ``(n,)`` int64 class ids (index targets), or None.
    """

    rows: np.ndarray
    cols: np.ndarray
    values: np.ndarray
    ignored_rows: np.ndarray
    out_of_range: np.ndarray
    labels: np.ndarray | None = None


def index_targets(targets: np.ndarray, info: DataInfo) -> Targets:
    """``(n,)`` class ids: label c in [b, C + b) (b = ``info.label_base``) is a target of 1 at
    column c - b; background has none; the ignore label drops the row; any other label is out of
    range (``labels`` keeps the labels as stored)."""
    labels = np.asarray(targets, dtype=np.int64)
    base = info.label_base
    foreground = (labels >= base) & (labels < info.num_classes + base)
    ignored_rows = labels == info.ignore_index
    out_of_range = ~(foreground | ignored_rows | (labels == info.background_index))
    rows = np.flatnonzero(foreground)
    return Targets(rows, labels[rows] - base, np.ones(len(rows), dtype=np.float32), ignored_rows, out_of_range, labels)


def dense_targets(targets: np.ndarray) -> Targets:
    """``(n, C)`` target probabilities (one-hot, soft or heatmap): no row is dropped by its targets.
    The non-zero ones are found in the stored array where float32 holds its values exactly (bool,
    small integers, float16, float32), not in a float32 copy of it, as flat indices of a bool mask
    (float16 by its bits: numpy emulates float16 comparisons), which is 10-15 times faster than
    ``np.nonzero`` of the 2-D array."""
    y = np.asarray(targets)
    if y.dtype.kind not in "bui" and y.dtype not in (np.float16, np.float32) or y.dtype.itemsize > 2 and y.dtype.kind in "ui":
        y = y.astype(np.float32)  # (a float64 target below float32's range becomes 0 and is no target)
    flat = y.reshape(-1)
    nonzero = flat.view(np.uint16) & np.uint16(0x7FFF) if y.dtype == np.float16 else flat  # -0 is 0, NaN is not
    index = np.flatnonzero(nonzero != 0)
    rows = index // y.shape[1] if y.shape[1] else index
    none = np.zeros(len(y), dtype=bool)
    return Targets(rows, index - rows * y.shape[1], flat[index].astype(np.float32, copy=False), none, none)


def decode_targets(targets: np.ndarray, info: DataInfo) -> Targets:
    """The raw targets of some rows, by ``info.encoding``."""
    return index_targets(targets, info) if info.encoding == "index" else dense_targets(targets)


def apply_mask(mask: np.ndarray | None, ignored_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """(``(n,)`` rows ignored: ``ignored_rows`` or a 0 in a row mask, ``(n, C)`` elements a 0 in an
    element mask ignores or None): ``mask`` is ``(n,)``, ``(n, C)`` or None, 0 = ignore."""
    if mask is None:
        return ignored_rows, None
    masked = np.asarray(mask) == 0
    if masked.ndim == 2:
        return ignored_rows, masked if masked.any() else None
    return ignored_rows | masked, None


def finite_range(x: np.ndarray, needed: bool) -> tuple[np.ndarray | None, np.floating | None, np.floating | None]:
    """(the ``(n, C)`` non-finite mask of ``x`` or None, the least and the greatest finite value or
    None). The range costs two passes, so it is computed only when ``needed`` (else it is None and
    one pass, a sum, which any NaN or infinity makes non-finite, tells whether all is finite)."""
    if not x.size:
        return None, None, None
    if needed:
        low, high = x.min(), x.max()  # a NaN anywhere makes the minimum NaN
        finite = np.isfinite(low) and np.isfinite(high)
    else:
        low = high = None
        with np.errstate(invalid="ignore", over="ignore"):  # inf - inf, or large values
            finite = np.isfinite(np.add.reduce(x, axis=None))
    nonfinite = None if finite else ~np.isfinite(x)
    if nonfinite is None or not nonfinite.any():  # a sum of large finite values may overflow
        return None, low, high
    if needed:
        values = x[~nonfinite]
        low, high = (values.min(), values.max()) if values.size else (None, None)
    return nonfinite, low, high


def probabilities_to_logits(p: np.ndarray, kind: str = "sigmoid-probs") -> np.ndarray:
    """A new array of ``p``'s dtype: ``logit(clamp(p, eps, 1 - eps))`` (:data:`PROBABILITY_EPS`)
    for sigmoid probabilities; ``log(max(p, floor))`` (:data:`SOFTMAX_FLOOR`) for softmax
    probabilities (``kind`` ``softmax-probs``), whose softmax is p again: logits known up to a
    per-row constant, which the softmax losses do not see and the sigmoid losses do."""
    if kind == "softmax-probs":
        return np.log(np.maximum(p, SOFTMAX_FLOOR))
    p = np.clip(p, PROBABILITY_EPS, 1 - PROBABILITY_EPS)
    return np.log(p / (1 - p))


def rows_sum_to_one(p: np.ndarray, nonfinite: np.ndarray | None = None) -> bool:
    """Every ``(n, C)`` row of ``p`` without a non-finite value sums to 1 within
    :data:`ROW_SUM_TOLERANCE` (summed in float64)."""
    sums = np.add.reduce(p, axis=1, dtype=np.float64)
    if nonfinite is not None:
        sums = sums[~nonfinite.any(axis=1)]
    return bool((np.abs(sums - 1) <= ROW_SUM_TOLERANCE).all())
