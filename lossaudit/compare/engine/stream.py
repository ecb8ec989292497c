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

import numpy as np

from lossaudit.compare.engine import elements, families, parallel
from lossaudit.compare.engine.binning import Intervals, ghm_bin_weights
from lossaudit.compare.engine.dense import DensePass, Taken
from lossaudit.compare.engine.generic import GenericTally
from lossaudit.compare.engine.mistakes import Mistakes, grid_chunk_rows
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

BLOCK_ELEMENTS = 1 << 15 if parallel.FORK else 1 << 18
"""Elements per block of the dense pass. At 2^15 its buffers (about 30 bytes an element) stay in a
core's L2 cache, but every block costs some 25 numpy calls, and threads queue on the GIL for each
(see :mod:`~lossaudit.compare.engine.parallel`): with forked workers, blocks are cache-sized; with threads,
larger. Measured in-process on 80M elements, default losses, 2 cores (wall seconds): two forked
workers 2^14 0.27, 2^15 0.265, 2^16 0.28, 2^17 0.29, 2^18 0.32; two threads 2^15 0.52, 2^16 0.44,
2^17 0.39, 2^18 0.37."""


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
    """

    def __init__(self, settings: LossSettings, num_classes: int, num_files: int, max_rows: int, family_params: dict[str, dict[str, float]] | None = None,
                 grid: tuple[int, int] | None = None):
        self.settings, self.num_classes = settings, num_classes
        requested = settings.losses
        self.intervals = Intervals(settings.bins, settings.ghm_bins)
        self.size = num_classes * 2 * self.intervals.count
        alpha = np.array(settings.alpha_per_class, dtype=np.float64) if settings.alpha_per_class is not None else settings.alpha
        self.params = elements.SigmoidParams(alpha=alpha, gamma=settings.gamma)
        self.softmax_weight = alpha if isinstance(alpha, np.ndarray) else None
        bce_table = BCE in requested or GHM in requested  # GHM-C's weights come at the end
        focal, centernet = FOCAL in requested, CENTERNET in requested
        self.families = families.SigmoidFamilies(family_params or {}, self.intervals, num_classes)
        dense_values = {"softplus": bce_table, "q": bce_table, "heatmap_loss": centernet, "heatmap_gradient": centernet}
        values = tuple(name for name, wanted in dense_values.items() if wanted)
        powers = ((settings.gamma,) if focal else ()) + self.families.powers()
        block_rows = max(BLOCK_ELEMENTS // num_classes, 1)
        easy_edge = self.families.easy_edge(float(self.intervals.first))
        self.dense = DensePass(max_rows, num_classes, np.float32(easy_edge), values, block_rows, powers, row_sums=OHEM in requested)
        tabled = [loss for loss in (BCE, CENTERNET) + SOFTMAX_LOSSES if loss in requested or (loss == BCE and bce_table)]
        if focal:  # Σ (1 - y) h and Σ y h of focal's unweighted h: alpha comes at the end
            tabled += ["focal_off", "focal_on"]
        self.tables = {name: np.zeros(self.size) for loss in tabled for name in (loss, GRADIENT + loss)}
        self.counts = np.zeros(self.size)
        self.softmax_counts = np.zeros(self.size)
        self.file_counts = {name: np.zeros(num_files) for name in FILE_COUNTS}
        self.per_class = {name: np.zeros(num_classes) for name in ("sum_p_positive", "sum_q_positive", "softmax_positives", "ignored", "nonfinite")}
        self.totals = dict.fromkeys(("rows", "background_rows", "multi_hot_rows", "softmax_rows", "peaks"), 0)
        self.row_losses: list[tuple[int, np.ndarray, np.ndarray]] = []  # (first row, BCE per row, has a positive)
        self.mistakes = Mistakes(num_classes, grid)

    def _bincount(self, keys: np.ndarray, values: np.ndarray | None = None) -> np.ndarray:
        return np.bincount(keys, weights=values, minlength=self.size)

    def add(self, chunk: Chunk, file: int = 0) -> None:
        """Tally one chunk of rows, all from the dump file of index ``file``."""
        requested, classes = self.settings.losses, self.num_classes
        rows = len(chunk.logits)
        self.totals["rows"] += rows
        taken = self.dense.add(chunk)
        if chunk.nonfinite is None:
            _settle_nonfinite(chunk, taken)
        self._count_exclusions(chunk, file)

        # The valid elements taken out of the dense pass (dropped rows are not), one by one: the
        # negatives (target 0, a harder logit), then the targets.
        invalid = chunk.element_invalid
        kept = ~chunk.dropped_rows[chunk.target_rows]
        if invalid is not None:
            taken = taken.select(~invalid.reshape(-1)[taken.index])
            kept &= ~invalid[chunk.target_rows, chunk.target_cols]
        row, col, y = chunk.target_rows[kept], chunk.target_cols[kept], chunk.target_values[kept]
        at = np.searchsorted(taken.index, row * classes + col)
        log1p, q = elements.sigmoid_parts(taken.x)
        p, row_loss = self._add_negatives(taken, log1p, q, at, rows)
        positive_row = self._add_targets(taken.x[at], log1p[at], q[at], y, row, col, chunk.heatmap, row_loss)
        if self.families.params:
            taken_y, taken_positive = np.zeros(len(taken.x), dtype=np.float32), np.zeros(len(taken.x), dtype=bool)
            taken_y[at] = y
            taken_positive[at] = chunk.target_positive[kept]
            self.families.add_elements(taken.x, taken_y, taken.column, taken_positive)
        self.mistakes.add_sigmoid(chunk.start, rows, taken.index, p, taken.index[at], chunk.target_positive[kept], np.abs(p[at] - y))

        # Rows: background rows, multi-hot rows, softmax losses, hard-negative mining.
        row_valid, has_target = chunk.valid_rows, chunk.has_target
        background = int(np.count_nonzero(row_valid & ~has_target))
        multi_hot = int(np.count_nonzero(row_valid & (np.bincount(positive_row, minlength=rows) > 1)))
        self.totals["background_rows"] += background
        self.totals["multi_hot_rows"] += multi_hot
        self.file_counts["background_rows"][file] += background
        self.file_counts["multi_hot_rows"][file] += multi_hot
        softmax_rows = np.flatnonzero(row_valid & has_target)
        self.totals["softmax_rows"] += len(softmax_rows)
        if any(loss in requested for loss in SOFTMAX_LOSSES) and len(softmax_rows):
            self._add_softmax(chunk, softmax_rows, row_valid)
        if row_loss is not None:
            has_positive = np.zeros(rows, dtype=bool)
            has_positive[positive_row] = True
            self.row_losses.append((chunk.start, row_loss, has_positive))

    def _add_negatives(self, taken: Taken, log1p: np.ndarray, q: np.ndarray, targets: np.ndarray, rows: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Tally the taken-out elements (their :func:`~lossaudit.compare.engine.elements.sigmoid_parts`
        ``log1p`` and ``q``) as negatives (target 0), those at the positions ``targets`` excepted
        (:func:`~lossaudit.compare.engine.elements.negative_terms`; focal's ``1 - alpha`` comes at the
        end). Returns the float32 ``p`` of every taken element, and the chunk's ``(rows,)`` BCE row
        sums so far when hard-negative mining is asked for (else None)."""
        requested = self.settings.losses
        terms = elements.negative_terms(taken.x, log1p, q, self.settings.gamma if FOCAL in requested else None, CENTERNET in requested)
        keys = taken.column * (2 * self.intervals.count) + self.intervals.index(terms.p)
        keys[targets] = self.size  # left to _add_targets

        def sums(values: np.ndarray | None = None) -> np.ndarray:
            return np.bincount(keys, weights=values, minlength=self.size + 1)[: self.size]

        self.counts += sums()
        for table, values, gradient in ((BCE, terms.bce, terms.p), ("focal_off", terms.focal, terms.focal_gradient),
                                        (CENTERNET, terms.centernet, terms.centernet_gradient)):
            if table in self.tables:
                self.tables[table] += sums(values)
                self.tables[GRADIENT + table] += sums(gradient)
        if OHEM not in requested:
            return terms.p, None
        terms.bce[targets] = 0
        return terms.p, self.dense.row_softplus(rows) + np.bincount(taken.index // self.num_classes, weights=terms.bce, minlength=rows)

    def _add_targets(self, x: np.ndarray, log1p: np.ndarray, q: np.ndarray, y: np.ndarray, row: np.ndarray, col: np.ndarray, heatmap: bool, row_loss: np.ndarray | None) -> np.ndarray:
        """Tally the valid non-zero targets: float32 logits ``x`` and their intermediates, targets
        ``y`` at (``row``, ``col``) of the chunk (:func:`~lossaudit.compare.engine.elements.sigmoid_terms`).
        Adds their BCE to ``row_loss`` when given; returns the rows of the positives."""
        terms = elements.sigmoid_terms(x, log1p, q, y, heatmap)
        keys = self.intervals.keys(col, terms.positive, terms.g)
        self.counts += self._bincount(keys)
        if BCE in self.tables:
            self.tables[BCE] += self._bincount(keys, terms.bce)
            self.tables[GRADIENT + BCE] += self._bincount(keys, elements.bce_gradient(terms, y))
        if "focal_off" in self.tables:
            gamma = self.settings.gamma
            for values, name in ((elements.focal(terms, y, gamma), FOCAL), (elements.focal_gradient(terms, y, gamma), GRADIENT + FOCAL)):
                self.tables[name + "_off"] += self._bincount(keys, (1 - y) * values)
                self.tables[name + "_on"] += self._bincount(keys, y * values)
        if CENTERNET in self.tables:
            self.tables[CENTERNET] += self._bincount(keys, elements.centernet(terms, y))
            self.tables[GRADIENT + CENTERNET] += self._bincount(keys, elements.centernet_gradient(terms, y))
            self.totals["peaks"] += int(np.count_nonzero(y == 1))
        self.per_class["sum_p_positive"] += np.bincount(col[terms.positive], weights=terms.p[terms.positive], minlength=self.num_classes)
        if row_loss is not None:
            row_loss += np.bincount(row, weights=terms.bce, minlength=len(row_loss))
        return row[terms.positive]

    def _count_exclusions(self, chunk: Chunk, file: int) -> None:
        """Ignored and non-finite elements per class, rows with a label out of range per file."""
        if chunk.element_ignored is not None:
            ignored = chunk.ignored
            self.per_class["ignored"] += ignored.sum(axis=0)
        else:
            self.per_class["ignored"] += np.count_nonzero(chunk.ignored_rows)
        if chunk.nonfinite is not None:
            nonfinite = chunk.nonfinite & ~chunk.ignored
            self.per_class["nonfinite"] += nonfinite.sum(axis=0)
            self.file_counts["nonfinite"][file] += np.count_nonzero(nonfinite)
        out_of_range = chunk.out_of_range & ~chunk.ignored_rows
        invalid = chunk.element_invalid
        if invalid is not None:
            out_of_range &= ~invalid.all(axis=1)
        self.file_counts["out_of_range_rows"][file] += np.count_nonzero(out_of_range)

    def _add_softmax(self, chunk: Chunk, softmax_rows: np.ndarray, row_valid: np.ndarray) -> None:
        """The softmax losses of the rows ``softmax_rows`` (valid, with a target), at their targets."""
        in_rows = row_valid[chunk.target_rows]
        row, col, y = chunk.target_rows[in_rows], chunk.target_cols[in_rows], chunk.target_values[in_rows]
        positive = chunk.target_positive[in_rows]
        local_row = np.searchsorted(softmax_rows, row)
        terms = elements.softmax_terms(np.take(chunk.logits, softmax_rows, axis=0), local_row, col)  # (take: faster than [rows])
        keys = self.intervals.keys(col, positive, np.float32(1) - terms.q)
        self.softmax_counts += self._bincount(keys)
        for loss in SOFTMAX_LOSSES:
            if loss in self.tables:
                gamma = 0.0 if loss == CE else self.settings.gamma
                weight = self.softmax_weight[col] if loss != CE and self.softmax_weight is not None else 1.0
                self.tables[loss] += self._bincount(keys, terms.loss(y, gamma, weight))
                gradient = elements.softmax_gradient(terms, terms.pull(y, gamma, weight), y, local_row)
                self.tables[GRADIENT + loss] += self._bincount(keys, gradient)
        self.per_class["sum_q_positive"] += np.bincount(col[positive], weights=terms.q[positive], minlength=self.num_classes)
        self.per_class["softmax_positives"] += np.bincount(col[positive], minlength=self.num_classes)
        self.mistakes.add_softmax(col, terms.top, terms.q, positive)

    def merge(self, other: StreamTally) -> None:
        """Add another accumulator's sums (of other chunks) to this one."""
        for loss, table in other.tables.items():
            self.tables[loss] += table
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

    def _add_dense(self, dense: DensePass) -> None:
        """Add the per-class sums of a dense pass to the tables, at (class, negative, interval 0)."""
        at = np.arange(self.num_classes) * 2 * self.intervals.count
        self.counts[at] += dense.count
        sums = dense.class_sums()
        for table, values, gradient in ((BCE, "softplus", "q"), (CENTERNET, "heatmap_loss", "heatmap_gradient")):
            if table in self.tables:
                self.tables[table][at] += sums[values]
                self.tables[GRADIENT + table][at] += sums[gradient]
        if "focal_off" in self.tables:
            loss, gradient = dense.power_sums(self.settings.gamma)
            self.tables["focal_off"][at] += loss
            self.tables[GRADIENT + "focal_off"][at] += gradient
        self.families.add_easy(dense, at)

    def _ohem(self, plan: DataPlan) -> tuple[np.ndarray, np.ndarray, float]:
        """Hard-negative mining: select rows from the per-row losses, read them again, tally their
        BCE. Returns the flat ``(C, 2, intervals)`` sums of the loss and of its gradient magnitude
        (BCE's), and the normaliser (positive rows, at least 1)."""
        ordered = sorted(self.row_losses, key=lambda item: item[0])
        row_losses, positive_rows = np.concatenate([item[1] for item in ordered]), np.concatenate([item[2] for item in ordered])
        keep = np.flatnonzero(ohem_row_selection(row_losses, positive_rows, self.settings.ohem_ratio))
        sums = gradient = np.zeros(self.size)
        if len(keep):
            chunk = plan.read_rows(keep)
            row, col = np.nonzero(chunk.valid)
            x, y = chunk.logits[row, col], chunk.targets[row, col]
            terms = elements.sigmoid_terms(x, *elements.sigmoid_parts(x), y, chunk.heatmap)
            keys = self.intervals.keys(col, terms.positive, terms.g)
            sums, gradient = self._bincount(keys, terms.bce), self._bincount(keys, elements.bce_gradient(terms, y))
        return sums, gradient, float(max(int(positive_rows.sum()), 1))

    def finish(self, plan: DataPlan) -> Tally:
        """The tally of everything added; ``plan`` is read again for hard-negative mining. Call it
        once; :meth:`result` gives the tally again, under another alpha."""
        self._add_dense(self.dense)
        return self.result(plan)

    def result(self, plan: DataPlan, params: elements.SigmoidParams | None = None) -> Tally:
        """The tally, after :meth:`finish`; ``params`` (default: the settings') gives focal's alpha:
        the sums of the tables are weighted at this point (:meth:`SigmoidParams.weights`)."""
        settings, intervals, classes = self.settings, self.intervals, self.num_classes
        counts = intervals.to_cells(self.counts.reshape(classes, 2, intervals.count))
        valid_elements = float(counts.sum())
        sums, gradients, normalisers, names = {}, {}, {}, {}
        for loss in settings.losses:
            if loss == OHEM:
                table, gradient, normalisers[loss] = self._ohem(plan)
                names[loss] = "positive rows"
            elif loss in (BCE, GHM):
                table, gradient = self.tables[BCE], self.tables[GRADIENT + BCE]
                normalisers[loss], names[loss] = max(valid_elements, 1.0) if loss == GHM else valid_elements, "valid elements"
            elif loss == FOCAL:
                off, on = (params or self.params).weights(classes)
                table, gradient = (self.tables[name + "_off"].reshape(classes, -1) * off[:, None] + self.tables[name + "_on"].reshape(classes, -1) * on[:, None]
                                   for name in (FOCAL, GRADIENT + FOCAL))
                normalisers[loss], names[loss] = valid_elements, "valid elements"
            elif loss == CENTERNET:
                table, gradient = self.tables[loss], self.tables[GRADIENT + loss]
                peaks = self.totals["peaks"]
                normalisers[loss], names[loss] = float(max(peaks, 1)), "peaks" if peaks else "1 (no peaks)"
            else:
                table, gradient = self.tables[loss], self.tables[GRADIENT + loss]
                normalisers[loss], names[loss] = float(self.totals["softmax_rows"]), "rows with a target"
            cells, gradient_cells = (intervals.to_cells(np.reshape(values, (classes, 2, intervals.count))) for values in (table, gradient))
            if loss == GHM:
                weights = ghm_bin_weights(counts.sum(axis=(0, 1, 2, 3)), max(valid_elements, 1.0), settings.ghm_momentum)
                cells, gradient_cells = cells * weights, gradient_cells * weights
            sums[loss], gradients[loss] = cells.sum(axis=-1), gradient_cells.sum(axis=-1)
        softmax_counts = intervals.to_cells(self.softmax_counts.reshape(self.num_classes, 2, intervals.count))
        tally = Tally(
            loss_sums=sums,
            gradient_sums=gradients,
            element_counts=counts.sum(axis=-1),
            normalisers=normalisers,
            normaliser_names=names,
            sum_p_positive=self.per_class["sum_p_positive"],
            sum_q_positive=self.per_class["sum_q_positive"],
            softmax_positives=self.per_class["softmax_positives"],
            ignored=self.per_class["ignored"],
            nonfinite=self.per_class["nonfinite"],
            rows=self.totals["rows"],
            background_rows=self.totals["background_rows"],
            softmax_counts=softmax_counts.sum(axis=-1),
            multi_hot_rows=self.totals["multi_hot_rows"],
            file_counts=self.file_counts,
            mistakes=self.mistakes,
            focal_parts=np.stack([self.tables[name].reshape(classes, -1).sum(axis=1) for name in
                                  ("focal_off", "focal_on", GRADIENT + "focal_off", GRADIENT + "focal_on")]) if "focal_off" in self.tables else None,
        )
        self.families.finish(tally)
        return tally


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


def default_workers() -> int:
    """The CPUs this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def stream_pass(plan: DataPlan, make: Callable[[int], list], chunk_rows: int | None = None, workers: int | None = None,
                progress: Callable[[int], None] | None = None) -> list:
    """One pass over ``plan`` in chunks of ``chunk_rows`` rows (default: about
    :data:`CHUNK_ELEMENTS` elements per chunk), each chunk read once and given to every accumulator.

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
    rows = chunk_rows or grid_chunk_rows(max(CHUNK_ELEMENTS // max(info.num_classes, 1), 1), info.grid)
    spans = plan.ranges(rows)
    workers = max(1, min(workers or default_workers(), len(spans)))

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


def stream_tally(plan: DataPlan, settings: LossSettings, chunk_rows: int | None = None, workers: int | None = None, progress: Callable[[int], None] | None = None,
                 class_counts: np.ndarray | None = None) -> Tally:
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
        extra = [families.FamilyTally(settings, family, info.num_classes, softmax_counts)] if softmax_families else []
        if counts_elsewhere:  # only a slow softmax loss: the softmax counts are kept by a FamilyTally of no family
            extra.append(families.FamilyTally(settings, families.FamilySetup({}, None, None), info.num_classes, True))
        if slow:
            extra.append(GenericTally(settings, slow, info.num_classes, class_counts))
        return [StreamTally(core, info.num_classes, len(info.files), rows, family.params if family else None, info.grid), *extra]

    if slow and "torch" in sys.modules:
        workers = 1  # torch's thread pools do not survive fork: a forked worker's autograd can hang
    total, *extra = stream_pass(plan, make, chunk_rows, workers, progress)
    tally = total.finish(plan)
    for accumulator in extra:
        accumulator.finish(tally)
    return tally
