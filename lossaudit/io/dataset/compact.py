"""A weighted sample's kept elements of the rows without a target, stored compactly and read as
pseudo-rows.

A batch may hold, beside its stored rows (``logits``, ``targets``, ``weights``, ``padding``: the
rows with a target, kept whole), the three keys of :data:`~lossaudit.io.dataset.options.NEGATIVES_KEYS`:

- ``negatives_logits`` ``(K,)`` floats and ``negatives_weights`` ``(K,)`` sampling weights (finite,
  >= 1): the kept elements of the rows without any target, grouped by class (class 0's first, then
  class 1's, ...); their targets are 0;
- ``negatives_per_class`` ``(C,)`` integers: how many of the K elements each class holds.

The batch is read as its stored rows followed by ``M = max(negatives_per_class)`` pseudo-rows: in
pseudo-rows ``[a, b)``, column c holds class c's elements ``[a, min(b, n_c))`` (a contiguous slice of
the arrays), target 0, and padding where the class has run out. :class:`PseudoRows` presents a key
as these rows with the interface of :class:`~lossaudit.io.dataset.rows.Rows`, built per span read,
never for the whole batch; the 1-D arrays are memory-mapped where the file allows it.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from lossaudit.errors import InputError
from lossaudit.io.dataset.options import MASK_KEY, NEGATIVES_KEYS, WEIGHTS_KEY
from lossaudit.io.dataset.rows import SCAN_ROWS, RowArray
from lossaudit.io.dataset.weights import Weighting, bad_weights, not_weights
from lossaudit.io.readers import ArrayFile, release_pages

LOGITS, WEIGHTS, PER_CLASS = NEGATIVES_KEYS
SCAN_ELEMENTS = SCAN_ROWS * 16
"""Elements per read when ``negatives_weights`` is checked."""


class Negatives:
    """The class-sorted elements of one batch: ``counts`` ``(C,)`` int64 per class, ``offsets``
    where each class's elements start, ``height`` the pseudo-rows they fill."""

    def __init__(self, batch: ArrayFile, counts: np.ndarray):
        self.batch, self.counts = batch, counts
        self.offsets = np.cumsum(counts) - counts
        self.height = int(counts.max(initial=0))
        self.elements = int(counts.sum())

    def padding(self, rows: np.ndarray) -> np.ndarray:
        """``(n, C)`` bool: True where the class has run out in the pseudo-rows ``rows``."""
        return rows[:, None] >= self.counts[None, :]

    def columns(self, values: np.ndarray | None, start: int, stop: int, fill: object, dtype: np.dtype) -> np.ndarray:
        """Pseudo-rows ``start .. stop`` as ``(n, C)`` of ``dtype``: column c holds ``values[offset_c + start :
        offset_c + min(stop, n_c)]``, ``fill`` below (everywhere when ``values`` is None)."""
        out = np.full((stop - start, len(self.counts)), fill, dtype=dtype)
        if values is None:
            return out
        for c in np.flatnonzero(self.counts > start):
            end = min(stop, int(self.counts[c]))
            out[: end - start, c] = values[self.offsets[c] + start : self.offsets[c] + end]
        return out

    def pick(self, values: np.ndarray | None, rows: np.ndarray, fill: object, dtype: np.dtype) -> np.ndarray:
        """The pseudo-rows at the indices ``rows`` (as :meth:`columns`)."""
        present = ~self.padding(rows)
        out = np.full(present.shape, fill, dtype=dtype)
        if values is not None:
            out[present] = values[(self.offsets[None, :] + rows[:, None])[present]]
        return out


class PseudoRows:
    """One key of a batch with :class:`Negatives` as rows: its stored rows (``stored``, a
    :class:`~lossaudit.io.dataset.rows.Rows`, or None: every stored value is ``fill``), then the
    pseudo-rows from the 1-D array ``key`` (None: ``fill``; the padding, ``padding`` True: where a
    class has run out). Every span is ``(n, C)``, but with ``per_row`` (a row mask): ``(n,)``,
    ``fill`` for the pseudo-rows.

    ``view()`` returns the pair (stored view, 1-D array) that the other methods take back."""

    def __init__(
        self,
        stored: RowArray | None,
        stored_rows: int,
        negatives: Negatives,
        key: str | None,
        fill: object,
        dtype: np.dtype,
        padding: bool = False,
        per_row: bool = False,
    ):
        self.stored, self.stored_rows, self.negatives = stored, stored_rows, negatives
        self.key, self.fill, self.dtype, self.padding, self.per_row = key, fill, np.dtype(dtype), padding, per_row
        self.axis = None if per_row else 1
        self.width = len(negatives.counts)

    def view(self) -> tuple[np.ndarray | None, np.ndarray | None]:
        """(the stored rows' view or None, the 1-D array or None), fetched from the file."""
        return (self.stored.view() if self.stored is not None else None, self.negatives.batch.get(self.key) if self.key is not None else None)

    def span(self, start: int, stop: int, view: tuple | None = None) -> np.ndarray:
        """Rows ``start .. stop`` as ``(n, C)`` of the key's dtype (stored rows and pseudo-rows together)."""
        stored_view, values = self.view() if view is None else view
        split = min(max(start, self.stored_rows), stop)
        parts = []
        if split > start:
            parts.append(self._stored(self.stored.span(start, split, stored_view) if self.stored is not None else None, split - start))
        if stop > split:
            parts.append(self._pseudo(values, np.arange(split, stop) - self.stored_rows))
        return np.concatenate(parts) if len(parts) > 1 else parts[0] if parts else self._pseudo(values, np.arange(0))

    def span_views(self, start: int, stop: int, view: tuple) -> list[np.ndarray]:
        """The file views a :meth:`span` reads (for :func:`~lossaudit.io.readers.release_pages`)."""
        stored_view, values = view
        split = min(max(start, self.stored_rows), stop)
        views = self.stored.span_views(start, split, stored_view) if self.stored is not None and split > start else []
        if values is not None and stop > split:
            offsets, counts = self.negatives.offsets, self.negatives.counts
            first, last = split - self.stored_rows, stop - self.stored_rows
            views.extend(values[offsets[c] + first : offsets[c] + min(last, int(counts[c]))] for c in np.flatnonzero(counts > first))
        return views

    def scan(self, count: int, rows: int) -> Iterator[np.ndarray]:
        """As :meth:`Rows.scan <lossaudit.io.dataset.rows.Rows.scan>`."""
        view = self.view()
        for start in range(0, count, rows):
            stop = min(start + rows, count)
            yield self.span(start, stop, view)
            for part in self.span_views(start, stop, view):
                release_pages(part)

    def float32_span(self, start: int, stop: int, view: tuple, out: np.ndarray | None = None) -> np.ndarray:
        """Rows ``start .. stop`` as ``(n, C)`` float32, into ``out[:n]`` when given."""
        x = self.span(start, stop, view)
        if x.dtype == np.float32 and out is None:
            return x
        return _float32(x, out[: stop - start] if out is not None else np.empty(x.shape, dtype=np.float32))

    def pick(self, rows: np.ndarray) -> np.ndarray:
        """The rows at the sorted indices ``rows``."""
        stored_view, values = self.view()
        split = int(np.searchsorted(rows, self.stored_rows))
        parts = [
            self._stored(self.stored.pick(rows[:split]) if self.stored is not None else None, split),
            self._pseudo(values, rows[split:] - self.stored_rows),
        ]
        return np.concatenate(parts)

    def _pseudo(self, values: np.ndarray | None, rows: np.ndarray) -> np.ndarray:
        """The pseudo-rows ``rows`` (sorted indices; a contiguous range is read as slices)."""
        if self.per_row:
            return np.full(len(rows), self.fill, dtype=self.dtype)
        if self.padding:
            return self.negatives.padding(rows)
        if len(rows) and rows[-1] - rows[0] == len(rows) - 1:
            return self.negatives.columns(values, int(rows[0]), int(rows[-1]) + 1, self.fill, self.dtype)
        return self.negatives.pick(values, rows, self.fill, self.dtype)

    def _stored(self, values: np.ndarray | None, rows: int) -> np.ndarray:
        """Stored rows as ``(rows, C)`` (``per_row``: ``(rows,)``): a per-row array broadcast, None: ``fill``."""
        if values is None:
            return np.full((rows,) if self.per_row else (rows, self.width), self.fill, dtype=self.dtype)
        return np.broadcast_to(values[:, None], (rows, self.width)) if values.ndim == 1 and not self.per_row else values


def _float32(x: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``x`` converted into ``out`` (float64 beyond float32's range becomes inf, as Rows converts)."""
    with np.errstate(over="ignore"):
        np.copyto(out, x, casting="unsafe")
    return out


def check_negatives(batch: ArrayFile, logits_shape: tuple[int, ...], axis: int, targets: RowArray) -> Negatives | None:
    """The batch's :class:`Negatives`, or None when it has none of :data:`NEGATIVES_KEYS`.

    Raises:
        InputError: a key of the three without the others, or without ``weights``; stored logits
            that are not ``(N, C)`` rows, or targets that are not per class (class ids would need
            a background label for the pseudo-rows); counts that are not ``(C,)`` non-negative
            integers summing to K; logits that are not ``(K,)`` floats, weights that are not
            ``(K,)`` real numbers, finite and >= 1. The message names the file and the key.
    """
    keys = batch.keys()
    present = [key for key in NEGATIVES_KEYS if key in keys]
    if not present:
        return None
    source = batch.source
    missing = [key for key in (*NEGATIVES_KEYS, WEIGHTS_KEY) if key not in keys]
    if missing:
        raise InputError(
            f"{source}: key '{present[0]}' without '{missing[0]}'; expected a weighted sample's negatives as the keys "
            f"{', '.join(NEGATIVES_KEYS)}, beside the stored rows' '{WEIGHTS_KEY}'"
        )
    if len(logits_shape) != 2 or axis != 1 or targets.axis is None:
        raise InputError(
            f"{source}: key '{LOGITS}' beside logits of shape {logits_shape} (class axis {axis}) and per-row targets; "
            "expected (N, C) stored rows with per-class targets"
        )
    classes = logits_shape[1]
    counts = batch.get(PER_CLASS)
    if not isinstance(counts, np.ndarray) or counts.dtype.kind not in "iu" or counts.shape != (classes,):
        kind = f"{counts.dtype} {counts.shape}" if isinstance(counts, np.ndarray) else type(counts).__name__
        raise InputError(f"{source}: key '{PER_CLASS}' is {kind}; expected ({classes},) integer counts of the negatives per class")
    counts = counts.astype(np.int64)
    if (counts < 0).any():
        first = int(np.flatnonzero(counts < 0)[0])
        raise InputError(f"{source}: key '{PER_CLASS}' is {int(counts[first])} at class {first}; expected counts >= 0")
    total = sum(counts.tolist())  # Python integers: counts near 2**63 do not wrap around
    for key, kinds, expected in ((LOGITS, "f", "floating-point logits"), (WEIGHTS, "iuf", "real numbers (floats or integers)")):
        array = batch.get(key)
        if not isinstance(array, np.ndarray) or array.dtype.kind not in kinds:
            found = array.dtype if isinstance(array, np.ndarray) else type(array).__name__
            raise InputError(f"{source}: key '{key}' has dtype {found}; expected {expected}")
        if array.shape != (total,):
            raise InputError(f"{source}: key '{key}' has shape {array.shape}; expected ({total},), one value per negative ('{PER_CLASS}' sums to {total})")
    _scan_weights(source, batch.get(WEIGHTS))
    return Negatives(batch, counts)


def _scan_weights(source: str, weights: np.ndarray) -> None:
    """Every value of ``negatives_weights`` finite and >= 1, read in chunks."""
    for start in range(0, len(weights), SCAN_ELEMENTS):
        values = np.asarray(weights[start : start + SCAN_ELEMENTS])
        bad = not_weights(values)
        release_pages(weights[start : start + SCAN_ELEMENTS])
        if bad.any():
            raise InputError(bad_weights(source, values, bad, start, WEIGHTS, "element"))


def with_negatives(
    negatives: Negatives,
    logits: RowArray,
    targets: RowArray,
    mask: RowArray | None,
    stored_rows: int,
    weighting: Weighting,
    logits_dtype: np.dtype,
    targets_dtype: np.dtype,
) -> tuple[PseudoRows, PseudoRows, PseudoRows | None, Weighting]:
    """The batch's logits, targets, mask (of the stored rows; the pseudo-rows are kept) and
    :class:`~lossaudit.io.dataset.weights.Weighting` (weights, padding, elements stored) with the
    pseudo-rows after the ``stored_rows`` stored rows."""
    batch = negatives.batch
    pseudo_mask = None if mask is None else PseudoRows(mask, stored_rows, negatives, None, 1, batch.get(MASK_KEY).dtype, per_row=mask.axis is None)
    logits_dtype = np.result_type(logits_dtype, batch.get(LOGITS).dtype)
    weights_dtype = np.result_type(batch.get(WEIGHTS_KEY).dtype, batch.get(WEIGHTS).dtype)
    weighting.weights = PseudoRows(weighting.weights, stored_rows, negatives, WEIGHTS, 1, weights_dtype)
    weighting.padding = PseudoRows(weighting.padding, stored_rows, negatives, None, False, np.dtype(bool), padding=True)
    weighting.sampled += negatives.elements
    return (
        PseudoRows(logits, stored_rows, negatives, LOGITS, 0, logits_dtype),
        PseudoRows(targets, stored_rows, negatives, None, 0, targets_dtype),
        pseudo_mask,
        weighting,
    )
