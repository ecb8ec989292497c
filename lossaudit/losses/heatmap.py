"""CenterNet's penalty-reduced focal loss on Gaussian heatmaps (``centernet``)."""

from __future__ import annotations

from lossaudit._lazy import torch
from lossaudit.losses.common import check_reduction, reduce
from lossaudit.losses.spec import SIGMOID, LintKind, LossSpec

CENTERNET = "centernet"
HEATMAP_ENCODING = "heatmap"


CENTERNET_PROB_CLAMP = 1e-4
"""CenterNet's ``_sigmoid`` clamps heatmap probabilities to [1e-4, 1 - 1e-4]."""


def centernet(probs: torch.Tensor, heatmap: torch.Tensor, alpha: float = 2.0, beta: float = 4.0, reduction: str = "mean") -> torch.Tensor:
    """CenterNet / CornerNet penalty-reduced focal loss on probability heatmaps.

    ``loss = -[Σ_pos log p (1 - p)**alpha + Σ_neg log(1 - p) p**alpha (1 - gt)**beta] / #pos``
    with ``pos = (gt == 1)``.

    Args:
        probs: ``(B, C, H, W)`` (or any shape) probabilities, already clamped away from 0 and 1
            (CenterNet clamps ``sigmoid`` to [1e-4, 1 - 1e-4]: see :data:`CENTERNET_PROB_CLAMP`).
        heatmap: same shape, Gaussian-splatted targets with exactly 1 at object centres.
        alpha, beta: the exponents (2 and 4 in CenterNet; mmdet's GaussianFocalLoss calls them
            alpha and gamma).
        reduction: 'none' (element terms, unnormalised) | 'mean' (sum / #peaks; with no peaks, the
            unnormalised sum, as CenterNet returns it) | 'sum'.
    """
    check_reduction(reduction)
    pos = heatmap.eq(1)
    pos_terms = -torch.log(probs) * (1 - probs) ** alpha
    neg_terms = -torch.log(1 - probs) * probs**alpha * (1 - heatmap) ** beta
    loss = torch.where(pos, pos_terms, neg_terms)
    n_pos = int(pos.sum())
    return reduce(loss, reduction, n_pos if n_pos else 1)


def _centernet_terms(x: torch.Tensor, y: torch.Tensor, valid: torch.Tensor, positive: torch.Tensor, alpha: float, beta: float) -> torch.Tensor:
    """``compare``'s terms: sigmoid(x) clamped as CenterNet clamps its float32 heatmaps, to the
    float32 values of 1e-4 and 1 - 1e-4 (0.99989998: in float64, 1 - 1e-4 would give -log(1 - p)
    1.8e-5 larger at every clamped negative), whatever the dtype of ``x``."""
    low, high = torch.tensor([CENTERNET_PROB_CLAMP, 1 - CENTERNET_PROB_CLAMP], dtype=torch.float32).tolist()
    return centernet(torch.sigmoid(x).clamp(low, high), y, alpha=alpha, beta=beta, reduction="none")


def _peaks(valid: torch.Tensor, y: torch.Tensor, positive: torch.Tensor) -> tuple[float, str]:
    return float((y.eq(1) & valid).sum()), "peaks"


LOSSES = (
    LossSpec(
        CENTERNET,
        SIGMOID,
        "CenterNet penalty-reduced focal loss on heatmaps (alpha 2, beta 4)",
        arguments=lambda s: {"alpha": 2.0, "beta": 4.0},
        terms=_centernet_terms,
        normaliser=_peaks,
        empty_name="1 (no peaks)",
        default_when=lambda info: info.encoding == HEATMAP_ENCODING,
        default_on="heatmaps",
        lint_kind=CENTERNET,
    ),
)
LINT_KINDS = (
    LintKind(
        CENTERNET,
        "CenterNet penalty-reduced focal loss on probability heatmaps",
        CENTERNET,
        focusing=None,
        normalisations=("none", "sum", "sum per positive"),
        usual_normalisation="the sum per peak",
    ),
)
