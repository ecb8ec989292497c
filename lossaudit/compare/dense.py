"""The dense pass: every element of a chunk taken as a valid negative of the easiest difficulty.

Nearly every element of a detection dump is a background anchor's easy negative: target 0 and
``p = sigmoid(x)`` below the first edge of the difficulty intervals (0.1 by default). Their losses
are functions of the logit alone, and ``compare`` needs only their sums per class. For every
element of an ``(n, C)`` chunk the pass computes, in float32, from one ``exp`` and one ``log1p``
(:func:`~lossaudit.compare.elements.sigmoid_parts`):

    l = log1p(e), q = e / (1 + e)     e = exp(-|x|); q = sigmoid(-|x|) is p wherever x < 0
    s = max(x, 0) + l                 softplus(x) = BCE(x, 0) = -log(1 - p)
    f = q^gamma s                     focal's p^gamma BCE, before the negative weight 1 - alpha
    c = -log1p(-q_c) q_c^2            CenterNet's negative term, q_c = max(q, 1e-4)

Then it takes out the elements these values do not describe: logits at or above a threshold
``x0`` (every x below it has p below the first edge), non-zero targets and excluded elements (an
element mask, a non-finite logit); dropped rows are left out whole. The values of all of them are
set to 0 and the rest is added to float64 accumulators shaped like the chunk; column sums are taken
once, by :meth:`DensePass.class_sums`. The caller tallies the valid taken-out elements one by one
(:mod:`lossaudit.compare.elements`) from the intermediates ``x``, ``l`` and ``q`` gathered there
(:class:`Taken`).

The buffers are allocated once, for chunks of up to ``max_rows`` rows, and every operation writes
into them (``out=``): the pass allocates nothing the size of a chunk.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lossaudit.compare.elements import CENTERNET_PROB_CLAMP, sigmoid_parts
from lossaudit.dataset import Chunk

DENSE_VALUES = ("softplus", "focal", "centernet")
"""The per-class sums the pass can keep."""


def easy_threshold(first_edge: np.float32) -> np.float32:
    """A float32 logit ``x0`` below which ``sigmoid(x) < first_edge``: ``logit(first_edge)`` less
    16 float32 steps, a margin for the rounding of either sigmoid (numpy's here, torch's in the
    reference). Logits in the margin are tallied one by one, which is exact either way."""
    edge = float(first_edge)
    x0 = np.float32(np.log(edge / (1 - edge)))
    return np.float32(x0 - 16 * abs(np.spacing(x0)))


@dataclass
class Taken:
    """The elements of a chunk the dense pass took out (dropped rows excepted): ``(k,)`` arrays.

    Attributes:
        index: flat indices into the ``(n, C)`` chunk, sorted.
        x, log1p, q: the float32 logit and its :func:`~lossaudit.compare.elements.sigmoid_parts`.
    """

    index: np.ndarray
    x: np.ndarray
    log1p: np.ndarray
    q: np.ndarray


class DensePass:
    """Per-class sums of the values of the easy negatives of the chunks given to :meth:`add`.

    Args:
        max_rows: the most rows a chunk has.
        classes: C.
        first_edge: the first edge of the difficulty intervals.
        gamma: focal's gamma.
        values: the sums to keep, among :data:`DENSE_VALUES`; ``softplus`` is kept whenever another
            one is (focal is computed from it).

    Attributes:
        x: the ``(max_rows, C)`` float32 logits buffer to decode chunks into (``out=``).
        count: ``(C,)`` easy negatives counted so far, per class.
    """

    def __init__(self, max_rows: int, classes: int, first_edge: np.float32, gamma: float, values: tuple[str, ...]):
        shape = (max_rows, classes)
        values = tuple(name for name in DENSE_VALUES if name in values or (name == "softplus" and values))
        self.classes, self.gamma = classes, gamma
        self.x0 = easy_threshold(first_edge)
        self.x = np.empty(shape, dtype=np.float32)
        self._log1p, self._q = np.empty(shape, dtype=np.float32), np.empty(shape, dtype=np.float32)
        self._zero = np.zeros(shape, dtype=np.float32) if values else None
        self._scratch = np.empty(shape, dtype=np.float32) if "centernet" in values else None
        self._taken = np.empty(shape, dtype=bool)
        self._buffers = {name: np.empty(shape, dtype=np.float32) for name in values}
        self._sums = {name: np.zeros(shape, dtype=np.float64) for name in values}
        self.count = np.zeros(classes, dtype=np.int64)

    def add(self, chunk: Chunk) -> Taken:
        """Add the easy negatives of ``chunk`` (whose logits are ``self.x[:n]``) to the sums and
        return the elements taken out. After the call, :meth:`softplus` holds the chunk's softplus
        with the taken-out elements and dropped rows zeroed."""
        n = len(chunk.logits)
        x, taken = chunk.logits, self._taken[:n]
        buffers = {name: buffer[:n] for name, buffer in self._buffers.items()}
        with np.errstate(invalid="ignore", over="ignore"):  # NaN and inf logits are taken out below
            log1p, q = sigmoid_parts(x, self._log1p[:n], self._q[:n])
            if buffers:
                self._values(x, log1p, q, buffers)
        np.greater_equal(x, self.x0, out=taken)
        taken[chunk.target_rows, chunk.target_cols] = True
        invalid = chunk.element_invalid
        if invalid is not None:
            taken |= invalid
        dropped = np.flatnonzero(chunk.dropped_rows)
        taken[dropped] = False
        index = np.flatnonzero(taken)
        for name, values in buffers.items():
            values.reshape(-1)[index] = 0
            values[dropped] = 0
            self._sums[name][:n] += values
        self.count += n - len(dropped) - np.bincount(index % self.classes, minlength=self.classes)
        return Taken(index=index, x=x.reshape(-1)[index], log1p=log1p.reshape(-1)[index], q=q.reshape(-1)[index])

    def _values(self, x: np.ndarray, log1p: np.ndarray, q: np.ndarray, buffers: dict[str, np.ndarray]) -> None:
        """Fill ``buffers`` with the values of the module docstring, in place."""
        s = buffers["softplus"]
        np.maximum(x, self._zero[: len(x)], out=s)
        np.add(s, log1p, out=s)
        if "centernet" in buffers:
            c, scratch = buffers["centernet"], self._scratch[: len(x)]
            np.maximum(q, CENTERNET_PROB_CLAMP, out=c)
            np.negative(c, out=scratch)
            np.log1p(scratch, out=scratch)
            np.multiply(c, c, out=c)
            np.multiply(c, scratch, out=c)
            np.negative(c, out=c)
        if "focal" in buffers:
            f = buffers["focal"]
            if self.gamma == 2:
                np.multiply(q, q, out=f)
            else:
                np.power(q, np.float32(self.gamma), out=f)
            np.multiply(f, s, out=f)

    def softplus(self, rows: int) -> np.ndarray:
        """The last chunk's ``(rows, C)`` softplus, taken-out elements and dropped rows zeroed."""
        return self._buffers["softplus"][:rows]

    def class_sums(self) -> dict[str, np.ndarray]:
        """``(C,)`` float64 sums of each kept value over the easy negatives added so far."""
        return {name: sums.sum(axis=0) for name, sums in self._sums.items()}
