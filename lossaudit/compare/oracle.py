"""The full-tensor oracle of ``compare``: every loss computed element by element on the whole tensors.

The straightforward computation with :mod:`lossaudit.losses` (torch), one loss after the other,
kept as the oracle of :mod:`lossaudit.compare.engine.stream`, which ``compare`` runs (one numpy
pass in chunks, same numbers to float32 rounding). Torch is imported by the functions only.

Unweighted dumps only: a weighted dump (sampling weights, issue 24) is refused. Its weighted rules
(OHEM's weighted top-k, GHM-C's weights from weighted counts, the row weights and recorded
population) would be a second copy of the streaming engine's, no independent check of them; the
weighted engine is checked instead against the unweighted one on the dump with each row repeated
``w`` times (tests/test_weighted_engine.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from lossaudit.compare.settings import LEVEL_EDGES, LEVELS, LossSettings, Tally
from lossaudit.io.dataset import Dataset
from lossaudit.losses.registry import LOSSES
from lossaudit.losses.spec import SOFTMAX, normalise

if TYPE_CHECKING:
    import torch


def difficulty_levels(g: torch.Tensor) -> torch.Tensor:
    """Level index 0..3 of each gradient norm (see :data:`LEVEL_EDGES`)."""
    import torch

    return torch.bucketize(g.float().contiguous(), torch.tensor(LEVEL_EDGES, dtype=torch.float32), right=True)


def tally_keys(g: torch.Tensor, positive: torch.Tensor, bins: int) -> torch.Tensor:
    """Flat index into ``(C, 2, bins, 4)`` of every element of an ``(N, C)`` table."""
    import torch

    from lossaudit import losses

    classes = torch.arange(g.shape[1], device=g.device).expand_as(g)
    difficulty_bin = losses.gradient_norm_bins(g, bins)
    return ((classes * 2 + positive.long()) * bins + difficulty_bin) * len(LEVELS) + difficulty_levels(g)


def _sum_by_key(keys: torch.Tensor, values: torch.Tensor, shape: tuple[int, ...]) -> np.ndarray:
    import torch

    size = int(np.prod(shape))
    sums = torch.bincount(keys.reshape(-1), weights=values.reshape(-1).double(), minlength=size)
    return sums.numpy().reshape(shape)


def tally(data: Dataset, settings: LossSettings) -> Tally:
    """Compute each requested loss element by element on the full tensors and tally it. GHM-C's
    weights read g from p rounded to float32, as the difficulty bins do and the stream bins it (in
    float64 a logit of 2^-23 puts p a hair above 0.5, and its positive in a lower bin than 0.5's)."""
    import torch
    import torch.nn.functional as F

    from lossaudit.losses.density import GHM, ghm_weights

    if data.weighted:
        raise ValueError("the full-tensor oracle tallies unweighted dumps only; this one holds sampling weights")

    num_classes, bins = data.num_classes, settings.bins
    shape = (num_classes, 2, bins, len(LEVELS))
    valid, positive, y = data.valid, data.positive, data.targets
    x = torch.where(valid, data.logits, torch.zeros_like(data.logits)).requires_grad_()
    p = torch.sigmoid(x)
    rounded = torch.sigmoid(x.detach().double()).float()  # g in float32 from the rounded p, as the stream bins it
    sigmoid_keys = tally_keys((rounded - y.float()).abs(), positive, bins)
    weight = valid.double()

    softmax_rows = valid.all(dim=1) & (y.sum(dim=1) > 0)
    background = valid.all(dim=1) & (y.sum(dim=1) == 0)
    multi_hot = valid.all(dim=1) & (positive.sum(dim=1) > 1)
    nonfinite = ~torch.isfinite(data.logits) & ~data.ignored
    out_of_range = (~valid & ~data.ignored & torch.isfinite(data.logits)).any(dim=1)
    softmax_counts = np.zeros(shape)
    sums: dict[str, np.ndarray] = {}
    gradients: dict[str, np.ndarray] = {}
    normalisers: dict[str, float] = {}
    names: dict[str, str] = {}
    class_counts = y.double().sum(dim=0)
    for loss in settings.losses:
        spec, arguments = LOSSES[loss], settings.params(loss)
        assert spec.terms is not None  # every registry loss has its terms
        if spec.family == SOFTMAX:
            rows_x = torch.where(softmax_rows[:, None], x, torch.zeros_like(x))
            rows_y = y * softmax_rows[:, None]
            terms = spec.terms(rows_x, rows_y, class_counts, **arguments)
            softmax_keys = tally_keys(1 - torch.softmax(rows_x, dim=1), positive, bins)
            sums[loss] = _sum_by_key(softmax_keys, terms.detach(), shape)
            (row_gradient,) = torch.autograd.grad(terms.sum(), x, retain_graph=True)
            targets = rows_y.sum(dim=1, keepdim=True)
            magnitude = torch.where(targets > 0, row_gradient.abs().sum(dim=1, keepdim=True) * rows_y / targets, 0.0)
            gradients[loss] = _sum_by_key(softmax_keys, magnitude, shape)
            softmax_counts = _sum_by_key(softmax_keys, (rows_y != 0).double(), shape)
            normalisers[loss], names[loss] = float(softmax_rows.sum()), "rows with a target"
            continue
        if loss == GHM:  # its weights from g at the stream's precision (float32 logits), its BCE in this tally's (float64)
            element_loss = (
                F.binary_cross_entropy_with_logits(x, y.to(x.dtype), reduction="none")
                * ghm_weights((rounded - y.float()).abs(), mask=valid, **arguments)
                * weight
            )
        else:
            element_loss = spec.terms(x, y, valid, positive, **arguments) * weight
        assert spec.normaliser is not None  # every sigmoid registry loss has one
        normalisers[loss], names[loss] = normalise(spec, *spec.normaliser(valid, y, positive))
        sums[loss] = _sum_by_key(sigmoid_keys, element_loss.detach(), shape)
        (gradient,) = torch.autograd.grad(element_loss.sum(), x, retain_graph=True)
        gradients[loss] = _sum_by_key(sigmoid_keys, gradient.abs(), shape)

    x, p = x.detach(), p.detach()
    q_all = torch.softmax(torch.where(softmax_rows[:, None], x, torch.zeros_like(x)), dim=1)
    any_softmax = any(LOSSES[loss].family == SOFTMAX for loss in settings.losses)
    softmax_positive = positive & softmax_rows[:, None] & any_softmax  # the rows a softmax loss uses: none without one
    return Tally(
        loss_sums=sums,
        gradient_sums=gradients,
        element_counts=_sum_by_key(sigmoid_keys, weight, shape),
        normalisers=normalisers,
        normaliser_names=names,
        sum_p_positive=(p * positive).double().sum(dim=0).numpy(),
        sum_q_positive=(q_all * softmax_positive).double().sum(dim=0).numpy(),
        softmax_positives=softmax_positive.sum(dim=0).numpy().astype(np.float64),
        ignored=data.ignored.sum(dim=0).numpy().astype(np.float64),
        nonfinite=(~torch.isfinite(data.logits) & ~data.ignored).sum(dim=0).numpy().astype(np.float64),
        rows=data.num_rows,
        background_rows=int(background.sum()),
        softmax_counts=softmax_counts,
        multi_hot_rows=int(multi_hot.sum()),
        file_counts=_per_file(
            data, {"nonfinite": nonfinite.sum(dim=1), "background_rows": background, "multi_hot_rows": multi_hot, "out_of_range_rows": out_of_range}
        ),
    )


def _per_file(data: Dataset, per_row: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """Sums of ``(N,)`` per-row values over each file's rows (the files are concatenated in order)."""
    rows = [int(np.prod(shape, dtype=np.int64)) // shape[data.class_dim] for shape in data.logits_shapes]
    return {name: np.array([float(part.sum()) for part in values.double().split(rows)]) for name, values in per_row.items()}
