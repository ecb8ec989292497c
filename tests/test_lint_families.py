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


# kind -> correct targets: (symbol, init, lint options, module or None for the fixture file)
CORRECT_FAMILIES = {
    "asl": [
        ("AsymmetricLossMultiLabel", {}, {}, None),
        ("AsymmetricLossMultiLabel", {"disable_torch_grad_focal_loss": True, "clip": 0.0}, {"kind": "asl"}, None),
        ("AsymmetricLossMultiLabel", {"clip": None}, {}, None),
        ("asymmetric_loss", {}, {}, None),
    ],
    "ls-ce": [
        ("LabelSmoothingLoss", {}, {}, None),
        ("LabelSmoothingCrossEntropy", {"smoothing": 0.2}, {"kind": "ls-ce"}, None),
        ("CrossEntropyLoss", {"label_smoothing": 0.1}, {}, "torch.nn"),
        ("CrossEntropyLoss", {"label_smoothing": 0.2, "reduction": "sum"}, {"kind": "ls-ce"}, "torch.nn"),
    ],
    "qfl": [
        ("quality_focal_loss_tensor_target", {}, {}, None),
        ("quality_focal_loss_tensor_target", {"beta": 1.5}, {"kind": "qfl"}, None),
        ("QualityFocalLoss", {}, {}, None),
        ("qfl", {}, {}, "lossaudit.losses"),
    ],
    "vfl": [
        ("varifocal_loss", {}, {}, None),
        ("varifocal_loss", {"alpha": 0.5, "gamma": 1.0, "reduction": "sum"}, {"kind": "vfl"}, None),
        ("VarifocalLoss", {}, {}, None),
    ],
}
FOLLOWED = {
    "asl": "timm AsymmetricLossMultiLabel",
    "ls-ce": "nn.CrossEntropyLoss(label_smoothing=)",
    "qfl": "mmdet QualityFocalLoss",
    "vfl": "mmdet VarifocalLoss",
}
"""The library each correct fixture's convention is named after (``detected.follows``)."""
CORRECT_CASES = [(kind, *case) for kind, cases in CORRECT_FAMILIES.items() for case in cases]


@pytest.mark.parametrize(
    ("kind", "symbol", "init", "options", "module"),
    CORRECT_CASES,
    ids=[f"{c[0]}-{c[1]}-{sorted(c[2].items())}-{c[3].get('kind', 'auto')}" for c in CORRECT_CASES],
)
def test_correct_family_losses_lint_clean_and_are_detected(kind, symbol, init, options, module):
    result = run_audit(None if module else FAMILY, symbol, init, module=module, **options)
    assert result.findings == [], _loud(result)
    assert result.detected["kind"] == kind and result.detected["matched"] and result.detected["max_rel_error"] < 1e-4
    assert [library for library in result.detected["follows"] if FOLLOWED[kind] in library], result.detected["follows"]


# symbol -> (lint options, every code reported, the code the bug is about, text on that finding's line)
BUGGY_FAMILIES = {
    "AslShiftSignBug": ({}, {"FL004", "FL006", "FL017"}, "FL004", "xs_neg = (1 - xs_pos - self.clip)"),
    "AslClipOnPositives": ({}, {"FL004"}, "FL004", "xs_pos = (torch.sigmoid(x) + self.clip)"),
    "AslGradModeLeak": ({}, {"FL021"}, "FL021", "torch.set_grad_enabled(False)"),
    "AslWithoutEps": ({"kind": "asl"}, {"FL007"}, "FL007", "torch.log(xs_pos)"),
    "SmoothingOverOthers": ({}, {"FL014"}, "FL014", "class SmoothingOverOthers"),
    "LogSoftmaxSmoothing": ({}, {"FL007"}, "FL007", "torch.log(torch.softmax"),
    "OneHotSmoothing": ({"kind": "ls-ce"}, {"FL011"}, "FL011", "F.one_hot(target"),
    "QflWithoutPower": ({}, {"FL005"}, "FL005", "class QflWithoutPower"),
    "QflHardLabelCE": ({}, {"FL004"}, "FL004", "(quality > 0)"),
    "QflLogSigmoid": ({"kind": "qfl"}, {"FL007"}, "FL007", "torch.log(p)"),
    "VflSoftNegativeWeight": ({}, {"FL004"}, "FL004", "(1 - quality) + quality"),
    "VflAlphaTwice": ({}, {"FL002"}, "FL002", "self.alpha * p**self.gamma"),
    "VflLogSigmoid": ({"kind": "vfl"}, {"FL007"}, "FL007", "torch.log(p)"),
}
BUGGY_KINDS = {
    "asl": ("AslShiftSignBug", "AslClipOnPositives", "AslGradModeLeak", "AslWithoutEps"),
    "ls-ce": ("SmoothingOverOthers", "LogSoftmaxSmoothing", "OneHotSmoothing"),
    "qfl": ("QflWithoutPower", "QflHardLabelCE", "QflLogSigmoid"),
    "vfl": ("VflSoftNegativeWeight", "VflAlphaTwice", "VflLogSigmoid"),
}


@pytest.mark.parametrize("symbol", sorted(BUGGY_FAMILIES))
def test_buggy_family_losses_are_flagged_with_their_codes(symbol):
    options, codes, code, marker = BUGGY_FAMILIES[symbol]
    result = run_audit(FAMILY, symbol, **options)
    assert {f.code for f in result.findings} == codes, _loud(result)
    kind = next(kind for kind, symbols in BUGGY_KINDS.items() if symbol in symbols)
    assert result.detected["kind"] == kind  # auto mode: by matching, or by the family's parameters when nothing matches
    finding = next(f for f in result.findings if f.code == code)
    assert marker in FAMILY.read_text().splitlines()[finding.line - 1], finding.line


def test_every_family_kind_has_two_correct_and_three_buggy_fixtures():
    for kind, symbols in BUGGY_KINDS.items():
        assert len(symbols) >= 3 and len({case[0] for case in CORRECT_FAMILIES[kind]}) >= 2


def test_asl_factor_evidence():
    """Negatives at p = 0.2 and 0.6, gamma_neg 4, clip 0.05: ASL weights p_m**4 -log(1 - p_m) with
    p_m = p - 0.05; the sign bug shifts the other way, p + 0.05, which also leaves each of the 25
    quiet negatives of the batch (p ≈ 0) a loss of 0.05**4 -log(0.95)."""
    finding = next(f for f in run_audit(FAMILY, "AslShiftSignBug").findings if f.code == "FL004")

    def negative(p):
        return p**4 * -math.log(1 - p)

    assert finding.evidence["expected_ratio"]["negative"] == pytest.approx(negative(0.15) / negative(0.55), rel=1e-4)
    quiet = 25 * negative(0.05)
    assert finding.evidence["observed_ratio"]["negative"] == pytest.approx((negative(0.25) + quiet) / (negative(0.65) + quiet), rel=1e-4)


def test_smoothing_over_the_other_classes_is_named():
    """fairseq's convention equals PyTorch's with epsilon * C / (C - 1): 0.1 * 5 / 4 = 0.125."""
    finding = run_audit(FAMILY, "SmoothingOverOthers").findings[0]
    assert "C - 1 other classes" in finding.message and finding.evidence["matches_with"] == {"epsilon": pytest.approx(0.125)}


def _bce(p: float, q: float) -> float:
    return -(q * math.log(p) + (1 - q) * math.log(1 - p))


def test_soft_target_factor_evidence():
    """A positive of IoU quality 0.6 at p = 0.8 and 0.3. QFL: |0.6 - p|**2 BCE(p; 0.6); the hard-label
    bug takes BCE(p; 1) = -log p. VFL: 0.6 BCE(p; 0.6); the soft RT-DETR weight adds
    0.75 p**2 (1 - 0.6) to the 0.6."""
    qfl = run_audit(FAMILY, "QflHardLabelCE").findings[0].evidence
    assert qfl["expected_ratio"]["positive"] == pytest.approx(0.2**2 * _bce(0.8, 0.6) / (0.3**2 * _bce(0.3, 0.6)), rel=1e-4)
    assert qfl["observed_ratio"]["positive"] == pytest.approx(0.2**2 * -math.log(0.8) / (0.3**2 * -math.log(0.3)), rel=1e-3)
    vfl = run_audit(FAMILY, "VflSoftNegativeWeight").findings[0].evidence
    assert vfl["expected_ratio"]["positive"] == pytest.approx(_bce(0.8, 0.6) / _bce(0.3, 0.6), rel=1e-4)
    weight = lambda p: 0.6 + 0.75 * p**2 * 0.4  # noqa: E731
    assert vfl["observed_ratio"]["positive"] == pytest.approx(weight(0.8) * _bce(0.8, 0.6) / (weight(0.3) * _bce(0.3, 0.6)), rel=1e-3)


def test_family_references_are_named():
    detected = {symbol: run_audit(FAMILY, symbol).detected for symbol in ("QualityFocalLoss", "VarifocalLoss", "asymmetric_loss", "LabelSmoothingCrossEntropy")}
    assert {symbol: d["reference"] for symbol, d in detected.items()} == {
        "QualityFocalLoss": "lossaudit.losses.qfl(beta=2)",
        "VarifocalLoss": "lossaudit.losses.vfl(alpha=0.75, gamma=2, detach_weight=False)",
        "asymmetric_loss": "lossaudit.losses.asl(gamma_pos=1, gamma_neg=4, clip=0.05, eps=1e-08, detach_weight=True)",
        "LabelSmoothingCrossEntropy": "lossaudit.losses.ls_ce(epsilon=0.1)",
    }
    assert detected["QualityFocalLoss"]["normalisation"] == "sum per positive" and detected["asymmetric_loss"]["normalisation"] == "sum"


# GHM-C keeps state by design when momentum > 0: (symbol, init, options) -> the FL013 found (None: none)
GHM_CASES = {
    "mmdet GHMC, momentum 0": ("GHMC", {}, {}, None),
    "mmdet GHMC, momentum 0.75": ("GHMC", {"momentum": 0.75}, {}, None),
    "mmdet GHMC, the authors' 30 bins, --kind ghm": ("GHMC", {"momentum": 0.75, "bins": 30}, {"kind": "ghm"}, None),
    "moving average shared by every instance": ("GhmSharedMovingAverage", {"momentum": 0.75}, {}, "state carries over between instances"),
    "a call counter beside the moving average": ("GhmCallCounter", {"momentum": 0.75}, {}, "does not evolve as the reference's moving average"),
    "a call counter without momentum": ("GhmCallCounter", {}, {}, "forward changes calls"),
}


@pytest.mark.parametrize("case", sorted(GHM_CASES))
def test_ghm_state_is_expected_only_as_the_reference_keeps_it(case):
    symbol, init, options, fl013 = GHM_CASES[case]
    result = run_audit(FAMILY, symbol, init, **options)
    assert result.detected["kind"] == "ghm" and result.detected["matched"]
    if fl013 is None:
        assert result.findings == [], _loud(result)
        assert any("GHM-C's weights depend on the whole batch by design" in note for note in result.notes)
        assert result.detected["follows"] == ["mmdet GHMC"]
        if init.get("momentum"):
            assert any(note.startswith("FL013: the state evolves as the reference's moving average") for note in result.notes)
    else:
        assert [f.code for f in result.findings] == ["FL013"] and fl013 in result.findings[0].message, _loud(result)


def test_ghm_state_evidence():
    """Same batch twice, momentum 0.75, every bin's count c unchanged: the reference's moving average
    is 0.25 c, then 0.4375 c, so its weights, and the loss, fall to 0.25 / 0.4375 = 0.5714 of the
    first call's; the counter doubles that."""
    evidence = run_audit(FAMILY, "GhmCallCounter", {"momentum": 0.75}).findings[0].evidence
    assert evidence["expected_second_to_first"] == pytest.approx(0.25 / 0.4375, rel=1e-6)
    assert evidence["second_to_first"] == pytest.approx(2 * 0.25 / 0.4375, rel=1e-5)


def test_ghm_state_is_reported_when_the_kind_does_not_expect_it():
    result = run_audit(FAMILY, "GHMC", {"momentum": 0.75}, kind="sigmoid")
    assert "FL013" in {f.code for f in result.findings}
