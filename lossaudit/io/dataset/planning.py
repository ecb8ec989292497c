"""Check the dumps and fix the conventions without reading the logits: :func:`plan` returns the
:class:`~lossaudit.io.dataset.reader.DataPlan` that decodes them in row chunks.

Each batch is checked on its own first (keys, dtypes, shapes, target values scanned in chunks),
then the batches together (one class count, some rows, one target encoding), then the options."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lossaudit.errors import InputError
from lossaudit.io.dataset.checks import (
    check_labels,
    choose_encoding,
    class_axis,
    find_key,
    mixed_classes,
    numeric,
    runs_of,
    scan_targets,
)
from lossaudit.io.dataset.classes import class_names_from
from lossaudit.io.dataset.compact import check_negatives, with_negatives
from lossaudit.io.dataset.decode import finite_range, rows_sum_to_one
from lossaudit.io.dataset.info import DataInfo
from lossaudit.io.dataset.options import (
    INPUTS,
    LABEL_BASES,
    LOGITS_KEYS,
    MASK_KEY,
    TARGETS_KEYS,
    LoadOptions,
)
from lossaudit.io.dataset.reader import DataPlan, Source
from lossaudit.io.dataset.rows import SCAN_ROWS, RowArray, Rows, rows_for, without_axis
from lossaudit.io.dataset.weights import check_weighting, sample_info
from lossaudit.io.readers import ArrayFile


@dataclass
class _Batch:
    """One batch that passed its own checks: its rows, and what its targets hold.

    Attributes:
        encoding: the encoding its targets fit: ``index`` (class ids), else ``onehot`` (0/1),
            ``heatmap`` (``(B, C, H, W)`` with some target exactly 1) or ``soft``.
        binary, in_range, multi_label: per-class targets only (see
            :func:`~lossaudit.io.dataset.checks.scan_targets`).
    """

    source: Source
    logits_key: str
    targets_key: str
    logits_shape: tuple[int, ...]
    targets_shape: tuple[int, ...]
    class_dim: int
    dtype: str
    encoding: str
    binary: bool = True
    in_range: bool = True
    multi_label: bool = False

    @property
    def classes(self) -> int:
        return self.logits_shape[self.class_dim]


def plan(batches: list[ArrayFile], options: LoadOptions = LoadOptions()) -> DataPlan:
    """Check the batches' keys, shapes, dtypes and target values (targets are scanned in chunks;
    logits are not read) and fix the conventions.

    Raises:
        InputError: a missing key, a wrong shape or dtype, targets that fit no encoding, class names
            that do not match; the message names the file and the key.
    """
    checked: list[_Batch] = []
    start = 0
    for batch in batches:
        checked.append(_check_batch(batch, options, start))
        start += checked[-1].source.rows
    runs = runs_of(batches)
    _check_together(checked, batches, runs, start)
    first = checked[0]
    encoding = choose_encoding({item.encoding for item in checked}, options.targets, batches[0].source, first.targets_key)
    _check_target_values(checked, encoding)
    class_names = _class_names(options, batches[0], first.classes)
    if options.label_base not in LABEL_BASES:
        raise InputError(f"--label-base {options.label_base}: expected 0 (labels 0..C-1) or 1 (labels 1..C)")
    background = _background_index(options, encoding, first.classes)
    if options.inputs not in INPUTS:
        raise InputError(f"--inputs {options.inputs}: expected {', '.join(INPUTS[:-1])} or {INPUTS[-1]}")
    info = DataInfo(
        files=[batch.source for batch in batches],
        logits_key=first.logits_key,
        targets_key=first.targets_key,
        logits_shapes=[item.logits_shape for item in checked],
        targets_shapes=[item.targets_shape for item in checked],
        dtype=first.dtype,
        class_dim=first.class_dim,
        encoding=encoding,
        encoding_detected=options.targets == "auto",
        inputs=_inputs(options.inputs, checked),
        background_index=background if encoding == "index" else None,
        ignore_index=options.ignore_index if encoding == "index" else None,
        class_names=class_names,
        num_rows=start,
        num_classes=first.classes,
        runs=runs,
        multi_label=any(item.multi_label for item in checked),
        label_base=options.label_base if encoding == "index" else 0,
        background_default=options.background_index is None,
        weighted=any(item.source.weighting is not None for item in checked),
        sample=sample_info([item.source for item in checked], first.classes),
    )
    return DataPlan(info, [item.source for item in checked], options)


def _check_batch(batch: ArrayFile, options: LoadOptions, start: int) -> _Batch:
    """One batch's keys, dtypes and shapes, and its target values; its rows start at ``start``."""
    logits_key = find_key(batch, options.logits_key, LOGITS_KEYS, "logits", "--logits-key")
    targets_key = find_key(batch, options.targets_key, TARGETS_KEYS, "targets", "--targets-key")
    logits = numeric(batch, logits_key)
    if logits.dtype.kind != "f":
        raise InputError(f"{batch.source}: key '{logits_key}' has dtype {logits.dtype}; expected floating-point logits")
    targets = numeric(batch, targets_key)
    axis = class_axis(logits, options.class_dim, batch.source, logits_key)
    index_shape = logits.shape[:axis] + logits.shape[axis + 1 :]
    target_rows: RowArray | None = rows_for(batch, targets_key, targets.shape, logits.shape, axis)
    if target_rows is None:
        raise InputError(
            f"{batch.source}: key '{targets_key}' has shape {targets.shape} but '{logits_key}' has shape "
            f"{logits.shape} (class axis {axis}); expected {index_shape} class indices or {logits.shape} "
            f"one-hot/soft targets{_class_dim_hint(targets.shape, logits.shape, axis)}"
        )
    mask_rows: RowArray | None = _mask_rows(batch, logits.shape, axis)
    rows = int(np.prod(index_shape, dtype=np.int64))
    logits_rows: RowArray = Rows(batch, logits_key, logits.shape, axis)
    weighting = check_weighting(batch, logits.shape, axis)
    logits_shape, targets_shape = logits.shape, targets.shape
    negatives = check_negatives(batch, logits.shape, axis, target_rows)
    if negatives is not None:  # the stored rows, then the pseudo-rows of the compact negatives
        assert weighting is not None  # check_negatives refuses them without the stored rows' weights
        logits_rows, target_rows, mask_rows, weighting = with_negatives(
            negatives, logits_rows, target_rows, mask_rows, rows, weighting, logits.dtype, targets.dtype
        )
        rows += negatives.height
        logits_shape = targets_shape = (rows, logits.shape[1])
    source = Source(batch, logits_rows, target_rows, mask_rows, rows, start, weighting)
    dtype = batch.dtypes.get(logits_key, str(logits.dtype))
    checked = _Batch(source, logits_key, targets_key, logits_shape, targets_shape, axis, dtype, encoding="index")
    _scan(checked, heatmap_shaped=logits.ndim == 4 and axis == 1)
    return checked


def _class_dim_hint(shape: tuple[int, ...], logits_shape: tuple[int, ...], axis: int) -> str:
    """``; ...pass --class-dim A`` when another class axis A of the logits fits the targets'
    ``shape`` (a channels-last map, a ``(C, H, W)`` map), else ''."""
    for other in range(len(logits_shape)):
        if other != axis and shape in (without_axis(logits_shape, other), without_axis(logits_shape, other) + (1,)):
            return f"; they fit the class axis {other} ({logits_shape[other]} classes): pass --class-dim {other}"
    return ""


def _inputs(requested: str, checked: list[_Batch]) -> str:
    """How the logits are read (:attr:`DataInfo.inputs`): ``logits`` (auto too), ``softmax-probs``,
    ``sigmoid-probs``; ``probs`` is ``softmax-probs`` when every row with finite values sums to 1
    within :data:`~lossaudit.io.dataset.decode.ROW_SUM_TOLERANCE` (the logits are read once more
    for it), else ``sigmoid-probs``."""
    if requested in ("auto", "logits"):
        return "logits"
    if requested != "probs":
        return requested
    for item in checked:
        rows = item.source.logits
        for x in rows.scan(item.source.rows, SCAN_ROWS):
            if not rows_sum_to_one(x, finite_range(x, False)[0]):
                return "sigmoid-probs"
    return "softmax-probs"


def _mask_rows(batch: ArrayFile, logits_shape: tuple[int, ...], axis: int) -> Rows | None:
    """The batch's mask as rows (a row mask or an element mask), or None without one."""
    if MASK_KEY not in batch.keys():
        return None
    shape = numeric(batch, MASK_KEY).shape
    mask_rows = rows_for(batch, MASK_KEY, shape, logits_shape, axis)
    if mask_rows is None:
        index_shape = logits_shape[:axis] + logits_shape[axis + 1 :]
        raise InputError(f"{batch.source}: key '{MASK_KEY}' has shape {shape}; expected {index_shape} (rows) or {logits_shape} (elements)")
    return mask_rows


def _scan(checked: _Batch, heatmap_shaped: bool) -> None:
    """Read the batch's targets in chunks: class ids must be whole numbers; per-class targets fix
    ``encoding``, ``binary``, ``in_range`` and ``multi_label`` (and, when all are 0 or 1, the
    source's ``target_sums``)."""
    source = checked.source
    if source.targets.axis is None:
        check_labels(source.targets, source.rows, f"{source.batch.source}: key '{checked.targets_key}'", SCAN_ROWS)
        return
    checked.binary, has_one, checked.in_range, checked.multi_label, source.target_sums = scan_targets(source.targets, source.rows, SCAN_ROWS)
    checked.encoding = "onehot" if checked.binary else "heatmap" if heatmap_shaped and has_one else "soft"


def _check_together(checked: list[_Batch], batches: list[ArrayFile], runs: dict[str, list[str]], rows: int) -> None:
    """The batches hold one class count and, together, some rows."""
    files_by_classes: dict[int, list[str]] = {}
    for item in checked:
        files_by_classes.setdefault(item.classes, []).append(item.source.batch.source)
    if len(files_by_classes) > 1:
        raise InputError(mixed_classes(files_by_classes, runs))
    if rows == 0:
        raise InputError(f"{batches[0].source}{' and the other files' if len(batches) > 1 else ''}: no rows to compare (the arrays are empty)")


def _check_target_values(checked: list[_Batch], encoding: str) -> None:
    """Per-class targets lie in [0, 1], and are 0 or 1 for one-hot targets."""
    for item in checked:
        if item.encoding == "index":
            continue
        where = f"{item.source.batch.source}: key '{item.targets_key}'"
        if not item.in_range:
            raise InputError(f"{where} has values outside [0, 1] or non-finite; {encoding} targets must lie in [0, 1]")
        if encoding == "onehot" and not item.binary:
            raise InputError(f"{where} holds values other than 0 and 1; use --targets soft")


def _class_names(options: LoadOptions, first: ArrayFile, num_classes: int) -> list[str]:
    """``--class-names`` (one per class), else those of the first batch, else ``0 .. C-1``."""
    if options.class_names is None:
        return class_names_from(first, num_classes) or [str(c) for c in range(num_classes)]
    if len(options.class_names) != num_classes:
        raise InputError(f"--class-names: {len(options.class_names)} names; the data has {num_classes} classes")
    return options.class_names


def _background_index(options: LoadOptions, encoding: str, num_classes: int) -> int:
    """``--background-index``, by default C (0 with ``--label-base 1``); with index targets it must
    be no class: outside [b, C + b) for the label base b."""
    base = options.label_base
    background = options.background_index if options.background_index is not None else 0 if base else num_classes
    if encoding == "index" and base <= background < num_classes + base:
        raise InputError(
            f"--background-index {background} collides with class {background - base} of {num_classes} (labels {base}..{num_classes + base - 1}); "
            f"the background label must lie outside [{base}, {num_classes + base}) (logits hold foreground classes only)"
        )
    return background
