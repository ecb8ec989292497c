"""Issue 21 point 2: every argument that claims an effect has it. A reduction that does not reduce
as it says (FL025), ignored rows that stay in the mean's denominator (FL011), a class weight or
pos_weight without effect (FL026), a background parameter without effect (FL027); with point 5's
FL022 severity (a warning) and point 6's NaN assertion (a loss that rejects NaN is no crash).

Fixtures: tests/fixtures/issue21/arguments, one defect class each, and their honoured
counterparts. The expected numbers are computed here from the batch lint builds (seed 0, 16 rows
of 5 classes, logits N(0, 1.5²) clamped to ±4, row i of class i mod 5), with torch's own
log-softmax, not read from lint's output.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from lossaudit.lint.rules import RULES_BY_CODE
from tests.lint_helpers import run_audit

ARGUMENTS = Path(__file__).parent / "fixtures" / "issue21" / "arguments"

# (file, symbol) -> the code that must fire, its severity, and the loud codes allowed beside it
DEFECTS = {
    ("ignore_in_denominator.py", "IgnoredRowsInMeanFocal"): ("FL011", "error", set()),
    ("ignore_default_none.py", "masked_mean_focal"): ("FL011", "error", set()),
    ("ignore_index_unused.py", "UnusedIgnoreIndexFocal"): ("FL011", "error", set()),
    ("reduction_sum_returns_mean.py", "AlwaysMeanFocal"): ("FL025", "error", set()),
    ("reduction_none_returns_none.py", "NoNoneBranchFocal"): ("FL025", "error", set()),
    ("reduce_ignored.py", "ReduceFlagIgnoredFocal"): ("FL025", "error", set()),
    ("size_average_ignored.py", "SizeAverageIgnoredFocal"): ("FL025", "error", set()),
    # FL024 (a weight applied twice) is skipped once FL026 says the weight has no effect
    ("weight_ignored.py", "UnusedWeightFocal"): ("FL026", "error", set()),
    ("pos_weight_ignored.py", "UnusedPosWeightFocal"): ("FL026", "error", set()),
    ("include_background_ignored.py", "IncludeBackgroundIgnoredFocal"): ("FL027", "error", set()),
    ("mask_multiply_nan.py", "MaskProductFocal"): ("FL022", "warning", set()),
}
CLEAN = [
    ("rejects_nan.py", "RejectsNonFiniteFocal"),
    ("rejects_nan.py", "AssertsFiniteFocal"),
    ("honoured.py", "HonouredSoftmaxFocal"),
    ("honoured.py", "HonouredSigmoidFocal"),
]


def _audit(file: str, symbol: str, init: dict | None = None, **options):
    return run_audit(ARGUMENTS / file, symbol, init, **options)


def _loud(result) -> dict:
    return {finding.code: finding for finding in result.findings if finding.severity != "info"}


def _lint_batch(rows: int = 16, classes: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """The softmax batch lint probes with (Context.batch, seed 0), written out."""
    generator = torch.Generator().manual_seed(0)
    logits = (torch.randn(rows, classes, generator=generator) * 1.5).clamp(-4, 4)
    return logits.double(), torch.arange(rows) % classes


def _softmax_focal_rows(logits: torch.Tensor, labels: torch.Tensor, gamma: float = 2.0) -> torch.Tensor:
    log_q = torch.log_softmax(logits, dim=1)[torch.arange(len(labels)), labels]
    return -((1 - log_q.exp()) ** gamma) * log_q


@pytest.mark.parametrize("case", sorted(DEFECTS), ids=lambda case: case[1])
def test_each_defect_fires_its_rule(case):
    code, severity, besides = DEFECTS[case]
    result = _audit(*case)
    loud = _loud(result)
    finding = next(f for f in result.findings if f.code == code)
    assert finding.severity == severity, finding.message
    assert set(loud) - {code} <= besides, [f"{f.code} {f.message}" for f in loud.values()]
    assert finding.evidence["probe"] and finding.fix and finding.line


@pytest.mark.parametrize("case", CLEAN, ids=lambda case: case[1])
def test_honoured_arguments_and_a_nan_check_are_clean(case):
    result = _audit(*case)
    assert _loud(result) == {}, [f"{f.code} {f.message}" for f in result.findings]


def test_honoured_arguments_were_checked_not_skipped():
    """Clean because the probes ran: no 'not checked' note for the rules of this issue."""
    for symbol in ("HonouredSoftmaxFocal", "HonouredSigmoidFocal"):
        notes = _audit("honoured.py", symbol).notes
        ran = {"HonouredSoftmaxFocal": ("FL011", "FL025", "FL026"), "HonouredSigmoidFocal": ("FL025", "FL026", "FL027")}[symbol]
        assert not [note for note in notes if note.startswith(ran)], notes


def test_ignored_rows_in_the_denominator_give_twelve_sixteenths():
    """4 of 16 rows ignored (label 255), the rest kept: the loss is the 12 kept rows' sum over 16,
    where the kept rows' own mean divides it by 12."""
    finding = next(f for f in _audit("ignore_in_denominator.py", "IgnoredRowsInMeanFocal").findings if f.code == "FL011")
    logits, labels = _lint_batch()
    kept = _softmax_focal_rows(logits[4:], labels[4:])
    evidence = finding.evidence
    assert (evidence["ignore_index"], evidence["rows"], evidence["ignored_rows"]) == (255, 16, 4)
    assert evidence["loss_of_kept_rows"] == pytest.approx(float(kept.mean()), rel=1e-5)
    assert evidence["loss_with_ignored_rows"] == pytest.approx(float(kept.sum() / 16), rel=1e-5)
    assert evidence["ratio"] == pytest.approx(12 / 16, rel=1e-5)
    assert "stay in the loss's denominator" in finding.message and "12/16" in finding.message


def test_an_ignore_parameter_defaulting_to_none_is_probed_with_minus_100():
    result = _audit("ignore_default_none.py", "masked_mean_focal")
    finding = next(f for f in result.findings if f.code == "FL011")
    assert finding.evidence["set_by_lint"] == {"ignore_index": -100} and finding.evidence["ratio"] == pytest.approx(0.75, rel=1e-5)
    assert "ignore_index=-100 (its default is None)" in finding.message


def test_an_ignore_parameter_without_effect_lets_ignored_logits_move_the_loss():
    finding = next(f for f in _audit("ignore_index_unused.py", "UnusedIgnoreIndexFocal").findings if f.code == "FL011")
    low, high = finding.evidence["losses"]  # ignored rows' logits at -3, then at +3, with target -100
    assert finding.evidence["set_by_lint"] == {"ignore_index": -100} and high > low > 0
    assert "change the loss" in finding.message


def test_sum_that_returns_the_mean_is_reported_with_every_value():
    finding = next(f for f in _audit("reduction_sum_returns_mean.py", "AlwaysMeanFocal").findings if f.code == "FL025")
    logits, labels = _lint_batch()
    rows = _softmax_focal_rows(logits, labels)
    values = finding.evidence["values"]
    assert values["reduction='mean'"] == pytest.approx(float(rows.mean()), rel=1e-5)
    assert values["reduction='sum'"] == pytest.approx(float(rows.mean()), rel=1e-5)  # the defect: sum is the mean
    assert values["reduction='none'"] == pytest.approx(float(rows.mean()), rel=1e-5)  # and none a scalar
    assert finding.evidence["reference_sum"] == pytest.approx(float(rows.sum()), rel=1e-5)
    assert finding.evidence["counts"]["rows"] == 16
    assert "reduction='none' returns a scalar" in finding.message and "× 16 rows" in finding.message


def test_none_that_returns_none_and_legacy_flags():
    none = next(f for f in _audit("reduction_none_returns_none.py", "NoNoneBranchFocal").findings if f.code == "FL025")
    assert none.evidence["values"]["reduction='none'"] == "returns None" and "reduction='none' returns None" in none.message
    reduce = next(f for f in _audit("reduce_ignored.py", "ReduceFlagIgnoredFocal").findings if f.code == "FL025")
    assert "reduce=False returns a scalar" in reduce.message
    size_average = next(f for f in _audit("size_average_ignored.py", "SizeAverageIgnoredFocal").findings if f.code == "FL025")
    logits, labels = _lint_batch()
    rows = _softmax_focal_rows(logits, labels)
    assert size_average.evidence["values"]["size_average=False"] == pytest.approx(float(rows.mean()), rel=1e-5)
    assert size_average.evidence["reference_sum"] == pytest.approx(float(rows.sum()), rel=1e-5)


def test_unused_weight_leaves_the_loss_unchanged():
    finding = next(f for f in _audit("weight_ignored.py", "UnusedWeightFocal").findings if f.code == "FL026")
    logits, labels = _lint_batch()
    mean = float(_softmax_focal_rows(logits, labels).mean())
    assert finding.evidence["loss_uniform_weights"] == pytest.approx(mean, rel=1e-5)
    assert finding.evidence["loss_weighted"] == pytest.approx(mean, rel=1e-5)
    assert finding.evidence["parameters"] == ["weight"] and finding.evidence["class_weight"] == 3
    pos = next(f for f in _audit("pos_weight_ignored.py", "UnusedPosWeightFocal").findings if f.code == "FL026")
    assert pos.evidence["parameters"] == ["pos_weight"] and "positives of class 0" in pos.message


def test_unused_include_background():
    finding = next(f for f in _audit("include_background_ignored.py", "IncludeBackgroundIgnoredFocal").findings if f.code == "FL027")
    assert (finding.evidence["parameter"], finding.evidence["default"], finding.evidence["changed_to"]) == ("include_background", True, False)
    assert finding.evidence["loss_default"] == finding.evidence["loss_changed"]


def test_a_loss_that_rejects_nan_is_not_a_crash():
    for symbol, error in (("RejectsNonFiniteFocal", "ValueError"), ("AssertsFiniteFocal", "AssertionError")):
        result = _audit("rejects_nan.py", symbol)
        assert "FL015" not in {f.code for f in result.findings}
        note = next(note for note in result.notes if note.startswith("FL022"))
        assert "rejects non-finite inputs" in note and "own check" in note and error in note


def test_fl022_is_a_warning():
    assert RULES_BY_CODE["FL022"].severity == "warning"
    finding = next(f for f in _audit("mask_multiply_nan.py", "MaskProductFocal").findings if f.code == "FL022")
    assert finding.severity == "warning" and finding.evidence["loss_non_finite_ignored"] is None  # NaN, rounded to null


def test_kornia_documents_its_denominator_and_a_copy_does_not():
    """kornia's focal_loss documents that ignored pixels stay in its 'mean' denominator: an info
    naming kornia; the same arithmetic in a user's loss (ignore_default_none.py follows kornia's
    binary convention too) is the error."""
    pytest.importorskip("kornia")
    result = run_audit(None, "FocalLoss", {"alpha": 0.25, "reduction": "mean"}, module="kornia.losses")
    finding = next(f for f in result.findings if f.code == "FL011")
    assert finding.severity == "info" and "kornia" in finding.message and finding.evidence["ratio"] == pytest.approx(0.75, rel=1e-5)
    copy = next(f for f in _audit("ignore_default_none.py", "masked_mean_focal").findings if f.code == "FL011")
    assert copy.severity == "error" and "kornia" not in copy.message


def test_monai_sum_is_an_info_naming_monai():
    """MONAI's 'sum' averages over the spatial dimensions first; on (N, C) rows mean(dim=[])
    averages everything, so its 'sum' is the mean: MONAI's own loss gets an info."""
    pytest.importorskip("monai")
    result = run_audit(None, "FocalLoss", {}, module="monai.losses")
    finding = next(f for f in result.findings if f.code == "FL025")
    values = finding.evidence["values"]
    assert finding.severity == "info" and "MONAI" in finding.message
    assert values["reduction='sum'"] == pytest.approx(values["reduction='mean'"], rel=1e-6)
    assert finding.evidence["reference_sum"] == pytest.approx(values["reduction='mean'"] * 80, rel=1e-4)  # 16 rows × 5 classes


def test_a_combination_gets_each_code():
    """Reduction passed to the CE and an unused weight in one loss: FL025 and FL026 both, beside
    the batch coupling the CE mean causes (FL008)."""
    result = _audit("combined_reduction_and_weight.py", "ReductionIntoCeUnusedWeightFocal")
    loud = _loud(result)
    assert {"FL025", "FL026", "FL008"} <= set(loud), [f"{f.code} {f.message}" for f in result.findings]
    logits, labels = _lint_batch()
    ce = F.cross_entropy(logits, labels, reduction="none")
    assert loud["FL025"].evidence["values"]["reduction='none'"] == pytest.approx(float(((1 - torch.exp(-ce)) ** 2 * ce).mean()), rel=1e-5)
    summed = ce.sum()
    assert loud["FL025"].evidence["values"]["reduction='sum'"] == pytest.approx(float((1 - torch.exp(-summed)) ** 2 * summed), rel=1e-5)


def test_rules_are_declared_with_their_texts():
    for code, name in (("FL025", "reduction-ignored"), ("FL026", "class-weight-ignored"), ("FL027", "background-parameter-ignored")):
        rule = RULES_BY_CODE[code]
        assert rule.name == name and rule.severity == "error" and rule.wrong and rule.right and rule.fix
    assert "denominator" in RULES_BY_CODE["FL011"].summary


def test_softmax_focal_helper_matches_torch_cross_entropy_at_gamma_0():
    """The helper the expectations use is the focal loss: at gamma 0 it is the cross entropy."""
    logits, labels = _lint_batch()
    assert torch.allclose(_softmax_focal_rows(logits, labels, gamma=0.0), F.cross_entropy(logits, labels, reduction="none"))
