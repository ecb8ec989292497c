"""The dense pass: every element of a chunk taken as a valid negative of the easiest difficulty.

Nearly every element of a detection dump is a background anchor's easy negative: target 0 and
``p = sigmoid(x)`` below the first edge of the difficulty intervals (0.1 by default), so x < 0.
Their losses are functions of the logit alone, and ``compare`` needs only their sums per class.
For every element of an ``(n, C)`` chunk the pass computes, in float32, from one ``exp`` and one
``log1p`` (:func:`~lossaudit.compare.engine.elements.sigmoid_parts`):

    l = log1p(e), q = e / (1 + e)     e = exp(-|x|); where x < 0: q = p and l = softplus(x)
                                      = BCE(x, 0) = -log(1 - p)
    f_k = q^k l                       for each power k asked for: a negative's focal loss with
                                      gamma k before its weight 1 - alpha, its QFL with beta k,
                                      its VFL with gamma k before alpha, its ASL (no clip) with
                                      gamma_neg k
    c = -log1p(-q_c) q_c^2            CenterNet's negative term, q_c = max(q, 1e-4)

and the gradient magnitudes |∂/∂x| of these losses (``compare``'s gradient shares): BCE's is ``q``
itself; that of ``f_k``, ``q^k (q + k (1 - q) l) = k (f_k - q f_k) + q^(k + 1)``, is summed as
``k (Σ f_k - Σ q f_k) + Σ q^(k + 1)`` (q < 0.1: no cancellation); CenterNet's is
``q_c^3 + 2 (1 - q_c) c`` (0 where q < 1e-4: the clamp stops the gradient).

It takes out the elements these values do not describe (:class:`Screen`): logits at or above a
threshold ``x0 < 0`` (every x below it has p below the easy edge: the first difficulty edge, or a
lower one such as ASL's clip), non-finite logits, non-zero
targets and masked elements; dropped rows are left out whole. The ``exp`` is taken of the logits
as they are (``exp(x)`` is ``e`` wherever x < 0, so at every easy negative), and ``e`` is set to 0
at the elements taken out, which makes every value 0 (CenterNet's clamped term is zeroed after). The
caller tallies the valid taken-out elements one by one (:mod:`lossaudit.compare.engine.elements`), from
their logits (:class:`Taken`). Non-finite logits are found here, so a chunk decoded without its own
check (``check_finite=False``) learns them from :attr:`Taken.x`.

Sums: each value is added up in float32 over groups of :data:`GROUP_ROWS` rows by a matrix-vector
product with ones (BLAS), the two gradient parts ``q f_k`` and ``q^(k + 1)`` of each power among
them (``q^(k + 1)`` in the buffer that held ``q^k``; ``q f_k`` is ``f_(k + 1)`` where ``k + 1`` is a
power too, as in ``sweep``'s default gammas, and is not kept twice), and those partial sums over groups of
:data:`GROUP_ROWS` partials again at the end of the chunk; the result is added in float64. Values
are non-negative, so each class's float32 sums of 256 rows are within ``30 × 2^-24 ≈ 2e-6``
relative of exact.

A chunk is worked through in blocks of rows whose buffers stay in the cache. The buffers are
allocated once and every operation writes into them (``out=``): the pass allocates nothing the
size of a chunk or a block.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from lossaudit.compare.engine.elements import CENTERNET_PROB_CLAMP, parts_from_exp, power
from lossaudit.io.dataset import Chunk

DENSE_VALUES = ("softplus", "q", "heatmap_loss", "heatmap_gradient")
"""The per-class sums the pass can keep beside its powers: ``q`` is BCE's gradient magnitude,
``centernet_gradient`` CenterNet's."""

POWER_ALIASES = {("power", 0.0): "softplus", ("power_qq", 0.0): "q", ("power_gradient", 0.0): "q"}
"""The sums of a power 0 that are those of :data:`DENSE_VALUES`: ``f_0 = q^0 l = l``, ``q^(0 + 1) = q``
and ``f_0``'s gradient magnitude ``q`` (``sweep``'s default gammas start at 0): kept once."""

GROUP_ROWS = 16
"""Rows summed in float32 at once, twice over (see the module docstring)."""


def easy_threshold(first_edge: np.float32) -> np.float32:
    """A float32 logit ``x0 < 0`` below which ``sigmoid(x) < first_edge``: ``logit(first_edge)``
    less 16 float32 steps, a margin for the rounding of either sigmoid (numpy's here, torch's in
    the reference). Logits in the margin are tallied one by one, which is exact either way."""
    edge = float(first_edge)
    x0 = np.float32(np.log(edge / (1 - edge)))
    return np.float32(x0 - 16 * abs(np.spacing(x0)))


class Screen:
    """Which float32 logits the dense pass leaves out: ``x >= x0``, NaN and ±inf (and, given
    ``lowest``, ``x < lowest``), in two passes on the bits (as int32, a negative float orders
    backwards: ``x < x0`` is ``bits(x) > bits(x0)``). A logit is easy when ``bits(x0) < bits(x) <=
    bits(lowest)`` (``lowest`` by default ``-FLT_MAX``): one unsigned comparison of ``bits(x) -
    bits(x0) - 1`` (wrapping) against the width of that range."""

    def __init__(self, x0: np.float32, lowest: float | None = None):
        if not x0 < 0:
            raise ValueError(f"easy threshold {x0} must be negative")
        if lowest is not None and not lowest < x0:
            raise ValueError(f"lowest easy logit {lowest} must be below the easy threshold {x0}")
        low = int(np.float32(x0).view(np.int32))
        high = int(np.float32(-np.finfo(np.float32).max if lowest is None else lowest).view(np.int32))
        self.offset = np.int32(low + 1)
        self.width = np.uint32(high - low)

    def taken(self, x: np.ndarray, scratch: np.ndarray, out: np.ndarray) -> np.ndarray:
        """``out[...] = `` the bool mask of the logits ``x`` left out; ``scratch`` is an int32 buffer of ``x``'s shape."""
        np.subtract(x.view(np.int32), self.offset, out=scratch)
        return np.greater_equal(scratch.view(np.uint32), self.width, out=out)


@dataclass
class Taken:
    """The elements of a chunk the dense pass took out (dropped rows excepted): ``(k,)`` arrays.

    Attributes:
        index: flat indices into the ``(n, C)`` chunk, sorted.
        x: their float32 logits (any: non-finite ones are taken out).
        column: their classes, ``index % C``.
    """

    index: np.ndarray
    x: np.ndarray
    column: np.ndarray

    def select(self, keep: np.ndarray) -> Taken:
        """The elements where the ``(k,)`` bool ``keep`` is true."""
        return Taken(self.index[keep], self.x[keep], self.column[keep])


LOWEST_COUNTED = -64
"""The lowest logit :class:`LogitCounts` counts: a dense pass that counts takes out the easy
negatives below it (tallied one by one; p < 2e-28 there, so a real dump has few or none)."""

COUNT_ELEMENTS = 1 << 18
"""Elements whose atoms :class:`LogitCounts` keeps before counting them (one ``bincount`` each time)."""


class LogitCounts:
    """The easy negatives of a dense pass counted by logit (``sweep``'s loss histograms): atom ``j``
    of width ``1 / scale`` holds the logits ``x`` with ``floor(x scale) = j - 1 + LOWEST_COUNTED
    scale``, ``x`` in [:data:`LOWEST_COUNTED`, 0) (atom 0 is unused). Per atom: :attr:`counts`
    and :attr:`offsets`, the sum of the logits' places in their atom, ``x scale - floor(x scale)``
    in [0, 1) (exact in float32: ``scale`` is a power of two). A loss that is a smooth function of
    the logit is summed over an atom from these two to second order (:mod:`lossaudit.sweep.histogram`).

    The blocks' ``floor(x scale)`` (negative: ``x < 0``; 0 for the elements taken out and the
    dropped rows) are kept in a buffer and counted every :data:`COUNT_ELEMENTS` elements and at the
    end of each chunk (:meth:`flush`), over the range they span, by one float64 ``bincount`` of
    ``place + B``, ``B`` a power of two above twice the buffer: an atom's sum is ``n B`` plus its
    places (below ``n <= B / 2``), so ``n`` is the integer part of the sum over ``B`` and the places
    the rest, each added to within :attr:`place_error` of exact (float64 rounding).
    """

    def __init__(self, scale: int, block_elements: int):
        if scale & (scale - 1) or scale < 1:
            raise ValueError(f"scale {scale}: expected a power of two")
        self.scale = scale
        self.size = 1 + -LOWEST_COUNTED * scale
        self.counts = np.zeros(self.size)
        self.offsets = np.zeros(self.size)
        capacity = max(COUNT_ELEMENTS, block_elements)
        self._big = float(2 ** int(np.ceil(np.log2(2 * capacity))))
        self.place_error = 2.0 ** (np.log2(capacity * self._big) - 53)
        """The most an element's place may be off in :attr:`offsets` (half a float64 step of the largest sum)."""
        self._floors = np.empty(capacity, dtype=np.int64)
        self._places = np.empty(capacity, dtype=np.float32)
        self._scaled = np.empty(block_elements, dtype=np.float32)
        self._filled = 0

    def add(self, x: np.ndarray, taken: np.ndarray, dropped: np.ndarray) -> None:
        """Keep the atoms of a block's ``(rows, C)`` float32 logits ``x`` but at the flat indices
        ``taken`` and in the rows ``dropped`` (any values there: non-finite ones too)."""
        n = x.size
        if self._filled + n > len(self._floors):
            self.flush()
        end = self._filled + n
        scaled, floors, places = self._scaled[:n], self._floors[self._filled : end], self._places[self._filled : end]
        np.multiply(x.reshape(-1), np.float32(self.scale), out=scaled)
        np.floor(scaled, out=places)
        np.copyto(floors, places, casting="unsafe")
        np.subtract(scaled, places, out=places)
        floors[taken] = 0
        if len(dropped):
            floors.reshape(x.shape)[dropped] = 0
        self._filled = end

    def flush(self) -> None:
        """Count the atoms kept so far."""
        floors = self._floors[: self._filled]
        self._filled = 0
        if not len(floors):
            return
        low = int(floors.min())
        if low == 0:  # nothing but elements left out
            return
        floors -= low  # 0 .. -low; -low: left out
        first = low - LOWEST_COUNTED * self.scale + 1
        sums = np.bincount(floors, weights=np.add(self._places[: len(floors)], self._big, dtype=np.float64), minlength=1 - low)[:-1]
        counts = np.floor(sums / self._big)
        self.counts[first:] += counts
        self.offsets[first:] += sums - counts * self._big

    def merge(self, other: LogitCounts) -> None:
        self.counts += other.counts
        self.offsets += other.offsets

    def __getstate__(self) -> dict:
        """Pickled with its counts only (the buffers stay behind): call :meth:`flush` first."""
        return {name: value for name, value in vars(self).items() if name in ("scale", "size", "counts", "offsets", "place_error")}


class DensePass:
    """Per-class sums of the values of the easy negatives of the chunks given to :meth:`add`.

    Args:
        max_rows: the most rows a chunk has.
        classes: C.
        easy_edge: the probability below which an element is easy: the first edge of the
            difficulty intervals, or lower.
        values: the sums to keep, among :data:`DENSE_VALUES`; ``softplus`` is kept whenever another
            sum is (the powers are computed from it), ``centernet`` whenever ``centernet_gradient`` is.
        block_rows: rows per block.
        powers: the exponents k whose ``Σ q^k l`` and its gradient magnitude are kept
            (:meth:`power_sums`).
        row_sums: also keep each row's softplus sum (hard-negative mining's row losses).
        clipped: ``(k, m)`` pairs whose sums of ``a = p_m^k (-log(1 - p_m))``, ``p_m = max(p - m,
            0)`` (ASL's negative term with ``gamma_neg`` k and clip m), and of its gradient
            magnitude ``p (1 - p) (k a / p_m + p_m^k / (1 - p_m))`` (0 where ``p_m = 0``) are kept
            (:meth:`clipped_sums`).
        by_logit: count the easy negatives by logit into this (:class:`LogitCounts`); the pass then
            takes out the logits below :data:`LOWEST_COUNTED`.
        weighted: the chunks carry sampling weights (``chunk.weights``): every sum is of ``w v``,
            and the second moments ``Σ w (w - 1) v²`` of the losses and gradient magnitudes are
            kept too (:meth:`second_sums`, :meth:`second_power_sums`, :meth:`second_clipped_sums`).
            Not with ``by_logit`` (its atoms are counted unweighted).

    Attributes:
        x: a ``(max_rows, C)`` float32 buffer to decode chunks into (``out=``) when their logits
            must be converted.
        count: ``(C,)`` easy negatives counted so far, per class (weighted: the sums of their weights).
    """

    def __init__(
        self,
        max_rows: int,
        classes: int,
        easy_edge: np.float32,
        values: tuple[str, ...],
        block_rows: int,
        powers: tuple[float, ...] = (),
        row_sums: bool = False,
        by_logit: LogitCounts | None = None,
        clipped: tuple[tuple[float, float], ...] = (),
        weighted: bool = False,
    ):
        if weighted and by_logit is not None:
            raise ValueError("a weighted dense pass does not count by logit")
        powers = tuple(dict.fromkeys(float(k) for k in powers))
        needs = {"softplus": bool(values) or bool(powers) or row_sums, "q": 0.0 in powers, "heatmap_loss": "heatmap_gradient" in values}
        values = tuple(name for name in DENSE_VALUES if name in values or needs.get(name, False))
        block_rows = max(1, min(block_rows, max_rows))
        if block_rows > GROUP_ROWS:
            block_rows -= block_rows % GROUP_ROWS  # whole groups: no padding but the last block's
        padded_rows = -(-block_rows // GROUP_ROWS) * GROUP_ROWS
        clipped = tuple(dict.fromkeys((float(k), float(m)) for k, m in clipped))
        self.classes, self.powers, self.clipped, self.block_rows = classes, powers, clipped, block_rows
        self.screen = Screen(easy_threshold(easy_edge), None if by_logit is None else LOWEST_COUNTED)
        self.by_logit = by_logit
        self.x = np.empty((max_rows, classes), dtype=np.float32)
        kept: list[Any] = [
            *values,
            *(
                (part, k)
                for k in powers
                for part in ("power", "power_q", "power_qq")
                if (part, k) not in POWER_ALIASES and not (part == "power_q" and k + 1 in powers)
            ),
            *((part, k, m) for k, m in clipped for part in ("clipped", "clipped_gradient")),
        ]  # q f_k is f_(k + 1) where k + 1 is a power too, f_0 is l and q^(0 + 1) is q: summed already
        self.weighted = weighted
        self._weighed = list(kept)  # multiplied by the weights before they are summed
        self._second_names: list = [
            *values,
            *((part, k) for k in powers for part in ("power", "power_gradient") if (part, k) not in POWER_ALIASES),
            *((part, k, m) for k, m in clipped for part in ("clipped", "clipped_gradient")),
        ]
        if weighted:
            kept += ["weight", *(("second", name) for name in self._second_names)]
        self._stack = np.zeros((len(kept), padded_rows, classes), dtype=np.float32)  # the value buffers, summed in one call
        self._buffers = dict(zip(kept, self._stack))
        self._log1p = self._buffers.get("softplus", np.zeros((padded_rows, classes), dtype=np.float32))
        self._q = self._buffers.get("q", np.empty((padded_rows, classes), dtype=np.float32))
        self._scratch = np.empty((padded_rows, classes), dtype=np.float32) if "heatmap_loss" in values else None
        self._clip_filled: dict[tuple[float, float], np.ndarray] = {}  # the buffer places each clipped power filled last
        self._u = np.empty((padded_rows, classes), dtype=np.float32) if weighted else None
        self._taken = np.empty((block_rows, classes), dtype=bool)
        self._ones = np.ones(GROUP_ROWS, dtype=np.float32)
        blocks = -(-max_rows // block_rows)
        groups = -(-blocks * padded_rows // GROUP_ROWS // GROUP_ROWS) * GROUP_ROWS
        self._partials = np.zeros((len(kept), groups, classes), dtype=np.float32)  # a chunk's sums of GROUP_ROWS rows
        self._names = kept
        self._sums = np.zeros((len(kept), classes), dtype=np.float64)
        self._columns = np.empty((len(kept), classes), dtype=np.float64)
        self._row_sums = np.empty(max_rows, dtype=np.float64) if row_sums else None
        self._block_groups = padded_rows // GROUP_ROWS
        self._groups = 0
        self._views: dict[int, _BlockViews] = {}
        self.count: np.ndarray = np.zeros(classes, dtype=np.float64 if weighted else np.int64)

    def add(self, chunk: Chunk, rows: tuple[int, int] | None = None) -> Taken:
        """Add the easy negatives of ``chunk`` (its logits are only read), or of its rows ``rows =
        (first, stop)`` only (the others are not looked at), to the sums and return the elements
        taken out. After the call, :meth:`row_softplus` holds the chunk's row sums of softplus
        over its easy negatives (when kept; 0 outside ``rows``)."""
        x, classes = chunk.logits, self.classes
        first, n = (0, len(x)) if rows is None else rows
        starts = [*range(first, n, self.block_rows), n]
        targets = chunk.target_rows * classes + chunk.target_cols  # flat, sorted
        target_bounds = np.searchsorted(targets, np.multiply(starts, classes))
        dropped = np.flatnonzero(chunk.dropped_rows[:n]) if first == 0 else first + np.flatnonzero(chunk.dropped_rows[first:n])
        dropped_bounds = np.searchsorted(dropped, starts)
        if self._row_sums is not None:
            self._row_sums[:first] = 0
            self._row_sums[n : len(x)] = 0
        ignored = chunk.element_ignored
        weights = chunk.weights if self.weighted else None
        if self.weighted and weights is None:
            raise ValueError("a weighted dense pass needs the chunks' weights")
        with np.errstate(invalid="ignore", over="ignore"):  # NaN and inf logits are taken out
            blocks = [
                self._add_block(
                    x[start:stop],
                    start,
                    targets[target_bounds[i] : target_bounds[i + 1]],
                    dropped[dropped_bounds[i] : dropped_bounds[i + 1]],
                    None if ignored is None else ignored[start:stop],
                    None if weights is None else weights[start:stop],
                    i,
                )
                for i, (start, stop) in enumerate(zip(starts, starts[1:]))
            ]
        if not blocks:
            return Taken(np.zeros(0, dtype=np.intp), np.zeros(0, dtype=np.float32), np.zeros(0, dtype=np.intp))
        index, taken_x = [np.concatenate(part) for part in zip(*blocks)] if len(blocks) > 1 else blocks[0]
        taken = Taken(index, taken_x, index - index // classes * classes)  # (floor division by a constant is fast, % is not)
        if self._buffers:
            sums = self._chunk_sums()
            self._sums += sums
        if self.by_logit is not None:
            self.by_logit.flush()
        if self.weighted:
            self.count += sums[self._names.index("weight")]
        else:
            self.count += n - first - len(dropped) - np.bincount(taken.column, minlength=classes)
        return taken

    def _block_views(self, rows: int) -> _BlockViews:
        views = self._views.get(rows)
        if views is None:
            if len(self._views) > 8:  # the last blocks of chunks of other sizes
                self._views.clear()
            views = self._views[rows] = _BlockViews(self, rows)
        return views

    def _add_block(
        self, x: np.ndarray, start: int, targets: np.ndarray, dropped: np.ndarray, ignored: np.ndarray | None, weights: np.ndarray | None, block: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """The logits ``x``, rows ``start ..`` of the chunk (its ``block``-th block in this call),
        holding its targets at the flat indices ``targets``, its dropped rows ``dropped``, its
        masked elements ``ignored`` (or None) and, weighted, its elements' ``weights``: put their
        easy negatives' group sums into the chunk's partials; return the fields of :class:`Taken`
        for their taken-out elements."""
        views = self._block_views(len(x))
        offset = start * self.classes
        taken = self.screen.taken(x, views.scratch, out=views.taken)
        views.taken_flat[targets - offset] = True
        if ignored is not None:
            taken |= ignored
        dropped = dropped - start
        if len(dropped):
            taken[dropped] = False
        index = np.flatnonzero(taken)
        taken_out = index + offset, x.reshape(-1)[index]
        if self.by_logit is not None:
            self.by_logit.add(x, index, dropped)
        if not self._buffers:
            return taken_out
        log1p = views.log1p
        np.exp(x, out=views.log1p_rows)  # exp(-|x|) wherever x < 0, so at every easy negative
        log1p.reshape(-1)[index] = 0  # e = 0: every value 0
        log1p[dropped] = 0
        if views.padding is not None:
            views.padding[...] = 0
        parts_from_exp(log1p, views.q)
        self._values(views, index, dropped)
        if self._row_sums is not None:
            np.add.reduce(views.log1p_rows, axis=1, dtype=np.float64, out=self._row_sums[start : start + len(x)])
        if weights is not None:
            self._weigh(views, weights, index, dropped)
        first = block * self._block_groups
        self._groups = first + views.groups  # the chunk's partials so far (blocks come in order)
        np.matmul(self._ones, views.grouped, out=self._partials[:, first : self._groups])
        return taken_out

    def _chunk_sums(self) -> np.ndarray:
        """``(values, C)`` float64 sums of the chunk's partials: groups of :data:`GROUP_ROWS`
        partials summed in float32 (the last group padded with zeros), then in float64."""
        grouped = -(-self._groups // GROUP_ROWS) * GROUP_ROWS
        partials = self._partials[:, :grouped]
        partials[:, self._groups :] = 0
        sums = np.matmul(self._ones, partials.reshape(len(partials), -1, GROUP_ROWS, self.classes))
        return np.add.reduce(sums, axis=1, dtype=np.float64, out=self._columns)

    def _values(self, views: _BlockViews, index: np.ndarray, dropped: np.ndarray) -> None:
        """Fill the block's power (``f_k`` and ``q^k``) and CenterNet buffers with the values of
        the module docstring, in place, from ``l`` (the softplus buffer) and ``q``; CenterNet's terms
        at the taken-out elements ``index``, the ``dropped`` rows and the padding are zeroed. The
        powers' gradient parts are summed from them as products (:class:`_BlockViews`)."""
        buffers, softplus, q = views.buffers, views.log1p, views.q
        if "heatmap_loss" in buffers:
            scratch = views.scratch_values
            assert scratch is not None  # allocated with a heatmap buffer
            c, gradient = buffers["heatmap_loss"], buffers.get("heatmap_gradient")
            clamped = gradient if gradient is not None else c
            np.maximum(q, CENTERNET_PROB_CLAMP, out=clamped)
            np.negative(clamped, out=scratch)
            np.log1p(scratch, out=scratch)
            np.multiply(clamped, clamped, out=c)
            np.multiply(c, scratch, out=c)
            np.negative(c, out=c)
            c.reshape(-1)[index] = 0
            c[dropped] = 0
            c[views.rows :] = 0  # padding
            if gradient is not None:
                np.subtract(1, gradient, out=scratch)
                np.multiply(scratch, c, out=scratch)
                np.multiply(scratch, 2, out=scratch)
                np.power(gradient, 3, out=gradient)
                np.add(gradient, scratch, out=gradient)
                np.copyto(gradient, 0, where=q < CENTERNET_PROB_CLAMP)
        for k in self.powers:
            loss_q = buffers.get(("power_q", k))
            if not k:  # f_0 is l and q^1 is q, summed already
                if loss_q is not None:
                    np.multiply(softplus, q, out=loss_q)
                continue
            modulating, loss = buffers["power_qq", k], buffers["power", k]
            if k == 2:  # focal's default, without power's checks (some 2,500 blocks in 80M elements)
                np.multiply(q, q, out=modulating)
            else:
                power(q, k, out=modulating)
            np.multiply(modulating, softplus, out=loss)  # f_k = q^k l
            np.multiply(modulating, q, out=modulating)  # q^(k + 1)
            if loss_q is not None:
                np.multiply(loss, q, out=loss_q)  # q f_k
        for k, m in self.clipped:
            self._clipped_values(views, k, m)

    def _weigh(self, views: _BlockViews, weights: np.ndarray, index: np.ndarray, dropped: np.ndarray) -> None:
        """Weighted mode: from the block's ``(rows, C)`` element ``weights`` (0 put at the elements
        taken out, the dropped rows and the padding), fill the second-moment buffers with ``w (w -
        1) v²`` of each loss and gradient magnitude ``v`` (a power's gradient magnitude formed from
        its parts), then multiply the value buffers by ``w``."""
        buffers, u = views.buffers, views.u
        assert u is not None  # allocated when weighted
        weight = buffers["weight"]
        np.copyto(weight[: views.rows], weights, casting="same_kind")
        weight.reshape(-1)[index] = 0
        weight[dropped] = 0
        weight[views.rows :] = 0
        np.subtract(weight, 1, out=u)
        np.multiply(u, weight, out=u)  # w (w - 1)
        for name in self._second_names:
            moment = buffers["second", name]
            if name[0] == "power_gradient":  # k (f_k - q f_k) + q^(k + 1)
                k = name[1]
                np.subtract(buffers["power", k], buffers[self._loss_q(k)], out=moment)
                np.multiply(moment, np.float32(k), out=moment)
                np.add(moment, buffers["power_qq", k], out=moment)
                np.multiply(moment, moment, out=moment)
            else:
                np.multiply(buffers[name], buffers[name], out=moment)
            np.multiply(moment, u, out=moment)
        for name in self._weighed:
            np.multiply(buffers[name], weight, out=buffers[name])

    def _clipped_values(self, views: _BlockViews, k: float, m: float) -> None:
        """Fill the block's buffers of the clipped power ``(k, m)`` (see ``clipped`` in the class
        docstring) from ``q`` (0 at the elements taken out, the dropped rows and the padding). Every
        value is 0 where ``q <= m`` (``p_m = 0``), most easy negatives: the values are computed for
        the elements above the clip only and put into buffers kept at 0 elsewhere (the places the
        previous block filled are zeroed first), with the float32 operations of the whole-buffer
        form, element for element."""
        names = ("clipped", k, m), ("clipped_gradient", k, m)
        filled = self._clip_filled.get((k, m))
        if filled is not None:  # (through the whole buffers: a block of more rows may have filled them)
            for name in names:
                self._buffers[name].reshape(-1)[filled] = 0
        loss_buffer, gradient_buffer = (views.buffers[name].reshape(-1) for name in names)
        q_flat = views.q.reshape(-1)
        above = np.flatnonzero(q_flat > np.float32(m))  # p_m > 0 exactly there (float32 q - m is 0 only where q = m)
        self._clip_filled[k, m] = above
        q = q_flat[above]
        shifted = np.subtract(q, np.float32(m))  # p_m
        log_term = np.negative(np.log1p(np.negative(shifted)))  # -log(1 - p_m)
        loss = power(shifted, k)  # p_m^k
        part = np.divide(loss, np.subtract(np.float32(1), shifted))  # p_m^k / (1 - p_m)
        np.multiply(loss, log_term, out=loss)  # a
        if k:
            gradient = np.divide(loss, shifted)  # a / p_m
            np.multiply(gradient, np.float32(k), out=gradient)
            np.add(gradient, part, out=gradient)
        else:
            gradient = part  # p_m^0 = 1
        np.multiply(gradient, np.multiply(np.subtract(np.float32(1), q), q), out=gradient)  # times dp/dx
        loss_buffer[above] = loss
        gradient_buffer[above] = gradient

    def __getstate__(self) -> dict:
        """Pickled (a forked worker's result) for its counts and sums: the buffers stay behind, and
        the copy can be merged but not given chunks."""
        return {name: value for name, value in vars(self).items() if name in ("classes", "powers", "weighted", "count", "_sums", "_names")}

    def row_softplus(self, rows: int) -> np.ndarray:
        """``(rows,)`` float64: each row's softplus summed over its easy negatives, last chunk."""
        assert self._row_sums is not None  # made with row_sums (OHEM)
        return self._row_sums[:rows]

    def class_sums(self) -> dict[str, np.ndarray]:
        """``(C,)`` float64 sums of each kept value of :data:`DENSE_VALUES` over the easy negatives
        added so far."""
        return {name: sums for name, sums in zip(self._names, self._sums) if isinstance(name, str)}

    def _loss_q(self, k: float) -> tuple[str, float]:
        """The name of ``q f_k``'s buffer and sums: ``f_(k + 1)``'s where ``k + 1`` is a power too."""
        return ("power_q", k) if ("power_q", k) in self._names else ("power", k + 1)

    def _named_sums(self) -> dict:
        """The sums added so far by name, a power 0's (:data:`POWER_ALIASES`) and their second moments included."""
        sums = dict(zip(self._names, self._sums))
        for alias, name in POWER_ALIASES.items():
            for key, kept in ((alias, name), (("second", alias), ("second", name))):
                if kept in sums:
                    sums[key] = sums[kept]
        return sums

    def clipped_sums(self, k: float, m: float) -> tuple[np.ndarray, np.ndarray]:
        """``(C,)`` float64 sums over the easy negatives added so far of the clipped power ``(k,
        m)`` and of its gradient magnitude (see ``clipped`` in the class docstring)."""
        sums = self._named_sums()
        return sums["clipped", float(k), float(m)], sums["clipped_gradient", float(k), float(m)]

    def power_sums(self, k: float) -> tuple[np.ndarray, np.ndarray]:
        """``(C,)`` float64 sums over the easy negatives added so far of ``q^k l`` and of its
        gradient magnitude ``k (Σ f_k - Σ q f_k) + Σ q^(k + 1)``, for a power ``k`` of the pass."""
        sums, k = self._named_sums(), float(k)
        loss = sums["power", k]
        return loss, k * (loss - sums[self._loss_q(k)]) + sums["power_qq", k]

    def second_sums(self) -> dict[str, np.ndarray]:
        """Weighted: ``(C,)`` float64 second moments ``Σ w (w - 1) v²`` of each kept value of
        :data:`DENSE_VALUES` over the easy negatives added so far."""
        return {name[1]: sums for name, sums in zip(self._names, self._sums) if name[0] == "second" and isinstance(name[1], str)}

    def second_power_sums(self, k: float) -> tuple[np.ndarray, np.ndarray]:
        """Weighted: the second moments of :meth:`power_sums`' two values."""
        sums = self._named_sums()
        return sums["second", ("power", float(k))], sums["second", ("power_gradient", float(k))]

    def second_clipped_sums(self, k: float, m: float) -> tuple[np.ndarray, np.ndarray]:
        """Weighted: the second moments of :meth:`clipped_sums`' two values."""
        sums = self._named_sums()
        return sums["second", ("clipped", float(k), float(m))], sums["second", ("clipped_gradient", float(k), float(m))]


class _BlockViews:
    """The buffers of a :class:`DensePass` cut to a block of ``rows`` rows, made once per block size.
    The value buffers are cut to whole groups of :data:`GROUP_ROWS` rows; the rows past ``rows``
    (padding) get ``-inf`` for ``-|x|``, so their values are 0."""

    def __init__(self, dense: DensePass, rows: int):
        padded = -(-rows // GROUP_ROWS) * GROUP_ROWS
        self.rows, self.groups = rows, padded // GROUP_ROWS
        self.taken = dense._taken[:rows]
        self.taken_flat = self.taken.reshape(-1)
        self.scratch = dense._q[:rows].view(np.int32)  # the screen's, before q is computed
        self.log1p_rows = dense._log1p[:rows]
        self.log1p = dense._log1p[:padded]
        self.padding = dense._log1p[rows:padded] if padded > rows else None
        self.q = dense._q[:padded]
        self.u = None if dense._u is None else dense._u[:padded]
        self.scratch_values = None if dense._scratch is None else dense._scratch[:padded]
        self.buffers = {name: buffer[:padded] for name, buffer in dense._buffers.items()}
        self.grouped = dense._stack[:, :padded].reshape(len(dense._stack), self.groups, GROUP_ROWS, dense.classes)
