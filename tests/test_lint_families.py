"""Issue 15's lint work: class weights (FL023 weighted-p_t, FL024 double-weighting) on the focal
kinds. Fixtures in tests/fixtures/family_losses.py (the one-per-rule fixtures of FL023 and FL024
are in buggy_losses.py, with the other rules'). Every expected number is derived here by hand."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from tests.lint_helpers import run_audit

FIXTURES = Path(__file__).parent / "fixtures"
FAMILY, BUGGY = FIXTURES / "family_losses.py", FIXTURES / "buggy_losses.py"


def _loud(result) -> list[str]:
    return [f"{f.code} {f.severity}: {f.message}" for f in result.findings if f.severity != "info"]


def _ratio(factor, p_a: float, p_b: float) -> float:
    """Loss ratio of one element at p_a and at p_b: factor(p) * -log(p)."""
    return factor(p_a) * math.log(p_a) / (factor(p_b) * math.log(p_b))


@pytest.mark.parametrize("symbol", ["WeightedSoftmaxFocalLoss", "weighted_sigmoid_focal_loss"])
def test_a_class_weight_applied_once_lints_clean_and_is_probed(symbol):
    result = run_audit(FAMILY, symbol)
    assert result.findings == [], _loud(result)
    assert not any(note.startswith(("FL023", "FL024")) for note in result.notes), result.notes


# symbol -> (file, code, probe, text on the line the finding points at)
WEIGHT_BUGS = {
    "FastaiWeightedFocal": (BUGGY, "FL023", "probe_weighted_p_t", "torch.exp(-ce)"),
    "pos_weight_exp_focal": (FAMILY, "FL023", "probe_weighted_p_t", "torch.exp(-bce)"),
    "WeightTwiceSoftmax": (BUGGY, "FL024", "probe_double_weighting", "weight.to(logits.dtype)[target] *"),
    "pos_weight_plus_alpha_focal": (FAMILY, "FL024", "probe_double_weighting", "alpha_t * pos_weight"),
}


@pytest.mark.parametrize("symbol", sorted(WEIGHT_BUGS))
def test_weight_bugs_fire_alone_at_their_line(symbol):
    path, code, probe, marker = WEIGHT_BUGS[symbol]
    result = run_audit(path, symbol)
    assert [f.code for f in result.findings] == [code], _loud(result)
    finding = result.findings[0]
    assert finding.evidence["probe"] == probe and finding.fix
    assert marker in path.read_text().splitlines()[finding.line - 1]


def test_weighted_p_t_evidence_is_the_p_t_power_w_factor():
    """Softmax row at q = 0.8 and 0.3, gamma 2, its class weighted 3: exp(-3 CE) = q**3, so the
    ratio is (1 - 0.8**3)**2 ln 0.8 / ((1 - 0.3**3)**2 ln 0.3) against (0.2**2 ln 0.8) / (0.7**2 ln 0.3)."""
    finding = run_audit(BUGGY, "FastaiWeightedFocal").findings[0]
    observed = finding.evidence["observed_ratio"]["target class"]
    uniform = finding.evidence["uniform_weight_ratio"]["target class"]
    assert observed == pytest.approx(_ratio(lambda q: (1 - q**3) ** 2, 0.8, 0.3), rel=1e-3)
    assert uniform == pytest.approx(_ratio(lambda q: (1 - q) ** 2, 0.8, 0.3), rel=1e-3)


def test_double_weighting_evidence_is_k_squared():
    for path, symbol in ((BUGGY, "WeightTwiceSoftmax"), (FAMILY, "pos_weight_plus_alpha_focal")):
        finding = run_audit(path, symbol).findings[0]
        assert finding.evidence["loss_growth"] == pytest.approx(3.0**2, rel=1e-4) and finding.evidence["expected_growth"] == 3.0
