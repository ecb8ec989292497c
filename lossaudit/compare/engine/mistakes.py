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

Weighted dumps: each unit counts its sampling weight (a plug-in estimate; the pairs' counts are
then floats). A confidently wrong element is never an easy negative, so a Recorder's sample keeps
it with weight 1.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from lossaudit.compare.engine.elements import SoftmaxTerms
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
        pairs: ``"sigmoid"`` and ``"softmax"``, the confidently wrong units' confusions: Counters of
            ``(true class, predicted class)``.
        grid: ``(H, W)`` of the maps, or None.
    """

    def __init__(self, num_classes: int, grid: tuple[int, int] | None = None):
        self.num_classes, self.grid = num_classes, grid
        self.sigmoid = np.zeros((num_classes, 2, len(CAUSES)))
        self.softmax = np.zeros((num_classes, len(CAUSES)))
        self.argmax_correct = np.zeros(num_classes)
        self.pairs: dict[str, Counter] = {"sigmoid": Counter(), "softmax": Counter()}

    def _count_pairs(self, kind: str, true: np.ndarray, predicted: np.ndarray, weights: np.ndarray | None = None) -> None:
        if len(true):
            keys, inverse, counts = np.unique(true.astype(np.int64) * self.num_classes + predicted, return_inverse=True, return_counts=True)
            if weights is not None:
                counts = np.bincount(inverse.reshape(-1), weights=weights, minlength=len(keys))
            convert = int if weights is None else float
            self.pairs[kind].update({(int(k) // self.num_classes, int(k) % self.num_classes): convert(n) for k, n in zip(keys, counts)})

    def add_sigmoid(
        self,
        start: int,
        rows: int,
        index: np.ndarray,
        p: np.ndarray,
        targets: np.ndarray,
        target_positive: np.ndarray,
        target_g: np.ndarray,
        weights: np.ndarray | None = None,
    ) -> None:
        """One chunk's elements (global first row ``start``, ``rows`` rows): ``(k,)`` the sorted
        flat indices ``row × C + class`` of those the dense pass took out — every valid element but
        the easy negatives, so every one at p ≥ 0.1 and every non-zero target — with their float32
        ``p`` (and their sampling ``weights``, weighted); ``(t,)`` the sorted flat indices of the
        valid non-zero ``targets`` among them, whether each is a positive and its float32 ``g = |p - y|``."""
        classes = self.num_classes
        high = index[p >= VERY_HARD_G]  # non-targets at p ≥ 0.9 (g = p), and targets to sort out
        high = high[_find(targets, high, True) < 0]
        units = np.concatenate([high, targets[target_g >= VERY_HARD_G]])
        if not len(units):
            return
        row, col = np.divmod(units, classes)
        is_positive = np.zeros(len(units), dtype=bool)
        is_positive[len(high) :] = target_positive[target_g >= VERY_HARD_G]
        # confused: another class detected in a positive's cell; a non-positive in a cell with a positive of another class
        other = np.full(len(row), -1)
        positives = np.flatnonzero(is_positive)
        if len(positives):
            other[positives] = _most_probable_other(index, p, targets, row[positives], col[positives], classes)
        negatives = np.flatnonzero(~is_positive)
        if len(negatives):
            other[negatives] = _first_other_positive(targets, target_positive, row[negatives], col[negatives], classes)
        cause = np.where(other >= 0, CONFUSED, OTHER)
        if self.grid is not None:  # shifted (before confused): the class one cell off
            positives = targets[target_positive]
            shifted = np.zeros(len(row), dtype=bool)
            for neighbour in self._neighbours(start, rows, row):
                keys = neighbour * classes + col
                there = _find(index, keys, neighbour >= 0)
                fires = (there >= 0) & (p[there] >= FIRES) & (_find(targets, keys, True) < 0)
                shifted |= np.where(is_positive, fires, _find(positives, keys, neighbour >= 0) >= 0)
            cause[shifted] = SHIFTED
        confused = cause == CONFUSED
        true, wrong = np.where(is_positive, col, other), np.where(is_positive, other, col)
        unit_weights = None if weights is None else weights[np.searchsorted(index, units)]
        self._count_pairs("sigmoid", true[confused], wrong[confused], None if unit_weights is None else unit_weights[confused])
        np.add.at(self.sigmoid, (col, is_positive.astype(np.intp), cause), 1 if unit_weights is None else unit_weights)

    def _neighbours(self, start: int, rows: int, row: np.ndarray) -> list[np.ndarray]:
        """The local rows of the four neighbouring cells of each local ``row`` in the same image,
        -1 where there is none (the image's edge, or outside the chunk)."""
        assert self.grid is not None  # called for maps only
        height, width = self.grid
        cell = start + row
        w, h = cell % width, (cell // width) % height
        out = []
        for shift, inside in ((-1, w > 0), (1, w < width - 1), (-width, h > 0), (width, h < height - 1)):
            neighbour = row + shift
            out.append(np.where(inside & (neighbour >= 0) & (neighbour < rows), neighbour, -1))
        return out

    def add_softmax(self, col: np.ndarray, terms: SoftmaxTerms, positive: np.ndarray, weights: np.ndarray | None = None) -> None:
        """The target terms of some softmax rows: ``(k,)`` class ``col``, their
        :func:`~lossaudit.compare.engine.elements.softmax_terms` (the argmax ``top`` of the term's
        row, float32 ``q``, the softmax at the class), ``positive`` flags (and the terms' sampling
        ``weights``, weighted)."""
        assert terms.top is not None  # softmax_terms finds it
        col, top, q = col[positive], terms.top[positive], terms.q[positive]
        w = weights[positive] if weights is not None else None

        def part(where: np.ndarray) -> np.ndarray | None:
            return None if w is None else w[where]

        right = top == col
        self.argmax_correct += np.bincount(col[right], weights=part(right), minlength=self.num_classes)
        very_hard = np.float32(1) - q >= VERY_HARD_G
        cause = np.where(right[very_hard], OTHER, CONFUSED)
        np.add.at(self.softmax, (col[very_hard], cause), 1 if w is None else w[very_hard])
        wrong = very_hard & ~right
        self._count_pairs("softmax", col[wrong], top[wrong], part(wrong))

    def merge(self, other: Mistakes) -> None:
        """Add another accumulator's counts (of other chunks)."""
        self.sigmoid += other.sigmoid
        self.softmax += other.softmax
        self.argmax_correct += other.argmax_correct
        for kind, pairs in other.pairs.items():
            self.pairs[kind].update(pairs)


def _most_probable_other(index: np.ndarray, p: np.ndarray, targets: np.ndarray, row: np.ndarray, col: np.ndarray, classes: int) -> np.ndarray:
    """For each (``row``, ``col``): the class of the most probable element of the row taken out
    (``index``, sorted flat, with float32 ``p``) at ``p >= DETECTED`` that is no target (sorted flat
    ``targets``) and not of class ``col`` (the first such at equal ``p``), else -1."""
    at, unit = _row_elements(index, row, classes)  # the taken elements of each unit's row
    candidate = (p[at] >= DETECTED) & (_find(targets, index[at], True) < 0) & (index[at] % classes != col[unit])
    order = np.lexsort((-p[at][candidate], unit[candidate]))
    owners, first = np.unique(unit[candidate][order], return_index=True)
    other = np.full(len(row), -1)
    other[owners] = index[at[candidate][order][first]] % classes
    return other


def _first_other_positive(targets: np.ndarray, target_positive: np.ndarray, row: np.ndarray, col: np.ndarray, classes: int) -> np.ndarray:
    """For each (``row``, ``col``): the first class of the row's positive targets (sorted flat
    ``targets``, their ``target_positive`` flags) other than ``col``, else -1. Looks at the k-th
    target of every row at once, k = 0, 1, … (a row holds few)."""
    starts, ends = np.searchsorted(targets, row * classes), np.searchsorted(targets, (row + 1) * classes)
    other = np.full(len(row), -1)
    for k in range(int((ends - starts).max(initial=0))):
        pending = np.flatnonzero((starts + k < ends) & (other < 0))
        if not len(pending):
            break
        at = starts[pending] + k
        found = targets[at] % classes
        hit = target_positive[at] & (found != col[pending])
        other[pending[hit]] = found[hit]
    return other


def _row_elements(index: np.ndarray, row: np.ndarray, classes: int) -> tuple[np.ndarray, np.ndarray]:
    """The positions in the sorted flat ``index`` (``row × C + class``) of the elements of each of
    ``row``: ``(positions, which of row each belongs to)``, row by row."""
    starts, ends = np.searchsorted(index, row * classes), np.searchsorted(index, (row + 1) * classes)
    lengths = ends - starts
    unit = np.repeat(np.arange(len(row)), lengths)
    offsets = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    return starts[unit] + offsets, unit


def _find(index: np.ndarray, keys: np.ndarray, wanted: np.ndarray | bool) -> np.ndarray:
    """The position of each of ``keys`` in the sorted ``index``, -1 where it is absent or not ``wanted``."""
    if not len(index):
        return np.full(len(keys), -1)
    at = np.minimum(np.searchsorted(index, keys), len(index) - 1)
    return np.where(wanted & (index[at] == keys), at, -1)
