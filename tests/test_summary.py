"""Each summary rule on a dump built to trigger it and on one built not to. Expected numbers come
from numpy formulas written out here (BCE, focal, GHM-C's bin weights), never from lossaudit."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import write_npz

pytestmark = pytest.mark.torch_free  # also run without torch, on every Python (.ci/run)


def _rules(report: dict) -> dict[str, dict]:
    return {sentence["rule"]: sentence for sentence in report["summary"]}


def _bce(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0) - x * y + np.log1p(np.exp(-np.abs(x)))


def _pct(value: float) -> str:
    return f"{100 * value:.1f}%"


def _detection(tmp_path, noisy: int = 0, hard_negatives: int = 0, classes: int = 5):
    """800 rows: every 8th row a positive of class (row // 8) % classes at p ≈ 0.95, the rest
    background with easy negatives (logit −6); ``noisy`` positives at logit −8 (p ≈ 3e-4) and
    ``hard_negatives`` negatives at logit +5 (p ≈ 0.99) are the confidently wrong elements."""
    rows = 800
    labels = np.full(rows, classes)
    positive_rows = np.arange(0, rows, 8)
    labels[positive_rows] = (positive_rows // 8) % classes
    logits = np.full((rows, classes), -6.0)
    logits[positive_rows, labels[positive_rows]] = 3.0
    logits[positive_rows[:noisy], labels[positive_rows[:noisy]]] = -8.0
    logits[1 : 1 + hard_negatives, 0] = 5.0  # rows 1.. are background
    path = write_npz(tmp_path / "d.npz", logits=logits.astype(np.float32), targets=labels)
    return path, logits.astype(np.float32).astype(np.float64), np.eye(classes + 1)[labels][:, :classes]


def test_fit_states_background_rows_and_who_sees_them(compare_json, tmp_path):
    path, _, y = _detection(tmp_path)
    sentence = _rules(compare_json(path))["fit"]["text"]
    background, foreground = int((y.sum(axis=1) == 0).sum()), int(y.sum())
    assert f"{background} of 800 rows have no positive class" in sentence
    assert f"see only the {foreground} rows with a target" in sentence


def test_fit_agrees_its_verb_with_one_loss(compare_json, tmp_path):
    """One softmax loss "sees", two "see" (before: "ce see the 320 rows")."""
    path, _, y = _detection(tmp_path)
    assert f"ce sees only the {int(y.sum())} rows with a target" in _rules(compare_json(path, "--losses", "bce,ce"))["fit"]["text"]


def test_plural_nouns():
    from lossaudit.render.formatting import plural

    assert [plural(1, "class"), plural(3, "class"), plural(2, "peak"), plural(1, "row"), plural(1234, "box")] == [
        "1 class",
        "3 classes",
        "2 peaks",
        "1 row",
        "1,234 boxes",
    ]


def test_fit_is_silent_with_one_family(compare_json, tmp_path):
    path, _, _ = _detection(tmp_path)
    assert "fit" not in _rules(compare_json(path, "--losses", "bce,focal"))


def test_easy_negatives_when_bce_spends_most_on_them(compare_json, tmp_path):
    path, x, y = _detection(tmp_path)
    bce = _bce(x, y)
    p = 1 / (1 + np.exp(-x))
    easy_negative = (y == 0) & (p < 0.1)
    share = bce[easy_negative].sum() / bce.sum()
    assert share >= 0.5
    sentence = _rules(compare_json(path, "--losses", "bce,focal"))["easy-negatives"]
    assert sentence["numbers"]["loss"] == "bce"
    assert sentence["numbers"]["shares"]["bce"] == pytest.approx(share, rel=1e-5)
    assert f"bce spends {_pct(share)} of its loss on easy negatives" in sentence["text"]
    assert f"{int(easy_negative.sum()):,} elements" in sentence["text"]


def test_easy_negatives_silent_when_negatives_are_not_easy(compare_json, tmp_path):
    labels = np.array([0, 1, 0, 1])
    logits = np.array([[1.0, 0.0], [0.0, 1.0], [2.0, -0.5], [-0.5, 2.0]], np.float32)  # negatives at p ≥ 0.38
    report = compare_json(write_npz(tmp_path / "n.npz", logits=logits, targets=labels), "--losses", "bce,focal")
    assert "easy-negatives" not in _rules(report)


def test_rare_hard_names_the_loss_that_weights_it_most(compare_json, tmp_path):
    """Class 0: 16 positives at p = 0.9; class 1 (rare: 2 < median 9 / 4, spread 8× ≥ 5×): 2 positives
    at p = 0.2. Negatives at p = 0.05. Hard (g ≥ 0.5): the rare positives only."""
    labels = np.array([0] * 16 + [1, 1])
    p = np.where(np.eye(2)[labels] == 1, np.where(labels[:, None] == 0, 0.9, 0.2), 0.05)
    x = np.log(p / (1 - p))
    y = np.eye(2)[labels]
    bce = _bce(x, y)
    focal = np.where(y == 1, 0.25, 0.75) * np.abs(y - p) ** 2 * bce
    rare_hard = y[:, 1] == 1
    shares = {"bce": bce[rare_hard, 1].sum() / bce.sum(), "focal": focal[rare_hard, 1].sum() / focal.sum()}
    report = compare_json(write_npz(tmp_path / "r.npz", logits=x.astype(np.float32), targets=labels), "--losses", "bce,focal")
    sentence = _rules(report)["rare-hard"]
    top, low = max(shares, key=shares.get), min(shares, key=shares.get)
    assert (sentence["numbers"]["loss"], sentence["numbers"]["least"]) == (top, low)
    assert f"{_pct(shares[top])} of its loss, against {_pct(shares[low])} for {low}" in sentence["text"]


def test_rare_hard_silent_without_rare_classes(compare_json, tmp_path):
    path, _, _ = _detection(tmp_path)  # 20 positives in each of the 5 classes: none below the median
    assert "rare-hard" not in _rules(compare_json(path))


def test_confidently_wrong_when_few_confident_mistakes_carry_the_loss(compare_json, tmp_path):
    path, x, y = _detection(tmp_path, noisy=2, hard_negatives=3)
    p = 1 / (1 + np.exp(-x))
    very_hard = np.abs(p - y) >= 0.9
    focal = np.where(y == 1, 0.25, 0.75) * np.abs(y - p) ** 2 * _bce(x, y)
    share = focal[very_hard].sum() / focal.sum()
    assert very_hard.sum() == 5 and share >= 0.25
    sentence = _rules(compare_json(path, "--losses", "bce,focal"))["confidently-wrong"]
    assert sentence["numbers"]["loss"] == "focal" and sentence["numbers"]["share"] == pytest.approx(share, rel=1e-5)
    assert "5 of 4,000 elements (0.1%) are confidently wrong"  # 5 / 4000 = 0.125% in sentence["text"]
    assert "2 positives at p ≤ 0.1, 3 negatives at p ≥ 0.9" in sentence["text"]
    assert f"{_pct(share)} of focal's loss" in sentence["text"]


def test_confidently_wrong_silent_without_confident_mistakes(compare_json, tmp_path):
    path, _, _ = _detection(tmp_path)
    assert "confidently-wrong" not in _rules(compare_json(path, "--losses", "bce,focal"))


def _ghm_share_of_very_hard(x: np.ndarray, y: np.ndarray, bins: int = 10) -> float:
    """mmdet GHM-C at momentum 0: weight N / (count of the element's bin × non-empty bins)."""
    g = np.abs(1 / (1 + np.exp(-x)) - y).ravel()
    which = np.minimum(np.floor(g * bins).astype(int), bins - 1)
    counts = np.bincount(which, minlength=bins)
    weight = g.size / counts[which] / (counts > 0).sum()
    loss = weight * _bce(x, y).ravel()
    return loss[g >= 0.9].sum() / loss.sum()


def test_ghm_very_hard_when_ghm_changes_their_share(compare_json, tmp_path):
    path, x, y = _detection(tmp_path, noisy=2)
    bce = _bce(x, y)
    p = 1 / (1 + np.exp(-x))
    bce_share = bce[np.abs(p - y) >= 0.9].sum() / bce.sum()
    ghm_share = _ghm_share_of_very_hard(x, y)
    assert ghm_share / bce_share >= 1.5
    sentence = _rules(compare_json(path, "--losses", "bce,ghm"))["ghm-very-hard"]
    assert sentence["numbers"]["ghm"] == pytest.approx(ghm_share, rel=1e-5)
    assert f"ghm raises the very hard elements' (g ≥ 0.9) share of the loss from bce's {_pct(bce_share)} to {_pct(ghm_share)}" in sentence["text"]


def test_ghm_very_hard_silent_without_very_hard_elements(compare_json, tmp_path):
    path, _, _ = _detection(tmp_path)
    assert "ghm-very-hard" not in _rules(compare_json(path, "--losses", "bce,ghm"))


def test_findings_sentence_counts_them(compare_json, tmp_path):
    logits = np.array([[np.nan, 0.0], [1.0, np.inf], [0.5, -0.5]], np.float32)
    report = compare_json(write_npz(tmp_path / "f.npz", logits=logits, targets=np.array([0, 0, 0])), "--losses", "bce")
    text = _rules(report)["findings"]["text"]
    assert "2 non-finite logits are excluded from every loss" in text
    assert "1 class has no positive (1)" in text


def test_findings_silent_on_clean_data(compare_json, tmp_path):
    path, _, _ = _detection(tmp_path)
    assert "findings" not in _rules(compare_json(path, "--losses", "bce"))


def test_examples_summaries_hold_three_to_six_sentences(compare_json):
    from pathlib import Path

    for dump in sorted((Path(__file__).parent.parent / "examples").glob("*.npz")):
        assert 3 <= len(compare_json(dump, "--isolated")["summary"]) <= 6, dump
