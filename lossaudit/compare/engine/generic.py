"""The slow path of the streaming engine: losses it has no numpy terms for, from their torch
reference (the registry entry's ``terms``), chunk by chunk in float64.

A loss family added to the registry is computed here until someone writes numpy terms for it
(the streaming pass's :data:`~lossaudit.compare.engine.stream.FAST_LOSSES`, the families of
:mod:`~lossaudit.compare.engine.families`): every chunk's valid elements (sigmoid losses) or target terms of the rows
with a target (softmax losses) go through the reference, the gradient magnitude through autograd,
and both are binned exactly as the streaming pass bins its own losses (``g = |p - y|`` with ``p``
the float32 sigmoid; ``1 - q_target`` with the float32 softmax). The reference must be separable
over rows (GHM-C and OHEM, which are not, have numpy terms). Torch is imported by :meth:`add`,
in each forked worker; where this process has imported torch already, the pass runs in this
process instead (torch's thread pools do not survive a fork: autograd in the child can hang).

Weighted dumps: each element (softmax: each target term, at its target element's weight) adds its
weight times its loss and gradient magnitude, and ``w (w - 1)`` times their squares to the second
moments; a normaliser of valid elements adds their weights, any other sigmoid normaliser (a count
that adds up over rows) is taken per group of rows of one row weight
(:attr:`~lossaudit.io.dataset.Chunk.row_weights`) and weighted by it; a softmax loss's rows add their
row weights.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lossaudit.compare.engine import elements
from lossaudit.compare.engine.binning import Intervals
from lossaudit.compare.settings import LossSettings, Tally
from lossaudit.io.dataset import Chunk
from lossaudit.losses.registry import LOSSES
from lossaudit.losses.spec import SIGMOID, normalise, valid_elements


class GenericTally:
    """Sums of ``losses`` (ids without numpy terms) over the chunks given to :meth:`add`, in the flat
    ``(C, 2, intervals)`` keys of the streaming pass.

    Args:
        settings: the hyper-parameters and difficulty bins.
        losses: the loss ids to compute here.
        num_classes: C.
        class_counts: ``(C,)`` target sums of the data, for losses that read them (else None).
        specs: entries of losses outside the registry (a user's losses:
            :mod:`~lossaudit.compare.engine.user`), by id; such an accumulator is not pickled.
        weighted: the chunks carry sampling weights (see the module docstring; also set by the
            first chunk that carries them).
    """

    def __init__(
        self,
        settings: LossSettings,
        losses: tuple[str, ...],
        num_classes: int,
        class_counts: np.ndarray | None,
        specs: dict | None = None,
        weighted: bool = False,
    ):
        self.losses = losses  # ids, not entries: accumulators are pickled back from forked workers
        self.specs = specs or {}
        self.arguments = {loss: {} if loss in self.specs else settings.params(loss) for loss in losses}
        self.class_counts, self.num_classes = class_counts, num_classes
        self.intervals = Intervals(settings.bins, settings.ghm_bins)
        self.size = num_classes * 2 * self.intervals.count
        self.tables = {loss: np.zeros((2, self.size)) for loss in losses}  # loss, gradient magnitude
        self.second: dict[str, np.ndarray] | None = None  # Σ w (w - 1) v², weighted
        if weighted:
            self._weigh()
        self.normalisers: dict[str, list[Any]] = {loss: [0.0, ""] for loss in losses}  # [count, unit]

    def _weigh(self) -> None:
        if self.second is None:
            self.second = {loss: np.zeros((2, self.size)) for loss in self.losses}

    def add(self, chunk: Chunk, file: int = 0) -> None:
        """Tally one chunk of rows (``file`` is not needed)."""
        import torch

        if chunk.weights is not None:
            self._weigh()
        positive = np.zeros(chunk.logits.shape, dtype=bool)
        positive[chunk.target_rows, chunk.target_cols] = chunk.target_positive
        for loss in self.losses:
            spec = self.specs.get(loss) or LOSSES[loss]
            if spec.family == SIGMOID:
                self._add_sigmoid(torch, loss, spec, chunk, positive)
            else:
                self._add_softmax(torch, loss, spec, chunk, positive)

    def _add_sigmoid(self, torch, loss: str, spec, chunk: Chunk, positive: np.ndarray) -> None:
        valid = chunk.valid
        x = torch.from_numpy(np.where(valid, chunk.logits, 0).astype(np.float64)).requires_grad_()
        y, valid_t, positive_t = torch.from_numpy(chunk.targets.astype(np.float64)), torch.from_numpy(valid), torch.from_numpy(positive)
        element = spec.terms(x, y, valid_t, positive_t, **self.arguments[loss]) * valid_t
        (gradient,) = torch.autograd.grad(element.sum(), x)
        row, col = np.nonzero(valid)
        g = np.abs(elements.sigmoid32(chunk.logits[row, col]) - chunk.targets[row, col])
        keys = self.intervals.keys(col, positive[row, col], g)
        w = chunk.weights[row, col] if chunk.weights is not None else None
        self._add(loss, keys, element.detach().numpy()[row, col], gradient.abs().numpy()[row, col], w)
        if w is None:
            count, unit = spec.normaliser(valid_t, y, positive_t & valid_t)
        elif spec.normaliser is valid_elements:
            count, unit = float(w.sum()), "valid elements"
        else:  # a count that adds up over rows: per group of rows of one weight
            row_weights = chunk.row_weights
            count, unit = 0.0, ""
            for weight in np.unique(row_weights):
                rows = torch.from_numpy(row_weights == weight)
                part, unit = spec.normaliser(valid_t & rows[:, None], y, positive_t & valid_t & rows[:, None])
                count += float(weight) * float(part)
        self.normalisers[loss] = [self.normalisers[loss][0] + count, unit]

    def _add_softmax(self, torch, loss: str, spec, chunk: Chunk, positive: np.ndarray) -> None:
        rows = np.flatnonzero(chunk.valid_rows & chunk.has_target)
        counted = len(rows) if chunk.weights is None else float(chunk.row_weights[rows].sum())
        self.normalisers[loss] = [self.normalisers[loss][0] + counted, "rows with a target"]
        if not len(rows):
            return
        in_rows = chunk.valid_rows[chunk.target_rows]
        row, col = chunk.target_rows[in_rows], chunk.target_cols[in_rows]
        local_row = np.searchsorted(rows, row)
        x32 = chunk.logits[rows]
        q = elements.softmax_terms(x32, local_row, col).q
        keys = self.intervals.keys(col, positive[row, col], np.float32(1) - q)
        x = torch.from_numpy(x32.astype(np.float64)).requires_grad_()
        y = torch.from_numpy(chunk.targets[rows].astype(np.float64))
        counts = None if self.class_counts is None else torch.from_numpy(self.class_counts)
        terms = spec.terms(x, y, counts, **self.arguments[loss])
        (gradient,) = torch.autograd.grad(terms.sum(), x)
        targets = y.sum(dim=1, keepdim=True)
        shared = (gradient.abs().sum(dim=1, keepdim=True) * y / targets).numpy()
        w = chunk.weights[row, col] if chunk.weights is not None else None  # a term weighs as its target element
        self._add(loss, keys, terms.detach().numpy()[local_row, col], shared[local_row, col], w)

    def _add(self, loss: str, keys: np.ndarray, values: np.ndarray, gradient: np.ndarray, w: np.ndarray | None = None) -> None:
        for index, (table, value) in enumerate(zip(self.tables[loss], (values, gradient))):
            table += np.bincount(keys, weights=value if w is None else w * value, minlength=self.size)
            if w is not None:
                assert self.second is not None  # weighted mode (_weigh)
                self.second[loss][index] += np.bincount(keys, weights=w * (w - 1) * value * value, minlength=self.size)

    def merge(self, other: GenericTally) -> None:
        """Add another accumulator's sums (of other chunks) to this one."""
        for loss, tables in other.tables.items():
            self.tables[loss] += tables
            if other.second is not None:
                self._weigh()
                assert self.second is not None  # weighted mode (_weigh)
                self.second[loss] += other.second[loss]
            self.normalisers[loss][0] += other.normalisers[loss][0]
            self.normalisers[loss][1] = self.normalisers[loss][1] or other.normalisers[loss][1]

    def finish(self, tally: Tally) -> None:
        """Put the sums and normalisers into ``tally``'s cells."""

        def cells(values: np.ndarray) -> np.ndarray:
            return self.intervals.to_cells(values.reshape(self.num_classes, 2, self.intervals.count)).sum(axis=-1)

        for loss, (table, gradient) in self.tables.items():
            tally.loss_sums[loss], tally.gradient_sums[loss] = cells(table), cells(gradient)
            if self.second is not None:
                assert tally.second_moments is not None  # weighted mode (_weigh)
                tally.second_moments[loss], tally.second_moments["gradient:" + loss] = (cells(values) for values in self.second[loss])
            count, unit = self.normalisers[loss]
            spec = self.specs.get(loss) or LOSSES[loss]
            sigmoid = spec.family == SIGMOID
            tally.normalisers[loss], tally.normaliser_names[loss] = (
                normalise(spec, count, unit or "valid elements") if sigmoid else (float(count), "rows with a target")
            )
