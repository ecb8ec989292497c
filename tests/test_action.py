"""The composite GitHub Action (action.yml) runs one ``lint`` and one ``compare`` and writes every
format from them with ``--also`` (issue 26 point 7): its steps' scripts run here under bash as
GitHub runs them (``-eo pipefail``), with ``lossaudit`` behind a shim that counts its calls.
``.ci/run`` runs this file again from the installed wheel. Before: three ``lint`` runs and two
``compare`` runs for the same outputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
STEPS = {step["name"]: step for step in yaml.safe_load((ROOT / "action.yml").read_text())["runs"]["steps"]}


def _run_step(name: str, tmp_path: Path, **env: str) -> tuple[subprocess.CompletedProcess, list[str], str]:
    """Run the step's script; returns the process, the lossaudit calls it made and the step summary."""
    shim = tmp_path / "bin"
    shim.mkdir(exist_ok=True)
    real = Path(sys.executable).parent / "lossaudit"
    (shim / "lossaudit").write_text(f'#!/bin/sh\necho "$*" >> "{tmp_path / "calls.log"}"\nexec "{real}" "$@"\n')
    (shim / "lossaudit").chmod(0o755)
    summary = tmp_path / "summary.md"
    summary.touch()
    environment = {**os.environ, "PATH": f"{shim}{os.pathsep}{os.environ['PATH']}", "RUNNER_TEMP": str(tmp_path), "GITHUB_STEP_SUMMARY": str(summary), **env}
    result = subprocess.run(
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", STEPS[name]["run"]], cwd=ROOT, env=environment, capture_output=True, text=True, timeout=600
    )
    calls = (tmp_path / "calls.log").read_text().splitlines() if (tmp_path / "calls.log").exists() else []
    return result, calls, summary.read_text()


@pytest.mark.parametrize("target, code", [("examples/losses/buggy.py:NaiveFocalLoss", 1), ("examples/losses/fixed.py:SoftmaxFocalLoss", 0)])
def test_the_lint_step_writes_annotations_summary_and_sarif_from_one_run(tmp_path, target, code):
    sarif = tmp_path / "lint.sarif"
    result, calls, summary = _run_step("lossaudit lint", tmp_path, LINT_ARGS=f"{target} --isolated", SARIF=str(sarif))
    assert result.returncode == code, result.stderr
    assert len(calls) == 1 and calls[0].startswith("lint "), calls
    assert ("::error " in result.stdout) == (code == 1)
    assert "lossaudit lint" in summary and target.rpartition(":")[2] in summary
    assert json.loads(sarif.read_text())["version"] == "2.1.0"


def test_the_lint_step_without_sarif_writes_no_sarif(tmp_path):
    result, calls, summary = _run_step("lossaudit lint", tmp_path, LINT_ARGS="examples/losses/fixed.py:SoftmaxFocalLoss --isolated", SARIF="")
    assert result.returncode == 0 and len(calls) == 1 and "sarif" not in calls[0]


def test_the_compare_step_gates_and_writes_the_summary_from_one_run(tmp_path):
    dump = str(EXAMPLES / "detection.npz")
    result, calls, summary = _run_step("lossaudit compare", tmp_path, COMPARE=dump, COMPARE_ARGS="--isolated")
    alone = subprocess.run(
        [Path(sys.executable).parent / "lossaudit", "compare", dump, "--isolated", "--strict", "--format", "github"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert (result.returncode, result.stdout) == (alone.returncode, alone.stdout)
    assert len(calls) == 1 and calls[0].startswith("compare "), calls
    assert "lossaudit compare" in summary and "Summary" in summary
