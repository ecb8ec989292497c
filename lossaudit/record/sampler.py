"""A weighted sample of one batch, drawn where the batch lives: :func:`sample_batch`.

What is kept (issue 24's design, section 3), for logits flattened to ``(N, C)`` rows the way
``compare`` flattens them (``(B, A, C)`` -> ``(B*A, C)``, ``(B, C, H, W)`` -> ``(B*H*W, C)``):

- every row with a target (a class id, or any non-zero one-hot/soft target): whole, weight 1;
- of the other rows, every element that is not easy (``sigmoid(x) >= easy_edge``; a NaN or infinite
  logit counts as not easy, so ``compare`` counts each of them) with weight 1;
- of their easy negatives, a Poisson sample: element i of class c is kept independently with
  probability ``r_c`` and weighs ``w_c = 1 / r_c``, so every Horvitz-Thompson sum ``sum w y`` over the
  sample is an unbiased estimate of the batch's sum.

Masked elements, masked rows and rows with the ignore label are dropped and counted per class
(``ignored``), as ``compare`` counts them.

The weights are chosen first and the rates follow: ``w_c`` is ``1 / rate`` rounded down to a
float16 value (to float32 values when one is above float16's 65504), and ``r_c = 1 / w_c`` exactly, so the
stored weights are exact in 2 bytes and the rate is at least the one asked for (by less than 0.1%).

Only the kept elements are copied to the CPU; on the device the work takes the batch's flattened
logits (a copy for ``(B, C, H, W)``), one ``(N, C)`` bool mask (a quarter of float32 logits), the
positions of the elements that are not easy and ``O(N C r)`` random numbers.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

from lossaudit._lazy import torch
from lossaudit.io.dump import _check_shapes, _class_axis, from_tensor
from lossaudit.render.formatting import plural

EASY_EDGE = 0.1
"""``compare``'s first difficulty edge: a negative with ``p < 0.1`` is easy."""

FLOAT16_MAX = 65504.0
SPREAD = 6.0
"""Standard deviations of extra gaps drawn beyond the expected number, so one draw almost always
covers a column (a column it does not cover gets more)."""


@dataclass
class Selection:
    """What one batch keeps, on the CPU; :func:`pack` lays one or more out as a weighted batch.

    Attributes:
        row_logits, row_targets: ``(P, C)`` the rows with a target, whole (targets float32 or float16).
        row_padding: ``(P, C)`` bool, masked elements (and padding) of those rows, or None.
        row_weights: ``(P, C)`` their weights when the batch was weighted already, else None (1).
        classes, logits, weights: ``(k,)`` the kept elements of the other rows: class, logit, weight
            (float16, or float32 with a weight above 65504 or a weighted batch; an element that is
            not easy keeps its weight, 1 unless the batch was weighted).
        ignored: ``(C,)`` int64 elements dropped by a mask or the ignore label, or None (neither given).
        rows: N, the batch's rows before sampling.
        sample_rate: the easy negatives' rate (the smallest if the classes differ), -1 for a target size.
    """

    row_logits: np.ndarray
    row_targets: np.ndarray
    row_padding: np.ndarray | None
    row_weights: np.ndarray | None
    classes: np.ndarray
    logits: np.ndarray
    weights: np.ndarray
    ignored: np.ndarray | None
    rows: int
    sample_rate: float


def sample_batch(
    logits: object,
    targets: object,
    rate: float = 0.01,
    target_size: int | None = None,
    easy_edge: float = EASY_EDGE,
    mask: object = None,
    generator: object = None,
) -> dict[str, np.ndarray]:
    """A weighted sample of one batch (see the module's docstring), as the arrays of one weighted
    batch file (``lossaudit.io.dump.save_sample`` writes them; ``compare`` reads them).

    Args:
        logits: ``(N, C)``, ``(B, A, C)`` or ``(B, C, H, W)`` float32, float16 or bfloat16 logits, a
            torch tensor on any device or a numpy array. Sampled on that device.
        targets: class ids shaped like the rows (``(N,)``, ``(B, A)``, ``(B, H, W)``; background = C,
            ignore = -1), or one-hot / soft targets shaped like the logits.
        rate: the easy negatives' inclusion probability, in (0, 1].
        target_size: instead of ``rate``: about this many easy negatives kept in all, in equal
            shares of ``target_size / C`` per class (a class with fewer keeps all of them).
        easy_edge: a negative with ``sigmoid(logit) < easy_edge`` is easy.
        mask: optional, 0 where a row or an element is ignored; shaped like the rows or the logits.
        generator: a ``torch.Generator`` on the logits' device, for reproducible samples.

    Returns:
        numpy arrays: the P rows with a target, whole: ``logits`` ``(P, C)`` (float32; float16 for
        float16 logits), ``targets`` ``(P, C)`` (uint8 for hard targets, else float32/float16),
        ``weights`` ``(P, C)`` (float16 when every weight is exact in it, else float32), and
        ``padding`` ``(P, C)`` bool only where a masked element sat in such a row; the K kept
        elements of the other rows, grouped by class (class 0's first; within a class those that
        are not easy, then the sampled ones), targets 0: ``negatives_logits`` ``(K,)`` (the logits'
        dtype), ``negatives_weights`` ``(K,)`` (as ``weights``), ``negatives_per_class`` ``(C,)``
        int64; the scalars ``population_rows`` (N), ``population_elements`` (N*C),
        ``sample_rate``, and ``ignored`` ``(C,)`` when a mask or an ignore label was given.
        ``compare`` reads the K elements as pseudo-rows (column c: class c's elements, padded;
        :mod:`lossaudit.io.dataset.compact`). A batch that keeps nothing is one all-padding row.

    Raises:
        ValueError: shapes that do not fit, an unknown class id, a rate, target size or edge out of range.
        TypeError: logits that are not floating point.

    Example:
        >>> import torch
        >>> batch = sample_batch(torch.full((1000, 4), -9.0), torch.full((1000,), 4), rate=0.5, generator=torch.Generator().manual_seed(0))
        >>> batch["negatives_weights"].tolist()[:3], len(batch["logits"]), int(batch["population_elements"])
        ([2.0, 2.0, 2.0], 0, 4000)
    """
    return pack([select(logits, targets, rate, target_size, easy_edge, mask, generator)])


def select(
    logits: object,
    targets: object,
    rate: float = 0.01,
    target_size: int | None = None,
    easy_edge: float = EASY_EDGE,
    mask: object = None,
    generator: object = None,
    weights: object = None,
    padding: object = None,
) -> Selection:
    """What :func:`sample_batch` keeps of one batch, copied to the CPU (same arguments).

    A batch that is a weighted sample already (``weights`` and ``padding`` shaped like the logits,
    as ``lossaudit sample`` reads a weighted dump) is sampled again: two-phase sampling, the weights
    multiply (an element kept with certainty keeps its weight w, a sampled easy negative weighs
    ``w / r_c``), padding is neither kept nor counted, and an ignored or masked element is refused
    (its weighted count would not be a whole number). Only ``(N, C)`` logits then.

    Passes over the whole batch: one comparison with the easy edge, its negation in place, one
    ``nonzero``; everything else runs on the rows (``(N,)``) or on the kept elements."""
    _check_settings(rate, target_size, easy_edge)
    x, labels, per_class, element_mask, row_mask = _flatten(logits, targets, mask)
    rows, classes = x.shape
    prior, present = _prior(x, weights, padding)
    available_mask = element_mask if present is None else present if element_mask is None else element_mask & present
    has_target, dropped = _row_targets(labels, per_class, classes)
    if row_mask is not None:
        dropped |= ~row_mask
        has_target &= row_mask
    if prior is not None and (
        bool(dropped.any()) or (element_mask is not None and not bool((element_mask if present is None else element_mask | ~present).all()))
    ):
        raise ValueError("a weighted batch with ignored or masked elements: sampling it again is not supported (their weighted count is not a whole number)")
    free = ~(has_target | dropped)
    kept_rows = has_target.nonzero().squeeze(1)
    threshold = _logit(easy_edge)
    flat = x.view(-1)
    hard = (x < threshold).logical_not_().view(-1).nonzero().squeeze(1)  # p >= edge, NaN or +inf
    hard = hard.masked_select(_available(hard, free, available_mask, classes))
    hard_classes = hard % classes
    class_weights = _class_weights(rate, target_size, free, available_mask, hard_classes, classes)
    sampled = _poisson(rows, class_weights, generator, x.device)
    sampled = sampled.masked_select((flat.index_select(0, sampled) < threshold) & _available(sampled, free, available_mask, classes))
    kept = torch.cat([hard, sampled])
    kept_classes = (kept % classes).cpu().numpy()
    ignored = None
    if element_mask is not None or row_mask is not None or labels is not None:
        ignored = _ignored(dropped, element_mask if present is None or element_mask is None else element_mask | ~present, classes)
    element_weights = _element_weights(class_weights, kept_classes, len(hard))
    if prior is not None:
        element_weights = element_weights.astype(np.float32) * prior.view(-1).index_select(0, kept).cpu().numpy().astype(np.float32)
    return Selection(
        row_logits=_numpy_logits(x.index_select(0, kept_rows)),
        row_targets=_row_target_values(labels, per_class, kept_rows, classes),
        row_padding=None if available_mask is None else (~available_mask.index_select(0, kept_rows)).cpu().numpy(),
        row_weights=None if prior is None else prior.index_select(0, kept_rows).cpu().numpy().astype(np.float32),
        classes=kept_classes,
        logits=_numpy_logits(flat.index_select(0, kept)),
        weights=element_weights,
        ignored=ignored,
        rows=rows,
        sample_rate=-1.0 if target_size is not None else float(1 / class_weights.max()),
    )


def _prior(x, weights: object, padding: object):
    """``(weights, present)`` of a batch that is a weighted sample already, as ``(N, C)`` tensors on
    ``x``'s device (``present`` None without padding), or ``(None, None)``."""
    if weights is None:
        return None, None
    prior = _tensor(weights)
    if tuple(prior.shape) != tuple(x.shape) or (padding is not None and tuple(_tensor(padding).shape) != tuple(x.shape)):
        raise ValueError(f"weights and padding of a weighted batch must be shaped like its (N, C) logits {tuple(x.shape)}")
    present = None if padding is None else ~_tensor(padding).to(x.device, torch.bool)
    return prior.to(x.device, torch.float64), present


def _available(flat_indices, free, element_mask, classes: int):
    """Bool per element of ``flat_indices`` (into the ``(N, C)`` batch): in a row without a target
    that is not dropped, and not masked."""
    available = free.index_select(0, flat_indices // classes)
    if element_mask is not None:
        available &= element_mask.view(-1).index_select(0, flat_indices)
    return available


def pack(selections: list[Selection]) -> dict[str, np.ndarray]:
    """One weighted batch from the selections of one or more parts of a batch: the rows with a
    target, then the kept elements of the other rows grouped by class (see :func:`sample_batch`'s Returns)."""
    classes = selections[0].row_logits.shape[1]
    row_logits = np.concatenate([item.row_logits for item in selections])
    row_targets = np.concatenate([item.row_targets for item in selections])
    row_weights = np.concatenate(
        [item.row_weights if item.row_weights is not None else np.ones(item.row_logits.shape, dtype=np.float16) for item in selections]
    )
    row_padding = np.concatenate([item.row_padding if item.row_padding is not None else np.zeros(item.row_logits.shape, dtype=bool) for item in selections])
    element_classes = np.concatenate([item.classes for item in selections])
    sort = np.argsort(element_classes.astype(np.int16) if classes < 2**15 else element_classes, kind="stable")  # a radix sort for int16
    if not len(row_logits) and not len(sort):  # nothing kept: one all-padding row, so the batch (and its population) is read
        row_logits, row_targets = np.zeros((1, classes), dtype=row_logits.dtype), np.zeros((1, classes), dtype=row_targets.dtype)
        row_weights, row_padding = np.ones((1, classes), dtype=np.float16), np.ones((1, classes), dtype=bool)
    hard_targets = row_targets.dtype == np.uint8 or bool(((row_targets == 0) | (row_targets == 1)).all())
    population_rows = sum(item.rows for item in selections)
    batch = {
        "logits": row_logits,
        "targets": row_targets.astype(np.uint8) if hard_targets else row_targets,
        "weights": _exact_float16(row_weights),
        "negatives_logits": np.concatenate([item.logits for item in selections])[sort],
        "negatives_weights": _exact_float16(np.concatenate([item.weights for item in selections])[sort]),
        "negatives_per_class": np.bincount(element_classes, minlength=classes).astype(np.int64),
        "population_rows": np.asarray(population_rows, dtype=np.int64),
        "population_elements": np.asarray(population_rows * classes, dtype=np.int64),
        "sample_rate": np.asarray(min(item.sample_rate for item in selections), dtype=np.float64),
    }
    if row_padding.any():
        batch["padding"] = row_padding
    ignored = [item.ignored for item in selections if item.ignored is not None]
    if ignored:
        batch["ignored"] = np.asarray(np.sum(ignored, axis=0, dtype=np.int64))
    return batch


def kept_elements(batch: dict[str, np.ndarray]) -> int:
    """The elements a weighted batch of :func:`pack` stores: its rows' elements that are not
    padding, and its negatives."""
    padded = int(np.count_nonzero(batch["padding"])) if "padding" in batch else 0
    return batch["logits"].size - padded + len(batch["negatives_logits"])


def _exact_float16(weights: np.ndarray) -> np.ndarray:
    """``weights`` as float16 when every value is exact in 2 bytes (a batch sampled twice at
    float16 rates), else as they are."""
    if weights.dtype != np.float16 and weights.max(initial=1) <= FLOAT16_MAX and (weights.astype(np.float16) == weights).all():
        return weights.astype(np.float16)
    return weights


def _check_settings(rate: float, target_size: int | None, easy_edge: float) -> None:
    if target_size is None and not 0 < rate <= 1:
        raise ValueError(f"rate {rate!r}: expected an inclusion probability in (0, 1]")
    if target_size is not None and (isinstance(target_size, bool) or not isinstance(target_size, (int, np.integer)) or target_size < 1):
        raise ValueError(f"target_size {target_size!r}: expected a whole number of elements, at least 1")
    if not 0 < easy_edge < 1:
        raise ValueError(f"easy_edge {easy_edge!r}: expected a probability in (0, 1)")


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


def _flatten(logits: object, targets: object, mask: object):
    """``(x (N, C), labels (N,) or None, per-class targets (N, C) or None, element mask (N, C) bool
    or None, row mask (N,) bool or None)`` as tensors on the logits' device (True = kept)."""
    logits, targets = _tensor(logits), _tensor(targets)
    mask = None if mask is None else _tensor(mask)
    if not logits.is_floating_point():
        raise TypeError(f"logits has dtype {logits.dtype}; expected floating-point logits (float32, float16 or bfloat16)")
    if logits.ndim > 4:
        raise ValueError(f"logits has shape {tuple(logits.shape)}; expected (N, C), (B, A, C) or (B, C, H, W)")
    _check_shapes(_shaped(logits), _shaped(targets), None if mask is None else _shaped(mask), None)
    axis = _class_axis(logits)
    device = logits.device

    def as_rows(value):
        if value.shape == logits.shape:
            return value.to(device).movedim(axis, -1).reshape(-1, logits.shape[axis]).contiguous()
        return value.to(device).reshape(-1).contiguous()

    x = as_rows(logits)
    target_rows = as_rows(targets)
    labels, per_class = (None, target_rows) if target_rows.ndim == 2 else (target_rows, None)
    if labels is not None and (labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool):
        raise ValueError(
            f"targets has shape {tuple(targets.shape)} and dtype {targets.dtype}; expected integer class ids (or {tuple(logits.shape)} one-hot/soft targets)"
        )
    element_mask = row_mask = None
    if mask is not None:
        mask_rows = as_rows(mask) != 0
        element_mask, row_mask = (mask_rows, None) if mask_rows.ndim == 2 else (None, mask_rows)
    return x, labels, per_class, element_mask, row_mask


def _tensor(value: object) -> torch.Tensor:
    """A torch tensor without autograd history (numpy arrays are wrapped, not copied: a read-only
    one too, which torch warns about, since nothing here writes to its input)."""
    if isinstance(value, torch.Tensor):
        return value.detach()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.as_tensor(np.asarray(value))


def _shaped(tensor) -> np.ndarray:
    """An array of ``tensor``'s shape that takes no memory, for the shape checks of ``lossaudit.save``."""
    return np.broadcast_to(np.zeros((), dtype=bool), tuple(tensor.shape))


def _row_targets(labels, per_class, classes: int):
    """``(has_target, dropped)`` ``(N,)`` bool, disjoint: rows with a target; rows with the ignore label.

    Raises:
        ValueError: a class id outside -1..C.
    """
    if labels is None:
        return (per_class != 0).any(dim=1), torch.zeros(len(per_class), dtype=torch.bool, device=per_class.device)
    low, high = (int(value) for value in torch.aminmax(labels))
    if low < -1 or high > classes:
        bad = (labels < -1) | (labels > classes)
        raise ValueError(
            f"targets holds {plural(int(bad.sum()), 'class id')} outside -1..{classes} (the first {int(labels[bad][0])}); "
            f"expected 0..{classes - 1}, {classes} for background or -1 to ignore"
        )
    dropped = labels == -1
    return (labels != classes) & ~dropped, dropped


def _class_weights(rate: float, target_size: int | None, free, element_mask, hard_classes, classes: int) -> np.ndarray:
    """``(C,)`` float64 weights ``w_c`` of the easy negatives: ``1 / rate``, or for a target size
    ``n_c / (target_size / C)`` and at least 1, where ``n_c``, class c's easy negatives, is its
    available elements less the ones that are not easy (``hard_classes``); rounded down to a float16
    value (float32 values when one is above 65504) so that they are stored exactly."""
    if target_size is None:
        wanted = np.full(classes, 1 / rate)
    else:
        if element_mask is None:
            available = np.full(classes, float(free.sum()))
        else:
            available = (element_mask & free[:, None]).sum(dim=0).cpu().numpy().astype(np.float64)
        easy = available - np.bincount(hard_classes.cpu().numpy(), minlength=classes)
        wanted = np.maximum(easy / (target_size / classes), 1.0)
    return np.maximum(_round_down(wanted, np.float16 if wanted.max() <= FLOAT16_MAX else np.float32), 1.0)


def _round_down(values: np.ndarray, dtype: type) -> np.ndarray:
    """``values`` (float64) rounded down to values of ``dtype``, as float64."""
    rounded: np.ndarray = values.astype(dtype)
    above = rounded.astype(np.float64) > values
    rounded[above] = np.nextafter(rounded[above], dtype(0))
    return rounded.astype(np.float64)


def _poisson(rows: int, weights: np.ndarray, generator, device):
    """Flat indices (``row * C + c``) of a Poisson sample of the ``(N, C)`` positions: position
    ``(i, c)`` is chosen independently with probability ``r_c = 1 / weights[c]`` (:func:`_walk`;
    one walk over all N*C positions when every class has the same rate, else one per class; a
    class with ``r_c = 1`` is taken whole)."""
    classes = len(weights)
    found = []
    full = np.flatnonzero(weights == 1)
    if len(full):
        found.append((torch.arange(rows, device=device)[:, None] * classes + torch.as_tensor(full, device=device)).view(-1))
    pending = np.flatnonzero(weights > 1)
    if len(pending) == classes and (weights == weights[0]).all():
        found.append(_walk(np.array([rows * classes]), weights[:1], generator, device)[1])
    elif len(pending):
        column, position = _walk(np.full(len(pending), rows), weights[pending], generator, device)
        found.append(position * classes + torch.as_tensor(pending, device=device)[column])
    return torch.cat(found) if found else torch.zeros(0, dtype=torch.int64, device=device)


def _walk(lengths: np.ndarray, weights: np.ndarray, generator, device):
    """``(segment, position)`` int64 tensors: a Bernoulli process on each segment ``s`` of
    positions ``0 .. lengths[s] - 1``, each position chosen independently with probability
    ``r_s = 1 / weights[s]``.

    Each segment is walked by gaps drawn from Geometric(r) on {1, 2, ...}: ``G = ceil(E / -log(1 - r))``
    with E ~ Exponential(1) (float64), since ``P(G > k) = P(E > -k log(1 - r)) = (1 - r)^k`` (one
    segment: torch's ``geometric_``, the same formula with ``E = -log U``). Position
    ``g_1 + ... + g_j - 1`` is the j-th success of independent Bernoulli(r) trials, so every position
    is chosen independently with probability r (an exact Bernoulli process; keeping the chosen
    positions that hold an easy negative keeps each easy negative independently with probability r).
    A gap of 0 (``E = 0``, probability about 2^-53) is read as 1. About ``lengths[s] * r_s`` numbers
    are drawn per segment, never one per position; a segment that one draw does not cover gets more."""
    segments, positions = [], []
    pending = np.arange(len(lengths))
    start = np.zeros(len(lengths), dtype=np.int64)  # the next position to walk from, per pending segment
    while len(pending):
        rates = 1 / weights[pending]
        expected = (lengths[pending] - start) * rates
        draws = np.ceil(expected + SPREAD * np.sqrt(expected) + 16).astype(np.int64)
        longest = float(lengths.max()) + 1  # a longer gap ends the walk as well (and an infinite one cannot become an integer)
        if len(pending) == 1:
            column = torch.zeros(1, dtype=torch.int64, device=device)
            gaps = torch.empty(int(draws[0]), dtype=torch.float64, device=device).geometric_(float(rates[0]), generator=generator)
            found = gaps.clamp_(1, longest).to(torch.int64).cumsum(0).add_(int(start[0]) - 1)
        else:
            exponential = torch.empty(int(draws.sum()), dtype=torch.float64, device=device).exponential_(generator=generator)
            column = torch.repeat_interleave(torch.arange(len(pending), device=device), torch.as_tensor(draws, device=device))
            scale = torch.as_tensor(-np.log1p(-rates), device=device)
            gaps = torch.ceil(exponential.div_(scale[column])).clamp_(1, longest).to(torch.int64)
            totals = gaps.cumsum(0)
            before = torch.cat([torch.zeros(1, dtype=torch.int64, device=device), totals[torch.as_tensor(np.cumsum(draws)[:-1] - 1, device=device)]])
            found = totals - (before - torch.as_tensor(start, device=device) + 1)[column]
        ends = torch.as_tensor(np.cumsum(draws) - 1, device=device)
        inside = found < torch.as_tensor(lengths[pending], device=device)[column]
        segments.append(torch.as_tensor(pending, device=device)[column].expand(len(found)).masked_select(inside))
        positions.append(found.masked_select(inside))
        last = found[ends].cpu().numpy()
        open_segments = last < lengths[pending] - 1
        pending, start = pending[open_segments], last[open_segments] + 1
    return torch.cat(segments), torch.cat(positions)


def _element_weights(weights: np.ndarray, kept_classes: np.ndarray, certain: int) -> np.ndarray:
    """``(k,)`` weights of the kept elements: 1 for the first ``certain`` ones, then their class's
    weight; float16 (exact: see :func:`_class_weights`), or float32 with a weight above 65504."""
    table = weights.astype(np.float16 if weights.max() <= FLOAT16_MAX else np.float32)
    return np.concatenate([np.ones(certain, dtype=table.dtype), table[kept_classes[certain:]]])


def _ignored(dropped, element_mask, classes: int) -> np.ndarray:
    """``(C,)`` int64: elements dropped per class (whole rows count once in every class)."""
    counts = np.full(classes, int(dropped.sum()), dtype=np.int64)
    if element_mask is not None:
        counts += (~element_mask & ~dropped[:, None]).sum(dim=0).cpu().numpy().astype(np.int64)
    return counts


def _numpy_logits(values) -> np.ndarray:
    """Kept logits on the CPU: float16 stays float16, anything else becomes float32."""
    array = from_tensor(values)
    return array if array.dtype == np.float16 else array.astype(np.float32, copy=False)


def _row_target_values(labels, per_class, kept_rows, classes: int) -> np.ndarray:
    """``(P, C)`` targets of the kept rows: one-hot uint8 for class ids, else as given (float16
    stays float16, other floats become float32; 0/1 values become uint8 in :func:`pack`)."""
    if labels is None:
        values = from_tensor(per_class[kept_rows])
        return values if values.dtype == np.float16 else values.astype(np.float32, copy=False)
    ids = labels[kept_rows].cpu().numpy()
    one_hot = np.zeros((len(ids), classes), dtype=np.uint8)
    one_hot[np.arange(len(ids)), ids] = 1
    return one_hot
