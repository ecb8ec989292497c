"""Hard-negative mining (``ohem``, SSD-style): every positive row and the hardest negatives."""

from __future__ import annotations

from lossaudit._lazy import F, torch
from lossaudit.losses.common import check_reduction, reduce
from lossaudit.losses.spec import SIGMOID, Bounds, LossSpec, Param

OHEM = "ohem"

PARAMS = (Param("ohem_ratio", 3.0, "OHEM negatives kept per positive.", metavar="R", bounds=Bounds(0)),)


def ohem_row_selection(row_loss: torch.Tensor, positive_rows: torch.Tensor, neg_pos_ratio: float = 3.0) -> torch.Tensor:
    """Rows that hard-negative mining keeps: every positive row and the ``ratio * #pos`` negative
    rows of highest loss (SSD); among negatives tied at the last loss kept, the earliest rows.
    Returns a ``(N,)`` bool mask."""
    n_pos = int(positive_rows.sum())
    negative_loss = torch.where(positive_rows, torch.full_like(row_loss, -torch.inf), row_loss)
    k = min(int(neg_pos_ratio * n_pos), int((~positive_rows).sum()))
    keep = positive_rows.clone()
    if k > 0:
        last = torch.topk(negative_loss, k).values[-1]
        above = negative_loss > last
        keep |= above
        keep[torch.nonzero(negative_loss == last).flatten()[: k - int(above.sum())]] = True
    return keep


def ohem(
    logits: torch.Tensor,
    targets: torch.Tensor,
    neg_pos_ratio: float = 3.0,
    reduction: str = "mean",
) -> torch.Tensor:
    """Cross-entropy with hard-negative mining (SSD-style OHEM) over sigmoid anchors.

    A row's loss is its sigmoid cross-entropy summed over classes (so background anchors, the
    all-zero rows, are expressible; SSD uses a softmax with a background logit instead). Every
    positive row (a target ≥ 0.5 in some class) is kept, plus the ``neg_pos_ratio * #pos``
    negative rows of highest loss; 'mean' divides the kept sum by ``max(#pos, 1)``. With no
    positive row no negative is kept and the loss is 0.

    Args:
        logits: ``(N, C)`` logits.
        targets: ``(N, C)`` floats in [0, 1]; an all-zero row is a negative (background) anchor.
        neg_pos_ratio: negatives kept per positive (3 in SSD).
        reduction: 'none' (``(N,)`` row losses, 0 where not kept) | 'mean' | 'sum'.
    """
    check_reduction(reduction)
    row_loss = F.binary_cross_entropy_with_logits(logits, targets, reduction="none").sum(dim=1)
    positive_rows = targets.ge(0.5).any(dim=1)
    keep = ohem_row_selection(row_loss.detach(), positive_rows, neg_pos_ratio)
    return reduce(row_loss * keep, reduction, max(int(positive_rows.sum()), 1))


def _ohem_terms(x: torch.Tensor, y: torch.Tensor, valid: torch.Tensor, positive: torch.Tensor, neg_pos_ratio: float) -> torch.Tensor:
    element = F.binary_cross_entropy_with_logits(x, y, reduction="none")
    positive_rows = positive.any(dim=1)
    keep = ohem_row_selection((element * valid).sum(dim=1).detach(), positive_rows, neg_pos_ratio)
    return element * keep[:, None]


def _positive_rows(valid: torch.Tensor, y: torch.Tensor, positive: torch.Tensor) -> tuple[float, str]:
    return float(positive.any(dim=1).sum()), "positive rows"


LOSSES = (
    LossSpec(
        OHEM,
        SIGMOID,
        "BCE over the positive rows and the hardest negative rows (SSD hard-negative mining)",
        params=("ohem_ratio",),
        arguments=lambda s: {"neg_pos_ratio": s.ohem_ratio},
        terms=_ohem_terms,
        normaliser=_positive_rows,
        empty_name="positive rows",
    ),
)
