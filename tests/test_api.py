"""lossaudit as a library: ``lossaudit.compare`` gives the CLI's numbers from arrays or files,
``lossaudit.lint`` gives findings as data, ``lossaudit.testing.assert_focal_loss`` fails with
every finding, and the public functions' examples run."""

from __future__ import annotations

import doctest
import importlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import lossaudit
from lossaudit.compare.report.types import Report
from lossaudit.losses.registry import FAMILIES

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
LOSSES = REPO / "examples" / "losses"


def _cli_json(*arguments: object) -> dict:
    result = subprocess.run(
        [sys.executable, "-m", "lossaudit", "compare", *map(str, arguments), "--format", "json"], capture_output=True, text=True, timeout=120, cwd=REPO
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_arrays_in_report_out_equals_the_cli(tmp_path):
    """The notebook use: arrays (numpy or torch) in, the same numbers as `compare --format json`."""
    rng = np.random.default_rng(3)
    logits = rng.normal(-1, 2, size=(300, 6)).astype(np.float32)
    targets = rng.integers(0, 7, size=300)  # 6 = background
    np.savez(tmp_path / "d.npz", logits=logits, targets=targets)
    from_arrays = lossaudit.compare(logits=torch.from_numpy(logits), targets=torch.from_numpy(targets), gamma=1.5, losses=["bce", "focal", "ghm"])
    cli = _cli_json(tmp_path / "d.npz", "--gamma", "1.5", "--losses", "bce,focal,ghm")
    document = from_arrays.to_dict()
    assert document["input"].pop("files") == ["arrays"] and cli["input"].pop("files") == [str(tmp_path / "d.npz")]
    for section in (document["input"], cli["input"]):
        section.pop("shapes")
    for finding in document["findings"] + cli["findings"]:
        finding.pop("files", None)
    assert document == cli
    assert from_arrays.losses["focal"].params == {"alpha": 0.25, "gamma": 1.5}


@pytest.mark.parametrize("name", ["detection", "classification", "centernet"])
def test_report_round_trips_the_json_document(name):
    document = _cli_json(EXAMPLES / f"{name}.npz")
    report = Report.from_dict(document)
    assert report.to_dict() == document
    assert lossaudit.compare(EXAMPLES / f"{name}.npz").to_dict() == document
    first = report.per_class[0]
    assert first.name == document["per_class"][0]["name"] and first.share == document["per_class"][0]["share"]
    assert report.losses[next(iter(document["losses"]))].sum == next(iter(document["losses"].values()))["sum"]


def test_report_is_frozen_and_typed():
    report = lossaudit.compare(EXAMPLES / "detection.npz")
    with pytest.raises(AttributeError):
        report.schema_version = 1  # type: ignore[misc]
    assert isinstance(report.per_difficulty[0].g_high, float) and report.findings[0].code == "softmax-background"
    assert "files" in report.findings[0].details


def test_to_frame_says_how_to_get_pandas(monkeypatch):
    report = lossaudit.compare(EXAMPLES / "detection.npz")
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(ImportError, match="pip install pandas"):
        report.to_frame("per_class")
    with pytest.raises(ValueError, match="unknown section"):
        report.to_frame("nonsense")


def test_bad_input_is_the_clis_message():
    with pytest.raises(lossaudit.InputError, match="targets has shape|key 'targets'"):
        lossaudit.compare(logits=np.zeros((4, 3), np.float32), targets=np.zeros((4, 2)))
    with pytest.raises(lossaudit.InputError, match="logits= and targets= go together"):
        lossaudit.compare(logits=np.zeros((4, 3), np.float32))


def _torchvision_focal(inputs, targets, alpha: float = 0.25, gamma: float = 2.0):
    p = torch.sigmoid(inputs)
    ce = torch.nn.functional.binary_cross_entropy_with_logits(inputs, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    return (alpha * targets + (1 - alpha) * (1 - targets)) * (1 - p_t) ** gamma * ce


def test_lint_returns_findings_as_data():
    report = lossaudit.lint(f"{LOSSES / 'buggy.py'}:ClampedFocalLoss")
    (finding,) = report.findings
    assert (finding.code, finding.name, finding.severity) == ("FL006", "saturated-gradient", "error")
    assert finding.path.endswith("buggy.py") and finding.line and finding.fix and finding.evidence["probe"]
    assert not report.ok() and report.to_dict()["targets"][0]["findings"][0]["code"] == "FL006"


def test_lint_takes_a_function_a_class_or_an_instance():
    module = importlib.import_module("tests.fixtures.correct_losses")
    assert lossaudit.lint(_torchvision_focal).ok()
    assert lossaudit.lint(module.RetinaNetFocalLoss).ok()
    instance = module.RetinaNetFocalLoss(alpha=0.25, gamma=2.0)
    report = lossaudit.lint(instance)
    assert report.ok() and report.targets[0].detected["matched"]
    assert lossaudit.lint(module.RetinaNetFocalLoss, select=["FL019"]).findings == ()


BUGGY = {"SoftmaxFocalLoss": ("FL001", "FL019"), "ClampedFocalLoss": ("FL006",), "NaiveFocalLoss": ("FL007",)}


@pytest.mark.parametrize("symbol", sorted(BUGGY))
def test_assert_focal_loss_fails_with_every_finding(symbol):
    from lossaudit.testing import assert_focal_loss

    with pytest.raises(AssertionError) as error:
        assert_focal_loss(f"{LOSSES / 'buggy.py'}:{symbol}", fail_on="info")  # also the infos: FL019 beside the softmax one's FL001 warning
    for code in BUGGY[symbol]:
        assert code in str(error.value)


@pytest.mark.parametrize("symbol", sorted(BUGGY))
def test_assert_focal_loss_passes_the_fixed_losses(symbol):
    from lossaudit.testing import assert_focal_loss

    init = {"alpha": [0.25, 0.5, 0.75, 1.0, 1.0]} if symbol == "SoftmaxFocalLoss" else None
    assert_focal_loss(f"{LOSSES / 'fixed.py'}:{symbol}", init=init, fail_on="info")


def _readme_block(title: str) -> str:
    text = (REPO / "docs" / "api.md").read_text()  # the Python API page of the docs
    section = text[text.index(title) :]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


def test_the_readme_pytest_example_runs(tmp_path):
    (tmp_path / "test_losses.py").write_text(_readme_block("## In your test suite"))
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path / "test_losses.py")],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stdout[-3000:]
    assert "2 passed" in result.stdout


def test_import_is_cheap_and_lists_the_api():
    code = "import sys, lossaudit; print(sorted(lossaudit.__all__)); print('torch' in sys.modules, 'numpy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60).stdout.splitlines()
    assert out[1] == "False False"
    assert {"compare", "lint", "save", "Report", "LintReport", "testing"} <= set(eval(out[0]))


@pytest.mark.parametrize("module", ["lossaudit.api", "lossaudit.testing", "lossaudit.io.dump", "lossaudit.losses"])
def test_docstring_examples_run(module):
    """The reference losses' examples live in their family modules: run them all."""
    modules = FAMILIES if module == "lossaudit.losses" else [importlib.import_module(module)]
    results = [doctest.testmod(each, optionflags=doctest.ELLIPSIS) for each in modules]
    assert sum(result.failed for result in results) == 0 and sum(result.attempted for result in results) > 0
