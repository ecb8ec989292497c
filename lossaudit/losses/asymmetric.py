"""The Asymmetric Loss for multi-label classification (``asl``, timm)."""

from __future__ import annotations

import math
from typing import Any

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

ASL = "asl"
ASL_EPS = 1e-8
"""ASL's probability floor before the log (timm's default), fixed in ``compare``."""

PARAMS = (
    Param("asl_gamma_pos", 1.0, "ASL's focusing exponent of the positives.", metavar="G", bounds=Bounds(0)),
    Param("asl_gamma_neg", 4.0, "ASL's focusing exponent of the negatives.", metavar="G", bounds=Bounds(0)),
    Param("asl_clip", 0.05, "ASL's probability shift of the negatives, in [0, 1); 0 turns it off.", metavar="M", bounds=Bounds(0, 1, high_open=True)),
)


def asl(
    logits: torch.Tensor,
    targets: torch.Tensor,
    gamma_pos: float = 1.0,
    gamma_neg: float = 4.0,
    clip: float = 0.05,
    eps: float = 1e-8,
    detach_weight: bool = False,
    reduction: str = "sum",
) -> torch.Tensor:
    """Asymmetric Loss for multi-label classification (Ridnik et al. 2021), as timm's
    ``AsymmetricLossMultiLabel``.

    Negatives see a shifted probability ``p_m = max(p - clip, 0)`` (easy negatives below ``clip``
    cost nothing); each side has its own focusing exponent:
    ``ASL = -[y log p + (1 - y) log(1 - p_m)] * (1 - p_t')**(gamma_pos*y + gamma_neg*(1 - y))``
    with ``1 - p_t' = (1 - p) y + p_m (1 - y)``; each probability is clamped to at least ``eps``
    before its log (timm). Logs are taken as ``logsigmoid`` (and ``log1p(-p_m)`` with a clip) and
    then clamped at ``log(eps)``: the same values and gradients as timm, without ``log(sigmoid)``.

    Args:
        logits: ``(N, C)`` logits, one independent binary problem per label.
        targets: ``(N, C)`` multi-hot labels in [0, 1] (soft values mix both sides as timm does).
        gamma_pos, gamma_neg: focusing exponents of positives (1) and negatives (4). Equal
            exponents with ``clip=0`` give the sigmoid focal loss without alpha; 0 and 0 give BCE.
        clip: probability margin shifted off the negatives, in [0, 1) (0.05; 0 turns it off).
        eps: probability floor before the log, in [0, 1) (1e-8; 0 turns it off).
        detach_weight: False (timm) differentiates the focusing weight; True treats it as a
            constant, the effect of the original Alibaba-MIIL code's
            ``disable_torch_grad_focal_loss=True`` (done here with ``detach``, no grad-mode switch).
        reduction: 'sum' (the default: timm and Alibaba-MIIL return ``-loss.sum()``) | 'mean'
            (over N·C elements) | 'none' (``(N, C)``).

    Raises:
        ValueError: targets of another shape or outside [0, 1], a negative exponent, clip or eps
            outside [0, 1), an unknown reduction.

    Example:
        >>> x, y = torch.logit(torch.tensor([[0.5, 0.25]])), torch.tensor([[1.0, 0.0]])
        >>> [round(v, 6) for v in asl(x, y, reduction="none")[0].tolist()]  # 0.5 log 2, 0.2**4 * -log 0.8
        [0.346574, 0.000357]
    """
    check_reduction(reduction)
    check_soft_targets(logits, targets)
    if gamma_pos < 0 or gamma_neg < 0:
        raise ValueError(f"gamma_pos and gamma_neg must be >= 0; got {gamma_pos} and {gamma_neg}")
    if not (0 <= clip < 1 and 0 <= eps < 1):
        raise ValueError(f"clip and eps must lie in [0, 1); got clip={clip}, eps={eps}")
    p_m = (torch.sigmoid(logits) - clip).clamp(min=0)
    log_pos = F.logsigmoid(logits)
    log_neg = torch.log1p(-p_m) if clip > 0 else F.logsigmoid(-logits)
    if eps > 0:
        log_pos, log_neg = log_pos.clamp(min=math.log(eps)), log_neg.clamp(min=math.log(eps))
    one_minus_pt = torch.sigmoid(-logits) * targets + p_m * (1 - targets)
    weight = one_minus_pt ** (gamma_pos * targets + gamma_neg * (1 - targets))
    if detach_weight:
        weight = weight.detach()
    return reduce(-(targets * log_pos + (1 - targets) * log_neg) * weight, reduction)


def _asl_terms(x: torch.Tensor, y: torch.Tensor, valid: torch.Tensor, positive: torch.Tensor, **arguments: Any) -> torch.Tensor:
    return asl(x, y, **arguments, reduction="none")


def _multi_label(info) -> bool:
    return info.encoding in ("onehot", "soft") and info.multi_label


LOSSES = (
    LossSpec(
        ASL,
        SIGMOID,
        "Asymmetric Loss: separate focusing of positives and negatives, shifted negatives (timm)",
        params=("asl_gamma_pos", "asl_gamma_neg", "asl_clip"),
        arguments=lambda s: {"gamma_pos": s.asl_gamma_pos, "gamma_neg": s.asl_gamma_neg, "clip": s.asl_clip, "eps": ASL_EPS},
        terms=_asl_terms,
        normaliser=valid_elements,
        default_when=_multi_label,
        default_on="multi-label targets",
        lint_kind=ASL,
    ),
)
LINT_KINDS = (
    LintKind(
        ASL,
        "Asymmetric Loss for multi-label classification (timm AsymmetricLossMultiLabel)",
        SIGMOID,
        reference=asl,
        parameters={
            "gamma_pos": ("gamma_pos",),
            "gamma_neg": ("gamma_neg",),
            "clip": ("clip",),
            "eps": ("eps",),
            "detach_weight": ("disable_torch_grad_focal_loss", "detach_weight"),
        },
        focusing="gamma_neg",
        normalisations=("none", "sum"),
        usual_normalisation="the sum (timm)",
        factor="ASL's ((1 - p)^gamma_pos on positives, p_m^gamma_neg on negatives with p_m = max(p - clip, 0))",
        no_alpha="ASL takes no balancing weight: remove it (gamma_pos, gamma_neg and clip balance the two sides)",
        hint=("parameters", ("gamma_neg", "gamma_pos", "disable_torch_grad_focal_loss"), "parameters (gamma_neg, gamma_pos)", True),
    ),
)
