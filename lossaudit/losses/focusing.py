"""Focal loss: sigmoid (``focal``, RetinaNet) and softmax (``softmax-focal``), and the parameters
they share (``--alpha``, ``--gamma``, ``--alpha-per-class``)."""

from __future__ import annotations

from collections.abc import Sequence

from lossaudit._lazy import F, torch
from lossaudit.losses.common import (
    as_target_probs,
    check_reduction,
    reduce,
    zero_ignored_rows,
)
from lossaudit.losses.spec import (
    SIGMOID,
    SOFTMAX,
    Bounds,
    LintKind,
    LossSpec,
    Param,
    PerClassParam,
    always,
    except_heatmaps,
    valid_elements,
)

FOCAL, SOFTMAX_FOCAL = "focal", "softmax-focal"
BINARY = "binary"
"""The lint kind of a binary focal loss: one logit per element, ``(N,)``."""

PARAMS = (
    Param("alpha", 0.25, "Focal alpha for positives (negatives get 1 - alpha); -1 disables it.", bounds=Bounds(0, 1, off=-1)),
    Param("gamma", 2.0, "Focal gamma (focal and softmax-focal; vfl's focusing of the negatives).", bounds=Bounds(0)),
    PerClassParam(
        "alpha_per_class",
        "One alpha per class: a comma list, or a file (one per line, a YAML list or mapping): softmax-focal takes it at the target class, focal by class column.",
        bounds=Bounds(0, 1),
    ),
)


def focal(
    logits: torch.Tensor,
    targets: torch.Tensor,
    alpha: float | torch.Tensor = 0.25,
    gamma: float = 2.0,
    reduction: str = "none",
) -> torch.Tensor:
    """Sigmoid focal loss with torchvision's semantics (RetinaNet, Lin et al. 2017).

    ``FL = alpha_t * (1 - p_t)**gamma * BCE_with_logits(x, y)``, every class an independent
    binary problem; a background anchor is an all-zero target row.

    Args:
        logits: ``(N, C)`` (or any shape) logits.
        targets: same shape, floats in [0, 1] (hard 0/1 labels, or soft targets).
        alpha: weight of positives in [0, 1]; negatives get ``1 - alpha``; ``-1`` disables the
            weighting (torchvision and fvcore). A ``(C,)`` tensor gives one alpha per class column.
        gamma: focusing parameter; 0 reduces the loss to (alpha-weighted) BCE.
        reduction: 'none' | 'mean' | 'sum'. 'mean' averages over all N·C elements, as torchvision
            does; detectors instead divide the sum by the number of positive anchors.

    Raises:
        ValueError: a scalar alpha outside [0, 1] ∪ {-1}, or an unknown reduction.

    Example:
        >>> x = torch.logit(torch.tensor([[0.9]]))
        >>> focal(x, torch.ones(1, 1)).item()  # 0.25 * 0.1**2 * -log(0.9)
        0.00026...
    """
    scalar_alpha = not isinstance(alpha, torch.Tensor)
    if scalar_alpha and not (0 <= alpha <= 1) and alpha != -1:
        raise ValueError(f"alpha must be in [0, 1] or -1 to disable it; got {alpha}")
    check_reduction(reduction)
    p = torch.sigmoid(logits)
    ce_loss = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce_loss * ((1 - p_t) ** gamma)
    if not scalar_alpha or alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return reduce(loss, reduction)


def softmax_focal_terms(
    logits: torch.Tensor,
    target_probs: torch.Tensor,
    gamma: float = 2.0,
    alpha: float | Sequence[float] | torch.Tensor | None = None,
) -> torch.Tensor:
    """Element terms of the softmax focal loss: ``-w_c * y_c * (1 - q_c)**gamma * log q_c``.

    Args:
        logits: ``(N, C)`` logits; ``q = softmax(logits, dim=1)``.
        target_probs: ``(N, C)`` target probabilities (one-hot rows for class indices).
        gamma: focusing parameter; 0 gives cross-entropy.
        alpha: None (w = 1), a scalar (multiplies every term: it rescales, it does not balance), or
            a ``(C,)`` vector of per-class weights taken at the target class.

    Returns:
        ``(N, C)`` terms; a row's loss is their sum over classes. Non-target terms are 0.
    """
    log_q = F.log_softmax(logits, dim=1)
    terms = -target_probs * log_q
    if gamma != 0:
        terms = terms * (1 - log_q.exp()) ** gamma
    if alpha is not None:
        terms = terms * torch.as_tensor(alpha, dtype=terms.dtype, device=terms.device)
    return terms


def softmax_focal(
    logits: torch.Tensor,
    targets: torch.Tensor,
    gamma: float = 2.0,
    alpha: float | Sequence[float] | torch.Tensor | None = None,
    reduction: str = "mean",
    ignore_index: int = -100,
) -> torch.Tensor:
    """Softmax (multi-class) focal loss: ``-alpha_y * (1 - q_y)**gamma * log q_y`` per row.

    Balancing needs a per-class ``alpha`` vector indexed by the *target* class; a scalar alpha
    multiplies every row alike and only rescales the loss (kornia ≤ 0.6's bug).

    Args:
        logits: ``(N, C)`` logits.
        targets: ``(N,)`` int class indices (``ignore_index`` rows are skipped), or ``(N, C)``
            class probabilities (soft or smoothed labels: the row loss sums the class terms).
        gamma: focusing parameter; 0 gives (weighted) cross-entropy.
        alpha: None, a scalar, or a ``(C,)`` per-class vector.
        reduction: 'none' (``(N,)`` row losses, 0 for ignored rows) | 'mean' | 'sum'. 'mean'
            divides by the number of rows not ignored, like ``F.cross_entropy`` (not by the sum
            of the per-class weights).
        ignore_index: class index that marks a row to skip (torch's default, -100).

    Example:
        >>> logits = torch.tensor([[2.0, 0.0]])
        >>> round(softmax_focal(logits, torch.tensor([0]), gamma=0).item(), 4)  # log(1 + e^-2)
        0.1269
    """
    check_reduction(reduction)
    probs, keep = as_target_probs(logits, targets, ignore_index)
    rows = softmax_focal_terms(zero_ignored_rows(logits, keep), probs, gamma, alpha).sum(dim=1)
    return reduce(rows, reduction, keep.sum())


def _per_class(settings) -> list[float] | None:
    return list(settings.alpha_per_class) if settings.alpha_per_class is not None else None


def _focal_terms(x: torch.Tensor, y: torch.Tensor, valid: torch.Tensor, positive: torch.Tensor, alpha: float | list[float], gamma: float) -> torch.Tensor:
    return focal(x, y, alpha=torch.tensor(alpha) if isinstance(alpha, list) else alpha, gamma=gamma)


def _softmax_focal_terms(x: torch.Tensor, y: torch.Tensor, class_counts: torch.Tensor, alpha: list[float] | None, gamma: float) -> torch.Tensor:
    return softmax_focal_terms(x, y, gamma=gamma, alpha=None if alpha is None else torch.tensor(alpha))


LOSSES = (
    LossSpec(
        FOCAL,
        SIGMOID,
        "sigmoid focal loss, alpha_t (1 - p_t)^gamma BCE (torchvision)",
        params=("alpha", "gamma", "alpha_per_class"),
        arguments=lambda s: {"alpha": _per_class(s) if s.alpha_per_class is not None else s.alpha, "gamma": s.gamma},
        terms=_focal_terms,
        normaliser=valid_elements,
        default_when=always,
        lint_kind=SIGMOID,
    ),
    LossSpec(
        SOFTMAX_FOCAL,
        SOFTMAX,
        "softmax focal loss, -alpha_y (1 - q_y)^gamma log q_y per row",
        params=("gamma", "alpha_per_class"),
        arguments=lambda s: {"alpha": _per_class(s), "gamma": s.gamma},
        terms=_softmax_focal_terms,
        default_when=except_heatmaps,
        lint_kind=SOFTMAX,
    ),
)
LINT_KINDS = (
    LintKind(
        SIGMOID,
        "sigmoid focal loss, one binary problem per class (torchvision)",
        SIGMOID,
        normalisations=("none", "sum", "sum per positive"),
        usual_normalisation="the sum per positive anchor (detectors) or no reduction",
    ),
    LintKind(
        SOFTMAX,
        "softmax focal loss over the classes",
        SOFTMAX,
        normalisations=("none", "sum", "mean over rows", "mean over target weights"),
        usual_normalisation="the mean over rows",
    ),
    LintKind(
        BINARY,
        "binary focal loss on one logit per element",
        BINARY,
        normalisations=("none", "sum", "sum per positive", "mean over elements"),
        usual_normalisation="the mean or the sum",
    ),
)
