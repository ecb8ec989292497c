"""Weighted dumps: the keys of a weighted sample (``lossaudit.Recorder``, ``lossaudit sample``) and
their checks.

A batch may hold, besides its logits and targets:

- ``weights``: sampling weights ``w = 1 / (inclusion probability) >= 1``, finite, of any real dtype
  (floats or integers), one per row (the rows' shape: the logits without the class axis) or one
  per element (the logits' shape). Every sum ``compare`` makes is then a Horvitz–Thompson sum: each
  element counts ``w`` times.
- ``padding`` (only beside ``weights``): bool (or 0/1 integers) of the logits' shape, True where a
  position holds no element at all (the Recorder packs the sampled elements of many anchors into
  rows and pads the shorter columns). Padding counts nowhere, not even as ignored; its weight and
  logit are not read.
- scalars (0-d), summed over batches: ``population_rows`` and ``population_elements`` (the batch's
  rows and elements before sampling), ``sample_rate`` (the easy negatives' rate, -1 for a target
  size); and ``ignored``, ``(C,)`` integer counts of the masked elements the sampler dropped, per
  class.

The values are checked once, when the dumps are planned (:func:`check_weighting`, one read of the
weights and the padding in chunks); an unweighted batch reads none of these keys.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from lossaudit.errors import InputError
from lossaudit.io.dataset.options import (
    PADDING_KEY,
    POPULATION_KEYS,
    RECORDED_IGNORED_KEY,
    SAMPLE_RATE_KEY,
    WEIGHTS_KEY,
)
from lossaudit.io.dataset.rows import SCAN_ROWS, RowArray, Rows, rows_for, without_axis
from lossaudit.io.readers import ArrayFile

EXPECTED = "expected sampling weights 1/probability >= 1"


@dataclass
class Weighting:
    """One batch's sampling keys, checked.

    Attributes:
        weights: the weights as rows (``axis`` None: one per row), or None: the batch weighs 1.
        padding: the padding as ``(n, C)`` rows, or None.
        sampled: elements stored, padding excluded.
        scalars: ``population_rows``, ``population_elements``, ``sample_rate`` where the batch has them.
        ignored: ``(C,)`` int64 masked elements the sampler dropped, or None.
    """

    weights: RowArray | None
    padding: RowArray | None
    sampled: int
    scalars: dict[str, float] = field(default_factory=dict)
    ignored: np.ndarray | None = None


def check_weighting(batch: ArrayFile, logits_shape: tuple[int, ...], axis: int) -> Weighting | None:
    """The batch's :class:`Weighting`, or None when it has no ``weights`` (nor ``padding``) key.

    Raises:
        InputError: a weight that is not finite or below 1, a non-real dtype, a wrong shape;
            padding without weights, of another shape or not 0/1; a scalar that is not one number
            of its range; the message names the file, the key and what was expected.
    """
    keys = batch.keys()
    if WEIGHTS_KEY not in keys:
        if PADDING_KEY in keys:
            raise InputError(
                f"{batch.source}: key '{PADDING_KEY}' without '{WEIGHTS_KEY}'; expected padding only in a weighted sample, beside its sampling weights"
            )
        return None
    classes = logits_shape[axis]
    rows = int(np.prod(without_axis(logits_shape, axis), dtype=np.int64))
    weights = _array(batch, WEIGHTS_KEY, "iuf", "real numbers (floats or integers)")
    weight_rows = rows_for(batch, WEIGHTS_KEY, weights.shape, logits_shape, axis)
    if weight_rows is None:
        raise InputError(
            f"{batch.source}: key '{WEIGHTS_KEY}' has shape {weights.shape}; expected {without_axis(logits_shape, axis)} (one sampling weight per row) "
            f"or {logits_shape} (one per element)"
        )
    padding_rows = None
    if PADDING_KEY in keys:
        padding = _array(batch, PADDING_KEY, "biu", "bool (or 0/1 integers)")
        if padding.shape != logits_shape:
            raise InputError(f"{batch.source}: key '{PADDING_KEY}' has shape {padding.shape}; expected {logits_shape}, the logits' shape")
        padding_rows = Rows(batch, PADDING_KEY, padding.shape, axis)
    padded = _scan(batch.source, weight_rows, padding_rows, rows)
    scalars = {}
    for key in (*POPULATION_KEYS, SAMPLE_RATE_KEY):
        if key in keys:
            scalars[key] = _scalar(batch, key)
    ignored = _ignored(batch, classes) if RECORDED_IGNORED_KEY in keys else None
    return Weighting(weight_rows, padding_rows, rows * classes - padded, scalars, ignored)


def sample_info(sources: list, classes: int) -> dict | None:
    """:attr:`~lossaudit.io.dataset.info.DataInfo.sample` of the planned batches (each a
    :class:`~lossaudit.io.dataset.reader.Source`): None when none is weighted; else the elements
    stored (``sampled_elements``, padding excluded; an unweighted batch's every element), the sums of
    ``population_rows`` and ``population_elements`` over the batches that have them (None where
    none has), the first ``sample_rate`` (or None), and ``recorded_ignored``, the summed ``(C,)``
    ``ignored`` counts as a list (or None)."""
    weightings = [source.weighting for source in sources if source.weighting is not None]
    if not weightings:
        return None
    sample: dict = {"sampled_elements": sum(source.weighting.sampled if source.weighting is not None else source.rows * classes for source in sources)}
    for key in POPULATION_KEYS:
        values = [weighting.scalars[key] for weighting in weightings if key in weighting.scalars]
        sample[key] = float(sum(values)) if values else None
    rates = [weighting.scalars[SAMPLE_RATE_KEY] for weighting in weightings if SAMPLE_RATE_KEY in weighting.scalars]
    sample[SAMPLE_RATE_KEY] = rates[0] if rates else None
    ignored = [weighting.ignored for weighting in weightings if weighting.ignored is not None]
    sample["recorded_ignored"] = np.sum(ignored, axis=0).tolist() if ignored else None
    return sample


def chunk_weights(weights: np.ndarray | None, padding: np.ndarray | None, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray | None]:
    """(``(n, C)`` float64 element weights, ``(n, C)`` bool padding or None) of a chunk of a weighted
    dump from its raw rows of ``weights`` (``(n,)`` per row, ``(n, C)`` per element, or None: 1)
    and ``padding``. Padded positions weigh 1 (their weight is not read)."""
    if weights is None:
        return np.ones(shape), None
    w = np.broadcast_to(np.asarray(weights, dtype=np.float64)[:, None], shape) if weights.ndim == 1 else np.asarray(weights, dtype=np.float64)
    if padding is None:
        return w, None
    pad = np.asarray(padding).astype(bool, copy=False)
    if not pad.any():
        return w, None
    return np.where(pad, 1.0, w), pad


def _array(batch: ArrayFile, key: str, kinds: str, expected: str) -> np.ndarray:
    array = batch.get(key)
    if not isinstance(array, np.ndarray) or array.dtype.kind not in kinds:
        kind = array.dtype if isinstance(array, np.ndarray) else type(array).__name__
        raise InputError(f"{batch.source}: key '{key}' has dtype {kind}; expected {expected}")
    return array


def _scan(source: str, weights: Rows, padding: Rows | None, rows: int) -> int:
    """Read the weights (and the padding) in chunks: every weight outside the padding finite and
    >= 1, the padding 0 or 1. Returns the padded positions."""
    padded = 0
    pads = padding.scan(rows, SCAN_ROWS) if padding is not None else None
    for start, values in zip(range(0, rows, SCAN_ROWS), weights.scan(rows, SCAN_ROWS)):
        pad = next(pads) if pads is not None else None
        if pad is not None:
            if pad.dtype.kind != "b" and not np.isin(pad, (0, 1)).all():
                raise InputError(f"{source}: key '{PADDING_KEY}' holds values other than 0 and 1; expected True/1 where a position holds no element")
            pad = pad.astype(bool, copy=False)
            padded += int(np.count_nonzero(pad))
        bad = not_weights(values)
        if pad is not None:
            bad &= ~pad if values.ndim == 2 else ~pad.all(axis=1)  # a row's weight is read unless the row is all padding
        if bad.any():
            raise InputError(bad_weights(source, values, bad, start))
    return padded


FLOAT16_ONE, FLOAT16_INF = np.uint16(0x3C00), np.uint16(0x7C00)
"""The bits of float16's 1 and infinity: the finite float16 values >= 1 are the bits in between."""


def not_weights(values: np.ndarray) -> np.ndarray:
    """``values``' bool mask of those that are no sampling weight: below 1, infinite or NaN (for
    integers, below 1). float16 weights (as the Recorder stores them) are read by their bits, in
    one unsigned comparison (20 times faster than float16 comparisons, which numpy emulates)."""
    if values.dtype == np.float16:
        return np.subtract(values.view(np.uint16), FLOAT16_ONE) >= FLOAT16_INF - FLOAT16_ONE  # below 1 or negative: wraps above
    if values.dtype.kind == "f":
        with np.errstate(invalid="ignore"):
            return ~((values >= 1) & (values < np.inf))  # NaN fails both
    return values < 1


def bad_weights(source: str, values: np.ndarray, bad: np.ndarray, start: int, key: str = WEIGHTS_KEY, unit: str = "row") -> str:
    """The message for the weights ``values`` of ``key`` where ``bad`` is true; ``unit``: what the
    first axis counts from ``start`` (rows, or the elements of a 1-D key)."""
    found = values[bad]
    first = np.argwhere(bad)[0]
    where = f"{unit} {start + int(first[0])}" + (f", class {int(first[1])}" if len(first) > 1 else "")
    if values.dtype.kind == "f" and np.isnan(found).any():
        count, what = int(np.isnan(found).sum()), "NaN"
    elif values.dtype.kind == "f" and np.isposinf(found).any():
        count, what = int(np.isposinf(found).sum()), "infinite"
    else:
        count, what = len(found), "below 1"
    what = f"{count} value{'s' if count > 1 else ''} {what}" if what == "below 1" else f"{count} {what} value{'s' if count > 1 else ''}"
    return f"{source}: key '{key}': {what} (the first {float(found[0]):g} at {where}); {EXPECTED}"


def _scalar(batch: ArrayFile, key: str) -> float:
    """A scalar key: one finite number, >= 0 (``sample_rate``: in (0, 1], or -1 for a target size)."""
    array = batch.get(key)
    rate = key == SAMPLE_RATE_KEY
    expected = "a rate in (0, 1] or -1 (a target size)" if rate else "one number >= 0"
    if not isinstance(array, np.ndarray) or array.dtype.kind not in "iuf" or array.size != 1:
        shape = array.shape if isinstance(array, np.ndarray) else type(array).__name__
        raise InputError(f"{batch.source}: key '{key}' has shape {shape}; expected {expected}")
    value = float(array.reshape(-1)[0])
    fits = (0 < value <= 1 or value == -1) if rate else (np.isfinite(value) and value >= 0)
    if not fits:
        raise InputError(f"{batch.source}: key '{key}' is {value}; expected {expected}")
    return value


def _ignored(batch: ArrayFile, classes: int) -> np.ndarray:
    """The ``ignored`` key: ``(C,)`` non-negative integer counts."""
    array = batch.get(RECORDED_IGNORED_KEY)
    if not isinstance(array, np.ndarray) or array.dtype.kind not in "iu" or array.shape != (classes,) or (array < 0).any():
        kind = f"{array.dtype} {array.shape}" if isinstance(array, np.ndarray) else type(array).__name__
        raise InputError(
            f"{batch.source}: key '{RECORDED_IGNORED_KEY}' is {kind}; expected ({classes},) non-negative integer counts of the masked elements per class"
        )
    return array.astype(np.int64)
