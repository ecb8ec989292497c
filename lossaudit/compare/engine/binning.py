"""Where a gradient norm falls: difficulty bins, GHM-C bins and levels, in numpy.

The report breaks every loss down by difficulty bin, by level and (for GHM-C's weights) by GHM
bin, three sets of edges on the gradient norm ``g``. :class:`Intervals` merges them: one
``searchsorted`` places an element in an interval of the merged edges, the tables are kept per
interval, and :meth:`Intervals.to_cells` maps them to (difficulty bin, level, GHM bin) once, at the
end. Every interval lies inside one bin of each edge set, so its left end decides them all.

Edges are float32 and ``g`` is compared in float32, as :mod:`lossaudit.losses` (the reference,
torch) bins it: ``edges[k] <= g < edges[k + 1]``.
"""

from __future__ import annotations

import numpy as np

from lossaudit.compare.settings import LEVEL_EDGES, LEVELS


def ghm_bin_edges(bins: int) -> np.ndarray:
    """GHM's gradient-norm bin edges ``k / bins`` in float32, the last raised by 1e-6 (mmdet), as
    :func:`lossaudit.losses.ghm_bin_edges`."""
    edges = np.arange(bins + 1, dtype=np.float32) / np.float32(bins)
    edges[-1] += np.float32(1e-6)
    return edges


def ghm_bin_weights(counts: np.ndarray, total: float, momentum: float = 0.0) -> np.ndarray:
    """Per-bin GHM-C weights from ``(bins,)`` counts of valid elements, as
    :func:`lossaudit.losses.ghm_bin_weights` with a fresh state: ``w_b = total / c_b`` (with
    momentum m, ``total / ((1 - m) c_b)``: the moving average after one call, from 0), divided by
    the number of non-empty bins; empty bins get 0. ``total`` is the number of valid elements, at
    least 1."""
    counts = np.asarray(counts, dtype=np.float64)
    nonempty = counts > 0
    denominator = (1 - momentum) * counts if momentum > 0 else counts
    weights = np.where(nonempty, total / np.maximum(denominator, 1e-300), 0.0)
    filled = int(nonempty.sum())
    return weights / filled if filled else weights


class Intervals:
    """The merged edges of ``bins`` difficulty bins, ``ghm_bins`` GHM bins and the levels.

    Attributes:
        edges: ``(K,)`` sorted float32 inner edges; interval ``i`` is ``edges[i-1] <= g < edges[i]``.
        count: ``K + 1`` intervals.
        first: ``edges[0]``: every ``g`` below it is in interval 0.
    """

    def __init__(self, bins: int, ghm_bins: int):
        difficulty = ghm_bin_edges(bins)[1:-1]
        ghm = ghm_bin_edges(ghm_bins)[1:-1]
        levels = np.array(LEVEL_EDGES, dtype=np.float32)
        self.edges = np.array(sorted(set(np.concatenate([difficulty, ghm, levels]).tolist())), dtype=np.float32)  # (np.unique imports numpy.ma: 10 ms)
        self.count = len(self.edges) + 1
        self.first = self.edges[0]
        self.bins, self.ghm_bins = bins, ghm_bins
        left = np.concatenate([np.zeros(1, dtype=np.float32), self.edges])
        bin_of = np.searchsorted(difficulty, left, side="right")
        level_of = np.searchsorted(levels, left, side="right")
        ghm_bin_of = np.searchsorted(ghm, left, side="right")
        self.cell_of = (bin_of * len(LEVELS) + level_of) * ghm_bins + ghm_bin_of
        self._lookup = self._make_lookup()

    def index(self, g: np.ndarray) -> np.ndarray:
        """The interval of each float32 gradient norm in ``g`` (``0 <= g <= 1``): the number of
        edges at or below it, as ``searchsorted(edges, g, side='right')``.

        A search costs some 15 ns an element; a table is faster. ``g × 2^k`` is exact in float32,
        so ``b = floor(g × 2^k)`` puts g in ``[b / 2^k, (b + 1) / 2^k)``; with ``2^-k`` below the
        least gap between edges that bucket holds one edge at most, and the interval is the count
        of edges up to the bucket's start plus ``g >= that edge``. Edges closer than 2^-16 are
        searched."""
        if self._lookup is None:
            return np.searchsorted(self.edges, g, side="right")
        scale, below, next_edge = self._lookup
        bucket = np.multiply(g, scale).astype(np.intp)  # exact in float32 or float64
        return below[bucket] + (g >= next_edge[bucket])

    def _make_lookup(self) -> tuple[np.float32, np.ndarray, np.ndarray] | None:
        """The table of :meth:`index`: ``(2^k, edges at or below each bucket's start, the edge
        inside each bucket or +inf)``, or None when edges are closer than 2^-16."""
        gaps = np.diff(np.concatenate([[0.0], self.edges.astype(np.float64), [1.0]]))
        least = gaps[gaps > 0].min() if (gaps > 0).any() else 1.0
        if least <= 2.0**-16:
            return None
        exponent = max(int(np.ceil(-np.log2(least))) + 1, 1)
        scale = 2**exponent
        starts = np.arange(scale + 1, dtype=np.float64) / scale  # g = 1 falls in bucket 2^k
        below = np.searchsorted(self.edges.astype(np.float64), starts, side="right")
        next_edge = np.full(scale + 1, np.inf, dtype=np.float32)
        inside = (below < len(self.edges)) & (self.edges[np.minimum(below, len(self.edges) - 1)] < starts + 1 / scale)
        next_edge[inside] = self.edges[below[inside]]
        return np.float32(scale), below, next_edge

    def keys(self, cols: np.ndarray, positive: np.ndarray, g: np.ndarray) -> np.ndarray:
        """Flat keys into ``(C, 2, intervals)`` tables: class column, positive or not, the interval of ``g``."""
        return (cols * 2 + positive) * self.count + self.index(g)

    def to_cells(self, table: np.ndarray) -> np.ndarray:
        """``(..., intervals)`` sums -> ``(..., bins, LEVELS, ghm_bins)``."""
        cells = np.zeros((*table.shape[:-1], self.bins * len(LEVELS) * self.ghm_bins), dtype=table.dtype)
        np.add.at(cells, (..., self.cell_of), table)  # type: ignore[arg-type]  # numpy's stubs leave out Ellipsis here
        return cells.reshape(*table.shape[:-1], self.bins, len(LEVELS), self.ghm_bins)
