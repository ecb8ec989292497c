"""A chunk of decoded rows (:class:`Chunk`, numpy arrays) and the positive rule every engine shares
(:func:`is_positive`)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

POSITIVE_THRESHOLD = 0.5
"""A target counts as a positive when it is at least this (heatmaps: when it is exactly 1)."""


def is_positive(targets: np.ndarray, heatmap: bool = False) -> np.ndarray:
    """Bool array of the shape of ``targets`` (target probabilities of any shape and dtype): the
    positives, ``targets >= 0.5`` (``heatmap``: ``targets == 1``, the Gaussian peaks)."""
    return targets == 1 if heatmap else targets >= POSITIVE_THRESHOLD


def positive_rule(heatmap: bool) -> str:
    """:func:`is_positive` in words, as the report states it."""
    return "target == 1" if heatmap else f"target >= {POSITIVE_THRESHOLD}"


@dataclass
class Chunk:
    """Rows ``start .. start + n`` of the data, decoded into numpy arrays.

    What excludes an element is kept at the level it happens: whole rows (an ignore label, a row
    mask, a label out of range) as ``(n,)`` flags, single elements (an element mask, a NaN or
    infinite logit) as ``(n, C)`` masks that are None when nothing is excluded that way. Targets
    are sparse: the coordinates and values of the non-zero ones (index targets have one per row at
    most; :attr:`targets` is the dense table).

    Attributes:
        logits: ``(n, C)`` float32 logits (converted from probabilities when ``inputs == 'probs'``);
            non-finite values are kept and excluded through ``nonfinite``. It may be a view of a
            buffer the caller passed to :meth:`~lossaudit.io.dataset.reader._Reader.decode`.
        target_rows, target_cols: ``(k,)`` int64 coordinates of the non-zero targets, row-major order.
        target_values: ``(k,)`` float32 target probabilities at those coordinates (1 for index targets).
        ignored_rows: ``(n,)`` bool: the ignore label or a row mask.
        out_of_range: ``(n,)`` bool: an index label that is no class, background or ignore.
        element_ignored: ``(n, C)`` bool from an element mask, or None.
        nonfinite: ``(n, C)`` bool: NaN or infinite logits, or None (for none, or not yet looked
            for: see :meth:`~lossaudit.io.dataset.reader._Reader.decode`).
        heatmap: positives are targets == 1 (else targets >= 0.5).
        weights: ``(n, C)`` float64 sampling weights of the elements (a weighted dump:
            :mod:`~lossaudit.io.dataset.weights`; per-row weights broadcast, 1 where a batch has none
            and at padding), or None for an unweighted dump.
        padding: ``(n, C)`` bool, positions that hold no element (a weighted sample's pseudo-rows),
            or None. Padding is excluded through :attr:`element_invalid`, as a masked element, but is
            not :attr:`ignored`: it counts nowhere.
    """

    start: int
    logits: np.ndarray
    target_rows: np.ndarray
    target_cols: np.ndarray
    target_values: np.ndarray
    ignored_rows: np.ndarray
    out_of_range: np.ndarray
    element_ignored: np.ndarray | None
    nonfinite: np.ndarray | None
    heatmap: bool
    weights: np.ndarray | None = None
    padding: np.ndarray | None = None

    @property
    def dropped_rows(self) -> np.ndarray:
        """``(n,)`` rows excluded whole."""
        return self.ignored_rows | self.out_of_range

    @property
    def element_invalid(self) -> np.ndarray | None:
        """``(n, C)`` elements excluded one by one (element mask, non-finite or padding), or None."""
        masks = [mask for mask in (self.element_ignored, self.nonfinite, self.padding) if mask is not None]
        if len(masks) <= 1:
            return masks[0] if masks else None
        return np.logical_or.reduce(masks)

    @cached_property
    def weight_sums(self) -> np.ndarray:
        """``(n,)`` float64 sums of each row's element weights in a weighted dump (padding weighs 1:
        see :func:`~lossaudit.io.dataset.weights.chunk_weights`), computed once per chunk (its
        weights are set as it is read); a reduction, not a BLAS product with ones, which OpenBLAS
        would run on threads that spin beside the workers."""
        assert self.weights is not None  # a weighted dump's chunk
        return np.add.reduce(self.weights, axis=1)

    @cached_property
    def row_weights(self) -> np.ndarray:
        """``(n,)`` float64 weight of each row in a weighted dump (what row counts add up): the mean
        weight of the row's non-zero targets where it has any (a row with per-row weights: its
        weight), else the mean weight of its elements that are not padding (0 for a row of padding
        only: a plug-in figure for the Recorder's pseudo-rows). Ones without weights. Computed once
        per chunk (the tallies of a pass each ask)."""
        if self.weights is None:
            return np.ones(len(self.logits))
        classes = self.weights.shape[1]
        sums = self.weight_sums  # padding weighs 1: taken off below
        if self.padding is None:
            weights = sums / classes
        else:
            padded = np.count_nonzero(self.padding, axis=1)
            counts = classes - padded
            with np.errstate(invalid="ignore", divide="ignore"):
                weights = np.where(counts > 0, (sums - padded) / counts, 0.0)
        rows = len(self.logits)
        if len(self.target_rows):
            on_target = np.bincount(self.target_rows, weights=self.weights[self.target_rows, self.target_cols], minlength=rows)
            targets = np.bincount(self.target_rows, minlength=rows)
            weights = np.where(targets > 0, on_target / np.maximum(targets, 1), weights)
        return weights

    @property
    def target_positive(self) -> np.ndarray:
        """``(k,)`` bool: the non-zero target is a positive (≥ 0.5; heatmaps: == 1)."""
        return is_positive(self.target_values, self.heatmap)

    @property
    def targets(self) -> np.ndarray:
        """``(n, C)`` float32 target probabilities (index targets one-hot; background rows 0)."""
        dense = np.zeros(self.logits.shape, dtype=np.float32)
        dense[self.target_rows, self.target_cols] = self.target_values
        return dense

    @property
    def ignored(self) -> np.ndarray:
        """``(n, C)`` bool: dropped by the ignore index or a mask."""
        ignored = np.broadcast_to(self.ignored_rows[:, None], self.logits.shape)
        return ignored | self.element_ignored if self.element_ignored is not None else ignored.copy()

    @property
    def valid(self) -> np.ndarray:
        """``(n, C)`` bool: not ignored, not masked, a label in range and a finite logit."""
        valid = np.broadcast_to(~self.dropped_rows[:, None], self.logits.shape)
        invalid = self.element_invalid
        return valid & ~invalid if invalid is not None else valid.copy()

    @property
    def valid_rows(self) -> np.ndarray:
        """``(n,)`` bool: rows neither dropped nor holding an excluded element (what a softmax uses)."""
        invalid = self.element_invalid
        return ~self.dropped_rows if invalid is None else ~self.dropped_rows & ~invalid.any(axis=1)

    @property
    def has_target(self) -> np.ndarray:
        """``(n,)`` bool: rows with a non-zero target."""
        rows = np.zeros(len(self.logits), dtype=bool)
        rows[self.target_rows] = True
        return rows

    @property
    def positive(self) -> np.ndarray:
        """``(n, C)`` bool: target ≥ 0.5 (heatmaps: == 1) and valid."""
        positive = np.zeros(self.logits.shape, dtype=bool)
        positive[self.target_rows, self.target_cols] = self.target_positive
        return positive & self.valid


def concatenate(chunks: list[Chunk], start: int) -> Chunk:
    """One chunk from several (row coordinates of the non-zero targets shifted accordingly)."""
    offsets = np.cumsum([0] + [len(chunk.logits) for chunk in chunks[:-1]])

    def joined(name: str) -> np.ndarray | None:
        parts = [getattr(chunk, name) for chunk in chunks]
        if all(part is None for part in parts):
            return None
        return np.concatenate([part if part is not None else np.zeros(chunk.logits.shape, dtype=bool) for part, chunk in zip(parts, chunks)])

    return Chunk(
        start,
        logits=np.concatenate([chunk.logits for chunk in chunks]),
        target_rows=np.concatenate([chunk.target_rows + int(offset) for chunk, offset in zip(chunks, offsets)]),
        target_cols=np.concatenate([chunk.target_cols for chunk in chunks]),
        target_values=np.concatenate([chunk.target_values for chunk in chunks]),
        ignored_rows=np.concatenate([chunk.ignored_rows for chunk in chunks]),
        out_of_range=np.concatenate([chunk.out_of_range for chunk in chunks]),
        element_ignored=joined("element_ignored"),
        nonfinite=joined("nonfinite"),
        heatmap=chunks[0].heatmap,
        weights=None
        if all(chunk.weights is None for chunk in chunks)
        else np.concatenate([chunk.weights if chunk.weights is not None else np.ones(chunk.logits.shape) for chunk in chunks]),
        padding=joined("padding"),
    )
