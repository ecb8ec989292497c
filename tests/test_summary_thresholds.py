"""Every rule of the report's summary (lossaudit/compare/report/summary.py) on both sides of its
threshold, and the exact wording it chooses.

The rules and what they compare (summary.py):

- ``fit``: fires only when sigmoid AND softmax losses are both shown; wording by ``data_kind``.
- ``easy-negatives``: the largest sigmoid ``easy_negative_share`` ``>= EASY_NEGATIVE_SHARE`` (0.5).
- ``rare-hard``: rare classes exist, >= 2 losses with a rare-hard share, and the largest minus the
  smallest share ``>= RARE_HARD_SPREAD`` (0.05).
- ``confidently-wrong``: very hard units / units ``<= NOISE_UNIT_SHARE`` (0.01) and the largest very-hard
  share of the first family ``>= NOISE_LOSS_SHARE`` (0.25).
- ``ghm-very-hard``: ghm's very-hard share / bce's ``>= GHM_CHANGE`` (1.5) or ``<= 1 / GHM_CHANGE``;
  "raises" when ghm > bce, "lowers" otherwise.
- ``findings``: the data findings not already stated by ``fit``.

Each pair below sits just above and just below a threshold, so a threshold loosened or tightened
10x (or a ``>=`` turned into ``>``, where the pair includes the exact boundary) fails one test.
The inputs are small report dicts (the keys the rules read, checked against a real report by
:func:`test_the_hand_made_report_has_the_real_reports_shape`), and two small dumps for GHM's two
directions with the expected shares computed in numpy from REFERENCES.md (GHM-C at momentum 0:
weight ``N_valid / c_bin / n_nonempty``). Expected wording is written out here with the numbers
formatted as the report does (one decimal for percentages, four significant digits for ratios)."""

from __future__ import annotations

import copy

import numpy as np
import pytest

import lossaudit
from lossaudit.compare.report.summary import summarise

pytestmark = pytest.mark.torch_free  # also run without torch, on every Python (.ci/run)

TAIL = "that much loss on so few elements looks like label noise or missed objects; inspect them before tuning the loss."


def _base() -> dict:
    """A report on which no rule fires: 100 valid elements (50 rows × 2 classes), bce and ghm
    (sigmoid only: no ``fit``), easy-negative shares 0.1 (< 0.5), no rare class, no very hard
    element, equal very-hard shares, no finding."""
    share = {"bce": 0.0, "ghm": 0.0}
    level = {"elements": 0, "positives": 0, "rows": None, "share": dict(share)}
    return {
        "input": {"data_kind": "detection", "rows": 50, "classes": 2, "valid_elements": 100, "background_rows": 10, "multi_hot_rows": 0},
        "losses": {
            loss: {"family": "sigmoid", "covers": {"unit": "elements", "count": 100}, "easy_negative_share": 0.1, "very_hard_share": 0.2}
            for loss in ("bce", "ghm")
        },
        "levels": [
            {**copy.deepcopy(level), "level": "easy", "elements": 60},
            {**copy.deepcopy(level), "level": "medium", "elements": 30},
            {**copy.deepcopy(level), "level": "hard", "elements": 10},
            {**copy.deepcopy(level), "level": "very hard"},
        ],
        "quadrants": {"rare_classes": [], "hard_from_g": 0.5, "cells": {"rare_hard": {"elements": 0, "rows": None, "share": dict(share)}}},
        "findings": [],
    }


def _rules(report: dict) -> dict[str, dict]:
    sentences = summarise(report)
    rules = {sentence["rule"]: sentence for sentence in sentences}
    assert len(rules) == len(sentences)  # at most one sentence per rule
    return rules


def _keys_within(made: object, real: object, where: str = "report") -> None:
    if isinstance(made, dict):
        assert isinstance(real, dict), where
        for key, value in made.items():
            if where.endswith("share") or where.endswith("losses"):  # keyed by loss name
                continue
            assert key in real, f"{where}[{key!r}]"
            _keys_within(value, real[key], f"{where}[{key!r}]")
    elif isinstance(made, list) and made and isinstance(made[0], dict):
        assert isinstance(real, list) and len(real) == len(made), where
        for i, (a, b) in enumerate(zip(made, real)):
            _keys_within(a, b, f"{where}[{i}]")


def test_the_hand_made_report_has_the_real_reports_shape():
    """Guard: every key :func:`_base` sets exists in a real ``compare`` report, and the rules read a
    real report the way ``compare`` does (its summary is ``summarise`` of itself)."""
    rng = np.random.default_rng(0)
    report = lossaudit.compare(
        logits=rng.normal(size=(40, 2)).astype(np.float32), targets=np.arange(40) % 3, background_index=2, losses=["bce", "ghm", "ce"]
    ).to_dict()
    _keys_within(_base(), report)
    for loss in ("bce", "ghm"):
        assert set(_base()["losses"]["bce"]) <= set(report["losses"][loss])
    assert summarise(report) == report["summary"]


def test_the_base_report_says_nothing():
    assert summarise(_base()) == []


# --- fit: both families shown ------------------------------------------------------------------


def _with_ce(report: dict) -> dict:
    report["losses"]["ce"] = {"family": "softmax", "covers": {"unit": "rows", "count": 40}, "easy_negative_share": None, "very_hard_share": 0.2}
    return report


def test_fit_speaks_with_both_families_in_detection_wording():
    """bce, ghm (sigmoid) and ce (softmax) on data with 10 background rows of 50: detection."""
    assert _rules(_with_ce(_base()))["fit"]["text"] == (
        "Detection-style data: 10 of 50 rows have no positive class, so the sigmoid losses (bce, ghm) are listed first; ce sees only the 40 rows with a target."
    )


def test_fit_speaks_in_single_label_wording():
    report = _with_ce(_base())
    report["input"].update(data_kind="single-label", background_rows=0)
    assert _rules(report)["fit"]["text"] == (
        "Single-label data (no background or multi-hot row among the 40 rows with a target), so the softmax losses (ce) "
        "are listed first; bce and ghm treat the 100 elements as 2 binary problems."
    )


def test_fit_is_silent_with_one_family():
    assert "fit" not in _rules(_base())  # bce and ghm only


# --- easy-negatives: EASY_NEGATIVE_SHARE = 0.5, fires at >= -------------------------------------


def test_easy_negatives_fires_at_exactly_half():
    """bce's easy-negative share 0.5 >= 0.5 fires (0.5 is exact in binary: a `>` or a threshold
    10x higher, 5.0, is silent here); 60 easy elements, none positive: 60 easy negatives, 60% of
    the 100 elements."""
    report = _base()
    report["losses"]["bce"]["easy_negative_share"] = 0.5
    report["losses"]["ghm"]["easy_negative_share"] = 0.3
    sentence = _rules(report)["easy-negatives"]
    assert sentence["text"] == "On these predictions, bce spends 50.0% of its loss on easy negatives (g < 0.1: 60 elements, 60.0% of all); ghm 30.0%."
    assert sentence["numbers"]["loss"] == "bce" and sentence["numbers"]["easy_negatives"] == 60


def test_easy_negatives_silent_just_below_half():
    """0.4999 < 0.5: silent (a threshold 10x lower, 0.05, fires here)."""
    report = _base()
    report["losses"]["bce"]["easy_negative_share"] = 0.4999
    report["losses"]["ghm"]["easy_negative_share"] = 0.3
    assert "easy-negatives" not in _rules(report)


def test_easy_negatives_names_the_largest_share_and_counts_negatives_only():
    """ghm 0.7 > bce 0.2: ghm is named; 60 easy elements of which 15 positives: 45 negatives, 45%."""
    report = _base()
    report["losses"]["ghm"]["easy_negative_share"] = 0.7
    report["losses"]["bce"]["easy_negative_share"] = 0.2
    report["levels"][0]["positives"] = 15
    assert _rules(report)["easy-negatives"]["text"] == (
        "On these predictions, ghm spends 70.0% of its loss on easy negatives (g < 0.1: 45 elements, 45.0% of all); bce 20.0%."
    )


# --- rare-hard: RARE_HARD_SPREAD = 0.05, fires at >= --------------------------------------------


def _rare_hard(top: float, low: float) -> dict:
    report = _base()
    report["quadrants"]["rare_classes"] = ["b"]
    report["quadrants"]["cells"]["rare_hard"] = {"elements": 3, "rows": None, "share": {"bce": top, "ghm": low}}
    return report


def test_rare_hard_fires_above_five_points():
    """0.36 − 0.30 = 0.06 ≥ 0.05 fires (a threshold 10x higher, 0.5, is silent)."""
    sentence = _rules(_rare_hard(0.36, 0.30))["rare-hard"]
    assert (
        sentence["text"]
        == "On these predictions, bce gives the rare-hard quadrant (rare classes b; g ≥ 0.5) the most weight: 36.0% of its loss, against 30.0% for ghm."
    )
    assert (sentence["numbers"]["loss"], sentence["numbers"]["least"]) == ("bce", "ghm")


def test_rare_hard_fires_at_exactly_five_points():
    """0.05 − 0.0 is exactly 0.05 in float64: ``>=`` fires, a ``>`` would not."""
    assert "rare-hard" in _rules(_rare_hard(0.05, 0.0))


def test_rare_hard_silent_below_five_points():
    """0.349 − 0.30 = 0.049 < 0.05: silent (a threshold 10x lower, 0.005, fires)."""
    assert "rare-hard" not in _rules(_rare_hard(0.349, 0.30))


def test_rare_hard_silent_without_rare_classes():
    report = _rare_hard(0.9, 0.0)
    report["quadrants"]["rare_classes"] = []
    assert "rare-hard" not in _rules(report)


def test_rare_hard_silent_when_the_quadrant_holds_no_element():
    """The shares only count for a loss whose unit (elements here) has some in the quadrant."""
    report = _rare_hard(0.9, 0.0)
    report["quadrants"]["cells"]["rare_hard"]["elements"] = 0
    assert "rare-hard" not in _rules(report)


# --- confidently-wrong: NOISE_UNIT_SHARE = 0.01 (<=), NOISE_LOSS_SHARE = 0.25 (>=) --------------------


def _noise(held: int, units: int, share: float, positives: int = 1) -> dict:
    report = _base()
    for loss in report["losses"].values():
        loss["covers"]["count"] = units
    report["input"]["valid_elements"] = units
    report["levels"][-1].update(elements=held, positives=positives, share={"bce": share, "ghm": 0.1})
    return report


def test_confidently_wrong_fires_at_one_percent_of_units_and_a_quarter_of_the_loss():
    """1 of 100 elements = 0.01 (1/100 rounds to the literal 0.01): not > 0.01; share 0.25 ≥ 0.25.
    Both exact: a threshold 10x tighter (0.001 or 2.5) is silent here."""
    sentence = _rules(_noise(1, 100, 0.25))["confidently-wrong"]
    assert sentence["text"] == (
        "1 of 100 elements (1.0%) is confidently wrong (g ≥ 0.9: 1 positive at p ≤ 0.1, 0 negatives at p ≥ 0.9) yet carries 25.0% of bce's loss: " + TAIL
    )
    assert sentence["numbers"] == {"loss": "bce", "unit": "elements", "very_hard": 1, "units": 100, "share": 0.25}


def test_confidently_wrong_silent_just_over_one_percent_of_units():
    """1 of 99 elements = 0.0101 > 0.01: silent (a threshold 10x looser, 0.1, fires)."""
    assert "confidently-wrong" not in _rules(_noise(1, 99, 0.9))


def test_confidently_wrong_silent_just_under_a_quarter_of_the_loss():
    """1 of 100 elements, share 0.2499 < 0.25: silent (a threshold 10x looser, 0.025, fires)."""
    assert "confidently-wrong" not in _rules(_noise(1, 100, 0.2499))


def test_confidently_wrong_plural_wording():
    """3 of 400 elements (0.75%), 2 of them positives, carry 60% of bce's loss."""
    assert _rules(_noise(3, 400, 0.6, positives=2))["confidently-wrong"]["text"] == (
        "3 of 400 elements (0.8%) are confidently wrong (g ≥ 0.9: 2 positives at p ≤ 0.1, 1 negative at p ≥ 0.9) yet carry 60.0% of bce's loss: " + TAIL
    )


# --- ghm-very-hard: GHM_CHANGE = 1.5, both directions -------------------------------------------


def _ghm(ghm: float, bce: float) -> dict:
    """10 very hard elements of 100 (10%: confidently-wrong stays silent)."""
    report = _base()
    report["levels"][-1].update(elements=10, share={"bce": 0.05, "ghm": 0.05})
    report["losses"]["ghm"]["very_hard_share"] = ghm
    report["losses"]["bce"]["very_hard_share"] = bce
    return report


def test_ghm_raises_at_one_and_a_half_times():
    """0.75 / 0.5 = 1.5 exactly ≥ 1.5: "raises", sparse bins (a threshold 10x higher, 15, is silent)."""
    sentence = _rules(_ghm(0.75, 0.5))["ghm-very-hard"]
    assert sentence["text"] == (
        "On these predictions, ghm raises the very hard elements' (g ≥ 0.9) share of the loss from bce's 50.0% to 75.0% (×1.5): "
        "GHM-C weights their bins more per unit of BCE loss than BCE's loss gets on average."
    )
    assert sentence["numbers"]["ratio"] == 1.5


def test_ghm_silent_just_under_one_and_a_half_times():
    """0.74 / 0.5 = 1.48 < 1.5 (and > 1/1.5): silent (a threshold 10x lower, 0.15, fires on any ratio)."""
    assert "ghm-very-hard" not in _rules(_ghm(0.74, 0.5))


def test_ghm_lowers_at_two_thirds():
    """0.5 / 0.75 and 1 / 1.5 are both 2/3 correctly rounded, so ``1/1.5 < ratio`` is false: "lowers",
    crowded bins, ratio ×0.6667."""
    sentence = _rules(_ghm(0.5, 0.75))["ghm-very-hard"]
    assert sentence["text"] == (
        "On these predictions, ghm lowers the very hard elements' (g ≥ 0.9) share of the loss from bce's 75.0% to 50.0% (×0.6667): "
        "GHM-C weights their bins less per unit of BCE loss than BCE's loss gets on average."
    )


def test_ghm_silent_just_over_two_thirds():
    """0.51 / 0.75 = 0.68 > 2/3: silent."""
    assert "ghm-very-hard" not in _rules(_ghm(0.51, 0.75))


def test_ghm_silent_without_very_hard_elements():
    report = _ghm(0.75, 0.25)
    report["levels"][-1]["elements"] = 0
    assert "ghm-very-hard" not in _rules(report)


# --- ghm-very-hard on real dumps, both directions ---------------------------------------------


def _bce(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0) - x * y + np.log1p(np.exp(-np.abs(x)))


def _very_hard_shares(x: np.ndarray, y: np.ndarray, bins: int = 10) -> tuple[float, float, float]:
    """(bce's, ghm's very-hard share, very-hard element share), from REFERENCES.md: g = |p − y|,
    bin floor(g · M) (g = 1 in the last bin), weight N_valid / c_bin / n_nonempty."""
    p = 1 / (1 + np.exp(-x))
    g = np.abs(p - y).ravel()
    bce = _bce(x, y).ravel()
    which = np.minimum((g * bins).astype(int), bins - 1)
    counts = np.bincount(which, minlength=bins)
    ghm = g.size / counts[which] / (counts > 0).sum() * bce
    hard = g >= 0.9
    return bce[hard].sum() / bce.sum(), ghm[hard].sum() / ghm.sum(), hard.mean()


def _ghm_weights(x: np.ndarray, y: np.ndarray, bins: int = 10) -> tuple[float, float]:
    """(GHM-C's weight on the very hard bin per unit of BCE loss, the weight averaged over BCE's
    whole loss): per bin, weight N_valid / c_bin / n_nonempty, as in :func:`_very_hard_shares`."""
    g = np.abs(1 / (1 + np.exp(-x)) - y).ravel()
    bce = _bce(x, y).ravel()
    which = np.minimum((g * bins).astype(int), bins - 1)
    counts = np.bincount(which, minlength=bins)
    weight = g.size / counts[which] / (counts > 0).sum()
    hard = g >= 0.9
    return (weight * bce)[hard].sum() / bce[hard].sum(), (weight * bce).sum() / bce.sum()


def _num(value: float) -> str:
    """lossaudit's num(): 4 significant digits."""
    return f"{value:.4g}"


def _ghm_sentence(x: np.ndarray, y: np.ndarray) -> dict:
    report = lossaudit.compare(logits=x.astype(np.float32), targets=y.astype(np.float32), losses=["bce", "ghm"]).to_dict()
    return {s["rule"]: s for s in report["summary"]}.get("ghm-very-hard")


def test_ghm_raises_on_a_dump_with_sparse_very_hard_elements():
    """1000 elements: 2 positives at logit −3 (g ≈ 0.95, bin 9) and 998 negatives at logit −2.5
    (g ≈ 0.076, bin 0). BCE gives the 2 about 7% of its loss; GHM-C weights them 250 and the
    others ≈ 0.5: nearly all of its loss."""
    x = np.full((250, 4), -2.5)
    y = np.zeros((250, 4))
    x[[3, 100], [0, 2]] = -3.0
    y[[3, 100], [0, 2]] = 1.0
    bce, ghm, element_share = _very_hard_shares(x, y)
    assert ghm / bce >= 1.5
    sentence = _ghm_sentence(x, y)
    assert sentence is not None
    weight, average = _ghm_weights(x, y)
    assert sentence["text"] == (
        f"On these predictions, ghm raises the very hard elements' (g ≥ 0.9) share of the loss from bce's {100 * bce:.1f}% to {100 * ghm:.1f}% "
        f"(×{ghm / bce:.4g}): GHM-C weights their bin (g ≥ 0.9, {100 * element_share:.1f}% of the elements) by {_num(weight)} per unit of "
        f"BCE loss, above the {_num(average)} that BCE's loss gets on average (the per-difficulty table's ghm weights)."
    )
    assert weight == pytest.approx(250) and ghm / bce == pytest.approx(weight / average)


def test_ghm_lowers_on_a_dump_with_crowded_very_hard_elements():
    """104 negatives: 100 at logit 2.5 (g ≈ 0.92, bin 9) and one each at 0.2, 0.6, 1.0, 1.6 (bins
    5 to 8). BCE gives the 100 about 98% of its loss; GHM-C averages the five bins' mean losses,
    so theirs falls to about a third."""
    x = np.full((26, 4), 2.5)
    x[0] = [0.2, 0.6, 1.0, 1.6]
    y = np.zeros_like(x)
    bce, ghm, element_share = _very_hard_shares(x, y)
    assert ghm / bce <= 1 / 1.5
    sentence = _ghm_sentence(x, y)
    assert sentence is not None
    weight, average = _ghm_weights(x, y)
    assert sentence["text"] == (
        f"On these predictions, ghm lowers the very hard elements' (g ≥ 0.9) share of the loss from bce's {100 * bce:.1f}% to {100 * ghm:.1f}% "
        f"(×{ghm / bce:.4g}): GHM-C weights their bin (g ≥ 0.9, {100 * element_share:.1f}% of the elements) by {_num(weight)} per unit of "
        f"BCE loss, below the {_num(average)} that BCE's loss gets on average (the per-difficulty table's ghm weights)."
    )
    assert ghm / bce == pytest.approx(weight / average)


# --- findings: what fit has not stated ------------------------------------------------------


FINDINGS = [{"code": "softmax-background", "count": 10}, {"code": "non-finite", "count": 3}]


def test_findings_leave_out_what_fit_states():
    report = _with_ce(_base())
    report["findings"] = copy.deepcopy(FINDINGS)
    assert _rules(report)["findings"]["text"] == "Data findings: 3 non-finite logits are excluded from every loss."


def test_findings_state_everything_without_fit():
    report = _base()
    report["findings"] = copy.deepcopy(FINDINGS)
    assert _rules(report)["findings"]["text"] == (
        "Data findings: 10 of 50 rows are background, which no softmax loss can use; 3 non-finite logits are excluded from every loss."
    )


def test_findings_silent_when_fit_stated_them_all():
    report = _with_ce(_base())
    report["findings"] = copy.deepcopy(FINDINGS[:1])
    assert "findings" not in _rules(report)


def test_every_rule_in_order():
    """All six rules firing at once come in the module's order."""
    report = _with_ce(_noise(1, 100, 0.5))
    report["levels"][-1]["elements"] = 1
    report["losses"]["bce"].update(easy_negative_share=0.6, very_hard_share=0.2)
    report["losses"]["ghm"]["very_hard_share"] = 0.8
    report["quadrants"]["rare_classes"] = ["b"]
    report["quadrants"]["cells"]["rare_hard"] = {"elements": 3, "rows": None, "share": {"bce": 0.4, "ghm": 0.1}}
    report["findings"] = copy.deepcopy(FINDINGS)
    assert [s["rule"] for s in summarise(report)] == ["fit", "easy-negatives", "rare-hard", "confidently-wrong", "ghm-very-hard", "findings"]
