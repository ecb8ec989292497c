"""Soft-target focal losses of the GFL family: Quality Focal Loss (``qfl``), Distribution Focal
Loss (reference only: box regression) and Varifocal Loss (``vfl``)."""

from __future__ import annotations

from lossaudit._lazy import F, torch
from lossaudit.losses.common import check_reduction, check_soft_targets, reduce
from lossaudit.losses.spec import (
    SIGMOID,
    Bounds,
    LintKind,
    LossSpec,
    Param,
    valid_elements,
)

QFL, VFL = "qfl", "vfl"
SOFT_ENCODING = "soft"
VFL_ALPHA = 0.75
"""VFL's weight of the negatives (mmdet's default), fixed in ``compare``: ``--alpha`` is focal's, of the positives."""

PARAMS = (Param("qfl_beta", 2.0, "QFL's exponent beta of |y - p|.", metavar="B", bounds=Bounds(0)),)


def qfl(logits: torch.Tensor, targets: torch.Tensor, beta: float = 2.0, reduction: str = "mean") -> torch.Tensor:
    """Quality Focal Loss (GFL, Li et al. 2020), numerically as mmdet's ``quality_focal_loss``.

    ``QFL = |y - p|**beta * BCE_with_logits(x, y)``: a negative (y = 0) costs ``p**beta * BCE(x, 0)``,
    a positive ``|q - p|**beta * BCE(x, q)`` with q its IoU quality. Its minimum, 0, is at p = y.

    Args:
        logits: ``(N, C)`` logits, one row per anchor.
        targets: ``(N, C)`` soft targets in [0, 1]: the IoU quality q at a positive anchor's class
            column, 0 elsewhere; an all-zero row is background. (mmdet's ``(labels, scores)`` form
            with background label C is ``one_hot(labels, C + 1)[:, :C] * scores[:, None]``.)
        beta: exponent of the modulating factor (2 in GFL).
        reduction: 'none' (``(N, C)`` element terms; sum over dim 1 for mmdet's per-anchor loss) |
            'mean' | 'sum'. 'mean' divides the sum by N anchors, as mmdet's 'mean' does after
            summing each anchor over its classes; GFL's head instead divides the sum by the
            number of positive anchors (``reduction='sum'`` and divide).

    Raises:
        ValueError: targets of another shape or outside [0, 1], beta < 0, an unknown reduction.

    Example:
        >>> round(qfl(torch.zeros(1, 1), torch.ones(1, 1)).item(), 4)  # 0.5**2 * log 2
        0.1733
    """
    check_reduction(reduction)
    check_soft_targets(logits, targets)
    if beta < 0:
        raise ValueError(f"beta must be >= 0; got {beta}")
    scale = (targets - torch.sigmoid(logits)).abs() ** beta
    loss = scale * F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    return reduce(loss, reduction, logits.shape[0])


def dfl(logits: torch.Tensor, targets: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Distribution Focal Loss (GFL, Li et al. 2020) over discretised regression bins.

    A target y between bins ``l = floor(y)`` and ``r = l + 1`` is the two-point distribution
    ``(r - y, y - l)``: ``DFL = -(r - y) log q_l - (y - l) log q_r``, ``q = softmax(x)`` over the
    bins. Its minimum over q puts exactly that mass on l and r (the linear split), so the expected
    bin ``Σ_i i q_i`` equals y. As mmdet's ``distribution_focal_loss`` and ultralytics' ``DFLoss``.

    Args:
        logits: ``(N, B)`` logits over bins 0 .. B-1 (bin values in bin units, B >= 2).
        targets: ``(N,)`` floats in [0, B - 1], e.g. one box side's distance divided by the stride.
            The conventions differ: mmdet's ``reg_max`` is B - 1 (17 bins for reg_max 16) and it
            clamps targets to ``reg_max - 0.1``; ultralytics' ``reg_max`` is B (16 bins) and it clamps
            to ``B - 1.01``. Here y = B - 1 is allowed (all mass on the last bin), no clamp.
        reduction: 'none' (``(N,)``) | 'mean' (over N) | 'sum'. GFL averages the four sides of a
            box (ultralytics' ``mean(-1)``, mmdet's ``avg_factor=4``) and weights boxes by quality.

    Raises:
        ValueError: shapes that do not pair up, B < 2, targets outside [0, B - 1], an unknown
            reduction.

    Example:
        >>> round(dfl(torch.zeros(1, 3), torch.tensor([0.25])).item(), 4)  # (0.75 + 0.25) * log 3
        1.0986
    """
    check_reduction(reduction)
    if logits.dim() != 2 or logits.shape[1] < 2 or targets.shape != logits.shape[:1]:
        raise ValueError(f"dfl needs (N, B) logits over B >= 2 bins and (N,) targets; got logits {tuple(logits.shape)}, targets {tuple(targets.shape)}")
    top = logits.shape[1] - 1
    if targets.numel() and (targets.min() < 0 or targets.max() > top):
        raise ValueError(f"targets must lie in [0, {top}] (bins 0 .. B-1); got values from {float(targets.min())} to {float(targets.max())}")
    left = targets.detach().floor().clamp(max=top - 1).long()
    weight_right = (targets - left).to(logits.dtype)
    log_q = F.log_softmax(logits, dim=1)
    log_left = log_q.gather(1, left.unsqueeze(1)).squeeze(1)
    log_right = log_q.gather(1, (left + 1).unsqueeze(1)).squeeze(1)
    return reduce(-(1 - weight_right) * log_left - weight_right * log_right, reduction)


def vfl(
    logits: torch.Tensor,
    targets: torch.Tensor,
    alpha: float = 0.75,
    gamma: float = 2.0,
    detach_weight: bool = False,
    reduction: str = "mean",
) -> torch.Tensor:
    """Varifocal Loss (VarifocalNet, Zhang et al. 2021), numerically as mmdet's ``varifocal_loss``.

    ``VFL = w * BCE_with_logits(x, q)`` with ``w = q`` on positives (q > 0: weighted by their own
    IoU quality) and ``w = alpha * p**gamma`` on negatives (q = 0). Only negatives are focused.

    Args:
        logits: ``(N, C)`` logits.
        targets: ``(N, C)`` IoU-aware targets in [0, 1]: q at a positive's class column, 0 elsewhere
            (a positive of quality 0 counts as a negative).
        alpha: weight of the negatives (0.75).
        gamma: focusing exponent of the negatives (2).
        detach_weight: False (mmdet, VarifocalNet, ultralytics) lets the gradient flow through
            ``p**gamma``; True treats w as a constant, as RT-DETR in transformers does
            (``sigmoid(x).detach()``). The loss value is the same.
        reduction: 'none' (``(N, C)``) | 'mean' (over N·C elements, mmdet's 'mean') | 'sum'.
            Detectors divide the sum by the number of positives instead (mmdet's ``avg_factor``).

    Raises:
        ValueError: targets of another shape or outside [0, 1], alpha < 0, gamma < 0, an unknown
            reduction.

    Example:
        >>> x, q = torch.zeros(1, 2), torch.tensor([[0.8, 0.0]])
        >>> [round(v, 4) for v in vfl(x, q, reduction="none")[0].tolist()]  # 0.8 log 2, 0.75 * 0.5**2 * log 2
        [0.5545, 0.13]
    """
    check_reduction(reduction)
    check_soft_targets(logits, targets)
    if alpha < 0 or gamma < 0:
        raise ValueError(f"alpha and gamma must be >= 0; got alpha={alpha}, gamma={gamma}")
    p = torch.sigmoid(logits.detach() if detach_weight else logits)
    weight = torch.where(targets > 0, targets, alpha * p**gamma)
    return reduce(weight * F.binary_cross_entropy_with_logits(logits, targets, reduction="none"), reduction)


def _qfl_terms(x: torch.Tensor, y: torch.Tensor, valid: torch.Tensor, positive: torch.Tensor, beta: float) -> torch.Tensor:
    return qfl(x, y, beta=beta, reduction="none")


def _vfl_terms(x: torch.Tensor, y: torch.Tensor, valid: torch.Tensor, positive: torch.Tensor, alpha: float, gamma: float) -> torch.Tensor:
    return vfl(x, y, alpha=alpha, gamma=gamma, reduction="none")


def _soft(info) -> bool:
    return info.encoding == SOFT_ENCODING


LOSSES = (
    LossSpec(
        QFL,
        SIGMOID,
        "Quality Focal Loss, |y - p|^beta BCE on soft IoU targets (GFL, mmdet)",
        params=("qfl_beta",),
        arguments=lambda s: {"beta": s.qfl_beta},
        terms=_qfl_terms,
        normaliser=valid_elements,
        default_when=_soft,
        default_on="soft targets",
        lint_kind=QFL,
    ),
    LossSpec(
        VFL,
        SIGMOID,
        "Varifocal Loss: q BCE on positives, alpha p^gamma BCE on negatives (mmdet)",
        params=("gamma",),
        arguments=lambda s: {"alpha": VFL_ALPHA, "gamma": s.gamma},
        terms=_vfl_terms,
        normaliser=valid_elements,
        default_when=_soft,
        default_on="soft targets",
        lint_kind=VFL,
    ),
)
LINT_KINDS = (
    LintKind(
        QFL,
        "Quality Focal Loss on soft IoU targets (mmdet quality_focal_loss)",
        SIGMOID,
        reference=qfl,
        parameters={"beta": ("beta",)},
        focusing="beta",
        normalisations=("none", "sum", "sum per positive", "mean over rows"),
        usual_normalisation="the sum per positive anchor (GFL's head) or the mean over anchors",
        factor="QFL's |y - p|^beta (y the IoU quality)",
        no_alpha="QFL takes no balancing weight: remove it (|y - p|**beta already weights each element)",
        hint=("name", ("qualityfocal", "quality_focal", "qfl"), "name (quality focal)", True),
    ),
    LintKind(
        VFL,
        "Varifocal Loss on IoU-aware targets (mmdet varifocal_loss)",
        SIGMOID,
        reference=vfl,
        parameters={"alpha": ("alpha",), "gamma": ("gamma",), "detach_weight": ("detach_weight",)},
        normalisations=("none", "sum", "sum per positive", "mean over elements"),
        usual_normalisation="the sum per positive anchor (VFNet's head) or the mean over elements",
        factor="Varifocal's (q on positives, alpha p^gamma on negatives)",
        hint=("name", ("varifocal", "vfl"), "name (Varifocal)", True),
    ),
)
