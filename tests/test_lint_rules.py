"""Every lint rule fires on its own fixture, from the probe that targets it, at the offending line,
and on no correct fixture. Audits run in-process here (the child-process path is tested in
test_cli_lint.py) so the whole battery stays fast."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lossaudit.lint.rules import RULES
from tests.lint_helpers import run_audit

FIXTURES = Path(__file__).parent / "fixtures"
CORRECT, BUGGY = FIXTURES / "correct_losses.py", FIXTURES / "buggy_losses.py"
PER_CLASS_ALPHA = [0.1, 0.2, 0.3, 0.2, 0.9]


CORRECT_TARGETS = {
    "torchvision-style function": ("sigmoid_focal_loss", {}, {}),
    "RetinaNet module normalised per positive": ("RetinaNetFocalLoss", {}, {}),
    "softmax focal with per-class alpha": ("SoftmaxFocalLoss", {"alpha": PER_CLASS_ALPHA}, {}),
    "softmax focal without alpha": ("SoftmaxFocalLoss", {}, {}),
    "probabilities with a safe clamp": ("ProbabilityFocalLoss", {}, {}),
    "probabilities, declared": ("ProbabilityFocalLoss", {}, {"inputs": "probs"}),
    "ignore index": ("IgnoreIndexFocalLoss", {}, {}),
    "CenterNet heatmap loss": ("centernet_focal_loss", {}, {}),
    "CenterNet heatmap loss, declared": ("centernet_focal_loss", {}, {"kind": "centernet"}),
    "through BCE's weight=": ("BCEWeightFocalLoss", {}, {}),
    "class indices, background 0": ("BackgroundZeroFocalLoss", {}, {}),
    "class indices, no background label": ("EveryRowHasAClassFocalLoss", {}, {}),
    "segmentation softmax, (B, H, W) output": ("SegmentationSoftmaxFocalLoss", {}, {}),
    "segmentation sigmoid, (B, C, H, W) output": ("SegmentationSigmoidFocalLoss", {}, {}),
    "grad mode switched by context managers": ("GradContextFocalLoss", {}, {}),
    "cross_entropy's ignore_index, torch.where": ("CrossEntropyIgnoreFocalLoss", {}, {}),
}


@pytest.mark.parametrize("style", sorted(CORRECT_TARGETS))
def test_correct_implementation_lints_clean(style):
    symbol, init, options = CORRECT_TARGETS[style]
    result = run_audit(CORRECT, symbol, init, **options)
    assert result.findings == [], [f"{f.code} {f.message}" for f in result.findings]
    assert result.detected["max_rel_error"] < 1e-4


def test_correct_kinds_and_normalisations_are_detected():
    expected = {
        "RetinaNetFocalLoss": ("sigmoid", "logits", "index", "sum per positive"),
        "sigmoid_focal_loss": ("sigmoid", "logits", "onehot", "none"),
        "ProbabilityFocalLoss": ("sigmoid", "probs", "onehot", "sum per positive"),
        "centernet_focal_loss": ("centernet", "probs", "heatmap", "sum per positive"),
        "BackgroundZeroFocalLoss": ("sigmoid", "logits", "index", "sum per positive"),
        "EveryRowHasAClassFocalLoss": ("sigmoid", "logits", "index", "sum per positive"),  # = rows: one class each
    }
    for symbol, (kind, inputs, targets, normalisation) in expected.items():
        detected = run_audit(CORRECT, symbol).detected
        assert (detected["kind"], detected["inputs"], detected["targets"], detected["normalisation"]) == (kind, inputs, targets, normalisation)
    segmentation = {symbol: run_audit(CORRECT, symbol).detected for symbol in ("SegmentationSoftmaxFocalLoss", "SegmentationSigmoidFocalLoss")}
    assert {symbol: (d["kind"], d["layout"], d["normalisation"]) for symbol, d in segmentation.items()} == {
        "SegmentationSoftmaxFocalLoss": ("softmax", "spatial", "none"),
        "SegmentationSigmoidFocalLoss": ("sigmoid", "spatial", "none"),
    }
    backgrounds = {
        symbol: run_audit(CORRECT, symbol).detected["background"] for symbol in ("RetinaNetFocalLoss", "BackgroundZeroFocalLoss", "EveryRowHasAClassFocalLoss")
    }
    assert backgrounds == {
        "RetinaNetFocalLoss": "background = C",
        "BackgroundZeroFocalLoss": "background = 0",
        "EveryRowHasAClassFocalLoss": "no background label",
    }
    softmax = run_audit(CORRECT, "SoftmaxFocalLoss", {"alpha": PER_CLASS_ALPHA}).detected
    assert (softmax["kind"], softmax["targets"], softmax["num_classes"]) == ("softmax", "index", 5)
    assert softmax["reference"] == f"softmax focal loss(alpha={PER_CLASS_ALPHA}, gamma=2)"


# rule -> (symbol, init, options, probe that catches it, text on the line the finding points at)
BUGGY_TARGETS = {
    "FL001": ("ConstantAlphaFocal", {}, {}, "probe_alpha_balance", "self.alpha * (1 - p_t)"),
    "FL002": ("InvertedAlphaFocal", {}, {}, "probe_alpha_balance", "alpha_t = self.alpha * (1 - targets)"),
    "FL003": ("SoftmaxDetectionFocal", {}, {"kind": "sigmoid"}, "probe_coupling", "log_softmax"),
    "FL004": ("PInsteadOfPtFocal", {}, {}, "probe_modulating_factor", "(1 - p) ** self.gamma"),
    "FL005": ("HardcodedGammaFocal", {}, {}, "probe_gamma", "** 2"),
    "FL006": ("ClampedLogitsFocal", {}, {}, "probe_saturated_gradient", "clamp(1e-4"),
    "FL007": ("LogSigmoidFocal", {}, {}, "probe_non_finite", "torch.log(p)"),
    "FL008": ("BatchMeanPtFocal", {}, {}, "probe_coupling", "torch.exp(-ce.mean())"),
    "FL009": ("DetachedFactorFocal", {}, {}, "probe_gradient_match", ".detach()"),
    "FL010": ("PredictionIndexedAlphaSoftmax", {"alpha": PER_CLASS_ALPHA}, {}, "probe_softmax_alpha", "logits.argmax"),
    "FL011": ("IgnoreCrashSoftmax", {}, {}, "probe_ignore_index", "F.one_hot(target"),
    "FL012": ("InPlaceSigmoidFocal", {}, {}, "probe_input_mutation", "sigmoid_()"),
    "FL013": ("CallCountingFocal", {}, {}, "probe_stateful", "self.calls += 1"),
    "FL014": ("Log2Focal", {}, {}, "calibration", "class Log2Focal"),
    "FL015": ("Python2Focal", {}, {}, None, "xrange"),
    "FL016": ("DoubleSigmoidFocal", {}, {}, "calibration", "torch.sigmoid(logits)"),
    "FL017": ("HalfOverflowFocal", {}, {}, "probe_low_precision", "-1e9"),
    "FL018": ("ElementMeanFocal", {}, {}, "report_normalisation", "return (alpha_t"),
    "FL019": ("YoloDefaultsFocal", {}, {}, "report_defaults", "def __init__(self, alpha=0.5, gamma=1.5)"),
    "FL020": ("ClassZeroAlphaSoftmax", {}, {}, "report_peer_departure", "alpha_t = torch.where(target == 0"),
    "FL021": ("GradModeLeakFocal", {}, {}, "probe_grad_mode", "torch.set_grad_enabled(False)"),
    "FL022": ("MaskMultiplySoftmax", {}, {}, "probe_ignored_non_finite", "(loss * keep)"),
    "FL023": ("FastaiWeightedFocal", {}, {}, "probe_weighted_p_t", "torch.exp(-ce)"),
    "FL024": ("WeightTwiceSoftmax", {}, {}, "probe_double_weighting", "weight.to(logits.dtype)[target] *"),
}
MORE_BUGGY_TARGETS = {
    "FL001 softmax scalar alpha (warning)": ("FL001", "SoftmaxDetectionFocal", {}, {}, "probe_softmax_alpha"),
    "FL010 integer cast": ("FL010", "IntegerAlphaSoftmax", {"alpha": PER_CLASS_ALPHA}, {}, "probe_softmax_alpha"),
    "FL015 fixed batch size": ("FL015", "FixedBatchFocal", {}, {}, "probe_batch_shapes"),
    "FL021 grad left disabled": ("FL021", "GradOffLeakFocal", {}, {}, "probe_grad_mode"),
}


ISSUE21_FIXTURES = Path(__file__).parent / "fixtures" / "issue21"
"""Rules added by issue 21 (FL025 on) keep their fixtures beside their group's tests there."""


def test_every_rule_has_a_fixture():
    """Every rule up to FL024 has its fixture here; each later one is named by a fixture under
    tests/fixtures/issue21/."""
    codes = [rule.code for rule in RULES]
    assert sorted(BUGGY_TARGETS) == [code for code in codes if code <= "FL024"]
    issue21 = "\n".join(path.read_text() for path in ISSUE21_FIXTURES.rglob("*.py"))
    assert [code for code in codes if code > "FL024" and code not in issue21] == []


def _codes(result) -> set[str]:
    return {finding.code for finding in result.findings}


def _infos_besides(result, code: str) -> set[str]:
    """Info findings other than ``code``: a further defect reported as info (e.g. FL001 on a
    softmax found by FL003) does not make a fixture's own rule fire less alone."""
    return {finding.code for finding in result.findings if finding.severity == "info" and finding.code != code}


ALSO_REPORTED = {"FL003": {"FL001"}}
"""A fixture's second defect reported beside its rule: FL003's fixture, read as the softmax it is,
multiplies every class by one scalar alpha, an FL001 warning since issue 21 point 5 (it was info)."""


@pytest.mark.parametrize("code", sorted(BUGGY_TARGETS))
def test_rule_fires_alone_on_its_fixture(code):
    symbol, init, options, probe, marker = BUGGY_TARGETS[code]
    result = run_audit(BUGGY, symbol, init, **options)
    assert _codes(result) - _infos_besides(result, code) == {code} | ALSO_REPORTED.get(code, set()), [f"{f.code} {f.message}" for f in result.findings]
    finding = next(f for f in result.findings if f.code == code)
    if probe is not None:
        assert finding.evidence["probe"] == probe
    source_lines = BUGGY.read_text().splitlines()
    assert finding.path and finding.path.endswith("buggy_losses.py")
    assert marker in source_lines[finding.line - 1], (finding.line, source_lines[finding.line - 1])
    assert finding.fix


@pytest.mark.parametrize("case", sorted(MORE_BUGGY_TARGETS))
def test_rule_variants(case):
    code, symbol, init, options, probe = MORE_BUGGY_TARGETS[case]
    result = run_audit(BUGGY, symbol, init, **options)
    assert code in _codes(result) and not {f.code for f in result.findings if f.severity != "info"} - {code}
    finding = next(f for f in result.findings if f.code == code)
    assert finding.evidence["probe"] == probe


def test_softmax_scalar_alpha_is_a_warning_naming_the_convention():
    """A scalar alpha on a softmax only rescales: a warning (issue 21 point 5) whose message says that
    mmcv's softmax_focal_loss does the same and that it rescales without balancing."""
    result = run_audit(BUGGY, "SoftmaxDetectionFocal")
    finding = next(f for f in result.findings if f.code == "FL001")
    assert finding.severity == "warning" and "mmcv's softmax_focal_loss behaves the same" in finding.message
    assert "rescales the loss" in finding.message and "without balancing" in finding.message
    assert finding.evidence["loss(alpha=0.25)/loss(alpha=0.75)"] == pytest.approx(1 / 3, rel=1e-4)


def test_evidence_carries_the_numbers():
    finding = run_audit(BUGGY, "ConstantAlphaFocal").findings[0]
    ratios = finding.evidence["loss(alpha=0.25)/loss(alpha=0.75)"]
    # positives and negatives both scale with alpha: 0.25 / 0.75 on each side
    assert ratios["positive"] == pytest.approx(1 / 3, rel=1e-3) and ratios["negative"] == pytest.approx(1 / 3, rel=1e-3)
    assert finding.evidence["expected"] == {"positive": pytest.approx(1 / 3, rel=1e-5), "negative": 3.0}
    factor = run_audit(BUGGY, "PInsteadOfPtFocal").findings[0]
    # negatives at p = 0.2 and 0.6 with (1 - p)^2 instead of p^2: 0.8^2 ln 0.8 / (0.4^2 ln 0.4)
    assert factor.evidence["observed_ratio"]["negative"] == pytest.approx((0.64 * 0.2231436) / (0.16 * 0.9162907), rel=1e-3)
    assert factor.evidence["expected_ratio"]["negative"] == pytest.approx((0.04 * 0.2231436) / (0.36 * 0.9162907), rel=1e-4)


def test_ignore_probe_runs_with_the_option_and_passes_a_correct_loss():
    result = run_audit(CORRECT, "SoftmaxFocalLoss", ignore_index=-100)
    assert result.findings == [] and not any("FL011" in note for note in result.notes)
    assert result.detected["ignore_index"] == -100


def test_probabilities_fed_to_a_logits_loss_is_fl016():
    result = run_audit(CORRECT, "sigmoid_focal_loss", inputs="probs")
    assert _codes(result) == {"FL016"}


def test_grad_mode_leak_names_the_direction_and_the_audit_restores_the_mode():
    """Under no_grad the timm-style pair leaves grad on; the other fixture turns it off for a caller
    with grad on. The audit runs in this process: a leak must not reach the test's grad mode."""
    leaks = {symbol: run_audit(BUGGY, symbol).findings[0].evidence["grad_enabled_after"] for symbol in ("GradModeLeakFocal", "GradOffLeakFocal")}
    assert leaks == {"GradModeLeakFocal": {"torch.no_grad()": True}, "GradOffLeakFocal": {"grad enabled": False}}
    assert torch.is_grad_enabled()
    with torch.no_grad():
        run_audit(BUGGY, "GradModeLeakFocal")
        assert not torch.is_grad_enabled()


@pytest.mark.parametrize("symbol", ["SoftmaxFocalLoss", "IgnoreIndexFocalLoss", "CrossEntropyIgnoreFocalLoss"])
def test_ignored_non_finite_probe_runs_on_losses_that_drop_ignored_rows(symbol):
    """Selecting with [keep], cross_entropy's ignore_index and torch.where drop NaN/inf: clean, and
    clean because the probe ran (no 'not checked' note), not because it was skipped."""
    result = run_audit(CORRECT, symbol)
    assert result.findings == [] and not any(note.startswith(("FL011", "FL022")) for note in result.notes), result.notes


def test_ignored_non_finite_evidence():
    finding = run_audit(BUGGY, "MaskMultiplySoftmax").findings[0]
    assert finding.evidence["ignore_index"] == -100 and finding.evidence["loss_non_finite_ignored"] is None  # NaN, rounded to null
    assert finding.evidence["loss_finite_ignored"] > 0 and "nan" in finding.message
