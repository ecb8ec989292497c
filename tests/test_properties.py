"""Property tests of the reference losses (hypothesis): for random shapes, logits, targets and
hyper-parameters, every loss is finite and non-negative for finite logits, equals its closed form
written here in float64 numpy, and does not depend on the order of the samples."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from lossaudit import losses

SETTINGS = settings(max_examples=60, deadline=None, derandomize=True, database=None)  # the same examples every run, none replayed
RTOL, ATOL = 2e-5, 1e-6
"""float32 losses against float64 closed forms: a few float32 ulps of the largest terms."""


@st.composite
def batches(draw, max_rows: int = 24, max_classes: int = 7, soft: bool = False):
    """(logits (N, C) float32 in [-40, 40], targets (N, C) 0/1 or soft, class indices (N,))."""
    rows = draw(st.integers(1, max_rows))
    classes = draw(st.integers(1, max_classes))
    logits = draw(arrays(np.float32, (rows, classes), elements=st.floats(-40, 40, width=32)))
    labels = draw(arrays(np.int64, (rows,), elements=st.integers(0, classes - 1)))
    if soft:
        targets = draw(arrays(np.float32, (rows, classes), elements=st.floats(0, 1, width=32)))
    else:
        targets = np.eye(classes, dtype=np.float32)[labels] * draw(arrays(np.float32, (rows, 1), elements=st.sampled_from([0.0, 1.0])))
    return logits, targets, labels


def _bce(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    x, y = x.astype(np.float64), y.astype(np.float64)
    return np.maximum(x, 0) - x * y + np.log1p(np.exp(-np.abs(x)))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    return np.where(x >= 0, 1 / (1 + np.exp(-np.abs(x))), np.exp(-np.abs(x)) / (1 + np.exp(-np.abs(x))))


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    shifted = x - x.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def _t(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array))


def _check(loss: torch.Tensor, expected: np.ndarray, logits: np.ndarray | None = None) -> None:
    """``loss`` equals ``expected`` to RTOL, plus an absolute slack: ATOL, or with ``logits``
    4 float32 eps per unit of |x| — torch's float32 BCE-with-logits cancels (1 - y) x against
    softplus(x) for a soft target, so its error grows with |x| (hypothesis found x = -33,
    y = 6e-8: 3.8e-6 against the exact 1.97e-6)."""
    got = loss.detach().double().numpy()
    assert np.isfinite(got).all() and (got >= -ATOL).all()
    slack = ATOL if logits is None else np.maximum(ATOL, 4 * np.finfo(np.float32).eps * np.abs(logits.astype(np.float64)))
    assert np.all(np.abs(got - expected) <= RTOL * np.abs(expected) + slack), np.max(np.abs(got - expected) - RTOL * np.abs(expected) - slack)


@SETTINGS
@given(batches(soft=True), st.sampled_from([-1.0, 0.0, 0.25, 0.5, 1.0]), st.sampled_from([0.0, 0.5, 1.0, 2.0, 5.0]))
def test_focal_is_its_closed_form(batch, alpha, gamma):
    logits, targets, _ = batch
    p = _sigmoid(logits)
    y = targets.astype(np.float64)
    p_t = p * y + (1 - p) * (1 - y)
    alpha_t = 1.0 if alpha < 0 else alpha * y + (1 - alpha) * (1 - y)
    _check(losses.focal(_t(logits), _t(targets), alpha=alpha, gamma=gamma), alpha_t * (1 - p_t) ** gamma * _bce(logits, targets), logits)


@SETTINGS
@given(batches(soft=True))
def test_bce_is_its_closed_form(batch):
    logits, targets, _ = batch
    _check(losses.bce(_t(logits), _t(targets), reduction="none"), _bce(logits, targets), logits)


@SETTINGS
@given(batches(), st.sampled_from([0.0, 1.0, 2.0, 3.5]), st.booleans())
def test_softmax_focal_is_its_closed_form(batch, gamma, per_class_alpha):
    logits, _, labels = batch
    classes = logits.shape[1]
    log_q = _log_softmax(logits)[np.arange(len(labels)), labels]
    alpha = np.linspace(0.1, 0.9, classes) if per_class_alpha else None
    weight = alpha[labels] if per_class_alpha else 1.0
    expected = -weight * (1 - np.exp(log_q)) ** gamma * log_q
    got = losses.softmax_focal(_t(logits), _t(labels), gamma=gamma, alpha=None if alpha is None else _t(alpha.astype(np.float32)), reduction="none")
    _check(got, expected)
    if gamma == 0 and not per_class_alpha:
        _check(losses.ce(_t(logits), _t(labels), reduction="none"), expected)


@SETTINGS
@given(batches(soft=True), st.sampled_from([1, 3, 10, 30]))
def test_ghm_mean_is_the_average_of_bin_means(batch, bins):
    """REFERENCES.md: at momentum 0, GHM-C's mean is the average over non-empty bins of each bin's
    mean BCE (bins of g = |p - y| with edges k / bins, the last raised by 1e-6). g is taken from
    torch's float32 sigmoid, as the loss takes it: an element within an ulp of a bin edge falls on
    the side float32 rounding puts it."""
    logits, targets, _ = batch
    g = np.abs(torch.sigmoid(_t(logits)).numpy() - targets)
    edges = (np.arange(bins + 1, dtype=np.float32) / bins).astype(np.float32)
    edges[-1] += np.float32(1e-6)
    index = np.clip(np.searchsorted(edges[1:-1], g, side="right"), 0, bins - 1)
    bce = _bce(logits, targets)
    expected = np.mean([bce[index == b].mean() for b in range(bins) if (index == b).any()])
    _check(losses.ghm(_t(logits), _t(targets), bins=bins), np.float64(expected))


@SETTINGS
@given(
    arrays(np.float32, (2, 3, 4, 5), elements=st.floats(float(np.float32(1e-4)), float(np.float32(1 - 1e-4)), width=32)),
    arrays(np.float32, (2, 3, 4, 5), elements=st.sampled_from([0.0, 0.2, 0.7, 1.0])),
)
def test_centernet_is_its_closed_form(probs, heatmap):
    p, gt = probs.astype(np.float64), heatmap.astype(np.float64)
    terms = np.where(gt == 1, -np.log(p) * (1 - p) ** 2, -np.log(1 - p) * p**2 * (1 - gt) ** 4)
    peaks = int((gt == 1).sum())
    _check(losses.centernet(_t(probs), _t(heatmap)), terms.sum() / (peaks if peaks else 1))


@SETTINGS
@given(batches(), st.sampled_from([0.0, 1.0, 3.0]))
def test_ohem_keeps_positives_and_the_hardest_negatives(batch, ratio):
    logits, targets, _ = batch
    rows = _bce(logits, targets).sum(axis=1)
    positive = targets.max(axis=1) >= 0.5
    k = min(int(ratio * positive.sum()), int((~positive).sum()))
    hardest = np.sort(rows[~positive])[::-1][:k].sum()
    expected = (rows[positive].sum() + hardest) / max(int(positive.sum()), 1)
    _check(losses.ohem(_t(logits), _t(targets), neg_pos_ratio=ratio), np.float64(expected))


REDUCED = {
    "bce": lambda x, y, labels: losses.bce(x, y),
    "focal": lambda x, y, labels: losses.focal(x, y, reduction="mean"),
    "softmax-focal": lambda x, y, labels: losses.softmax_focal(x, labels),
    "ce": lambda x, y, labels: losses.ce(x, labels),
    "ghm": lambda x, y, labels: losses.ghm(x, y),
    "ohem": lambda x, y, labels: losses.ohem(x, y),
}


@pytest.mark.parametrize("name", sorted(REDUCED))
@SETTINGS
@given(batch=batches(), seed=st.integers(0, 2**16))
def test_reduced_losses_do_not_depend_on_sample_order(name, batch, seed):
    logits, targets, labels = batch
    order = np.random.default_rng(seed).permutation(len(labels))
    loss = REDUCED[name]
    before = float(loss(_t(logits), _t(targets), _t(labels)))
    after = float(loss(_t(logits[order]), _t(targets[order]), _t(labels[order])))
    assert np.isfinite(before) and before >= 0
    assert after == pytest.approx(before, rel=1e-5, abs=1e-7)


@st.composite
def dumps(draw):
    """A random dump: index targets (with background, ignore and out-of-range labels), soft or
    one-hot targets, an optional row or element mask, and a few non-finite logits."""
    rows, classes = draw(st.integers(1, 40)), draw(st.integers(1, 6))
    logits = draw(arrays(np.float32, (rows, classes), elements=st.floats(-30, 30, width=32)))
    encoding = draw(st.sampled_from(["index", "soft", "onehot"]))
    if encoding == "index":
        targets = draw(arrays(np.int64, (rows,), elements=st.sampled_from([*range(classes), classes, -1, 99])))
        mask_shape = (rows,)
    else:
        targets = draw(arrays(np.float32, (rows, classes), elements=st.sampled_from([0.0, 1.0]) if encoding == "onehot" else st.floats(0, 1, width=32)))
        mask_shape = draw(st.sampled_from([(rows,), (rows, classes)]))
    arrays_ = {"logits": logits, "targets": targets}
    if draw(st.booleans()):
        arrays_["mask"] = draw(arrays(np.uint8, mask_shape, elements=st.sampled_from([0, 1, 1, 1])))
    if draw(st.booleans()):
        logits.reshape(-1)[draw(st.integers(0, logits.size - 1))] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    return arrays_, encoding


@settings(max_examples=40, deadline=None, derandomize=True, database=None)
@given(dump=dumps(), chunk_rows=st.integers(1, 50), workers=st.integers(1, 3))
@example(dump=({"logits": np.array([[10.0]], dtype=np.float32), "targets": np.array([0])}, "index"), chunk_rows=1, workers=1)  # 1 - p of a confident positive
@example(dump=({"logits": np.full((1, 3), 2.0**-23, dtype=np.float32), "targets": np.array([0])}, "index"), chunk_rows=1, workers=1)  # p at a GHM bin edge
def test_the_streaming_engine_equals_the_full_tensor_tally(tmp_path_factory, dump, chunk_rows, workers):
    """For random dumps, chunk sizes and worker counts, the streaming pass equals the full-tensor
    tally (the oracle), as tests/test_stream.py checks on fixed dumps."""
    from lossaudit.compare.engine.stream import stream_tally
    from lossaudit.compare.settings import LossSettings
    from lossaudit.errors import InputError
    from lossaudit.io.dataset import LoadOptions, plan
    from lossaudit.io.readers import read_batches
    from tests.test_stream import ALL_LOSSES, _oracle

    arrays_, encoding = dump
    path = tmp_path_factory.mktemp("dump") / "d.npz"
    np.savez(path, **arrays_)
    options = LoadOptions(targets=encoding)
    settings = LossSettings(losses=ALL_LOSSES if encoding != "index" else tuple(loss for loss in ALL_LOSSES if loss != "centernet"))
    try:
        full = _oracle([path], settings, options)  # float64: torch's float32 BCE cancels (BCE(-8, 0) off by 2e-3 relative)
    except InputError:
        return  # a dump both engines refuse (e.g. every row excluded)
    _agree(stream_tally(plan(read_batches([path]), options), settings, chunk_rows=chunk_rows, workers=workers), full)


def _agree(streamed, full) -> None:
    """Every field equal up to float32 rounding of the *elements*: torch's float32
    binary_cross_entropy_with_logits is off by up to ~2e-5 relative on small losses (hypothesis
    found BCE(-6, 0) = 0.00247574 against the exact 0.00247569), so single small elements are
    compared against the scale of the field, not their own."""
    from dataclasses import fields

    for field in fields(full):
        expected, got = getattr(full, field.name), getattr(streamed, field.name)
        if expected is None and field.name in ("mistakes", "focal_parts"):  # the oracle leaves them out
            continue
        pairs = [(f"{field.name}[{key}]", expected[key], got[key]) for key in expected] if isinstance(expected, dict) else [(field.name, expected, got)]
        for name, want, have in pairs:
            if isinstance(want, str):
                assert have == want, name
                continue
            want, have = np.asarray(want, dtype=np.float64), np.asarray(have, dtype=np.float64)
            scale = float(np.nanmax(np.abs(want))) if want.size and np.isfinite(want).any() else 1.0
            np.testing.assert_allclose(have, want, rtol=1e-4, atol=1e-6 * max(scale, 1e-3), err_msg=name)
