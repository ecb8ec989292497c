"""Cross-entropy variants that reshape the target: Poly-1 (reference only) and label-smoothing CE
(``ls-ce``, a lint kind)."""

from __future__ import annotations

from lossaudit._lazy import torch
from lossaudit.losses.balanced import check_base
from lossaudit.losses.common import (
    as_target_probs,
    check_reduction,
    check_soft_targets,
    one_minus_p_t,
    reduce,
    zero_ignored_rows,
)
from lossaudit.losses.cross_entropy import CE
from lossaudit.losses.focusing import FOCAL, focal, softmax_focal_terms
from lossaudit.losses.spec import SOFTMAX, LintKind

LS_CE = "ls-ce"


def poly1(  # lossaudit: ignore -- Poly-1 adds a term to CE or focal: lint has no poly1 kind yet (issue 15)
    logits: torch.Tensor,
    targets: torch.Tensor,
    epsilon: float = 1.0,
    base: str = CE,
    gamma: float = 2.0,
    alpha: float = 0.25,
    reduction: str = "mean",
    ignore_index: int = -100,
) -> torch.Tensor:
    """Poly-1 loss (PolyLoss, Leng et al. 2022): the base loss plus its first polynomial term.

    ``base='ce'``: ``CE + epsilon * (1 - p_t)`` per row, ``p_t = Σ_c y_c q_c`` (q the softmax).
    ``base='focal'``: ``FL + epsilon * (1 - p_t)**(gamma + 1)`` per element, p_t of the sigmoid;
    alpha weights FL only, as in the paper's code. epsilon = 0 gives the base loss.

    Args:
        logits: ``(N, C)`` logits.
        targets: 'ce': ``(N,)`` class indices (``ignore_index`` rows skipped) or ``(N, C)``
            probabilities; 'focal': ``(N, C)`` targets in [0, 1] (all-zero rows are background).
        epsilon: coefficient of the polynomial term, >= -1 (the paper's bound; 1 by default).
        base: 'ce' | 'focal'.
        gamma, alpha: of the focal base, as :func:`focal` (alpha -1 disables it); unused with 'ce'.
        reduction: 'none' (``(N,)`` rows for 'ce', ``(N, C)`` elements for 'focal') | 'mean' | 'sum'.
            'mean' divides by the rows not ignored for 'ce' (as :func:`ce`), by N·C for 'focal'
            (as :func:`focal`).

    Raises:
        ValueError: epsilon < -1, an unknown base or reduction, targets that do not fit the base.

    Example:
        >>> round(poly1(torch.zeros(1, 2), torch.tensor([0])).item(), 4)  # log 2 + (1 - 0.5)
        1.1931
    """
    check_base(base)
    check_reduction(reduction)
    if epsilon < -1:
        raise ValueError(f"epsilon must be >= -1; got {epsilon}")
    if base == FOCAL:
        check_soft_targets(logits, targets)
        loss = focal(logits, targets, alpha=alpha, gamma=gamma) + epsilon * one_minus_p_t(logits, targets) ** (gamma + 1)
        return reduce(loss, reduction)
    probs, keep = as_target_probs(logits, targets, ignore_index)
    logits = zero_ignored_rows(logits, keep)
    rows = softmax_focal_terms(logits, probs, gamma=0.0).sum(dim=1)
    p_t = (probs * torch.softmax(logits, dim=1)).sum(dim=1)
    return reduce(rows + epsilon * (1 - p_t) * keep, reduction, keep.sum())


def ls_ce(
    logits: torch.Tensor,
    targets: torch.Tensor,
    epsilon: float = 0.1,
    reduction: str = "mean",
    ignore_index: int = -100,
) -> torch.Tensor:
    """Label-smoothing cross-entropy, as ``nn.CrossEntropyLoss(label_smoothing=epsilon)``.

    The target row becomes ``(1 - epsilon) * y + epsilon / C``: epsilon is spread over *all* C
    classes, the true one included (PyTorch, timm, Keras; Szegedy et al. 2016), so the loss is
    ``(1 - epsilon) * CE + epsilon * mean_c(-log q_c)``. The other convention (fairseq) keeps
    ``1 - epsilon`` on the true class and spreads epsilon over the C - 1 others; it equals this
    function with ``epsilon * C / (C - 1)``.

    Args:
        logits: ``(N, C)`` logits.
        targets: ``(N,)`` class indices (``ignore_index`` rows skipped) or ``(N, C)`` probabilities
            (smoothed the same way, as PyTorch does).
        epsilon: smoothing in [0, 1]; 0 gives CE.
        reduction: 'none' (``(N,)``) | 'mean' (over rows not ignored, as PyTorch) | 'sum'.

    Raises:
        ValueError: epsilon outside [0, 1], an unknown reduction, class indices out of range.

    Example:
        >>> x = torch.tensor([[2.0, 0.0]])
        >>> round(ls_ce(x, torch.tensor([0])).item(), 4)  # log(1 + e^-2) + 0.1 * (2 / 2)
        0.2269
    """
    check_reduction(reduction)
    if not 0 <= epsilon <= 1:
        raise ValueError(f"epsilon must lie in [0, 1]; got {epsilon}")
    probs, keep = as_target_probs(logits, targets, ignore_index)
    smoothed = (1 - epsilon) * probs + epsilon / logits.shape[1] * keep.unsqueeze(1).to(probs)
    rows = softmax_focal_terms(zero_ignored_rows(logits, keep), smoothed, gamma=0.0).sum(dim=1)
    return reduce(rows, reduction, keep.sum())


LINT_KINDS = (
    LintKind(
        LS_CE,
        "label-smoothing cross-entropy (nn.CrossEntropyLoss(label_smoothing=...))",
        SOFTMAX,
        reference=ls_ce,
        parameters={"epsilon": ("label_smoothing", "smoothing", "epsilon")},
        focusing=None,
        normalisations=("none", "sum", "mean over rows"),
        usual_normalisation="the mean over rows",
        no_alpha="label-smoothing cross-entropy takes no balancing weight: pass class weights as weight= to F.cross_entropy",
        hint=("parameters", ("label_smoothing", "smoothing"), "parameter (label_smoothing / smoothing)", False),
    ),
)
