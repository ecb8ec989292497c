"""Issue 21 point 5 (severities that match the harm), the false alarms of point 6 that live in the
alpha, gradient and hygiene rule groups, and point 3's statefulness judged by behaviour (FL013).

Fixtures: tests/fixtures/issue21/severity/{alpha,gradient,state}.py, one defect class each (their
docstrings give the findings before and after). The numbers are derived by hand from the
fixtures' formulas and lint's documented probe batches, not read off lint's output.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from lossaudit.lint.rules import RULES_BY_CODE
from tests.lint_helpers import run_audit

SEVERITY = Path(__file__).parent / "fixtures" / "issue21" / "severity"
ALPHA, GRADIENT, STATE = SEVERITY / "alpha.py", SEVERITY / "gradient.py", SEVERITY / "state.py"


def _loud(result) -> dict[str, object]:
    return {f.code: f for f in result.findings if f.severity != "info"}


def _by_code(result) -> dict[str, object]:
    return {f.code: f for f in result.findings}


# --------------------------------------------------------------------------------------------
# FL001 / FL002: alpha
# --------------------------------------------------------------------------------------------


def test_uniform_scalar_alpha_on_a_softmax_is_a_warning_naming_mmcv():
    """before: FL001 info; after: FL001 warning. loss(0.25)/loss(0.75) = 0.25/0.75 on any batch."""
    result = run_audit(ALPHA, "UniformAlphaSoftmaxFocal")
    assert result.detected["kind"] == "softmax" and result.detected["matched"]
    (finding,) = _loud(result).values()
    assert (finding.code, finding.severity) == ("FL001", "warning")
    assert "mmcv's softmax_focal_loss behaves the same" in finding.message and "rescales the loss" in finding.message and "without balancing" in finding.message
    assert finding.evidence["loss(alpha=0.25)/loss(alpha=0.75)"] == pytest.approx(0.25 / 0.75, rel=1e-5)
    assert "self.alpha * (1 - pt)" in ALPHA.read_text().splitlines()[finding.line - 1]


def test_two_level_alpha_balances_and_stays_info():
    """kornia's and MONAI's two-level alpha: info naming the convention (FL020), no FL001, before
    and after."""
    result = run_audit(ALPHA, "TwoLevelAlphaSoftmaxFocal")
    assert _loud(result) == {} and "FL001" not in _by_code(result)
    assert "kornia's and MONAI's" in _by_code(result)["FL020"].message and result.detected["alpha_scheme"] == "class-0"


def test_default_alpha_removing_a_side_is_a_warning():
    """before: FL019 info only; after: FL001 warning. An isolated element at logit 0 (p = 0.5):
    at alpha = 0.25 a negative's loss is 0.75 * 0.5^2 * ln 2 = 0.12997, a positive's
    0.25 * 0.5^2 * ln 2 = 0.043322; at the default (1, resp. 0) it is 0."""
    for symbol, removed, reference in (
        ("AlphaOneDefaultFocal", "negative", 0.75 * 0.25 * math.log(2)),
        ("alpha_zero_default_focal", "positive", 0.25 * 0.25 * math.log(2)),
    ):
        result = run_audit(ALPHA, symbol)
        (finding,) = _loud(result).values()
        assert (finding.code, finding.severity) == ("FL001", "warning"), symbol
        assert finding.evidence["removed"] == removed and f"removes every {removed}" in finding.message
        assert finding.evidence["loss(alpha=0.25)"] == pytest.approx(reference, rel=1e-4)
        assert abs(finding.evidence["loss_at_default"]) < 1e-12
    passed = run_audit(ALPHA, "AlphaOneDefaultFocal", {"alpha": 1.0})  # an alpha the caller passes is meant
    assert _loud(passed) == {}


def test_two_level_alpha_default_removing_class_0_is_a_warning():
    """before: FL020 info only; after: FL001 warning (class 0 weighted 1 - 1 = 0) beside FL020."""
    result = run_audit(ALPHA, "TwoLevelAlphaOneSoftmaxFocal")
    (finding,) = _loud(result).values()
    assert (finding.code, finding.severity) == ("FL001", "warning") and finding.evidence["removed"] == "class 0"
    assert "two-level" in finding.message and "FL020" in _by_code(result)


def test_softmax_alpha_without_effect_is_fl002():
    """before: FL014 error (no reference match); after: FL002 warning: loss(0.25)/loss(0.75) = 1."""
    result = run_audit(ALPHA, "IgnoredAlphaSoftmaxFocal", kind="softmax")
    (finding,) = _loud(result).values()
    assert (finding.code, finding.severity) == ("FL002", "warning") and "no effect" in finding.message
    assert finding.evidence["loss(alpha=0.25)/loss(alpha=0.75)"] == pytest.approx(1.0, abs=1e-9)


def test_fl001_text_states_each_severity():
    rule = RULES_BY_CODE["FL001"]
    assert rule.severity == "error"
    for words in ("mmcv's softmax_focal_loss", "warning", "two-level", "kornia and MONAI", "info", "alpha=1 zeroes every negative"):
        assert words in rule.explanation, words


# --------------------------------------------------------------------------------------------
# FL009: float32 and a small eps are not gradient mismatches
# --------------------------------------------------------------------------------------------


def test_probability_softmax_loss_with_a_tiny_clamp_is_clean():
    """before: FL009 at 2.1e-3 (the component off the simplex); after: clean."""
    result = run_audit(GRADIENT, "probability_softmax_focal")
    assert result.detected["inputs"] == "probs" and result.detected["matched"]
    assert "FL009" not in _by_code(result) and not any(note.startswith("FL009") for note in result.notes)


def test_detached_factor_on_probabilities_still_fires():
    """The projection hides nothing within the simplex: a detached factor is FL009, before and after."""
    finding = _by_code(run_audit(GRADIENT, "detached_probability_softmax_focal"))["FL009"]
    assert finding.evidence["compared"] == "along the simplex" and finding.evidence["max_rel_gradient_error"] > 10 * 1e-3


def test_eps_inside_a_log_is_clean_at_40_classes():
    """before: FL009 at 1.2e-3 (a row with p near 1e-3); after: clean, the batch's probabilities
    lie in [0.01, 0.99], so 1e-6 / p <= 1e-4."""
    for symbol in ("eps_log_softmax_focal", "reference_softmax_focal"):
        result = run_audit(GRADIENT, symbol, num_classes=40)
        assert result.detected["matched"] and result.findings == [], (symbol, [f.message for f in result.findings])


def test_a_probability_clamp_at_1e4_is_fl006_and_one_at_1e6_is_clean():
    """before: both clean; after: the clamp at 1e-4 is FL006 (lint's wrong elements sit at |logit| 12,
    p_t = sigmoid(-12) = 6.1e-6 < 1e-4), the one at 1e-6 stays clean (6.1e-6 > 1e-6)."""
    assert 1e-6 < 1 / (1 + math.exp(12)) < 1e-4
    result = run_audit(GRADIENT, "probability_clamp_1e4_focal")
    assert set(_loud(result)) == {"FL006"} and ".clamp(eps, 1 - eps)" in GRADIENT.read_text().splitlines()[_loud(result)["FL006"].line - 1]
    result = run_audit(GRADIENT, "probability_clamp_1e6_focal")
    assert result.detected["matched"] and _loud(result) == {}


def test_fl009_text_states_its_tolerances():
    text = RULES_BY_CODE["FL009"].explanation
    for words in ("1e-3", "eps <= 1e-6", "[0.01, 0.99]", "1e-4", "along the simplex", "FL006"):
        assert words in text, words
    assert (
        "p_t near 6e-6" in RULES_BY_CODE["FL006"].explanation
        and "then 12" in RULES_BY_CODE["FL006"].explanation
        and "1e-5 or wider" in RULES_BY_CODE["FL006"].explanation
    )


# --------------------------------------------------------------------------------------------
# FL013: does a call's result depend on earlier calls?
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("symbol", ["PartialFocal", "UnusedCounterFocal"])
def test_attributes_that_change_no_result_are_not_state(symbol):
    """before: FL013 error ('forward changes focal_loss_fn' / 'calls'); after: clean, the probe ran."""
    result = run_audit(STATE, symbol)
    assert result.detected["matched"] and _loud(result) == {}
    assert not any(note.startswith("FL013") for note in result.notes)


def test_running_mean_is_state():
    """before and after: FL013. The same batch A before and after a batch B: L_A first, then
    L_A^2 / (0.9 (0.9 L_A + 0.1 L_B) + 0.1 L_A), which differs unless L_B = L_A."""
    finding = _by_code(run_audit(STATE, "RunningMeanFocal"))["FL013"]
    first, again = finding.evidence["values"]
    assert first != pytest.approx(again, rel=1e-3) and "forward changes running" in finding.message


def test_a_normaliser_cached_from_the_first_batch_is_state():
    """before: clean; after: FL013. lint's sigmoid batches put one positive in each row but the
    last 3/8 (background): 10 positives in the first batch (16 rows), 7 in the second (12 rows).
    Divided by the first batch's 10 instead of its own 7, the second batch's loss is 7/10 of a
    fresh instance's."""
    finding = _by_code(run_audit(STATE, "CachedNormaliserFocal"))["FL013"]
    assert finding.severity == "error" and "depends on earlier calls" in finding.message
    assert finding.evidence["after_another_call"] / finding.evidence["fresh"] == pytest.approx(7 / 10, rel=1e-5)


def test_an_alpha_tensor_cached_from_the_first_batch_is_state():
    """before: clean; after: FL013: the 12-row batch cannot broadcast against the 16-row alpha_t
    (reported once: where the shapes group's FL030 reports the crash after an earlier call, FL013
    leaves it to FL030)."""
    result = run_audit(STATE, "CachedAlphaTensorFocal")
    findings = _by_code(result)
    assert "FL015" not in findings and ("FL013" in findings) != ("FL030" in findings)
    if "FL013" in findings:
        assert "16 rows" in findings["FL013"].message and "12 rows raises" in findings["FL013"].message
