"""Turn prediction dumps into one ``(N, C)`` table of logits and target probabilities.

Conventions (each stated in ``compare``'s output):

- Shapes: logits ``(N, C)``; ``(B, A, C)`` anchors, flattened to ``(B*A, C)``; ``(B, C, H, W)``
  maps with the class axis 1, flattened to ``(B*H*W, C)``. ``class_dim`` overrides the class axis.
- Targets: ``index`` (integer class ids, shape of logits without the class axis; the background
  index, default C, is an all-zero row; the ignore index, default -1, drops the row), ``onehot``
  (0/1, multi-hot allowed, all-zero row = background), ``soft`` (floats in [0, 1]), ``heatmap``
  (``(B, C, H, W)`` Gaussian heatmaps with peaks of exactly 1).
- A positive element has target ≥ 0.5 (heatmaps: target == 1).
- ``mask`` (optional, 0 = ignore) has the shape of the index targets (rows) or of the logits.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from lossaudit.errors import InputError
from lossaudit.readers import ArrayFile, read_batches

LOGITS_KEYS = ("logits", "pred", "preds", "outputs", "scores")
TARGETS_KEYS = ("targets", "labels", "target", "label", "gt", "y")
MASK_KEY = "mask"
CLASS_NAMES_KEY = "class_names"
ENCODINGS = ("index", "onehot", "soft", "heatmap")
PROBABILITY_EPS = 1e-6
"""``--inputs probs`` converts p to logit(clamp(p, eps, 1 - eps))."""


@dataclass(frozen=True)
class LoadOptions:
    """How to read the dumps; None means detect."""

    logits_key: str | None = None
    targets_key: str | None = None
    targets: str = "auto"
    background_index: int | None = None
    ignore_index: int = -1
    class_dim: int | None = None
    inputs: str = "auto"
    class_names: list[str] | None = None


@dataclass
class Dataset:
    """Predictions flattened to rows.

    Attributes:
        logits: ``(N, C)`` float32 logits (converted from probabilities when ``inputs == 'probs'``);
            non-finite values are kept and excluded through ``valid``.
        targets: ``(N, C)`` float32 target probabilities (index targets one-hot; background rows 0).
        valid: ``(N, C)`` bool: not ignored, not masked, a label in range and a finite logit.
        positive: ``(N, C)`` bool: target ≥ 0.5 (heatmaps: == 1) and valid.
        ignored: ``(N, C)`` bool: dropped by the ignore index or the mask.
        out_of_range_labels: index labels outside the classes, background and ignore: value ->
            rows. Those rows are excluded from every loss and reported as a data finding.
    """

    files: list[str]
    logits_key: str
    targets_key: str
    logits_shapes: list[tuple[int, ...]]
    targets_shapes: list[tuple[int, ...]]
    dtype: str
    class_dim: int
    encoding: str
    encoding_detected: bool
    inputs: str
    inputs_look_like_probabilities: bool
    background_index: int | None
    ignore_index: int | None
    class_names: list[str]
    logits: torch.Tensor
    targets: torch.Tensor
    valid: torch.Tensor
    positive: torch.Tensor
    ignored: torch.Tensor
    out_of_range_labels: dict[int, int] = field(default_factory=dict)

    @property
    def num_rows(self) -> int:
        return self.logits.shape[0]

    @property
    def num_classes(self) -> int:
        return self.logits.shape[1]


def _find_key(batch: ArrayFile, wanted: str | None, candidates: tuple[str, ...], role: str, option: str) -> str:
    keys = batch.keys()
    if wanted is not None:
        if wanted not in keys:
            raise InputError(f"{batch.source}: no key '{wanted}' ({option}); keys present: {', '.join(keys) or 'none'}")
        return wanted
    for key in candidates:
        if key in keys:
            return key
    raise InputError(
        f"{batch.source}: no {role} key; expected one of {', '.join(candidates)} (or name it with {option}); "
        f"keys present: {', '.join(keys) or 'none'}"
    )


def _numeric(batch: ArrayFile, key: str) -> np.ndarray:
    array = batch.get(key)
    if not isinstance(array, np.ndarray) or array.dtype.kind not in "biuf":
        kind = array.dtype if isinstance(array, np.ndarray) else type(array).__name__
        raise InputError(f"{batch.source}: key '{key}' has type {kind}; expected a numeric array")
    return array


def _class_axis(logits: np.ndarray, class_dim: int | None, source: str, key: str) -> int:
    if logits.ndim < 2:
        raise InputError(f"{source}: key '{key}' has shape {logits.shape}; expected (N, C), (B, A, C) or (B, C, H, W)")
    if class_dim is None:
        return 1 if logits.ndim >= 4 else logits.ndim - 1
    if not -logits.ndim <= class_dim < logits.ndim:
        raise InputError(f"{source}: --class-dim {class_dim} is out of range for key '{key}' of shape {logits.shape}")
    return class_dim % logits.ndim


def _rows(array: np.ndarray, class_axis: int) -> np.ndarray:
    """Move the class axis last and flatten the rest: ``(..., C, ...) -> (N, C)``."""
    return np.moveaxis(array, class_axis, -1).reshape(-1, array.shape[class_axis])


def _detect_encoding(targets: np.ndarray, index_shaped: bool, heatmap_shaped: bool) -> str:
    if index_shaped:
        return "index"
    finite = targets[np.isfinite(targets)] if targets.dtype.kind == "f" else targets
    if np.isin(finite, (0, 1)).all():
        return "onehot"
    if heatmap_shaped and (finite == 1).any():
        return "heatmap"
    return "soft"


@dataclass
class _Batch:
    """One file's arrays as rows, with what was found about them."""

    logits: np.ndarray  # (n, C)
    targets: np.ndarray  # (n,) index or (n, C)
    mask: np.ndarray | None  # (n,) or (n, C)
    logits_shape: tuple[int, ...]
    targets_shape: tuple[int, ...]
    logits_key: str
    targets_key: str
    class_axis: int
    encoding: str
    dtype: str


def _read_batch(batch: ArrayFile, options: LoadOptions) -> _Batch:
    logits_key = _find_key(batch, options.logits_key, LOGITS_KEYS, "logits", "--logits-key")
    targets_key = _find_key(batch, options.targets_key, TARGETS_KEYS, "targets", "--targets-key")
    logits = _numeric(batch, logits_key)
    if logits.dtype.kind != "f":
        raise InputError(f"{batch.source}: key '{logits_key}' has dtype {logits.dtype}; expected floating-point logits")
    targets = _numeric(batch, targets_key)
    axis = _class_axis(logits, options.class_dim, batch.source, logits_key)
    index_shape = logits.shape[:axis] + logits.shape[axis + 1 :]
    if targets.shape == index_shape:
        target_rows = targets.reshape(-1)
        index_shaped = True
    elif targets.shape == logits.shape:
        target_rows = _rows(targets, axis)
        index_shaped = False
    else:
        raise InputError(
            f"{batch.source}: key '{targets_key}' has shape {targets.shape} but '{logits_key}' has shape "
            f"{logits.shape} (class axis {axis}); expected {index_shape} class indices or {logits.shape} "
            "one-hot/soft targets"
        )
    mask = None
    if MASK_KEY in batch.keys():
        raw_mask = _numeric(batch, MASK_KEY)
        if raw_mask.shape == index_shape:
            mask = raw_mask.reshape(-1) != 0
        elif raw_mask.shape == logits.shape:
            mask = _rows(raw_mask, axis) != 0
        else:
            raise InputError(
                f"{batch.source}: key '{MASK_KEY}' has shape {raw_mask.shape}; expected {index_shape} (rows) "
                f"or {logits.shape} (elements)"
            )
    heatmap_shaped = logits.ndim == 4 and axis == 1 and not index_shaped
    detected = _detect_encoding(target_rows, index_shaped, heatmap_shaped)
    dtype = batch.dtypes.get(logits_key, str(logits.dtype))
    return _Batch(_rows(logits, axis), target_rows, mask, logits.shape, targets.shape, logits_key, targets_key, axis, detected, dtype)


def _class_names_from(batch: ArrayFile, num_classes: int) -> list[str] | None:
    if CLASS_NAMES_KEY not in batch.keys():
        return None
    names = batch.get(CLASS_NAMES_KEY)
    if not isinstance(names, np.ndarray) or names.dtype.kind not in "US" or names.ndim != 1:
        raise InputError(f"{batch.source}: key '{CLASS_NAMES_KEY}' must be a 1-D array of strings")
    if len(names) != num_classes:
        raise InputError(f"{batch.source}: key '{CLASS_NAMES_KEY}' has {len(names)} names; expected {num_classes} (one per class)")
    return [str(name) for name in names]


def _decode_index(labels: np.ndarray, num_classes: int, background: int, ignore: int, source: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(N,)`` labels -> ``(N, C)`` one-hot (background rows zero), ``(N,)`` ignored rows and
    ``(N,)`` rows whose label is out of range (neither a class, background nor ignore)."""
    if labels.dtype.kind == "f":
        finite = np.isfinite(labels)
        if not finite.all() or (labels[finite] != np.round(labels[finite])).any():
            raise InputError(f"{source}: index targets must be whole numbers; found non-integer or non-finite values")
    labels = labels.astype(np.int64)
    ignored = labels == ignore
    foreground = (labels >= 0) & (labels < num_classes)
    out_of_range = ~(foreground | ignored | (labels == background))
    onehot = np.zeros((labels.shape[0], num_classes), dtype=np.float32)
    rows = np.nonzero(foreground)[0]
    onehot[rows, labels[rows]] = 1.0
    return onehot, ignored, out_of_range


def load(paths: list[Path], options: LoadOptions = LoadOptions()) -> Dataset:
    """Read, check and concatenate the dumps along the sample axis.

    Raises:
        InputError: a missing file or key, a wrong shape or dtype, non-integer class ids, pickled
            objects, a corrupt archive; the message names the file and the key.
    """
    return load_batches(read_batches(paths), options)


def load_batches(batches: list[ArrayFile], options: LoadOptions = LoadOptions()) -> Dataset:
    """Check and concatenate batches already read (from files, or produced by a model)."""
    read = [_read_batch(batch, options) for batch in batches]
    first = read[0]
    num_classes, targets_key = first.logits.shape[1], first.targets_key
    for batch, rows in zip(batches, read):
        if rows.logits.shape[1] != num_classes:
            raise InputError(f"{batch.source}: has {rows.logits.shape[1]} classes; {batches[0].source} has {num_classes}")
    encoding = _choose_encoding({rows.encoding for rows in read}, options.targets, batches[0].source, targets_key)

    class_names = options.class_names
    if class_names is not None and len(class_names) != num_classes:
        raise InputError(f"--class-names: {len(class_names)} names; the data has {num_classes} classes")
    if class_names is None:
        class_names = _class_names_from(batches[0], num_classes) or [str(c) for c in range(num_classes)]

    background = options.background_index if options.background_index is not None else num_classes
    if encoding == "index" and 0 <= background < num_classes:
        raise InputError(
            f"--background-index {background} collides with class {background} of {num_classes}; "
            "the background label must lie outside [0, C) (logits hold foreground classes only)"
        )
    logits_parts, target_parts, ignored_parts, out_of_range_parts = [], [], [], []
    out_of_range_labels: dict[int, int] = {}
    for batch, rows in zip(batches, read):
        if encoding == "index":
            if rows.targets.ndim != 1:
                raise InputError(f"{batch.source}: key '{targets_key}' has shape {rows.targets_shape}; --targets index needs class ids without the class axis")
            onehot, ignored_rows, bad_rows = _decode_index(rows.targets, num_classes, background, options.ignore_index, f"{batch.source}: key '{targets_key}'")
            ignored = np.repeat(ignored_rows[:, None], num_classes, axis=1)
            for value in rows.targets[bad_rows].astype(np.int64):
                out_of_range_labels[int(value)] = out_of_range_labels.get(int(value), 0) + 1
            out_of_range = np.repeat(bad_rows[:, None], num_classes, axis=1)
        else:
            if rows.targets.ndim != 2:
                raise InputError(f"{batch.source}: key '{targets_key}' has shape {rows.targets_shape}; --targets {encoding} needs the shape of the logits")
            onehot = rows.targets.astype(np.float32)
            finite = np.isfinite(onehot)
            if not finite.all() or (onehot < 0).any() or (onehot > 1).any():
                raise InputError(f"{batch.source}: key '{targets_key}' has values outside [0, 1] or non-finite; {encoding} targets must lie in [0, 1]")
            if encoding == "onehot" and not np.isin(onehot, (0, 1)).all():
                raise InputError(f"{batch.source}: key '{targets_key}' holds values other than 0 and 1; use --targets soft")
            ignored = np.zeros(onehot.shape, dtype=bool)
            out_of_range = np.zeros(onehot.shape, dtype=bool)
        if rows.mask is not None:
            masked = ~rows.mask if rows.mask.ndim == 2 else np.repeat(~rows.mask[:, None], num_classes, axis=1)
            ignored = ignored | masked
        logits_parts.append(rows.logits)
        target_parts.append(onehot)
        ignored_parts.append(ignored)
        out_of_range_parts.append(out_of_range)

    logits = torch.from_numpy(np.concatenate(logits_parts).astype(np.float32, copy=False))
    targets = torch.from_numpy(np.concatenate(target_parts))
    ignored = torch.from_numpy(np.concatenate(ignored_parts))
    out_of_range = torch.from_numpy(np.concatenate(out_of_range_parts))
    finite = torch.isfinite(logits)
    in_unit = bool(((logits >= 0) & (logits <= 1) | ~finite).all()) and bool(finite.any())
    inputs = _choose_inputs(options.inputs, logits, finite, batches[0].source, first.logits_key)
    if inputs == "probs":
        logits = torch.logit(logits.clamp(PROBABILITY_EPS, 1 - PROBABILITY_EPS))
    valid = finite & ~ignored & ~out_of_range
    positive = (targets.eq(1) if encoding == "heatmap" else targets.ge(0.5)) & valid
    return Dataset(
        files=[batch.source for batch in batches],
        logits_key=first.logits_key,
        targets_key=targets_key,
        logits_shapes=[rows.logits_shape for rows in read],
        targets_shapes=[rows.targets_shape for rows in read],
        dtype=first.dtype,
        class_dim=first.class_axis,
        encoding=encoding,
        encoding_detected=options.targets == "auto",
        inputs=inputs,
        inputs_look_like_probabilities=in_unit and inputs == "logits",
        background_index=background if encoding == "index" else None,
        ignore_index=options.ignore_index if encoding == "index" else None,
        class_names=class_names,
        logits=logits,
        targets=targets,
        valid=valid,
        positive=positive,
        ignored=ignored,
        out_of_range_labels=dict(sorted(out_of_range_labels.items())),
    )


def _choose_encoding(detected: set[str], requested: str, source: str, key: str) -> str:
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


def _choose_inputs(requested: str, logits: torch.Tensor, finite: torch.Tensor, source: str, key: str) -> str:
    if requested == "auto":
        return "logits"
    if requested not in ("logits", "probs"):
        raise InputError(f"--inputs {requested}: expected auto, logits or probs")
    if requested == "probs":
        values = logits[finite]
        if values.numel() and (values.min() < 0 or values.max() > 1):
            raise InputError(f"{source}: key '{key}' has values outside [0, 1] ({float(values.min()):.3g} to {float(values.max()):.3g}); --inputs probs needs probabilities")
    return requested


def read_class_names(path: Path) -> list[str]:
    """Class names from a file: one per line, or a YAML list, or a YAML mapping ``{index: name}``."""
    import yaml

    try:
        text = path.read_text()
    except OSError as error:
        raise InputError(f"{path}: cannot read class names ({error.strerror})") from None
    try:
        parsed = yaml.safe_load(text)
    except yaml.YAMLError:
        parsed = None
    if isinstance(parsed, list):
        return [str(name) for name in parsed]
    if isinstance(parsed, dict):
        try:
            indexed = {int(index): str(name) for index, name in parsed.items()}
        except (TypeError, ValueError):
            raise InputError(f"{path}: a class-name mapping needs integer keys (0: person, 1: car)") from None
        if sorted(indexed) != list(range(len(indexed))):
            raise InputError(f"{path}: class-name mapping keys must be 0..{len(indexed) - 1}")
        return [indexed[index] for index in range(len(indexed))]
    names = [line.strip() for line in text.splitlines() if line.strip()]
    if not names:
        raise InputError(f"{path}: no class names found")
    return names
