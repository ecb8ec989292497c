"""What ``compare`` says about the model (issue 22, points 2 and 10): recall per class, the classes it
misses, the confidently wrong units by cause, and the imbalance advice.

Small cases whose every count is derived by hand in the docstrings, then the imbalance advice on a
real long-tailed classifier (scikit-learn's digits and wine), whose shares are recomputed here with
``lossaudit.losses`` in torch (autograd for the gradient shares) — not with compare's numpy engine."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lossaudit
from lossaudit import losses

sklearn = pytest.importorskip("sklearn")

from sklearn.datasets import load_digits, load_wine  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402

EASY = -6.0  # p = 0.0025: an easy negative


def _map_case() -> tuple[np.ndarray, np.ndarray]:
    """One 3 × 3 map, 3 classes, logits ``(1, 3, 3, 3)``, one-hot targets; cells (h, w):

    - (0,0) class 0 positive at logit −6 (p ≤ 0.1), and class 0 fires at (0,1) (logit 3, p = 0.95,
      not a target): the object found one cell off — 2 ``shifted`` units (the miss, and the
      negative at p ≥ 0.9 beside a positive of its class);
    - (1,1) class 1 positive at −4, class 2 at 1 there (p = 0.73 ≥ 0.5): ``confused`` (1 as 2);
    - (1,2) class 2 positive at 4 (right), class 0 at 3 there (p ≥ 0.9, no class-0 positive next
      to it): ``confused`` (2 as 0);
    - (2,2) class 2 positive at −5, nothing around: an isolated miss;
    - (2,0) background, class 1 at 4: no class-1 positive next to it (cells (1,0), (2,1)): a false
      positive;
    - (0,2) class 1 positive at 5: right.

    Very hard: 3 positives + 3 negatives = 6. Recall at p > 0.5: class 0 0/1, class 1 1/2,
    class 2 1/2: class 0 is missed (< 0.5). No rare class (1, 2, 2 positives: spread 2 < 5).
    Isolated misses + false positives = 2 < 6 / 2: not label noise."""
    x = np.full((1, 3, 3, 3), EASY, dtype=np.float32)
    y = np.zeros_like(x)

    def put(c, h, w, logit, target=0.0):
        x[0, c, h, w], y[0, c, h, w] = logit, target

    put(0, 0, 0, -6.0, 1)
    put(0, 0, 1, 3.0)
    put(1, 1, 1, -4.0, 1)
    put(2, 1, 1, 1.0)
    put(2, 1, 2, 4.0, 1)
    put(0, 1, 2, 3.0)
    put(2, 2, 2, -5.0, 1)
    put(1, 2, 0, 4.0)
    put(1, 0, 2, 5.0, 1)
    return x, y


def test_confidently_wrong_elements_by_cause_on_a_map():
    x, y = _map_case()
    report = lossaudit.compare(logits=x, targets=y, losses=["bce", "focal"]).to_dict()
    assert report["input"]["row_noun"] == "cells" and report["input"]["recall_rule"] == "p > 0.5"
    mistakes = report["mistakes"]
    assert mistakes["unit"] == "elements" and mistakes["very_hard"] == 6 == report["levels"][-1]["elements"]
    assert mistakes["causes"] == {"shifted": 2, "missed_rare": 0, "missed_class": 0, "confused": 2, "missed": 1, "false_positive": 1}
    assert mistakes["label_noise"] is False
    assert sorted((pair["true"], pair["predicted"], pair["count"]) for pair in mistakes["confusions"]) == [("1", "2", 1), ("2", "0", 1)]
    assert [row["recall"] for row in report["per_class"]] == [0.0, 0.5, 0.5]
    missed = {s["rule"]: s for s in report["summary"]}["missed-classes"]
    assert missed["numbers"]["classes"] == ["0"] and missed["numbers"]["per_class"]["0"]["recall"] == 0.0


def test_shifted_needs_the_same_image():
    """Two 1 × 2 maps, class 0: image 0 holds a positive at (0,1) at logit −6; image 1 fires class 0
    at (0,0) (logit 3). In row-major order these cells are neighbours in memory (rows 1 and 2), but
    not on a map: a miss and a false positive, not ``shifted``."""
    x = np.full((2, 1, 1, 2), EASY, dtype=np.float32)
    y = np.zeros_like(x)
    x[0, 0, 0, 1], y[0, 0, 0, 1] = -6.0, 1
    x[1, 0, 0, 0] = 3.0
    causes = lossaudit.compare(logits=x, targets=y, losses=["bce"]).to_dict()["mistakes"]["causes"]
    assert causes["shifted"] == 0 and causes["false_positive"] == 1 and causes["missed"] + causes["missed_class"] == 1


def _softmax_case() -> tuple[np.ndarray, np.ndarray]:
    """Six rows, 3 classes, labels 0 0 1 1 2 2:

    - row 0 (label 0) [5, 0, 0]: right; row 1 (label 0) [0, 5, 0]: wrong, argmax 1, q_0 = 1 / (e^5 + 2)
      = 0.0066 ≤ 0.1: confidently wrong, confused (0 as 1);
    - rows 2, 3 (label 1) [0, 5, 0], [0, 1, 0.5]: right;
    - row 4 (label 2) [0, 0, 5]: right; row 5 (label 2) [1, 1, 1]: argmax 0 (the first maximum),
      q = 1/3: wrong (2 as 0), not confidently.

    Recall at the argmax: 1/2, 2/2, 1/2 (none below 0.5). Argmax confusions (0, 1) and (2, 0)."""
    x = np.array([[5, 0, 0], [0, 5, 0], [0, 5, 0], [0, 1, 0.5], [0, 0, 5], [1, 1, 1]], dtype=np.float32)
    return x, np.array([0, 0, 1, 1, 2, 2])


@pytest.mark.parametrize("loss_ids", [["ce"], ["cb-ce"]], ids=["core-softmax", "softmax-family-only"])
def test_recall_at_the_argmax_on_single_label_rows(loss_ids):
    x, labels = _softmax_case()
    report = lossaudit.compare(logits=x, targets=labels, losses=loss_ids).to_dict()
    assert report["input"]["recall_rule"] == "argmax"
    assert [row["recall"] for row in report["per_class"]] == [0.5, 1.0, 0.5]
    mistakes = report["mistakes"]
    assert mistakes["unit"] == "rows" and mistakes["very_hard"] == 1
    assert mistakes["causes"]["confused"] == 1 and mistakes["confusions"] == [{"true": "0", "predicted": "1", "count": 1}]
    assert "missed-classes" not in {s["rule"] for s in report["summary"]}


# --- the imbalance advice on real classifiers ---------------------------------------------------


def _long_tailed(x: np.ndarray, y: np.ndarray, tail: dict[int, int], split: int, c: float) -> tuple[np.ndarray, np.ndarray]:
    """A seeded multinomial logistic regression trained on the first ``split`` rows cut to a long
    tail (class → rows kept, in training and validation alike); validation logits and labels."""

    def cut(rows: np.ndarray) -> np.ndarray:
        keep = np.ones(len(rows), bool)
        for label, n in tail.items():
            keep[np.nonzero(y[rows] == label)[0][n:]] = False
        return rows[keep]

    order = np.random.default_rng(0).permutation(len(y))
    train, valid = cut(order[:split]), cut(order[split:])
    scale = x[train].std(axis=0) + 1e-9
    model = LogisticRegression(C=c, max_iter=500, random_state=0).fit(x[train] / scale, y[train])
    return model.decision_function(x[valid] / scale).astype(np.float32), y[valid].astype(np.int64)


def _digits():
    x, y = load_digits(return_X_y=True)
    return _long_tailed(x, y, {3: 3, 5: 4, 8: 6}, 1200, 0.1)


def _wine():
    x, y = load_wine(return_X_y=True)  # 59, 71, 48 rows
    return _long_tailed(x, y, {2: 3}, 100, 0.05)


def _rare_shares(per_row: torch.Tensor, logits: torch.Tensor, rare_rows: torch.Tensor) -> tuple[float, float]:
    """(the rare rows' share of the summed loss, of its gradient magnitude Σ |∂L/∂x|)."""
    (gradient,) = torch.autograd.grad(per_row.sum(), logits)
    magnitude = gradient.abs().sum(dim=1)
    per_row = per_row.detach()
    return float(per_row[rare_rows].sum() / per_row.sum()), float(magnitude[rare_rows].sum() / magnitude.sum())


@pytest.mark.parametrize("make", [_digits, _wine], ids=["digits", "wine"])
def test_imbalance_advice_equals_the_losses_in_torch(make):
    logits, labels = make()
    counts = np.bincount(labels, minlength=logits.shape[1])
    median = float(np.median(counts))
    rare = (counts < 0.25 * median) & (counts.max() / max(counts.min(), 1) >= 5)
    assert rare.any()
    report = lossaudit.compare(logits=logits, targets=labels).to_dict()  # the defaults: ce, softmax-focal, ...
    section = report["imbalance"]
    assert section["rare_classes"] == {str(c): int(counts[c]) for c in np.nonzero(rare)[0]}
    x = torch.tensor(logits, dtype=torch.float64, requires_grad=True)
    t = torch.tensor(labels)
    rare_rows = torch.tensor(rare[labels])
    counts_t = torch.tensor(counts, dtype=torch.float64)
    expected = {
        "ce": losses.ce(x, t, reduction="none"),
        "cb-ce (beta 0.9999)": losses.cb(x, t, counts_t, beta=0.9999, reduction="none"),
        "logit-adjusted-ce (tau 1)": losses.logit_adjusted_ce(x, t, counts_t, tau=1.0, reduction="none"),
        "softmax-focal (gamma 2)": losses.softmax_focal(x, t, gamma=2.0, reduction="none"),
        "softmax-focal with alpha per class": losses.softmax_focal(x, t, gamma=2.0, alpha=list((1 / counts) / np.mean(1 / counts)), reduction="none"),
    }
    got = {entry["label"]: entry for entry in section["losses"]}
    assert set(got) == set(expected)
    for label, per_row in expected.items():
        share, gradient_share = _rare_shares(per_row, x, rare_rows)
        assert got[label]["rare_share"] == pytest.approx(share, rel=1e-5), label
        assert got[label]["rare_gradient_share"] == pytest.approx(gradient_share, rel=1e-4), label
    # how the model does on the rare classes: pooled over their rows, at the argmax
    q = torch.softmax(x.detach(), dim=1)[torch.arange(len(t)), t].numpy()
    right = logits.argmax(axis=1) == labels
    assert section["rare"]["mean_p"] == pytest.approx(q[rare[labels]].mean(), rel=1e-5)
    assert section["rare"]["recall"] == pytest.approx(right[rare[labels]].mean())
    sentence = {s["rule"]: s for s in report["summary"]}["imbalance"]
    assert all(f"{label} " in sentence["text"] for label in expected)
    names, sizes = [str(c) for c in np.nonzero(rare)[0]], [str(counts[c]) for c in np.nonzero(rare)[0]]

    def listed(items):
        return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]

    assert (
        f"the rare {'class' if len(names) == 1 else 'classes'} {listed(names)} {'has' if len(names) == 1 else 'have'} {listed(sizes)} "
        f"positives against the median class's {round(median)}"
    ) in sentence["text"]


def test_no_imbalance_section_on_balanced_wine():
    x, y = load_wine(return_X_y=True)
    logits, labels = _long_tailed(x, y, {}, 100, 0.05)
    report = lossaudit.compare(logits=logits, targets=labels).to_dict()
    assert report["imbalance"] is None and "imbalance" not in {s["rule"] for s in report["summary"]}
