"""Reference losses against independent implementations: fvcore (torchvision semantics), numpy
formulas written out here, and values derived by hand in the docstrings."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from fvcore.nn import sigmoid_focal_loss as fvcore_focal

from lossaudit import losses

SEEDS = (0, 1, 2)


def _logits_targets(seed: int, n: int = 64, c: int = 5, dtype=torch.float32, soft: bool = False):
    generator = torch.Generator().manual_seed(seed)
    logits = (torch.randn(n, c, generator=generator) * 3).to(dtype)
    if soft:
        targets = torch.rand(n, c, generator=generator).to(dtype)
    else:
        targets = (torch.rand(n, c, generator=generator) < 0.2).to(dtype)
    return logits, targets


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("alpha", [0.25, 0.5, 0.0, 1.0, -1])
@pytest.mark.parametrize("gamma", [0.0, 1.0, 2.0, 3.5])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_focal_matches_fvcore(seed, alpha, gamma, reduction):
    logits, targets = _logits_targets(seed)
    expected = fvcore_focal(logits, targets, alpha=alpha, gamma=gamma, reduction=reduction)
    torch.testing.assert_close(losses.focal(logits, targets, alpha, gamma, reduction), expected, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("dtype,rtol,atol", [(torch.float64, 1e-5, 1e-7), (torch.float16, 2e-2, 1e-4)])
def test_focal_keeps_dtype_and_matches_fvcore(dtype, rtol, atol):
    logits, targets = _logits_targets(3, dtype=dtype)
    ours = losses.focal(logits, targets)
    assert ours.dtype == dtype  # torchvision keeps the input dtype; fvcore casts to float32
    expected = fvcore_focal(logits, targets, alpha=0.25, gamma=2)
    torch.testing.assert_close(ours.float(), expected, rtol=rtol, atol=atol)


def test_focal_soft_targets_match_fvcore():
    logits, targets = _logits_targets(4, soft=True)
    torch.testing.assert_close(losses.focal(logits, targets), fvcore_focal(logits, targets, 0.25, 2.0), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("alpha", [1.5, -0.5, 2])
def test_focal_rejects_alpha_outside_range(alpha):
    logits, targets = _logits_targets(0)
    with pytest.raises(ValueError, match="alpha"):
        losses.focal(logits, targets, alpha=alpha)


@pytest.mark.parametrize("loss", [losses.focal, losses.bce, losses.ghm, losses.ohem])
def test_unknown_reduction_raises(loss):
    logits, targets = _logits_targets(0)
    with pytest.raises(ValueError, match="reduction"):
        loss(logits, targets, reduction="avg")


def test_worked_example_positive_anchor():
    """p = 0.9 on a positive: CE = -ln 0.9 = 0.10536; focal = 0.25 * 0.1**2 * 0.10536 = 0.000263."""
    x = torch.logit(torch.tensor([[0.9]], dtype=torch.float64))
    y = torch.ones(1, 1, dtype=torch.float64)
    assert losses.bce(x, y).item() == pytest.approx(0.1053605, rel=1e-6)
    assert losses.focal(x, y).item() == pytest.approx(0.25 * 0.01 * 0.1053605, rel=1e-6)
    assert losses.focal(x, y).item() == pytest.approx(0.00026, abs=5e-6)


def test_worked_example_negative_anchor():
    """Background probability 0.8 (p = 0.2 for the class): CE = -ln 0.8 = 0.22314;
    focal = 0.75 * 0.2**2 * 0.22314 = 0.0066943."""
    x = torch.logit(torch.tensor([[0.2]], dtype=torch.float64))
    y = torch.zeros(1, 1, dtype=torch.float64)
    assert losses.bce(x, y).item() == pytest.approx(0.2231436, rel=1e-6)
    assert losses.focal(x, y).item() == pytest.approx(0.75 * 0.04 * 0.2231436, rel=1e-6)
    assert losses.focal(x, y).item() == pytest.approx(0.0067, abs=5e-5)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("alpha", [0.25, 0.6])
def test_gamma_zero_is_alpha_weighted_bce(seed, alpha):
    logits, targets = _logits_targets(seed)
    alpha_t = alpha * targets + (1 - alpha) * (1 - targets)
    expected = alpha_t * F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    torch.testing.assert_close(losses.focal(logits, targets, alpha=alpha, gamma=0.0), expected)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("gamma", [0.5, 2.0, 5.0])
def test_focal_over_ce_is_alpha_t_times_modulating_factor(seed, gamma):
    logits, targets = _logits_targets(seed, dtype=torch.float64)
    p = 1 / (1 + np.exp(-logits.numpy()))
    y = targets.numpy()
    p_t = p * y + (1 - p) * (1 - y)
    expected = (0.25 * y + 0.75 * (1 - y)) * (1 - p_t) ** gamma
    ratio = losses.focal(logits, targets, gamma=gamma) / losses.bce(logits, targets, reduction="none")
    np.testing.assert_allclose(ratio.numpy(), expected, rtol=1e-9)


def test_per_class_alpha_vector_equals_scalar_per_column():
    logits, targets = _logits_targets(5)
    alpha = torch.tensor([0.1, 0.25, 0.5, 0.75, 0.9])
    vector = losses.focal(logits, targets, alpha=alpha)
    for c in range(5):
        torch.testing.assert_close(vector[:, c], losses.focal(logits[:, c], targets[:, c], alpha=float(alpha[c])))


@pytest.mark.parametrize("loss", ["focal", "bce", "ghm", "softmax_focal", "ce", "ohem"])
def test_extreme_logits_give_finite_values_and_gradients(loss):
    logits = torch.tensor([[100.0, -100.0, 0.0], [-100.0, 100.0, 50.0]], requires_grad=True)
    targets = torch.tensor([[0.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    arguments = (logits, torch.tensor([1, 0])) if loss in ("softmax_focal", "ce") else (logits, targets)
    value = getattr(losses, loss)(*arguments, reduction="sum")
    value.backward()
    assert torch.isfinite(value)
    assert torch.isfinite(logits.grad).all()


def test_focal_gradient_passes_gradcheck_in_float64():
    logits, targets = _logits_targets(6, n=6, c=3, dtype=torch.float64)
    logits.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: losses.focal(x, targets, reduction="sum"), (logits,))


def _softmax_focal_numpy(logits, labels, gamma, alpha=None):
    """-alpha_y (1 - q_y)^gamma log q_y, written out with numpy in float64."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_q = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    rows = np.arange(len(labels))
    log_q_y = log_q[rows, labels]
    weight = 1.0 if alpha is None else alpha if np.isscalar(alpha) else np.asarray(alpha)[labels]
    return -weight * (1 - np.exp(log_q_y)) ** gamma * log_q_y


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("gamma", [0.0, 2.0])
@pytest.mark.parametrize("alpha", [None, 0.25, [0.1, 0.2, 0.3, 0.2, 0.9]])
def test_softmax_focal_matches_formula(seed, gamma, alpha):
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 3, size=(40, 5))
    labels = rng.integers(0, 5, size=40)
    expected = _softmax_focal_numpy(logits, labels, gamma, alpha)
    ours = losses.softmax_focal(torch.from_numpy(logits), torch.from_numpy(labels), gamma=gamma, alpha=alpha, reduction="none")
    np.testing.assert_allclose(ours.numpy(), expected, rtol=1e-10)
    mean = losses.softmax_focal(torch.from_numpy(logits), torch.from_numpy(labels), gamma=gamma, alpha=alpha)
    assert mean.item() == pytest.approx(expected.mean(), rel=1e-10)


def test_softmax_focal_scalar_alpha_only_rescales():
    rng = np.random.default_rng(7)
    logits, labels = torch.from_numpy(rng.normal(size=(30, 4))), torch.from_numpy(rng.integers(0, 4, 30))
    assert losses.softmax_focal(logits, labels, alpha=0.25).item() == pytest.approx(0.25 * losses.softmax_focal(logits, labels).item(), rel=1e-12)


def test_softmax_focal_skips_ignored_rows_in_the_mean():
    logits = torch.tensor([[2.0, 0.0], [0.0, 3.0], [1.0, 1.0]], dtype=torch.float64)
    labels = torch.tensor([0, -100, 1])
    expected = _softmax_focal_numpy(logits.numpy()[[0, 2]], np.array([0, 1]), 2.0).mean()
    assert losses.softmax_focal(logits, labels).item() == pytest.approx(expected, rel=1e-12)


def test_softmax_focal_rejects_mismatched_targets():
    with pytest.raises(ValueError, match=r"targets has shape \(8, 3\) but logits has shape \(8, 4\)"):
        losses.softmax_focal(torch.zeros(8, 4), torch.zeros(8, 3))


@pytest.mark.parametrize("seed", SEEDS)
def test_ce_matches_torch_cross_entropy(seed):
    rng = np.random.default_rng(seed)
    logits, labels = torch.from_numpy(rng.normal(0, 2, (50, 6))), torch.from_numpy(rng.integers(-1, 6, 50))
    expected = F.cross_entropy(logits, labels, ignore_index=-1)
    assert losses.ce(logits, labels, ignore_index=-1).item() == pytest.approx(expected.item(), rel=1e-12)
    soft = torch.softmax(torch.from_numpy(rng.normal(size=(50, 6))), dim=1)
    assert losses.ce(logits, soft).item() == pytest.approx(F.cross_entropy(logits, soft).item(), rel=1e-12)


def _ghm_closed_form(logits, targets, bins, valid=None):
    """GHM-C at momentum 0: the average over non-empty bins of each bin's mean BCE (numpy, float64)."""
    p = 1 / (1 + np.exp(-logits))
    bce = np.maximum(logits, 0) - logits * targets + np.log1p(np.exp(-np.abs(logits)))
    g = np.abs(p - targets)
    valid = np.ones_like(targets, dtype=bool) if valid is None else valid
    which = np.minimum(np.floor(g * bins).astype(int), bins - 1)
    means = [bce[valid & (which == b)].mean() for b in range(bins) if (valid & (which == b)).any()]
    return float(np.mean(means))


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("bins", [1, 10, 30])
def test_ghm_matches_closed_form(seed, bins):
    logits, targets = _logits_targets(seed, n=200, dtype=torch.float64)
    expected = _ghm_closed_form(logits.numpy(), targets.numpy(), bins)
    assert losses.ghm(logits, targets, bins=bins).item() == pytest.approx(expected, rel=1e-9)


def test_ghm_mask_excludes_elements_from_bins_and_count():
    logits, targets = _logits_targets(8, n=100, dtype=torch.float64)
    mask = torch.from_numpy(np.random.default_rng(8).random((100, 5)) > 0.3)
    expected = _ghm_closed_form(logits.numpy(), targets.numpy(), 10, mask.numpy())
    assert losses.ghm(logits, targets, mask=mask).item() == pytest.approx(expected, rel=1e-9)


def test_ghm_momentum_follows_mmdet_recurrence():
    """acc_b = m acc_b + (1 - m) c_b from 0, only for non-empty bins; w = N / acc_b / #non-empty.
    First call: acc = (1 - m) c, so the loss is the momentum-0 loss / (1 - m)."""
    m = 0.75
    first = _logits_targets(9, n=80, dtype=torch.float64)
    second = _logits_targets(10, n=80, dtype=torch.float64)
    state = losses.GHMState(bins=10, momentum=m)
    loss_1 = losses.ghm(*first, bins=10, momentum=m, state=state)
    assert loss_1.item() == pytest.approx(losses.ghm(*first, bins=10).item() / (1 - m), rel=1e-9)
    loss_2 = losses.ghm(*second, bins=10, momentum=m, state=state)

    def counts(logits, targets):
        g = np.abs(1 / (1 + np.exp(-logits.numpy())) - targets.numpy())
        return np.bincount(np.minimum(np.floor(g * 10).astype(int), 9).ravel(), minlength=10)

    c1, c2 = counts(*first), counts(*second)
    acc = np.where(c1 > 0, (1 - m) * c1, 0.0)
    acc = np.where(c2 > 0, m * acc + (1 - m) * c2, acc)
    logits, targets = second
    g = np.abs(1 / (1 + np.exp(-logits.numpy())) - targets.numpy())
    which = np.minimum(np.floor(g * 10).astype(int), 9)
    n = targets.numel()
    weights = n / acc[which] / (c2 > 0).sum()
    bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none").numpy()
    assert loss_2.item() == pytest.approx((weights * bce).sum() / n, rel=1e-9)


def _centernet_numpy(pred, gt):
    """CornerNet's _neg_loss written out: pos = gt == 1; normalised by #pos, else the negative sum."""
    pos, neg = gt == 1, gt < 1
    pos_loss = (np.log(pred) * (1 - pred) ** 2)[pos].sum()
    neg_loss = (np.log(1 - pred) * pred**2 * (1 - gt) ** 4)[neg].sum()
    num_pos = pos.sum()
    return -neg_loss if num_pos == 0 else -(pos_loss + neg_loss) / num_pos


@pytest.mark.parametrize("with_peaks", [True, False])
def test_centernet_matches_cornernet(with_peaks):
    rng = np.random.default_rng(11)
    gt = rng.random((2, 3, 8, 8)) * 0.9
    if with_peaks:
        gt[0, 1, 2, 3] = gt[1, 2, 5, 5] = 1.0
    pred = np.clip(rng.random(gt.shape), 1e-4, 1 - 1e-4)
    ours = losses.centernet(torch.from_numpy(pred), torch.from_numpy(gt))
    assert ours.item() == pytest.approx(_centernet_numpy(pred, gt), rel=1e-10)


def test_ohem_keeps_positives_and_hardest_negatives():
    """Two positive rows, four negative rows; ratio 1 keeps the 2 negatives of highest row BCE."""
    logits = torch.tensor([[2.0, -1.0], [-1.0, 0.5], [3.0, 0.0], [-4.0, -4.0], [0.5, 1.0], [-2.0, -3.0]], dtype=torch.float64)
    targets = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0]], dtype=torch.float64)
    x, y = logits.numpy(), targets.numpy()
    row = (np.maximum(x, 0) - x * y + np.log1p(np.exp(-np.abs(x)))).sum(axis=1)
    hardest_two = np.sort(row[2:])[-2:].sum()
    assert losses.ohem(logits, targets, neg_pos_ratio=1).item() == pytest.approx((row[:2].sum() + hardest_two) / 2, rel=1e-12)
    assert losses.ohem(logits, targets, neg_pos_ratio=3).item() == pytest.approx(row.sum() / 2, rel=1e-12)


def test_ohem_without_positives_is_zero():
    logits = torch.randn(5, 3)
    assert losses.ohem(logits, torch.zeros(5, 3)).item() == 0.0
