"""Row access to the arrays of a dump, memory-mapped where the file allows: a logits table of any
layout read as ``(n, C)`` rows (the class axis last), index targets or a row mask as ``(n,)``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

import numpy as np

from lossaudit.io.readers import ArrayFile, release_pages

SCAN_ROWS = 1 << 16
"""Rows per read when targets are scanned (for their encoding, or their sums)."""


class RowArray(Protocol):
    """What the reader asks of a batch's array read as rows: a :class:`Rows`, or the stored rows and
    the compact negatives' pseudo-rows together (:class:`~lossaudit.io.dataset.compact.PseudoRows`).
    ``view`` is whatever :meth:`view` fetched (an array, or a pair of them)."""

    axis: int | None

    def view(self) -> Any: ...
    def span(self, start: int, stop: int, view: Any = None) -> np.ndarray: ...
    def span_views(self, start: int, stop: int, view: Any) -> list[np.ndarray]: ...
    def scan(self, count: int, rows: int) -> Iterator[np.ndarray]: ...
    def float32_span(self, start: int, stop: int, view: Any, out: np.ndarray | None = None) -> np.ndarray: ...
    def pick(self, rows: np.ndarray) -> np.ndarray: ...


class Rows:
    """Row access to the array ``batch.get(key)`` whose rows are all axes but ``axis`` (or, with
    ``axis`` None, all axes: one value per row), without copying more than the rows asked for.

    The array is fetched by :meth:`view` and not kept here: a memory-mapped file is mapped only
    while its chunks are read (see :mod:`lossaudit.io.dataset.reader`)."""

    def __init__(self, batch: ArrayFile, key: str, shape: tuple[int, ...], axis: int | None):
        self.batch, self.key, self.axis = batch, key, axis
        if axis is not None:
            self.width = shape[axis]
            self.trailing = int(np.prod(shape[axis + 1 :], dtype=np.int64))

    def view(self) -> np.ndarray:
        """``(rows,)``, or ``(leading, C, trailing)`` (a view for C order)."""
        array = self.batch.get(self.key)
        return array.reshape(-1) if self.axis is None else array.reshape(-1, self.width, self.trailing)

    def _parts(self, view: np.ndarray, start: int, stop: int) -> Iterator[np.ndarray]:
        """Rows ``start .. stop`` of a ``(leading, C, trailing)`` view as ``(m, C)`` views, in order."""
        if self.trailing == 1:
            yield view[start:stop, :, 0]
            return
        row = start
        while row < stop:
            block, offset = divmod(row, self.trailing)
            take = min(stop - row, self.trailing - offset)
            yield view[block, :, offset : offset + take].T
            row += take

    def span(self, start: int, stop: int, view: np.ndarray | None = None) -> np.ndarray:
        """Rows ``start .. stop`` as ``(n,)`` or ``(n, C)`` (of ``view``, fetched when None)."""
        view = self.view() if view is None else view
        if self.axis is None:
            return np.asarray(view[start:stop])
        parts = [np.asarray(part) for part in self._parts(view, start, stop)]
        return np.concatenate(parts) if len(parts) > 1 else parts[0]

    def scan(self, count: int, rows: int) -> Iterator[np.ndarray]:
        """The first ``count`` rows as :meth:`span` reads them, ``rows`` at a time, each span's
        mapped pages given back after use (:func:`~lossaudit.io.readers.release_pages`)."""
        view = self.view()
        for start in range(0, count, rows):
            stop = min(start + rows, count)
            yield self.span(start, stop, view)
            for part in self.span_views(start, stop, view):
                release_pages(part)

    def span_views(self, start: int, stop: int, view: np.ndarray) -> list[np.ndarray]:
        """Rows ``start .. stop`` of ``view`` as a view (not copied), of whatever shape spans them, in
        a list: what :meth:`span` reads, for :func:`~lossaudit.io.readers.release_pages`."""
        if self.axis is None:
            return [view[start:stop]]
        return [view[start // self.trailing : (stop - 1) // self.trailing + 1]]

    def float32_span(self, start: int, stop: int, view: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Rows ``start .. stop`` of ``view`` as an ``(n, C)`` float32 array: a read-only view when
        they are float32 rows already (nothing is copied), else converted into ``out[:n]`` (or a new
        array; float64 beyond float32's range becomes inf)."""
        if self.trailing == 1 and view.dtype == np.float32:
            return np.asarray(view[start:stop, :, 0])
        x = out[: stop - start] if out is not None else np.empty((stop - start, self.width), dtype=np.float32)
        row = 0
        with np.errstate(over="ignore"):
            for part in self._parts(view, start, stop):
                np.copyto(x[row : row + len(part)], part, casting="same_kind")
                row += len(part)
        return x

    def pick(self, rows: np.ndarray) -> np.ndarray:
        """The rows at the (sorted) indices ``rows``."""
        view = self.view()
        if self.axis is None:
            return np.asarray(view[rows])
        block, offset = np.divmod(rows, self.trailing)
        return np.asarray(view[block[:, None], np.arange(self.width)[None, :], offset[:, None]])


def without_axis(shape: tuple[int, ...], axis: int) -> tuple[int, ...]:
    """``shape`` less its axis ``axis`` (the logits' shape: the rows' shape)."""
    return shape[:axis] + shape[axis + 1 :]


def rows_for(batch: ArrayFile, key: str, shape: tuple[int, ...], logits_shape: tuple[int, ...], axis: int) -> Rows | None:
    """The array ``key`` of ``shape`` as rows: one value per row (the logits' shape without the class
    axis ``axis``, or that shape with a trailing axis of 1, such as an ``(N, 1)`` label column) or
    one per element (the logits' shape); None for any other shape."""
    if shape == logits_shape:
        return Rows(batch, key, shape, axis)
    if shape in (without_axis(logits_shape, axis), without_axis(logits_shape, axis) + (1,)):
        return Rows(batch, key, shape, None)
    return None
