"""Where the model goes wrong, tallied in the streaming pass: what the diagnoses of the report
(:mod:`lossaudit.compare.report.diagnosis`) rest on.

A unit is *confidently wrong* when it is in the very hard level (g ≥ 0.9): for the sigmoid
losses an element, a positive at p ≤ 0.1 or a non-positive at p ≥ 0.9; for the softmax losses a
target term, q_target ≤ 0.1. Each gets one cause, the first that applies:

- ``shifted`` (sigmoid, maps only): the model finds the object one cell off. A positive whose class
  fires (p ≥ 0.5, not a target) at a 4-neighbouring cell of the same image, or a non-positive at
  p ≥ 0.9 with a positive of its class at a 4-neighbouring cell;
- ``confused``: another class is predicted instead. Sigmoid: a positive whose cell has another
  class detected (p ≥ 0.1, not a target: a detection at the usual score thresholds of
  0.05–0.1), or a non-positive in a cell whose positive is another class; softmax: the row's
  argmax is another class;
- ``other``: neither (the report tells misses of rare classes, of classes the model misses, isolated
  misses and false positives apart: that needs the whole data's counts).

Confusions are kept as (true class, predicted class) pairs. For the softmax rows the pass also
counts, for every positive term, whether the row's argmax is its class (recall at the argmax) and
the pairs of every wrong argmax.

Maps: rows are the cells of ``(B, …, H, W)`` maps in row-major order (:attr:`Mistakes.grid`
``(H, W)``); a neighbour is looked for in the same chunk, whose rows start at a whole image
(:func:`grid_chunk_rows`).
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from lossaudit.compare.settings import LEVEL_EDGES

CAUSES = ("shifted", "confused", "other")
SHIFTED, CONFUSED, OTHER = range(len(CAUSES))
VERY_HARD_G = np.float32(LEVEL_EDGES[-1])
"""g at and above which a unit is confidently wrong (the very hard level)."""
FIRES = np.float32(0.5)
"""p at and above which a class is predicted in a cell (sigmoid): ``shifted`` looks for it."""
DETECTED = np.float32(0.1)
"""p at and above which another class counts as detected in a missed positive's cell (``confused``):
detectors keep boxes from score thresholds of 0.05-0.1. Every such element is taken out of the
dense pass (its g ≥ 0.1, the easy edge)."""


def grid_chunk_rows(rows: int, grid: tuple[int, int] | None) -> int:
    """``rows`` rounded down to whole images of ``grid`` (at least one image row), so that every
    chunk starts at an image's first cell; ``rows`` when there is no grid."""
    if grid is None:
        return rows
    height, width = grid
    unit = height * width if height * width <= rows else width
    return max(rows // unit, 1) * unit


class Mistakes:
    """The pass's confidently wrong units by cause, and the softmax rows' argmax outcomes.

    Attributes:
        sigmoid: ``(C, 2, 3)`` confidently wrong elements by class, positive or not, cause (:data:`CAUSES`).
        softmax: ``(C, 3)`` confidently wrong softmax terms (positive targets) by class and cause.
        argmax_correct: ``(C,)`` positive softmax terms whose row's argmax is their class.
        pairs: ``"sigmoid"``, ``"softmax"`` (the confidently wrong units' confusions) and
            ``"argmax"`` (every softmax row whose argmax is another class): Counters of
            ``(true class, predicted class)``.
        grid: ``(H, W)`` of the maps, or None.
    """

    def __init__(self, num_classes: int, grid: tuple[int, int] | None = None):
        self.num_classes, self.grid = num_classes, grid
        self.sigmoid = np.zeros((num_classes, 2, len(CAUSES)))
        self.softmax = np.zeros((num_classes, len(CAUSES)))
        self.argmax_correct = np.zeros(num_classes)
        self.pairs: dict[str, Counter] = {"sigmoid": Counter(), "softmax": Counter(), "argmax": Counter()}

    def _count_pairs(self, kind: str, true: np.ndarray, predicted: np.ndarray) -> None:
        if len(true):
            keys, counts = np.unique(true.astype(np.int64) * self.num_classes + predicted, return_counts=True)
            self.pairs[kind].update({(int(k) // self.num_classes, int(k) % self.num_classes): int(n) for k, n in zip(keys, counts)})

    def add_sigmoid(self, start: int, rows: int, index: np.ndarray, g: np.ndarray, p: np.ndarray, positive: np.ndarray, target: np.ndarray) -> None:
        """The elements of one chunk (global first row ``start``, ``rows`` rows) that the dense pass
        took out — every element but easy negatives, so every one at p ≥ 0.1 —, all valid:
        ``(k,)`` flat indices ``row × C + class`` within the chunk (sorted), float32 ``g`` and
        ``p``, ``positive`` and ``target`` (a non-zero target) flags."""
        classes = self.num_classes
        very_hard = g >= VERY_HARD_G
        if not very_hard.any():
            return
        fired = (p >= FIRES) & ~target  # classes predicted where they are not a target
        fires, positives = index[fired], index[positive]  # sorted
        row, col = np.divmod(index[very_hard], classes)
        is_positive = positive[very_hard]
        # confused: another class detected in a positive's cell; a non-positive in a cell with a positive of another class
        detected = (p >= DETECTED) & ~target
        detected_rows, detected_cols = np.divmod(index[detected], classes)
        order = np.lexsort((-p[detected], detected_rows))  # per row, the most probable class first
        other = np.where(is_positive, _first_per_row(row, detected_rows[order], detected_cols[order]),
                         _first_per_row(row, positives // classes, positives % classes))
        confused = (other >= 0) & (other != col)
        cause = np.where(confused, CONFUSED, OTHER)
        if self.grid is not None:  # shifted (before confused): the class one cell off
            shifted = np.zeros(len(row), dtype=bool)
            for neighbour in self._neighbours(start, rows, row):
                keys = neighbour * classes + col
                found = np.where(is_positive, np.isin(keys, fires), np.isin(keys, positives))
                shifted |= (neighbour >= 0) & found
            cause[shifted] = SHIFTED
        confused = cause == CONFUSED
        true, wrong = np.where(is_positive, col, other), np.where(is_positive, other, col)
        self._count_pairs("sigmoid", true[confused], wrong[confused])
        np.add.at(self.sigmoid, (col, is_positive.astype(np.intp), cause), 1)

    def _neighbours(self, start: int, rows: int, row: np.ndarray) -> list[np.ndarray]:
        """The local rows of the four neighbouring cells of each local ``row`` in the same image,
        -1 where there is none (the image's edge, or outside the chunk)."""
        height, width = self.grid
        cell = start + row
        w, h = cell % width, (cell // width) % height
        out = []
        for shift, inside in ((-1, w > 0), (1, w < width - 1), (-width, h > 0), (width, h < height - 1)):
            neighbour = row + shift
            out.append(np.where(inside & (neighbour >= 0) & (neighbour < rows), neighbour, -1))
        return out

    def add_softmax(self, col: np.ndarray, top: np.ndarray, q: np.ndarray, positive: np.ndarray) -> None:
        """The target terms of some softmax rows: ``(k,)`` class ``col``, the argmax ``top`` of the
        term's row, float32 ``q`` (softmax at the class), ``positive`` flags."""
        col, top, q = col[positive], top[positive], q[positive]
        right = top == col
        self.argmax_correct += np.bincount(col[right], minlength=self.num_classes)
        self._count_pairs("argmax", col[~right], top[~right])
        very_hard = np.float32(1) - q >= VERY_HARD_G
        cause = np.where(right[very_hard], OTHER, CONFUSED)
        np.add.at(self.softmax, (col[very_hard], cause), 1)
        wrong = very_hard & ~right
        self._count_pairs("softmax", col[wrong], top[wrong])

    def merge(self, other: Mistakes) -> None:
        """Add another accumulator's counts (of other chunks)."""
        self.sigmoid += other.sigmoid
        self.softmax += other.softmax
        self.argmax_correct += other.argmax_correct
        for kind, pairs in other.pairs.items():
            self.pairs[kind].update(pairs)


def _first_per_row(row: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """For each of ``row``, the class of the first entry of ``(rows, cols)`` (``rows`` sorted) in
    that row, -1 where there is none."""
    if not len(rows):
        return np.full(len(row), -1)
    first_rows, first = np.unique(rows, return_index=True)
    at = np.minimum(np.searchsorted(first_rows, row), len(first_rows) - 1)
    return np.where(first_rows[at] == row, cols[first][at], -1)
