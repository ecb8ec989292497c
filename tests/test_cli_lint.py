"""``lossaudit lint`` and ``lossaudit rules`` through the real CLI, with each target audited in
its child process: exit codes, JSON schema, filters, and targets that hang, exit or flood."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lossaudit.lint.rules import RULES

FIXTURES = Path(__file__).parent / "fixtures"
CORRECT, BUGGY, HOSTILE = FIXTURES / "correct_losses.py", FIXTURES / "buggy_losses.py", FIXTURES / "hostile_losses.py"


def lint_json(run_cli, *args):
    result = run_cli("lint", *args, "--format", "json")
    return result, json.loads(result.stdout) if result.stdout else None


def test_clean_target_exits_0_with_the_json_schema(run_cli):
    result, document = lint_json(run_cli, f"{CORRECT}:RetinaNetFocalLoss")
    assert result.exit_code == 0
    assert set(document) >= {"version", "targets", "summary"}
    target = document["targets"][0]
    assert target["target"] == f"{CORRECT}:RetinaNetFocalLoss"
    assert set(target["detected"]) >= {"kind", "inputs", "targets", "reference", "normalisation", "max_rel_error"}
    assert target["findings"] == []
    assert document["summary"] == {"errors": 0, "warnings": 0, "infos": 0, "suppressed": 0, "uncallable": 0, "import_errors": 0, "skipped": 0}


def test_buggy_target_exits_1_with_located_findings(run_cli):
    result, document = lint_json(run_cli, f"{BUGGY}:ConstantAlphaFocal")
    assert result.exit_code == 1
    (finding,) = document["targets"][0]["findings"]
    assert set(finding) >= {"code", "name", "severity", "message", "path", "line", "evidence"}
    assert (finding["code"], finding["name"], finding["severity"]) == ("FL001", "constant-alpha", "error")
    assert finding["path"].endswith("buggy_losses.py") and finding["line"] > 0
    assert document["summary"]["errors"] == 1


def test_text_report_reads_like_ruff(run_cli):
    result = run_cli("lint", f"{BUGGY}:PInsteadOfPtFocal")
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"{BUGGY}:PInsteadOfPtFocal: sigmoid kind")
    assert any(line.startswith("tests/fixtures/buggy_losses.py:") and " FL004 [modulating-factor] error: " in line for line in lines)
    assert any(line.startswith("  fix: ") for line in lines)
    assert any(line.startswith(f"Found 1 error, 0 warnings, 0 infos in {BUGGY}:PInsteadOfPtFocal") for line in lines)


def test_select_ignore_and_exit_zero(run_cli, tmp_path):
    target = f"{BUGGY}:ConstantAlphaFocal"
    assert run_cli("lint", target, "--ignore", "FL001").exit_code == 0
    assert run_cli("lint", target, "--select", "FL01").exit_code == 0  # FL010..FL019 only
    assert run_cli("lint", target, "--exit-zero").exit_code == 0
    out = tmp_path / "lint.json"
    assert run_cli("lint", target, "--format", "json", "--output", out).exit_code == 1
    assert json.loads(out.read_text())["summary"]["errors"] == 1


def test_module_target_and_several_targets(run_cli):
    result, document = lint_json(run_cli, "tests.fixtures.correct_losses:RetinaNetFocalLoss", f"{BUGGY}:LogSigmoidFocal")
    assert result.exit_code == 1
    assert [t["findings"] and t["findings"][0]["code"] for t in document["targets"]] == [[], "FL007"]


def test_init_values_reach_the_constructor(run_cli):
    result, document = lint_json(run_cli, f"{CORRECT}:SoftmaxFocalLoss", "--init", "alpha=[0.1, 0.2, 0.3]", "--init", "gamma=1.5")
    assert result.exit_code == 0
    detected = document["targets"][0]["detected"]
    assert detected["num_classes"] == 3 and "gamma=1.5" in detected["reference"]


@pytest.mark.parametrize(
    "symbol,expected",
    [("hangs", "hung: ran past 1 s"), ("exits", "called sys.exit(3)"), ("kills_its_process", "exited with code 7 without a result")],
)
def test_hostile_targets_become_fl015(run_cli, symbol, expected):
    result, document = lint_json(run_cli, f"{HOSTILE}:{symbol}", "--timeout", "1")
    assert result.exit_code == 1
    (finding,) = document["targets"][0]["findings"]
    assert finding["code"] == "FL015" and expected in finding["message"]


def test_flooding_stdout_does_not_reach_the_report(run_cli):
    result, document = lint_json(run_cli, f"{HOSTILE}:floods_stdout")
    assert result.exit_code == 0 and document["targets"][0]["findings"] == []
    assert "loss debugging output" not in result.stdout + result.stderr


def test_exit_on_import_is_a_finding(run_cli):
    result, document = lint_json(run_cli, f"{FIXTURES / 'exits_on_import.py'}:focal")
    assert result.exit_code == 1
    assert document["targets"][0]["findings"][0]["code"] == "FL015"


@pytest.mark.parametrize(
    "args,expected",
    [
        (["nope.py:Focal"], "no such file nope.py"),
        ([f"{CORRECT}:Nope"], "defines no top-level 'Nope'"),
        (["no_such_folder"], "expected path/to/file.py:Symbol"),
        (["tests.fixtures.no_such_module:Focal"], "cannot be imported"),
        (["tests.fixtures.correct_losses:Nope"], "has no attribute 'Nope'"),
        ([f"{CORRECT}:RetinaNetFocalLoss", "--init", "alpha"], "expected KEY=VALUE"),
        ([f"{CORRECT}:RetinaNetFocalLoss", "--init", "alpha=[0.1"], "not a Python literal"),
        ([f"{CORRECT}:RetinaNetFocalLoss", "--select", "FL999"], "unknown rule code FL999"),
    ],
)
def test_unusable_targets_and_options_exit_2(run_cli, args, expected):
    result = run_cli("lint", *args)
    assert result.exit_code == 2
    assert expected in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_rules_lists_and_explains(run_cli):
    listing = run_cli("rules")
    assert listing.exit_code == 0 and len(listing.stdout.splitlines()) == len(RULES)
    assert listing.stdout.splitlines()[0].split()[:3] == ["FL001", "constant-alpha", "error"]
    explained = run_cli("rules", "fl006")
    assert explained.exit_code == 0
    assert "Wrong:" in explained.stdout and "Right:" in explained.stdout and "clamp" in explained.stdout
    assert run_cli("rules", "FL099").exit_code == 2


def test_the_text_report_wraps_to_the_width_and_keeps_every_word(run_cli, monkeypatch):
    """Piped with $COLUMNS (or on a terminal), lint's text wraps to the width, continuation lines
    indented, words never cut; without it, as wide as its content. Before: a 250-character header
    line at 60 columns."""
    target = Path(__file__).parent.parent / "examples" / "losses" / "buggy.py"
    monkeypatch.delenv("COLUMNS", raising=False)
    wide = run_cli("lint", f"{target}:NaiveFocalLoss", "--isolated").stdout
    monkeypatch.setenv("COLUMNS", "60")
    narrow = run_cli("lint", f"{target}:NaiveFocalLoss", "--isolated").stdout
    assert max(len(line) for line in wide.splitlines()) > 60
    assert all(len(line) <= 60 for line in narrow.splitlines()), narrow
    assert narrow.split() == wide.split()
    assert any(line.endswith("FL007 [non-finite]") or ": FL007 [non-finite]" in line for line in narrow.splitlines())
