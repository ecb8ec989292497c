"""Reference losses: the behaviour lossaudit compares data and user code against.

Every function is pure (tensors in, tensor out, no hidden state) and takes logits unless its
docstring says otherwise. Notation used throughout:

- ``x`` logit, ``p = sigmoid(x)``, ``y`` target in {0, 1} or soft in [0, 1];
- ``p_t = p*y + (1 - p)*(1 - y)``, ``alpha_t = alpha*y + (1 - alpha)*(1 - y)``;
- ``q = softmax(x)`` over the class axis for the softmax losses.

The public names map to the loss identifiers used on the command line and in JSON output
(see :data:`LOSS_IDS`): ``ce``, ``bce``, ``focal``, ``softmax-focal``, ``ghm``, ``centernet``, ``ohem``.
The later families (:data:`FAMILY_IDS`: ``qfl``, ``dfl``, ``vfl``, ``asl``, ``cb``,
``logit-adjusted-ce``, ``poly1``, ``ls-ce``) are kept out of :data:`LOSS_IDS`; ``compare --losses``
accepts :data:`LOSS_IDS` and :data:`COMPARE_FAMILY_IDS` (``qfl``, ``vfl``, ``asl``, ``cb-ce``: ``cb``
over CE, ``logit-adjusted-ce``), which it computes with these functions' default hyper-parameters.
The semantics follow ``shared/REFERENCES.md``; where the references disagree, each docstring
states the choice made and the parameter that selects the other convention.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

LOSS_IDS = ("ce", "bce", "focal", "softmax-focal", "ghm", "centernet", "ohem")
"""Loss identifiers, in the order reports list them."""

FAMILY_IDS = ("qfl", "dfl", "vfl", "asl", "cb", "logit-adjusted-ce", "poly1", "ls-ce")
"""Identifiers of the focal-loss families below (function name with ``-`` for ``_``)."""

COMPARE_FAMILY_IDS = ("qfl", "vfl", "asl", "cb-ce", "logit-adjusted-ce")
"""The families ``compare --losses`` accepts besides :data:`LOSS_IDS` (``cb-ce``: :func:`cb` with
``base='ce'``); ``dfl`` (box regression), ``poly1`` and ``ls-ce`` are reference functions only."""

REDUCTIONS = ("none", "mean", "sum")

CENTERNET_PROB_CLAMP = 1e-4
"""CenterNet's ``_sigmoid`` clamps heatmap probabilities to [1e-4, 1 - 1e-4]."""


def _check_reduction(reduction: str) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {', '.join(REDUCTIONS)}; got {reduction!r}")


def _reduce(loss: torch.Tensor, reduction: str, count: torch.Tensor | int | None = None) -> torch.Tensor:
    """Apply ``reduction``; 'mean' divides the sum by ``count`` (default: the number of elements)."""
    if reduction == "none":
        return loss
    total = loss.sum()
    if reduction == "sum":
        return total
    if count is None:
        return loss.mean()
    return total / count


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
    _check_reduction(reduction)
    return _reduce(F.binary_cross_entropy_with_logits(logits, targets, reduction="none"), reduction)


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
    _check_reduction(reduction)
    p = torch.sigmoid(logits)
    ce_loss = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce_loss * ((1 - p_t) ** gamma)
    if not scalar_alpha or alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return _reduce(loss, reduction)


def _as_target_probs(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Turn ``(N,)`` class indices or ``(N, C)`` probabilities into ``(N, C)`` probabilities.

    Returns the probabilities and a ``(N,)`` bool mask of the rows that count (not ignored).
    """
    if targets.dim() == logits.dim() - 1:
        keep = targets != ignore_index
        index = torch.where(keep, targets, torch.zeros_like(targets)).long()
        num_classes = logits.shape[1]
        if keep.any() and (index[keep].min() < 0 or index[keep].max() >= num_classes):
            raise ValueError(
                f"class indices must be in [0, {num_classes}) or equal ignore_index={ignore_index}; "
                f"got values from {int(targets[keep].min())} to {int(targets[keep].max())}"
            )
        probs = F.one_hot(index, num_classes).to(logits.dtype) * keep.unsqueeze(1).to(logits.dtype)
        return probs, keep
    if targets.shape != logits.shape:
        raise ValueError(
            f"targets has shape {tuple(targets.shape)} but logits has shape {tuple(logits.shape)}; "
            f"expected {tuple(logits.shape[:1] + logits.shape[2:])} class indices or "
            f"{tuple(logits.shape)} class probabilities"
        )
    return targets.to(logits.dtype), torch.ones(targets.shape[:1], dtype=torch.bool, device=targets.device)


def _zero_ignored_rows(logits: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """``logits`` with the ``(N,)`` rows ``keep`` leaves out set to 0 by selection, not by a
    multiplication: an inf/NaN logit at an ignored row times its zero target is NaN (lint FL022)."""
    return torch.where(keep.unsqueeze(1), logits, torch.zeros_like(logits))


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
    _check_reduction(reduction)
    probs, keep = _as_target_probs(logits, targets, ignore_index)
    rows = softmax_focal_terms(_zero_ignored_rows(logits, keep), probs, gamma, alpha).sum(dim=1)
    return _reduce(rows, reduction, keep.sum())


def ce(
    logits: torch.Tensor, targets: torch.Tensor, reduction: str = "mean", ignore_index: int = -100
) -> torch.Tensor:
    """Softmax cross-entropy over classes: ``-log q_y`` per row (``-Σ_c y_c log q_c`` for soft targets).

    Equal to ``torch.nn.functional.cross_entropy`` (its 'mean' divides by the rows not ignored).

    Args:
        logits: ``(N, C)`` logits.
        targets: ``(N,)`` int class indices, or ``(N, C)`` class probabilities.
        reduction: 'none' (``(N,)``) | 'mean' | 'sum'.
        ignore_index: class index that marks a row to skip.
    """
    return softmax_focal(logits, targets, gamma=0.0, alpha=None, reduction=reduction, ignore_index=ignore_index)


@dataclass
class GHMState:
    """The moving average of bin counts that GHM-C keeps across calls (mmdet's ``acc_sum``).

    ``acc = momentum * acc + (1 - momentum) * count``, starting at 0 with no bias correction: with
    momentum m, the first call's weights are ``1 / (1 - m)`` times those of momentum 0.
    """

    bins: int = 10
    momentum: float = 0.0
    acc: torch.Tensor = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.bins < 1:
            raise ValueError(f"bins must be at least 1; got {self.bins}")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must be in [0, 1); got {self.momentum}")
        if self.acc is None:
            self.acc = torch.zeros(self.bins, dtype=torch.float64)


def ghm_bin_edges(bins: int) -> torch.Tensor:
    """GHM's gradient-norm bin edges ``k / bins`` in float32, the last raised by 1e-6 (mmdet)."""
    edges = torch.arange(bins + 1).float() / bins
    edges[-1] += 1e-6
    return edges


def gradient_norm_bins(g: torch.Tensor, bins: int) -> torch.Tensor:
    """Index of the GHM bin holding each gradient norm ``g`` in [0, 1]: ``edges[k] <= g < edges[k+1]``."""
    inner = ghm_bin_edges(bins)[1:-1].to(g.device)
    return torch.bucketize(g.float().contiguous(), inner, right=True)


def ghm_bin_weights(counts: torch.Tensor, total: float, state: GHMState | None = None) -> torch.Tensor:
    """Per-bin GHM-C weights from the number of valid elements in each bin.

    ``w_b = total / c_b`` (or ``total / acc_b`` with momentum), then divided by the number of
    non-empty bins. Empty bins get weight 0. Updates ``state.acc`` in place when given.

    Args:
        counts: ``(bins,)`` element counts.
        total: the number of valid elements, at least 1.
        state: the moving average to read and update; None means momentum 0.
    """
    counts = counts.to(torch.float64)
    nonempty = counts > 0
    denominator = counts
    if state is not None and state.momentum > 0:
        state.acc = torch.where(nonempty, state.momentum * state.acc + (1 - state.momentum) * counts, state.acc)
        denominator = state.acc
    weights = torch.where(nonempty, total / denominator.clamp_min(1e-300), torch.zeros_like(counts))
    n_nonempty = int(nonempty.sum())
    return weights / n_nonempty if n_nonempty else weights


def ghm(
    logits: torch.Tensor,
    targets: torch.Tensor,
    bins: int = 10,
    momentum: float = 0.0,
    mask: torch.Tensor | None = None,
    state: GHMState | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """GHM-C (Li, Liu, Wang 2019), numerically as mmdet's ``GHMC``.

    Gradient norm ``g = |p - y|`` (detached), binned by :func:`ghm_bin_edges`. A valid element in
    a bin of ``c`` valid elements gets weight ``N_valid / c``; all weights are then divided by the
    number of non-empty bins (the code's normaliser; the paper divides by ``bins``).
    ``mean = Σ w * BCE / N_valid``. At momentum 0 this equals the average over non-empty bins of
    each bin's mean BCE. (mmdet adds float32 eps to the denominator; it is below 1e-7 relative.)

    Args:
        logits: ``(N, C)`` (or any shape) logits.
        targets: same shape, floats in [0, 1].
        bins: number of equal-width bins of g.
        momentum: moving-average momentum of the bin counts, kept in ``state`` across calls.
        mask: same shape, True (or nonzero) where an element counts; default all.
        state: a :class:`GHMState` carried across calls; created fresh when None. Pass one to get
            mmdet's behaviour over several batches.
        reduction: 'none' (weighted element losses) | 'mean' | 'sum'.
    """
    _check_reduction(reduction)
    if state is None:
        state = GHMState(bins=bins, momentum=momentum)
    elif state.bins != bins or state.momentum != momentum:
        raise ValueError(f"state has bins={state.bins}, momentum={state.momentum}; got bins={bins}, momentum={momentum}")
    valid = torch.ones_like(targets, dtype=torch.bool) if mask is None else mask.bool()
    g = (torch.sigmoid(logits.detach()) - targets).abs()
    bin_index = gradient_norm_bins(g, bins)
    total = max(int(valid.sum()), 1)
    counts = torch.bincount(bin_index[valid], minlength=bins)
    weights = ghm_bin_weights(counts, total, state).to(logits.dtype).to(logits.device)[bin_index] * valid
    loss = F.binary_cross_entropy_with_logits(logits, targets, reduction="none") * weights
    return _reduce(loss, reduction, total)


def centernet(
    probs: torch.Tensor, heatmap: torch.Tensor, alpha: float = 2.0, beta: float = 4.0, reduction: str = "mean"
) -> torch.Tensor:
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
    _check_reduction(reduction)
    pos = heatmap.eq(1)
    pos_terms = -torch.log(probs) * (1 - probs) ** alpha
    neg_terms = -torch.log(1 - probs) * probs**alpha * (1 - heatmap) ** beta
    loss = torch.where(pos, pos_terms, neg_terms)
    n_pos = int(pos.sum())
    return _reduce(loss, reduction, n_pos if n_pos else 1)


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
    _check_reduction(reduction)
    row_loss = F.binary_cross_entropy_with_logits(logits, targets, reduction="none").sum(dim=1)
    positive_rows = targets.ge(0.5).any(dim=1)
    keep = ohem_row_selection(row_loss.detach(), positive_rows, neg_pos_ratio)
    return _reduce(row_loss * keep, reduction, max(int(positive_rows.sum()), 1))


# --- Focal-loss families (FAMILY_IDS) ----------------------------------------------------------


def _check_soft_targets(logits: torch.Tensor, targets: torch.Tensor) -> None:
    """Soft (or hard) per-class targets: the shape of ``logits``, values in [0, 1]."""
    if targets.shape != logits.shape:
        raise ValueError(
            f"targets has shape {tuple(targets.shape)} but logits has shape {tuple(logits.shape)}; "
            f"expected {tuple(logits.shape)} targets in [0, 1] (0 for negatives)"
        )
    if targets.numel() and (targets.min() < 0 or targets.max() > 1):
        raise ValueError(f"targets must lie in [0, 1]; got values from {float(targets.min())} to {float(targets.max())}")


def _check_base(base: str) -> None:
    if base not in ("ce", "focal"):
        raise ValueError(f"base must be 'ce' (softmax cross-entropy) or 'focal' (sigmoid focal loss); got {base!r}")


def _one_minus_p_t(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``1 - p_t = (1 - p) y + p (1 - y)``, each side taken from a sigmoid without cancellation."""
    return torch.sigmoid(-logits) * targets + torch.sigmoid(logits) * (1 - targets)


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
    _check_reduction(reduction)
    _check_soft_targets(logits, targets)
    if beta < 0:
        raise ValueError(f"beta must be >= 0; got {beta}")
    scale = (targets - torch.sigmoid(logits)).abs() ** beta
    loss = scale * F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    return _reduce(loss, reduction, logits.shape[0])


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
    _check_reduction(reduction)
    if logits.dim() != 2 or logits.shape[1] < 2 or targets.shape != logits.shape[:1]:
        raise ValueError(
            f"dfl needs (N, B) logits over B >= 2 bins and (N,) targets; got logits {tuple(logits.shape)}, "
            f"targets {tuple(targets.shape)}"
        )
    top = logits.shape[1] - 1
    if targets.numel() and (targets.min() < 0 or targets.max() > top):
        raise ValueError(f"targets must lie in [0, {top}] (bins 0 .. B-1); got values from {float(targets.min())} to {float(targets.max())}")
    left = targets.detach().floor().clamp(max=top - 1).long()
    weight_right = (targets - left).to(logits.dtype)
    log_q = F.log_softmax(logits, dim=1)
    log_left = log_q.gather(1, left.unsqueeze(1)).squeeze(1)
    log_right = log_q.gather(1, (left + 1).unsqueeze(1)).squeeze(1)
    return _reduce(-(1 - weight_right) * log_left - weight_right * log_right, reduction)


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
    _check_reduction(reduction)
    _check_soft_targets(logits, targets)
    if alpha < 0 or gamma < 0:
        raise ValueError(f"alpha and gamma must be >= 0; got alpha={alpha}, gamma={gamma}")
    p = torch.sigmoid(logits.detach() if detach_weight else logits)
    weight = torch.where(targets > 0, targets, alpha * p**gamma)
    return _reduce(weight * F.binary_cross_entropy_with_logits(logits, targets, reduction="none"), reduction)


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
    _check_reduction(reduction)
    _check_soft_targets(logits, targets)
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
    return _reduce(-(targets * log_pos + (1 - targets) * log_neg) * weight, reduction)


def _class_counts(class_counts: Sequence[float] | torch.Tensor, num_classes: int | None = None) -> torch.Tensor:
    """Validated ``(C,)`` float64 class counts: one positive, finite count per class (C =
    ``num_classes``, the width of the logits, when given)."""
    counts = torch.as_tensor(class_counts, dtype=torch.float64).detach().cpu()
    if counts.dim() != 1 or num_classes not in (None, len(counts)):
        expected = "one count per class" if num_classes is None else f"({num_classes},), one count per class of the logits"
        raise ValueError(f"class_counts has shape {tuple(counts.shape)}; expected {expected}")
    bad = torch.nonzero(~(torch.isfinite(counts) & (counts > 0))).flatten()
    if len(bad):
        raise ValueError(f"class_counts must be positive and finite; class {int(bad[0])} has {float(counts[bad[0]])}")
    return counts


def class_balanced_weights(class_counts: Sequence[float] | torch.Tensor, beta: float = 0.9999) -> torch.Tensor:
    """Class-balanced weights (Cui et al. 2019) from the effective number of samples.

    ``E_n = (1 - beta**n) / (1 - beta)``; ``w_c ∝ 1 / E_{n_c}``, scaled so that ``Σ_c w_c = C``
    (as the authors' code). beta = 0 gives every class weight 1; beta → 1 tends to inverse class
    frequency.

    Args:
        class_counts: ``(C,)`` positive training-sample counts per class.
        beta: in [0, 1).

    Returns:
        ``(C,)`` float64 weights.

    Raises:
        ValueError: beta outside [0, 1), a count that is not positive and finite.

    Example:
        >>> [round(w, 4) for w in class_balanced_weights([3, 1], beta=0.5).tolist()]  # ∝ 1/1.75, 1/1
        [0.7273, 1.2727]
    """
    if not 0 <= beta < 1:
        raise ValueError(f"beta must lie in [0, 1); got {beta}")
    counts = _class_counts(class_counts)
    inverse = (1 - beta) / (1 - beta**counts)
    return inverse * len(counts) / inverse.sum()


def cb(
    logits: torch.Tensor,
    targets: torch.Tensor,
    class_counts: Sequence[float] | torch.Tensor,
    beta: float = 0.9999,
    base: str = "ce",
    gamma: float = 2.0,
    reduction: str = "mean",
    ignore_index: int = -100,
) -> torch.Tensor:
    """Class-balanced loss (Cui et al. 2019): a base loss weighted by :func:`class_balanced_weights`.

    ``base='ce'``: ``w_y * CE`` per row, i.e. :func:`softmax_focal` with ``gamma=0`` and the
    weights as per-class alpha. ``base='focal'``: the sigmoid focal loss without alpha over the
    one-hot row, every one of its C terms weighted by ``w_y`` of the row's class (the paper's
    CB focal loss, where the weight replaces alpha).

    Args:
        logits: ``(N, C)`` logits.
        targets: ``(N,)`` class indices (``ignore_index`` rows skipped); with ``base='ce'`` also
            ``(N, C)`` class probabilities, each class term weighted by its own ``w_c``.
        class_counts: ``(C,)`` positive training-sample counts per class.
        beta: in [0, 1); 0 is the unweighted base loss.
        base: 'ce' | 'focal'.
        gamma: focusing parameter of the focal base (unused with 'ce').
        reduction: 'none' (``(N,)`` rows for 'ce', ``(N, C)`` elements for 'focal'; ignored rows
            0) | 'mean' | 'sum'. 'mean' divides by the rows not ignored, as the authors' code
            (``F.cross_entropy(weight=w)`` divides by ``Σ w_y`` instead: take 'sum' and divide).

    Raises:
        ValueError: an unknown base or reduction, beta outside [0, 1), bad class counts, class
            probabilities with ``base='focal'``, class indices out of range.

    Example:
        >>> round(cb(torch.zeros(1, 2), torch.tensor([1]), [3, 1], beta=0.5).item(), 4)  # 14/11 log 2
        0.8822
    """
    _check_base(base)
    _check_reduction(reduction)
    weights = class_balanced_weights(_class_counts(class_counts, logits.shape[1]), beta)
    if base == "ce":
        return softmax_focal(logits, targets, gamma=0.0, alpha=weights, reduction=reduction, ignore_index=ignore_index)
    if targets.dim() != logits.dim() - 1:
        raise ValueError(
            f"cb with base='focal' needs {tuple(logits.shape[:1])} class indices (each row is weighted by its "
            f"class); got targets of shape {tuple(targets.shape)}"
        )
    probs, keep = _as_target_probs(logits, targets, ignore_index)
    row_weight = probs @ weights.to(probs)
    loss = focal(_zero_ignored_rows(logits, keep), probs, alpha=-1, gamma=gamma) * row_weight.unsqueeze(1)
    return _reduce(loss, reduction, keep.sum())


def logit_adjusted_ce(
    logits: torch.Tensor,
    targets: torch.Tensor,
    class_counts: Sequence[float] | torch.Tensor,
    tau: float = 1.0,
    reduction: str = "mean",
    ignore_index: int = -100,
) -> torch.Tensor:
    """Logit-adjusted cross-entropy (Menon et al. 2021); balanced softmax (Ren et al. 2020) at tau = 1.

    ``CE(x + tau * log pi, y)`` with the class prior ``pi_c = n_c / Σ n``: frequent classes must win
    by a margin, so the model's own logits estimate the balanced posterior. This is the training
    loss, which *adds* ``tau log pi``; the post-hoc correction instead subtracts it from a plainly
    trained model's logits at inference and is not a loss. A uniform prior leaves CE unchanged.

    Args:
        logits: ``(N, C)`` logits.
        targets: ``(N,)`` class indices (``ignore_index`` rows skipped) or ``(N, C)`` probabilities.
        class_counts: ``(C,)`` positive training-sample counts per class.
        tau: scale of the adjustment (1; 0 gives CE).
        reduction: 'none' (``(N,)``) | 'mean' (over rows not ignored, as :func:`ce`) | 'sum'.

    Raises:
        ValueError: bad class counts, an unknown reduction, class indices out of range.

    Example:
        >>> round(logit_adjusted_ce(torch.zeros(1, 2), torch.tensor([0]), [3, 1]).item(), 4)  # -log 0.75
        0.2877
    """
    counts = _class_counts(class_counts, logits.shape[1])
    log_prior = (counts / counts.sum()).log().to(logits)
    return ce(logits + tau * log_prior, targets, reduction=reduction, ignore_index=ignore_index)


def poly1(  # lossaudit: ignore -- Poly-1 adds a term to CE or focal: lint has no poly1 kind yet (issue 15)
    logits: torch.Tensor,
    targets: torch.Tensor,
    epsilon: float = 1.0,
    base: str = "ce",
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
    _check_base(base)
    _check_reduction(reduction)
    if epsilon < -1:
        raise ValueError(f"epsilon must be >= -1; got {epsilon}")
    if base == "focal":
        _check_soft_targets(logits, targets)
        loss = focal(logits, targets, alpha=alpha, gamma=gamma) + epsilon * _one_minus_p_t(logits, targets) ** (gamma + 1)
        return _reduce(loss, reduction)
    probs, keep = _as_target_probs(logits, targets, ignore_index)
    logits = _zero_ignored_rows(logits, keep)
    rows = softmax_focal_terms(logits, probs, gamma=0.0).sum(dim=1)
    p_t = (probs * torch.softmax(logits, dim=1)).sum(dim=1)
    return _reduce(rows + epsilon * (1 - p_t) * keep, reduction, keep.sum())


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
    _check_reduction(reduction)
    if not 0 <= epsilon <= 1:
        raise ValueError(f"epsilon must lie in [0, 1]; got {epsilon}")
    probs, keep = _as_target_probs(logits, targets, ignore_index)
    smoothed = (1 - epsilon) * probs + epsilon / logits.shape[1] * keep.unsqueeze(1).to(probs)
    rows = softmax_focal_terms(_zero_ignored_rows(logits, keep), smoothed, gamma=0.0).sum(dim=1)
    return _reduce(rows, reduction, keep.sum())
