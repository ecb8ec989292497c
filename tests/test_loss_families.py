"""The focal-loss families (QFL, DFL, VFL, ASL, class-balanced, logit-adjusted, Poly-1, label
smoothing) against independent computation, and the properties their papers state.

Oracles are written here in float64 numpy from each reference's published code: mmdet's
``quality_focal_loss``, ``distribution_focal_loss`` and ``varifocal_loss``; timm's
``AsymmetricLossMultiLabel`` (timm needs torchvision, which has no wheel here, so its forward is
transcribed in probability space exactly as timm computes it: clamp to eps, then log); the
class-balanced code of Cui et al.; the Poly-1 functions printed in the PolyLoss paper; fairseq's
label smoothing. PyTorch's own ``F.cross_entropy(weight=, label_smoothing=)`` is the peer for the
softmax ones.
"""

from __future__ import annotations

import doctest
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from lossaudit import losses

SEEDS = (0, 1, 2)
SHAPES = ((64, 5), (7, 1), (33, 12))
TOLERANCE = {torch.float32: dict(rtol=1e-5, atol=1e-6), torch.float64: dict(rtol=1e-9, atol=1e-12)}
LOSSES_PAGE = (Path(__file__).resolve().parent.parent / "docs" / "losses.md").read_text()


# --- float64 numpy oracles --------------------------------------------------------------------


def _np(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().double().numpy()


def _sigmoid(x: np.ndarray) -> np.ndarray:
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


def _bce(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0) - x * y + np.log1p(np.exp(-np.abs(x)))


def _log_softmax(x: np.ndarray) -> np.ndarray:
    shifted = x - x.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def _reduce(loss: np.ndarray, reduction: str, count: float | None = None) -> np.ndarray:
    if reduction == "none":
        return loss
    return loss.sum() / (1 if reduction == "sum" else (loss.size if count is None else count))


def _close(got: torch.Tensor, expected: np.ndarray, dtype=torch.float64) -> None:
    np.testing.assert_allclose(_np(got), expected, **TOLERANCE[dtype])


def _batch(seed: int, shape=(64, 5), dtype=torch.float64, scale: float = 3.0):
    """Logits, soft IoU-like targets (0 on ~70% of elements) and class indices."""
    generator = torch.Generator().manual_seed(seed)
    n, c = shape
    logits = (torch.randn(n, c, generator=generator, dtype=torch.float64) * scale).to(dtype)
    quality = torch.rand(n, c, generator=generator, dtype=torch.float64)
    soft = (quality * (torch.rand(n, c, generator=generator, dtype=torch.float64) < 0.3)).to(dtype)
    labels = torch.randint(0, c, (n,), generator=generator)
    return logits, soft, labels


# --- QFL ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed,shape", list(zip(SEEDS, SHAPES)))
@pytest.mark.parametrize("beta", [0.0, 1.0, 2.0, 2.5])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_qfl_matches_mmdet(seed, shape, beta, reduction, dtype):
    """mmdet: every element BCE(x, 0) * p**beta, then positives (y != 0) replaced by
    BCE(x, y) * |y - p|**beta; 'mean' averages the per-anchor class sums over anchors."""
    logits, soft, _ = _batch(seed, shape, dtype)
    x, y = _np(logits), _np(soft)
    p = _sigmoid(x)
    loss = _bce(x, np.zeros_like(x)) * p**beta
    pos = y != 0
    loss[pos] = _bce(x[pos], y[pos]) * np.abs(y[pos] - p[pos]) ** beta
    expected = loss if reduction == "none" else _reduce(loss.sum(axis=1), reduction)
    _close(losses.qfl(logits, soft, beta=beta, reduction=reduction), expected, dtype)


@pytest.mark.parametrize("y", [0.0, 0.05, 0.3, 0.5, 0.77, 0.95, 1.0])
def test_qfl_minimum_is_at_sigmoid_equal_target(y):
    """Scanning x: the loss is least where sigmoid(x) = y (GFL), and is 0 there."""
    x = torch.linspace(-14, 14, 28001, dtype=torch.float64).unsqueeze(1)
    loss = losses.qfl(x, torch.full_like(x, y), reduction="none").squeeze(1)
    best = int(loss.argmin())
    assert float(torch.sigmoid(x[best])) == pytest.approx(y, abs=1e-3)
    assert float(loss[best]) < 1e-6 and bool((loss >= 0).all())


# --- DFL ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("bins", [2, 5, 17])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dfl_matches_mmdet(seed, bins, reduction, dtype):
    """mmdet (and ultralytics): l = floor(y), r = l + 1, CE(x, l) * (r - y) + CE(x, r) * (y - l),
    for targets below the last bin (mmdet and ultralytics clamp them there)."""
    generator = torch.Generator().manual_seed(seed)
    logits = (torch.randn(40, bins, generator=generator, dtype=torch.float64) * 3).to(dtype)
    targets = (torch.rand(40, generator=generator, dtype=torch.float64) * (bins - 1) * 0.999).to(dtype)
    targets[:3] = torch.tensor([0.0, 1.0, 0.5], dtype=dtype).clamp(max=bins - 1.01)  # integer and half-way targets
    log_q, y = _log_softmax(_np(logits)), _np(targets)
    left = np.floor(y).astype(int)
    rows = np.arange(len(y))
    expected = -log_q[rows, left] * (left + 1 - y) - log_q[rows, left + 1] * (y - left)
    _close(losses.dfl(logits, targets, reduction=reduction), _reduce(expected, reduction), dtype)


def test_dfl_target_on_the_last_bin_is_its_cross_entropy():
    logits = torch.randn(6, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    targets = torch.tensor([3.0, 3.0, 0.0, 2.0, 1.0, 3.0], dtype=torch.float64)
    expected = -_log_softmax(_np(logits))[np.arange(6), _np(targets).astype(int)]
    _close(losses.dfl(logits, targets, reduction="none"), expected)


@pytest.mark.parametrize("y", [0.1, 0.5, 0.73])
def test_dfl_two_bin_minimum_is_the_linear_split(y):
    """With bins 0 and 1, q_1 = sigmoid(t) for logits (0, t): the loss is least at q_1 = y."""
    t = torch.linspace(-10, 10, 20001, dtype=torch.float64)
    logits = torch.stack([torch.zeros_like(t), t], dim=1)
    loss = losses.dfl(logits, torch.full_like(t, y), reduction="none")
    assert float(torch.sigmoid(t[int(loss.argmin())])) == pytest.approx(y, abs=1e-3)


@pytest.mark.parametrize("y", [0.25, 3.6, 6.5, 9.999])  # between bins: an integer y is approached, not reached
def test_dfl_minimum_is_the_split_between_the_two_nearest_bins(y):
    """Over B = 11 bins, the distribution with mass (r - y, y - l) on the two bins around y (the
    rest ~0) is a stationary point whose loss is the entropy of that split, the least a
    cross-entropy against it can be (Gibbs); moving away raises the loss; its mean bin is y."""
    bins, left = 11, min(int(math.floor(y)), 9)
    split = np.full(bins, 1e-30)
    split[left], split[left + 1] = left + 1 - y, y - left
    logits = torch.tensor(np.log(np.maximum(split, 1e-30)), dtype=torch.float64).unsqueeze(0).requires_grad_()
    target = torch.tensor([y], dtype=torch.float64)
    loss = losses.dfl(logits, target)
    loss.backward()
    loss = float(loss.detach())
    mass = split[split > 1e-20]
    assert loss == pytest.approx(float(-(mass * np.log(mass)).sum()), abs=1e-9)
    assert float(logits.grad.abs().max()) < 1e-9
    q = torch.softmax(logits.detach(), dim=1)[0]
    assert float((q * torch.arange(bins)).sum()) == pytest.approx(y, abs=1e-9)
    generator = torch.Generator().manual_seed(0)
    for _ in range(20):
        moved = logits.detach() + 0.1 * torch.randn(1, bins, generator=generator, dtype=torch.float64)
        assert float(losses.dfl(moved, target)) > loss


# --- VFL ---------------------------------------------------------------------------------------


def _vfl_oracle(x: np.ndarray, q: np.ndarray, alpha: float, gamma: float) -> np.ndarray:
    """mmdet ``varifocal_loss`` (iou_weighted): weight q where q > 0, alpha * |p - q|**gamma where q <= 0."""
    p = _sigmoid(x)
    weight = q * (q > 0) + alpha * np.abs(p - q) ** gamma * (q <= 0)
    return _bce(x, q) * weight


@pytest.mark.parametrize("seed,shape", list(zip(SEEDS, SHAPES)))
@pytest.mark.parametrize("alpha,gamma", [(0.75, 2.0), (0.25, 1.0), (1.0, 0.0), (0.5, 3.5)])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_vfl_matches_mmdet(seed, shape, alpha, gamma, reduction, dtype):
    logits, soft, _ = _batch(seed, shape, dtype)
    expected = _reduce(_vfl_oracle(_np(logits), _np(soft), alpha, gamma), reduction)
    _close(losses.vfl(logits, soft, alpha=alpha, gamma=gamma, reduction=reduction), expected, dtype)


@pytest.mark.parametrize("detach_weight", [False, True])
def test_vfl_gradient_follows_the_chosen_convention(detach_weight):
    """d/dx of w * BCE(x, q) is w * (p - q), plus, unless w is detached, BCE(x, 0) times
    d/dx (alpha p**gamma) = alpha gamma p**gamma (1 - p) on the negatives (mmdet)."""
    logits, soft, _ = _batch(4)
    losses.vfl(logits.requires_grad_(), soft, reduction="sum", detach_weight=detach_weight).backward()
    x, q = _np(logits), _np(soft)
    p, alpha, gamma = _sigmoid(x), 0.75, 2.0
    weight = np.where(q > 0, q, alpha * p**gamma)
    expected = weight * (p - q)
    if not detach_weight:
        expected += np.where(q > 0, 0.0, alpha * gamma * p**gamma * (1 - p) * _bce(x, np.zeros_like(x)))
    _close(logits.grad, expected)
    with torch.no_grad():
        assert float(losses.vfl(logits, soft, detach_weight=detach_weight)) == pytest.approx(float(losses.vfl(logits, soft)), rel=1e-12)


# --- ASL ---------------------------------------------------------------------------------------


def _asl_timm(x: np.ndarray, y: np.ndarray, gamma_neg=4.0, gamma_pos=1.0, clip=0.05, eps=1e-8) -> np.ndarray:
    """timm ``AsymmetricLossMultiLabel.forward`` in float64, element by element (timm returns
    ``-loss.sum()``): probability space, clip shift, clamp to eps, then log."""
    xs_pos = _sigmoid(x)
    xs_neg = 1 - xs_pos
    if clip is not None and clip > 0:
        xs_neg = np.minimum(xs_neg + clip, 1)
    loss = y * np.log(np.maximum(xs_pos, eps)) + (1 - y) * np.log(np.maximum(xs_neg, eps))
    if gamma_neg > 0 or gamma_pos > 0:
        pt = xs_pos * y + xs_neg * (1 - y)
        loss = loss * np.power(1 - pt, gamma_pos * y + gamma_neg * (1 - y))
    return -loss


@pytest.mark.parametrize("seed,shape", list(zip(SEEDS, SHAPES)))
@pytest.mark.parametrize("gamma_pos,gamma_neg,clip,eps", [(1.0, 4.0, 0.05, 1e-8), (0.0, 2.0, 0.2, 1e-8), (2.0, 2.0, 0.0, 0.0), (0.5, 1.5, 0.1, 1e-3)])
@pytest.mark.parametrize("hard", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_asl_matches_timm(seed, shape, gamma_pos, gamma_neg, clip, eps, hard, dtype):
    logits, soft, _ = _batch(seed, shape, dtype)
    targets = (soft > 0).to(dtype) if hard else soft
    expected = _asl_timm(_np(logits), _np(targets), gamma_neg, gamma_pos, clip, eps)
    got = losses.asl(logits, targets, gamma_pos, gamma_neg, clip, eps, reduction="none")
    _close(got, expected, dtype)
    _close(losses.asl(logits, targets, gamma_pos, gamma_neg, clip, eps), expected.sum(), dtype)  # timm's -loss.sum()
    _close(losses.asl(logits, targets, gamma_pos, gamma_neg, clip, eps, reduction="mean"), expected.mean(), dtype)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    arrays(np.float32, st.tuples(st.integers(1, 16), st.integers(1, 6)), elements=st.floats(-40, 40, width=32)),
    st.sampled_from([0.0, 0.5, 1.0, 2.0]),
    st.sampled_from([0.0, 1.0, 4.0]),
    st.sampled_from([0.0, 0.05, 0.3]),
    st.sampled_from([0.0, 1e-8, 1e-4]),
    st.data(),
)
def test_asl_is_timm_for_any_batch(logits, gamma_pos, gamma_neg, clip, eps, data):
    """float32 logits up to ±40 against timm's float64 forward. Without the eps floor timm's
    probability-space log reaches log(0) = -inf once 1 - p rounds to 0 (|x| > ~37) while the
    logsigmoid form stays finite, so eps = 0 is drawn with |x| <= 15 only."""
    targets = data.draw(arrays(np.float32, logits.shape, elements=st.sampled_from([0.0, 1.0])))
    if eps == 0:
        logits = np.clip(logits, -15, 15)
    got = losses.asl(torch.from_numpy(logits), torch.from_numpy(targets), gamma_pos, gamma_neg, clip, eps, reduction="none")
    expected = _asl_timm(logits.astype(np.float64), targets.astype(np.float64), gamma_neg, gamma_pos, clip, eps)
    np.testing.assert_allclose(_np(got), expected, rtol=2e-5, atol=1e-6)


def test_asl_eps_floors_the_probabilities_as_timm():
    """Far from the target, timm's clamp caps each log at log(eps): a positive at x = -40
    (p ~ 4e-18) costs -log(1e-8) * (1 - p)**1 = 18.42."""
    logits = torch.tensor([[-40.0, 40.0]], dtype=torch.float64)
    targets = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    got = losses.asl(logits, targets, clip=0.0, reduction="none")
    _close(got, _asl_timm(_np(logits), _np(targets), clip=0.0))
    assert float(got[0, 0]) == pytest.approx(-math.log(1e-8), rel=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("eps", [0.0, 1e-8])
def test_asl_without_focusing_or_clip_is_bce(seed, eps):
    logits, soft, _ = _batch(seed)
    for targets in (soft, (soft > 0).double()):
        got = losses.asl(logits, targets, gamma_pos=0, gamma_neg=0, clip=0, eps=eps, reduction="mean")
        _close(got, _bce(_np(logits), _np(targets)).mean())
        torch.testing.assert_close(got, losses.bce(logits, targets), rtol=1e-12, atol=0)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("gamma", [0.5, 1.0, 2.0, 4.0])
def test_asl_with_equal_exponents_and_no_clip_is_focal_without_alpha(seed, gamma):
    logits, soft, _ = _batch(seed)
    for targets in (soft, (soft > 0).double()):
        got = losses.asl(logits, targets, gamma_pos=gamma, gamma_neg=gamma, clip=0, eps=0, reduction="none")
        torch.testing.assert_close(got, losses.focal(logits, targets, alpha=-1, gamma=gamma), rtol=1e-10, atol=1e-14)


def test_asl_negatives_below_the_clip_cost_nothing():
    p = torch.tensor([[0.01, 0.049, 0.051, 0.5]], dtype=torch.float64)
    got = losses.asl(torch.logit(p), torch.zeros_like(p), clip=0.05, reduction="none")[0]
    assert got[:2].tolist() == [0.0, 0.0] and bool((got[2:] > 0).all())


@pytest.mark.parametrize("seed", SEEDS)
def test_asl_detached_weight_gradient(seed):
    """With the focusing weight a constant W (Alibaba-MIIL's disable_torch_grad_focal_loss), the
    gradient is that of -(y log p + (1 - y) log(1 - p_m)) * W with W computed here."""
    logits, soft, _ = _batch(seed)
    targets = (soft > 0).double()
    x, y = _np(logits), _np(targets)
    p_m = np.maximum(_sigmoid(x) - 0.05, 0)
    weight = torch.tensor(((1 - _sigmoid(x)) * y + p_m * (1 - y)) ** (1.0 * y + 4.0 * (1 - y)))
    reference = logits.clone().requires_grad_()
    shifted = (torch.sigmoid(reference) - 0.05).clamp(min=0)
    (-(targets * F.logsigmoid(reference) + (1 - targets) * torch.log1p(-shifted)) * weight).sum().backward()
    ours = logits.clone().requires_grad_()
    losses.asl(ours, targets, detach_weight=True).backward()
    torch.testing.assert_close(ours.grad, reference.grad, rtol=1e-10, atol=1e-14)
    undetached = logits.clone().requires_grad_()
    losses.asl(undetached, targets).backward()
    assert not torch.allclose(undetached.grad, reference.grad)


# --- class-balanced ----------------------------------------------------------------------------


def _cb_weights(counts, beta: float) -> np.ndarray:
    """Cui et al.'s code: (1 - beta) / (1 - beta**n), normalised to sum to the number of classes."""
    counts = np.asarray(counts, dtype=np.float64)
    weights = (1.0 - beta) / (1.0 - np.power(beta, counts))
    return weights / weights.sum() * len(counts)


COUNTS = {5: [500, 120, 40, 9, 1], 1: [17], 12: [3000, 1000, 700, 400, 200, 90, 50, 20, 10, 5, 2, 1]}


@pytest.mark.parametrize("counts", list(COUNTS.values()))
@pytest.mark.parametrize("beta", [0.0, 0.9, 0.99, 0.9999])
def test_class_balanced_weights_match_cui(counts, beta):
    _close(losses.class_balanced_weights(counts, beta), _cb_weights(counts, beta))


def test_class_balanced_weights_tend_to_inverse_frequency():
    counts = [1000, 100, 10]
    weights = losses.class_balanced_weights(counts, beta=1 - 1e-9)
    inverse = 1 / np.array(counts, dtype=np.float64)
    np.testing.assert_allclose(_np(weights), inverse / inverse.sum() * 3, rtol=1e-5)


@pytest.mark.parametrize("seed,shape", list(zip(SEEDS, SHAPES)))
@pytest.mark.parametrize("beta", [0.0, 0.9, 0.999])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_cb_ce_matches_weighted_cross_entropy(seed, shape, beta, reduction):
    logits, _, labels = _batch(seed, shape)
    counts = COUNTS[shape[1]]
    weights = _cb_weights(counts, beta)
    rows = -weights[labels.numpy()] * _log_softmax(_np(logits))[np.arange(len(labels)), labels.numpy()]
    got = losses.cb(logits, labels, counts, beta=beta, reduction=reduction)
    _close(got, _reduce(rows, reduction))
    if reduction == "sum":  # torch's weighted CE agrees on the sum (its 'mean' divides by Σ w_y)
        torch.testing.assert_close(got, F.cross_entropy(logits, labels, weight=torch.tensor(weights), reduction="sum"))


def test_cb_ce_weights_each_class_term_of_soft_targets():
    """With (N, C) class probabilities, each term y_c * -log q_c carries its own w_c (as
    F.cross_entropy(weight=) does for probability targets)."""
    logits, soft, _ = _batch(5)
    probs = torch.softmax(soft * 3, dim=1)
    weights = _cb_weights(COUNTS[5], 0.999)
    expected = -(weights * _np(probs) * _log_softmax(_np(logits))).sum(axis=1)
    _close(losses.cb(logits, probs, COUNTS[5], beta=0.999, reduction="none"), expected)


@pytest.mark.parametrize("seed,shape", list(zip(SEEDS, SHAPES)))
@pytest.mark.parametrize("beta,gamma", [(0.0, 2.0), (0.99, 2.0), (0.9999, 0.5), (0.9, 0.0)])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_cb_focal_matches_cui(seed, shape, beta, gamma, reduction):
    """The paper's CB focal loss: w_y * Σ_c (1 - p_t)**gamma * BCE over the one-hot row, no alpha."""
    logits, _, labels = _batch(seed, shape)
    counts = COUNTS[shape[1]]
    x = _np(logits)
    y = np.eye(shape[1])[labels.numpy()]
    p = _sigmoid(x)
    p_t = p * y + (1 - p) * (1 - y)
    elements = _cb_weights(counts, beta)[labels.numpy()][:, None] * (1 - p_t) ** gamma * _bce(x, y)
    got = losses.cb(logits, labels, counts, beta=beta, base="focal", gamma=gamma, reduction=reduction)
    _close(got, _reduce(elements, reduction, count=shape[0]))


@pytest.mark.parametrize("seed", SEEDS)
def test_cb_with_beta_zero_is_unweighted(seed):
    logits, _, labels = _batch(seed)
    counts = COUNTS[5]
    torch.testing.assert_close(losses.cb(logits, labels, counts, beta=0.0), losses.ce(logits, labels), rtol=1e-12, atol=0)
    one_hot = F.one_hot(labels, 5).double()
    torch.testing.assert_close(
        losses.cb(logits, labels, counts, beta=0.0, base="focal", reduction="sum"),
        losses.focal(logits, one_hot, alpha=-1, reduction="sum"),
        rtol=1e-12,
        atol=0,
    )


@pytest.mark.parametrize("base", ["ce", "focal"])
def test_cb_skips_ignored_rows(base):
    logits, _, labels = _batch(7)
    ignored = labels.clone()
    ignored[::3] = -100
    kept = ignored != -100
    got = losses.cb(logits, ignored, COUNTS[5], beta=0.99, base=base, reduction="none")
    assert float(got[~kept].abs().sum()) == 0
    full = losses.cb(logits[kept], labels[kept], COUNTS[5], beta=0.99, base=base)
    torch.testing.assert_close(losses.cb(logits, ignored, COUNTS[5], beta=0.99, base=base), full, rtol=1e-12, atol=0)


# --- logit adjustment --------------------------------------------------------------------------


@pytest.mark.parametrize("seed,shape", list(zip(SEEDS, SHAPES)))
@pytest.mark.parametrize("tau", [0.0, 0.5, 1.0, 2.0])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_logit_adjusted_ce_matches_its_formula(seed, shape, tau, reduction):
    logits, _, labels = _batch(seed, shape)
    counts = np.array(COUNTS[shape[1]], dtype=np.float64)
    adjusted = _np(logits) + tau * np.log(counts / counts.sum())
    rows = -_log_softmax(adjusted)[np.arange(len(labels)), labels.numpy()]
    _close(losses.logit_adjusted_ce(logits, labels, COUNTS[shape[1]], tau=tau, reduction=reduction), _reduce(rows, reduction))


@pytest.mark.parametrize("seed", SEEDS)
def test_logit_adjustment_at_tau_one_is_balanced_softmax(seed):
    """Ren et al.: -log(n_y exp(x_y) / Σ_c n_c exp(x_c)), written directly."""
    logits, _, labels = _batch(seed, (20, 5), scale=1.0)
    counts = np.array(COUNTS[5], dtype=np.float64)
    weighted = counts * np.exp(_np(logits))
    expected = -np.log(weighted[np.arange(20), labels.numpy()] / weighted.sum(axis=1))
    _close(losses.logit_adjusted_ce(logits, labels, COUNTS[5], reduction="none"), expected)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("count", [1, 7, 1000])
def test_logit_adjustment_with_a_uniform_prior_is_ce(seed, count):
    logits, soft, labels = _batch(seed)
    for targets in (labels, torch.softmax(soft * 4, dim=1)):
        got = losses.logit_adjusted_ce(logits, targets, [count] * 5, tau=1.5, reduction="none")
        torch.testing.assert_close(got, losses.ce(logits, targets, reduction="none"), rtol=1e-10, atol=1e-12)


# --- Poly-1 ------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed,shape", list(zip(SEEDS, SHAPES)))
@pytest.mark.parametrize("epsilon", [-1.0, 0.0, 1.0, 2.0])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_poly1_ce_matches_the_paper(seed, shape, epsilon, reduction, dtype):
    """PolyLoss paper: pt = Σ labels * softmax(logits); CE + epsilon * (1 - pt); both for class
    indices (one-hot labels) and soft labels."""
    logits, soft, labels = _batch(seed, shape, dtype)
    probs = torch.softmax(soft.double() * 3, dim=1).to(dtype)
    for targets, y in ((labels, np.eye(shape[1])[labels.numpy()]), (probs, _np(probs))):
        log_q = _log_softmax(_np(logits))
        rows = -(y * log_q).sum(axis=1) + epsilon * (1 - (y * np.exp(log_q)).sum(axis=1))
        _close(losses.poly1(logits, targets, epsilon=epsilon, reduction=reduction), _reduce(rows, reduction), dtype)


@pytest.mark.parametrize("seed,shape", list(zip(SEEDS, SHAPES)))
@pytest.mark.parametrize("epsilon,gamma,alpha", [(1.0, 2.0, 0.25), (-1.0, 1.5, -1), (3.0, 0.0, 0.5)])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_poly1_focal_matches_the_paper(seed, shape, epsilon, gamma, alpha, reduction):
    """PolyLoss paper: FL (alpha-weighted) + epsilon * (1 - pt)**(gamma + 1), the term not weighted."""
    logits, soft, _ = _batch(seed, shape)
    x, y = _np(logits), _np(soft)
    p = _sigmoid(x)
    p_t = p * y + (1 - p) * (1 - y)
    alpha_t = 1.0 if alpha < 0 else alpha * y + (1 - alpha) * (1 - y)
    expected = alpha_t * (1 - p_t) ** gamma * _bce(x, y) + epsilon * (1 - p_t) ** (gamma + 1)
    got = losses.poly1(logits, soft, epsilon=epsilon, base="focal", gamma=gamma, alpha=alpha, reduction=reduction)
    _close(got, _reduce(expected, reduction))


@pytest.mark.parametrize("seed", SEEDS)
def test_poly1_with_epsilon_zero_is_its_base(seed):
    logits, soft, labels = _batch(seed)
    torch.testing.assert_close(losses.poly1(logits, labels, epsilon=0), losses.ce(logits, labels), rtol=1e-12, atol=0)
    torch.testing.assert_close(losses.poly1(logits, soft, epsilon=0, base="focal", reduction="none"), losses.focal(logits, soft), rtol=1e-12, atol=0)


def test_poly1_skips_ignored_rows():
    logits, _, labels = _batch(8)
    ignored = labels.clone()
    ignored[1::2] = -100
    kept = ignored != -100
    rows = losses.poly1(logits, ignored, reduction="none")
    assert float(rows[~kept].abs().sum()) == 0
    torch.testing.assert_close(losses.poly1(logits, ignored), losses.poly1(logits[kept], labels[kept]), rtol=1e-12, atol=0)


# --- label smoothing ---------------------------------------------------------------------------


@pytest.mark.parametrize("seed,shape", list(zip(SEEDS, SHAPES)))
@pytest.mark.parametrize("epsilon", [0.0, 0.1, 0.35, 1.0])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_ls_ce_matches_pytorch(seed, shape, epsilon, reduction, dtype):
    logits, soft, labels = _batch(seed, shape, dtype)
    ignored = labels.clone()
    ignored[::5] = -100
    probs = torch.softmax(soft * 3, dim=1)
    for targets in (labels, ignored, probs):
        expected = F.cross_entropy(logits, targets, label_smoothing=epsilon, reduction=reduction)
        torch.testing.assert_close(losses.ls_ce(logits, targets, epsilon, reduction), expected, **TOLERANCE[dtype])


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("epsilon", [0.1, 0.3])
def test_ls_ce_matches_its_formula(seed, epsilon):
    """(1 - epsilon) CE + epsilon * mean over the C classes of -log q_c."""
    logits, _, labels = _batch(seed)
    log_q = _log_softmax(_np(logits))
    expected = -(1 - epsilon) * log_q[np.arange(64), labels.numpy()] - epsilon * log_q.mean(axis=1)
    _close(losses.ls_ce(logits, labels, epsilon, reduction="none"), expected)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("classes", [2, 5, 12])
def test_ls_ce_gives_the_fairseq_convention_with_rescaled_epsilon(seed, classes):
    """fairseq: 1 - epsilon on the true class, epsilon / (C - 1) on each other; this function
    with epsilon * C / (C - 1) is the same loss, as its docstring says."""
    logits, _, labels = _batch(seed, (30, classes))
    epsilon = 0.1
    target = np.full((30, classes), epsilon / (classes - 1))
    target[np.arange(30), labels.numpy()] = 1 - epsilon
    expected = -(target * _log_softmax(_np(logits))).sum(axis=1)
    _close(losses.ls_ce(logits, labels, epsilon * classes / (classes - 1), reduction="none"), expected)


@pytest.mark.parametrize("seed", SEEDS)
def test_ls_ce_with_epsilon_zero_is_ce(seed):
    logits, _, labels = _batch(seed)
    torch.testing.assert_close(losses.ls_ce(logits, labels, 0.0, "none"), losses.ce(logits, labels, "none"), rtol=1e-12, atol=0)


# --- every family: extreme logits, gradcheck, validation, docs --------------------------------


def _families(dtype):
    """Each family at its defaults and at a non-default setting: name -> loss of (logits, soft, labels)."""
    generator = torch.Generator().manual_seed(11)
    bins_target = (torch.rand(6, generator=generator, dtype=torch.float64) * 4).to(dtype)
    counts = COUNTS[5]
    return {
        "qfl": lambda x, y, k: losses.qfl(x, y),
        "qfl beta 1.5": lambda x, y, k: losses.qfl(x, y, beta=1.5),
        "dfl": lambda x, y, k: losses.dfl(x, bins_target),
        "vfl": lambda x, y, k: losses.vfl(x, y),
        "vfl detached": lambda x, y, k: losses.vfl(x, y, detach_weight=True),
        "asl": lambda x, y, k: losses.asl(x, y),
        "asl no clip": lambda x, y, k: losses.asl(x, y, clip=0.0, eps=0.0),
        "asl detached": lambda x, y, k: losses.asl(x, y, gamma_pos=2, detach_weight=True),
        "cb ce": lambda x, y, k: losses.cb(x, k, counts, beta=0.99),
        "cb focal": lambda x, y, k: losses.cb(x, k, counts, beta=0.99, base="focal"),
        "logit-adjusted-ce": lambda x, y, k: losses.logit_adjusted_ce(x, k, counts, tau=1.3),
        "poly1 ce": lambda x, y, k: losses.poly1(x, k, epsilon=2.0),
        "poly1 focal": lambda x, y, k: losses.poly1(x, y, epsilon=1.0, base="focal"),
        "ls-ce": lambda x, y, k: losses.ls_ce(x, k, 0.2),
    }


FAMILY_CASES = sorted(_families(torch.float64))


@pytest.mark.parametrize("name", FAMILY_CASES)
def test_logits_of_100_give_finite_values_and_gradients(name):
    loss = _families(torch.float32)[name]
    logits = torch.tensor([[100.0, -100.0, 100.0, -100.0, 0.0]] * 3 + [[-100.0, 100.0, -100.0, 100.0, 50.0]] * 3).requires_grad_()
    soft = torch.tensor([[1.0, 0.0, 0.0, 0.7, 0.0], [0.0, 1.0, 0.3, 0.0, 1.0], [0.0] * 5] * 2)
    labels = torch.tensor([0, 1, 2, 3, 4, 0])
    value = loss(logits, soft, labels)
    value.backward()
    value = value.detach()
    assert value.dtype == torch.float32 and bool(torch.isfinite(value)) and float(value) >= 0
    assert bool(torch.isfinite(logits.grad).all())


@pytest.mark.parametrize("name", [name for name in FAMILY_CASES if "detached" not in name])
def test_gradients_agree_with_autograd_gradcheck(name):
    """Finite differences of the loss against autograd (a detached weight departs from finite
    differences by design; those gradients are checked against their formulas above)."""
    loss = _families(torch.float64)[name]
    logits, soft, labels = _batch(3, (6, 5), scale=1.5)
    assert torch.autograd.gradcheck(lambda x: loss(x, soft, labels), (logits.requires_grad_(),), eps=1e-6, atol=1e-6)


LOGITS, SOFT, LABELS = _batch(0, (4, 3))
COUNTS_3 = [10, 5, 1]


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: losses.qfl(LOGITS, SOFT[:, :2]), r"targets has shape \(4, 2\) but logits has shape \(4, 3\)"),
        (lambda: losses.qfl(LOGITS, SOFT + 1.5), r"targets must lie in \[0, 1\]"),
        (lambda: losses.qfl(LOGITS, SOFT, beta=-1), "beta must be >= 0"),
        (lambda: losses.qfl(LOGITS, SOFT, reduction="avg"), "reduction must be one of"),
        (lambda: losses.dfl(LOGITS, SOFT), r"dfl needs \(N, B\) logits"),
        (lambda: losses.dfl(LOGITS[:, :1], LABELS.double()), "B >= 2 bins"),
        (lambda: losses.dfl(LOGITS, torch.tensor([0.0, 1.0, 2.5, 0.2], dtype=torch.float64)), r"targets must lie in \[0, 2\]"),
        (lambda: losses.vfl(LOGITS, -SOFT - 0.1), r"targets must lie in \[0, 1\]"),
        (lambda: losses.vfl(LOGITS, SOFT, alpha=-0.5), "alpha and gamma must be >= 0"),
        (lambda: losses.asl(LOGITS, SOFT, gamma_neg=-1), "gamma_pos and gamma_neg must be >= 0"),
        (lambda: losses.asl(LOGITS, SOFT, clip=1.0), r"clip and eps must lie in \[0, 1\)"),
        (lambda: losses.asl(LOGITS, SOFT, eps=-1e-8), r"clip and eps must lie in \[0, 1\)"),
        (lambda: losses.asl(LOGITS, SOFT.T), "targets has shape"),
        (lambda: losses.class_balanced_weights(COUNTS_3, beta=1.0), r"beta must lie in \[0, 1\)"),
        (lambda: losses.class_balanced_weights([[1, 2]], beta=0.9), "class_counts has shape"),
        (lambda: losses.cb(LOGITS, LABELS, [10, 0, 1]), "class 1 has 0.0"),
        (lambda: losses.cb(LOGITS, LABELS, [10, 5]), r"class_counts has shape \(2,\); expected \(3,\)"),
        (lambda: losses.cb(LOGITS, LABELS, COUNTS_3, base="softmax"), "base must be 'ce'"),
        (lambda: losses.cb(LOGITS, SOFT, COUNTS_3, base="focal"), r"needs \(4,\) class indices"),
        (lambda: losses.cb(LOGITS, torch.tensor([0, 1, 2, 3]), COUNTS_3), r"class indices must be in \[0, 3\)"),
        (lambda: losses.logit_adjusted_ce(LOGITS, LABELS, [1.0, float("nan"), 2.0]), "class 1 has nan"),
        (lambda: losses.poly1(LOGITS, LABELS, epsilon=-1.5), "epsilon must be >= -1"),
        (lambda: losses.poly1(LOGITS, LABELS, base="focal"), "targets has shape"),
        (lambda: losses.ls_ce(LOGITS, LABELS, 1.2), r"epsilon must lie in \[0, 1\]"),
        (lambda: losses.ls_ce(LOGITS, LABELS, reduction="avg"), "reduction must be one of"),
    ],
)
def test_bad_arguments_raise_actionable_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


NEW_FUNCTIONS = ("qfl", "dfl", "vfl", "asl", "class_balanced_weights", "cb", "logit_adjusted_ce", "poly1", "ls_ce")


@pytest.mark.parametrize("name", NEW_FUNCTIONS)
def test_docstring_example_runs(name):
    function = getattr(losses, name)
    (test,) = doctest.DocTestFinder().find(function, name, globs={"torch": torch, **vars(losses)})
    assert test.examples, f"{name} has no example"
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    runner.run(test)
    assert runner.summarize(verbose=False).failed == 0


def test_family_ids_name_functions_and_are_documented():
    """Each of FAMILY_IDS names a function and has a row in the reference-loss table (docs/losses.md)."""
    for loss in losses.FAMILY_IDS:
        assert callable(getattr(losses, loss.replace("-", "_")))
        assert f"| `{loss}` |" in LOSSES_PAGE


IGNORING = {
    "softmax_focal": lambda x, t: losses.softmax_focal(x, t, ignore_index=-1),
    "ce": lambda x, t: losses.ce(x, t, ignore_index=-1),
    "ls_ce": lambda x, t: losses.ls_ce(x, t, ignore_index=-1),
    "poly1 ce": lambda x, t: losses.poly1(x, t, ignore_index=-1),
    "cb ce": lambda x, t: losses.cb(x, t, [5, 3, 1], ignore_index=-1),
    "cb focal": lambda x, t: losses.cb(x, t, [5, 3, 1], base="focal", ignore_index=-1),
    "logit_adjusted_ce": lambda x, t: losses.logit_adjusted_ce(x, t, [5, 3, 1], ignore_index=-1),
}


@pytest.mark.parametrize("name", IGNORING)
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_logits_at_ignored_rows_change_nothing(name, bad):
    """An ignored row's logits never reach the loss or the gradient (lint FL022): each mean is over
    the rows kept, so the loss equals that of the kept rows alone."""
    torch.manual_seed(0)
    kept = torch.randn(4, 3, dtype=torch.float64)
    labels = torch.tensor([0, 2, 1, 2])
    x = torch.cat([kept, torch.full((2, 3), bad, dtype=torch.float64)]).requires_grad_()
    loss = IGNORING[name](x, torch.cat([labels, torch.tensor([-1, -1])]))
    alone = IGNORING[name](kept, labels)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(x.grad).all()
    assert loss.item() == pytest.approx(alone.item(), rel=1e-12)
    assert (x.grad[4:] == 0).all()
