"""Issue 27's faster family paths give the full-tensor engine's numbers (torch, float64; 1e-5
relative, :func:`tests.test_stream._assert_same`):

- ASL with a clip below the first difficulty edge: the dense pass keeps its easy negatives' sums
  (``p_m = max(p - clip, 0)``), where they were tallied one by one before; a log floor ``eps`` that
  could bind there (the registry's ``eps``, not a ``compare`` option) would send them back to the
  one-by-one path;
- the softmax families (cb-ce, logit-adjusted-ce) take the core softmax terms of the same chunk
  (computed once), and single-label chunks read their rows in place.
"""

from __future__ import annotations

import numpy as np
import pytest

from lossaudit.compare.engine import elements
from lossaudit.compare.engine.binning import Intervals
from lossaudit.compare.engine.families import SigmoidFamilies
from lossaudit.compare.engine.stream import stream_tally
from lossaudit.compare.settings import LossSettings
from lossaudit.io.dataset import plan
from lossaudit.io.readers import read_batches
from tests.conftest import write_npz
from tests.test_stream import _assert_same, _oracle


def _near_the_clip(path, seed: int, soft: bool, rows: int = 300):
    """Logits around p = 0.03-0.12 (many easy negatives between the clip and the first edge), a
    few positives, NaN, a masked element; index or soft targets."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(-2.7, 0.5, (rows, 6)).astype(np.float32)
    logits[rng.random((rows, 6)) < 0.05] = rng.normal(1, 2, 1).astype(np.float32)[0]
    logits[4, 2] = np.nan
    if soft:
        targets = np.where(rng.random((rows, 6)) < 0.05, rng.uniform(0.3, 1, (rows, 6)), 0).astype(np.float32)
        mask = (rng.random((rows, 6)) > 0.03).astype(np.uint8)
        return write_npz(path, logits=logits, targets=targets, mask=mask)
    labels = np.where(rng.random(rows) < 0.3, rng.integers(0, 6, rows), 6)
    labels[::37] = -1
    return write_npz(path, logits=logits, targets=labels)


@pytest.mark.parametrize("soft", [False, True], ids=["index", "soft"])
@pytest.mark.parametrize(
    "asl",
    [
        {"asl_clip": 0.05},
        {"asl_clip": 0.02, "asl_gamma_neg": 0.0},
        {"asl_clip": 0.08, "asl_gamma_neg": 1.5},
        {"asl_clip": 0.05, "asl_gamma_neg": 1.0, "asl_gamma_pos": 1.0},
    ],
    ids=["default", "gamma-0", "gamma-1.5", "gamma-1"],
)
@pytest.mark.parametrize("chunk_rows", [7, 1000])
def test_clipped_asl_in_the_dense_pass_equals_full_tensor(tmp_path, soft, asl, chunk_rows):
    paths = [_near_the_clip(tmp_path / f"b{seed}.npz", seed, soft) for seed in (1, 2)]
    settings = LossSettings(losses=("bce", "qfl", "vfl", "asl"), **asl)
    _assert_same(stream_tally(plan(read_batches(paths)), settings, chunk_rows=chunk_rows), _oracle(paths, settings))


@pytest.mark.parametrize("soft", [False, True], ids=["index", "soft"])
def test_clipped_asl_over_blocks_of_different_sizes_equals_full_tensor(tmp_path, soft):
    """The clipped power's values are put into buffers kept at 0 elsewhere: a block of 300 rows,
    then one of 100, then one of 300 again (a chunk per file, one worker) must not sum the first
    block's values past the second's rows."""
    paths = [_near_the_clip(tmp_path / f"b{seed}.npz", seed, soft, rows) for seed, rows in ((1, 300), (2, 100), (3, 300))]
    settings = LossSettings(losses=("bce", "asl"), asl_clip=0.05)
    _assert_same(stream_tally(plan(read_batches(paths)), settings, chunk_rows=1000, workers=1), _oracle(paths, settings))


def test_the_dense_pass_keeps_asl_only_where_its_floor_cannot_bind():
    intervals = Intervals(10, 10)
    params = {"gamma_pos": 0.0, "gamma_neg": 4.0, "clip": 0.05, "eps": 1e-8}
    assert SigmoidFamilies({"asl": params}, intervals, 3).clipped(0.1) == ((4.0, 0.05),)
    assert SigmoidFamilies({"asl": params}, intervals, 3).easy_edge(0.1) == 0.1
    assert SigmoidFamilies({"asl": {**params, "eps": 0.95}}, intervals, 3).clipped(0.1) == ()
    assert SigmoidFamilies({"asl": {**params, "eps": 0.95}}, intervals, 3).easy_edge(0.1) == 0.05
    assert SigmoidFamilies({"asl": {**params, "clip": 0.0}}, intervals, 3).clipped(0.1) == ()


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("chunk_rows", [5, 64])
def test_softmax_families_share_the_core_softmax_terms(tmp_path, workers, chunk_rows):
    """Single-label rows (every row a target: read in place) and a dump with background rows and
    ignored ones (the rows with a target taken)."""
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 5, 200)
    logits = rng.normal(0, 2, (200, 5)).astype(np.float32)
    logits[np.arange(200), labels] += 2
    single = write_npz(tmp_path / "single.npz", logits=logits, targets=labels)
    mixed_labels = np.where(rng.random(200) < 0.4, labels, 5)
    mixed_labels[::11] = -1
    mixed_labels[:5] = np.arange(5)
    mixed = write_npz(tmp_path / "mixed.npz", logits=logits, targets=mixed_labels)
    for path in (single, mixed):
        settings = LossSettings(losses=("ce", "softmax-focal", "cb-ce", "logit-adjusted-ce"), la_tau=1.5)
        _assert_same(stream_tally(plan(read_batches([path])), settings, chunk_rows=chunk_rows, workers=workers), _oracle([path], settings))


def test_adjusted_softmax_terms_equal_torchs_float64_log_softmax():
    """logit-adjusted-ce's softmax of ``x + tau log prior``, from the plain softmax's exponents:
    its ``-log q`` within 1e-5 relative of torch's float64 ``log_softmax`` of the float64 sum,
    confident rows (``-log q`` down to 1e-7), wide logits, rare classes, rows whose shifted
    argmax is not their plain argmax with the target confident there included, and rows of
    several targets (soft labels) in any order, the confident one among them. The plain terms'
    exponents are left as they were."""
    import torch

    rng = np.random.default_rng(11)
    x = rng.normal(0, 4, (500, 7)).astype(np.float32)
    x[:50] *= 15  # logits of ±100
    labels = rng.integers(0, 7, 500)
    x[50:100, :] = -8
    x[np.arange(50, 100), labels[50:100]] = rng.uniform(8, 14, 50).astype(np.float32)  # q of the target near 1
    labels[400:] = 0  # the most frequent class, a little below a rare one: the shift makes it the target's argmax
    x[400:, :] = -10
    x[400:, 0] = rng.uniform(5, 6, 100).astype(np.float32)
    x[400:, 6] = x[400:, 0] + 0.5
    prior = np.array([0.5, 0.3, 0.1, 0.05, 0.03, 0.015, 0.005])
    one_each = (np.arange(500), labels)
    soft_row = np.repeat(np.arange(500), 3)  # the label and two other classes, the terms shuffled
    soft_col = np.stack([labels, (labels + 1) % 7, (labels + 3) % 7], axis=1).ravel()
    order = rng.permutation(len(soft_row))
    for tau in (1.0, 2.5):
        shift = tau * np.log(prior)
        shifted = torch.from_numpy(x).double() + torch.from_numpy(shift)
        for row, col in (one_each, (soft_row[order], soft_col[order])):
            plain = elements.softmax_terms(x, row, col)
            exponents = plain.exponents.copy()
            terms = elements.adjusted_softmax_terms(x, shift, row, col, plain)
            reference = torch.log_softmax(shifted, dim=1)[row, col].numpy()
            np.testing.assert_allclose(-terms.log_q, -reference, rtol=1e-5, atol=1e-12)
            np.testing.assert_array_equal(plain.exponents, exponents)
            assert (-reference < 1e-5).any()
        plain_top, shifted_top = plain.row_top[400:], shifted.argmax(dim=1).numpy()[400:]
        confident = -torch.log_softmax(shifted, dim=1)[np.arange(400, 500), 0].numpy()
        assert (plain_top == 6).all() and (shifted_top == 0).all() and (confident < (0.02 if tau == 1.0 else 1e-4)).all()
