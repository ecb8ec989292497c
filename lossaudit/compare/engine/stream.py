"""One streaming pass over the data, in numpy, that produces the same
:class:`~lossaudit.compare.settings.Tally` as the full-tensor engine, in bounded memory.

Every number ``compare`` prints is a sum over elements grouped by class, positive/negative,
difficulty bin and level, so each chunk of rows adds its element losses into small float64 tables
keyed by (class, positive, difficulty interval) (:class:`~lossaudit.compare.engine.binning.Intervals`).

Per chunk, read once (float32 rows in place from the mapped file):

- the dense pass (:class:`~lossaudit.compare.engine.dense.DensePass`) sums, per class, the losses of the
  easy negatives — all elements but a few in detection dumps — from one ``exp`` and one ``log1p``
  per element, and returns the elements it took out, among them every non-finite logit (the
  chunk's ``nonfinite`` mask is set from them);
- the valid elements taken out are tallied one by one with the formulas of
  :mod:`lossaudit.compare.engine.elements`: the negatives with a harder logit in float32, the non-zero
  targets in float64 (and the sigmoid families, :mod:`lossaudit.compare.engine.families`, in float64);
- the softmax losses are computed on the rows that have a target.

Weighted dumps (sampling weights: :mod:`lossaudit.io.dataset.weights`): every sum is a
Horvitz–Thompson sum — each element, softmax term and row adds its weight times its value — and
beside each loss and gradient table a second-moment table ``Σ w (w - 1) v²`` is kept
(:attr:`~lossaudit.compare.settings.Tally.second_moments`, the variance of the sums under Poisson
sampling). The dense pass runs there on the rows whose elements all weigh 1 (a Recorder's sample
keeps the rows with a target whole, with weight 1: most of its elements), where the weighted sums
are the plain ones and the second moments 0; every element of the other rows (the sampled
negatives' pseudo-rows) is taken out and tallied one by one (:mod:`lossaudit.compare.engine.elements`),
exact for any weight, the second moments over the elements whose weight is not 1
(:class:`SecondMoments`). Row
quantities (rows, background and multi-hot rows, softmax rows, OHEM's rows) add up
:attr:`~lossaudit.io.dataset.Chunk.row_weights`; a batch that recorded ``population_rows`` counts
that many rows, its background rows being those less its rows with a target.

GHM-C keeps the BCE sums per GHM bin, so its weights (which depend on the bin counts of the whole
data) are applied at the end: the loss is ``Σ_bins w_b × Σ BCE in bin b``. Hard-negative mining
keeps one loss per row; at the end the kept rows are read again and tallied.

Chunks are spread over workers (:mod:`~lossaudit.compare.engine.parallel`: forked processes on Linux,
threads elsewhere), each with its own buffers and tables, merged in a fixed order.
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Callable
from dataclasses import replace
from typing import Any, cast

import numpy as np

from lossaudit.compare.engine import elements, families, parallel
from lossaudit.compare.engine.binning import Intervals, ghm_bin_weights
from lossaudit.compare.engine.dense import DensePass, Taken
from lossaudit.compare.engine.generic import GenericTally
from lossaudit.compare.engine.mistakes import Mistakes, grid_chunk_rows
from lossaudit.compare.engine.shared import DenseNeeds, SharedPass, dense_pass, softmax_targets
from lossaudit.compare.settings import FILE_COUNTS, LossSettings, Tally
from lossaudit.io.dataset import Chunk, DataPlan
from lossaudit.losses.cross_entropy import BCE, CE
from lossaudit.losses.density import GHM
from lossaudit.losses.focusing import FOCAL, SOFTMAX_FOCAL
from lossaudit.losses.heatmap import CENTERNET
from lossaudit.losses.mining import OHEM
from lossaudit.losses.registry import LOSSES
from lossaudit.losses.spec import SOFTMAX

SOFTMAX_LOSSES = (CE, SOFTMAX_FOCAL)
"""The softmax losses this module computes itself (the later softmax families:
:mod:`~lossaudit.compare.engine.families`)."""
FAST_LOSSES = (BCE, FOCAL, GHM, CENTERNET, OHEM) + SOFTMAX_LOSSES
"""The losses :class:`StreamTally` computes."""

CHUNK_ELEMENTS = 1 << 21
"""Elements per chunk (rows × classes), read at once: the bookkeeping of a chunk (targets, rows,
the elements tallied one by one) costs numpy calls whose overhead holds the GIL, so chunks are
large."""

GRADIENT = "gradient:"
"""Prefix of the tables of gradient magnitudes (``gradient:bce`` beside ``bce``)."""

FOCAL_PARTS = ("_oo", "_oy", "_yy")
"""Weighted mode: focal's second moments in three parts, ``Σ w (w - 1) h² × ((1 - y)², y (1 - y), y²)``,
weighted ``(a_off², 2 a_off a_on, a_on²)`` at the end (``alpha_t² h²``, exactly, for soft targets too)."""

BLOCK_ELEMENTS = 1 << 15 if parallel.FORK else 1 << 18
"""Elements per block of the dense pass. At 2^15 its buffers (about 30 bytes an element) stay in a
core's L2 cache, but every block costs some 25 numpy calls, and threads queue on the GIL for each
(see :mod:`~lossaudit.compare.engine.parallel`): with forked workers, blocks are cache-sized; with threads,
larger. Measured in-process on 80M elements, default losses, 2 cores (wall seconds): two forked
workers 2^14 0.27, 2^15 0.265, 2^16 0.28, 2^17 0.29, 2^18 0.32; two threads 2^15 0.52, 2^16 0.44,
2^17 0.39, 2^18 0.37."""


DENSE_WEIGHT_LIMIT = 2.0**40
"""The largest weight the weighted dense pass takes (its float32 sums of ``w (w - 1) v²`` stay far
from float32's range: ``v < 0.11`` for an easy negative); a chunk with a larger one among its rows
of weights other than 1 (found by their row sums, which bound each weight) has those rows'
elements tallied one by one, in float64."""


def dense_block_rows(num_classes: int) -> int:
    """Rows per block of a dense pass over ``num_classes`` classes (:data:`BLOCK_ELEMENTS`)."""
    return max(BLOCK_ELEMENTS // num_classes, 1)


class SecondMoments:
    """The second-moment sums ``Σ w (w - 1) v²`` of some elements by key, over those whose weight is
    not 1 only (the others add 0: in a Recorder's sample, every element of a row with a target).

    Args:
        keys: ``(k,)`` the elements' flat keys (``size``: left out).
        w: ``(k,)`` float64 their weights.
        size: the tables' length.
    """

    def __init__(self, keys: np.ndarray, w: np.ndarray, size: int):
        factor = w * (w - 1)
        self.moved = np.flatnonzero(factor)
        self.keys, self.factor, self.size = keys[self.moved], factor[self.moved], size

    def sums(self, values: np.ndarray) -> np.ndarray:
        """``(size,)`` the sums of ``w (w - 1) values²`` by key, for ``(k,)`` values of the elements."""
        moved = values[self.moved].astype(np.float64)
        return np.bincount(self.keys, weights=self.factor * moved * moved, minlength=self.size + 1)[: self.size]


class StreamTally:
    """Accumulates a :class:`Tally` chunk by chunk (see the module docstring).

    Args:
        settings: the losses and hyper-parameters.
        num_classes: C.
        num_files: dump files (for the per-file counts).
        max_rows: the most rows a chunk given to :meth:`add` has.
        family_params: the later loss families asked for with their hyper-parameters
            (:attr:`families.FamilySetup.params`): the sigmoid ones are kept here
            (:class:`~lossaudit.compare.engine.families.SigmoidFamilies`).
        grid: ``(H, W)`` when the rows are the cells of maps (for :class:`Mistakes`), else None.
        weighted: the chunks carry sampling weights (see the module docstring); also set by the
            first chunk that carries them (:meth:`add`), so an accumulator made without it counts a
            weighted dump right.
        shared: a dense pass (and per-chunk work) shared with other tallies of these chunks
            (:func:`shared_tallies`), or None for one of its own.
    """

    def __init__(
        self,
        settings: LossSettings,
        num_classes: int,
        num_files: int,
        max_rows: int,
        family_params: dict[str, dict[str, float]] | None = None,
        grid: tuple[int, int] | None = None,
        weighted: bool = False,
        shared: SharedPass | None = None,
    ):
        self.settings, self.num_classes = settings, num_classes
        requested = settings.losses
        self.intervals = Intervals(settings.bins, settings.ghm_bins)
        self.size = num_classes * 2 * self.intervals.count
        alpha = np.array(settings.alpha_per_class, dtype=np.float64) if settings.alpha_per_class is not None else settings.alpha
        self.params = elements.SigmoidParams(alpha=alpha, gamma=settings.gamma)
        self.softmax_weight = alpha if isinstance(alpha, np.ndarray) else None
        bce_table = BCE in requested or GHM in requested  # GHM-C's weights come at the end
        focal, centernet = FOCAL in requested, CENTERNET in requested
        self.weighted = False
        self.families = families.SigmoidFamilies(family_params or {}, self.intervals, num_classes)
        dense_values = {"softplus": bce_table, "q": bce_table, "heatmap_loss": centernet, "heatmap_gradient": centernet}
        values = tuple(name for name, wanted in dense_values.items() if wanted)
        powers = ((settings.gamma,) if focal else ()) + self.families.powers()
        easy_edge = np.float32(self.families.easy_edge(float(self.intervals.first)))
        clipped = self.families.clipped(float(self.intervals.first))
        self.shared = shared
        self._made_weighted: DensePass | None = None  # weighted mode, own pass: see weighted_dense
        needs = DenseNeeds(values, powers, easy_edge, OHEM in requested, clipped)
        if shared is None:
            self._dense_needs = needs
            self._dense: DensePass | None = dense_pass([needs], max_rows, num_classes, dense_block_rows(num_classes))
        else:
            self._dense = None
            shared.require(needs)
        tabled = [loss for loss in (BCE, CENTERNET) + SOFTMAX_LOSSES if loss in requested or (loss == BCE and bce_table)]
        if focal:  # Σ (1 - y) h and Σ y h of focal's unweighted h: alpha comes at the end
            tabled += ["focal_off", "focal_on"]
        self.tables = {name: np.zeros(self.size) for loss in tabled for name in (loss, GRADIENT + loss)}
        # second moments Σ w (w - 1) v²; focal's squared alpha_t = a_off (1 - y) + a_on y needs three parts
        self._second_names = [name for name in self.tables if "focal_o" not in name] + [
            prefix + FOCAL + part for prefix in ("", GRADIENT) for part in FOCAL_PARTS if focal
        ]
        self.second: dict[str, np.ndarray] | None = None
        self.file_rows = {name: np.zeros(num_files) for name in ("rows", "target_rows")}  # weighted: for population_rows
        self.counts = np.zeros(self.size)
        self.softmax_counts = np.zeros(self.size)
        self.file_counts = {name: np.zeros(num_files) for name in FILE_COUNTS}
        self.per_class = {name: np.zeros(num_classes) for name in ("sum_p_positive", "sum_q_positive", "softmax_positives", "ignored", "nonfinite")}
        self.totals: dict[str, float] = dict.fromkeys(("rows", "background_rows", "multi_hot_rows", "softmax_rows", "peaks"), 0)
        self.row_losses: list[tuple[int, np.ndarray, np.ndarray, np.ndarray | None]] = []  # (first row, BCE per row, has a positive, row weights)
        self.mistakes = Mistakes(num_classes, grid)
        if weighted:
            self._weigh()

    def _bincount(self, keys: np.ndarray, values: np.ndarray | None = None) -> np.ndarray:
        return np.bincount(keys, weights=values, minlength=self.size)

    def _tally(
        self,
        name: str,
        sums: Callable[[np.ndarray | None], np.ndarray],
        values: np.ndarray,
        w: np.ndarray | None,
        second: str | None = None,
        moments: SecondMoments | None = None,
    ) -> None:
        """Add ``values`` (weighted by ``w``, when given) to the table ``name`` through ``sums`` (a
        bincount over the keys), and ``w (w - 1) values²`` to the second-moment table ``second``
        (default ``name``) in weighted mode, through ``moments`` when given (the elements of weight
        other than 1 only)."""
        self.tables[name] += sums(values if w is None else w * values)
        if w is not None:
            assert self.second is not None  # weighted mode (_weigh)
            if moments is None:
                self.second[second or name] += sums(w * (w - 1) * np.square(values, dtype=np.float64))
            else:
                self.second[second or name] += moments.sums(values)

    def _weigh(self) -> None:
        """Switch to weighted mode (second-moment tables), before any chunk is added."""
        if self.weighted:
            return
        if self.totals["rows"]:
            raise ValueError("a weighted chunk after unweighted ones: a weighted dump gives every chunk weights")
        self.weighted = True
        self.second = {name: np.zeros(self.size) for name in self._second_names}
        self.families.weigh()

    def _take_weighted(self, chunk: Chunk) -> Taken:
        """Weighted mode's dense passes: the plain one on the rows whose elements all weigh 1 and
        hold no padding (in a Recorder's sample, the rows with a target), where a weighted sum is
        the plain one and the second moments are 0; the weighted one (:class:`DensePass` with
        ``weighted``) on the other rows (a Recorder's pseudo-rows of sampled negatives), their
        padding taken out. Each pass looks only at its own rows where those of weight 1 come
        first (a Recorder's sample), else at every row, the other pass's dropped. Without a
        weighted pass (``sweep``'s shared pass, which counts the easy negatives by logit), every
        element of the other rows is taken out (to be tallied one by one, weighted)."""
        assert chunk.weights is not None  # weighted mode
        classes = self.num_classes
        row_sums = chunk.weight_sums
        unit = row_sums == classes  # weights are >= 1: only ones add up to C (a weight within 1e-14 of 1 counts as 1)
        if chunk.padding is not None:
            unit &= ~chunk.padding.any(axis=1)
        ones = int(np.count_nonzero(unit))
        split = (0, ones) if not unit[ones:].any() else None  # a Recorder's sample: the rows of weight 1 first
        dense = self.dense.add(replace(chunk, ignored_rows=chunk.ignored_rows | ~unit) if split is None else chunk, split)
        rows = np.flatnonzero(~unit & ~chunk.dropped_rows)
        if not len(rows):
            return dense
        weighted_dense = self.weighted_dense
        if weighted_dense is not None and row_sums[rows].max() <= DENSE_WEIGHT_LIMIT:  # (each weight is below its row's sum)
            other_rows = None if split is None else (ones, len(unit))  # (padding taken out as invalid elements)
            other = weighted_dense.add(replace(chunk, ignored_rows=chunk.ignored_rows | unit, element_ignored=chunk.element_invalid), other_rows)
        else:
            index = (rows[:, None] * classes + np.arange(classes)).reshape(-1)
            other = Taken(index, chunk.logits[rows].reshape(-1), index - index // classes * classes)
        index, x = np.concatenate([dense.index, other.index]), np.concatenate([dense.x, other.x])
        if len(dense.index) and len(other.index) and dense.index[-1] > other.index[0]:  # interleaved rows (a Recorder's sample has its pseudo-rows last)
            order = np.argsort(index, kind="stable")
            index, x = index[order], x[order]
        return Taken(index, x, index - index // classes * classes)

    def add(self, chunk: Chunk, file: int = 0) -> None:
        """Tally one chunk of rows, all from the dump file of index ``file``."""
        requested = self.settings.losses
        rows = len(chunk.logits)
        weighted = chunk.weights is not None
        if weighted:
            self._weigh()
        row_weight = chunk.row_weights if weighted else None
        self.totals["rows"] += rows if row_weight is None else float(row_weight.sum())
        # The valid elements taken out of the dense pass (dropped rows are not), one by one: the
        # negatives (target 0, a harder logit), then the targets.
        taken, kept, at, w, log1p, q = self.taken_elements(chunk)
        self._count_exclusions(chunk, file, row_weight)
        row, col, y = chunk.target_rows[kept], chunk.target_cols[kept], chunk.target_values[kept]
        p, row_loss = self._add_negatives(chunk, taken, log1p, q, at, rows, w)
        positive_row = self._add_targets(chunk, taken.x[at], log1p[at], q[at], y, row, col, row_loss, None if w is None else w[at])
        if self.families.params:
            taken_y, taken_positive = np.zeros(len(taken.x), dtype=np.float32), np.zeros(len(taken.x), dtype=bool)
            taken_y[at] = y
            taken_positive[at] = chunk.target_positive[kept]
            self.families.add_elements(taken.x, taken_y, taken.column, taken_positive, w)
        self._add_mistakes(
            chunk,
            "sigmoid",
            lambda found: found.add_sigmoid(chunk.start, rows, taken.index, p, taken.index[at], chunk.target_positive[kept], np.abs(p[at] - y), w),
        )

        # Rows: background rows, multi-hot rows, softmax losses, hard-negative mining.
        row_valid, has_target = chunk.valid_rows, chunk.has_target

        def count(rows_counted: np.ndarray) -> float:
            return int(np.count_nonzero(rows_counted)) if row_weight is None else float(row_weight[rows_counted].sum())

        background_valid = row_valid if chunk.padding is None else _valid_but_padding(chunk)
        background = count(background_valid & ~has_target)
        multi_hot = count(row_valid & (np.bincount(positive_row, minlength=rows) > 1))
        self.totals["background_rows"] += background
        self.totals["multi_hot_rows"] += multi_hot
        self.file_counts["background_rows"][file] += background
        self.file_counts["multi_hot_rows"][file] += multi_hot
        if row_weight is not None:
            self.file_rows["rows"][file] += row_weight.sum()
            self.file_rows["target_rows"][file] += count(has_target & ~chunk.dropped_rows)
        softmax_rows = np.flatnonzero(row_valid & has_target)
        self.totals["softmax_rows"] += len(softmax_rows) if row_weight is None else float(row_weight[softmax_rows].sum())
        if any(loss in requested for loss in SOFTMAX_LOSSES) and len(softmax_rows):
            self._add_softmax(chunk, softmax_rows, row_valid)
        if row_loss is not None:
            has_positive = np.zeros(rows, dtype=bool)
            has_positive[positive_row] = True
            self.row_losses.append((chunk.start, row_loss, has_positive, row_weight))

    @property
    def dense(self) -> DensePass:
        """The dense pass of the chunks (shared or its own)."""
        return self._dense if self.shared is None else self.shared.dense  # type: ignore[return-value]

    @property
    def weighted_dense(self) -> DensePass | None:
        """Weighted mode: the weighted pass of the rows whose elements do not all weigh 1 (shared or
        its own, made on first use), or None where a shared pass counts by logit (see
        :attr:`SharedPass.weighted_dense`)."""
        if self.shared is not None:
            return self.shared.weighted_dense
        if self._made_weighted is None:
            self._made_weighted = dense_pass([self._dense_needs], len(self.dense.x), self.num_classes, dense_block_rows(self.num_classes), weighted=True)
        return self._made_weighted

    def _weighted_made(self) -> DensePass | None:
        """The weighted pass if it has been made (a tally's sums are added once per pass: a
        shared one's by every tally sharing it, each taking its own values)."""
        return self._made_weighted if self.shared is None else self.shared.made_weighted

    def _once(self, chunk: Chunk, name: str, compute: Callable[[], Any]) -> Any:
        """``compute()``, or its value for ``chunk`` computed by a tally this one shares its pass with."""
        return compute() if self.shared is None else self.shared.once(chunk, name, compute)

    def taken_elements(self, chunk: Chunk) -> tuple[Taken, np.ndarray, np.ndarray, np.ndarray | None, np.ndarray, np.ndarray]:
        """The valid elements of ``chunk`` taken out of the dense pass (weighted: every element of
        the rows not dropped), to be tallied one by one: ``(taken, kept, at, w, log1p, q)``, ``kept``
        the chunk's valid non-zero targets (a mask of ``chunk.target_rows``), ``at`` their places
        in ``taken``, ``w`` the elements' weights (None unweighted), ``log1p`` and ``q`` their
        :func:`~lossaudit.compare.engine.elements.sigmoid_parts`. The chunk's dense pass runs on the
        first call (``chunk.nonfinite`` is set from it); a tally sharing the pass computes it once."""
        return cast(tuple, self._once(chunk, "taken", lambda: self._taken_elements(chunk)))

    def _taken_elements(self, chunk: Chunk) -> tuple[Taken, np.ndarray, np.ndarray, np.ndarray | None, np.ndarray, np.ndarray]:
        classes = self.num_classes
        taken = self._take_weighted(chunk) if self.weighted else self.dense.add(chunk)
        if chunk.nonfinite is None:
            _settle_nonfinite(chunk, taken)
        invalid = chunk.element_invalid
        kept = ~chunk.dropped_rows[chunk.target_rows]
        if invalid is not None:
            taken = taken.select(~invalid.reshape(-1)[taken.index])
            kept &= ~invalid[chunk.target_rows, chunk.target_cols]
        at = np.searchsorted(taken.index, chunk.target_rows[kept] * classes + chunk.target_cols[kept])
        w = None if chunk.weights is None else _element_weights(chunk.weights, taken)
        log1p, q = elements.sigmoid_parts(taken.x)
        return taken, kept, at, w, log1p, q

    def _add_negatives(
        self, chunk: Chunk, taken: Taken, log1p: np.ndarray, q: np.ndarray, targets: np.ndarray, rows: int, w: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Tally the taken-out elements (their :func:`~lossaudit.compare.engine.elements.sigmoid_parts`
        ``log1p`` and ``q``; their weights ``w`` in weighted mode) as negatives (target 0), those at
        the positions ``targets`` excepted (:func:`~lossaudit.compare.engine.elements.negative_terms`;
        focal's ``1 - alpha`` comes at the end). Returns the float32 ``p`` of every taken element,
        and the chunk's ``(rows,)`` BCE row sums so far (unweighted: a row's own loss) when
        hard-negative mining is asked for (else None)."""
        requested = self.settings.losses

        def shared_terms() -> tuple[elements.NegativeTerms, np.ndarray, np.ndarray, SecondMoments | None]:
            terms = elements.negative_terms(taken.x, log1p, q, None, False)
            keys = taken.column * (2 * self.intervals.count) + self.intervals.index(terms.p)
            keys[targets] = self.size  # left to _add_targets
            moments = None if w is None else SecondMoments(keys, w, self.size)
            return terms, keys, np.bincount(keys, weights=w, minlength=self.size + 1)[: self.size], moments

        terms, keys, counts, moments = self._once(chunk, f"negatives {self.intervals.bins} {self.intervals.ghm_bins}", shared_terms)

        def sums(values: np.ndarray | None = None) -> np.ndarray:
            return np.bincount(keys, weights=values, minlength=self.size + 1)[: self.size]

        self.counts += counts
        tabled = [(BCE, terms.bce, terms.p)]
        if "focal_off" in self.tables:
            tabled.append(("focal_off", *elements.negative_focal(terms.p, terms.bce, self.settings.gamma)))
        if CENTERNET in self.tables:
            tabled.append((CENTERNET, *elements.negative_centernet(terms.p)))
        for table, values, gradient in tabled:
            if table in self.tables:
                second = (FOCAL + FOCAL_PARTS[0], GRADIENT + FOCAL + FOCAL_PARTS[0]) if table == "focal_off" else (None, None)
                self._tally(table, sums, values, w, second[0], moments)
                self._tally(GRADIENT + table, sums, gradient, w, second[1], moments)
        if OHEM not in requested:
            return terms.p, None
        bce = terms.bce.copy()
        bce[targets] = 0
        dense = self.dense.row_softplus(rows)
        weighted_dense = self._weighted_made()
        if weighted_dense is not None:  # its rows are the other pass's dropped ones (0 there), and the other way round
            dense = dense + weighted_dense.row_softplus(rows)
        return terms.p, dense + np.bincount(taken.index // self.num_classes, weights=bce, minlength=rows)

    def _add_targets(
        self,
        chunk: Chunk,
        x: np.ndarray,
        log1p: np.ndarray,
        q: np.ndarray,
        y: np.ndarray,
        row: np.ndarray,
        col: np.ndarray,
        row_loss: np.ndarray | None,
        w: np.ndarray | None = None,
    ) -> np.ndarray:
        """Tally the valid non-zero targets of ``chunk``: float32 logits ``x`` and their
        intermediates, targets ``y`` at (``row``, ``col``) of the chunk
        (:func:`~lossaudit.compare.engine.elements.sigmoid_terms`), their weights ``w`` in weighted
        mode. Adds their BCE to ``row_loss`` when given; returns the rows of the positives."""

        def shared_terms() -> tuple[elements.SigmoidTerms, np.ndarray, np.ndarray]:
            terms = elements.sigmoid_terms(x, log1p, q, y, chunk.heatmap)
            keys = self.intervals.keys(col, terms.positive, terms.g)
            return terms, keys, self._bincount(keys, w)

        terms, keys, counts = self._once(chunk, f"targets {self.intervals.bins} {self.intervals.ghm_bins}", shared_terms)

        def sums(values: np.ndarray | None = None) -> np.ndarray:
            return self._bincount(keys, values)

        self.counts += counts
        if BCE in self.tables:
            self._tally(BCE, sums, terms.bce, w)
            self._tally(GRADIENT + BCE, sums, elements.bce_gradient(terms, y), w)
        if "focal_off" in self.tables:
            gamma = self.settings.gamma
            for values, name in ((elements.focal(terms, y, gamma), FOCAL), (elements.focal_gradient(terms, y, gamma), GRADIENT + FOCAL)):
                self.tables[name + "_off"] += sums((1 - y) * values if w is None else w * (1 - y) * values)
                self.tables[name + "_on"] += sums(y * values if w is None else w * y * values)
                if w is not None:  # alpha_t² h² = a_off² (1 - y)² h² + 2 a_off a_on y (1 - y) h² + a_on² y² h²
                    squared = w * (w - 1) * np.square(values, dtype=np.float64)
                    assert self.second is not None  # weighted mode (_weigh)
                    for part, factor in zip(FOCAL_PARTS, ((1 - y) ** 2, y * (1 - y), y * y)):
                        self.second[name + part] += sums(squared * factor)
        if CENTERNET in self.tables:
            self._tally(CENTERNET, sums, elements.centernet(terms, y), w)
            self._tally(GRADIENT + CENTERNET, sums, elements.centernet_gradient(terms, y), w)
            peaks = y == 1
            self.totals["peaks"] += int(np.count_nonzero(peaks)) if w is None else float(w[peaks].sum())
        positive_p = terms.p[terms.positive] if w is None else w[terms.positive] * terms.p[terms.positive]
        self.per_class["sum_p_positive"] += np.bincount(col[terms.positive], weights=positive_p, minlength=self.num_classes)
        if row_loss is not None:
            row_loss += np.bincount(row, weights=terms.bce, minlength=len(row_loss))
        return row[terms.positive]

    def _count_exclusions(self, chunk: Chunk, file: int, row_weight: np.ndarray | None = None) -> None:
        """Ignored and non-finite elements per class, rows with a label out of range per file
        (weighted: sums of the elements' weights and of ``row_weight``; padding counts nowhere)."""
        if chunk.weights is not None:
            if chunk.element_ignored is not None or chunk.ignored_rows.any():
                present = ~chunk.padding if chunk.padding is not None else True
                self.per_class["ignored"] += np.where(chunk.ignored & present, chunk.weights, 0.0).sum(axis=0)
        elif chunk.element_ignored is not None:
            ignored = chunk.ignored
            self.per_class["ignored"] += ignored.sum(axis=0)
        else:
            self.per_class["ignored"] += np.count_nonzero(chunk.ignored_rows)
        if chunk.nonfinite is not None:
            nonfinite = chunk.nonfinite & ~chunk.ignored
            if chunk.padding is not None:
                nonfinite &= ~chunk.padding
            weighted = nonfinite if chunk.weights is None else np.where(nonfinite, chunk.weights, 0.0)
            self.per_class["nonfinite"] += weighted.sum(axis=0)
            self.file_counts["nonfinite"][file] += weighted.sum()
        out_of_range = chunk.out_of_range & ~chunk.ignored_rows
        invalid = chunk.element_invalid
        if invalid is not None:
            out_of_range &= ~invalid.all(axis=1)
        self.file_counts["out_of_range_rows"][file] += np.count_nonzero(out_of_range) if row_weight is None else row_weight[out_of_range].sum()

    def _add_softmax(self, chunk: Chunk, softmax_rows: np.ndarray, row_valid: np.ndarray) -> None:
        """The softmax losses of the rows ``softmax_rows`` (valid, with a target), at their targets."""
        row, col, y, positive, local_row, terms, w = softmax_targets(chunk, softmax_rows, row_valid, self.shared)
        keys = self.intervals.keys(col, positive, np.float32(1) - terms.q)

        def sums(values: np.ndarray | None = None) -> np.ndarray:
            return self._bincount(keys, values)

        self.softmax_counts += sums(w)
        for loss in SOFTMAX_LOSSES:
            if loss in self.tables:
                gamma = 0.0 if loss == CE else self.settings.gamma
                weight = self.softmax_weight[col] if loss != CE and self.softmax_weight is not None else 1.0
                self._tally(loss, sums, terms.loss(y, gamma, weight), w)
                self._tally(GRADIENT + loss, sums, elements.softmax_gradient(terms, terms.pull(y, gamma, weight), y, local_row), w)
        q_positive = terms.q[positive] if w is None else w[positive] * terms.q[positive]
        self.per_class["sum_q_positive"] += np.bincount(col[positive], weights=q_positive, minlength=self.num_classes)
        self.per_class["softmax_positives"] += np.bincount(col[positive], weights=None if w is None else w[positive], minlength=self.num_classes)
        self._add_mistakes(chunk, "softmax", lambda found: found.add_softmax(col, terms, positive, w))

    def _add_mistakes(self, chunk: Chunk, kind: str, add: Callable[[Mistakes], None]) -> None:
        """``add`` the chunk's mistakes of ``kind`` to :attr:`mistakes` (they do not depend on the
        settings: with a shared pass, they are found once and added to each tally)."""
        if self.shared is None:
            add(self.mistakes)
            return

        def find() -> Mistakes:
            found = Mistakes(self.num_classes, self.mistakes.grid)
            add(found)
            return found

        self.mistakes.merge(self.shared.once(chunk, "mistakes " + kind, find))

    def merge(self, other: StreamTally) -> None:
        """Add another accumulator's sums (of other chunks) to this one."""
        for loss, table in other.tables.items():
            self.tables[loss] += table
        if other.weighted:
            self._weigh()
            assert self.second is not None and other.second is not None  # weighted mode (_weigh)
            for name, table in other.second.items():
                self.second[name] += table
        for name, values in other.file_rows.items():
            self.file_rows[name] += values
        self.counts += other.counts
        self.softmax_counts += other.softmax_counts
        for name, values in other.per_class.items():
            self.per_class[name] += values
        for name, counts in other.file_counts.items():
            self.file_counts[name] += counts
        for name, value in other.totals.items():
            self.totals[name] += value
        self.row_losses.extend(other.row_losses)
        self.mistakes.merge(other.mistakes)
        self.families.merge(other.families)
        self._add_dense(other.dense)
        other_weighted = other._weighted_made()
        if other_weighted is not None:
            self._add_dense(other_weighted)

    def _add_dense(self, dense: DensePass) -> None:
        """Add the per-class sums of a dense pass to the tables, at (class, negative, interval 0)
        (weighted, its second moments too)."""
        at = np.arange(self.num_classes) * 2 * self.intervals.count
        self.counts[at] += dense.count
        sums = dense.class_sums()
        for table, values_key, gradient_key in ((BCE, "softplus", "q"), (CENTERNET, "heatmap_loss", "heatmap_gradient")):
            if table in self.tables:
                self.tables[table][at] += sums[values_key]
                self.tables[GRADIENT + table][at] += sums[gradient_key]
        if "focal_off" in self.tables:
            loss, gradient = dense.power_sums(self.settings.gamma)
            self.tables["focal_off"][at] += loss
            self.tables[GRADIENT + "focal_off"][at] += gradient
        if dense.weighted:
            assert self.second is not None  # weighted mode (_weigh)
            second = dense.second_sums()
            for table, values_key, gradient_key in ((BCE, "softplus", "q"), (CENTERNET, "heatmap_loss", "heatmap_gradient")):
                if table in self.tables:
                    self.second[table][at] += second[values_key]
                    self.second[GRADIENT + table][at] += second[gradient_key]
            if "focal_off" in self.tables:  # a negative's alpha_t² is a_off²: the first of the three parts
                loss, gradient = dense.second_power_sums(self.settings.gamma)
                self.second[FOCAL + FOCAL_PARTS[0]][at] += loss
                self.second[GRADIENT + FOCAL + FOCAL_PARTS[0]][at] += gradient
        self.families.add_easy(dense, at)

    def _ohem(self, plan: DataPlan) -> tuple[np.ndarray, np.ndarray, float, tuple[np.ndarray, ...] | None]:
        """Hard-negative mining: select rows from the per-row losses, read them again, tally their
        BCE. Returns the flat ``(C, 2, intervals)`` sums of the loss and of its gradient magnitude
        (BCE's), the normaliser (positive rows, at least 1) and, in weighted mode, the two
        second-moment tables. Weighted, the selection is a plug-in estimate
        (:func:`ohem_row_fractions`): the kept rows' elements count their weight times the part of
        the row kept."""
        ordered = sorted(self.row_losses, key=lambda item: item[0])
        row_losses, positive_rows = np.concatenate([item[1] for item in ordered]), np.concatenate([item[2] for item in ordered])
        if self.weighted:
            row_weights = np.concatenate([item[3] for item in ordered])
            fraction = ohem_row_fractions(row_losses, positive_rows, self.settings.ohem_ratio, row_weights)
            keep = np.flatnonzero(fraction > 0)
            normaliser = max(float(row_weights[positive_rows].sum()), 1.0)
        else:
            keep = np.flatnonzero(ohem_row_selection(row_losses, positive_rows, self.settings.ohem_ratio))
            normaliser = float(max(int(positive_rows.sum()), 1))
        sums = gradient = np.zeros(self.size)
        second: tuple[np.ndarray, ...] | None = (np.zeros(self.size), np.zeros(self.size)) if self.weighted else None
        if len(keep):
            chunk = plan.read_rows(keep)
            row, col = np.nonzero(chunk.valid)
            x, y = chunk.logits[row, col], chunk.targets[row, col]
            terms = elements.sigmoid_terms(x, *elements.sigmoid_parts(x), y, chunk.heatmap)
            keys = self.intervals.keys(col, terms.positive, terms.g)
            values = (terms.bce, elements.bce_gradient(terms, y))
            if self.weighted:
                w = cast(np.ndarray, chunk.weights)[row, col]
                kept = fraction[keep][row]
                second = tuple(self._bincount(keys, kept * w * (w - 1) * v * v) for v in values)
                values = tuple(kept * w * v for v in values)
            sums, gradient = (self._bincount(keys, v) for v in values)
        return sums, gradient, normaliser, second

    def finish(self, plan: DataPlan) -> Tally:
        """The tally of everything added; ``plan`` is read again for hard-negative mining. Call it
        once; :meth:`result` gives the tally again, under another alpha."""
        self._add_dense(self.dense)
        weighted_dense = self._weighted_made()
        if weighted_dense is not None:
            self._add_dense(weighted_dense)
        return self.result(plan)

    def result(self, plan: DataPlan, params: elements.SigmoidParams | None = None) -> Tally:
        """The tally, after :meth:`finish`; ``params`` (default: the settings') gives focal's alpha:
        the sums of the tables are weighted at this point (:meth:`SigmoidParams.weights`)."""
        settings, intervals, classes = self.settings, self.intervals, self.num_classes
        counts = intervals.to_cells(self.counts.reshape(classes, 2, intervals.count))
        valid_elements = float(counts.sum())
        sums, gradients, normalisers, names, second_moments = {}, {}, {}, {}, {}
        for loss in settings.losses:
            table, gradient, second, normalisers[loss], names[loss] = self._loss_tables(loss, plan, params, valid_elements)
            cells, gradient_cells = (intervals.to_cells(np.reshape(values, (classes, 2, intervals.count))) for values in (table, gradient))
            second_cells = [intervals.to_cells(np.reshape(values, (classes, 2, intervals.count))) for values in second] if second is not None else None
            if loss == GHM:
                weights = ghm_bin_weights(counts.sum(axis=(0, 1, 2, 3)), max(valid_elements, 1.0), settings.ghm_momentum)
                cells, gradient_cells = cells * weights, gradient_cells * weights
                if second_cells is not None:  # the (plug-in) bin weights, squared
                    second_cells = [values * weights**2 for values in second_cells]
            sums[loss], gradients[loss] = cells.sum(axis=-1), gradient_cells.sum(axis=-1)
            if second_cells is not None:
                second_moments[loss], second_moments[GRADIENT + loss] = (values.sum(axis=-1) for values in second_cells)
        softmax_counts = intervals.to_cells(self.softmax_counts.reshape(self.num_classes, 2, intervals.count))
        rows, background_rows, file_counts = self._row_totals(plan)
        ignored = self.per_class["ignored"]
        sample = plan.info.sample if self.weighted else None
        if sample is not None and sample.get("recorded_ignored") is not None:
            ignored = ignored + np.asarray(sample["recorded_ignored"], dtype=np.float64)
        tally = Tally(
            loss_sums=sums,
            gradient_sums=gradients,
            element_counts=counts.sum(axis=-1),
            normalisers=normalisers,
            normaliser_names=names,
            sum_p_positive=self.per_class["sum_p_positive"],
            sum_q_positive=self.per_class["sum_q_positive"],
            softmax_positives=self.per_class["softmax_positives"],
            ignored=ignored,
            nonfinite=self.per_class["nonfinite"],
            rows=rows,
            background_rows=background_rows,
            softmax_counts=softmax_counts.sum(axis=-1),
            multi_hot_rows=self.totals["multi_hot_rows"],
            file_counts=file_counts,
            mistakes=self.mistakes,
            focal_parts=np.stack(
                [self.tables[name].reshape(classes, -1).sum(axis=1) for name in ("focal_off", "focal_on", GRADIENT + "focal_off", GRADIENT + "focal_on")]
            )
            if "focal_off" in self.tables
            else None,
            second_moments=second_moments if self.weighted else None,
            sample=None
            if sample is None
            else {
                **sample,
                "estimated_elements": valid_elements,
                "population_source": "recorded" if all(_recorded(source, "population_elements") for source in plan.sources) else "sum of weights",
            },
        )
        self.families.finish(tally)
        return tally

    def _loss_tables(self, loss: str, plan: DataPlan, params: elements.SigmoidParams | None, valid_elements: float) -> tuple:
        """``(loss table, gradient table, second-moment tables or None, normaliser, its name)`` of
        ``loss``, flat ``(C, 2, intervals)`` (GHM-C's: BCE's, its weights come after); the second
        moments only in weighted mode."""
        classes = self.num_classes
        second: tuple[np.ndarray, ...] | None = None
        if loss == OHEM:
            table, gradient, normaliser, second = self._ohem(plan)
            name = "positive rows"
        elif loss in (BCE, GHM):
            table, gradient = self.tables[BCE], self.tables[GRADIENT + BCE]
            normaliser, name = max(valid_elements, 1.0) if loss == GHM else valid_elements, "valid elements"
        elif loss == FOCAL:
            off, on = (params or self.params).weights(classes)
            table, gradient = (
                self.tables[part + "_off"].reshape(classes, -1) * off[:, None] + self.tables[part + "_on"].reshape(classes, -1) * on[:, None]
                for part in (FOCAL, GRADIENT + FOCAL)
            )
            if self.weighted:
                assert self.second is not None  # weighted mode (_weigh)
                second = tuple(
                    sum(
                        self.second[prefix + part].reshape(classes, -1) * factor[:, None]
                        for part, factor in zip(FOCAL_PARTS, (off * off, 2 * off * on, on * on))
                    )
                    for prefix in (FOCAL, GRADIENT + FOCAL)
                )
            normaliser, name = valid_elements, "valid elements"
        elif loss == CENTERNET:
            table, gradient = self.tables[loss], self.tables[GRADIENT + loss]
            peaks = self.totals["peaks"]
            normaliser, name = float(max(peaks, 1)), "peaks" if peaks else "1 (no peaks)"
        else:
            table, gradient = self.tables[loss], self.tables[GRADIENT + loss]
            normaliser, name = float(self.totals["softmax_rows"]), "rows with a target"
        if self.weighted and second is None:
            tabled = BCE if loss == GHM else loss
            assert self.second is not None  # weighted mode (_weigh)
            second = (self.second[tabled], self.second[GRADIENT + tabled])
        return table, gradient, second, normaliser, name

    def _row_totals(self, plan: DataPlan) -> tuple[float, float, dict[str, np.ndarray]]:
        """(rows, background rows, per-file counts): the tallied totals; weighted, a batch that
        recorded ``population_rows`` counts those rows, and those less its rows with a target as
        background (its per-file background count too)."""
        rows, background = self.totals["rows"], self.totals["background_rows"]
        if not self.weighted:
            return rows, background, self.file_counts
        file_counts = {name: values.copy() for name, values in self.file_counts.items()}
        for file, source in enumerate(plan.sources):
            if _recorded(source, "population_rows"):
                assert source.weighting is not None  # _recorded
                population = source.weighting.scalars["population_rows"]
                estimate = population - self.file_rows["target_rows"][file]
                rows += population - self.file_rows["rows"][file]
                background += estimate - file_counts["background_rows"][file]
                file_counts["background_rows"][file] = estimate
        return rows, background, file_counts


def _recorded(source, key: str) -> bool:
    """The batch ``source`` (a :class:`~lossaudit.io.dataset.reader.Source`) recorded the scalar ``key``."""
    return source.weighting is not None and key in source.weighting.scalars


def _element_weights(weights: np.ndarray, taken: Taken) -> np.ndarray:
    """The ``(k,)`` weights of the elements ``taken`` from a chunk's ``(n, C)`` ``weights`` (per-row
    weights come broadcast: read by row and column, not copied whole by a flat view)."""
    if weights.flags.c_contiguous:
        return weights.reshape(-1)[taken.index]
    return weights[taken.index // weights.shape[1], taken.column]


def _valid_but_padding(chunk: Chunk) -> np.ndarray:
    """``(n,)`` rows neither dropped nor holding an excluded element other than padding (a
    pseudo-row of a weighted sample is background when it holds no target)."""
    invalid = [mask for mask in (chunk.element_ignored, chunk.nonfinite) if mask is not None]
    if not invalid:
        return ~chunk.dropped_rows
    assert chunk.padding is not None  # called where the chunk has padding
    return ~chunk.dropped_rows & ~(np.logical_or.reduce(invalid) & ~chunk.padding).any(axis=1)


def ohem_row_fractions(row_loss: np.ndarray, positive_rows: np.ndarray, neg_pos_ratio: float, row_weight: np.ndarray) -> np.ndarray:
    """Weighted hard-negative mining (a plug-in estimate): the part of each row kept, in [0, 1].
    Every positive row whole; the negative rows by decreasing loss, ties the earliest first, until
    their weights add up to ``k = floor(ratio × Σ positive rows' weights)``, the last row kept in
    part. With integer weights this keeps what :func:`ohem_row_selection` keeps of the data with
    each row repeated ``w`` times. A ``(N,)`` float64 array."""
    fraction = positive_rows.astype(np.float64)
    n_pos = float(row_weight[positive_rows].sum())
    negatives = np.flatnonzero(~positive_rows & (row_weight > 0))
    k = min(np.floor(neg_pos_ratio * n_pos), float(row_weight[negatives].sum()))
    if k > 0 and len(negatives):
        order = negatives[np.lexsort((negatives, -row_loss[negatives]))]
        weights = row_weight[order]
        before = np.cumsum(weights) - weights
        fraction[order] = np.clip((k - before) / weights, 0.0, 1.0)
    return fraction


def _settle_nonfinite(chunk: Chunk, taken: Taken) -> None:
    """Set ``chunk.nonfinite`` (left None by a reader that did not look, or for none) from what
    the dense pass took out — every non-finite logit outside the dropped rows — and the dropped
    rows themselves; it stays None when every logit is finite."""
    found = taken.index[~np.isfinite(taken.x)]
    dropped = np.flatnonzero(chunk.dropped_rows)
    dropped_nonfinite = ~np.isfinite(chunk.logits[dropped]) if len(dropped) else None
    if not len(found) and (dropped_nonfinite is None or not dropped_nonfinite.any()):
        return
    nonfinite = np.zeros(chunk.logits.shape, dtype=bool)
    nonfinite.reshape(-1)[found] = True
    if dropped_nonfinite is not None:
        nonfinite[dropped] = dropped_nonfinite
    chunk.nonfinite = nonfinite


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
"""glibc's mallopt parameters."""


def keep_freed_memory() -> None:
    """Ask glibc to keep freed memory for reuse: allocations below 32 MiB from the heap, up to
    128 MiB kept free at its top. By default a temporary array over 128 KiB (a chunk's elements
    tallied one by one, its softmax rows) is mapped afresh and page-faulted in on every chunk until
    glibc's adaptive threshold settles — about 0.1 s of system time on 80M elements. Process-wide;
    without glibc this does nothing."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    libc.mallopt(M_TRIM_THRESHOLD, 1 << 27)
    libc.mallopt(M_MMAP_THRESHOLD, 1 << 25)


def ohem_row_selection(row_loss: np.ndarray, positive_rows: np.ndarray, neg_pos_ratio: float) -> np.ndarray:
    """Rows hard-negative mining keeps, as :func:`lossaudit.losses.ohem_row_selection`: every
    positive row and the ``ratio × #pos`` negative rows of highest loss, ties at the last loss kept
    broken alike (the earliest rows). A ``(N,)`` bool mask."""
    n_pos = int(positive_rows.sum())
    k = min(int(neg_pos_ratio * n_pos), int((~positive_rows).sum()))
    keep = positive_rows.copy()
    if k > 0:
        negative_loss = np.where(positive_rows, -np.inf, row_loss)
        last = np.partition(negative_loss, len(negative_loss) - k)[len(negative_loss) - k]
        above = negative_loss > last
        keep |= above
        keep[np.flatnonzero(negative_loss == last)[: k - int(above.sum())]] = True
    return keep


CHUNKS_PER_WORKER = 4
"""A dump of fewer chunks of :data:`CHUNK_ELEMENTS` than this many per worker is cut into smaller
ones (:func:`default_chunk_rows`)."""
MIN_CHUNK_ELEMENTS = 1 << 19
"""The smallest chunk :func:`default_chunk_rows` cuts (a dump below it is one chunk, one worker)."""


def default_chunk_rows(rows: int, classes: int, workers: int) -> int:
    """Rows per chunk for a dump of ``rows × classes`` elements: :data:`CHUNK_ELEMENTS` elements, or
    fewer where that leaves the ``workers`` fewer than :data:`CHUNKS_PER_WORKER` chunks each (the
    split is static: with a few large chunks, the worker with one more sets the pass's time; a
    1% sample of 8.8M elements in 5 chunks took 1.4x the time of the same in 8), but not below
    :data:`MIN_CHUNK_ELEMENTS` elements."""
    classes = max(classes, 1)
    balanced = -(-rows // (CHUNKS_PER_WORKER * workers))
    return max(min(CHUNK_ELEMENTS // classes, balanced), MIN_CHUNK_ELEMENTS // classes, 1)


def default_workers() -> int:
    """The CPUs this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def stream_pass(
    plan: DataPlan, make: Callable[[int], list], chunk_rows: int | None = None, workers: int | None = None, progress: Callable[[int], None] | None = None
) -> list:
    """One pass over ``plan`` in chunks of ``chunk_rows`` rows (default: :func:`default_chunk_rows`),
    each chunk read once and given to every accumulator.

    ``make(rows)`` returns a worker's accumulators for chunks of at most ``rows`` rows: objects
    with ``add(chunk, file)`` and ``merge(other)`` that pickle (a forked worker sends them back),
    the first a :class:`StreamTally`: chunks are decoded into its buffer, without a check for
    non-finite logits, which its dense pass finds and sets in the chunk before the others see it.
    ``workers`` workers (default: the CPUs this process may use; see
    :mod:`~lossaudit.compare.engine.parallel`) each tally every ``workers``-th chunk into their own
    accumulators. The split is static and the merge ordered, so a given worker count always gives
    the same sums. ``progress`` is called, in this process, with the rows tallied since its last
    call (each chunk's, or those of several with forked workers). Returns the merged accumulators.
    """
    keep_freed_memory()
    info = plan.info
    workers = workers or default_workers()
    rows = chunk_rows or grid_chunk_rows(default_chunk_rows(info.num_rows, info.num_classes, workers), info.grid)
    spans = plan.ranges(rows)
    workers = max(1, min(workers, len(spans)))

    def work(first: int, report: Callable[[int], None]) -> list:
        accumulators = make(rows)
        with plan.reader() as reader:
            for span in spans[first::workers]:
                chunk = reader.decode(span, out=accumulators[0].dense.x, check_finite=False)
                for accumulator in accumulators:
                    accumulator.add(chunk, file=span[0])
                report(span[2] - span[1])
        return accumulators

    results = parallel.run(work, workers, progress, export=plan.pass_state, absorb=plan.absorb_pass_state)
    plan.finish_pass()
    totals = results[0]
    for accumulators in results[1:]:
        for total, accumulator in zip(totals, accumulators):
            total.merge(accumulator)
    return totals


def stream_tally(
    plan: DataPlan,
    settings: LossSettings,
    chunk_rows: int | None = None,
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
    class_counts: np.ndarray | None = None,
) -> Tally:
    """The :class:`Tally` of ``plan`` under ``settings``, from one :func:`stream_pass` (hard-negative
    mining reads the rows it keeps again); the sigmoid families are kept by the
    :class:`StreamTally`, the softmax families by their own accumulator
    (:class:`~lossaudit.compare.engine.families.FamilyTally`), given the same chunks.
    ``class_counts``: ``plan.class_target_sums()`` when the caller has it already."""
    info = plan.info
    family = families.setup(settings, plan, class_counts)
    core = replace(settings, losses=tuple(loss for loss in settings.losses if loss in FAST_LOSSES))
    slow = tuple(loss for loss in settings.losses if loss not in FAST_LOSSES + families.FAMILY_LOSSES)
    softmax_counts = not any(loss in SOFTMAX_LOSSES for loss in core.losses)
    softmax_families = family is not None and any(loss in families.SOFTMAX_FAMILIES for loss in family.params)
    counts_elsewhere = softmax_counts and not softmax_families and any(LOSSES[loss].family == SOFTMAX for loss in slow)
    if any(LOSSES[loss].needs_class_counts for loss in slow):
        class_counts = plan.class_target_sums() if class_counts is None else class_counts

    def make(rows: int) -> list:
        shared = SharedPass(rows, info.num_classes, dense_block_rows(info.num_classes)) if softmax_families else None  # the softmax terms once per chunk
        extra: list[Any] = (
            [families.FamilyTally(settings, cast(families.FamilySetup, family), info.num_classes, softmax_counts, info.weighted, shared)]
            if softmax_families
            else []
        )
        if counts_elsewhere:  # only a slow softmax loss: the softmax counts are kept by a FamilyTally of no family
            extra.append(families.FamilyTally(settings, families.FamilySetup({}, None, None), info.num_classes, True, info.weighted))
        if slow:
            extra.append(GenericTally(settings, slow, info.num_classes, class_counts, weighted=info.weighted))
        return [StreamTally(core, info.num_classes, len(info.files), rows, family.params if family else None, info.grid, info.weighted, shared), *extra]

    if slow and "torch" in sys.modules:
        workers = 1  # torch's thread pools do not survive fork: a forked worker's autograd can hang
    total, *extra = stream_pass(plan, make, chunk_rows, workers, progress)
    tally = total.finish(plan)
    for accumulator in extra:
        accumulator.finish(tally)
    return tally
