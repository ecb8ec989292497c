"""The positive rule ``target >= 0.5`` at its edge: a soft target of exactly 0.5 (a common IoU
value) is a positive, the float32 just below it (0.49999997) is not, in the streaming engine
(``lossaudit.compare``), in the full-tensor oracle (``lossaudit.compare.oracle.tally``), in the
multi-label detection that picks the default losses, and in the torch OHEM reference
(``lossaudit.losses.ohem``: a row with a target >= 0.5 is a positive row).

Every expected number is derived here: the counts by hand (see ``TARGETS``), the sums from the
formulas of ../shared/REFERENCES.md written out in numpy (BCE with logits in the stable form,
focal ``alpha_t (1 - p_t)^gamma BCE`` with ``1 - p_t = p + y - 2py`` for soft targets)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

import lossaudit
from lossaudit import losses
from lossaudit.compare.oracle import tally
from lossaudit.compare.settings import LossSettings
from lossaudit.io.dataset import LoadOptions, load_batches
from lossaudit.io.readers import ArrayFile

HALF = np.float32(0.5)
BELOW = np.nextafter(np.float32(0.5), np.float32(0))  # 0.49999997, the largest float32 below 0.5

LOGITS = np.array(
    [
        [1.5, -2.0, -3.0],
        [0.25, -1.0, -4.0],
        [-0.5, 2.0, -0.75],
        [-2.5, -3.5, -1.25],
        [0.75, 0.5, 3.0],
    ],
    dtype=np.float32,
)
TARGETS = np.array(
    [
        [HALF, 0, 0],  # row 0: one positive (class 0)
        [BELOW, 0, 0],  # row 1: a soft negative, not background (it has a non-zero target)
        [0, HALF, HALF],  # row 2: two positives (classes 1 and 2): multi-hot
        [0, 0, 0],  # row 3: background
        [0, BELOW, BELOW],  # row 4: two soft negatives: neither multi-hot nor background
    ],
    dtype=np.float32,
)
POSITIVE = np.array([[True, False, False], [False, False, False], [False, True, True], [False, False, False], [False, False, False]])
"""By hand from the comments above: (0, 0), (2, 1), (2, 2)."""
POSITIVES_PER_CLASS = [1, 1, 1]
NEGATIVES_PER_CLASS = [4, 4, 4]  # 5 rows, every element valid
POSITIVE_ROWS = [0, 2]


def _bce(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    x, y = x.astype(np.float64), y.astype(np.float64)
    return np.maximum(x, 0) - x * y + np.log1p(np.exp(-np.abs(x)))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x.astype(np.float64)))


def _focal(x: np.ndarray, y: np.ndarray, alpha: float = 0.25, gamma: float = 2.0) -> np.ndarray:
    p, y64 = _sigmoid(x), y.astype(np.float64)
    alpha_t = alpha * y64 + (1 - alpha) * (1 - y64)
    return alpha_t * (p + y64 - 2 * p * y64) ** gamma * _bce(x, y)


def _ohem_rows(x: np.ndarray, y: np.ndarray, ratio: float) -> np.ndarray:
    """Row losses kept by SSD-style mining, written out: every positive row, then the
    ``ratio * #pos`` negative rows of highest summed BCE (no ties in the data used here)."""
    row_loss = _bce(x, y).sum(axis=1)
    positive_rows = np.zeros(len(x), dtype=bool)
    positive_rows[POSITIVE_ROWS] = True
    negatives = np.flatnonzero(~positive_rows)
    k = min(int(ratio * positive_rows.sum()), len(negatives))
    hardest = negatives[np.argsort(-row_loss[negatives])[:k]]
    keep = positive_rows.copy()
    keep[hardest] = True
    return np.where(keep, row_loss, 0.0)


def test_the_hand_derived_positives_are_the_rule():
    """Guard on the fixture itself: BELOW is really below 0.5 in float32 and float64, HALF is 0.5."""
    assert BELOW < HALF and float(BELOW) < 0.5 and float(HALF) == 0.5
    assert np.array_equal(TARGETS >= 0.5, POSITIVE)
    assert not np.array_equal(TARGETS > 0.5, POSITIVE)  # the data does sit on the edge


def test_streaming_engine_counts_a_target_of_one_half_as_positive():
    """``lossaudit.compare`` (the streaming engine): per-class positives/negatives, the positives'
    mean p, the multi-hot and background rows, and each sigmoid loss's positive share."""
    report = lossaudit.compare(logits=LOGITS, targets=TARGETS, losses=["bce", "focal", "ce"]).to_dict()
    inp = report["input"]
    assert inp["target_encoding"] == "soft"
    assert inp["positive_rule"] == "target >= 0.5"
    assert (inp["valid_elements"], inp["positives"], inp["negatives"]) == (15, 3, 12)
    assert inp["multi_hot_rows"] == 1  # row 2; row 4's two 0.49999997 are negatives
    assert inp["background_rows"] == 1  # row 3; row 1 has a (sub-0.5) target
    rows = report["per_class"]
    assert [row["positives"] for row in rows] == POSITIVES_PER_CLASS
    assert [row["negatives"] for row in rows] == NEGATIVES_PER_CLASS
    p = _sigmoid(LOGITS)
    for c, row in enumerate(rows):
        assert row["mean_p"] == pytest.approx(p[POSITIVE[:, c], c].mean(), rel=1e-6)  # the single positive's p
    for loss, element in (("bce", _bce(LOGITS, TARGETS)), ("focal", _focal(LOGITS, TARGETS))):
        assert report["losses"][loss]["sum"] == pytest.approx(element.sum(), rel=1e-6)
        assert report["losses"][loss]["positive_share"] == pytest.approx(element[POSITIVE].sum() / element.sum(), rel=1e-6)
        for c, row in enumerate(rows):
            assert row["sum"][loss] == pytest.approx(element[:, c].sum(), rel=1e-6)


def test_streaming_engine_softmax_positives_follow_the_rule():
    """ce's positive share: the softmax terms ``-y log q`` of the rows with a target (rows 0, 1,
    2, 4), the positive ones being the terms at (0, 0), (2, 1), (2, 2)."""
    report = lossaudit.compare(logits=LOGITS, targets=TARGETS, losses=["ce"]).to_dict()
    with_target = TARGETS.sum(axis=1) > 0
    x = LOGITS.astype(np.float64)
    log_q = x - np.log(np.exp(x).sum(axis=1, keepdims=True))
    terms = np.where(with_target[:, None], -TARGETS.astype(np.float64) * log_q, 0.0)
    assert report["losses"]["ce"]["covers"]["count"] == int(with_target.sum()) == 4
    assert report["losses"]["ce"]["positive_share"] == pytest.approx(terms[POSITIVE].sum() / terms.sum(), rel=1e-6)
    q = np.exp(log_q)
    for c, row in enumerate(report["per_class"]):
        assert row["mean_p_softmax"] == pytest.approx(q[POSITIVE[:, c], c].mean(), rel=1e-6)


def test_streaming_ohem_counts_rows_with_a_target_of_one_half_as_positive_rows():
    """OHEM in ``compare``: 2 positive rows (0 and 2) normalise the sum; with ratio 1 the 2
    hardest of the negative rows 1, 3, 4 are kept."""
    report = lossaudit.compare(logits=LOGITS, targets=TARGETS, losses=["ohem"], ohem_ratio=1.0).to_dict()
    kept = _ohem_rows(LOGITS, TARGETS, ratio=1.0)
    ohem = report["losses"]["ohem"]
    assert ohem["normaliser"] == 2
    assert ohem["sum"] == pytest.approx(kept.sum(), rel=1e-6)
    assert ohem["mean"] == pytest.approx(kept.sum() / 2, rel=1e-6)


def _oracle(settings: LossSettings):
    data = load_batches([ArrayFile(source="arrays", arrays={"logits": LOGITS, "targets": TARGETS})], LoadOptions())
    return data, tally(replace(data, logits=data.logits.double(), targets=data.targets.double()), settings)


def test_full_tensor_oracle_counts_a_target_of_one_half_as_positive():
    """The oracle's (C, 2, bins, 4) tables split by positive (index 1) and negative (index 0):
    per-class counts and per-class positive/negative BCE and focal sums, and OHEM's positive rows."""
    data, full = _oracle(LossSettings(losses=("bce", "focal", "ohem"), ohem_ratio=1.0))
    assert np.array_equal(data.positive.numpy(), POSITIVE)
    counts = full.element_counts
    assert counts[:, 1].sum(axis=(1, 2)).tolist() == POSITIVES_PER_CLASS
    assert counts[:, 0].sum(axis=(1, 2)).tolist() == NEGATIVES_PER_CLASS
    assert full.multi_hot_rows == 1 and full.background_rows == 1
    for loss, element in (("bce", _bce(LOGITS, TARGETS)), ("focal", _focal(LOGITS, TARGETS))):
        sums = full.loss_sums[loss]
        for c in range(3):
            np.testing.assert_allclose(sums[c, 1].sum(), element[POSITIVE[:, c], c].sum(), rtol=1e-9, err_msg=f"{loss} class {c} positives")
            np.testing.assert_allclose(sums[c, 0].sum(), element[~POSITIVE[:, c], c].sum(), rtol=1e-9, err_msg=f"{loss} class {c} negatives")
    p = _sigmoid(LOGITS)
    np.testing.assert_allclose(full.sum_p_positive, [p[POSITIVE[:, c], c].sum() for c in range(3)], rtol=1e-6)
    assert full.normalisers["ohem"] == 2
    np.testing.assert_allclose(full.loss_sums["ohem"].sum(), _ohem_rows(LOGITS, TARGETS, ratio=1.0).sum(), rtol=1e-9)


def test_torch_ohem_reference_counts_a_row_with_one_half_as_positive():
    """``losses.ohem``: rows 0 and 2 are positive (row 1's 0.49999997 is not), so 'mean' divides the
    kept sum by 2 and, with ratio 1, two of the three negative rows are kept."""
    x, y = torch.from_numpy(LOGITS).double(), torch.from_numpy(TARGETS).double()
    kept = _ohem_rows(LOGITS, TARGETS, ratio=1.0)
    assert int((kept > 0).sum()) == 4  # 2 positive rows + 2 negative rows: one row dropped
    np.testing.assert_allclose(losses.ohem(x, y, neg_pos_ratio=1.0, reduction="none").numpy(), kept, rtol=1e-12)
    assert losses.ohem(x, y, neg_pos_ratio=1.0, reduction="sum").item() == pytest.approx(kept.sum(), rel=1e-12)
    assert losses.ohem(x, y, neg_pos_ratio=1.0, reduction="mean").item() == pytest.approx(kept.sum() / 2, rel=1e-12)


def test_torch_ohem_with_only_sub_half_targets_has_no_positive_row():
    """Targets 0.49999997 only: no positive row, so no negative is kept and the loss is 0; the same
    rows with 0.5 instead keep row 0 and its ratio-1 hardest negative (row 1, logit 3 > 0.25)."""
    x = torch.tensor([[0.25, -1.0], [3.0, -2.0], [-1.0, -1.0]], dtype=torch.float64)
    below = torch.tensor([[float(BELOW), 0.0], [0.0, 0.0], [0.0, 0.0]], dtype=torch.float64)
    assert losses.ohem(x, below, neg_pos_ratio=1.0, reduction="sum").item() == 0.0
    half = below.clone()
    half[0, 0] = 0.5
    xs, ys = x.numpy(), half.numpy()
    expected = _bce(xs[0], ys[0]).sum() + _bce(xs[1], ys[1]).sum()
    assert losses.ohem(x, half, neg_pos_ratio=1.0, reduction="mean").item() == pytest.approx(expected, rel=1e-12)


def test_default_losses_see_two_targets_of_one_half_as_multi_label():
    """Two targets of 0.5 in one row are multi-label soft targets, so the defaults add ``asl``
    (besides qfl and vfl for soft targets); two of 0.49999997 are not."""
    base = np.zeros((3, 3), dtype=np.float32)
    logits = np.zeros((3, 3), dtype=np.float32)
    two_halves, two_below = base.copy(), base.copy()
    two_halves[0, :2] = HALF
    two_below[0, :2] = BELOW
    two_halves[1, 2] = two_below[1, 2] = 0.25
    with_half = lossaudit.compare(logits=logits, targets=two_halves).to_dict()
    with_below = lossaudit.compare(logits=logits, targets=two_below).to_dict()
    assert set(with_half["losses"]) == {"ce", "bce", "focal", "softmax-focal", "ghm", "qfl", "vfl", "asl"}
    assert set(with_below["losses"]) == {"ce", "bce", "focal", "softmax-focal", "ghm", "qfl", "vfl"}
    assert with_half["input"]["multi_hot_rows"] == 1 and with_below["input"]["multi_hot_rows"] == 0
