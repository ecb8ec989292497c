"""Cross-entropy: per-class sigmoid BCE (``bce``) and softmax CE over the classes (``ce``)."""

from __future__ import annotations

from lossaudit._lazy import F, torch
from lossaudit.losses.common import check_reduction, reduce
from lossaudit.losses.focusing import softmax_focal, softmax_focal_terms
from lossaudit.losses.spec import SIGMOID, SOFTMAX, LossSpec, always, except_heatmaps, valid_elements

BCE, CE = "bce", "ce"


def bce(logits: torch.Tensor, targets: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Per-class sigmoid binary cross-entropy, computed from logits in the stable form.

    ``BCE = max(x, 0) - x*y + log(1 + exp(-|x|))``.

    Args:
        logits: ``(N, C)`` (or any shape) logits.
        targets: same shape as ``logits``, floats in [0, 1]; an all-zero row is background.
        reduction: 'none' | 'mean' | 'sum'. 'mean' averages over all N·C elements.

    Example:
        >>> bce(torch.tensor([[2.0]]), torch.tensor([[1.0]])).item()  # -log(sigmoid(2))
        0.12692...
    """
    check_reduction(reduction)
    return reduce(F.binary_cross_entropy_with_logits(logits, targets, reduction="none"), reduction)


def ce(logits: torch.Tensor, targets: torch.Tensor, reduction: str = "mean", ignore_index: int = -100) -> torch.Tensor:
    """Softmax cross-entropy over classes: ``-log q_y`` per row (``-Σ_c y_c log q_c`` for soft targets).

    Equal to ``torch.nn.functional.cross_entropy`` (its 'mean' divides by the rows not ignored).

    Args:
        logits: ``(N, C)`` logits.
        targets: ``(N,)`` int class indices, or ``(N, C)`` class probabilities.
        reduction: 'none' (``(N,)``) | 'mean' | 'sum'.
        ignore_index: class index that marks a row to skip.
    """
    return softmax_focal(logits, targets, gamma=0.0, alpha=None, reduction=reduction, ignore_index=ignore_index)


def _bce_terms(x: torch.Tensor, y: torch.Tensor, valid: torch.Tensor, positive: torch.Tensor) -> torch.Tensor:
    return bce(x, y, reduction="none")


def _ce_terms(x: torch.Tensor, y: torch.Tensor, class_counts: torch.Tensor) -> torch.Tensor:
    return softmax_focal_terms(x, y, gamma=0.0)


LOSSES = (
    LossSpec(CE, SOFTMAX, "softmax cross-entropy, -log q_y per row", terms=_ce_terms, default_when=except_heatmaps),
    LossSpec(BCE, SIGMOID, "per-class sigmoid binary cross-entropy", terms=_bce_terms, normaliser=valid_elements, default_when=always),
)
