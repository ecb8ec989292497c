"""How the dumps are read: the keys looked for, the target encodings, and :class:`LoadOptions`
(``compare``'s options that fix the conventions; None means detect)."""

from __future__ import annotations

from dataclasses import dataclass

LOGITS_KEYS = ("logits", "pred", "preds", "outputs", "scores")
TARGETS_KEYS = ("targets", "labels", "target", "label", "gt", "y")
MASK_KEY = "mask"
WEIGHTS_KEY = "weights"
PADDING_KEY = "padding"
POPULATION_KEYS = ("population_rows", "population_elements")
SAMPLE_RATE_KEY = "sample_rate"
RECORDED_IGNORED_KEY = "ignored"
"""The keys of a weighted sample: :mod:`lossaudit.io.dataset.weights`."""
NEGATIVES_KEYS = ("negatives_logits", "negatives_weights", "negatives_per_class")
"""A weighted sample's kept elements of the rows without a target, grouped by class:
:mod:`lossaudit.io.dataset.compact`."""
CLASS_NAMES_KEY = "class_names"
ENCODINGS = ("index", "onehot", "soft", "heatmap")
INPUTS = ("auto", "logits", "probs", "softmax-probs", "sigmoid-probs")
"""``--inputs``: ``probs`` is ``softmax-probs`` when every row sums to 1 (within
:data:`~lossaudit.io.dataset.decode.ROW_SUM_TOLERANCE`), else ``sigmoid-probs``."""
LABEL_BASES = (0, 1)


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
    label_base: int = 0
    """The index label of the first class: 0, or 1 (labels 1..C; ``--label-base``)."""
