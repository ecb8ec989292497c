"""Reading checked batches in row chunks: :class:`DataPlan` (what :func:`~lossaudit.io.dataset.planning.plan`
returns) and its per-thread readers, which share one memory mapping per file and give back the
pages of each chunk once read."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from lossaudit.errors import InputError
from lossaudit.io.dataset.chunk import Chunk, concatenate
from lossaudit.io.dataset.decode import (
    apply_mask,
    decode_targets,
    finite_range,
    probabilities_to_logits,
    rows_sum_to_one,
)
from lossaudit.io.dataset.info import DataInfo
from lossaudit.io.dataset.options import LoadOptions
from lossaudit.io.dataset.rows import SCAN_ROWS, RowArray
from lossaudit.io.dataset.weights import Weighting, chunk_weights
from lossaudit.io.readers import ArrayFile, release_pages


@dataclass
class Source:
    """One batch of the plan: its arrays as rows, and where its rows start globally."""

    batch: ArrayFile
    logits: RowArray
    targets: RowArray
    mask: RowArray | None
    rows: int
    start: int
    weighting: Weighting | None = None
    """Its sampling weights and padding (:mod:`~lossaudit.io.dataset.weights`), or None."""
    target_sums: np.ndarray | None = None
    """``(C,)`` float64 sums of its per-class targets' columns, when the plan's scan found them
    all 0 or 1 (:func:`~lossaudit.io.dataset.checks.scan_targets`), or None."""

    def extra_rows(self) -> tuple[RowArray | None, RowArray | None, RowArray | None]:
        """The mask, weights and padding as rows (None where absent)."""
        weighting = self.weighting
        return self.mask, weighting.weights if weighting else None, weighting.padding if weighting else None


class _Reader:
    """Reads the chunks of one worker (a context manager: leaving it lets go of its batch).

    Fetching (mapping) an array costs a file open and a header parse, so a reader holds the arrays
    of the batch it reads until it moves to another batch. Readers on the same batch share one
    mapping (:meth:`DataPlan._views`): two mappings of one file would each count the pages read
    through them in the process's resident memory. So at most one batch per reader is mapped,
    however many files there are."""

    def __init__(self, plan: DataPlan):
        self.plan = plan
        self.index: int | None = None
        self.views: tuple[Any, ...] | None = None  # logits, targets, mask, weights, padding (RowArray.view's)
        self.read: list[np.ndarray] = []  # the file views of the last chunk, released at the next

    def __enter__(self) -> _Reader:
        return self

    def __exit__(self, *exc) -> None:
        self._release_read()
        self._move_to(None)

    def _release_read(self) -> None:
        """Give back the mapped pages of the last chunk read (:func:`~lossaudit.io.readers.release_pages`):
        a reader holds one chunk's pages resident, not every page of its files it has read."""
        for view in self.read:
            release_pages(view)
        self.read = []

    def _move_to(self, index: int | None) -> None:
        if self.index is not None:
            self.plan._release(self.index)
        self.index, self.views = index, self.plan._views(index) if index is not None else None

    def decode(self, span: tuple[int, int, int], out: np.ndarray | None = None, check_finite: bool = True) -> Chunk:
        """The chunk of one row range of :meth:`DataPlan.ranges`. Its logits are a read-only view
        of the file's float32 rows, or converted into ``out[:n]`` (an ``(m >= n, C)`` float32 buffer)
        when given. With ``check_finite`` False, a pass over the logits is saved and
        ``Chunk.nonfinite`` may be None with non-finite logits present: the caller must set it."""
        index, start, stop = span
        source = self.plan.sources[index]
        if index != self.index:
            self._move_to(index)
        self._release_read()
        assert self.views is not None  # _move_to fetched them
        logits_view, targets_view, *extra_views = self.views
        x = source.logits.float32_span(start, stop, logits_view, out)
        extra_rows = source.extra_rows()
        mask, weights, padding = (rows.span(start, stop, view) if rows is not None else None for rows, view in zip(extra_rows, extra_views))
        self.read = [
            part
            for rows, view in zip((source.logits, source.targets, *extra_rows), self.views)
            if rows is not None
            for part in rows.span_views(start, stop, view)
        ]
        return self.plan._decode(
            source, x, source.targets.span(start, stop, targets_view), mask, source.start + start, check_finite=check_finite, weights=weights, padding=padding
        )


class DataPlan:
    """Checked batches ready to be read in row chunks; ``info`` describes them.

    :meth:`ranges` and :meth:`decode` let several threads read disjoint chunks; the statistics that
    ``info`` gathers on the way are updated under a lock, and :meth:`finish_pass` settles them.
    Readers in forked processes gather their own: :meth:`pass_state` and :meth:`absorb_pass_state`
    bring them back.
    """

    def __init__(self, info: DataInfo, sources: list[Source], options: LoadOptions):
        self.info, self.sources, self.options = info, sources, options
        self._lock = threading.Lock()
        self._mapped: dict[int, list] = {}  # batch index -> [its views, readers holding them]
        self._start_pass()

    def _views(self, index: int) -> tuple[Any, ...]:
        """The (logits, targets, mask, weights, padding) views of batch ``index`` (None where
        absent), mapped once for all the readers that hold it; each call is matched by one
        :meth:`_release`."""
        with self._lock:
            entry = self._mapped.get(index)
            if entry is None:
                source = self.sources[index]
                views = (source.logits.view(), source.targets.view(), *(rows.view() if rows is not None else None for rows in source.extra_rows()))
                entry = self._mapped[index] = [views, 0]
            entry[1] += 1
            return entry[0]

    def _release(self, index: int) -> None:
        with self._lock:
            entry = self._mapped[index]
            entry[1] -= 1
            if not entry[1]:
                del self._mapped[index]

    def _start_pass(self) -> None:
        self.info.out_of_range_labels = {}
        self._unit_interval = True  # every finite logit so far lies in [0, 1]
        self._sum_to_one = True  # ... and every such row sums to 1 (softmax probabilities)
        self._any_finite = False

    def pass_state(self) -> tuple[dict[int, int], bool, bool, bool]:
        """What this pass has gathered so far for ``info`` (for :meth:`absorb_pass_state`)."""
        with self._lock:
            return dict(self.info.out_of_range_labels), self._unit_interval, self._any_finite, self._sum_to_one

    def absorb_pass_state(self, state: tuple[dict[int, int], bool, bool, bool]) -> None:
        """Add the :meth:`pass_state` of another process's reads of this plan (other chunks of
        the same pass) to this one's."""
        labels, unit_interval, any_finite, sum_to_one = state
        with self._lock:
            for value, number in labels.items():
                self.info.out_of_range_labels[value] = self.info.out_of_range_labels.get(value, 0) + number
            self._unit_interval &= unit_interval
            self._any_finite |= any_finite
            self._sum_to_one &= sum_to_one

    def ranges(self, rows: int | None = None) -> list[tuple[int, int, int]]:
        """``(source, start, stop)`` row ranges of at most ``rows`` rows (None: one per batch), in
        order, and starts a pass: the statistics of ``info`` are reset."""
        self._start_pass()
        spans: list[tuple[int, int, int]] = []
        for index, source in enumerate(self.sources):
            step = rows or max(source.rows, 1)
            spans.extend((index, start, min(start + step, source.rows)) for start in range(0, source.rows, step))
        return spans

    def reader(self) -> _Reader:
        """A reader of chunks for one thread, to use in a ``with`` block (see :class:`_Reader`);
        readers of disjoint spans can run in parallel."""
        return _Reader(self)

    def decode(self, span: tuple[int, int, int]) -> Chunk:
        """The chunk of one row range of :meth:`ranges`."""
        with self.reader() as reader:
            return reader.decode(span)

    def finish_pass(self) -> None:
        """Settle ``info.out_of_range_labels``, ``info.inputs_look_like_probabilities`` and
        ``info.probabilities_kind``."""
        self.info.out_of_range_labels = dict(sorted(self.info.out_of_range_labels.items()))
        looks = self.info.inputs == "logits" and self._unit_interval and self._any_finite
        self.info.inputs_look_like_probabilities = looks
        self.info.probabilities_kind = ("softmax-probs" if self._sum_to_one else "sigmoid-probs") if looks else None

    def class_target_sums(self) -> np.ndarray:
        """``(C,)`` float64: each class's targets summed over every row as stored, before the ignore
        label (no class), a mask or a non-finite logit excludes anything — the rows labelled c for
        index targets, the sum of column c's values otherwise (hard targets: the positives). Reads
        the targets once more (not the logits), but for unweighted 0/1 targets, which the plan's
        scan summed. Weighted dumps: each target times its element's weight (a Horvitz–Thompson
        estimate; the weights are read too)."""
        sums = np.zeros(self.info.num_classes)
        for source in self.sources:
            weights = source.weighting.weights if source.weighting is not None else None
            if weights is None and source.target_sums is not None:
                sums += source.target_sums
                continue
            scans = weights.scan(source.rows, SCAN_ROWS) if weights is not None else None
            for values in source.targets.scan(source.rows, SCAN_ROWS):
                w = _weights_for_sums(next(scans)) if scans is not None else None
                if self.info.encoding == "index":
                    labels = np.asarray(values, dtype=np.int64)
                    labels = labels - self.info.label_base if self.info.label_base else labels
                    kept = labels.view(np.uint64) < len(sums)  # one test: a negative label wraps above every class
                    if w is not None:
                        w = w[kept] if w.ndim == 1 else w[np.flatnonzero(kept), labels[kept]]
                    sums += np.bincount(labels[kept], weights=w, minlength=len(sums))
                else:
                    sums += np.add.reduce(values if w is None else values * (w[:, None] if w.ndim == 1 else w), axis=0, dtype=np.float64)
        return sums

    def chunks(self, rows: int | None = None) -> Iterator[Chunk]:
        """Decoded chunks of at most ``rows`` rows (None: one chunk per batch), in order."""
        for span in self.ranges(rows):
            yield self.decode(span)
        self.finish_pass()

    def read_rows(self, rows: np.ndarray) -> Chunk:
        """The rows at the sorted global indices ``rows``, decoded as one chunk (``start`` is -1)."""
        parts = []
        for source in self.sources:
            local = rows[(rows >= source.start) & (rows < source.start + source.rows)] - source.start
            if len(local):
                mask, weights, padding = (rows.pick(local) if rows is not None else None for rows in source.extra_rows())
                with np.errstate(over="ignore"):
                    logits = np.array(source.logits.pick(local), dtype=np.float32)
                parts.append(self._decode(source, logits, source.targets.pick(local), mask, -1, count=False, weights=weights, padding=padding))
        return concatenate(parts, start=-1)

    def _decode(
        self,
        source: Source,
        x: np.ndarray,
        targets: np.ndarray,
        mask: np.ndarray | None,
        start: int,
        count: bool = True,
        check_finite: bool = True,
        weights: np.ndarray | None = None,
        padding: np.ndarray | None = None,
    ) -> Chunk:
        """A chunk from its ``(n, C)`` float32 logits ``x`` (converted to a new array from
        probabilities with ``--inputs softmax-probs|sigmoid-probs``), its raw targets, mask, weights
        and padding. ``count``: add to the statistics of ``info`` (not when rows are read a second
        time); ``check_finite``: see :meth:`_Reader.decode`."""
        parts = decode_targets(targets, self.info)
        if count and parts.out_of_range.any():
            assert parts.labels is not None  # out of range: class ids
            self._count_labels(parts.labels[parts.out_of_range])
        ignored_rows, element_ignored = apply_mask(mask, parts.ignored_rows)
        nonfinite, x = self._logits(source, x, count, check_finite)
        chunk = Chunk(
            start,
            x,
            parts.rows,
            parts.cols,
            parts.values,
            ignored_rows,
            parts.out_of_range,
            element_ignored,
            nonfinite,
            heatmap=self.info.encoding == "heatmap",
        )
        if self.info.weighted:
            chunk.weights, chunk.padding = chunk_weights(weights, padding, x.shape)
        return chunk

    def _count_labels(self, labels: np.ndarray) -> None:
        """Add the out-of-range ``labels`` to ``info.out_of_range_labels``."""
        values, counts = np.unique(labels, return_counts=True)
        with self._lock:
            for value, number in zip(values.tolist(), counts.tolist()):
                self.info.out_of_range_labels[value] = self.info.out_of_range_labels.get(value, 0) + number

    def _logits(self, source: Source, x: np.ndarray, count: bool, check_finite: bool) -> tuple[np.ndarray | None, np.ndarray]:
        """(the non-finite mask of ``x`` or None, the logits): the range of the finite values is
        added to the pass's statistics (``count``), and probabilities are checked and converted."""
        probs = self.info.inputs != "logits"
        needed = probs or (count and self._unit_interval)
        nonfinite, low, high = finite_range(x, needed) if needed or check_finite else (None, None, None)
        if low is not None:
            assert high is not None  # finite_range gives both or neither
            if count:
                unit = bool(low >= 0) and bool(high <= 1)
                sum_to_one = unit and not probs and self._sum_to_one and rows_sum_to_one(x, nonfinite)
                with self._lock:
                    self._any_finite = True
                    self._unit_interval &= unit
                    self._sum_to_one &= sum_to_one
            if probs and (low < 0 or high > 1):
                raise InputError(
                    f"{source.batch.source}: key '{self.info.logits_key}' has values outside [0, 1] ({float(low):.3g} to {float(high):.3g}); --inputs {self.info.inputs} needs probabilities"
                )
        return nonfinite, probabilities_to_logits(x, self.info.inputs) if probs else x


def _weights_for_sums(weights: np.ndarray) -> np.ndarray:
    """Raw weights as float32 where that holds them exactly (float16, as the Recorder stores them,
    and small integers), else float64: the products summed in float64 by the caller."""
    exact = weights.dtype == np.float16 or (weights.dtype.kind in "iub" and weights.dtype.itemsize <= 2)
    return np.asarray(weights, dtype=np.float32 if exact else np.float64)
