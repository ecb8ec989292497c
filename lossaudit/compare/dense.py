"""The dense pass: every element of a chunk taken as a valid negative of the easiest difficulty.

Nearly every element of a detection dump is a background anchor's easy negative: target 0 and
``p = sigmoid(x)`` below the first edge of the difficulty intervals (0.1 by default), so x < 0.
Their losses are functions of the logit alone, and ``compare`` needs only their sums per class.
For every element of an ``(n, C)`` chunk the pass computes, in float32, from one ``exp`` and one
``log1p`` (:func:`~lossaudit.compare.elements.sigmoid_parts`):

    l = log1p(e), q = e / (1 + e)     e = exp(-|x|); where x < 0: q = p and l = softplus(x)
                                      = BCE(x, 0) = -log(1 - p)
    f = q^gamma l                     focal's p^gamma BCE, before the negative weight 1 - alpha
    c = -log1p(-q_c) q_c^2            CenterNet's negative term, q_c = max(q, 1e-4)

and the gradient magnitudes |∂/∂x| of these losses (``compare``'s gradient shares): BCE's is ``q``
itself; focal's, ``q^gamma (q + gamma (1 - q) l) = gamma (f - q f) + q^(gamma + 1)``, is summed
as ``gamma (Σ f - Σ q f) + Σ q^(gamma + 1)`` (q < 0.1: no cancellation), two products per element;
CenterNet's is ``q_c^3 + 2 (1 - q_c) c`` (0 where q < 1e-4: the clamp stops the gradient).

Then it takes out the elements these values do not describe: logits at or above a threshold
``x0 < 0`` (every x below it has p below the first edge), non-zero targets and excluded elements
(an element mask, a non-finite logit); dropped rows are left out whole. Their values are set to 0
and the column sums of the rest are added, in float64, to per-class sums. The caller tallies the
valid taken-out elements one by one (:mod:`lossaudit.compare.elements`) from the intermediates
``x``, ``l`` and ``q`` gathered there (:class:`Taken`).

A chunk is worked through in blocks of rows whose intermediates stay in the cache. The buffers
are allocated once and every operation writes into them (``out=``): the pass allocates nothing the
size of a chunk or a block.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lossaudit.compare.elements import CENTERNET_PROB_CLAMP, sigmoid_parts
from lossaudit.dataset import Chunk

DENSE_VALUES = ("softplus", "q", "focal", "focal_gradient", "centernet", "centernet_gradient")
FOCAL_GRADIENT_PARTS = ("focal_q", "focal_qq")
"""The buffers focal's gradient is summed from: ``q f`` and ``q^(gamma + 1)``."""
"""The per-class sums the pass can keep: ``q`` is BCE's gradient magnitude, ``focal_gradient`` and
``centernet_gradient`` those of focal (before ``1 - alpha``) and CenterNet."""

PAIRING_LEVELS = 4
PAIRED_ROWS = 2**PAIRING_LEVELS
"""Column sums add rows in pairs in float32 four times (16 rows) before summing in float64: the
float64 sum, a cast per element, is the slow part (CPU time on 80M elements: 0.567 s with three
levels, 0.545 s with four, 0.556 s with five)."""


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

    def select(self, keep: np.ndarray) -> Taken:
        """The elements where the ``(k,)`` bool ``keep`` is true."""
        return Taken(self.index[keep], self.x[keep], self.log1p[keep], self.q[keep])


class DensePass:
    """Per-class sums of the values of the easy negatives of the chunks given to :meth:`add`.

    A chunk is worked through in blocks of ``block_rows`` rows, whose intermediates stay in the
    cache; :attr:`x` and the taken-out mask are the only buffers the size of a chunk.

    Args:
        max_rows: the most rows a chunk has.
        classes: C.
        first_edge: the first edge of the difficulty intervals.
        gamma: focal's gamma.
        values: the sums to keep, among :data:`DENSE_VALUES`; ``softplus`` is kept whenever another
            one is (focal is computed from it), ``focal`` whenever ``focal_gradient`` is, ``centernet``
            whenever ``centernet_gradient`` is.
        block_rows: rows per block.
        row_sums: also keep each row's softplus sum (hard-negative mining's row losses).

    Attributes:
        x: a ``(max_rows, C)`` float32 buffer to decode chunks into (``out=``) when their logits
            must be converted.
        count: ``(C,)`` easy negatives counted so far, per class.
    """

    def __init__(self, max_rows: int, classes: int, first_edge: np.float32, gamma: float, values: tuple[str, ...], block_rows: int, row_sums: bool = False):
        needs = {"softplus": bool(values) or row_sums, "focal": "focal_gradient" in values, "centernet": "centernet_gradient" in values}
        values = tuple(name for name in DENSE_VALUES if name in values or needs.get(name, False))
        block_rows = min(block_rows, max_rows)
        padded = ((block_rows + PAIRED_ROWS - 1) // PAIRED_ROWS * PAIRED_ROWS, classes)
        self.classes, self.gamma, self.block_rows = classes, gamma, block_rows
        self.x0 = easy_threshold(first_edge)
        self.x = np.empty((max_rows, classes), dtype=np.float32)
        self._taken = np.empty((block_rows, classes), dtype=bool)
        kept = [name for value in values for name in (FOCAL_GRADIENT_PARTS if value == "focal_gradient" else (value,))]
        self._stack = np.zeros((len(kept), *padded), dtype=np.float32)  # the value buffers, zeroed and summed at once
        self._buffers = dict(zip(kept, self._stack))
        self._log1p = self._buffers.get("softplus", np.zeros(padded, dtype=np.float32))
        self._q = self._buffers.get("q", np.empty(padded, dtype=np.float32))
        self._scratch = np.empty(padded, dtype=np.float32) if "centernet" in values else None
        self._sums = np.zeros((len(kept), classes), dtype=np.float64)
        self._columns = np.empty((len(kept), classes), dtype=np.float64)
        self._row_sums = np.empty(max_rows, dtype=np.float64) if row_sums else None
        self.count = np.zeros(classes, dtype=np.int64)

    def add(self, chunk: Chunk) -> Taken:
        """Add the easy negatives of ``chunk`` (its logits are only read) to the sums and return
        the elements taken out. After the call, :meth:`row_softplus` holds the chunk's row sums of
        softplus over its easy negatives (when kept)."""
        n = len(chunk.logits)
        starts = range(0, n, self.block_rows)
        targets = np.searchsorted(chunk.target_rows, [*starts, n])  # the targets of each block
        dropped, invalid = chunk.dropped_rows, chunk.element_invalid
        dropped = dropped if dropped.any() else None  # most chunks drop no row: two calls a block saved
        with np.errstate(invalid="ignore", over="ignore"):  # NaN and inf logits are taken out
            blocks = [self._add_block(chunk, start, min(start + self.block_rows, n), slice(targets[i], targets[i + 1]), dropped, invalid) for i, start in enumerate(starts)]
        taken = Taken(*([np.concatenate(part) for part in zip(*blocks)] if len(blocks) > 1 else blocks[0]))
        self.count += n - (0 if dropped is None else int(np.count_nonzero(dropped))) - np.bincount(taken.index % self.classes, minlength=self.classes)
        return taken

    def _add_block(self, chunk: Chunk, start: int, stop: int, targets: slice, dropped: np.ndarray | None, invalid: np.ndarray | None) -> tuple[np.ndarray, ...]:
        """Rows ``start .. stop`` of the chunk (holding its targets ``targets``; ``dropped`` and
        ``invalid``: the chunk's dropped rows, or None for none, and its excluded elements): add
        their easy negatives to the sums; return the fields of :class:`Taken` for their taken-out
        elements."""
        x, rows = chunk.logits[start:stop], stop - start
        taken = self._taken[:rows]
        dropped = None if dropped is None else dropped[start:stop]
        np.greater_equal(x, self.x0, out=taken)
        taken[chunk.target_rows[targets] - start, chunk.target_cols[targets]] = True
        if invalid is not None:
            taken |= invalid[start:stop]
        if dropped is not None:
            taken[dropped] = False
        index = np.flatnonzero(taken)
        log1p, q = sigmoid_parts(x, self._log1p[:rows], self._q[:rows])
        taken_out = index + start * self.classes, x.reshape(-1)[index], log1p.reshape(-1)[index], q.reshape(-1)[index]
        if self._buffers:
            self._values(q, {name: buffer[:rows] for name, buffer in self._buffers.items()})
            block = self._stack[:, :rows]
            block.reshape(len(block), -1)[:, index] = 0
            if dropped is not None:
                block[:, dropped] = 0
            if self._row_sums is not None:
                np.add.reduce(self._buffers["softplus"][:rows], axis=1, dtype=np.float64, out=self._row_sums[start:stop])
            self._sums += self._column_sums(rows)  # overwrites the buffers
        return taken_out

    def _column_sums(self, rows: int) -> np.ndarray:
        """``(values, C)`` float64 column sums of the first ``rows`` rows of each value buffer (their
        other rows are zeroed here). Rows are first added in pairs four times over in float32 —
        sums of 16 non-negative values, within 4 roundings — and those are summed in float64."""
        stack = self._stack
        half = (rows + PAIRED_ROWS - 1) // PAIRED_ROWS * PAIRED_ROWS
        stack[:, rows:half] = 0
        for _ in range(PAIRING_LEVELS):
            half //= 2
            np.add(stack[:, :half], stack[:, half : 2 * half], out=stack[:, :half])
        return np.add.reduce(stack[:, :half], axis=1, dtype=np.float64, out=self._columns)

    def _values(self, q: np.ndarray, buffers: dict[str, np.ndarray]) -> None:
        """Fill the focal and CenterNet buffers and their gradients' with the values of the module
        docstring, in place; the softplus buffer is ``l`` itself, the ``q`` buffer ``q``."""
        softplus = buffers["softplus"]
        scratch = self._scratch[: len(q)] if self._scratch is not None else None
        if "centernet" in buffers:
            c, gradient = buffers["centernet"], buffers.get("centernet_gradient")
            clamped = gradient if gradient is not None else c
            np.maximum(q, CENTERNET_PROB_CLAMP, out=clamped)
            np.negative(clamped, out=scratch)
            np.log1p(scratch, out=scratch)
            np.multiply(clamped, clamped, out=c)
            np.multiply(c, scratch, out=c)
            np.negative(c, out=c)
            if gradient is not None:
                np.subtract(1, gradient, out=scratch)
                np.multiply(scratch, c, out=scratch)
                np.multiply(scratch, 2, out=scratch)
                np.power(gradient, 3, out=gradient)
                np.add(gradient, scratch, out=gradient)
                np.copyto(gradient, 0, where=q < CENTERNET_PROB_CLAMP)
        if "focal" in buffers:
            f = buffers["focal"]
            if self.gamma == 2:
                np.multiply(q, q, out=f)
            else:
                np.power(q, np.float32(self.gamma), out=f)
            if "focal_qq" in buffers:
                np.multiply(f, q, out=buffers["focal_qq"])
            np.multiply(f, softplus, out=f)
            if "focal_q" in buffers:
                np.multiply(f, q, out=buffers["focal_q"])

    def row_softplus(self, rows: int) -> np.ndarray:
        """``(rows,)`` float64: each row's softplus summed over its easy negatives, last chunk."""
        return self._row_sums[:rows]

    def class_sums(self) -> dict[str, np.ndarray]:
        """``(C,)`` float64 sums of each kept value over the easy negatives added so far."""
        sums = dict(zip(self._buffers, self._sums))
        if "focal_q" in sums:
            sums["focal_gradient"] = self.gamma * (sums["focal"] - sums.pop("focal_q")) + sums.pop("focal_qq")
        return sums
