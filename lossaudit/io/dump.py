"""``lossaudit.save``: dump batches from a training or validation loop in lossaudit's format."""

from __future__ import annotations

import errno
import itertools
import os
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from lossaudit.io.filemode import create_temporary

if TYPE_CHECKING:
    import torch


def from_tensor(value: Any) -> Any:
    """A torch tensor as a numpy array (bfloat16 as float32); anything else unchanged. torch is
    not imported here."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):
        value = value.detach().cpu()
        if str(value.dtype) == "torch.bfloat16":
            value = value.float()
        value = value.numpy()
    return value


def _to_numpy(value: object, name: str, kinds: str = "biuf") -> np.ndarray:
    """``value`` (a tensor or anything numpy takes) as an array of one of the dtype ``kinds``
    (numpy's letters: ``f`` floating point, ``biuf`` any real number or bool).

    Raises:
        TypeError: another dtype (an object array, strings, complex numbers).
    """
    array = np.asarray(from_tensor(value))
    if array.dtype.kind not in kinds:
        expected = "floating-point" if kinds == "f" else "numeric"
        raise TypeError(f"{name} has dtype {array.dtype}; expected {expected} values")
    return array


RUN_ID = uuid.uuid4().hex[:12]
"""This process's run id: every batch it saves carries it, so ``compare`` can tell when a folder
mixes the batches of two runs (a re-run writing into the same dump folder)."""
RUN_ID_KEY, SHAPE_KEY = "run_id", "logits_shape"


def _class_axis(logits: np.ndarray | torch.Tensor) -> int:
    """Where the classes are: 1 for ``(B, C, H, W)``, else the last axis (``(N, C)``, ``(B, A, C)``)."""
    return 1 if logits.ndim == 4 else logits.ndim - 1


def _check_shapes(logits: np.ndarray, targets: np.ndarray, mask: np.ndarray | None, class_names: list[str] | None) -> None:
    """The checks ``compare`` would make, at the call that can still be fixed.

    Raises:
        ValueError: naming the array, its shape and the shapes expected.
    """
    if logits.ndim < 2 or 0 in logits.shape:
        raise ValueError(f"logits has shape {logits.shape}; expected (N, C), (B, A, C) or (B, C, H, W) with every size at least 1")
    axis = _class_axis(logits)
    rows = logits.shape[:axis] + logits.shape[axis + 1 :]
    if targets.shape not in (rows, logits.shape):
        raise ValueError(
            f"targets has shape {targets.shape} but logits has shape {logits.shape}; expected {rows} class indices or {logits.shape} one-hot/soft targets"
        )
    if mask is not None and mask.shape not in (rows, logits.shape):
        raise ValueError(f"mask has shape {mask.shape}; expected {rows} (rows) or {logits.shape} (elements)")
    if class_names is not None and len(class_names) != logits.shape[axis]:
        raise ValueError(f"class_names has {len(class_names)} names; logits has {logits.shape[axis]} classes")


def save(
    path: str | os.PathLike, logits: object, targets: object, class_names: list[str] | None = None, mask: object = None, run_id: str | None = None
) -> Path:
    """Write one batch of predictions to an uncompressed ``.npz`` that ``lossaudit compare`` reads.

    Args:
        path: a folder (batches are appended as ``batch-000000.npz``, ``batch-000001.npz``, ...):
            an existing one, a name ending in ``/`` or a name without a suffix; or a ``.npz`` file
            name. An existing file is never overwritten.
        logits: ``(N, C)``, ``(B, A, C)`` or ``(B, C, H, W)`` logits (tensor or array).
        targets: class ids without the class axis, or one-hot / soft targets shaped like logits.
        class_names: optional list of C names.
        mask: optional, 0 where an element or row is ignored; shaped like the rows or the logits.
        run_id: recorded in the file (default: this process's :data:`RUN_ID`), with the logits'
            shape, so ``compare`` can say when a folder mixes runs or class counts. Processes that
            write one run together (DDP ranks) pass the same id, such as the experiment's name.

    Returns:
        The path written. The file is written to a temporary name and linked into place, so a
        reader never sees a partial batch and two writers never clobber each other; it gets the
        mode ``open()`` would give it under the user's umask.

    Raises:
        ValueError: shapes that ``compare`` could not read, or a file name that is not ``.npz``.
        TypeError: logits that are not floating point, targets or a mask that are not numbers.
        FileExistsError: ``path`` names an existing file (the error names it).

    Example:
        >>> for step, (images, labels) in enumerate(val_loader):  # doctest: +SKIP
        ...     lossaudit.save("dumps/", logits=model(images), targets=labels)
        >>> import tempfile
        >>> folder = tempfile.mkdtemp()
        >>> save(folder, logits=np.zeros((2, 3), np.float32), targets=np.array([0, 2])).name
        'batch-000000.npz'
    """
    target = Path(path)
    is_folder = target.is_dir() or str(path).endswith(("/", os.sep)) or not target.suffix
    if not is_folder and target.suffix != ".npz":
        raise ValueError(f"{target}: lossaudit.save writes .npz files; give a name ending in .npz, or a folder (a name ending in '/')")
    arrays = {"logits": _to_numpy(logits, "logits", "f"), "targets": _to_numpy(targets, "targets")}
    if mask is not None:
        arrays["mask"] = _to_numpy(mask, "mask")
    names = None if class_names is None else [str(name) for name in class_names]
    _check_shapes(arrays["logits"], arrays["targets"], arrays.get("mask"), names)
    if names is not None:
        arrays["class_names"] = np.asarray(names)
    arrays[RUN_ID_KEY] = np.asarray(run_id or RUN_ID)
    arrays[SHAPE_KEY] = np.asarray(arrays["logits"].shape, dtype=np.int64)
    folder = target if is_folder else target.parent
    folder.mkdir(parents=True, exist_ok=True)
    if not is_folder:
        return write_new(folder, [target], arrays, "lossaudit.save")
    first = len(list(folder.glob("batch-*.npz")))
    return write_new(folder, (folder / f"batch-{index:06d}.npz" for index in itertools.count(first)), arrays, "lossaudit.save")


SAMPLE_KEYS = (
    "logits",
    "targets",
    "weights",
    "negatives_logits",
    "negatives_weights",
    "negatives_per_class",
    "population_rows",
    "population_elements",
    "sample_rate",
)
"""The keys of a weighted batch (issue 24; docs/compare/weighted.md): the rows with a target as
``logits``, ``targets`` and ``weights`` (``>= 1``, inverse inclusion probabilities), ``(P, C)``; the
kept elements of the other rows grouped by class, ``negatives_logits`` and ``negatives_weights``
``(K,)`` and ``negatives_per_class`` ``(C,)``; the scalars ``population_rows``,
``population_elements`` (the batch before sampling) and ``sample_rate`` (the easy negatives' rate,
-1 for a target size); optionally ``padding`` (``(P, C)`` bool, masked elements of the rows) and
``ignored``, ``(C,)`` elements dropped by a mask or the ignore label, per class."""


def save_sample(path: str | os.PathLike, batch: dict[str, np.ndarray], run_id: str) -> Path:
    """Write one weighted batch (the arrays :func:`lossaudit.record.sample_batch` returns) to the new
    file ``path`` (``.npz``), with ``run_id`` and the logits' shape, the way :func:`save` writes.

    Raises:
        ValueError: a key of :data:`SAMPLE_KEYS` is missing, or an unknown key is given.
        FileExistsError: ``path`` exists (it is never overwritten).
    """
    missing = [key for key in SAMPLE_KEYS if key not in batch]
    unknown = sorted(set(batch) - set(SAMPLE_KEYS) - {"padding", "ignored", "class_names"})
    if missing or unknown:
        raise ValueError(
            f"a weighted batch needs the keys {', '.join(SAMPLE_KEYS)} (and may have padding, ignored, class_names); missing {missing}, unknown {unknown}"
        )
    arrays = {key: np.asarray(value) for key, value in batch.items()}
    arrays[RUN_ID_KEY] = np.asarray(run_id)
    arrays[SHAPE_KEY] = np.asarray(arrays["logits"].shape, dtype=np.int64)
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    return write_new(target.parent, [target], arrays, "lossaudit")


def write_new(folder: Path, names: Iterable[Path], arrays: dict[str, np.ndarray], writer: str) -> Path:
    """Write ``arrays`` to an uncompressed ``.npz`` in ``folder``: to a temporary name (created with
    the user's umask), then linked to the first of ``names`` (files of ``folder``) that does not
    exist yet, so a reader never sees a partial batch and an existing file is never overwritten.

    Returns:
        The name it got.

    Raises:
        FileExistsError: every name exists (the error names the last and ``writer``).
    """
    descriptor, temporary = create_temporary(folder, ".lossaudit-", ".npz")
    try:
        with os.fdopen(descriptor, "wb") as handle:
            np.savez(handle, **cast("dict[str, Any]", arrays))  # numpy's stub types **kwds as its allow_pickle
        for name in names:
            try:
                os.link(temporary, name)  # fails rather than overwrite
                return name
            except FileExistsError:
                last = name
        raise FileExistsError(errno.EEXIST, f"exists; {writer} never overwrites a file", str(last))
    finally:
        temporary.unlink()
