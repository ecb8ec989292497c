"""Reference losses: the behaviour lossaudit compares data and user code against.

Every function is pure (tensors in, tensor out, no hidden state) and takes logits unless its
docstring says otherwise. Notation used throughout:

- ``x`` logit, ``p = sigmoid(x)``, ``y`` target in {0, 1} or soft in [0, 1];
- ``p_t = p*y + (1 - p)*(1 - y)``, ``alpha_t = alpha*y + (1 - alpha)*(1 - y)``;
- ``q = softmax(x)`` over the class axis for the softmax losses.

The public names map to the loss identifiers used on the command line and in JSON output
(see :data:`LOSS_IDS`): ``ce``, ``bce``, ``focal``, ``softmax-focal``, ``ghm``, ``centernet``, ``ohem``.
The semantics follow ``shared/REFERENCES.md``; where the references disagree, each docstring
states the choice made and the parameter that selects the other convention.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

LOSS_IDS = ("ce", "bce", "focal", "softmax-focal", "ghm", "centernet", "ohem")
"""Loss identifiers, in the order reports list them."""

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
    rows = softmax_focal_terms(logits, probs, gamma, alpha).sum(dim=1)
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
    rows of highest loss (SSD). Returns a ``(N,)`` bool mask."""
    n_pos = int(positive_rows.sum())
    negative_loss = torch.where(positive_rows, torch.full_like(row_loss, -torch.inf), row_loss)
    k = min(int(neg_pos_ratio * n_pos), int((~positive_rows).sum()))
    keep = positive_rows.clone()
    if k > 0:
        keep[torch.topk(negative_loss, k).indices] = True
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
