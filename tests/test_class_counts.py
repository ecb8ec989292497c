"""``DataPlan.class_target_sums``: each class's targets summed over the rows as stored, the counts
the imbalance advice and the class-balanced losses read before the pass. Index labels are counted
by one unsigned comparison (a negative label wraps above every class); the counts here are
tallied label by label in Python."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from lossaudit.io.dataset import LoadOptions, plan
from lossaudit.io.dataset.rows import SCAN_ROWS
from lossaudit.io.readers import read_batches
from tests.conftest import write_npz

pytestmark = pytest.mark.torch_free

CLASSES = 5


def _by_hand(labels: np.ndarray, base: int, weights: np.ndarray | None = None) -> list[float]:
    """Each class's labels (``base .. base + C - 1``) counted one by one, each weighted by its row's weight."""
    counter: Counter[int] = Counter()
    for row, label in enumerate(labels.tolist()):
        if base <= label < base + CLASSES:
            counter[label - base] += 1.0 if weights is None else float(weights[row])
    return [counter[c] for c in range(CLASSES)]


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.uint8, np.float32])
@pytest.mark.parametrize("base", [0, 1])
def test_index_counts_leave_out_ignore_and_background_labels(tmp_path, dtype, base):
    """Labels -1 (ignore), the background (C, or 0 with ``--label-base 1``) and the classes,
    across more rows than one scan reads, in the dtypes dumps hold."""
    rng = np.random.default_rng(3)
    rows = SCAN_ROWS + 1000
    low = 0 if dtype == np.uint8 else -1
    labels = rng.integers(low, CLASSES + 1, rows).astype(dtype)
    path = write_npz(tmp_path / "dump.npz", logits=np.zeros((rows, CLASSES), np.float32), targets=labels)
    data = plan(read_batches([path]), LoadOptions(label_base=base))
    assert data.class_target_sums().tolist() == _by_hand(labels.astype(np.int64), base)


def test_weighted_index_counts_weigh_each_label(tmp_path):
    """A weighted dump: each label counts its row's sampling weight (a Horvitz–Thompson estimate)."""
    rng = np.random.default_rng(4)
    labels = rng.integers(-1, CLASSES + 1, 300)
    weights = rng.choice([1.0, 2.0, 8.0], 300)
    path = write_npz(tmp_path / "dump.npz", logits=np.zeros((300, CLASSES), np.float32), targets=labels, weights=weights)
    assert plan(read_batches([path])).class_target_sums().tolist() == pytest.approx(_by_hand(labels, 0, weights), rel=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.uint8, np.bool_])
def test_one_hot_counts_are_each_columns_ones_over_every_file(tmp_path, dtype):
    """0/1 targets, summed by the plan's scan as it checks them (no second read): each column's
    ones, over two files and more rows than one scan reads."""
    rng = np.random.default_rng(5)
    paths, expected = [], [0.0] * CLASSES
    for name, rows in (("a", SCAN_ROWS + 1000), ("b", 300)):
        targets = (rng.random((rows, CLASSES)) < 0.2).astype(dtype)
        for row in targets.tolist():
            for c, value in enumerate(row):
                expected[c] += float(value)
        paths.append(write_npz(tmp_path / f"{name}.npz", logits=np.zeros((rows, CLASSES), np.float32), targets=targets))
    data = plan(read_batches(paths))
    assert data.info.encoding == "onehot"
    assert data.class_target_sums().tolist() == expected


def test_soft_and_weighted_one_hot_counts_are_read_again(tmp_path):
    """Soft targets: each column's values summed; 0/1 targets with weights: each one times its
    weight (the scan's unweighted sums are not used)."""
    rng = np.random.default_rng(6)
    soft = np.where(rng.random((400, CLASSES)) < 0.3, rng.random((400, CLASSES)), 0).astype(np.float32)
    path = write_npz(tmp_path / "soft.npz", logits=np.zeros((400, CLASSES), np.float32), targets=soft)
    expected = [sum(float(v) for v in column) for column in soft.T.tolist()]
    assert plan(read_batches([path])).class_target_sums().tolist() == pytest.approx(expected, rel=1e-12)
    hard = (rng.random((400, CLASSES)) < 0.3).astype(np.float32)
    weights = rng.choice([1.0, 4.0], 400)
    path = write_npz(tmp_path / "weighted.npz", logits=np.zeros((400, CLASSES), np.float32), targets=hard, weights=weights)
    expected = [sum(float(v) * float(w) for v, w in zip(column, weights)) for column in hard.T.tolist()]
    assert plan(read_batches([path])).class_target_sums().tolist() == pytest.approx(expected, rel=1e-12)
