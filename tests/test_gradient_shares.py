"""Gradient shares in ``compare``: each loss's share of Σ |∂L/∂x| per class, per difficulty bin and
per positive / easy-negative / very-hard set equals torch autograd on the reference functions of
:mod:`lossaudit.losses` (a small random batch, float64, the loss's own reduction, backpropagated;
|grad| summed per group here, in the test).

Softmax losses: a row's gradient, summed over its logits, is counted at the row's target class and
in the bin of ``1 - q_target`` (one-hot rows). The closed forms of
:mod:`lossaudit.compare.engine.elements` are checked element by element against autograd as well."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lossaudit import api, losses
from lossaudit.compare.engine import elements

CLASSES, ROWS, BINS = 4, 300, 10


def _detection(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Index targets with background rows (label C) and a few ignored rows (-1)."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(-1.5, 2.5, size=(ROWS, CLASSES)).astype(np.float32)
    labels = rng.choice([*range(CLASSES), CLASSES, -1], p=[0.1] * CLASSES + [0.55, 0.05], size=ROWS)
    return logits, labels


def _shares(values: torch.Tensor, groups: np.ndarray, count: int) -> np.ndarray:
    totals = np.bincount(groups, weights=values.detach().numpy(), minlength=count)
    return totals / totals.sum()


def _sigmoid_grad(loss: str, x: torch.Tensor, y: torch.Tensor, alpha: float, gamma: float) -> torch.Tensor:
    """|∂L/∂x| of the reference loss, its mean over the valid elements."""
    x = x.clone().requires_grad_()
    if loss == "bce":
        total = losses.bce(x, y, reduction="mean")
    elif loss == "focal":
        total = losses.focal(x, y, alpha=alpha, gamma=gamma, reduction="mean")
    else:
        total = losses.ghm(x, y, bins=10, reduction="mean")
    (grad,) = torch.autograd.grad(total, x)
    return grad.abs()


@pytest.mark.parametrize(("alpha", "gamma"), [(0.25, 2.0), (-1.0, 0.5), (0.75, 0.0)])
@pytest.mark.parametrize("seed", [0, 1])
def test_sigmoid_gradient_shares_equal_autograd(seed, alpha, gamma):
    logits, labels = _detection(seed)
    report = api.compare(logits=logits, targets=labels, losses=["bce", "focal", "ghm"], alpha=alpha, gamma=gamma, bins=BINS).to_dict()
    kept = labels >= 0
    x = torch.from_numpy(logits[kept]).double()
    y = torch.nn.functional.one_hot(torch.from_numpy(labels[kept]), CLASSES + 1)[:, :CLASSES].double()
    g = (torch.sigmoid(x) - y).abs().numpy()
    classes = np.broadcast_to(np.arange(CLASSES), g.shape).reshape(-1)
    bins = np.minimum((g * BINS).astype(int), BINS - 1).reshape(-1)
    positive, easy_negative, very_hard = (y.numpy() == 1).reshape(-1), ((y.numpy() == 0) & (g < 0.1)).reshape(-1), (g >= 0.9).reshape(-1)
    for loss in ("bce", "focal", "ghm"):
        grad = _sigmoid_grad(loss, x, y, alpha, gamma).reshape(-1)
        got = report["losses"][loss]
        np.testing.assert_allclose([c["gradient_share"][loss] for c in report["per_class"]], _shares(grad, classes, CLASSES), rtol=1e-5, err_msg=loss)
        np.testing.assert_allclose(
            [d["gradient_share"][loss] for d in report["per_difficulty"]], _shares(grad, bins, BINS), rtol=1e-5, atol=1e-12, err_msg=loss
        )
        total = float(grad.sum())
        for key, chosen in (("gradient_positive_share", positive), ("gradient_easy_negative_share", easy_negative), ("gradient_very_hard_share", very_hard)):
            assert got[key] == pytest.approx(float(grad[torch.from_numpy(chosen)].sum()) / total, rel=1e-5, abs=1e-12), (loss, key)
        assert got["gradient_mean"] == pytest.approx(total, rel=1e-5), loss  # Σ |∂ mean loss / ∂x|


@pytest.mark.parametrize("gamma", [0.0, 2.0, 0.5])
def test_softmax_gradient_shares_equal_autograd(gamma):
    """Single-label rows: ce and softmax-focal's row gradient, summed over the row, at the target."""
    rng = np.random.default_rng(7)
    logits = rng.normal(0, 2, size=(ROWS, CLASSES)).astype(np.float32)
    labels = rng.integers(0, CLASSES, ROWS)
    report = api.compare(logits=logits, targets=labels, losses=["ce", "softmax-focal"], gamma=gamma, bins=BINS).to_dict()
    x = torch.from_numpy(logits).double().requires_grad_()
    target = torch.from_numpy(labels)
    q_target = torch.softmax(x.detach(), dim=1)[torch.arange(ROWS), target].numpy()
    bins = np.minimum(((1 - q_target) * BINS).astype(int), BINS - 1)
    for loss, total in (("ce", losses.ce(x, target)), ("softmax-focal", losses.softmax_focal(x, target, gamma=gamma))):
        (grad,) = torch.autograd.grad(total, x)
        per_row = grad.abs().sum(dim=1)
        np.testing.assert_allclose([c["gradient_share"][loss] for c in report["per_class"]], _shares(per_row, labels, CLASSES), rtol=1e-5, err_msg=loss)
        np.testing.assert_allclose(
            [d["gradient_share"][loss] for d in report["per_difficulty"]], _shares(per_row, bins, BINS), rtol=1e-5, atol=1e-12, err_msg=loss
        )
        assert report["losses"][loss]["gradient_mean"] == pytest.approx(float(per_row.sum()), rel=1e-5)


def test_centernet_gradient_shares_equal_autograd():
    """Heatmap targets: CenterNet on the clamped sigmoid, whose clamp stops the gradient."""
    rng = np.random.default_rng(3)
    heatmap = np.where(rng.random((2, 3, 6, 6)) < 0.5, rng.random((2, 3, 6, 6)) * 0.9, 0).astype(np.float32)
    heatmap[0, 1, 2, 3] = heatmap[1, 0, 4, 4] = 1.0
    logits = rng.normal(-2, 4, size=heatmap.shape).astype(np.float32)
    report = api.compare(logits=logits, targets=heatmap, losses=["centernet"], bins=BINS).to_dict()
    x = torch.from_numpy(logits).double().permute(0, 2, 3, 1).reshape(-1, 3).requires_grad_()
    y = torch.from_numpy(heatmap).double().permute(0, 2, 3, 1).reshape(-1, 3)
    clamp = losses.CENTERNET_PROB_CLAMP
    (grad,) = torch.autograd.grad(losses.centernet(torch.sigmoid(x).clamp(clamp, 1 - clamp), y), x)
    classes = np.broadcast_to(np.arange(3), y.shape).reshape(-1)
    np.testing.assert_allclose([c["gradient_share"]["centernet"] for c in report["per_class"]], _shares(grad.abs().reshape(-1), classes, 3), rtol=1e-5)


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0, 5.0])
def test_closed_forms_equal_autograd_element_by_element(gamma):
    """The element gradients of :mod:`lossaudit.compare.engine.elements` (focal before alpha_t for soft
    and 0/1 targets, negatives in float32, CenterNet, a softmax row with several targets) against
    autograd on the reference functions."""
    rng = np.random.default_rng(11)
    x = rng.normal(0, 3, 400).astype(np.float32)
    y = np.where(rng.random(400) < 0.5, rng.random(400), rng.integers(0, 2, 400)).astype(np.float32)
    terms = elements.sigmoid_terms(x, *elements.sigmoid_parts(x), y, heatmap=False)
    xt = torch.from_numpy(x).double().requires_grad_()
    (want,) = torch.autograd.grad(losses.focal(xt, torch.from_numpy(y).double(), alpha=-1, gamma=gamma).sum(), xt)
    np.testing.assert_allclose(elements.focal_gradient(terms, y, gamma), want.abs().numpy(), rtol=1e-5, atol=1e-7)

    negative = elements.negative_terms(x, *elements.sigmoid_parts(x), gamma, centernet=True)
    (want,) = torch.autograd.grad(losses.focal(xt, torch.zeros(400, dtype=torch.float64), alpha=-1, gamma=gamma).sum(), xt)
    np.testing.assert_allclose(negative.focal_gradient, want.abs().numpy(), rtol=2e-5, atol=1e-7)
    np.testing.assert_allclose(negative.p, torch.sigmoid(xt).detach().numpy(), rtol=1e-6)  # BCE's

    heat = np.where(rng.random(400) < 0.2, 1.0, rng.random(400) * 0.9).astype(np.float32)
    terms = elements.sigmoid_terms(x, *elements.sigmoid_parts(x), heat, heatmap=True)
    clamp = losses.CENTERNET_PROB_CLAMP
    (want,) = torch.autograd.grad(losses.centernet(torch.sigmoid(xt).clamp(clamp, 1 - clamp), torch.from_numpy(heat).double(), reduction="sum"), xt)
    np.testing.assert_allclose(elements.centernet_gradient(terms, heat), want.abs().numpy(), rtol=1e-5, atol=1e-7)

    rows = rng.normal(0, 2, size=(6, 5)).astype(np.float32)
    target = np.zeros((6, 5), dtype=np.float32)
    target[np.arange(6), rng.integers(0, 5, 6)] = 1.0
    target[0, (np.flatnonzero(target[0] == 0)[:2])] = [1.0, 0.5]  # a multi-hot row
    row, col = np.nonzero(target)
    soft = elements.softmax_terms(rows, row, col)
    got = elements.softmax_gradient(soft, soft.pull(target[row, col], gamma), target[row, col], row)
    xr = torch.from_numpy(rows).double().requires_grad_()
    (want,) = torch.autograd.grad(losses.softmax_focal_terms(xr, torch.from_numpy(target).double(), gamma=gamma).sum(), xr)
    magnitude = want.abs().sum(dim=1).numpy()
    expected = magnitude[row] * target[row, col] / target.sum(axis=1)[row]  # a row's share goes in proportion to y
    np.testing.assert_allclose(got, expected, rtol=1e-5)
