"""Issue 27's faster paths give the numbers of the plain ones and of independent references:

- ``sweep``'s tallies share one dense pass and each chunk's work: every setting equals
  ``compare`` run alone for it (its own pass), at every chunk size and worker count, for gammas
  whose powers are products, square roots or ``np.power``;
- its cumulative loss shares, with the easy negatives counted by logit, lie within their bounds of
  a direct sort of the torch reference's element losses, logits below the counted range, masks,
  dropped rows, NaN and soft targets included;
- the float32 powers by products equal ``np.power``;
- the confidently wrong units' causes (the report's diagnosis) equal a unit-by-unit reading of
  their definition (:mod:`lossaudit.compare.engine.mistakes`).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from lossaudit import losses
from lossaudit.compare.engine import elements, parallel
from lossaudit.compare.engine.dense import LOWEST_COUNTED
from lossaudit.compare.engine.mistakes import CONFUSED, DETECTED, OTHER, VERY_HARD_G, Mistakes
from lossaudit.compare.engine.stream import stream_tally
from lossaudit.compare.settings import LossSettings
from lossaudit.io.dataset import LoadOptions, plan
from lossaudit.io.readers import read_batches
from lossaudit.sweep import run as sweeping
from lossaudit.sweep.histogram import SUB_BINS, atom_scale
from tests.conftest import write_npz
from tests.test_sweep import _exact_cumulative

GAMMAS = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 2.7)
"""Powers by a fill (0), a square root (0.5, 1.5), products (1, 2, 3) and np.power (2.7)."""


def _detection(path, seed: int = 0, rows: int = 900, classes: int = 7):
    """Index targets with background, ignored rows, NaN and logits from -90 (below the range
    counted by logit) to +8."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(-4.0, 2.5, (rows, classes)).astype(np.float32)
    logits[rng.random((rows, classes)) < 0.01] = rng.uniform(-90, -64, 1).astype(np.float32)[0]
    logits.reshape(-1)[rng.choice(logits.size, 30, replace=False)] = rng.uniform(-90, -60, 30).astype(np.float32)
    logits.reshape(-1)[rng.choice(logits.size, 3, replace=False)] = np.nan
    labels = np.where(rng.random(rows) < 0.3, rng.integers(0, classes, rows), classes)
    labels[rng.random(rows) < 0.03] = -1
    for row in np.flatnonzero((labels >= 0) & (labels < classes)):
        logits[row, labels[row]] = rng.normal(1, 2)
    return write_npz(path, logits=logits, targets=labels)


def test_power_by_products_equals_numpy():
    base = np.random.default_rng(0).random(5000).astype(np.float32)
    base[:3] = (0, 1, 1e-30)
    for k in (0, 0.5, 1, 1.5, 2, 2.5, 3, 4, 5, 7.5, 8, 2.7, 9, 12.5):
        np.testing.assert_allclose(elements.power(base, k), np.power(base, np.float32(k)), rtol=3e-7 * (k + 1), atol=1e-37, err_msg=str(k))


@pytest.mark.parametrize("chunk_rows", [13, 100, 5000])
@pytest.mark.parametrize("workers", [1, 2])
def test_each_sweep_setting_equals_compare_alone(tmp_path, chunk_rows, workers):
    path = _detection(tmp_path / "d.npz")
    data = plan(read_batches([path]))
    document = sweeping.sweep(data, GAMMAS, (0.25, -1.0), chunk_rows=chunk_rows, workers=workers)
    for row in document["settings"]:
        settings = LossSettings(losses=("focal",), gamma=row["gamma"], alpha=row["alpha"])
        alone = stream_tally(plan(read_batches([path])), settings, chunk_rows=7, workers=1)
        np.testing.assert_allclose(row["sum"], alone.loss_sums["focal"].sum(), rtol=2e-6)
        np.testing.assert_allclose(row["gradient_mean"] * alone.normalisers["focal"], alone.gradient_sums["focal"].sum(), rtol=2e-6)
        per_class = alone.loss_sums["focal"].sum(axis=(1, 2, 3))
        np.testing.assert_allclose([c["share"] for c in row["per_class"]], per_class / per_class.sum(), rtol=2e-6, atol=1e-12)


def _check_cumulative(document, logits, targets, positive):
    """Every share at most its bound above the sort of torch's float64 focal losses and never
    below it (1e-9: float64 rounding; the loss bins keep float32 losses: 1e-6 there)."""
    x, y = torch.from_numpy(logits).double(), torch.from_numpy(targets).double()
    for item in document["cumulative"]:
        h = losses.focal(x, y, alpha=-1, gamma=item["gamma"]).numpy()
        for which, chosen in (("positives", positive), ("negatives", ~positive)):
            got, bound = np.array(item[which]["share"]), np.array(item[which]["error_bound"])
            exact = _exact_cumulative(h[chosen], item["fractions"])
            assert item[which]["elements"] == int(chosen.sum())
            assert (bound <= 1 / SUB_BINS).all()
            assert (got >= exact - 1e-6).all() and (got <= exact + bound + 1e-6).all(), (item["gamma"], which, np.max(got - exact))


@pytest.mark.parametrize("workers", [1, 2])
def test_cumulative_shares_with_logits_outside_the_counted_range(tmp_path, workers):
    path = _detection(tmp_path / "d.npz", seed=3)
    with np.load(path) as dump:
        logits, labels = dump["logits"], dump["targets"]
    assert (logits < LOWEST_COUNTED).any()
    document = sweeping.sweep(plan(read_batches([path])), GAMMAS, (0.25,), chunk_rows=64, workers=workers)
    kept = labels >= 0
    valid = kept[:, None] & np.isfinite(logits)
    targets = np.eye(8, dtype=np.float32)[np.where(kept, labels, 7)][:, :7]
    _check_cumulative(document, logits[valid], targets[valid], targets[valid] == 1)


def test_cumulative_shares_with_soft_targets_below_a_half_among_the_easy_negatives(tmp_path):
    """Negatives with a soft target (binned by loss) and easy negatives (binned by logit) overlap
    in loss: the bounds take in what the bins before the cut may hold above it."""
    rng = np.random.default_rng(5)
    logits = rng.normal(-4, 1.5, (3000, 4)).astype(np.float32)
    targets = np.where(rng.random((3000, 4)) < 0.1, rng.uniform(0, 0.5, (3000, 4)), 0).astype(np.float32)
    targets[rng.random((3000, 4)) < 0.01] = 1
    mask = (rng.random((3000, 4)) > 0.05).astype(np.uint8)
    path = write_npz(tmp_path / "soft.npz", logits=logits, targets=targets, mask=mask)
    document = sweeping.sweep(plan(read_batches([path]), LoadOptions(targets="soft")), (0.0, 2.0, 5.0), (0.25,), chunk_rows=500)
    valid = mask == 1
    _check_cumulative(document, logits[valid], targets[valid], targets[valid] >= 0.5)


def test_atoms_span_at_most_a_loss_bin():
    """An atom's losses lie within a factor exp((gamma + 1) / scale) of one another: below 1 + 1/256."""
    for gammas in ((0.0,), (2.0,), (5.0,), (0.0, 31.0)):
        assert np.exp((max(gammas) + 1) / atom_scale(gammas)) < 1 + 1 / SUB_BINS


def test_softmax_focal_sweep_settings_equal_compare_alone(tmp_path, monkeypatch):
    """Single-label data: the softmax terms computed once per chunk serve every gamma's tally."""
    monkeypatch.setattr(parallel, "FORK", False)
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 6, 700)
    logits = rng.normal(0, 1.5, (700, 6)).astype(np.float32)
    logits[np.arange(700), labels] += 2
    path = write_npz(tmp_path / "single.npz", logits=logits, targets=labels)
    document = sweeping.sweep(plan(read_batches([path])), (0.0, 0.5, 2.0), (), chunk_rows=50, workers=2)
    assert document["loss"] == "softmax-focal"
    for row in document["settings"]:
        alone = stream_tally(plan(read_batches([path])), LossSettings(losses=("softmax-focal",), gamma=row["gamma"]), chunk_rows=64)
        np.testing.assert_allclose(row["sum"], alone.loss_sums["softmax-focal"].sum(), rtol=2e-6)
    x = torch.from_numpy(logits).double()
    for item in document["cumulative"]:
        h = np.sort(losses.softmax_focal(x, torch.from_numpy(labels), gamma=item["gamma"], reduction="none").numpy())
        exact = _exact_cumulative(h, item["fractions"])
        got, bound = np.array(item["rows"]["share"]), np.array(item["rows"]["error_bound"])
        assert (got >= exact - 1e-6).all() and (got <= exact + bound + 1e-6).all()


def _mistakes_by_definition(index, p, targets, target_positive, target_g, classes):
    """The confidently wrong elements' causes (sigmoid, no maps), unit by unit from the
    definitions: a positive at g >= 0.9 is confused when another class (not a target) of its row
    has p >= 0.1 (the most probable names it); a non-positive at p >= 0.9 (or a non-positive
    target at g >= 0.9) is confused when its row holds a positive of another class (the first)."""
    p_of = dict(zip(index.tolist(), p.tolist()))
    target_set = dict(zip(targets.tolist(), target_positive.tolist()))
    counts = np.zeros((classes, 2, 3))
    pairs: dict = {}
    units = [(i, False) for i in index.tolist() if p_of[i] >= VERY_HARD_G and i not in target_set]
    units += [(t, bool(pos)) for t, pos, g in zip(targets.tolist(), target_positive.tolist(), target_g.tolist()) if g >= VERY_HARD_G]
    for unit, positive in units:
        row, col = divmod(unit, classes)
        row_elements = [i for i in index.tolist() if i // classes == row]
        if positive:
            detected = [(-p_of[i], i % classes) for i in row_elements if p_of[i] >= DETECTED and i not in target_set and i % classes != col]
            other = min(detected)[1] if detected else -1
        else:
            found = [i % classes for i in sorted(target_set) if i // classes == row and target_set[i] and i % classes != col]
            other = found[0] if found else -1
        counts[col, int(positive), CONFUSED if other >= 0 else OTHER] += 1
        if other >= 0:
            key = (col, other) if positive else (other, col)
            pairs[key] = pairs.get(key, 0) + 1
    return counts, pairs


def test_confidently_wrong_causes_follow_their_definition():
    """Multi-label rows (several positives, soft targets), dense misses and false positives."""
    rng = np.random.default_rng(7)
    rows, classes = 60, 9
    index = np.flatnonzero(rng.random(rows * classes) < 0.6)
    p = rng.choice([0.01, 0.05, 0.1, 0.3, 0.5, 0.92, 0.95, 0.99], len(index)).astype(np.float32)
    p[rng.random(len(index)) < 0.05] = np.float32(0.95)  # ties among detections
    is_target = rng.random(len(index)) < 0.3
    targets = index[is_target]
    y = rng.choice([1.0, 0.8, 0.3], len(targets)).astype(np.float32)
    target_positive = y >= 0.5
    target_g = np.abs(p[is_target] - y)
    found = Mistakes(classes)
    found.add_sigmoid(0, rows, index, p, targets, target_positive, target_g)
    counts, pairs = _mistakes_by_definition(index, p, targets, target_positive, target_g, classes)
    assert counts[..., CONFUSED].sum() > 10 and counts[:, 1, :].sum() > 5  # both kinds of unit, confused ones among them
    np.testing.assert_array_equal(found.sigmoid, counts)
    assert dict(found.pairs["sigmoid"]) == pairs


def test_weighted_sweep_shares_the_pass_too(tmp_path):
    """A weighted dump (every element tallied one by one, weighted): every setting equals compare's."""
    rng = np.random.default_rng(4)
    logits = rng.normal(-3, 2, (400, 5)).astype(np.float32)
    labels = np.where(rng.random(400) < 0.4, rng.integers(0, 5, 400), 5)
    path = write_npz(tmp_path / "w.npz", logits=logits, targets=labels, weights=rng.integers(1, 5, 400).astype(np.float32))
    document = sweeping.sweep(plan(read_batches([path])), (0.0, 1.5, 2.0), (0.25,), chunk_rows=64, workers=2)
    for row in document["settings"]:
        settings = replace(LossSettings(losses=("focal",)), gamma=row["gamma"], alpha=0.25)
        alone = stream_tally(plan(read_batches([path])), settings, chunk_rows=64, workers=1)
        np.testing.assert_allclose(row["sum"], alone.loss_sums["focal"].sum(), rtol=2e-6)
        assert row["sum_se"] is not None


def test_logit_counts_equal_a_direct_count():
    """Counts of the easy negatives by atom, and their places' sums, against ``floor(x scale)``
    counted by hand; taken-out elements and dropped rows left out; several flushes."""
    from lossaudit.compare.engine.dense import LogitCounts

    rng = np.random.default_rng(9)
    scale = 1024
    counts = LogitCounts(scale, 600)
    expected_counts, expected_places = np.zeros(counts.size), np.zeros(counts.size)
    for _ in range(700):  # more elements than one buffer holds
        x = rng.uniform(LOWEST_COUNTED, -1e-6, (100, 6)).astype(np.float32)
        x[0, 0] = LOWEST_COUNTED
        x[1, :] = x[1, 0]  # many in one atom
        taken = rng.choice(x.size, 20, replace=False)
        dropped = np.array([3, 7])
        counts.add(x, taken, dropped)
        keep = np.ones(x.shape, dtype=bool)
        keep.reshape(-1)[taken] = False
        keep[dropped] = False
        scaled = x[keep].astype(np.float64) * scale
        atoms = np.floor(scaled).astype(np.int64) - LOWEST_COUNTED * scale + 1
        np.add.at(expected_counts, atoms, 1)
        np.add.at(expected_places, atoms, scaled - np.floor(scaled))
    counts.flush()
    np.testing.assert_array_equal(counts.counts, expected_counts)
    assert (np.abs(counts.offsets - expected_places) <= expected_counts * counts.place_error + 1e-9).all()
    assert counts.counts[0] == 0 and counts.counts[1] >= 1
