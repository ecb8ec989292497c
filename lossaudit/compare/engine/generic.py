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
"""

from __future__ import annotations

import numpy as np

from lossaudit.compare.engine import elements
from lossaudit.compare.engine.binning import Intervals
from lossaudit.compare.settings import LossSettings, Tally
from lossaudit.io.dataset import Chunk
from lossaudit.losses.registry import LOSSES
from lossaudit.losses.spec import SIGMOID, normalise


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
    """

    def __init__(self, settings: LossSettings, losses: tuple[str, ...], num_classes: int, class_counts: np.ndarray | None, specs: dict | None = None):
        self.losses = losses  # ids, not entries: accumulators are pickled back from forked workers
        self.specs = specs or {}
        self.arguments = {loss: {} if loss in self.specs else settings.params(loss) for loss in losses}
        self.class_counts, self.num_classes = class_counts, num_classes
        self.intervals = Intervals(settings.bins, settings.ghm_bins)
        self.size = num_classes * 2 * self.intervals.count
        self.tables = {loss: np.zeros((2, self.size)) for loss in losses}  # loss, gradient magnitude
        self.normalisers = {loss: [0.0, ""] for loss in losses}

    def add(self, chunk: Chunk, file: int = 0) -> None:
        """Tally one chunk of rows (``file`` is not needed)."""
        import torch

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
        self._add(loss, keys, element.detach().numpy()[row, col], gradient.abs().numpy()[row, col])
        count, unit = spec.normaliser(valid_t, y, positive_t & valid_t)
        self.normalisers[loss] = [self.normalisers[loss][0] + count, unit]

    def _add_softmax(self, torch, loss: str, spec, chunk: Chunk, positive: np.ndarray) -> None:
        rows = np.flatnonzero(chunk.valid_rows & chunk.has_target)
        self.normalisers[loss] = [self.normalisers[loss][0] + len(rows), "rows with a target"]
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
        self._add(loss, keys, terms.detach().numpy()[local_row, col], shared[local_row, col])

    def _add(self, loss: str, keys: np.ndarray, values: np.ndarray, gradient: np.ndarray) -> None:
        for table, value in zip(self.tables[loss], (values, gradient)):
            table += np.bincount(keys, weights=value, minlength=self.size)

    def merge(self, other: GenericTally) -> None:
        """Add another accumulator's sums (of other chunks) to this one."""
        for loss, tables in other.tables.items():
            self.tables[loss] += tables
            self.normalisers[loss][0] += other.normalisers[loss][0]
            self.normalisers[loss][1] = self.normalisers[loss][1] or other.normalisers[loss][1]

    def finish(self, tally: Tally) -> None:
        """Put the sums and normalisers into ``tally``'s cells."""
        for loss, (table, gradient) in self.tables.items():
            cells = (self.intervals.to_cells(values.reshape(self.num_classes, 2, self.intervals.count)).sum(axis=-1) for values in (table, gradient))
            tally.loss_sums[loss], tally.gradient_sums[loss] = cells
            count, unit = self.normalisers[loss]
            spec = self.specs.get(loss) or LOSSES[loss]
            sigmoid = spec.family == SIGMOID
            tally.normalisers[loss], tally.normaliser_names[loss] = normalise(spec, count, unit or "valid elements") if sigmoid else (float(count), "rows with a target")
