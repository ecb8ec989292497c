"""`lossaudit explain`: one example worked through. The seed numbers are derived by hand in the
docstrings; the gradients are checked against torch's autograd on the reference losses."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from lossaudit import losses
from lossaudit.explain import sigmoid_steps, softmax_steps


def test_the_seed_numbers():
    """A positive at p = 0.9: CE = -ln 0.9 = 0.1054, FL = 0.25 * 0.1^2 * 0.1054 = 0.000263.
    A negative at background probability 0.8 (p = 0.2): CE = -ln 0.8 = 0.2231,
    FL = 0.75 * 0.2^2 * 0.2231 = 0.00669."""
    positive = sigmoid_steps(math.log(0.9 / 0.1), 1)
    negative = sigmoid_steps(math.log(0.2 / 0.8), 0)
    assert positive["ce"]["value"] == pytest.approx(0.10536, abs=1e-5) and positive["focal"]["value"] == pytest.approx(0.000263, abs=1e-6)
    assert negative["ce"]["value"] == pytest.approx(0.22314, abs=1e-5) and negative["focal"]["value"] == pytest.approx(0.006694, abs=1e-6)
    assert positive["ratio"]["value"] == pytest.approx(0.25 * 0.01) and negative["ratio"]["value"] == pytest.approx(0.75 * 0.04)


@pytest.mark.parametrize("seed", range(5))
def test_sigmoid_values_and_gradients_match_autograd(seed):
    rng = np.random.default_rng(seed)
    for _ in range(20):
        x, y = float(rng.normal(0, 4)), int(rng.integers(0, 2))
        alpha, gamma = float(rng.choice([-1, 0.25, 0.5, 0.9])), float(rng.choice([0, 0.5, 2, 5]))
        steps = sigmoid_steps(x, y, alpha, gamma)
        logit = torch.tensor([x], dtype=torch.float64, requires_grad=True)
        target = torch.tensor([float(y)], dtype=torch.float64)
        focal = losses.focal(logit, target, alpha=alpha, gamma=gamma).sum()
        (focal_gradient,) = torch.autograd.grad(focal, logit)
        ce = torch.nn.functional.binary_cross_entropy_with_logits(logit, target)
        (ce_gradient,) = torch.autograd.grad(ce, logit)
        assert steps["focal"]["value"] == pytest.approx(float(focal.detach()), rel=1e-9, abs=1e-15)
        assert steps["ce"]["value"] == pytest.approx(float(ce.detach()), rel=1e-9)
        assert steps["focal_gradient"]["value"] == pytest.approx(float(focal_gradient), rel=1e-7, abs=1e-15)
        assert steps["ce_gradient"]["value"] == pytest.approx(float(ce_gradient), rel=1e-9, abs=1e-15)


def test_softmax_matches_the_references_and_shows_what_alpha_does():
    row = [2.0, 0.5, -1.0]
    steps = softmax_steps(row, 1, gamma=2.0, alpha=0.25, alpha_per_class=[0.2, 0.5, 0.8])
    logits, target = torch.tensor([row], dtype=torch.float64), torch.tensor([1])
    assert steps["ce"]["value"] == pytest.approx(float(torch.nn.functional.cross_entropy(logits, target)), rel=1e-12)
    focal = float(losses.softmax_focal(logits, target, gamma=2.0))
    assert steps["focal"]["value"] == pytest.approx(focal, rel=1e-12)
    assert steps["scalar_alpha"]["value"] == pytest.approx(0.25 * focal) and steps["per_class_alpha"]["value"] == pytest.approx(0.5 * focal)


def test_ghm_weight_for_a_dump(tmp_path, run_cli):
    """GHM-C's weight for g's bin: N valid elements / (count in the bin x non-empty bins)."""
    rng = np.random.default_rng(0)
    logits = rng.normal(-2, 2, size=(200, 4)).astype(np.float32)
    labels = rng.integers(0, 5, size=200)
    np.savez(tmp_path / "d.npz", logits=logits, targets=labels)
    onehot = np.eye(5, dtype=np.float32)[labels][:, :4]
    g = np.abs(torch.sigmoid(torch.from_numpy(logits)).numpy() - onehot)
    bins = np.minimum((g * 10).astype(int), 9)
    counts = np.bincount(bins.reshape(-1), minlength=10)
    result = run_cli("explain", "--prob", "0.2", "--target", "0", "--dump", tmp_path / "d.npz", "--format", "json")
    assert result.exit_code == 0, result.stderr
    steps = json.loads(result.stdout)
    expected = g.size / (counts[2] * int((counts > 0).sum()))  # g = 0.2 falls in [0.2, 0.3)
    assert steps["ghm_weight"]["value"] == pytest.approx(expected, rel=1e-9)


def test_the_command(run_cli):
    text = run_cli("explain", "--prob", "0.9", "--target", "1").stdout
    assert "0.105361" in text and "0.000263401" in text and "dFL/dx" in text
    softmax = run_cli("explain", "--logits", "2,0.5,-1", "--target", "1", "--alpha", "0.25").stdout
    assert "a rescaling" in softmax and "softmax(x)" in softmax
    for arguments, says in ((["--prob", "1.5"], "--prob 1.5"), ([], "give --logit X"), (["--logits", "1,x"], "--logits")):
        result = run_cli("explain", *arguments)
        assert result.exit_code == 2 and says in result.stderr
