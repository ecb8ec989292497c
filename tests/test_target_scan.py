"""The checks of per-class targets read before the pass (``scan_targets``) and their decoding in
the pass (``dense_targets``), against their definitions restated element by element: every
dtype a dump may store, NaN, ±inf, -0, values just inside and outside [0, 1], rows of two
positives in one chunk or another."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from lossaudit.io.dataset.checks import scan_targets
from lossaudit.io.dataset.decode import dense_targets

DTYPES = (np.float16, np.float32, np.float64, np.bool_, np.uint8, np.int16, np.int64)


class _Chunks:
    """A ``RowArray`` of an in-memory ``(n, C)`` array, read ``rows`` rows at a time."""

    def __init__(self, values: np.ndarray):
        self.values = values

    def scan(self, count: int, rows: int):
        for start in range(0, count, rows):
            yield self.values[start : min(start + rows, count)]


def _expected(values: np.ndarray) -> tuple[bool, bool, bool, bool]:
    """The four answers from each element in float64, as the docstring states them."""
    flat = [float(v) for v in values.ravel()]
    positives_per_row = [sum(float(v) >= 0.5 for v in row) for row in values]
    return (
        all(v in (0.0, 1.0) for v in flat),
        any(v == 1.0 for v in flat),
        all(np.isfinite(v) and 0.0 <= v <= 1.0 for v in flat),
        any(count > 1 for count in positives_per_row),
    )


def _targets(rng: np.random.Generator, dtype, kind: str) -> np.ndarray:
    """37 x 6 targets of ``dtype``: 0/1 (one positive per row or several), else soft values (some
    exactly 1), with one special value for ``kind``."""
    rows, classes = 37, 6
    if dtype == np.bool_ or np.dtype(dtype).kind in "ui" or kind == "binary":
        if rng.random() < 0.5:  # one positive at most per row
            values = np.zeros((rows, classes))
            values[np.arange(rows), rng.integers(classes, size=rows)] = rng.random(rows) < 0.5
        else:
            values = (rng.random((rows, classes)) < 0.15).astype(np.float64)
        if kind == "outside" and np.dtype(dtype).kind in "iu":
            values[5, 2] = -1 if np.dtype(dtype).kind == "i" else 2
    else:
        values = np.where(rng.random((rows, classes)) < 0.3, rng.random((rows, classes)) * rng.uniform(0.4, 1.2), 0.0)
        values[rng.integers(rows, size=rng.integers(3)), rng.integers(classes, size=1)] = 1.0
        special = {"nan": np.nan, "inf": np.inf, "-inf": -np.inf, "outside": 1.0009765625, "negative zero": -0.0, "half": 0.5}
        if kind in special:
            values[rng.integers(rows), rng.integers(classes)] = special[kind]
    return values.astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("kind", ["binary", "soft", "nan", "inf", "-inf", "outside", "negative zero", "half"])
@pytest.mark.parametrize("chunk_rows", [1, 5, 64])
def test_scan_targets_matches_its_definition(dtype, kind, chunk_rows):
    rng = np.random.default_rng(zlib.crc32(f"{np.dtype(dtype).name} {kind} {chunk_rows}".encode()))
    values = _targets(rng, dtype, kind)
    *found, sums = scan_targets(_Chunks(values), len(values), chunk_rows)
    assert tuple(found) == _expected(values)
    if found[0]:  # 0s and 1s: each column's count of ones
        assert sums is not None and sums.dtype == np.float64
        np.testing.assert_array_equal(sums, [sum(float(v) for v in column) for column in values.T])
    else:
        assert sums is None


@pytest.mark.parametrize("chunk_rows", [1, 3, 64])
def test_scan_targets_finds_two_positives_in_one_row_of_any_chunk(chunk_rows):
    values = np.zeros((20, 4), dtype=np.float32)
    values[np.arange(20), np.arange(20) % 4] = 1  # one positive per row: not multi-label
    assert scan_targets(_Chunks(values), 20, chunk_rows)[:4] == (True, True, True, False)
    values[17, 2] = 0.7  # a second positive (>= 0.5) in the last chunk's row
    assert scan_targets(_Chunks(values), 20, chunk_rows)[:4] == (False, True, True, True)
    values[17, 2] = 0.3  # not a positive
    assert scan_targets(_Chunks(values), 20, chunk_rows)[:4] == (False, True, True, False)
    assert scan_targets(_Chunks(values[:0]), 0, chunk_rows) == (True, False, True, False, None)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_dense_targets_are_the_nonzero_elements(dtype):
    """Rows, columns and float32 values of the non-zero targets, in row-major order, as
    ``np.nonzero`` finds them in the stored array (float64 and wide integers: in their float32
    values, where a float64 below float32's range is 0); -0 is no target, NaN is one."""
    rng = np.random.default_rng(3)
    kind = "soft" if np.dtype(dtype).kind == "f" else "binary"
    values = _targets(rng, dtype, kind)
    if np.dtype(dtype).kind == "f":
        values[0, 0], values[1, 1], values[2, 2] = np.nan, -0.0, 0.25
    if dtype == np.float64:
        values[3, 3] = 1e-300  # 0 in float32
    found = dense_targets(values)
    stored = values.astype(np.float32) if dtype in (np.float64, np.int64) else values
    rows, cols = np.nonzero(stored)
    np.testing.assert_array_equal(found.rows, rows)
    np.testing.assert_array_equal(found.cols, cols)
    np.testing.assert_array_equal(found.values, stored[rows, cols].astype(np.float32))
    assert found.values.dtype == np.float32
    if np.dtype(dtype).kind == "f":
        assert (0, 0) in set(zip(found.rows, found.cols)) and (1, 1) not in set(zip(found.rows, found.cols))
    assert not found.ignored_rows.any() and len(found.ignored_rows) == len(values)
