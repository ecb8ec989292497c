"""The streaming engine (numpy) gives the full-tensor engine's numbers (torch, the references of
:mod:`lossaudit.losses`; relative 1e-5) on random dumps: ignored elements, masks, background rows,
NaNs, labels out of range, every target encoding, every loss, chunk sizes that split a batch and
worker counts.

The full-tensor engine runs in float64 on the dumps' float32 values: torch's float32 BCE loses up
to 1e-4 relative on small losses by cancellation (``(1 - y) x + max(-x, 0)`` at x = -6, soft y),
and a table cell may hold a single element."""

from __future__ import annotations

from dataclasses import fields, replace

import numpy as np
import pytest
import torch

from lossaudit import losses
from lossaudit.compare.engine import binning, dense, elements
from lossaudit.compare.engine.stream import ohem_row_selection, stream_tally
from lossaudit.compare.oracle import tally
from lossaudit.compare.settings import LOSS_IDS, LossSettings
from lossaudit.io.dataset import LoadOptions, load_batches, plan
from lossaudit.io.readers import read_batches

ALL_LOSSES = ("ce", "bce", "focal", "softmax-focal", "ghm", "centernet", "ohem")


def _detection(path, seed: int, shape=(3, 50, 6)):
    """Index targets with background (C), ignore (-1), an out-of-range label, NaN and ±inf logits,
    and a row mask."""
    rng = np.random.default_rng(seed)
    classes = shape[-1]
    logits = (rng.normal(-2, 3, size=shape)).astype(np.float32)
    labels = rng.choice([*range(classes), classes, -1, 99], p=[0.3 / classes] * classes + [0.6, 0.07, 0.03], size=shape[:-1])
    logits.reshape(-1)[rng.choice(logits.size, 7, replace=False)] = np.nan
    logits.reshape(-1)[rng.choice(logits.size, 3, replace=False)] = np.inf
    logits.reshape(-1)[rng.choice(logits.size, 2, replace=False)] = -np.inf
    mask = (rng.random(shape[:-1]) > 0.05).astype(np.uint8)
    np.savez(path, logits=logits, targets=labels, mask=mask)
    return path


def _soft(path, seed: int):
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 2, size=(70, 5)).astype(np.float32)
    targets = np.where(rng.random((70, 5)) < 0.3, rng.random((70, 5)), 0).astype(np.float32)
    targets[::7] = 0  # background rows
    element_mask = (rng.random((70, 5)) > 0.1).astype(np.uint8)
    np.savez(path, logits=logits, targets=targets, mask=element_mask)
    return path


def _heatmap(path, seed: int):
    rng = np.random.default_rng(seed)
    heatmap = np.where(rng.random((2, 3, 7, 9)) < 0.4, rng.random((2, 3, 7, 9)) * 0.95, 0).astype(np.float32)
    heatmap[0, 1, 2, 3] = heatmap[1, 0, 5, 5] = heatmap[1, 2, 0, 8] = 1.0
    np.savez(path, logits=rng.normal(-1, 2, size=heatmap.shape).astype(np.float32), targets=heatmap)
    return path


def _oracle(paths, settings, options=LoadOptions()):
    """The full-tensor tally of the dumps, in float64."""
    data = load_batches(read_batches(paths), options)
    return tally(replace(data, logits=data.logits.double(), targets=data.targets.double()), settings)


def _assert_same_mistakes(got, expected) -> None:
    """Two :class:`~lossaudit.compare.engine.mistakes.Mistakes` hold the same counts (integers)."""
    for part in ("sigmoid", "softmax", "argmax_correct"):
        np.testing.assert_array_equal(getattr(got, part), getattr(expected, part), err_msg=part)
    assert got.pairs == expected.pairs


def _assert_same(streamed, full):
    """Every field of two tallies, to float32 rounding; the full-tensor oracle leaves out the
    mistakes and focal's parts (None), which two streamed tallies must share."""
    for field in fields(full):
        expected, got = getattr(full, field.name), getattr(streamed, field.name)
        if expected is None and (field.name in ("mistakes", "focal_parts") or got is None):  # second_moments, sample: None unweighted
            continue
        if field.name == "mistakes":
            _assert_same_mistakes(got, expected)
            continue
        if isinstance(expected, dict):
            assert expected.keys() == got.keys(), field.name
            for key in expected:
                if isinstance(expected[key], str):
                    assert got[key] == expected[key], f"{field.name}[{key}]"
                else:
                    np.testing.assert_allclose(got[key], expected[key], rtol=1e-5, atol=1e-9, err_msg=f"{field.name}[{key}]")
        else:
            np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-9, err_msg=field.name)


SETTINGS = [
    LossSettings(losses=ALL_LOSSES),
    LossSettings(losses=ALL_LOSSES, alpha=-1, gamma=0.5, ghm_bins=30, bins=7, ghm_momentum=0.75, ohem_ratio=1.5),
    LossSettings(losses=ALL_LOSSES, alpha=1.0, gamma=0.0, ghm_bins=1, bins=1, ohem_ratio=0.0),
]


@pytest.mark.parametrize("settings", SETTINGS, ids=["defaults", "other-hyperparameters", "one-bin-gamma-0"])
@pytest.mark.parametrize("make", [_detection, _soft, _heatmap], ids=["index", "soft", "heatmap"])
@pytest.mark.parametrize("chunk_rows", [1, 7, 64, 1000])
def test_stream_equals_full_tensor(tmp_path, make, settings, chunk_rows):
    paths = [make(tmp_path / f"batch{seed}.npz", seed) for seed in (1, 2)]  # two batches: chunks cross them
    full = _oracle(paths, settings)
    streamed = stream_tally(plan(read_batches(paths)), settings, chunk_rows=chunk_rows)
    _assert_same(streamed, full)


def test_stream_with_per_class_alpha_and_probabilities(tmp_path):
    rng = np.random.default_rng(3)
    probs = rng.random((90, 4)).astype(np.float32)
    np.savez(tmp_path / "p.npz", logits=probs, targets=rng.integers(0, 5, 90))
    settings = LossSettings(losses=ALL_LOSSES, alpha_per_class=(0.1, 0.4, 0.6, 0.9))
    options = LoadOptions(inputs="probs")
    full = _oracle([tmp_path / "p.npz"], settings, options)
    _assert_same(stream_tally(plan(read_batches([tmp_path / "p.npz"]), options), settings, chunk_rows=11), full)


def test_chunks_split_anchor_and_map_batches_consistently(tmp_path):
    """A chunk boundary inside an image of a (B, C, H, W) dump reads the same rows as the whole."""
    path = _heatmap(tmp_path / "h.npz", 4)
    data = plan(read_batches([path]))
    whole = next(iter(data.chunks()))
    pieces = list(data.chunks(rows=10))  # 63 rows per image: every image is split
    for name in ("logits", "targets", "valid", "positive"):
        np.testing.assert_array_equal(np.concatenate([getattr(p, name) for p in pieces]), getattr(whole, name))
    picked = data.read_rows(np.array([0, 62, 63, 125]))
    np.testing.assert_array_equal(picked.logits, whole.logits[[0, 62, 63, 125]])


@pytest.mark.parametrize("block_elements", [1, 20, 50])
def test_dense_blocks_that_split_a_chunk_give_the_same_numbers(tmp_path, monkeypatch, block_elements):
    """The dense pass works through a chunk in blocks of rows (one row at least): blocks of 1, 3 and
    8 rows of 6 classes inside chunks of 64 rows."""
    from lossaudit.compare.engine import stream

    monkeypatch.setattr(stream, "BLOCK_ELEMENTS", block_elements)
    paths = [_detection(tmp_path / f"batch{seed}.npz", seed) for seed in (11, 12)]
    settings = LossSettings(losses=ALL_LOSSES)
    _assert_same(stream_tally(plan(read_batches(paths)), settings, chunk_rows=64), _oracle(paths, settings))


@pytest.mark.parametrize("fork", [True, False], ids=["processes", "threads"])
@pytest.mark.parametrize("workers", [1, 2, 3])
def test_worker_count_does_not_change_the_numbers(tmp_path, monkeypatch, workers, fork):
    """Forked workers (Linux) and threads give the same tally, and the same statistics of the
    plan (labels out of range, counted in whichever process read them)."""
    from lossaudit.compare.engine import parallel

    monkeypatch.setattr(parallel, "FORK", fork and parallel.FORK)
    paths = [_detection(tmp_path / f"batch{seed}.npz", seed) for seed in (5, 6)]
    settings = LossSettings(losses=ALL_LOSSES)
    full = _oracle(paths, settings)
    data = plan(read_batches(paths))
    _assert_same(stream_tally(data, settings, chunk_rows=13, workers=workers), full)
    labels = np.concatenate([np.load(path)["targets"].reshape(-1) for path in paths])
    assert data.info.out_of_range_labels == {99: int(np.count_nonzero(labels == 99))} != {}


def test_every_file_format_streams_the_same(tmp_path):
    """Memory-mapped .npy, an uncompressed and a compressed .npz, and a .pt give the same tally."""
    import torch

    rng = np.random.default_rng(8)
    logits = rng.normal(-1, 2, size=(120, 4)).astype(np.float32)
    labels = rng.integers(-1, 5, size=120)
    np.savez(tmp_path / "plain.npz", logits=logits, targets=labels)
    np.savez_compressed(tmp_path / "packed.npz", logits=logits, targets=labels)
    (tmp_path / "npy").mkdir()
    np.save(tmp_path / "npy" / "logits.npy", logits)
    np.save(tmp_path / "npy" / "targets.npy", labels)
    torch.save({"logits": torch.from_numpy(logits), "targets": torch.from_numpy(labels)}, tmp_path / "dump.pt")
    settings = LossSettings(losses=ALL_LOSSES)
    expected = _oracle([tmp_path / "plain.npz"], settings)
    assert isinstance(read_batches([tmp_path / "plain.npz"])[0].get("logits"), np.memmap)
    for source in ("plain.npz", "packed.npz", "npy", "dump.pt"):
        _assert_same(stream_tally(plan(read_batches([tmp_path / source])), settings, chunk_rows=17), expected)


def test_numpy_ghm_weights_and_edges_are_the_references():
    rng = np.random.default_rng(9)
    for bins in (1, 7, 10, 30):
        np.testing.assert_array_equal(binning.ghm_bin_edges(bins), losses.ghm_bin_edges(bins).numpy())
        counts = rng.integers(0, 50, bins) * (rng.random(bins) > 0.3)
        for momentum in (0.0, 0.75):
            expected = losses.ghm_bin_weights(torch.from_numpy(counts), 1000.0, losses.GHMState(bins=bins, momentum=momentum))
            np.testing.assert_allclose(binning.ghm_bin_weights(counts, 1000.0, momentum), expected.numpy(), rtol=1e-12)


def test_easy_threshold_leaves_only_the_first_interval_to_the_dense_pass():
    """Every float32 logit below the threshold has torch's sigmoid below the first edge; the
    margin is small (a few thousandths of the logit)."""
    for edge in (0.1, 1 / 7, 1 / 30, 0.001):
        edge = np.float32(edge)
        x0 = dense.easy_threshold(edge)
        below = np.nextafter(x0, np.float32(-np.inf)) - np.arange(20000, dtype=np.float32) * np.spacing(np.abs(x0))
        assert bool((torch.sigmoid(torch.from_numpy(below)) < float(edge)).all())
        assert float(torch.sigmoid(torch.tensor(x0 + 1e-3 * abs(x0)))) > edge


def test_the_screen_takes_out_the_threshold_and_above_and_every_non_finite_logit():
    x0 = dense.easy_threshold(np.float32(0.1))
    float_max = np.finfo(np.float32).max
    negative_nan = -np.abs(np.float32(np.nan))
    easy = [np.nextafter(x0, -np.inf), -5, -1e30, -float_max]
    taken = [x0, np.nextafter(x0, np.inf), -0.0, 0.0, 1e-45, 3, float_max, np.inf, -np.inf, np.nan, negative_nan]
    x = np.array(easy + taken, dtype=np.float32)
    assert np.signbit(x[-1]) and np.isnan(x[-1])
    mask = dense.Screen(x0).taken(x, np.empty(len(x), dtype=np.int32), np.empty(len(x), dtype=bool))
    assert mask.tolist() == [False] * len(easy) + [True] * len(taken)


def test_numpy_ohem_selection_is_the_reference():
    rng = np.random.default_rng(10)
    row_loss, positive = rng.random(500), rng.random(500) < 0.05
    for ratio in (0.0, 1.5, 3.0, 100.0):
        expected = losses.ohem_row_selection(torch.from_numpy(row_loss), torch.from_numpy(positive), ratio)
        np.testing.assert_array_equal(ohem_row_selection(row_loss, positive, ratio), expected.numpy())


def test_ohem_ties_keep_the_earliest_rows_in_both_engines():
    """One positive (row 1), ratio 3, five negatives: the loss 2 of row 5 is kept, then two of the
    four rows tied at 1 — rows 0 and 2, the earliest (by hand). Before, torch.topk and
    np.argpartition each chose their own tied rows (hypothesis found it on all-zero logits)."""
    row_loss, positive = np.array([1.0, 1.0, 1.0, 1.0, 1.0, 2.0]), np.array([False, True, False, False, False, False])
    expected = [True, True, True, False, False, True]
    assert ohem_row_selection(row_loss, positive, 3.0).tolist() == expected
    assert losses.ohem_row_selection(torch.from_numpy(row_loss), torch.from_numpy(positive), 3.0).tolist() == expected


def test_numpy_constants_are_the_references():
    assert LOSS_IDS == losses.LOSS_IDS == ("ce", "bce", "focal", "softmax-focal", "ghm", "centernet", "ohem", "qfl", "vfl", "asl", "cb-ce", "logit-adjusted-ce")
    assert elements.CENTERNET_PROB_CLAMP == np.float32(losses.CENTERNET_PROB_CLAMP)


def test_softmax_terms_keep_a_confident_rows_small_loss_precise():
    """``-log q`` of a confident row (q near 1) to float32's relative precision, rows with ties at
    the maximum included: the float64 formula written here is the oracle. Summing ``1 + s`` in
    float32 lost up to 1% of it."""
    from lossaudit.compare.engine.elements import softmax_terms

    rng = np.random.default_rng(0)
    rows, classes = 2000, 80
    x = rng.normal(0, 1, size=(rows, classes)).astype(np.float32)
    target = rng.integers(0, classes, rows)
    x[np.arange(rows), target] += rng.uniform(4, 14, rows).astype(np.float32)
    x[:5] = 3.0  # every class tied at the maximum
    x[5:10, :2] = x[5:10].max(axis=1, keepdims=True)  # two classes tied at it
    x64 = x.astype(np.float64)
    top = x64.max(axis=1)
    expected = x64[np.arange(rows), target] - top - np.log(np.exp(x64 - top[:, None]).sum(axis=1))
    got = softmax_terms(x, np.arange(rows), target).log_q
    np.testing.assert_allclose(got, expected, rtol=1e-6)
