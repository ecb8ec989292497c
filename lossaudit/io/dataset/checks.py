"""The checks :func:`~lossaudit.io.dataset.planning.plan` makes on each batch, before any logit is read:
keys, dtypes, the class axis, the target values (scanned in chunks), and the messages that name the
file and the key."""

from __future__ import annotations

import numpy as np

from lossaudit.errors import InputError
from lossaudit.io.dataset.chunk import is_positive
from lossaudit.io.dataset.options import ENCODINGS
from lossaudit.io.dataset.rows import RowArray
from lossaudit.io.dump import RUN_ID_KEY
from lossaudit.io.readers import ArrayFile


def find_key(batch: ArrayFile, wanted: str | None, candidates: tuple[str, ...], role: str, option: str) -> str:
    """``wanted`` if given (it must exist), else the first of ``candidates`` present."""
    keys = batch.keys()
    if wanted is not None:
        if wanted not in keys:
            raise InputError(f"{batch.source}: no key '{wanted}' ({option}); keys present: {', '.join(keys) or 'none'}")
        return wanted
    for key in candidates:
        if key in keys:
            return key
    raise InputError(
        f"{batch.source}: no {role} key; expected one of {', '.join(candidates)} (or name it with {option}); keys present: {', '.join(keys) or 'none'}"
    )


def numeric(batch: ArrayFile, key: str) -> np.ndarray:
    """``batch.get(key)``, which must be a numeric (bool, integer or float) array."""
    array = batch.get(key)
    if not isinstance(array, np.ndarray) or array.dtype.kind not in "biuf":
        kind = array.dtype if isinstance(array, np.ndarray) else type(array).__name__
        raise InputError(f"{batch.source}: key '{key}' has type {kind}; expected a numeric array")
    return array


def class_axis(logits: np.ndarray, class_dim: int | None, source: str, key: str) -> int:
    """The class axis of ``logits``: ``class_dim`` if given, else 1 for 4-D maps ``(B, C, H, W)``
    and the last axis otherwise; it must hold at least one class."""
    if logits.ndim < 2:
        raise InputError(f"{source}: key '{key}' has shape {logits.shape}; expected (N, C), (B, A, C) or (B, C, H, W)")
    if class_dim is None:
        axis = 1 if logits.ndim >= 4 else logits.ndim - 1
    elif not -logits.ndim <= class_dim < logits.ndim:
        raise InputError(f"{source}: --class-dim {class_dim} is out of range for key '{key}' of shape {logits.shape}")
    else:
        axis = class_dim % logits.ndim
    if logits.shape[axis] == 0:
        raise InputError(f"{source}: key '{key}' has shape {logits.shape}: 0 classes on the class axis {axis}")
    return axis


def scan_targets(rows: RowArray, count: int, chunk: int) -> tuple[bool, bool, bool, bool, np.ndarray | None]:
    """(all values in {0, 1}, some value exactly 1, all values finite and in [0, 1], some row with
    two positives: :func:`~lossaudit.io.dataset.chunk.is_positive`, the ``(C,)`` float64 sums of
    the columns when all values are 0 or 1, else None), read in chunks of ``chunk`` rows. Some
    four passes over each chunk: its ones counted; while every value so far is 0 or 1, its zeros
    counted and its column sums (in float32, exact for fewer than 2^24 rows), else its least and
    greatest values (0s and 1s are in range; NaN propagates through both); its rows with a
    positive, until one holds two (a row holds two when the positives outnumber those rows)."""
    binary, has_one, in_range, multi_label = True, False, True, False
    sums = None
    for values in rows.scan(count, chunk):
        if not values.size:
            continue
        ones = values == 1
        some_ones = int(np.count_nonzero(ones))
        has_one |= some_ones > 0
        binary = binary and some_ones + int(np.count_nonzero(values == 0)) == values.size
        if binary:
            column_sums = np.add.reduce(values, axis=0, dtype=np.float32 if len(values) < 2**24 else np.float64)
            sums = column_sums.astype(np.float64) if sums is None else sums + column_sums
        else:
            in_range &= bool(values.min() >= 0 and values.max() <= 1)
        if not multi_label:
            positive = ones if binary else is_positive(values)
            positives = some_ones if binary else int(np.count_nonzero(positive))
            multi_label = positives > int(np.count_nonzero(np.logical_or.reduce(positive, axis=1)))
    return binary, has_one, in_range, multi_label, sums if binary else None


def check_labels(rows: RowArray, count: int, source: str, chunk: int) -> None:
    """Class ids must be whole numbers that fit int64 (checked before any cast: an unsigned
    2**64 - 1 would wrap to -1, the ignore label)."""
    for labels in rows.scan(count, chunk):
        if labels.dtype.kind == "u" and labels.size and labels.max() > np.iinfo(np.int64).max:
            raise InputError(f"{source}: index targets up to {labels.max()} do not fit int64; class ids must lie below 2**63")
        if labels.dtype.kind == "f":
            finite = np.isfinite(labels)
            if not finite.all() or (labels[finite] != np.round(labels[finite])).any():
                raise InputError(f"{source}: index targets must be whole numbers; found non-integer or non-finite values")


def choose_encoding(detected: set[str], requested: str, source: str, key: str) -> str:
    """The encoding of the targets: ``requested`` (``--targets``) if it fits what the batches hold,
    else the most general of ``detected`` (the encodings the batches' targets fit)."""
    if requested != "auto":
        if requested not in ENCODINGS:
            raise InputError(f"--targets {requested}: expected auto, {', '.join(ENCODINGS)}")
        if (requested == "index") != ("index" in detected):
            shape_kind = "class ids" if "index" in detected else "one value per class"
            raise InputError(f"{source}: key '{key}' holds {shape_kind}; it cannot be read as --targets {requested}")
        return requested
    if "index" in detected and len(detected) > 1:
        raise InputError(f"{source}: key '{key}': batches mix class ids and per-class targets")
    for encoding in ("index", "soft", "heatmap", "onehot"):  # the most general one present wins
        if encoding in detected:
            return encoding
    raise AssertionError(detected)


def runs_of(batches: list[ArrayFile]) -> dict[str, list[str]]:
    """Run id -> files, from the ``run_id`` key ``lossaudit.save`` writes."""
    runs: dict[str, list[str]] = {}
    for batch in batches:
        if RUN_ID_KEY in batch.keys():
            runs.setdefault(str(batch.get(RUN_ID_KEY)), []).append(batch.source)
    return runs


def name_files(files: list[str]) -> str:
    """Files for a message, as given: up to three, else the first, the last and how many."""
    return ", ".join(files) if len(files) <= 3 else f"{files[0]} … {files[-1]} ({len(files)} files)"


def mixed_classes(files_by_classes: dict[int, list[str]], runs: dict[str, list[str]]) -> str:
    """The error for batches with different class counts: each count's files, and their runs."""
    run_of = {file: run for run, files in runs.items() for file in files}
    parts = []
    for classes, files in files_by_classes.items():
        ids = sorted({run_of[file] for file in files if file in run_of})
        parts.append(f"{classes} classes in {name_files(files)}" + (f" (run {', '.join(ids)})" if ids else ""))
    return f"the dumps mix class counts: {'; '.join(parts)}; compare the dumps of one model at a time"
