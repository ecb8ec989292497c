"""What the accumulators of one worker's pass share: a dense pass (:class:`SharedPass`: ``sweep``'s
tallies, one per gamma, need one between them) and the work on each chunk that does not depend on
the loss settings, computed once, whichever accumulator asks first (the elements the dense pass
takes out, the softmax terms of the rows with a target: :func:`softmax_targets`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import numpy as np

from lossaudit.compare.engine import elements
from lossaudit.compare.engine.dense import DensePass, LogitCounts
from lossaudit.io.dataset import Chunk


@dataclass(frozen=True)
class DenseNeeds:
    """What a :class:`~lossaudit.compare.engine.stream.StreamTally` needs of its dense pass: the sums of :data:`~lossaudit.compare.engine.dense.DENSE_VALUES`
    ``values``, the ``powers``, the probability ``easy_edge`` below which an element may be left to
    it, and the row sums of hard-negative mining."""

    values: tuple[str, ...]
    powers: tuple[float, ...]
    easy_edge: np.float32
    row_sums: bool
    clipped: tuple[tuple[float, float], ...] = ()


def dense_pass(
    needs: list[DenseNeeds], max_rows: int, num_classes: int, block_rows: int, by_logit: LogitCounts | None = None, weighted: bool = False
) -> DensePass:
    """A dense pass with every value, power and clipped power of ``needs``, their row sums if any
    asks for them, and the lowest of their easy edges (see :class:`~lossaudit.compare.engine.dense.DensePass`)."""
    return DensePass(
        max_rows,
        num_classes,
        min((need.easy_edge for need in needs), default=np.float32(0.1)),
        tuple(dict.fromkeys(value for need in needs for value in need.values)),
        block_rows,
        tuple(dict.fromkeys(power for need in needs for power in need.powers)),
        row_sums=any(need.row_sums for need in needs),
        by_logit=by_logit,
        clipped=tuple(dict.fromkeys(pair for need in needs for pair in need.clipped)),
        weighted=weighted,
    )


class SharedPass:
    """One dense pass, and the work on a chunk that does not depend on the loss settings, shared by
    the :class:`~lossaudit.compare.engine.stream.StreamTally` objects of one worker (``sweep``'s settings: one per gamma): each
    chunk's dense pass runs once, and its elements taken out (with their sigmoid parts) and its
    softmax terms are computed once (:meth:`once`), whichever tally asks first.

    The pass is made when it is first asked for (:attr:`dense`), with every value and power the
    tallies made with this object need, and the lowest of their easy edges; so is the weighted
    pass of a weighted dump (:attr:`weighted_dense`).

    Args:
        max_rows: the most rows a chunk has.
        num_classes: C.
        block_rows: rows per block of the dense pass.
        by_logit: the easy negatives' counts by logit to keep (:class:`~lossaudit.compare.engine.dense.LogitCounts`), or None.
    """

    def __init__(self, max_rows: int, num_classes: int, block_rows: int, by_logit: LogitCounts | None = None):
        self.max_rows, self.num_classes, self.block_rows, self.by_logit = max_rows, num_classes, block_rows, by_logit
        self._needs: list[DenseNeeds] = []
        self._dense: DensePass | None = None
        self.made_weighted: DensePass | None = None
        """The weighted pass, once :attr:`weighted_dense` has made it."""
        self._chunk: Chunk | None = None
        self._values: dict[str, Any] = {}

    def require(self, needs: DenseNeeds) -> None:
        """Add a tally's needs (before the pass is made)."""
        if self._dense is not None:
            raise ValueError("a tally joined a shared pass after it was made")
        self._needs.append(needs)

    @property
    def dense(self) -> DensePass:
        if self._dense is None:
            self._dense = dense_pass(self._needs, self.max_rows, self.num_classes, self.block_rows, self.by_logit)
        return self._dense

    @property
    def weighted_dense(self) -> DensePass | None:
        """The weighted pass for a weighted dump's rows whose elements do not all weigh 1, or None
        where the easy negatives are counted by logit (``sweep``'s atoms are counted unweighted:
        those rows' elements are then tallied one by one)."""
        if self.by_logit is not None:
            return None
        if self.made_weighted is None:
            self.made_weighted = dense_pass(self._needs, self.max_rows, self.num_classes, self.block_rows, weighted=True)
        return self.made_weighted

    def once(self, chunk: Chunk, name: str, compute: Callable[[], Any]) -> Any:
        """``compute()`` the first time ``name`` is asked of ``chunk`` (the chunk given last: what
        was kept of the chunk before is dropped), its value again after."""
        if chunk is not self._chunk:
            self._chunk, self._values = chunk, {}
        if name not in self._values:
            self._values[name] = compute()
        return self._values[name]

    def __getstate__(self) -> dict:
        """Pickled without the chunk's work (a forked worker's result)."""
        return {**vars(self), "by_logit": None, "_chunk": None, "_values": {}}


def softmax_targets(
    chunk: Chunk, softmax_rows: np.ndarray, row_valid: np.ndarray, shared: SharedPass | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, elements.SoftmaxTerms, np.ndarray | None]:
    """The target terms of the rows ``softmax_rows`` (valid, with a target; ``row_valid`` the
    chunk's valid rows): ``(row, col, y, positive, local_row, terms, w)``, ``local_row`` the row's
    place in ``softmax_rows``, ``terms`` their :func:`~lossaudit.compare.engine.elements.softmax_terms`,
    ``w`` their weights (a term weighs what its target element weighs; None unweighted). Computed
    once per chunk among the tallies of a ``shared`` pass."""

    def compute() -> tuple:
        in_rows = row_valid[chunk.target_rows]
        row, col, y = chunk.target_rows[in_rows], chunk.target_cols[in_rows], chunk.target_values[in_rows]
        local_row = np.searchsorted(softmax_rows, row)
        every = len(softmax_rows) == len(chunk.logits)
        terms = elements.softmax_terms(chunk.logits if every else np.take(chunk.logits, softmax_rows, axis=0), local_row, col)  # (take: faster than [rows])
        w = chunk.weights[row, col] if chunk.weights is not None else None
        return row, col, y, chunk.target_positive[in_rows], local_row, terms, w

    return cast(tuple, compute() if shared is None else shared.once(chunk, "softmax", compute))
