"""``sweep``'s cumulative loss distributions (the focal loss paper's Figure 4): per gamma, the
element losses over the positives and over the negatives (softmax-focal: the rows' target terms),
kept in bins from the same pass as the tallies, and the share of the total loss the lowest
fraction ``f`` of them holds, with a bound on its error.

Two kinds of bins, each with its count, its sum and the range of its losses:

- **loss bins**, for the elements tallied one by one (positives, non-zero targets, negatives with a
  hard logit; every element of a weighted dump): 256 per octave of the float32 loss ``h`` (a bin's
  upper edge is at most ``1 + 1/256`` times its lower), from its bits (:meth:`LossHistogram._keys`);
- **logit atoms**, for the easy negatives of the dense pass (nearly every element of a detection
  dump), counted once by logit whatever the gammas
  (:class:`~lossaudit.compare.engine.dense.LogitCounts`): with target 0 the loss ``h(x) =
  sigmoid(x)^gamma softplus(x)`` rises with the logit, and ``|d log h / dx| <= gamma + 1``, so an
  atom of width ``1 / scale`` holds losses in ``[h(lo), h(hi)]``, at most ``exp((gamma + 1) /
  scale)`` apart: the scale is chosen for that to be below ``1 + 1/256`` at the largest gamma
  (:func:`atom_scale`). An atom's sum is ``n h(c) + h'(c) Σ u`` (``c`` its centre, ``u`` the
  logits' offsets from it, whose sum the pass keeps), within ``n h(hi) ((gamma + 1)^2 + gamma + 2)
  / (8 scale^2)`` (second order; about 1e-7 of the sum) of exact, and ``n h(hi) (gamma + 1) e /
  scale`` for the places' float64 rounding ``e`` (:attr:`~lossaudit.compare.engine.dense.LogitCounts.place_error`, 2^-16).

:func:`cumulative_shares` sorts the bins by their lowest loss and interpolates inside the bin where
the fraction falls at its mean. The lowest ``k`` of a bin's ``n`` elements, losses ``>= a`` with
sum ``s``, hold between ``k a`` and ``k s / n``, so the share is an overestimate by at most ``k (s /
n - a)`` over the total: below the share of that bin divided by 256. The document states each
bound (``error_bound``), which also takes in the atoms' sums' error and, where a loss bin and an
atom overlap (soft targets below 0.5 are negatives tallied one by one), what elements of the bins
before could exceed the bin's lowest loss.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from lossaudit.compare.engine import elements
from lossaudit.compare.engine.dense import LOWEST_COUNTED, LogitCounts
from lossaudit.compare.engine.shared import SharedPass, softmax_targets
from lossaudit.compare.engine.stream import BLOCK_ELEMENTS, StreamTally
from lossaudit.io.dataset import Chunk

SUB_BITS = 8
SUB_BINS = 1 << SUB_BITS
"""Loss bins per octave (:class:`LossHistogram`): the cumulative shares are within 1/256 of exact.
A bin is a float32 loss's exponent and the first ``SUB_BITS`` bits of its fraction."""
LOWEST_EXPONENT, HIGHEST_EXPONENT = -148, 129
"""The float32 losses, 0 excepted (its own bin), lie in [2^-149, 2^128): ``frexp`` exponents -148 to 128."""
FRACTIONS = tuple(round(k / 100, 2) for k in range(101)) + (0.995, 0.999)
"""Fractions of the elements (sorted by loss) at which the JSON gives the cumulative loss share."""
NORMAL_KEY_OFFSET = 1 + (-126 - LOWEST_EXPONENT) * SUB_BINS
"""The key of a normal float32 loss less its bits shifted right by ``23 - SUB_BITS``: the exponent
field E gives ``frexp``'s exponent ``E - 126``."""
FLOAT32_MAX = float(np.finfo(np.float32).max)
"""Losses are binned as float32: larger ones go in the top bin (their sums stay float64)."""
LARGEST_SCALE = 1 << 14
"""The finest logit atoms (:func:`atom_scale`): 1/256 of a loss octave up to gamma 31; 16 MB of counts."""


def _frexp_keys(h: np.ndarray) -> np.ndarray:
    """The bins of float32 losses ``h >= 0`` from ``frexp``: octave ``e`` of ``h = m 2^e``
    (``m`` in [0.5, 1)), sub-bin ``floor((m - 0.5) 2 SUB_BINS)``; 0 has key 0."""
    mantissa, exponent = np.frexp(h)
    mantissa -= np.float32(0.5)
    mantissa *= np.float32(2 * SUB_BINS)
    keys = (exponent - LOWEST_EXPONENT) * SUB_BINS + 1
    keys += mantissa.astype(np.int32)
    keys[h == 0] = 0
    return keys


def atom_scale(gammas: tuple[float, ...]) -> int:
    """Logit atoms per unit: the smallest power of two at least ``2 × 256 (gamma + 1)`` for the
    largest gamma (an atom's losses then lie within ``exp(1/512) < 1 + 1/256`` of one another), at
    most :data:`LARGEST_SCALE` (beyond gamma 31 the atoms are wider; the bounds stated stay true)."""
    wanted = 2 * SUB_BINS * (max(gammas) + 1)
    return int(min(1 << int(np.ceil(np.log2(wanted))), LARGEST_SCALE))


class Bins:
    """Bins of losses: ``(k,)`` float64 arrays of their counts, sums, the error bound of each sum,
    and the lowest and highest loss each can hold."""

    def __init__(self, counts: np.ndarray, sums: np.ndarray, errors: np.ndarray, lower: np.ndarray, upper: np.ndarray):
        self.counts, self.sums, self.errors, self.lower, self.upper = counts, sums, errors, lower, upper


def negative_loss(x: np.ndarray, gamma: float) -> tuple[np.ndarray, np.ndarray]:
    """float64 ``(h, d log h / dx)`` of a negative (target 0) with logits ``x < 0``: ``h =
    sigmoid(x)^gamma softplus(x)``, the focal loss before alpha_t, and ``gamma (1 - p) + p / softplus(x)``."""
    e = np.exp(x)
    p = e / (1 + e)
    softplus = np.log1p(e)
    return p**gamma * softplus, gamma * (1 - p) + p / softplus


def atom_bins(counts: LogitCounts, gamma: float) -> Bins:
    """The logit atoms holding elements, as :class:`Bins` of the loss ``gamma`` gives them (see the
    module docstring)."""
    scale = counts.scale
    atoms = np.flatnonzero(counts.counts)
    atoms = atoms[atoms > 0]
    n = counts.counts[atoms]
    low = (atoms - 1) / scale + LOWEST_COUNTED
    lower, _ = negative_loss(low, gamma)
    upper, _ = negative_loss(low + 1 / scale, gamma)
    centre, slope = negative_loss(low + 0.5 / scale, gamma)
    offsets = (counts.offsets[atoms] - 0.5 * n) / scale  # Σ (x - c)
    sums = np.clip(centre * (n + slope * offsets), n * lower, n * upper)
    errors = n * upper * (((gamma + 1) ** 2 + gamma + 2) / (8 * scale**2) + (gamma + 1) * counts.place_error / scale)  # 2nd order; the places' rounding
    return Bins(n, sums, errors, lower, upper)


def cumulative_shares(bins: Bins, fractions: tuple[float, ...] = FRACTIONS) -> dict:
    """``{elements, share, error_bound}``: at each fraction ``f`` of the elements of ``bins``
    (sorted by loss), an overestimate of the share of their total loss the lowest ``f`` of them
    hold, and by how much at most it exceeds the exact share (see the module docstring). Shares
    None when the total is 0."""
    counts_all = float(bins.counts.sum())
    result: dict[str, Any] = {"elements": int(counts_all), "share": None, "error_bound": None}
    kept = bins.counts > 0
    order = np.argsort(bins.lower[kept], kind="stable")
    n, s, e, lower, upper = (values[kept][order] for values in (bins.counts, bins.sums, bins.errors, bins.lower, bins.upper))
    total = float(s.sum())
    if not total:
        return result
    slack = float(e.sum())
    cumulative_counts = np.cumsum(n)
    high, low = np.cumsum(s + e), np.cumsum(s - e)
    wanted = np.array(fractions) * counts_all
    at = np.minimum(np.searchsorted(cumulative_counts, wanted, side="left"), len(n) - 1)
    taken = np.clip(wanted - (cumulative_counts[at] - n[at]), 0, None)
    above = (high[at] - (s + e)[at]) + taken * (s + e)[at] / n[at]
    below = (low[at] - (s - e)[at]) + taken * lower[at] - _overlaps(n, lower, upper, at)
    share = np.minimum(above / max(total - slack, np.finfo(float).tiny), 1.0)
    bound = np.maximum(share - below / (total + slack), 0.0)
    result.update(share=[float(v) for v in share], error_bound=[float(v) for v in bound])
    return result


def _overlaps(n: np.ndarray, lower: np.ndarray, upper: np.ndarray, at: np.ndarray) -> np.ndarray:
    """For each bin ``c`` of ``at`` (bins sorted by their lowest loss): ``Σ n_j (upper_j -
    lower_c)`` over the bins ``j`` before it whose losses may exceed ``lower_c``: what elements
    counted before the bin may hold above its lowest loss. Bins of one kind do not overlap, so the
    sum is over the few bins of the other kind around ``lower_c``; a running maximum of ``upper``
    finds where they start."""
    reach = np.maximum.accumulate(upper)
    result = np.zeros(len(at))
    for i, c in enumerate(at):
        if c == 0 or reach[c - 1] <= lower[c]:
            continue
        first = int(np.searchsorted(reach[:c], lower[c], side="right"))
        result[i] = float((n[first:c] * np.maximum(upper[first:c] - lower[c], 0)).sum())
    return result


@functools.cache
def _lower_edges(size: int) -> np.ndarray:
    k = np.arange(size)
    exponent, fine = LOWEST_EXPONENT + k // SUB_BINS, k % SUB_BINS
    edges = np.concatenate([[0.0], np.ldexp(0.5 + fine / (2 * SUB_BINS), exponent)])
    edges.flags.writeable = False
    return edges


class LossHistogram:
    """Per gamma, over the positives and over the negatives: the focal loss before alpha_t,
    ``h = (1 - p_t)^gamma bce`` (``alpha_t`` is constant within the positives and within the
    negatives for 0/1 targets, so the shares do not depend on alpha), in loss bins for the elements
    tallied one by one and logit atoms for the easy negatives (see the module docstring).

    Args:
        gammas: the gammas.
        count_logits: keep :attr:`by_logit`, the easy negatives' counts by logit, for the sweep's
            shared dense pass to fill (:class:`~lossaudit.compare.engine.stream.SharedPass`).

    Attributes:
        tally: one of the sweep's tallies, set by the caller before the first chunk: the elements
            taken out of the dense pass come from it (:meth:`StreamTally.taken_elements`).
    """

    def __init__(self, gammas: tuple[float, ...], count_logits: bool = True):
        self.gammas = gammas
        self.size = 1 + (HIGHEST_EXPONENT - LOWEST_EXPONENT + 1) * SUB_BINS
        self.counts = np.zeros((len(gammas), 2, self.size))
        self.sums = np.zeros((len(gammas), 2, self.size))
        self.by_logit = LogitCounts(atom_scale(gammas), BLOCK_ELEMENTS) if count_logits else None
        self.tally: StreamTally | None = None

    def _keys(self, h: np.ndarray) -> np.ndarray:
        """The bin of each float32 loss ``h >= 0`` (0: its own bin, key 0): for a normal float,
        ``frexp``'s exponent and the first 8 bits of its fraction are the float's bits shifted
        right by 15 (exponent field, then fraction), so the key is those bits plus a constant;
        subnormal losses (below 2^-126) and 0 are keyed from ``frexp``."""
        keys = np.right_shift(h.view(np.int32), 23 - SUB_BITS)
        keys += NORMAL_KEY_OFFSET
        small = h < np.float32(np.finfo(np.float32).tiny)
        if small.any():
            keys[small] = _frexp_keys(h[small])
        return keys

    def lower_edges(self) -> np.ndarray:
        """``(size + 1,)`` the smallest loss of each bin, then the top bin's upper edge (bin 0 holds 0 only)."""
        return _lower_edges(self.size)

    def add(self, chunk: Chunk, file: int = 0) -> None:
        """Add the valid elements of a chunk that the dense pass took out (the easy negatives are
        counted by the pass itself), each counted by its sampling weight in a weighted dump
        (``file`` is unused: the histogram is of all files)."""
        assert self.tally is not None  # set by the caller
        taken, kept, at, w, log1p, q = self.tally.taken_elements(chunk)
        y = np.zeros(len(taken.x), dtype=np.float32)
        y[at] = chunk.target_values[kept]
        positive = np.zeros(len(taken.x), dtype=bool)
        positive[at] = chunk.target_positive[kept]
        terms = elements.sigmoid_terms(taken.x, log1p, q, y, chunk.heatmap)
        bce = terms.bce.astype(np.float32)
        m = np.maximum(terms.p + y - 2 * terms.p * y, 0)  # 1 - p_t
        offset = positive * self.size
        for i, gamma in enumerate(self.gammas):
            h = elements.power(m, gamma) * bce if gamma else bce  # focal before alpha_t
            self._count(i, self._keys(h) + offset, h, w)

    def _count(self, i: int, keys: np.ndarray, h: np.ndarray, weights: np.ndarray | None) -> None:
        """Add losses ``h`` at bins ``keys`` (positives offset by ``size``) to gamma ``i``'s
        counts and sums, each by its weight (None: 1)."""
        counted = np.bincount(keys, weights=weights, minlength=2 * self.size)
        self.counts[i] += counted.reshape(2, self.size)
        self.sums[i] += np.bincount(keys, weights=h if weights is None else h * weights, minlength=2 * self.size).reshape(2, self.size)

    def merge(self, other: LossHistogram) -> None:
        self.counts += other.counts
        self.sums += other.sums
        if self.by_logit is not None and other.by_logit is not None:
            self.by_logit.merge(other.by_logit)

    def __getstate__(self) -> dict:
        """Pickled without its tally (a forked worker's result; the tally travels on its own)."""
        return {**vars(self), "tally": None}

    def bins(self, i: int, positive: bool) -> Bins:
        """Gamma ``self.gammas[i]``'s loss bins of the positives (or negatives), with the logit
        atoms among the negatives."""
        counts, sums = self.counts[i, int(positive)], self.sums[i, int(positive)]
        edges = self.lower_edges()
        loss_bins = Bins(counts, sums, np.zeros(self.size), edges[:-1], np.concatenate([[0.0], edges[2:]]))
        if positive or self.by_logit is None:
            return loss_bins
        atoms = atom_bins(self.by_logit, self.gammas[i])
        return Bins(*(np.concatenate([getattr(loss_bins, name), getattr(atoms, name)]) for name in ("counts", "sums", "errors", "lower", "upper")))

    def cumulative(self, i: int, positive: bool, fractions: tuple[float, ...] = FRACTIONS) -> dict:
        """The cumulative loss share of gamma ``self.gammas[i]`` over the positives (or negatives) at
        each fraction of their elements, with its error bound (:func:`cumulative_shares`)."""
        return cumulative_shares(self.bins(i, positive), fractions)


class RowHistogram(LossHistogram):
    """:class:`LossHistogram` of the softmax focal loss: per gamma, the terms ``(1 - q)^gamma (-y
    log q)`` of the rows with a target (softmax-focal before its per-class alpha; one term a row on
    single-label data), kept as "positives" (a softmax loss has no negative term), in loss bins.
    ``shared``: the tallies' pass (:class:`~lossaudit.compare.engine.shared.SharedPass`), whose
    softmax terms it reads."""

    def __init__(self, gammas: tuple[float, ...], shared: SharedPass | None = None):
        super().__init__(gammas, count_logits=False)
        self.shared = shared

    def add(self, chunk: Chunk, file: int = 0) -> None:
        row_valid = chunk.valid_rows
        rows = np.flatnonzero(row_valid & chunk.has_target)
        if not len(rows):
            return
        _, _, y, _, _, terms, w = softmax_targets(chunk, rows, row_valid, self.shared)
        for i, gamma in enumerate(self.gammas):
            h = terms.loss(y, gamma)  # float64: a row spanning float32's range (logits ±3e38) has -log q past float32's largest
            self._count(i, self._keys(np.minimum(h, FLOAT32_MAX).astype(np.float32)) + self.size, h, w)

    def __getstate__(self) -> dict:
        return {**super().__getstate__(), "shared": None}
