"""Turn prediction dumps into rows of logits and target probabilities: ``(N, C)`` tables.

:func:`plan` checks the dumps without reading the logits and returns a :class:`DataPlan` that
decodes them in row chunks (:class:`Chunk`, numpy arrays), which is how ``compare`` streams them;
:func:`load` concatenates every chunk into one :class:`Dataset` of torch tensors (the full-tensor
path, the tests' oracle). Only :func:`load` and ``.pt`` files import torch.

Modules, by job: :mod:`.options` (keys and :class:`LoadOptions`), :mod:`.info` (:class:`DataInfo`),
:mod:`.checks` (per-batch checks and their messages), :mod:`.planning` (:func:`plan`), :mod:`.rows`
(memory-mapped row access), :mod:`.reader` (:class:`DataPlan`: chunked, threaded reads),
:mod:`.decode` (raw rows into chunk parts), :mod:`.chunk` (:class:`Chunk`, :func:`is_positive`),
:mod:`.loading` (:func:`load`), :mod:`.classes` (class names).

Conventions (each stated in ``compare``'s output):

- Shapes: logits ``(N, C)``; ``(B, A, C)`` anchors, flattened to ``(B*A, C)``; ``(B, C, H, W)``
  maps with the class axis 1, flattened to ``(B*H*W, C)``. ``class_dim`` overrides the class axis
  (a shape error names another axis that fits the targets). Row targets may end in an axis of 1.
- Targets: ``index`` (integer class ids, shape of logits without the class axis; the background
  index, default C, is an all-zero row; the ignore index, default -1, drops the row; ``label_base``
  1 reads labels 1..C, the background then 0), ``onehot``
  (0/1, multi-hot allowed, all-zero row = background), ``soft`` (floats in [0, 1]), ``heatmap``
  (``(B, C, H, W)`` Gaussian heatmaps with peaks of exactly 1).
- A positive element has target ≥ 0.5 (heatmaps: target == 1): :func:`is_positive`.
- ``mask`` (optional, 0 = ignore) has the shape of the index targets (rows) or of the logits.
"""

from lossaudit.io.dataset.checks import find_key, name_files
from lossaudit.io.dataset.chunk import Chunk, is_positive, positive_rule
from lossaudit.io.dataset.classes import read_class_names
from lossaudit.io.dataset.info import DataInfo
from lossaudit.io.dataset.loading import Dataset, load, load_batches
from lossaudit.io.dataset.options import (
    CLASS_NAMES_KEY,
    LOGITS_KEYS,
    MASK_KEY,
    TARGETS_KEYS,
    LoadOptions,
)
from lossaudit.io.dataset.planning import plan
from lossaudit.io.dataset.reader import DataPlan
from lossaudit.io.dataset.reader import (
    _Reader as _Reader,  # re-exported for tests/test_sweep.py, which counts its decodes
)

__all__ = [
    "CLASS_NAMES_KEY",
    "LOGITS_KEYS",
    "MASK_KEY",
    "TARGETS_KEYS",
    "Chunk",
    "DataInfo",
    "DataPlan",
    "Dataset",
    "LoadOptions",
    "find_key",
    "is_positive",
    "load",
    "load_batches",
    "name_files",
    "plan",
    "positive_rule",
    "read_class_names",
]
