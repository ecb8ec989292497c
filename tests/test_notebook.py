"""Reports in scripts and notebooks (issue 26 point 9): ``print(report)`` and ``report.text(width=)``
give the text report the command prints, a notebook shows HTML (``_repr_html_``), ``repr`` is one
short line — for compare, sweep and lint alike. Before: ``print(lossaudit.compare(...))`` printed a
19.5 KB dataclass repr; there was no sweep API."""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np
import pytest

import lossaudit

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.fixture(autouse=True)
def _no_columns(monkeypatch):
    monkeypatch.delenv("COLUMNS", raising=False)


def _check_text(report, printed: str) -> None:
    assert str(report) == report.text() == printed
    narrow = report.text(width=70)
    assert max(len(line) for line in narrow.splitlines()) <= 70
    assert repr(report).startswith("<lossaudit ") and "\n" not in repr(report) and len(repr(report)) < 300


def _check_html(report, must_show: list[str]) -> str:
    shown = report._repr_html_()
    assert shown.startswith('<div class="lossaudit-report"><style>') and shown.endswith("</div>")
    assert "<body" not in shown and "<html" not in shown and "<script" not in shown
    for text in must_show:
        assert html.escape(text) in shown or html.escape(text, quote=False) in shown, text
    return shown


def test_a_compare_report_prints_as_the_command_does(run_cli):
    report = lossaudit.compare(EXAMPLES / "detection.npz")
    _check_text(report, run_cli("compare", EXAMPLES / "detection.npz").stdout)
    shown = _check_html(report, [sentence.text for sentence in report.summary])
    assert shown.count("<table>") >= 3 and ".lossaudit-report h2 {" in shown  # the page's style, scoped to the report
    assert "detection.npz" in repr(report) and "bce" in repr(report)


def test_a_sweep_report_prints_as_the_command_does(run_cli):
    report = lossaudit.sweep(EXAMPLES / "detection.npz", gamma=[0, 2], alpha=[0.25, -1])
    _check_text(report, run_cli("sweep", EXAMPLES / "detection.npz", "--gamma", "0,2", "--alpha", "0.25,-1").stdout)
    assert [(setting["gamma"], setting["alpha"]) for setting in report.settings] == [(0.0, 0.25), (0.0, -1.0), (2.0, 0.25), (2.0, -1.0)]
    assert report.to_dict()["settings"] == report.settings
    _check_html(report, [sentence["text"] for sentence in report.summary])


def test_sweep_takes_arrays_as_compare_does():
    rng = np.random.default_rng(0)
    logits, labels = rng.normal(size=(300, 4)).astype(np.float32), rng.integers(0, 4, 300)
    report = lossaudit.sweep(logits=logits, targets=labels, loss="softmax-focal", gamma="0,1")
    assert report.to_dict()["loss"] == "softmax-focal" and [setting["gamma"] for setting in report.settings] == [0.0, 1.0]
    with pytest.raises(lossaudit.InputError, match="not both"):
        lossaudit.sweep(EXAMPLES / "detection.npz", logits=logits, targets=labels)


def test_a_lint_report_prints_as_the_command_does(run_cli):
    target = f"{EXAMPLES / 'losses' / 'buggy.py'}:NaiveFocalLoss"
    report = lossaudit.lint(target)
    printed = run_cli("lint", target, "--isolated").stdout
    assert str(report) == report.text() and str(report).strip() == printed.strip()
    _check_html(report, ["FL007"])
    assert repr(report) == "<lossaudit LintReport: 1 target; 1 error, 0 warnings, 0 infos>"
