"""What a :func:`~lossaudit.io.dataset.planning.plan` found in the dumps: :class:`DataInfo`, the report's
``input`` section."""

from __future__ import annotations

from dataclasses import dataclass, field


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
    """How the values were read: ``logits``, ``softmax-probs`` (log p) or ``sigmoid-probs`` (logit p)."""
    background_index: int | None
    ignore_index: int | None
    class_names: list[str]
    num_rows: int
    num_classes: int
    inputs_look_like_probabilities: bool = False
    probabilities_kind: str | None = None
    """With ``inputs_look_like_probabilities``: ``softmax-probs`` when every row sums to 1, else
    ``sigmoid-probs`` (what ``--inputs`` should say)."""
    label_base: int = 0
    """The index label of the first class (``--label-base``): label ``k`` is class ``k - label_base``."""
    background_default: bool = True
    """The background label is the default (not ``--background-index``)."""
    out_of_range_labels: dict[int, int] = field(default_factory=dict)
    runs: dict[str, list[str]] = field(default_factory=dict)
    """The files of each run id that ``lossaudit.save`` recorded (files without one are not listed)."""
    multi_label: bool = False
    """Some row of one-hot or soft targets has two or more positive targets (as stored: see
    :func:`~lossaudit.io.dataset.chunk.is_positive`)."""
    weighted: bool = False
    """Some batch holds sampling ``weights`` (:mod:`lossaudit.io.dataset.weights`): every chunk then
    carries element weights (1 for a batch without them), and every sum is a Horvitz–Thompson sum."""
    sample: dict | None = None
    """None unless :attr:`weighted`: :func:`lossaudit.io.dataset.weights.sample_info` (elements
    stored, the recorded population's rows and elements, the sample rate, the recorded ``ignored``)."""

    @property
    def grid(self) -> tuple[int, int] | None:
        """``(H, W)`` when the rows are the cells of maps — logits of 4 or more dimensions, ``(B, C,
        H, W)`` or ``(B, C, D, H, W)`` (class axis anywhere), every file the same map size — else
        None. The rows then run over the last two axes fastest, in row-major order."""
        grids = {tuple(dim for axis, dim in enumerate(shape) if axis != self.class_dim % len(shape))[-2:] for shape in self.logits_shapes if len(shape) >= 4}
        if len(grids) != 1 or len(self.logits_shapes) != sum(len(shape) >= 4 for shape in self.logits_shapes):
            return None
        height, width = grids.pop()
        return height, width
