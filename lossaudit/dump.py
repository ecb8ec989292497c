"""``lossaudit.save``: dump batches from a training or validation loop in lossaudit's format."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np


def _to_numpy(value: object, name: str) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor; torch is not imported here
        value = value.detach().cpu()
        if str(value.dtype) == "torch.bfloat16":
            value = value.float()
        value = value.numpy()
    array = np.asarray(value)
    if array.dtype == object:
        raise TypeError(f"{name} must be numeric (or str for class_names); got an object array")
    return array


def save(path: str | os.PathLike, logits: object, targets: object, class_names: list[str] | None = None, mask: object = None) -> Path:
    """Write one batch of predictions to an uncompressed ``.npz`` that ``lossaudit compare`` reads.

    Args:
        path: a folder (batches are appended as ``batch-000000.npz``, ``batch-000001.npz``, ...)
            or a ``.npz`` file name. An existing file is never overwritten.
        logits: ``(N, C)``, ``(B, A, C)`` or ``(B, C, H, W)`` logits (tensor or array).
        targets: class ids without the class axis, or one-hot / soft targets shaped like logits.
        class_names: optional list of C names.
        mask: optional, 0 where an element or row is ignored.

    Returns:
        The path written. The file is written to a temporary name and linked into place, so a
        reader never sees a partial batch and two writers never clobber each other.

    Example:
        >>> for step, (images, labels) in enumerate(val_loader):  # doctest: +SKIP
        ...     lossaudit.save("dumps/", logits=model(images), targets=labels)
    """
    arrays = {"logits": _to_numpy(logits, "logits"), "targets": _to_numpy(targets, "targets")}
    if mask is not None:
        arrays["mask"] = _to_numpy(mask, "mask")
    if class_names is not None:
        arrays["class_names"] = np.asarray([str(name) for name in class_names])
    target = Path(path)
    folder = target if target.suffix != ".npz" else target.parent
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=folder, prefix=".lossaudit-", suffix=".npz", delete=False) as handle:
        np.savez(handle, **arrays)
        temporary = Path(handle.name)
    try:
        if target.suffix == ".npz":
            os.link(temporary, target)  # fails rather than overwrite
            return target
        index = len(list(folder.glob("batch-*.npz")))
        while True:
            candidate = folder / f"batch-{index:06d}.npz"
            try:
                os.link(temporary, candidate)
                return candidate
            except FileExistsError:
                index += 1
    finally:
        temporary.unlink()
