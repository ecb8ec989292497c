"""Issue 21 points 3 and 4: the kind and inputs read from behaviour (batch coupling cannot fool
the kind, probability inputs are detected, a normaliser the caller passes is a normalisation),
and shapes across calls (FL030: a batch size that breaks the next call) and layouts (FL031: the
same rows as (N, C), (B, A, C), (B, C, H, W), (B, C, D, H, W)).

Every number checked here is computed in the test, by hand or with torch, from the formulas in
the fixtures' docstrings, never taken from lint's output."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from lossaudit.lint.registry import SEVERITIES
from tests.fixtures.issue21.shapes.batch_pt_softmax import BatchCeSoftmaxFocal
from tests.fixtures.issue21.shapes.batch_size_alpha import FirstBatchAlphaFocal
from tests.fixtures.issue21.shapes.channels_first_view import ChannelsFirstViewFocal
from tests.fixtures.issue21.shapes.given_normaliser import per_box_focal_loss
from tests.fixtures.issue21.shapes.rows_only_last_axis import RowsOnlyLastAxisFocal
from tests.lint_helpers import run_audit

SHAPES = Path(__file__).parent / "fixtures" / "issue21" / "shapes"
WILD_DEV = Path(__file__).parent / "fixtures" / "wild" / "dev"


def _codes(result) -> list[str]:
    return [finding.code for finding in result.findings if finding.severity != "info"]


def _leading(result) -> str:
    """The code the text report lists first (it sorts by severity, then code)."""
    return min(result.findings, key=lambda f: (SEVERITIES.index(f.severity), f.code)).code


def _softmax_focal(logits: torch.Tensor, label: int, gamma: float = 2.0) -> float:
    """-(1 - q_y)^gamma log q_y of one row, by hand."""
    exps = [math.exp(v) for v in logits.tolist()]
    q = exps[label] / sum(exps)
    return -((1 - q) ** gamma) * math.log(q)


# --- point 4: the kind, robust to batch coupling ------------------------------------------------


def test_batch_level_p_t_is_the_softmax_focal_loss_on_one_row_and_not_on_a_batch():
    """What the fixture is: on one row, the softmax focal loss; on a batch, not the mean of it."""
    torch.manual_seed(3)
    logits, labels = torch.randn(6, 5), torch.tensor([0, 1, 2, 3, 4, 0])
    loss = BatchCeSoftmaxFocal()
    for row in range(3):
        assert math.isclose(float(loss(logits[row : row + 1], labels[row : row + 1])), _softmax_focal(logits[row], int(labels[row])), rel_tol=1e-5)
    by_hand = sum(_softmax_focal(logits[i], int(labels[i])) for i in range(6)) / 6
    assert abs(float(loss(logits, labels)) - by_hand) > 1e-3 * by_hand


def test_batch_coupled_softmax_is_read_as_softmax_and_leads_with_fl008():
    # before: read as sigmoid; FL003 (background rows contribute nothing), FL004 (read as a softmax loss), FL008
    result = run_audit(SHAPES / "batch_pt_softmax.py", "BatchCeSoftmaxFocal")
    detected = result.detected
    assert (detected["kind"], detected["inputs"], detected["targets"]) == ("softmax", "logits", "index")
    assert "single rows" in detected["kind_reason"] and "whole-batch reading was sigmoid" in detected["kind_reason"]
    assert _codes(result) == ["FL008"]
    assert _leading(result) == "FL008"


def test_batch_coupled_softmax_in_bits_is_read_as_softmax_by_its_per_row_factor():
    # before: read as sigmoid; FL003, FL004, FL008. The rows' factor is 1 / log(2), by hand.
    result = run_audit(SHAPES / "batch_pt_softmax.py", "BatchCeSoftmaxFocalInBits")
    detected = result.detected
    assert detected["kind"] == "softmax"
    assert f"times {1 / math.log(2):.4g}" in detected["kind_reason"]
    assert _codes(result) == ["FL008"]


def test_dev_batch_pt_fixtures_no_longer_lead_with_fl003():
    for module in ("seeooo_car_blackbox_focal_loss.py", "boostcampaitech5_klue_focal_loss.py"):
        result = run_audit(WILD_DEV / module, "FocalLoss")
        assert result.detected["kind"] == "softmax", module
        assert "FL003" not in _codes(result) and _leading(result) == "FL008", (module, _codes(result))


# --- point 4: probability inputs ----------------------------------------------------------------


def test_a_loss_that_rejects_logits_is_probed_with_probabilities():
    result = run_audit(SHAPES / "probability_inputs.py", "RangeCheckedProbabilityFocal")
    assert result.detected["inputs"] == "probs"
    assert _codes(result) == ["FL002"]


def test_a_loss_without_a_sigmoid_is_probed_with_probabilities():
    # before: read with logits; FL004, FL006 and FL017 on values no caller would pass
    result = run_audit(SHAPES / "probability_inputs.py", "UncheckedProbabilityFocal")
    assert result.detected["inputs"] == "probs"
    assert "no gradient outside [0, 1]" in result.detected["kind_reason"]
    assert _codes(result) == ["FL002"]


# --- point 4: a normaliser the caller passes ----------------------------------------------------


def test_dividing_by_the_callers_box_count_is_a_normalisation():
    """per_box_focal_loss with num_boxes=4 is torchvision's loss, mean over classes, summed, / 4."""
    torch.manual_seed(0)
    logits, targets = torch.randn(8, 5), (torch.rand(8, 5) < 0.3).float()
    p = torch.sigmoid(logits)
    ce = -(targets * torch.log(p) + (1 - targets) * torch.log(1 - p))
    p_t = p * targets + (1 - p) * (1 - targets)
    alpha_t = 0.25 * targets + 0.75 * (1 - targets)
    by_hand = float((alpha_t * (1 - p_t) ** 2 * ce).sum()) / 5 / 4
    assert math.isclose(float(per_box_focal_loss(logits, targets, num_boxes=4)), by_hand, rel_tol=1e-5)
    # before: FL014 error (relative error 0.2)
    result = run_audit(SHAPES / "given_normaliser.py", "per_box_focal_loss", {"num_boxes": 4})
    assert _codes(result) == []
    assert result.detected["matched"] and "num_boxes=4 only divides the output" in result.detected["kind_reason"]


def test_a_real_mismatch_beside_the_callers_normaliser_stays_fl014():
    result = run_audit(SHAPES / "given_normaliser.py", "per_box_focal_loss_in_bits", {"num_boxes": 4})
    assert "FL014" in _codes(result)


def test_detr_sigmoid_focal_loss_lints_clean():
    # before: FL014 error
    result = run_audit(WILD_DEV / "facebookresearch_detr_sigmoid_focal_loss.py", "sigmoid_focal_loss", {"num_boxes": 4})
    assert _codes(result) == [], [f.message for f in result.findings]


# --- point 3: batches of different sizes in a row ----------------------------------------------


def test_the_fixture_runs_fresh_at_any_size_and_fails_on_the_second_size():
    logits, targets = torch.randn(16, 5), torch.zeros(16, 5)
    fresh = FirstBatchAlphaFocal()
    assert torch.isfinite(fresh(logits[:12], targets[:12]))
    kept = FirstBatchAlphaFocal()
    kept(logits, targets)
    try:
        kept(logits[:12], targets[:12])
    except RuntimeError:
        pass
    else:
        raise AssertionError("the second size should fail")


def test_a_tensor_sized_by_the_first_batch_is_fl030_with_both_sizes():
    # before: only FL013 "forward changes weights"
    result = run_audit(SHAPES / "batch_size_alpha.py", "FirstBatchAlphaFocal")
    finding = next(f for f in result.findings if f.code == "FL030")
    assert (finding.evidence["first_rows"], finding.evidence["second_rows"]) == (16, 12)
    assert "16 rows" in finding.message and "12 rows" in finding.message
    assert finding.severity == "error"


# --- point 3: layouts ---------------------------------------------------------------------------


def test_the_fixture_is_right_on_rows_and_wrong_on_maps():
    """Rows by hand, then the same rows as a (2, 5, 2, 6) map: the view mixes pixels."""
    torch.manual_seed(1)
    logits, labels = torch.randn(24, 5), torch.arange(24) % 5
    by_hand = sum(_softmax_focal(logits[i], int(labels[i])) for i in range(24)) / 24
    loss = ChannelsFirstViewFocal()
    assert math.isclose(float(loss(logits, labels)), by_hand, rel_tol=1e-5)
    maps = logits.reshape(2, 2, 6, 5).permute(0, 3, 1, 2)
    assert abs(float(loss(maps, labels.reshape(2, 2, 6))) - by_hand) > 1e-2 * by_hand


def test_a_flatten_over_the_wrong_axes_is_fl031_naming_the_shape():
    # before: no finding
    result = run_audit(SHAPES / "channels_first_view.py", "ChannelsFirstViewFocal")
    assert _codes(result) == ["FL031"]
    finding = result.findings[0]
    assert "(B, C, H, W) inputs of shape (2, 5, 2, 6)" in finding.message
    assert "(B, C, D, H, W)" in finding.message
    assert {entry["layout"] for entry in finding.evidence["layouts"]} >= {"(B, C, H, W)", "(B, C, D, H, W)"}


def test_the_rows_only_fixture_is_right_on_rows_and_wrong_on_maps():
    """Rows by hand; the same rows as a (2, 5, 2, 6) map give another loss (softmax over W)."""
    torch.manual_seed(3)
    logits, labels = torch.randn(24, 5), torch.arange(24) % 5
    by_hand = sum(_softmax_focal(logits[i], int(labels[i])) for i in range(24)) / 24
    loss = RowsOnlyLastAxisFocal()
    assert math.isclose(float(loss(logits, labels)), by_hand, rel_tol=1e-5)
    maps = logits.reshape(2, 2, 6, 5).permute(0, 3, 1, 2)
    assert abs(float(loss(maps, labels.reshape(2, 2, 6))) - by_hand) > 1e-2 * by_hand


def test_a_loss_written_for_rows_only_gets_an_info_not_an_error():
    """It never reshapes its input or reads its dimensions: maps pass by broadcasting, not by
    design. Before: FL031 as an error (the same finding as a wrong flatten)."""
    result = run_audit(SHAPES / "rows_only_last_axis.py", "RowsOnlyLastAxisFocal")
    assert [finding.code for finding in result.findings] == ["FL031"]
    finding = result.findings[0]
    assert finding.severity == "info"
    assert finding.evidence["handles_layouts"] is False
    assert "written for (N, C) inputs only" in finding.message and "(B, C, H, W)" in finding.message
    assert finding.fix.startswith("refuse other shapes")


def test_a_wrong_flatten_stays_an_error():
    """The code reshapes its input: it means to take maps and does it wrong."""
    finding = run_audit(SHAPES / "channels_first_view.py", "ChannelsFirstViewFocal").findings[0]
    assert (finding.code, finding.severity) == ("FL031", "error")
    assert "handles_layouts" not in finding.evidence


def test_a_layout_refused_with_a_clear_error_is_not_a_defect():
    result = run_audit(SHAPES / "refuses_maps.py", "RowsOnlySoftmaxFocal")
    assert result.findings == []
    assert any("layouts the loss refuses" in note and "(B, C, H, W)" in note for note in result.notes)


def test_layout_invariant_losses_have_no_fl031():
    """An element-wise sigmoid loss and a per-pixel softmax loss give the same loss in every layout."""
    fixtures = Path(__file__).parent / "fixtures" / "correct_losses.py"
    for symbol in ("sigmoid_focal_loss", "SegmentationSoftmaxFocalLoss", "SoftmaxFocalLoss"):
        assert "FL031" not in _codes(run_audit(fixtures, symbol)), symbol


def test_a_volume_only_flatten_is_fl031_naming_only_the_volume():
    """Volumes by hand: (2, 5, 2, 2, 3) built from 24 rows, then the fixture's transpose(1, -1)
    pairs voxel (d, h, w)'s logits with another voxel's label."""
    from tests.fixtures.issue21.shapes.volume_transpose import VolumeTransposeFocal

    torch.manual_seed(2)
    logits, labels = torch.randn(24, 5), torch.arange(24) % 5
    by_hand = sum(_softmax_focal(logits[i], int(labels[i])) for i in range(24)) / 24
    loss = VolumeTransposeFocal()
    maps = logits.reshape(2, 2, 6, 5).permute(0, 3, 1, 2)
    assert math.isclose(float(loss(maps, labels.reshape(2, 2, 6))), by_hand, rel_tol=1e-5)
    volumes = logits.reshape(2, 2, 2, 3, 5).permute(0, 4, 1, 2, 3)
    assert abs(float(loss(volumes, labels.reshape(2, 2, 2, 3))) - by_hand) > 1e-2 * by_hand
    # before: no finding
    result = run_audit(SHAPES / "volume_transpose.py", "VolumeTransposeFocal")
    assert _codes(result) == ["FL031"]
    assert [entry["layout"] for entry in result.findings[0].evidence["layouts"]] == ["(B, C, D, H, W)"]
