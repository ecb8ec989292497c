"""One streaming pass over the data that produces the same :class:`~lossaudit.compare.engine.Tally`
as the full-tensor engine, in bounded memory.

Every number ``compare`` prints is a sum over elements grouped by class, positive/negative,
difficulty bin and level, so each chunk of rows adds its element losses into small float64 tables
keyed by (class, positive, difficulty interval). The difficulty intervals merge the edges of the
difficulty bins, the GHM bins and the levels, so one ``bucketize`` places an element in all three.

Per chunk:

- elements whose target is 0 (in detection dumps, all but about one in a thousand) go through a
  dense pass with the losses specialised to y = 0: ``bce = softplus(x)``, ``g = p = sigmoid(x)``,
  ``focal = (1 - alpha) p^gamma bce``, CenterNet's ``-log(1 - p) p^2``;
- elements with a non-zero target go through the reference functions of :mod:`lossaudit.losses`;
- softmax losses are computed on the rows that have a target, with
  :func:`lossaudit.losses.softmax_focal_terms`.

GHM-C keeps the BCE sums per GHM bin, so its weights (which depend on the bin counts of the whole
data) are applied at the end: the loss is ``Σ_bins w_b × Σ BCE in bin b``. Hard-negative mining
keeps one loss per row; at the end the kept rows are read again and tallied.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import torch
import torch.nn.functional as F

from lossaudit import losses
from lossaudit.compare.engine import (
    LEVEL_EDGES,
    FILE_COUNTS,
    LEVELS,
    SOFTMAX_LOSSES,
    LossSettings,
    Tally,
)
from lossaudit.dataset import Chunk, DataPlan

CHUNK_ELEMENTS = 1 << 18
"""Elements per chunk (rows × classes): small enough for the intermediates to stay in cache."""


class DifficultyIndex:
    """Places a gradient norm g in its interval of the merged edges (difficulty bins, GHM bins and
    levels) with one ``bucketize``; the tables are kept per interval, and :meth:`to_cells` maps them
    to (difficulty bin, level, GHM bin) once, at the end. Every interval lies inside one bin of each
    edge set, so its left end decides them all."""

    def __init__(self, bins: int, ghm_bins: int):
        difficulty = losses.ghm_bin_edges(bins)[1:-1]
        ghm = losses.ghm_bin_edges(ghm_bins)[1:-1]
        levels = torch.tensor(LEVEL_EDGES, dtype=torch.float32)
        self.edges = torch.unique(torch.cat([difficulty, ghm, levels]))
        self.intervals = len(self.edges) + 1
        left = torch.cat([torch.zeros(1), self.edges])
        self.bins, self.ghm_bins = bins, ghm_bins
        bin_of = torch.bucketize(left, difficulty, right=True)
        level_of = torch.bucketize(left, levels, right=True)
        ghm_bin_of = torch.bucketize(left, ghm, right=True)
        self.cell_of = (bin_of * len(LEVELS) + level_of) * ghm_bins + ghm_bin_of

    def keys(self, g: torch.Tensor, classes: torch.Tensor, positive: torch.Tensor) -> torch.Tensor:
        """Flat int32 keys into ``(C, 2, intervals)`` for gradient norms ``g``."""
        interval = torch.bucketize(g.contiguous(), self.edges, right=True, out_int32=True)
        return interval.add_(((classes * 2 + positive.to(torch.int32)) * self.intervals).to(torch.int32))

    def to_cells(self, table: torch.Tensor) -> torch.Tensor:
        """``(C, 2, intervals)`` sums -> ``(C, 2, bins, LEVELS, ghm_bins)``."""
        cells = torch.zeros(*table.shape[:2], self.bins * len(LEVELS) * self.ghm_bins, dtype=table.dtype)
        cells.index_add_(2, self.cell_of, table)
        return cells.reshape(*table.shape[:2], self.bins, len(LEVELS), self.ghm_bins)


class StreamTally:
    """Accumulates a :class:`Tally` chunk by chunk (see the module docstring)."""

    def __init__(self, settings: LossSettings, num_classes: int, num_files: int = 1):
        self.settings, self.num_classes = settings, num_classes
        self.index = DifficultyIndex(settings.bins, settings.ghm_bins)
        self.size = num_classes * 2 * self.index.intervals
        self.trash = self.size  # key of the elements a pass leaves out
        self.sums = {loss: torch.zeros(self.size, dtype=torch.float64) for loss in settings.losses if loss != "ohem"}
        self.counts = torch.zeros(self.size, dtype=torch.float64)
        self.softmax_counts = torch.zeros(self.size, dtype=torch.float64)
        self.file_counts = {name: torch.zeros(num_files, dtype=torch.float64) for name in FILE_COUNTS}
        self.sum_p_positive = torch.zeros(num_classes, dtype=torch.float64)
        self.sum_q_positive = torch.zeros(num_classes, dtype=torch.float64)
        self.softmax_positives = torch.zeros(num_classes, dtype=torch.float64)
        self.ignored = torch.zeros(num_classes, dtype=torch.float64)
        self.nonfinite = torch.zeros(num_classes, dtype=torch.float64)
        self.rows = 0
        self.background_rows = 0
        self.multi_hot_rows = 0
        self.softmax_rows = 0
        self.peaks = 0
        self.row_losses: list[tuple[int, torch.Tensor, torch.Tensor]] = []  # (first row, losses, has a positive)
        alpha = settings.alpha_per_class
        self.alpha = torch.tensor(alpha, dtype=torch.float32) if alpha is not None else None
        self.negative_weight = (1 - self.alpha) if self.alpha is not None else (1 - settings.alpha if settings.alpha >= 0 else 1.0)
        self.class_ids = torch.arange(num_classes)

    def _bincount(self, keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """Float64 sums of ``values`` by key (the trash key dropped)."""
        return torch.bincount(keys, weights=values.double(), minlength=self.size + 1)[: self.size]

    def _add(self, loss: str, keys: torch.Tensor, values: torch.Tensor) -> None:
        self.sums[loss] += self._bincount(keys, values)

    def _add_bce(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        """bce and GHM-C share one sum: GHM's bin weights are applied at the end."""
        sums = self._bincount(keys, values)
        for loss in ("bce", "ghm"):
            if loss in self.sums:
                self.sums[loss] += sums

    def add(self, chunk: Chunk, file: int = 0) -> None:
        """Tally one chunk of rows, all from the dump file of index ``file``."""
        settings, requested = self.settings, self.settings.losses
        x, y = chunk.logits, chunk.targets
        rows, classes = x.shape
        self.rows += rows
        dropped = chunk.dropped_rows
        dropped_rows = dropped.nonzero().squeeze(1)
        invalid = chunk.element_invalid  # (n, C) or None
        ignored_rows = int(chunk.ignored_rows.sum())
        if chunk.element_ignored is not None:
            self.ignored += chunk.ignored.sum(dim=0).double()
        elif ignored_rows:
            self.ignored += ignored_rows
        if chunk.nonfinite is not None:
            nonfinite = (chunk.nonfinite & ~chunk.ignored).sum(dim=0).double()
            self.nonfinite += nonfinite
            self.file_counts["nonfinite"][file] += nonfinite.sum()
            x = x.masked_fill(chunk.nonfinite, 0.0)
        out_of_range = chunk.out_of_range & ~chunk.ignored_rows
        if invalid is not None:
            out_of_range &= ~invalid.all(dim=1)
        self.file_counts["out_of_range_rows"][file] += int(out_of_range.sum())
        # The non-zero targets that count (sparse coordinates).
        row_index, class_index = chunk.target_rows, chunk.target_cols
        keep = ~dropped[row_index]
        if invalid is not None:
            keep &= ~invalid[row_index, class_index]
        row_index, class_index = row_index[keep], class_index[keep]

        # Dense pass over every element as if its target were 0; the others go to the trash key.
        p = torch.sigmoid(x)
        keys = self.index.keys(p, self.class_ids, torch.zeros((), dtype=torch.bool))
        if invalid is not None:
            keys.masked_fill_(invalid, self.trash)
        keys[dropped_rows] = self.trash
        keys[chunk.target_rows, chunk.target_cols] = self.trash
        keys = keys.reshape(-1)
        self.counts += torch.bincount(keys, minlength=self.size + 1)[: self.size].double()
        bce = F.softplus(x) if {"bce", "ghm", "focal", "ohem"} & set(requested) else None
        if "bce" in requested or "ghm" in requested:
            self._add_bce(keys, bce.reshape(-1))
        if "focal" in requested:
            focal = p.pow(settings.gamma).mul_(bce).mul_(self.negative_weight)
            self._add("focal", keys, focal.reshape(-1))
        if "centernet" in requested:
            clamp = losses.CENTERNET_PROB_CLAMP
            clamped = p.clamp(clamp, 1 - clamp)
            self._add("centernet", keys, (-torch.log1p(-clamped) * clamped * clamped).reshape(-1))

        # The non-zero targets, through the reference functions.
        x_nz, y_nz = x[row_index, class_index], y[row_index, class_index]
        positive_nz = y_nz.eq(1) if chunk.heatmap else y_nz.ge(0.5)
        p_nz = torch.sigmoid(x_nz)
        keys_nz = self.index.keys((p_nz - y_nz).abs(), class_index, positive_nz)
        self.counts += torch.bincount(keys_nz, minlength=self.size)[: self.size].double()
        self.sum_p_positive += torch.bincount(class_index[positive_nz], weights=p_nz[positive_nz].double(), minlength=classes)
        bce_nz = losses.bce(x_nz, y_nz, reduction="none")
        if "bce" in requested or "ghm" in requested:
            self._add_bce(keys_nz, bce_nz)
        if "focal" in requested:
            alpha = self.alpha[class_index] if self.alpha is not None else settings.alpha
            self._add("focal", keys_nz, losses.focal(x_nz, y_nz, alpha=alpha, gamma=settings.gamma))
        if "centernet" in requested:
            clamp = losses.CENTERNET_PROB_CLAMP
            self._add("centernet", keys_nz, losses.centernet(p_nz.clamp(clamp, 1 - clamp), y_nz, reduction="none"))
            self.peaks += int((y_nz == 1).sum())

        # Rows: background rows, softmax losses, hard-negative mining.
        row_valid = ~dropped if invalid is None else ~dropped & ~invalid.any(dim=1)
        has_target = torch.zeros(rows, dtype=torch.bool)
        has_target[chunk.target_rows] = True
        background = int((row_valid & ~has_target).sum())
        multi_hot = int((row_valid & (torch.bincount(row_index[positive_nz], minlength=rows) > 1)).sum())
        self.background_rows += background
        self.multi_hot_rows += multi_hot
        self.file_counts["background_rows"][file] += background
        self.file_counts["multi_hot_rows"][file] += multi_hot
        softmax_rows = (row_valid & has_target).nonzero().squeeze(1)
        self.softmax_rows += len(softmax_rows)
        if any(loss in requested for loss in SOFTMAX_LOSSES) and len(softmax_rows):
            targets = y[softmax_rows]
            self._add_softmax(x[softmax_rows], targets, targets.eq(1) if chunk.heatmap else targets.ge(0.5))
        if "ohem" in requested:
            zero_bce = bce.double()
            zero_bce[chunk.target_rows, chunk.target_cols] = 0
            if invalid is not None:
                zero_bce.masked_fill_(invalid, 0)
            zero_bce[dropped_rows] = 0
            has_positive = torch.zeros(rows, dtype=torch.bool)
            has_positive[row_index[positive_nz]] = True
            self.row_losses.append((chunk.start, zero_bce.sum(dim=1).index_add_(0, row_index, bce_nz.double()), has_positive))

    def _add_softmax(self, x: torch.Tensor, y: torch.Tensor, positive: torch.Tensor) -> None:
        where = (y != 0).nonzero()
        row_index, class_index = where[:, 0], where[:, 1]
        q = torch.softmax(x, dim=1)[row_index, class_index]
        keys = self.index.keys(1 - q, class_index, positive[row_index, class_index])
        self.softmax_counts += torch.bincount(keys, minlength=self.size)[: self.size].double()
        for loss in SOFTMAX_LOSSES:
            if loss in self.settings.losses:
                gamma = 0.0 if loss == "ce" else self.settings.gamma
                alpha = None if loss == "ce" else self.alpha
                terms = losses.softmax_focal_terms(x, y, gamma=gamma, alpha=alpha)[row_index, class_index]
                self._add(loss, keys, terms)
        is_positive = positive[row_index, class_index]
        self.sum_q_positive += torch.bincount(class_index[is_positive], weights=q[is_positive].double(), minlength=self.num_classes)
        self.softmax_positives += torch.bincount(class_index[is_positive], minlength=self.num_classes).double()

    def _ohem(self, plan: DataPlan) -> torch.Tensor:
        """Hard-negative mining: select rows from the per-row losses, read them again, tally them."""
        ordered = sorted(self.row_losses, key=lambda item: item[0])
        row_losses, positive_rows = torch.cat([item[1] for item in ordered]), torch.cat([item[2] for item in ordered])
        keep = losses.ohem_row_selection(row_losses, positive_rows, self.settings.ohem_ratio).nonzero().squeeze(1)
        sums = torch.zeros(self.size, dtype=torch.float64)
        if len(keep):
            chunk = plan.read_rows(keep.numpy())
            x = torch.where(chunk.valid, chunk.logits, torch.zeros_like(chunk.logits))  # a handful of rows: the general path
            g = (torch.sigmoid(x) - chunk.targets).abs()
            keys = self.index.keys(g, self.class_ids, chunk.positive).masked_fill_(~chunk.valid, self.trash).reshape(-1)
            bce = losses.bce(x, chunk.targets, reduction="none").reshape(-1)
            sums = torch.bincount(keys, weights=bce.double(), minlength=self.size + 1)[: self.size]
        self._ohem_normaliser = float(max(int(positive_rows.sum()), 1))
        return sums

    def merge(self, other: StreamTally) -> None:
        """Add another accumulator's sums (of other chunks) to this one."""
        for loss, sums in other.sums.items():
            self.sums[loss] += sums
        for name in ("counts", "softmax_counts", "sum_p_positive", "sum_q_positive", "softmax_positives", "ignored", "nonfinite"):
            getattr(self, name).add_(getattr(other, name))
        for name, counts in other.file_counts.items():
            self.file_counts[name] += counts
        for name in ("rows", "background_rows", "multi_hot_rows", "softmax_rows", "peaks"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.row_losses.extend(other.row_losses)

    def finish(self, plan: DataPlan) -> Tally:
        """The tally of everything added; ``plan`` is read again for hard-negative mining."""
        settings = self.settings
        def cells(table: torch.Tensor) -> torch.Tensor:
            return self.index.to_cells(table.reshape(self.num_classes, 2, self.index.intervals))

        counts = cells(self.counts)
        valid_elements = float(counts.sum())
        sums, normalisers, names = {}, {}, {}
        for loss in settings.losses:
            if loss == "ohem":
                table = cells(self._ohem(plan))
                normalisers[loss], names[loss] = self._ohem_normaliser, "positive rows"
            elif loss == "ghm":
                state = losses.GHMState(bins=settings.ghm_bins, momentum=settings.ghm_momentum)
                weights = losses.ghm_bin_weights(counts.sum(dim=(0, 1, 2, 3)), max(valid_elements, 1.0), state)
                table = cells(self.sums[loss]) * weights
                normalisers[loss], names[loss] = max(valid_elements, 1.0), "valid elements"
            else:
                table = cells(self.sums[loss])
                if loss in SOFTMAX_LOSSES:
                    normalisers[loss], names[loss] = float(self.softmax_rows), "rows with a target"
                elif loss == "centernet":
                    normalisers[loss], names[loss] = float(max(self.peaks, 1)), "peaks" if self.peaks else "1 (no peaks)"
                else:
                    normalisers[loss], names[loss] = valid_elements, "valid elements"
            sums[loss] = table.sum(dim=-1).numpy()
        return Tally(
            loss_sums=sums,
            element_counts=counts.sum(dim=-1).numpy(),
            normalisers=normalisers,
            normaliser_names=names,
            sum_p_positive=self.sum_p_positive.numpy(),
            sum_q_positive=self.sum_q_positive.numpy(),
            softmax_positives=self.softmax_positives.numpy(),
            ignored=self.ignored.numpy(),
            nonfinite=self.nonfinite.numpy(),
            rows=self.rows,
            background_rows=self.background_rows,
            softmax_counts=cells(self.softmax_counts).sum(dim=-1).numpy(),
            multi_hot_rows=self.multi_hot_rows,
            file_counts={name: counts.numpy() for name, counts in self.file_counts.items()},
        )


def keep_freed_memory() -> None:
    """Ask glibc to keep freed chunk buffers for reuse instead of returning each to the system and
    page-faulting it in again for the next chunk (that costs about as much as the arithmetic).
    Without glibc this does nothing."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    libc.mallopt(M_TRIM_THRESHOLD, 1 << 29)
    libc.mallopt(M_MMAP_THRESHOLD, 1 << 26)


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
"""glibc's mallopt parameters: keep up to 512 MiB free at the heap top; allocate below 64 MiB from the heap."""


def stream_tally(plan: DataPlan, settings: LossSettings, chunk_rows: int | None = None, workers: int | None = None, progress: Callable[[int], None] | None = None) -> Tally:
    """One pass over ``plan`` in chunks of ``chunk_rows`` rows (default: about
    :data:`CHUNK_ELEMENTS` elements per chunk).

    ``workers`` threads (default: torch's intra-op thread count) each tally every ``workers``-th
    chunk with one intra-op thread: bincount and the key gathers are serial, so chunks in parallel
    use the cores better than ops in parallel. The split is static and the merge ordered, so a
    given worker count always gives the same sums. ``progress`` is called with the row count of
    each chunk tallied (from the worker threads).
    """
    keep_freed_memory()
    info = plan.info
    rows = chunk_rows or max(CHUNK_ELEMENTS // max(info.num_classes, 1), 1)
    spans = plan.ranges(rows)
    workers = max(1, min(workers or torch.get_num_threads(), len(spans)))

    def work(first: int) -> StreamTally:
        accumulator = StreamTally(settings, info.num_classes, len(info.files))
        for span in spans[first::workers]:
            chunk = plan.decode(span)
            accumulator.add(chunk, file=span[0])
            if progress is not None:
                progress(span[2] - span[1])
        return accumulator

    if workers == 1:
        accumulators = [work(0)]
    else:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with ThreadPoolExecutor(workers) as pool:
                accumulators = list(pool.map(work, range(workers)))
        finally:
            torch.set_num_threads(threads)
    plan.finish_pass()
    total = accumulators[0]
    for accumulator in accumulators[1:]:
        total.merge(accumulator)
    return total.finish(plan)
