"""Turn prediction dumps into rows of logits and target probabilities: ``(N, C)`` tables.

:func:`plan` checks the dumps without reading the logits and returns a :class:`DataPlan` that
decodes them in row chunks (:class:`Chunk`, numpy arrays), which is how ``compare`` streams them;
:func:`load` concatenates every chunk into one :class:`Dataset` of torch tensors (the full-tensor
path, the tests' oracle). Only :func:`load` and ``.pt`` files import torch.

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

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lossaudit.errors import InputError
from lossaudit.io.dump import RUN_ID_KEY
from lossaudit.io.readers import ArrayFile, read_batches, release_pages
from lossaudit.io.textfiles import parse_yaml, read_text

if TYPE_CHECKING:
    import torch

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
class DataInfo:
    """What was loaded and which conventions apply (the report's ``input`` section).

    ``out_of_range_labels`` and ``inputs_look_like_probabilities`` are known once every row has
    been read: :meth:`DataPlan.chunks` fills them in as it goes.
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
    background_index: int | None
    ignore_index: int | None
    class_names: list[str]
    num_rows: int
    num_classes: int
    inputs_look_like_probabilities: bool = False
    out_of_range_labels: dict[int, int] = field(default_factory=dict)
    runs: dict[str, list[str]] = field(default_factory=dict)
    """The files of each run id that ``lossaudit.save`` recorded (files without one are not listed)."""
    multi_label: bool = False
    """Some row of one-hot or soft targets has two or more targets ≥ 0.5 (as stored)."""


@dataclass
class Chunk:
    """Rows ``start .. start + n`` of the data, decoded into numpy arrays.

    What excludes an element is kept at the level it happens: whole rows (an ignore label, a row
    mask, a label out of range) as ``(n,)`` flags, single elements (an element mask, a NaN or
    infinite logit) as ``(n, C)`` masks that are None when nothing is excluded that way. Targets
    are sparse: the coordinates and values of the non-zero ones (index targets have one per row at
    most; :attr:`targets` is the dense table).

    Attributes:
        logits: ``(n, C)`` float32 logits (converted from probabilities when ``inputs == 'probs'``);
            non-finite values are kept and excluded through ``nonfinite``. It may be a view of a
            buffer the caller passed to :meth:`DataPlan.decode`.
        target_rows, target_cols: ``(k,)`` int64 coordinates of the non-zero targets, row-major order.
        target_values: ``(k,)`` float32 target probabilities at those coordinates (1 for index targets).
        ignored_rows: ``(n,)`` bool: the ignore label or a row mask.
        out_of_range: ``(n,)`` bool: an index label that is no class, background or ignore.
        element_ignored: ``(n, C)`` bool from an element mask, or None.
        nonfinite: ``(n, C)`` bool: NaN or infinite logits, or None (for none, or not yet looked
            for: see :meth:`_Reader.decode`).
        heatmap: positives are targets == 1 (else targets >= 0.5).
    """

    start: int
    logits: np.ndarray
    target_rows: np.ndarray
    target_cols: np.ndarray
    target_values: np.ndarray
    ignored_rows: np.ndarray
    out_of_range: np.ndarray
    element_ignored: np.ndarray | None
    nonfinite: np.ndarray | None
    heatmap: bool

    @property
    def dropped_rows(self) -> np.ndarray:
        """``(n,)`` rows excluded whole."""
        return self.ignored_rows | self.out_of_range

    @property
    def element_invalid(self) -> np.ndarray | None:
        """``(n, C)`` elements excluded one by one (element mask or non-finite), or None."""
        masks = [mask for mask in (self.element_ignored, self.nonfinite) if mask is not None]
        return masks[0] if len(masks) == 1 else (masks[0] | masks[1]) if masks else None

    @property
    def target_positive(self) -> np.ndarray:
        """``(k,)`` bool: the non-zero target is a positive (≥ 0.5; heatmaps: == 1)."""
        return self.target_values == 1 if self.heatmap else self.target_values >= 0.5

    @property
    def targets(self) -> np.ndarray:
        """``(n, C)`` float32 target probabilities (index targets one-hot; background rows 0)."""
        dense = np.zeros(self.logits.shape, dtype=np.float32)
        dense[self.target_rows, self.target_cols] = self.target_values
        return dense

    @property
    def ignored(self) -> np.ndarray:
        """``(n, C)`` bool: dropped by the ignore index or a mask."""
        ignored = np.broadcast_to(self.ignored_rows[:, None], self.logits.shape)
        return ignored | self.element_ignored if self.element_ignored is not None else ignored.copy()

    @property
    def valid(self) -> np.ndarray:
        """``(n, C)`` bool: not ignored, not masked, a label in range and a finite logit."""
        valid = np.broadcast_to(~self.dropped_rows[:, None], self.logits.shape)
        invalid = self.element_invalid
        return valid & ~invalid if invalid is not None else valid.copy()

    @property
    def valid_rows(self) -> np.ndarray:
        """``(n,)`` bool: rows neither dropped nor holding an excluded element (what a softmax uses)."""
        invalid = self.element_invalid
        return ~self.dropped_rows if invalid is None else ~self.dropped_rows & ~invalid.any(axis=1)

    @property
    def has_target(self) -> np.ndarray:
        """``(n,)`` bool: rows with a non-zero target."""
        rows = np.zeros(len(self.logits), dtype=bool)
        rows[self.target_rows] = True
        return rows

    @property
    def positive(self) -> np.ndarray:
        """``(n, C)`` bool: target ≥ 0.5 (heatmaps: == 1) and valid."""
        positive = np.zeros(self.logits.shape, dtype=bool)
        positive[self.target_rows, self.target_cols] = self.target_positive
        return positive & self.valid


@dataclass
class Dataset(DataInfo):
    """Every row at once: the dense tables of :class:`Chunk` as torch tensors, for the full-tensor
    engine (:func:`lossaudit.compare.oracle.tally`)."""

    logits: torch.Tensor = None  # type: ignore[assignment]
    targets: torch.Tensor = None  # type: ignore[assignment]
    valid: torch.Tensor = None  # type: ignore[assignment]
    positive: torch.Tensor = None  # type: ignore[assignment]
    ignored: torch.Tensor = None  # type: ignore[assignment]


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
        axis = 1 if logits.ndim >= 4 else logits.ndim - 1
    elif not -logits.ndim <= class_dim < logits.ndim:
        raise InputError(f"{source}: --class-dim {class_dim} is out of range for key '{key}' of shape {logits.shape}")
    else:
        axis = class_dim % logits.ndim
    if logits.shape[axis] == 0:
        raise InputError(f"{source}: key '{key}' has shape {logits.shape}: 0 classes on the class axis {axis}")
    return axis


class _Rows:
    """Row access to the array ``batch.get(key)`` whose rows are all axes but ``axis`` (or, with
    ``axis`` None, all axes: one value per row), without copying more than the rows asked for.

    The array is fetched by :meth:`view` and not kept here: a memory-mapped file is mapped only
    while its chunks are read (see :class:`_Reader`)."""

    def __init__(self, batch: ArrayFile, key: str, shape: tuple[int, ...], axis: int | None):
        self.batch, self.key, self.axis = batch, key, axis
        if axis is not None:
            self.width = shape[axis]
            self.trailing = int(np.prod(shape[axis + 1 :], dtype=np.int64))

    def view(self) -> np.ndarray:
        """``(rows,)``, or ``(leading, C, trailing)`` (a view for C order)."""
        array = self.batch.get(self.key)
        return array.reshape(-1) if self.axis is None else array.reshape(-1, self.width, self.trailing)

    def _parts(self, view: np.ndarray, start: int, stop: int) -> Iterator[np.ndarray]:
        """Rows ``start .. stop`` of a ``(leading, C, trailing)`` view as ``(m, C)`` views, in order."""
        if self.trailing == 1:
            yield view[start:stop, :, 0]
            return
        row = start
        while row < stop:
            block, offset = divmod(row, self.trailing)
            take = min(stop - row, self.trailing - offset)
            yield view[block, :, offset : offset + take].T
            row += take

    def span(self, start: int, stop: int, view: np.ndarray | None = None) -> np.ndarray:
        """Rows ``start .. stop`` as ``(n,)`` or ``(n, C)`` (of ``view``, fetched when None)."""
        view = self.view() if view is None else view
        if self.axis is None:
            return np.asarray(view[start:stop])
        parts = [np.asarray(part) for part in self._parts(view, start, stop)]
        return np.concatenate(parts) if len(parts) > 1 else parts[0]

    def scan(self, count: int, rows: int) -> Iterator[np.ndarray]:
        """The first ``count`` rows as :meth:`span` reads them, ``rows`` at a time, each span's
        mapped pages given back after use (:func:`~lossaudit.io.readers.release_pages`)."""
        view = self.view()
        for start in range(0, count, rows):
            stop = min(start + rows, count)
            yield self.span(start, stop, view)
            release_pages(self.span_view(start, stop, view))

    def span_view(self, start: int, stop: int, view: np.ndarray) -> np.ndarray:
        """Rows ``start .. stop`` of ``view`` as a view (not copied), of whatever shape spans them:
        what :meth:`span` reads, for :func:`~lossaudit.io.readers.release_pages`."""
        if self.axis is None:
            return view[start:stop]
        return view[start // self.trailing : (stop - 1) // self.trailing + 1]

    def float32_span(self, start: int, stop: int, view: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Rows ``start .. stop`` of ``view`` as an ``(n, C)`` float32 array: a read-only view when
        they are float32 rows already (nothing is copied), else converted into ``out[:n]`` (or a new
        array; float64 beyond float32's range becomes inf)."""
        if self.trailing == 1 and view.dtype == np.float32:
            return np.asarray(view[start:stop, :, 0])
        x = out[: stop - start] if out is not None else np.empty((stop - start, self.width), dtype=np.float32)
        row = 0
        with np.errstate(over="ignore"):
            for part in self._parts(view, start, stop):
                np.copyto(x[row : row + len(part)], part, casting="same_kind")
                row += len(part)
        return x

    def pick(self, rows: np.ndarray) -> np.ndarray:
        """The rows at the (sorted) indices ``rows``."""
        view = self.view()
        if self.axis is None:
            return np.asarray(view[rows])
        block, offset = np.divmod(rows, self.trailing)
        return np.asarray(view[block[:, None], np.arange(self.width)[None, :], offset[:, None]])


@dataclass
class _Source:
    """One batch of the plan: its arrays as rows, and where its rows start globally."""

    batch: ArrayFile
    logits: _Rows
    targets: _Rows
    mask: _Rows | None
    rows: int
    start: int


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
        self.views: tuple[np.ndarray, np.ndarray, np.ndarray | None] | None = None
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
        logits_view, targets_view, mask_view = self.views
        x = source.logits.float32_span(start, stop, logits_view, out)
        mask = source.mask.span(start, stop, mask_view) if source.mask is not None else None
        self.read = [rows.span_view(start, stop, view) for rows, view in ((source.logits, logits_view), (source.targets, targets_view), (source.mask, mask_view)) if rows is not None]
        return self.plan._decode(source, x, source.targets.span(start, stop, targets_view), mask, source.start + start, check_finite=check_finite)


def _scan_targets(rows: _Rows, count: int, chunk: int) -> tuple[bool, bool, bool, bool]:
    """(all values in {0, 1}, some value exactly 1, all values finite and in [0, 1], some row with
    two values ≥ 0.5), read in chunks."""
    binary, has_one, in_range, multi_label = True, False, True, False
    for values in rows.scan(count, chunk):
        if values.dtype.kind == "f" and not np.isfinite(values).all():
            in_range = False
        else:
            in_range &= bool((values >= 0).all() and (values <= 1).all())
        binary &= bool(np.isin(values, (0, 1)).all())
        has_one |= bool((values == 1).any())
        multi_label |= bool((np.count_nonzero(values >= 0.5, axis=1) > 1).any())
    return binary, has_one, in_range, multi_label


def _check_labels(rows: _Rows, count: int, source: str, chunk: int) -> None:
    """Class ids must be whole numbers that fit int64 (checked before any cast: an unsigned
    2**64 - 1 would wrap to -1, the ignore label)."""
    for labels in rows.scan(count, chunk):
        if labels.dtype.kind == "u" and labels.size and labels.max() > np.iinfo(np.int64).max:
            raise InputError(f"{source}: index targets up to {labels.max()} do not fit int64; class ids must lie below 2**63")
        if labels.dtype.kind == "f":
            finite = np.isfinite(labels)
            if not finite.all() or (labels[finite] != np.round(labels[finite])).any():
                raise InputError(f"{source}: index targets must be whole numbers; found non-integer or non-finite values")


SCAN_ROWS = 1 << 16
"""Rows per read when targets are scanned for their encoding."""


def plan(batches: list[ArrayFile], options: LoadOptions = LoadOptions()) -> DataPlan:
    """Check the batches' keys, shapes, dtypes and target values (targets are scanned in chunks;
    logits are not read) and fix the conventions.

    Raises:
        InputError: a missing key, a wrong shape or dtype, targets that fit no encoding, class names
            that do not match; the message names the file and the key.
    """
    sources: list[_Source] = []
    detected: set[str] = set()
    logits_shapes, targets_shapes = [], []
    first_key = first_targets_key = first_dtype = None
    first_axis = num_classes = None
    start = 0
    scans = []
    files_by_classes: dict[int, list[str]] = {}
    multi_label = False
    for batch in batches:
        logits_key = find_key(batch, options.logits_key, LOGITS_KEYS, "logits", "--logits-key")
        targets_key = find_key(batch, options.targets_key, TARGETS_KEYS, "targets", "--targets-key")
        logits = _numeric(batch, logits_key)
        if logits.dtype.kind != "f":
            raise InputError(f"{batch.source}: key '{logits_key}' has dtype {logits.dtype}; expected floating-point logits")
        targets = _numeric(batch, targets_key)
        axis = _class_axis(logits, options.class_dim, batch.source, logits_key)
        index_shape = logits.shape[:axis] + logits.shape[axis + 1 :]
        if targets.shape == index_shape:
            target_rows, index_shaped = _Rows(batch, targets_key, targets.shape, None), True
        elif targets.shape == logits.shape:
            target_rows, index_shaped = _Rows(batch, targets_key, targets.shape, axis), False
        else:
            raise InputError(
                f"{batch.source}: key '{targets_key}' has shape {targets.shape} but '{logits_key}' has shape "
                f"{logits.shape} (class axis {axis}); expected {index_shape} class indices or {logits.shape} "
                "one-hot/soft targets"
            )
        mask_rows = None
        if MASK_KEY in batch.keys():
            raw_mask = _numeric(batch, MASK_KEY)
            if raw_mask.shape == index_shape:
                mask_rows = _Rows(batch, MASK_KEY, raw_mask.shape, None)
            elif raw_mask.shape == logits.shape:
                mask_rows = _Rows(batch, MASK_KEY, raw_mask.shape, axis)
            else:
                raise InputError(
                    f"{batch.source}: key '{MASK_KEY}' has shape {raw_mask.shape}; expected {index_shape} (rows) "
                    f"or {logits.shape} (elements)"
                )
        classes = logits.shape[axis]
        files_by_classes.setdefault(classes, []).append(batch.source)
        if num_classes is None:
            num_classes, first_axis = classes, axis
            first_key, first_targets_key = logits_key, targets_key
            first_dtype = batch.dtypes.get(logits_key, str(logits.dtype))
        rows = int(np.prod(index_shape, dtype=np.int64))
        if index_shaped:
            detected.add("index")
            _check_labels(target_rows, rows, f"{batch.source}: key '{targets_key}'", SCAN_ROWS)
        else:
            binary, has_one, in_range, several = _scan_targets(target_rows, rows, SCAN_ROWS)
            multi_label |= several
            heatmap_shaped = logits.ndim == 4 and axis == 1
            detected.add("onehot" if binary else "heatmap" if heatmap_shaped and has_one else "soft")
            scans.append((batch.source, targets_key, binary, in_range))
        sources.append(_Source(batch, _Rows(batch, logits_key, logits.shape, axis), target_rows, mask_rows, rows, start))
        logits_shapes.append(logits.shape)
        targets_shapes.append(targets.shape)
        start += rows
    runs = _runs(batches)
    if len(files_by_classes) > 1:
        raise InputError(_mixed_classes(files_by_classes, runs))
    if start == 0:
        raise InputError(f"{batches[0].source}{' and the other files' if len(batches) > 1 else ''}: no rows to compare (the arrays are empty)")
    encoding = _choose_encoding(detected, options.targets, batches[0].source, first_targets_key)
    for source, key, binary, in_range in scans:
        if not in_range:
            raise InputError(f"{source}: key '{key}' has values outside [0, 1] or non-finite; {encoding} targets must lie in [0, 1]")
        if encoding == "onehot" and not binary:
            raise InputError(f"{source}: key '{key}' holds values other than 0 and 1; use --targets soft")
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
    if options.inputs not in ("auto", "logits", "probs"):
        raise InputError(f"--inputs {options.inputs}: expected auto, logits or probs")
    info = DataInfo(
        files=[batch.source for batch in batches],
        logits_key=first_key,
        targets_key=first_targets_key,
        logits_shapes=logits_shapes,
        targets_shapes=targets_shapes,
        dtype=first_dtype,
        class_dim=first_axis,
        encoding=encoding,
        encoding_detected=options.targets == "auto",
        inputs="probs" if options.inputs == "probs" else "logits",
        background_index=background if encoding == "index" else None,
        ignore_index=options.ignore_index if encoding == "index" else None,
        class_names=class_names,
        num_rows=start,
        num_classes=num_classes,
        runs=runs,
        multi_label=multi_label,
    )
    return DataPlan(info, sources, options)


def _runs(batches: list[ArrayFile]) -> dict[str, list[str]]:
    """Run id -> files, from the ``run_id`` key ``lossaudit.save`` writes."""
    runs: dict[str, list[str]] = {}
    for batch in batches:
        if RUN_ID_KEY in batch.keys():
            runs.setdefault(str(batch.get(RUN_ID_KEY)), []).append(batch.source)
    return runs


def name_files(files: list[str]) -> str:
    """Files for a message, as given: up to three, else the first, the last and how many."""
    return ", ".join(files) if len(files) <= 3 else f"{files[0]} … {files[-1]} ({len(files)} files)"


def _mixed_classes(files_by_classes: dict[int, list[str]], runs: dict[str, list[str]]) -> str:
    """The error for batches with different class counts: each count's files, and their runs."""
    run_of = {file: run for run, files in runs.items() for file in files}
    parts = []
    for classes, files in files_by_classes.items():
        ids = sorted({run_of[file] for file in files if file in run_of})
        parts.append(f"{classes} classes in {name_files(files)}" + (f" (run {', '.join(ids)})" if ids else ""))
    return f"the dumps mix class counts: {'; '.join(parts)}; compare the dumps of one model at a time"


class DataPlan:
    """Checked batches ready to be read in row chunks; ``info`` describes them.

    :meth:`ranges` and :meth:`decode` let several threads read disjoint chunks; the statistics that
    ``info`` gathers on the way are updated under a lock, and :meth:`finish_pass` settles them.
    Readers in forked processes gather their own: :meth:`pass_state` and :meth:`absorb_pass_state`
    bring them back.
    """

    def __init__(self, info: DataInfo, sources: list[_Source], options: LoadOptions):
        self.info, self.sources, self.options = info, sources, options
        self._lock = threading.Lock()
        self._mapped: dict[int, list] = {}  # batch index -> [its views, readers holding them]
        self._start_pass()

    def _views(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """The (logits, targets, mask) views of batch ``index``, mapped once for all the readers
        that hold it; each call is matched by one :meth:`_release`."""
        with self._lock:
            entry = self._mapped.get(index)
            if entry is None:
                source = self.sources[index]
                views = (source.logits.view(), source.targets.view(), source.mask.view() if source.mask is not None else None)
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
        self._any_finite = False

    def pass_state(self) -> tuple[dict[int, int], bool, bool]:
        """What this pass has gathered so far for ``info`` (for :meth:`absorb_pass_state`)."""
        with self._lock:
            return dict(self.info.out_of_range_labels), self._unit_interval, self._any_finite

    def absorb_pass_state(self, state: tuple[dict[int, int], bool, bool]) -> None:
        """Add the :meth:`pass_state` of another process's reads of this plan (other chunks of
        the same pass) to this one's."""
        labels, unit_interval, any_finite = state
        with self._lock:
            for value, number in labels.items():
                self.info.out_of_range_labels[value] = self.info.out_of_range_labels.get(value, 0) + number
            self._unit_interval &= unit_interval
            self._any_finite |= any_finite

    def ranges(self, rows: int | None = None) -> list[tuple[int, int, int]]:
        """``(source, start, stop)`` row ranges of at most ``rows`` rows (None: one per batch), in
        order, and starts a pass: the statistics of ``info`` are reset."""
        self._start_pass()
        spans = []
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
        """Settle ``info.out_of_range_labels`` and ``info.inputs_look_like_probabilities``."""
        self.info.out_of_range_labels = dict(sorted(self.info.out_of_range_labels.items()))
        self.info.inputs_look_like_probabilities = self.info.inputs == "logits" and self._unit_interval and self._any_finite

    def class_target_sums(self) -> np.ndarray:
        """``(C,)`` float64: each class's targets summed over every row as stored, before the ignore
        label (no class), a mask or a non-finite logit excludes anything — the rows labelled c for
        index targets, the sum of column c's values otherwise (hard targets: the positives). Reads
        the targets once more (not the logits)."""
        sums = np.zeros(self.info.num_classes)
        for source in self.sources:
            for values in source.targets.scan(source.rows, SCAN_ROWS):
                if self.info.encoding == "index":
                    labels = np.asarray(values, dtype=np.int64)
                    sums += np.bincount(labels[(labels >= 0) & (labels < len(sums))], minlength=len(sums))
                else:
                    sums += np.add.reduce(values, axis=0, dtype=np.float64)
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
                mask = source.mask.pick(local) if source.mask is not None else None
                with np.errstate(over="ignore"):
                    logits = np.array(source.logits.pick(local), dtype=np.float32)
                parts.append(self._decode(source, logits, source.targets.pick(local), mask, -1, count=False))
        return concatenate(parts, start=-1)

    @staticmethod
    def _finite_range(x: np.ndarray, needed: bool) -> tuple[np.ndarray | None, np.floating | None, np.floating | None]:
        """(the ``(n, C)`` non-finite mask or None, the least and the greatest finite value or None).
        The range costs two passes, so it is computed only when ``needed`` (else it is None and
        one pass, a sum, which any NaN or infinity makes non-finite, tells whether all is finite)."""
        if not x.size:
            return None, None, None
        if needed:
            low, high = x.min(), x.max()  # a NaN anywhere makes the minimum NaN
            finite = np.isfinite(low) and np.isfinite(high)
        else:
            low = high = None
            with np.errstate(invalid="ignore", over="ignore"):  # inf - inf, or large values
                finite = np.isfinite(np.add.reduce(x, axis=None))
        nonfinite = None if finite else ~np.isfinite(x)
        if nonfinite is None or not nonfinite.any():  # a sum of large finite values may overflow
            return None, low, high
        if needed:
            values = x[~nonfinite]
            low, high = (values.min(), values.max()) if values.size else (None, None)
        return nonfinite, low, high

    def _decode(self, source: _Source, x: np.ndarray, targets: np.ndarray, mask: np.ndarray | None, start: int, count: bool = True, check_finite: bool = True) -> Chunk:
        """A chunk from its ``(n, C)`` float32 logits ``x`` (converted to a new array from
        probabilities with ``--inputs probs``), its raw targets and mask. ``count``: add to the
        statistics of ``info`` (not when rows are read a second time); ``check_finite``: see
        :meth:`_Reader.decode`."""
        info, classes = self.info, self.info.num_classes
        n = len(x)
        if info.encoding == "index":
            labels = np.asarray(targets, dtype=np.int64)
            foreground = (labels >= 0) & (labels < classes)
            ignored_rows = labels == info.ignore_index
            out_of_range = ~(foreground | ignored_rows | (labels == info.background_index))
            target_rows = np.flatnonzero(foreground)
            target_cols = labels[target_rows]
            target_values = np.ones(len(target_rows), dtype=np.float32)
            if count and out_of_range.any():
                values, counts = np.unique(labels[out_of_range], return_counts=True)
                with self._lock:
                    for value, number in zip(values.tolist(), counts.tolist()):
                        info.out_of_range_labels[value] = info.out_of_range_labels.get(value, 0) + number
        else:
            y = np.asarray(targets, dtype=np.float32)
            target_rows, target_cols = np.nonzero(y)
            target_values = y[target_rows, target_cols]
            ignored_rows = out_of_range = np.zeros(n, dtype=bool)
        element_ignored = None
        if mask is not None:
            masked = np.asarray(mask) == 0
            if masked.ndim == 2:
                element_ignored = masked if masked.any() else None
            else:
                ignored_rows = ignored_rows | masked
        needed = info.inputs == "probs" or (count and self._unit_interval)
        nonfinite, low, high = self._finite_range(x, needed) if needed or check_finite else (None, None, None)
        if low is not None:
            if count:
                with self._lock:
                    self._any_finite = True
                    self._unit_interval &= bool(low >= 0) and bool(high <= 1)
            if info.inputs == "probs" and (low < 0 or high > 1):
                raise InputError(f"{source.batch.source}: key '{info.logits_key}' has values outside [0, 1] ({float(low):.3g} to {float(high):.3g}); --inputs probs needs probabilities")
        if info.inputs == "probs":
            x = np.clip(x, PROBABILITY_EPS, 1 - PROBABILITY_EPS)
            x = np.log(x / (1 - x))
        return Chunk(start, x, target_rows, target_cols, target_values, ignored_rows, out_of_range, element_ignored, nonfinite, heatmap=info.encoding == "heatmap")


def concatenate(chunks: list[Chunk], start: int) -> Chunk:
    """One chunk from several (row coordinates of the non-zero targets shifted accordingly)."""
    offsets = np.cumsum([0] + [len(chunk.logits) for chunk in chunks[:-1]])

    def joined(name: str) -> np.ndarray | None:
        parts = [getattr(chunk, name) for chunk in chunks]
        if all(part is None for part in parts):
            return None
        return np.concatenate([part if part is not None else np.zeros(chunk.logits.shape, dtype=bool) for part, chunk in zip(parts, chunks)])

    return Chunk(
        start,
        logits=np.concatenate([chunk.logits for chunk in chunks]),
        target_rows=np.concatenate([chunk.target_rows + int(offset) for chunk, offset in zip(chunks, offsets)]),
        target_cols=np.concatenate([chunk.target_cols for chunk in chunks]),
        target_values=np.concatenate([chunk.target_values for chunk in chunks]),
        ignored_rows=np.concatenate([chunk.ignored_rows for chunk in chunks]),
        out_of_range=np.concatenate([chunk.out_of_range for chunk in chunks]),
        element_ignored=joined("element_ignored"),
        nonfinite=joined("nonfinite"),
        heatmap=chunks[0].heatmap,
    )


def _class_names_from(batch: ArrayFile, num_classes: int) -> list[str] | None:
    if CLASS_NAMES_KEY not in batch.keys():
        return None
    names = batch.get(CLASS_NAMES_KEY)
    if not isinstance(names, np.ndarray) or names.dtype.kind not in "US" or names.ndim != 1:
        raise InputError(f"{batch.source}: key '{CLASS_NAMES_KEY}' must be a 1-D array of strings")
    if len(names) != num_classes:
        raise InputError(f"{batch.source}: key '{CLASS_NAMES_KEY}' has {len(names)} names; expected {num_classes} (one per class)")
    return [str(name) for name in names]


def load(paths: list[Path], options: LoadOptions = LoadOptions()) -> Dataset:
    """Read, check and concatenate the dumps along the sample axis (the full-tensor path).

    Raises:
        InputError: a missing file or key, a wrong shape or dtype, non-integer class ids, pickled
            objects, a corrupt archive; the message names the file and the key.
    """
    return load_batches(read_batches(paths), options)


def load_batches(batches: list[ArrayFile], options: LoadOptions = LoadOptions()) -> Dataset:
    """Every row of the batches as one :class:`Dataset`: the chunks of :func:`plan`, concatenated
    (imports torch)."""
    import torch

    data_plan = plan(batches, options)
    whole = concatenate(list(data_plan.chunks()), start=0)
    tables = {name: torch.from_numpy(np.ascontiguousarray(getattr(whole, name))) for name in ("logits", "targets", "valid", "positive", "ignored")}
    return Dataset(**vars(data_plan.info), **tables)


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


def read_class_names(path: Path) -> list[str]:
    """Class names from a file: one per line, or a YAML list, or a YAML mapping ``{index: name}``
    (a regular file of text only: see :mod:`lossaudit.io.textfiles`)."""
    text = read_text(path, "class names")
    try:
        parsed = parse_yaml(text, path)
    except InputError:
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
