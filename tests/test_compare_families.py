"""``compare`` with the later loss families (qfl, vfl, asl, cb-ce, logit-adjusted-ce).

The streaming engine (numpy, :mod:`lossaudit.compare.engine.families`) gives the full-tensor engine's
numbers (torch: :mod:`lossaudit.losses` and autograd, in float64) to 1e-5 relative on soft,
multi-label and index dumps with masks, ignore labels and NaN logits, for several chunk sizes and
worker counts; the oracle's totals are the reference functions' own sums; the CLI's defaults add the
families by data type; single numbers are derived by hand with ``math``.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from lossaudit import losses
from lossaudit.compare.engine import elements
from lossaudit.compare.engine.families import FAMILY_LOSSES, sigmoid_parts
from lossaudit.compare.engine.stream import stream_tally
from lossaudit.compare.settings import LossSettings
from lossaudit.io.dataset import load_batches, plan
from lossaudit.io.readers import read_batches
from tests.conftest import write_npz
from tests.test_stream import _assert_same, _detection, _oracle, _soft

FAMILIES = ("qfl", "vfl", "asl", "cb-ce", "logit-adjusted-ce")


def _multi_label(path, seed: int):
    """Multi-hot one-hot targets (rows with several labels, background rows), an element mask and
    NaN / inf logits; every class has positives."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(-1, 3, size=(60, 4)).astype(np.float32)
    targets = (rng.random((60, 4)) < 0.35).astype(np.float32)
    targets[:4] = np.eye(4, dtype=np.float32)
    targets[5:8] = 0
    logits[9, 2], logits[13, 0], logits[20, 3] = np.nan, np.inf, -np.inf
    mask = (rng.random((60, 4)) > 0.08).astype(np.uint8)
    return write_npz(path, logits=logits, targets=targets, mask=mask)


def _soft_all_classes(path, seed: int):
    """:func:`tests.test_stream._soft` with a NaN logit (its element mask and background rows kept)."""
    _soft(path, seed)
    arrays = dict(np.load(path))
    arrays["logits"][3, 1] = np.nan
    return write_npz(path, **arrays)


def _soft_unmasked(path, seed: int):
    """Soft targets with background rows and nothing excluded (every element valid)."""
    rng = np.random.default_rng(seed)
    targets = np.where(rng.random((40, 3)) < 0.4, rng.random((40, 3)), 0).astype(np.float32)
    targets[::5] = 0
    return write_npz(path, logits=rng.normal(0, 2, size=(40, 3)).astype(np.float32), targets=targets)


@pytest.mark.parametrize("make", [_soft_all_classes, _soft_unmasked, _multi_label, _detection], ids=["soft", "soft-unmasked", "multi-label", "index"])
@pytest.mark.parametrize("chunk_rows", [1, 9, 1000])
def test_stream_equals_full_tensor(tmp_path, make, chunk_rows):
    paths = [make(tmp_path / f"batch{seed}.npz", seed) for seed in (1, 2)]
    settings = LossSettings(losses=("ce", "focal", *FAMILIES), bins=7)
    full = _oracle(paths, settings)
    _assert_same(stream_tally(plan(read_batches(paths)), settings, chunk_rows=chunk_rows), full)


OTHER = LossSettings(losses=FAMILIES, gamma=0.5, qfl_beta=1.5, asl_gamma_pos=0.0, asl_gamma_neg=2.5, asl_clip=0.0, cb_beta=0.99, la_tau=0.5, bins=3)


WIDE_CLIP = LossSettings(losses=FAMILIES, gamma=1.0, qfl_beta=3.0, asl_clip=0.2)
"""ASL's clip above the first difficulty edge (the easy negatives are 0 for it); the dense pass
keeps QFL's power 3 and VFL's power 1."""


@pytest.mark.parametrize("settings", [OTHER, WIDE_CLIP], ids=["other", "wide-clip"])
@pytest.mark.parametrize("make", [_soft_all_classes, _multi_label], ids=["soft", "multi-label"])
def test_other_hyperparameters_stream_equals_full_tensor(tmp_path, make, settings):
    """The easy negatives' sums come from the dense pass's powers (one per family here, or
    none for a clipped ASL); the numbers do not depend on which."""
    paths = [make(tmp_path / f"batch{seed}.npz", seed) for seed in (7, 8)]
    _assert_same(stream_tally(plan(read_batches(paths)), settings, chunk_rows=5), _oracle(paths, settings))


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_families_alone_and_worker_counts(tmp_path, workers):
    """Without a core loss the families' accumulator counts the softmax terms itself."""
    paths = [_multi_label(tmp_path / f"batch{seed}.npz", seed) for seed in (5, 6)]
    settings = LossSettings(losses=FAMILIES, ghm_bins=30)
    _assert_same(stream_tally(plan(read_batches(paths)), settings, chunk_rows=7, workers=workers), _oracle(paths, settings))


def test_oracle_totals_are_the_reference_sums(tmp_path):
    """Each family's total is its reference function's sum over the valid elements or rows, with
    the dump's class counts (the targets summed per class)."""
    path = _multi_label(tmp_path / "m.npz", 3)
    data = load_batches(read_batches([path]))
    data = replace(data, logits=data.logits.double(), targets=data.targets.double())
    tally = _oracle([path], LossSettings(losses=FAMILIES))
    valid = data.valid
    x, y = torch.where(valid, data.logits, 0.0), data.targets
    rows = valid.all(dim=1) & (y.sum(dim=1) > 0)
    counts = y.sum(dim=0)
    np.testing.assert_allclose(counts.numpy(), plan(read_batches([path])).class_target_sums())
    expected = {
        "qfl": (losses.qfl(x, y, reduction="none") * valid).sum(),
        "vfl": (losses.vfl(x, y, reduction="none") * valid).sum(),
        "asl": (losses.asl(x, y, reduction="none") * valid).sum(),
        "cb-ce": losses.cb(x[rows], y[rows], counts, reduction="sum"),
        "logit-adjusted-ce": losses.logit_adjusted_ce(x[rows], y[rows], counts, reduction="sum"),
    }
    for loss, value in expected.items():
        assert tally.loss_sums[loss].sum() == pytest.approx(float(value), rel=1e-10), loss


def test_sigmoid_parts_round_p_as_the_engines_bin_it():
    """The families bin an element by its float32 p as both engines do (elements.sigmoid32), even at
    x = 2^-23, whose float64 sigmoid lies next to a float32 tie; the other parts are exact forms."""
    x = np.concatenate([np.random.default_rng(0).normal(0, 8, 10_000), [2.0**-23, -(2.0**-23), 0.0, 30.0, -30.0, 800.0, -800.0]]).astype(np.float32)
    parts = sigmoid_parts(x.astype(np.float64), np.zeros(len(x)))
    np.testing.assert_array_equal(parts.p.astype(np.float32), elements.sigmoid32(x))
    reference = torch.from_numpy(x.astype(np.float64))
    np.testing.assert_allclose(parts.one_minus_p, torch.sigmoid(-reference).numpy(), rtol=1e-15, atol=0)
    np.testing.assert_allclose(parts.log_p, torch.nn.functional.logsigmoid(reference).numpy(), rtol=1e-15)
    np.testing.assert_allclose(parts.log_one_minus_p, torch.nn.functional.logsigmoid(-reference).numpy(), rtol=1e-15)


def test_default_params_are_the_reference_defaults():
    functions = {"qfl": losses.qfl, "vfl": losses.vfl, "asl": losses.asl, "cb-ce": losses.cb, "logit-adjusted-ce": losses.logit_adjusted_ce}
    assert FAMILY_LOSSES == tuple(functions)
    for loss, function in functions.items():
        params = LossSettings().params(loss)
        signature = inspect.signature(function).parameters
        assert {name: signature[name].default for name in params} == params, loss


def test_options_reach_the_losses(compare_json, tmp_path):
    """At zero logits (p = 1/2) with index targets [0, 0, 1] over 2 classes: QFL with beta 1 is
    d·BCE = ½ log 2 at each positive and each negative (6 elements); ASL with both exponents 0 and
    clip 0 is BCE = log 2 at each element; beta 0 (cb-ce) and tau 0 (logit-adjusted-ce) give CE =
    log 2 per row; VFL with --gamma 1 weights each negative 0.75·½ and each positive 1."""
    path = write_npz(tmp_path / "idx.npz", logits=np.zeros((3, 2), np.float32), targets=np.array([0, 0, 1]))
    report = compare_json(
        path,
        "--losses",
        ",".join(FAMILIES),
        "--qfl-beta",
        "1",
        "--asl-gamma-pos",
        "0",
        "--asl-gamma-neg",
        "0",
        "--asl-clip",
        "0",
        "--cb-beta",
        "0",
        "--la-tau",
        "0",
        "--gamma",
        "1",
    )
    log2 = math.log(2)
    sums = {loss: report["losses"][loss]["sum"] for loss in FAMILIES}
    assert sums == pytest.approx(
        {"qfl": 6 * 0.5 * log2, "asl": 6 * log2, "cb-ce": 3 * log2, "logit-adjusted-ce": 3 * log2, "vfl": 3 * log2 + 3 * 0.75 * 0.5 * log2}, rel=1e-6
    )
    assert report["losses"]["asl"]["params"] == {"gamma_pos": 0.0, "gamma_neg": 0.0, "clip": 0.0, "eps": 1e-8}


@pytest.mark.parametrize("option, value", [("--qfl-beta", "-1"), ("--asl-clip", "1"), ("--cb-beta", "1"), ("--asl-gamma-neg", "-0.5"), ("--la-tau", "nan")])
def test_bad_hyperparameters_are_refused_in_one_line(run_cli, tmp_path, option, value):
    path = write_npz(tmp_path / "idx.npz", logits=np.zeros((3, 2), np.float32), targets=np.array([0, 0, 1]))
    result = run_cli("compare", path, option, value)
    assert result.exit_code == 2
    assert option in result.stderr and "Traceback" not in result.stderr


def test_soft_targets_default_to_qfl_and_vfl_with_hand_derived_values(compare_json, tmp_path):
    """One soft target q = 0.7 at x = 0.4 and one negative at x = -1.2:
    QFL = |q − σ(x)|² BCE(x, q) and σ(−1.2)² BCE(−1.2, 0); VFL = q BCE(x, q) and 0.75 σ(−1.2)² BCE(−1.2, 0)."""
    logits, targets = np.array([[0.4, -1.2]], np.float32), np.array([[0.7, 0.0]], np.float32)
    report = compare_json(write_npz(tmp_path / "soft.npz", logits=logits, targets=targets))
    assert report["input"]["target_encoding"] == "soft"
    assert set(report["losses"]) == {"ce", "bce", "focal", "softmax-focal", "ghm", "qfl", "vfl"}
    assert "asl" not in report["losses"]
    x, q, xn = float(np.float32(0.4)), float(np.float32(0.7)), float(np.float32(-1.2))
    sigma, sigma_n = 1 / (1 + math.exp(-x)), 1 / (1 + math.exp(-xn))
    bce = -(q * math.log(sigma) + (1 - q) * math.log(1 - sigma))
    bce_n = -math.log(1 - sigma_n)
    qfl_sum = (q - sigma) ** 2 * bce + sigma_n**2 * bce_n
    vfl_sum = q * bce + 0.75 * sigma_n**2 * bce_n
    assert report["losses"]["qfl"]["sum"] == pytest.approx(qfl_sum, rel=1e-6)
    assert report["losses"]["vfl"]["sum"] == pytest.approx(vfl_sum, rel=1e-6)
    assert report["losses"]["qfl"]["mean"] == pytest.approx(qfl_sum / 2, rel=1e-6)
    assert report["losses"]["qfl"]["params"] == {"beta": 2.0}
    assert set(report["per_class"][0]["share"]) >= {"qfl", "vfl"}


def test_multi_label_targets_default_to_asl_with_a_hand_derived_value(compare_json, tmp_path):
    """Row 0 has two labels. ASL of a positive at p = 0.8: −(1 − p)¹ log p; of a negative at
    p = 0.3: −(p − 0.05)⁴ log(1 − (p − 0.05)); of a negative at p = 0.02 (below the clip): 0."""
    probs = np.array([[0.8, 0.8, 0.3], [0.02, 0.8, 0.3]])
    logits = np.log(probs / (1 - probs)).astype(np.float32)
    targets = np.array([[1, 1, 0], [0, 1, 0]], np.float32)
    report = compare_json(write_npz(tmp_path / "multi.npz", logits=logits, targets=targets))
    assert report["input"]["multi_hot_rows"] == 1
    assert "asl" in report["losses"] and "qfl" not in report["losses"]
    p = 1 / (1 + np.exp(-logits.astype(np.float64)))
    pos = -(1 - p[0, 0]) * math.log(p[0, 0])
    neg = -((p[0, 2] - 0.05) ** 4) * math.log(1 - (p[0, 2] - 0.05))
    assert report["losses"]["asl"]["sum"] == pytest.approx(3 * pos + 2 * neg, rel=1e-6)


def test_single_label_defaults_are_unchanged(compare_json, tmp_path):
    report = compare_json(write_npz(tmp_path / "one.npz", logits=np.zeros((3, 2), np.float32), targets=np.eye(2, dtype=np.float32)[[0, 1, 1]]))
    assert set(report["losses"]) == {"ce", "bce", "focal", "softmax-focal", "ghm"}


def test_class_balanced_and_logit_adjusted_ce_by_hand(compare_json, tmp_path):
    """Index targets [0, 0, 0, 1] at zero logits (q = 1/2): counts (3, 1). CB weights with beta
    0.9999: E_n = (1 − beta^n) / (1 − beta), w ∝ 1 / E_n scaled to sum 2; CB-CE sums w_y log 2.
    Logit-adjusted CE of class c: −log(pi_c / Σ pi) = −log pi_c, pi = (3/4, 1/4)."""
    path = write_npz(tmp_path / "idx.npz", logits=np.zeros((4, 2), np.float32), targets=np.array([0, 0, 0, 1]))
    report = compare_json(path, "--losses", "cb-ce,logit-adjusted-ce")
    beta = 0.9999
    inverse = [(1 - beta) / (1 - beta**n) for n in (3, 1)]
    w = [2 * v / sum(inverse) for v in inverse]
    assert report["losses"]["cb-ce"]["sum"] == pytest.approx((3 * w[0] + w[1]) * math.log(2), rel=1e-6)
    assert report["losses"]["logit-adjusted-ce"]["sum"] == pytest.approx(-3 * math.log(0.75) - math.log(0.25), rel=1e-6)
    assert report["losses"]["cb-ce"]["mean_divides_by"] == "rows with a target"


def test_class_without_targets_is_refused_for_class_counts(run_cli, tmp_path):
    path = write_npz(tmp_path / "idx.npz", logits=np.zeros((2, 3), np.float32), targets=np.array([0, 1]))
    result = run_cli("compare", path, "--losses", "cb-ce")
    assert result.exit_code == 2
    assert "class '2' has no targets" in result.stderr and "Traceback" not in result.stderr
