"""What the reference losses share: reductions, target checks and conversions (torch, imported
on first use)."""

from __future__ import annotations

from collections.abc import Sequence

from lossaudit._lazy import F, torch

REDUCTIONS = ("none", "mean", "sum")


def check_reduction(reduction: str) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {', '.join(REDUCTIONS)}; got {reduction!r}")


def reduce(loss: torch.Tensor, reduction: str, count: torch.Tensor | int | None = None) -> torch.Tensor:
    """Apply ``reduction``; 'mean' divides the sum by ``count`` (default: the number of elements)."""
    if reduction == "none":
        return loss
    total = loss.sum()
    if reduction == "sum":
        return total
    if count is None:
        return loss.mean()
    return total / count


def as_target_probs(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int) -> tuple[torch.Tensor, torch.Tensor]:
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


def zero_ignored_rows(logits: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """``logits`` with the ``(N,)`` rows ``keep`` leaves out set to 0 by selection, not by a
    multiplication: an inf/NaN logit at an ignored row times its zero target is NaN (lint FL022)."""
    return torch.where(keep.unsqueeze(1), logits, torch.zeros_like(logits))


def check_soft_targets(logits: torch.Tensor, targets: torch.Tensor) -> None:
    """Soft (or hard) per-class targets: the shape of ``logits``, values in [0, 1]."""
    if targets.shape != logits.shape:
        raise ValueError(
            f"targets has shape {tuple(targets.shape)} but logits has shape {tuple(logits.shape)}; "
            f"expected {tuple(logits.shape)} targets in [0, 1] (0 for negatives)"
        )
    if targets.numel() and (targets.min() < 0 or targets.max() > 1):
        raise ValueError(f"targets must lie in [0, 1]; got values from {float(targets.min())} to {float(targets.max())}")


def one_minus_p_t(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``1 - p_t = (1 - p) y + p (1 - y)``, each side taken from a sigmoid without cancellation."""
    return torch.sigmoid(-logits) * targets + torch.sigmoid(logits) * (1 - targets)


def class_counts_tensor(class_counts: Sequence[float] | torch.Tensor, num_classes: int | None = None) -> torch.Tensor:
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
