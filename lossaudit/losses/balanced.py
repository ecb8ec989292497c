"""Losses for long-tailed classes: class-balanced CE (``cb-ce``, Cui et al. 2019) and
logit-adjusted CE (``logit-adjusted-ce``, Menon et al. 2021). Both read the data's class counts."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from lossaudit._lazy import torch
from lossaudit.losses.common import (
    as_target_probs,
    check_reduction,
    class_counts_tensor,
    reduce,
    zero_ignored_rows,
)
from lossaudit.losses.cross_entropy import CE, ce
from lossaudit.losses.focusing import FOCAL, focal, softmax_focal, softmax_focal_terms
from lossaudit.losses.spec import SOFTMAX, Bounds, LossSpec, Param

if TYPE_CHECKING:
    import numpy as np

CB_CE, LOGIT_ADJUSTED_CE = "cb-ce", "logit-adjusted-ce"
BASES = (CE, FOCAL)
"""The base losses of :func:`cb` and :func:`~lossaudit.losses.smoothing.poly1`."""

PARAMS = (
    Param("cb_beta", 0.9999, "cb-ce's beta of the effective number of samples, in [0, 1).", metavar="B", bounds=Bounds(0, 1, high_open=True)),
    Param("la_tau", 1.0, "logit-adjusted-ce's scale tau of the log class prior.", metavar="T", bounds=Bounds()),
)


def check_base(base: str) -> None:
    if base not in BASES:
        raise ValueError(f"base must be {BASES[0]!r} (softmax cross-entropy) or {BASES[1]!r} (sigmoid focal loss); got {base!r}")


def class_balanced_weights_numpy(counts: np.ndarray, beta: float) -> np.ndarray:
    """``(C,)`` weights ``∝ (1 - beta) / (1 - beta^n_c)`` summing to C, as :func:`class_balanced_weights`, in numpy."""
    import numpy as np

    inverse = (1 - beta) / -np.expm1(np.log(beta) * counts) if beta > 0 else np.ones_like(counts)
    return inverse * len(counts) / inverse.sum()


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
    counts = class_counts_tensor(class_counts)
    inverse = (1 - beta) / (1 - beta**counts)
    return inverse * len(counts) / inverse.sum()


def cb(
    logits: torch.Tensor,
    targets: torch.Tensor,
    class_counts: Sequence[float] | torch.Tensor,
    beta: float = 0.9999,
    base: str = CE,
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
    check_base(base)
    check_reduction(reduction)
    weights = class_balanced_weights(class_counts_tensor(class_counts, logits.shape[1]), beta)
    if base == CE:
        return softmax_focal(logits, targets, gamma=0.0, alpha=weights, reduction=reduction, ignore_index=ignore_index)
    if targets.dim() != logits.dim() - 1:
        raise ValueError(
            f"cb with base='focal' needs {tuple(logits.shape[:1])} class indices (each row is weighted by its "
            f"class); got targets of shape {tuple(targets.shape)}"
        )
    probs, keep = as_target_probs(logits, targets, ignore_index)
    row_weight = probs @ weights.to(probs)
    loss = focal(zero_ignored_rows(logits, keep), probs, alpha=-1, gamma=gamma) * row_weight.unsqueeze(1)
    return reduce(loss, reduction, keep.sum())


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
    counts = class_counts_tensor(class_counts, logits.shape[1])
    log_prior = (counts / counts.sum()).log().to(logits)
    return ce(logits + tau * log_prior, targets, reduction=reduction, ignore_index=ignore_index)


def _cb_terms(x: torch.Tensor, y: torch.Tensor, class_counts: torch.Tensor, beta: float) -> torch.Tensor:
    """CE terms weighted by :func:`class_balanced_weights` of their class."""
    weights = class_balanced_weights(class_counts, beta).to(x.dtype)
    return softmax_focal_terms(x, y, gamma=0.0, alpha=weights)


def _logit_adjusted_terms(x: torch.Tensor, y: torch.Tensor, class_counts: torch.Tensor, tau: float) -> torch.Tensor:
    """CE terms of ``x + tau log(counts / Σ counts)``."""
    log_prior = (class_counts / class_counts.sum()).log().to(x.dtype)
    return softmax_focal_terms(x + tau * log_prior, y, gamma=0.0)


LOSSES = (
    LossSpec(
        CB_CE,
        SOFTMAX,
        "class-balanced CE: CE weighted by the effective number of each class's samples",
        params=("cb_beta",),
        arguments=lambda s: {"beta": s.cb_beta},
        terms=_cb_terms,
        needs_class_counts=True,
    ),
    LossSpec(
        LOGIT_ADJUSTED_CE,
        SOFTMAX,
        "logit-adjusted CE: CE of x + tau log(class prior) (balanced softmax at tau 1)",
        params=("la_tau",),
        arguments=lambda s: {"tau": s.la_tau},
        terms=_logit_adjusted_terms,
        needs_class_counts=True,
    ),
)
