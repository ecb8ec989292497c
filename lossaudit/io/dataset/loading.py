"""Every row at once (the full-tensor path, the tests' oracle): :func:`load` concatenates the chunks
of a :func:`~lossaudit.io.dataset.planning.plan` into one :class:`Dataset` of torch tensors. The only
module of the package that imports torch (on call)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lossaudit.io.dataset.chunk import concatenate
from lossaudit.io.dataset.info import DataInfo
from lossaudit.io.dataset.options import LoadOptions
from lossaudit.io.dataset.planning import plan
from lossaudit.io.readers import ArrayFile, read_batches

if TYPE_CHECKING:
    import torch


@dataclass
class Dataset(DataInfo):
    """Every row at once: the dense tables of :class:`~lossaudit.io.dataset.chunk.Chunk` as torch tensors, for the full-tensor
    engine (:func:`lossaudit.compare.oracle.tally`)."""

    logits: torch.Tensor = None  # type: ignore[assignment]
    targets: torch.Tensor = None  # type: ignore[assignment]
    valid: torch.Tensor = None  # type: ignore[assignment]
    positive: torch.Tensor = None  # type: ignore[assignment]
    ignored: torch.Tensor = None  # type: ignore[assignment]


def load(paths: list[Path], options: LoadOptions = LoadOptions()) -> Dataset:
    """Read, check and concatenate the dumps along the sample axis (the full-tensor path).

    Raises:
        InputError: a missing file or key, a wrong shape or dtype, non-integer class ids, pickled
            objects, a corrupt archive; the message names the file and the key.
    """
    return load_batches(read_batches(paths), options)


def load_batches(batches: list[ArrayFile], options: LoadOptions = LoadOptions()) -> Dataset:
    """Every row of the batches as one :class:`Dataset`: the chunks of :func:`~lossaudit.io.dataset.planning.plan`, concatenated
    (imports torch)."""
    import torch

    data_plan = plan(batches, options)
    whole = concatenate(list(data_plan.chunks()), start=0)
    tables: dict[str, Any] = {
        name: torch.from_numpy(np.ascontiguousarray(getattr(whole, name))) for name in ("logits", "targets", "valid", "positive", "ignored")
    }
    return Dataset(**vars(data_plan.info), **tables)
