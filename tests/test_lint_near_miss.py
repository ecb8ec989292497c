"""Near misses pin lint's tolerances: for each rule with a tolerance, a fixture barely over it
(the rule must fire) and one barely under it (the rule must not). Each fixture's deviation is
built to a known size (tests/fixtures/near_miss/*.py, docstrings); the buggy ones' evidence is
checked to show that size, so a changed probe batch cannot silently move a fixture away from its
tolerance. Loosening a tolerance 10x lets a barely-buggy fixture through; tightening it 10x flags a
barely-clean one.

Also: calibration's tie-break between two readings with equal error (calibrate.py ``_prefer``),
and suppression comments and rule-code options in other cases than the README shows.

Only public entry points: ``lossaudit.lint`` (objects are audited in this process, which is fast;
suppression comments need a file target, so those go through the CLI).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

import lossaudit
from lossaudit.cli import app
from tests.fixtures.near_miss import alpha_ratio, coupling, factor, gradient, ignore, match, precision, saturated, simplex, tie_break

NEAR_MISS = Path(__file__).parent / "fixtures" / "near_miss"

# The tolerances these tests pin, written out (not imported: lint's internals are being moved).
RATIO_TOLERANCE = 0.03  # lossaudit/lint/probes.py RATIO_TOLERANCE: FL001, FL002, FL004 (also FL010, FL023, FL024)
COUPLING_TOLERANCE = 1e-5  # lossaudit/lint/probes.py COUPLING_TOLERANCE: FL008 (and FL003 within a row)
GRADIENT_TOLERANCE = 1e-3  # lossaudit/lint/probes.py GRADIENT_TOLERANCE: FL009
PROBABILITY_FLOOR = (
    0.01  # rules/gradient.py PROBABILITY_FLOOR: FL009's batch keeps probabilities in [0.01, 0.99], so eps <= 1e-6 in a log moves a gradient <= 1e-4
)
MATCH_TOLERANCE = 1e-4  # lossaudit/lint/subject.py MATCH_TOLERANCE: calibration's match, FL014
HALF_TOLERANCE = 50 * 2.0**-10  # probes.py _precision_tolerance: max(50 eps, 5 x own deviation), float16 (README: FL017)
SATURATION_THRESHOLD = 1e-3  # probes.py probe_saturated_gradient: FL006 when observed < 1e-3 x the reference's ratio
IGNORE_THRESHOLD = 1e-6  # probes.py probe_ignore_index: FL011 when ignored rows move the loss by > 1e-6 relative


def _audit(fn, **options) -> tuple[dict, dict]:
    """(detected, {code: finding dict}) of one in-process audit."""
    target = lossaudit.lint(fn, **options).to_dict()["targets"][0]
    return target["detected"], {finding["code"]: finding for finding in target["findings"]}


def _barely_over(value: float, tolerance: float) -> bool:
    return tolerance < value < 10 * tolerance


# --------------------------------------------------------------------------------------------
# Tolerances: one barely-buggy and one barely-clean fixture each
# --------------------------------------------------------------------------------------------


def test_gradient_tolerance_fl009():
    """GRADIENT_TOLERANCE: gradient 3e-3 off fires FL009, 3e-4 off does not; values exact in both."""
    detected, findings = _audit(gradient.focal_gradient_3e3)
    assert detected["matched"] and set(findings) == {"FL009"}
    error = findings["FL009"]["evidence"]["max_rel_gradient_error"]
    assert math.isclose(error, 3e-3, rel_tol=1e-3) and _barely_over(error, GRADIENT_TOLERANCE)
    detected, findings = _audit(gradient.focal_gradient_3e4)
    assert detected["matched"] and findings == {}


def test_gradient_tolerance_fl009_along_the_simplex():
    """A softmax loss of probabilities is compared along the simplex: its gradient 3e-3 off there
    fires FL009, 3e-4 off does not, though both differ from the reference by ~2e-3 off the simplex
    (the reference renormalises the probabilities, the loss does not). FL009's batch keeps every
    probability in [PROBABILITY_FLOOR, 1 - PROBABILITY_FLOOR]."""
    detected, findings = _audit(simplex.probability_focal_3e3)
    assert detected["matched"] and detected["inputs"] == "probs" and set(findings) == {"FL009"}
    evidence = findings["FL009"]["evidence"]
    assert evidence["compared"] == "along the simplex" and "along the simplex" in findings["FL009"]["message"]
    error = evidence["max_rel_gradient_error"]
    assert math.isclose(error, 3e-3, rel_tol=1e-2) and _barely_over(error, GRADIENT_TOLERANCE)
    low, high = evidence["probability_range"]
    assert PROBABILITY_FLOOR <= low and high <= 1 - PROBABILITY_FLOOR
    detected, findings = _audit(simplex.probability_focal_3e4)
    assert detected["matched"] and findings == {}


def test_ratio_tolerance_fl002():
    """RATIO_TOLERANCE on alpha's balance: the negative's ratio 4.5% off 3 fires FL002, 2% off does not."""
    detected, findings = _audit(alpha_ratio.focal_negatives_4p5pc)
    assert detected["matched"] and set(findings) == {"FL002"}
    ratios = findings["FL002"]["evidence"]["loss(alpha=0.25)/loss(alpha=0.75)"]
    assert math.isclose(ratios["positive"], 1 / 3, rel_tol=1e-4) and math.isclose(ratios["negative"], 3 * 1.045, rel_tol=1e-4)
    assert _barely_over(ratios["negative"] / 3 - 1, RATIO_TOLERANCE)
    detected, findings = _audit(alpha_ratio.focal_negatives_2pc)
    assert detected["matched"] and findings == {}


def test_ratio_tolerance_fl001():
    """RATIO_TOLERANCE on constant alpha: a negative's ratio 2% from the positive's 1/3 is still
    'alike' (FL001, not FL002); 4.5% from it is not (no FL001; FL002 for the wrong balance)."""
    _, findings = _audit(alpha_ratio.focal_almost_constant_2pc)
    assert set(findings) == {"FL001"}
    negative = findings["FL001"]["evidence"]["loss(alpha=0.25)/loss(alpha=0.75)"]["negative"]
    assert math.isclose(negative, 1.02 / 3, rel_tol=1e-4) and abs(negative * 3 - 1) < RATIO_TOLERANCE
    assert findings["FL001"]["evidence"]["alpha_reading"] == "constant"
    _, findings = _audit(alpha_ratio.focal_almost_constant_4p5pc)
    assert "FL001" not in findings and set(findings) == {"FL002"}
    negative = findings["FL002"]["evidence"]["loss(alpha=0.25)/loss(alpha=0.75)"]["negative"]
    assert math.isclose(negative, 1.045 / 3, rel_tol=1e-4) and _barely_over(negative * 3 - 1, RATIO_TOLERANCE)


def test_ratio_tolerance_fl004():
    """RATIO_TOLERANCE on the modulating factor: the positive's ratio 4.5% off fires FL004, 2% off
    does not (it is then reported as FL014: its values match no reference, and no value rule
    explains why)."""
    _, findings = _audit(factor.focal_factor_4p5pc)
    assert set(findings) == {"FL004"}
    evidence = findings["FL004"]["evidence"]
    off = evidence["observed_ratio"]["positive"] / evidence["expected_ratio"]["positive"] - 1
    assert math.isclose(off, 0.045, rel_tol=1e-3) and _barely_over(off, RATIO_TOLERANCE)
    assert math.isclose(evidence["observed_ratio"]["negative"], evidence["expected_ratio"]["negative"], rel_tol=1e-5)
    _, findings = _audit(factor.focal_factor_2pc)
    assert set(findings) == {"FL014"}


def test_coupling_tolerance_fl008():
    """COUPLING_TOLERANCE: other rows' gradients moving by 3e-5 (relative) fire FL008, by 3e-6 do
    not (nor FL003, whose within-row change is the same size)."""
    detected, findings = _audit(coupling.focal_coupled_3e5)
    assert detected["matched"] and set(findings) == {"FL008"}
    cross = findings["FL008"]["evidence"]["max_relative_gradient_change_other_rows"]
    assert math.isclose(cross, 3e-5, rel_tol=0.02) and _barely_over(cross, COUPLING_TOLERANCE)  # the fixture's G is lint's batch's
    detected, findings = _audit(coupling.focal_coupled_3e6)
    assert detected["matched"] and findings == {}


def test_match_tolerance_fl014():
    """MATCH_TOLERANCE: values 3e-4 off match no reference (FL014); 3e-5 off match."""
    detected, findings = _audit(match.focal_value_3e4)
    assert not detected["matched"] and set(findings) == {"FL014"}
    error = findings["FL014"]["evidence"]["rel_error"]
    assert findings["FL014"]["evidence"]["closest_normalisation"] == "sum"
    assert math.isclose(error, 3e-4, rel_tol=0.01) and _barely_over(error, MATCH_TOLERANCE)
    detected, findings = _audit(match.focal_value_3e5)
    assert detected["matched"] and detected["normalisation"] == "sum" and findings == {}
    assert math.isclose(detected["max_rel_error"], 3e-5, rel_tol=0.01) and MATCH_TOLERANCE / 10 < detected["max_rel_error"] < MATCH_TOLERANCE


def test_low_precision_tolerance_fl017():
    """FL017's float16 tolerance, 50 eps: float16 results 1.5 x 50 eps off fire FL017, 0.6 x do not."""
    _, findings = _audit(precision.focal_half_1p5x)
    assert set(findings) == {"FL017"}
    evidence = findings["FL017"]["evidence"]
    assert evidence["dtype"] == "float16" and math.isclose(evidence["tolerance"], HALF_TOLERANCE, rel_tol=1e-4)
    assert math.isclose(evidence["deviation"], 1.5 * HALF_TOLERANCE, rel_tol=1e-3)
    _, findings = _audit(precision.focal_half_0p6x)
    assert findings == {}


def test_saturation_threshold_fl006():
    """FL006: confidently wrong gradients at 5e-4 of the reference's fire it, at 2e-3 do not."""
    _, findings = _audit(saturated.focal_damped_5e4)
    assert set(findings) == {"FL006"}
    evidence = findings["FL006"]["evidence"]
    relative = evidence["wrong_to_inrange_gradient_ratio"] / evidence["reference_ratio"]
    assert math.isclose(relative, 5e-4, rel_tol=1e-3) and SATURATION_THRESHOLD / 10 < relative < SATURATION_THRESHOLD
    _, findings = _audit(saturated.focal_damped_2e3)
    assert findings == {}


def test_saturation_depth_fl006():
    """FL006's deeper sigmoid elements sit at |logit| 12 (p_t = 1 / (1 + e^12) = 6.1e-6): a probability
    clamp at 1e-5 zeroes their gradient and fires, one at 5e-6 leaves it (values exact in both: the
    calibration batch's |logit| <= 4 never reaches either clamp)."""
    p_t = 1 / (1 + math.exp(12))
    assert 5e-6 < p_t < 1e-5 and 1 / (1 + math.exp(11)) > 1e-5 and 1 / (1 + math.exp(13)) < 5e-6
    detected, findings = _audit(saturated.focal_clamped_1e5)
    assert detected["matched"] and set(findings) == {"FL006"} and findings["FL006"]["evidence"]["wrong_logit"] == 12
    assert findings["FL006"]["evidence"]["wrong_to_inrange_gradient_ratio"] < SATURATION_THRESHOLD * findings["FL006"]["evidence"]["reference_ratio"]
    detected, findings = _audit(saturated.focal_clamped_5e6)
    assert detected["matched"] and findings == {}


def test_ignore_threshold_fl011():
    """FL011: ignored rows moving the loss by 3e-6 (relative) fire it, by 3e-7 do not."""
    detected, findings = _audit(ignore.focal_ignore_leak_3e6)
    assert detected["targets"] == "index" and detected["ignore_index"] == -100 and "FL011" in findings
    losses = findings["FL011"]["evidence"]["losses"]
    assert _barely_over(abs(losses[1] - losses[0]) / losses[0], IGNORE_THRESHOLD)  # evidence keeps 6 digits: 3e-6 shows as 3.4e-6
    detected, findings = _audit(ignore.focal_ignore_leak_3e7)
    assert detected["targets"] == "index" and "FL011" not in findings


# --------------------------------------------------------------------------------------------
# Calibration's tie-break between readings
# --------------------------------------------------------------------------------------------


def test_equal_readings_keep_the_first_tried():
    """Class indices and one-hot rows read the same output with the same error (0.5): the reading
    tried first, class indices, is kept, and the report says so (targets 'index', the closest
    normalisation and its error in FL014)."""
    detected, findings = _audit(tie_break.softmax_focal_tied, kind="softmax")
    assert (detected["kind"], detected["inputs"], detected["targets"], detected["normalisation"]) == ("softmax", "logits", "index", "mean over rows")
    assert not detected["matched"] and math.isclose(detected["max_rel_error"], 0.5, rel_tol=1e-5)
    assert "closest is softmax focal loss with mean over rows (relative error 0.5," in findings["FL014"]["message"]


def test_smaller_error_wins_over_order():
    """The control: with one-hot rows read at a smaller error (0.4 against 0.5), one-hot wins, so the
    tie above is decided by order, not by a preference for class indices."""
    detected, findings = _audit(tie_break.softmax_focal_onehot_closer, kind="softmax")
    assert (detected["targets"], detected["normalisation"]) == ("onehot", "mean over rows")
    assert math.isclose(detected["max_rel_error"], 0.4, rel_tol=1e-5)
    assert "(relative error 0.4," in findings["FL014"]["message"]


# --------------------------------------------------------------------------------------------
# Rule codes in other cases
# --------------------------------------------------------------------------------------------


def test_suppression_comments_ignore_case():
    """README shows ``# lossaudit: ignore[FL001,FL019]``; lint reads the marker and the codes in any
    case (``re.IGNORECASE``, codes upper-cased): ``ignore[fl009]`` and ``IGNORE[Fl009]`` suppress
    FL009, lower-case codes of other rules suppress nothing else, and a bare ``Ignore`` skips the
    target. Every target's one finding is FL009 (tests/fixtures/near_miss/suppressed.py)."""
    names = ["focal_ignore_lower", "focal_ignore_other_lower", "focal_ignore_shouting", "focal_skip_shouting"]
    result = CliRunner().invoke(
        app, ["lint", *(f"{NEAR_MISS / 'suppressed.py'}:{name}" for name in names), "--format", "json", "--isolated"], catch_exceptions=False
    )
    document = json.loads(result.stdout)
    by_name = {target["target"].rsplit(":", 1)[1]: target for target in document["targets"]}
    codes = {name: ([f["code"] for f in t["findings"]], [f["code"] for f in t["suppressed"]], t["status"]) for name, t in by_name.items()}
    assert codes == {
        "focal_ignore_lower": ([], ["FL009"], "audited"),
        "focal_ignore_other_lower": (["FL009"], [], "audited"),
        "focal_ignore_shouting": ([], ["FL009"], "audited"),
        "focal_skip_shouting": ([], [], "skipped"),
    }
    assert document["summary"]["suppressed"] == 2 and document["summary"]["skipped"] == 1 and document["summary"]["warnings"] == 1
    assert result.exit_code == 0  # FL009 is a warning; --fail-on error


def test_rule_code_options_ignore_case():
    """``--select``/``--ignore`` take codes in any case too (lower-case ``fl009`` is FL009; a prefix
    ``fl00`` covers it); an unknown code in any case is refused."""
    assert {f.code for f in lossaudit.lint(gradient.focal_gradient_3e3, select="fl009").findings} == {"FL009"}
    assert lossaudit.lint(gradient.focal_gradient_3e3, ignore=["fl009"]).findings == ()
    assert lossaudit.lint(gradient.focal_gradient_3e3, ignore="fl00").findings == ()
    assert {f.code for f in lossaudit.lint(gradient.focal_gradient_3e3, ignore="fl001").findings} == {"FL009"}
    with pytest.raises(lossaudit.errors.InputError, match="unknown rule code FL999"):
        lossaudit.lint(gradient.focal_gradient_3e3, ignore="fl999")
