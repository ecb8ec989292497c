"""Issue 21 points 1 and 6, and the checks that could not run as data.

Point 1: a defect that the target's own settings hide (gamma=0, alpha=None) is found at the
canonical settings it accepts and reported with the setting that shows it. Point 6: a crash is a
finding with its cause in words, and where a workaround runs the target the rest is audited.
Fixtures: tests/fixtures/issue21/core/settings.py and crashes.py (findings before this work are in
each test's docstring). Each defect is first shown to exist with plain torch, independently of
lossaudit.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from lossaudit.lint.findings import TargetResult
from tests.fixtures.issue21.core import crashes as crash_fixtures
from tests.fixtures.issue21.core import settings as setting_fixtures
from tests.lint_helpers import run_audit

SETTINGS = Path("tests/fixtures/issue21/core/settings.py")
CRASHES = Path("tests/fixtures/issue21/core/crashes.py")
LOUD = ("error", "warning")


def _loud(result: TargetResult) -> dict:
    return {finding.code: finding for finding in result.findings if finding.severity in LOUD}


def _softmax_focal(logits: torch.Tensor, target: torch.Tensor, gamma: float) -> torch.Tensor:
    """-(1 - q_t)^gamma log q_t, mean over rows, written out here."""
    q = torch.softmax(logits, dim=1)[torch.arange(len(target)), target]
    return (-((1 - q) ** gamma) * torch.log(q)).mean()


def _batch(rows: int = 8, classes: int = 5, seed: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(rows, classes, generator=generator, dtype=torch.float64), torch.arange(rows) % classes


# -- the defects exist (plain torch) ----------------------------------------------------------


def test_detached_p_t_shows_only_away_from_gamma_0():
    """GammaOffDetachedSoftmaxFocal: at gamma=0 value and gradient are cross entropy's; at gamma=2
    the value is the softmax focal loss's but the gradient is not."""
    logits, target = _batch()
    for gamma, gradient_differs in ((0.0, False), (2.0, True)):
        mine = logits.clone().requires_grad_()
        reference = logits.clone().requires_grad_()
        value = setting_fixtures.GammaOffDetachedSoftmaxFocal(gamma=gamma)(mine, target)
        expected = _softmax_focal(reference, target, gamma)
        assert torch.allclose(value, expected)
        value.backward()
        expected.backward()
        assert (not torch.allclose(mine.grad, reference.grad, rtol=1e-3)) == gradient_differs


def test_alpha_table_crashes_with_more_than_two_classes_only():
    """AlphaOffTableSoftmaxFocal(alpha=0.25): two classes run, five raise (labels 2..4 fall outside
    the two-entry table)."""
    loss = setting_fixtures.AlphaOffTableSoftmaxFocal(alpha=0.25)
    logits, target = _batch(classes=2)
    loss(logits.float(), target)
    logits, target = _batch(classes=5)
    with pytest.raises((IndexError, RuntimeError)):
        loss(logits.float(), target)


def test_no_super_init_runs_through_forward_only():
    loss = crash_fixtures.NoSuperInitConstantAlphaFocal()
    logits, target = _batch()
    onehot = F.one_hot(target, 5).double()
    with pytest.raises(AttributeError):
        loss(logits, onehot)
    assert torch.isfinite(loss.forward(logits, onehot))


# -- point 1: audit beyond the configured point ----------------------------------------------

SETTING_CASES = {
    # symbol: (code, setting), findings before: in the comment
    "GammaOffDetachedSoftmaxFocal": ({"FL009"}, {"gamma": 2.0}),  # before: FL019 info only
    "GammaOffLogFactorSigmoidFocal": ({"FL004", "FL014"}, {"gamma": 2.0}),  # before: FL018, FL019 infos
    "GammaOffBatchPtSigmoidFocal": ({"FL008"}, {"gamma": 2.0}),  # before: FL018, FL019 infos
    "AlphaOffMisindexedSoftmaxFocal": ({"FL010"}, {"alpha": [0.25, 0.375, 0.5, 0.625, 0.75]}),  # before: nothing
    "AlphaOffTableSoftmaxFocal": ({"FL015"}, {"alpha": 0.25}),  # before: nothing
}


@pytest.mark.parametrize("symbol", sorted(SETTING_CASES))
def test_defect_hidden_by_own_settings_is_reported_with_its_setting(symbol):
    codes, setting = SETTING_CASES[symbol]
    result = run_audit(SETTINGS, symbol)
    loud = _loud(result)
    found = codes & set(loud)
    assert found, [f"{f.code} {f.message}" for f in result.findings]
    finding = loud[found.pop()]
    words = ", ".join(f"{name}={value:g}" if isinstance(value, float) else f"{name}=[" for name, value in setting.items())
    assert finding.message.startswith(f"at {words}"), finding.message
    assert finding.evidence["setting"] == setting
    assert json.loads(json.dumps(result.to_dict()))["findings"]  # the setting travels as data


def test_table_crash_says_it_runs_with_two_classes():
    result = run_audit(SETTINGS, "AlphaOffTableSoftmaxFocal")
    crash = _loud(result)["FL015"]
    assert "with 5 classes (it runs with 2" in crash.message
    assert crash.evidence["source_line"].startswith("loss = loss * weights")


def test_correct_loss_stays_clean_at_the_canonical_settings():
    """GammaOffCorrectSoftmaxFocal: before and after, FL019 (info) only; after, it was probed at
    gamma 2 and 0.5 and at a per-class alpha, and its alpha checks ran there."""
    result = run_audit(SETTINGS, "GammaOffCorrectSoftmaxFocal")
    assert _loud(result) == {}
    probed = [note for note in result.notes if note.startswith("probed at")]
    assert any(note.startswith("probed at gamma=2 as well") for note in probed)
    assert any("(per class)" in note and "FL010" in note for note in probed), probed
    assert any(note.startswith("not probed at gamma=2, alpha=0.25") for note in result.notes)  # a 0-d alpha tensor cannot be indexed
    assert not any(item["probe"] == "probe_softmax_alpha" for item in result.unchecked)


# -- structured 'checks that could not run' ---------------------------------------------------


def test_unchecked_items_are_data_and_drop_checks_run_at_another_setting():
    result = run_audit(SETTINGS, "GammaOffDetachedSoftmaxFocal")
    assert result.unchecked, "a loss without ignore_index cannot be checked for FL011"
    for item in result.unchecked:
        assert set(item) == {"codes", "reason", "probe"} and item["codes"] and item["reason"]
    ignore = next(item for item in result.unchecked if item["probe"] == "probe_ignore_index")
    assert ignore["codes"] == ["FL011"] and "ignore" in ignore["reason"]
    assert TargetResult.from_dict(json.loads(json.dumps(result.to_dict()))).unchecked == result.unchecked
    assert not any("FL001/FL010 not checked" in note for note in result.notes)  # ran at a per-class alpha


def test_a_target_nothing_runs_on_lists_every_check_as_unchecked():
    result = run_audit(CRASHES, "Int32OneHotFocal")
    assert [item["probe"] for item in result.unchecked] == ["calibration"]
    assert {"FL001", "FL004", "FL009"} <= set(result.unchecked[0]["codes"]) and "FL015" not in result.unchecked[0]["codes"]


# -- point 6: a crash is a finding, not the end of the audit ----------------------------------

CRASH_CASES = {
    # symbol: (words in FL015, the workaround's words or None, other codes expected), before: FL015 alone
    "CudaTargetsFocal": (("hard-coded CUDA device", "`targets = targets.cuda()`"), "CUDA calls", set()),
    "CudaDeviceDefaultAndDetachedFocal": (("hard-coded CUDA device", "device=device)`"), "CUDA calls", {"FL009"}),
    "NoSuperInitConstantAlphaFocal": (("does not call super().__init__()",), "nn.Module.__init__ run on the instance", {"FL001"}),
    "WeightNoneCrashFocal": (
        ("weight=None cannot be used here", "`return (self.weight[target] * loss).mean()`"),
        "weight=tensor([1.0, 1.0, 1.0, 1.0, 1.0])",
        set(),
    ),
    "SequenceAssertFocal": (("assertion `logits.dim() == 3 and labels.dim() == 2` is false",), "(B, C, L) inputs", {"FL004", "FL014"}),
    "Int32OneHotFocal": (("F.one_hot needs int64 class indices",), None, set()),
}


@pytest.mark.parametrize("symbol", sorted(CRASH_CASES))
def test_crash_names_its_cause_and_the_rest_is_audited(symbol):
    words, workaround, others = CRASH_CASES[symbol]
    result = run_audit(CRASHES, symbol)
    loud = _loud(result)
    crash = loud.pop("FL015")
    for text in words:
        assert text in crash.message, crash.message
    if workaround is None:
        assert "workaround" not in crash.evidence and result.detected.get("reference") is None
        return
    assert workaround in crash.evidence["workaround"] and "the rest of the audit ran with" in crash.message
    assert any(note.startswith("the target fails as configured; audited with") for note in result.notes)
    assert result.detected["reference"] is not None
    if others:
        assert set(loud) & others, [f"{f.code} {f.message}" for f in result.findings]
        assert all(workaround in finding.evidence["workaround"] for finding in loud.values())
    else:
        assert loud == {}, [f"{f.code} {f.message}" for f in result.findings]


def test_cuda_patch_is_gone_after_the_audit():
    run_audit(CRASHES, "CudaTargetsFocal")
    assert "cuda" not in vars(torch.Tensor) and "to" not in vars(torch.Tensor)
    if not torch.cuda.is_available():
        with pytest.raises((AssertionError, RuntimeError)):
            torch.zeros(1).cuda()


def test_sequence_layout_is_detected():
    result = run_audit(CRASHES, "SequenceAssertFocal")
    assert result.detected["layout"] == "sequence"


def test_cli_json_and_sarif_carry_the_setting():
    """End to end in lint's child process: the setting is data in JSON and SARIF."""
    target = f"{SETTINGS}:GammaOffDetachedSoftmaxFocal"
    run = subprocess.run([sys.executable, "-m", "lossaudit", "lint", target, "--isolated", "--format", "json"], capture_output=True, text=True, check=False)
    finding = next(f for f in json.loads(run.stdout)["targets"][0]["findings"] if f["code"] == "FL009")
    assert finding["evidence"]["setting"] == {"gamma": 2.0}
    run = subprocess.run([sys.executable, "-m", "lossaudit", "lint", target, "--isolated", "--format", "sarif"], capture_output=True, text=True, check=False)
    results = json.loads(run.stdout)["runs"][0]["results"]
    assert any(
        r["ruleId"] == "FL009" and r["properties"]["evidence"]["setting"] == {"gamma": 2.0} and ": at gamma=2: " in r["message"]["text"] for r in results
    )


def test_canonical_settings_stop_at_the_time_budget(monkeypatch):
    """A slow target's canonical settings are skipped with a note once the budget is spent, so its
    audit still ends within the parent's time limit."""
    from lossaudit.lint import worker

    monkeypatch.setattr(worker, "SETTINGS_BUDGET", 0.0)
    result = run_audit(SETTINGS, "GammaOffDetachedSoftmaxFocal")
    assert "FL009" not in _loud(result)
    assert any(note.startswith("not probed at gamma=2: the audit's time for canonical settings is spent") for note in result.notes)


@pytest.mark.skipif(torch.cuda.is_available(), reason="the import succeeds where CUDA exists")
def test_cuda_at_import_is_named_and_the_rest_audited():
    result = run_audit(Path("tests/fixtures/issue21/core/cuda_at_import.py"), "focal")
    loud = _loud(result)
    crash = loud.pop("FL015")
    assert crash.evidence["phase"] == "import" and crash.evidence["cause"] == "device"
    assert "`CLASS_SCALE = torch.ones(5).cuda()`" in crash.message and "the rest of the audit ran with CUDA calls" in crash.message
    assert loud == {} and result.detected["matched"]


@pytest.mark.parametrize(
    ("symbol", "words"),
    [
        ("FixedBatchFocal", "cause: a hard-coded shape (`logits, targets = logits.view(16, -1), targets.view(16, -1)`)"),  # before: the RuntimeError alone
        ("Python2Focal", "cause: `xrange` is a Python 2 name (`for i in xrange(logits.shape[0]):`); Python 3 has range"),  # before: the NameError alone
    ],
)
def test_probe_and_calibration_crashes_name_their_cause(symbol, words):
    result = run_audit(Path("tests/fixtures/buggy_losses.py"), symbol)
    crash = _loud(result)["FL015"]
    assert words in crash.message, crash.message
    assert "#" not in crash.evidence["source_line"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="the call succeeds where CUDA exists")
def test_in_process_api_never_patches_torch():
    """lossaudit.lint(obj) audits in the caller's process: the crash is named, but CUDA calls are
    not run on the CPU there (only lint's child process patches torch)."""
    from lossaudit.api import lint

    report = lint(crash_fixtures.CudaTargetsFocal)
    (result,) = report.targets
    crash = next(f for f in result.findings if f.code == "FL015")
    assert "hard-coded CUDA device" in crash.message and "workaround" not in crash.evidence
    assert result.unchecked and result.unchecked[0]["probe"] == "calibration"
