"""GHM-C, the gradient harmonizing classification loss (``ghm``): BCE weighted by the inverse
density of the gradient norm ``g = |p - y|``."""

from __future__ import annotations

from dataclasses import dataclass, field

from lossaudit._lazy import F, torch
from lossaudit.losses.common import check_reduction, reduce
from lossaudit.losses.spec import SIGMOID, Bounds, LintKind, LossSpec, Param, always, valid_elements

GHM = "ghm"

PARAMS = (
    Param("ghm_bins", 10, "GHM-C bins.", metavar="N", bounds=Bounds(1), integer=True),
    Param("ghm_momentum", 0.0, "GHM-C momentum (one call from a fresh state, as mmdet's first iteration).", metavar="M", bounds=Bounds(0, 1, high_open=True)),
)


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
    check_reduction(reduction)
    weights = ghm_weights((torch.sigmoid(logits.detach()) - targets).abs(), bins, momentum, mask, state)
    loss = F.binary_cross_entropy_with_logits(logits, targets, reduction="none") * weights.to(logits.dtype)
    return reduce(loss, reduction, max(int(weights.numel() if mask is None else mask.bool().sum()), 1))


def ghm_weights(
    gradient_norm: torch.Tensor,
    bins: int = 10,
    momentum: float = 0.0,
    mask: torch.Tensor | None = None,
    state: GHMState | None = None,
) -> torch.Tensor:
    """GHM-C's weight of each element (0 where ``mask`` is False), as :func:`ghm` applies it, from
    the elements' gradient norms ``g = |p - y|`` (binned in float32 by
    :func:`gradient_norm_bins`). ``bins``, ``momentum``, ``mask``, ``state``: as :func:`ghm`.
    Returns float64 weights on ``gradient_norm``'s device."""
    if state is None:
        state = GHMState(bins=bins, momentum=momentum)
    elif state.bins != bins or state.momentum != momentum:
        raise ValueError(f"state has bins={state.bins}, momentum={state.momentum}; got bins={bins}, momentum={momentum}")
    valid = torch.ones_like(gradient_norm, dtype=torch.bool) if mask is None else mask.bool()
    bin_index = gradient_norm_bins(gradient_norm, bins)
    total = max(int(valid.sum()), 1)
    counts = torch.bincount(bin_index[valid], minlength=bins)
    return ghm_bin_weights(counts, total, state).to(gradient_norm.device)[bin_index] * valid


def _ghm_terms(x: torch.Tensor, y: torch.Tensor, valid: torch.Tensor, positive: torch.Tensor, bins: int, momentum: float) -> torch.Tensor:
    return ghm(x, y, bins=bins, momentum=momentum, mask=valid, reduction="none")


LOSSES = (
    LossSpec(
        GHM,
        SIGMOID,
        "GHM-C: BCE weighted by the inverse density of g = |p - y| (mmdet)",
        params=("ghm_bins", "ghm_momentum"),
        arguments=lambda s: {"bins": s.ghm_bins, "momentum": s.ghm_momentum},
        terms=_ghm_terms,
        normaliser=valid_elements,
        empty_name="valid elements",
        default_when=always,
        lint_kind=GHM,
    ),
)
LINT_KINDS = (
    LintKind(
        GHM,
        "GHM-C, BCE weighted by gradient density (mmdet GHMC)",
        SIGMOID,
        reference=ghm,
        parameters={"bins": ("bins",), "momentum": ("momentum",)},
        focusing=None,
        normalisations=("none", "sum", "mean over elements"),
        usual_normalisation="the mean over valid elements (mmdet)",
        no_alpha="GHM-C takes no balancing weight: its gradient-density weights do the balancing",
        hint=("name", ("ghm",), "name (GHM)", True),
    ),
)
