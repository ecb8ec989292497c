"""lossaudit in CI: the real CLI on a fixture repository with [tool.lossaudit] configuration, a
package holding a correct and a buggy loss (with a suppression comment), every report format,
exit codes 0/1/2, discovery, and the pre-commit / GitHub Action files."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from xml.etree import ElementTree

import jsonschema
import numpy as np
import pytest
import yaml

from lossaudit.lint.rules import RULES
from lossaudit.render.formats import annotation, escape_data, escape_property

ROOT = Path(__file__).resolve().parent.parent
FIXTURE_REPO = Path(__file__).parent / "fixtures" / "repo"
SARIF_SCHEMA = json.loads((Path(__file__).parent / "schemas" / "sarif-schema-2.1.0.json").read_text())


@pytest.fixture
def repo(tmp_path, monkeypatch):
    """A copy of the fixture repository as the current folder."""
    copy = tmp_path / "repo"
    shutil.copytree(FIXTURE_REPO, copy)
    monkeypatch.chdir(copy)
    return copy


def _line_of(path: Path, text: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if text in line)


def test_configured_targets_json_with_suppression(run_cli, repo):
    result = run_cli("lint", "--format", "json")
    assert result.exit_code == 1
    document = json.loads(result.stdout)
    good, bad = document["targets"]
    assert (good["target"], good["findings"]) == ("mylosses/focal.py:GoodFocalLoss", [])
    assert bad["target"] == "mylosses.focal:BadFocalLoss" and bad["detected"]["kind"] == "sigmoid"
    assert [f["code"] for f in bad["findings"]] == ["FL001"]
    assert [f["code"] for f in bad["suppressed"]] == ["FL019"]
    assert document["summary"] == {"errors": 1, "warnings": 0, "infos": 0, "suppressed": 1, "uncallable": 0, "import_errors": 0, "skipped": 0}


def test_text_format_counts_suppressed(run_cli, repo):
    result = run_cli("lint")
    assert result.exit_code == 1
    assert "Found 1 error, 0 warnings, 0 infos (1 suppressed) in mylosses.focal:BadFocalLoss" in result.stdout


def test_sarif_validates_and_locates_findings(run_cli, repo):
    result = run_cli("lint", "--format", "sarif")
    assert result.exit_code == 1
    sarif = json.loads(result.stdout)
    jsonschema.validate(sarif, SARIF_SCHEMA)
    run = sarif["runs"][0]
    driver = run["tool"]["driver"]
    assert (driver["name"], sarif["version"]) == ("lossaudit", "2.1.0") and driver["version"] and driver["informationUri"]
    assert len(driver["rules"]) == len(RULES)
    assert all({"id", "name", "shortDescription", "fullDescription", "help", "defaultConfiguration"} <= set(r) for r in driver["rules"])
    by_rule = {r["ruleId"]: r for r in run["results"]}
    location = by_rule["FL001"]["locations"][0]["physicalLocation"]
    assert location["artifactLocation"]["uri"] == "mylosses/focal.py"
    assert location["region"]["startLine"] == _line_of(repo / "mylosses" / "focal.py", "loss = self.alpha * (1 - p_t)")
    assert by_rule["FL001"]["level"] == "error"
    assert by_rule["FL019"]["suppressions"][0]["kind"] == "inSource"


def test_github_annotations(run_cli, repo):
    result = run_cli("lint", "--format", "github")
    assert result.exit_code == 1
    (line,) = result.stdout.splitlines()
    row = _line_of(repo / "mylosses" / "focal.py", "loss = self.alpha * (1 - p_t)")
    assert line.startswith(f"::error file=mylosses/focal.py,line={row},title=FL001 constant-alpha (mylosses.focal%3ABadFocalLoss)::")
    assert "%0AFix: " in line and "\n" not in line


def test_junit_has_one_case_per_target_and_rule(run_cli, repo):
    result = run_cli("lint", "--format", "junit")
    assert result.exit_code == 1
    suite = ElementTree.fromstring(result.stdout).find("testsuite")
    cases = suite.findall("testcase")
    assert len(cases) == 2 * len(RULES)
    failed = [c for c in cases if c.find("failure") is not None]
    skipped = [c for c in cases if c.find("skipped") is not None]
    assert [(c.get("classname"), c.get("name")) for c in failed] == [("mylosses.focal:BadFocalLoss", "FL001 constant-alpha")]
    assert [c.get("name") for c in skipped] == ["FL019 default-mismatch"]
    assert suite.get("failures") == "1"


def test_markdown_summary(run_cli, repo, tmp_path):
    out = tmp_path / "summary.md"
    assert run_cli("lint", "--format", "markdown", "--output", out).exit_code == 1
    text = out.read_text()
    assert text.startswith("## lossaudit lint")
    assert "| `mylosses.focal:BadFocalLoss` | `mylosses/focal.py:" in text and "| FL001 `constant-alpha` | error |" in text


def test_exit_codes_and_precedence(run_cli, repo):
    assert run_cli("lint", "mylosses/focal.py:GoodFocalLoss").exit_code == 0  # arguments replace the configured targets
    assert run_cli("lint", "--ignore", "FL001").exit_code == 0
    assert run_cli("lint", "--fail-on", "info").exit_code == 1
    assert run_cli("lint", "--exit-zero").exit_code == 0
    isolated = run_cli("lint", "--isolated")
    assert isolated.exit_code == 2 and "no targets" in isolated.stderr
    missing = run_cli("lint", "--config", "missing.toml")
    assert missing.exit_code == 2 and "missing.toml" in missing.stderr


def test_file_fail_on_is_overridden_by_the_command_line(run_cli, repo):
    pyproject = repo / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('fail-on = "error"', 'fail-on = "error"\nignore = ["FL001"]'))
    assert run_cli("lint").exit_code == 0
    assert run_cli("lint", "--ignore", "FL013").exit_code == 1  # the command line wins over the file


@pytest.mark.parametrize(
    "section,expected",
    [
        ('[tool.lossaudit.lint]\nfail-on = "sometimes"\n', "[tool.lossaudit.lint] key 'fail-on': expected one of error, warning, info"),
        ('[tool.lossaudit.lint]\nselect = ["FL999"]\n', "unknown rule code FL999"),
        ("[tool.lossaudit.lint]\ntimeuot = 3\n", "[tool.lossaudit.lint] key 'timeuot': unknown key"),
        ('[tool.lossaudit.compare]\nalpha = "a quarter"\n', "[tool.lossaudit.compare] key 'alpha': expected a number"),
        ('[tool.lossaudit.lint]\ntargets = [{ target = "x.py:F", gama = 2 }]\n', "unknown key 'gama'"),
        ("[tool.lossaudit]\nlnit = {}\n", "[tool.lossaudit] key 'lnit': unknown"),
        ("[tool.lossaudit.lint]\njobs = 0\n", "[tool.lossaudit.lint] key 'jobs': expected at least 1"),
        ("[tool.lossaudit.lint]\nexclude = [1]\n", "[tool.lossaudit.lint] key 'exclude': expected a list of strings"),
    ],
)
def test_bad_configuration_exits_2_naming_the_key(run_cli, tmp_path, monkeypatch, section, expected):
    (tmp_path / "pyproject.toml").write_text(section)
    monkeypatch.chdir(tmp_path)
    result = run_cli("lint", "x.py:F")
    assert result.exit_code == 2
    assert expected in result.stderr and str(tmp_path / "pyproject.toml") in result.stderr


@pytest.mark.parametrize(
    "target,expected",
    [
        ('"mylosses/nope.py:GoodFocalLoss"', "key 'targets'[0]: 'mylosses/nope.py:GoodFocalLoss': no such file mylosses/nope.py"),
        ('{ target = "mylosses/focal.py:Nope" }', "key 'targets'[0]: 'mylosses/focal.py:Nope': mylosses/focal.py defines no top-level 'Nope'"),
        ('{ target = "mylosses.nope:GoodFocalLoss", kind = "sigmoid" }', "key 'targets'[0]: no module named 'mylosses.nope'"),
        ('"no_such_package.losses:Focal"', "key 'targets'[0]: no module named 'no_such_package'"),
    ],
)
def test_a_configured_target_that_does_not_exist_exits_2(run_cli, repo, target, expected):
    pyproject = repo / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('"mylosses/focal.py:GoodFocalLoss"', target))
    result = run_cli("lint")
    assert result.exit_code == 2 and result.stdout == ""
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"lossaudit: error: {pyproject}: [tool.lossaudit.lint] ") and expected in line


def test_module_targets_resolve_from_the_configuration_folder(run_cli, repo, monkeypatch):
    monkeypatch.chdir(repo / "scripts")
    result = run_cli("lint", "--format", "json")
    assert result.exit_code == 1
    good, bad = json.loads(result.stdout)["targets"]
    assert good["target"] == f"{repo / 'mylosses' / 'focal.py'}:GoodFocalLoss" and good["findings"] == []
    assert bad["target"] == "mylosses.focal:BadFocalLoss" and [f["code"] for f in bad["findings"]] == ["FL001"]


def test_exclude_from_the_configuration_and_the_command_line(run_cli, repo):
    pyproject = repo / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('fail-on = "error"', 'fail-on = "error"\nexclude = ["other.py"]'))
    configured = json.loads(run_cli("lint", ".", "--format", "json").stdout)
    assert [d["target"] for d in configured["discovered"]] == ["mylosses/focal.py:GoodFocalLoss", "mylosses/focal.py:BadFocalLoss"]
    overridden = run_cli("lint", ".", "--exclude", "mylosses/focal.py", "--exclude", "scripts")
    assert overridden.exit_code == 0  # the command line replaces the file's list: only other.py's ClassBalancedLoss
    assert overridden.stdout.startswith("Discovered 1 candidate: mylosses/other.py:ClassBalancedLoss")


def test_yaml_configuration(run_cli, tmp_path, monkeypatch):
    shutil.copytree(FIXTURE_REPO / "mylosses", tmp_path / "mylosses")
    (tmp_path / "lossaudit.yaml").write_text("lint:\n  targets:\n    - mylosses/focal.py:GoodFocalLoss\n")
    monkeypatch.chdir(tmp_path)
    document = json.loads(run_cli("lint", "--format", "json").stdout)
    assert [t["target"] for t in document["targets"]] == ["mylosses/focal.py:GoodFocalLoss"]


def test_discovery_finds_candidates_without_importing_unrelated_code(run_cli, repo):
    result = run_cli("lint", ".", "--format", "json")
    document = json.loads(result.stdout)
    found = {d["target"]: d["reason"] for d in document["discovered"]}
    assert found == {
        "mylosses/focal.py:GoodFocalLoss": "name contains 'focal'",
        "mylosses/focal.py:BadFocalLoss": "name contains 'focal'",
        "mylosses/other.py:ClassBalancedLoss": "a Module whose __init__ takes gamma",
    }
    statuses = {t["target"]: t["status"] for t in document["targets"]}
    assert statuses["mylosses/other.py:ClassBalancedLoss"] == "uncallable"
    uncallable = next(t for t in document["targets"] if t["status"] == "uncallable")
    assert "--init" in uncallable["hint"] and uncallable["findings"] == []
    assert result.exit_code == 1  # BadFocalLoss's FL001
    text = run_cli("lint", "mylosses").stdout
    assert text.startswith("Discovered 3 candidates: mylosses/focal.py:GoodFocalLoss (name contains 'focal')")


def _dump(repo: Path) -> Path:
    logits = np.array([[2.0, -1.0], [np.nan, 0.5], [-1.0, 1.0]], np.float32)
    np.savez(repo / "preds.npz", logits=logits, targets=np.array([0, 1, 2]))
    return repo / "preds.npz"


def test_compare_reads_its_defaults_from_the_configuration(run_cli, repo):
    path = _dump(repo)
    configured = run_cli("compare", path, "--format", "json")
    assert configured.exit_code == 1  # strict = true in the file, and the dump holds a NaN
    assert list(json.loads(configured.stdout)["losses"]) == ["bce", "focal"]
    overridden = run_cli("compare", path, "--format", "json", "--losses", "ce")
    assert list(json.loads(overridden.stdout)["losses"]) == ["ce"]
    isolated = run_cli("compare", path, "--format", "json", "--isolated")
    # the default set, sigmoid losses first: row 3 (label 2 = C) is background, so this is detection data
    assert isolated.exit_code == 0 and list(json.loads(isolated.stdout)["losses"]) == ["bce", "focal", "ghm", "ce", "softmax-focal"]


def test_compare_github_and_junit(run_cli, repo):
    path = _dump(repo)
    github = run_cli("compare", path, "--format", "github")
    assert github.exit_code == 1
    assert github.stdout.startswith("::error file=preds.npz,title=lossaudit compare%3A non-finite::NaN or infinite logits")
    junit = ElementTree.fromstring(run_cli("compare", path, "--format", "junit", "--isolated").stdout)
    failures = [c.get("name") for c in junit.iter("testcase") if c.find("failure") is not None]
    assert failures == ["non-finite"]  # row 3's background (label 2 = C) fails only when a softmax loss is asked for
    explicit = ElementTree.fromstring(run_cli("compare", path, "--format", "junit", "--isolated", "--losses", "ce").stdout)
    assert [c.get("name") for c in explicit.iter("testcase") if c.find("failure") is not None] == ["non-finite", "softmax-background"]


def test_github_escaping():
    message = "100% sure: a, b\nnext line\r"
    assert escape_data(message) == "100%25 sure: a, b%0Anext line%0D"
    assert escape_property("a:b,c%") == "a%3Ab%2Cc%25"
    line = annotation("warning", message, file="dir/my,file:1.py", line=3, title="T: x, y")
    assert line == "::warning file=dir/my%2Cfile%3A1.py,line=3,title=T%3A x%2C y::100%25 sure: a, b%0Anext line%0D"
    assert annotation("info", "m") == "::notice::m"


def test_pre_commit_hook_definition():
    (hook,) = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())
    assert (hook["id"], hook["entry"], hook["language"], hook["pass_filenames"]) == ("lossaudit", "lossaudit lint", "python", False)


CI_PAGE = (ROOT / "docs" / "ci" / "index.md").read_text()  # the docs' "lossaudit in CI"


@pytest.mark.parametrize("name", ["pre-commit-config.yaml", "github-workflow.yml"])
def test_the_docs_show_the_ci_files_verbatim(name):
    text = (ROOT / "examples" / "ci" / name).read_text()
    yaml.safe_load(text)
    assert text in CI_PAGE


def test_local_pre_commit_hook_and_workflow_use_lossaudit():
    local = yaml.safe_load((ROOT / "examples" / "ci" / "pre-commit-config.yaml").read_text())
    (hook,) = local["repos"][0]["hooks"]
    assert local["repos"][0]["repo"] == "local" and hook["entry"] == "lossaudit lint" and hook["language"] == "system"
    workflow = yaml.safe_load((ROOT / "examples" / "ci" / "github-workflow.yml").read_text())
    steps = workflow["jobs"]["lossaudit"]["steps"]
    action = next(step for step in steps if step.get("uses", "").startswith("lossaudit/lossaudit"))
    assert set(action["with"]) <= set(yaml.safe_load((ROOT / "action.yml").read_text())["inputs"])
    upload = next(step for step in steps if "upload-sarif" in step.get("uses", ""))
    assert upload["with"]["sarif_file"] == action["with"]["sarif"]


def test_action_runs_only_options_that_exist(run_cli):
    action = yaml.safe_load((ROOT / "action.yml").read_text())
    assert action["runs"]["using"] == "composite"
    commands = [line.strip() for step in action["runs"]["steps"] for line in step["run"].splitlines() if line.strip().startswith("lossaudit ")]
    assert any("--also sarif=" in c for c in commands) and any("--also markdown=" in c for c in commands)
    assert sorted(c.split()[1] for c in commands) == ["compare", "lint"], "one run of each, every format from it (--also)"
    for command in commands:
        subcommand = command.split()[1]
        help_text = run_cli(subcommand, "--help").stdout
        for option in re.findall(r"(--[a-z-]+)", command):
            assert option in help_text, (subcommand, option)


def test_top_by_is_read_from_the_configuration(tmp_path, monkeypatch, run_cli):
    (tmp_path / "pyproject.toml").write_text('[tool.lossaudit.compare]\ntop = 2\ntop-by = "focal"\n')
    monkeypatch.chdir(tmp_path)
    result = run_cli("compare", Path(__file__).resolve().parents[1] / "examples" / "detection.npz", "--format", "markdown")
    assert result.exit_code == 0 and "by focal loss" in result.stdout
