"""Issue 21 points 7, 8 and 9: what ``lossaudit lint`` runs and what every report holds.

- Discovery calls only what has a loss's signature (two tensor-like inputs); the helpers named
  like focal losses are listed as 'skipped: not a loss signature' and never run
  (``tests/fixtures/issue21/discovery/project``).
- The checks that could not run are visible without ``-v``: counted on the summary line, listed per
  target in JSON and SARIF (and JUnit, GitHub, Markdown), and failing the target under
  ``--require-checks`` or ``require-checks = true`` (``discovery/unchecked.py``).
- A named target that cannot be imported is a result in every format, and the run still exits 2
  (``discovery/unimportable.py``).

Before → after, on these fixtures:

- ``lint .`` in ``project``: ``log_focal_stats`` FL015 error (after appending 430 lines to
  ``focal_stats.log``), ``focal_weight`` "not audited" (called 42 ways), ``save_focal_config`` FL015
  error, exit 1 → the three skipped (not a loss signature, naming 'step', 'gamma' and 'cfg'),
  no log file, the three real losses audited, exit 0.
- ``lint unchecked.py:BackgroundDroppingFocalLoss --init include_background=False``: "Found 0
  errors, 0 warnings, 2 infos" and nothing else without ``-v`` → the same line ending "; N checks
  could not run on BackgroundDroppingFocalLoss: FL001, FL002, FL004, FL023, FL024, ..." with one
  ``not checked:`` line per reason, JSON ``unchecked`` items, exit 1 under ``--require-checks``.
- ``lint unimportable.py:UnimportableFocalLoss --format json``: stdout empty, exit 2 → the document
  with the target's status ``error`` and message, exit 2 (and so in every other format).
"""

from __future__ import annotations

import ast
import json
import shutil
import textwrap
from pathlib import Path
from xml.etree import ElementTree

import jsonschema
import pytest

from lossaudit.lint.discover import Candidate, discover, not_a_loss
from lossaudit.lint.findings import Finding, LintReport, TargetResult, fill_unchecked
from lossaudit.lint.report import render
from lossaudit.lint.rules import RULES

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "issue21" / "discovery"
UNCHECKED = f"{FIXTURES / 'unchecked.py'}:BackgroundDroppingFocalLoss"
UNIMPORTABLE = FIXTURES / "unimportable.py"
SARIF_SCHEMA = json.loads((Path(__file__).parent / "schemas" / "sarif-schema-2.1.0.json").read_text())
FORMATS = ("text", "json", "sarif", "github", "junit", "markdown")


def lint_json(run_cli, *args):
    result = run_cli("lint", *args, "--format", "json")
    return result, json.loads(result.stdout)


# point 7: discovery never calls what is not a loss


def test_helpers_named_focal_are_listed_as_skipped_and_never_run(run_cli, tmp_path, monkeypatch):
    project = tmp_path / "project"
    shutil.copytree(FIXTURES / "project", project)
    monkeypatch.chdir(project)
    result, document = lint_json(run_cli, ".")
    assert result.exit_code == 0, result.stdout
    targets = {t["target"]: t for t in document["targets"]}
    skipped = {
        "focal_helpers.py:log_focal_stats": "log_focal_stats(values, step): its second input 'step' is a step or epoch count by its name",
        "focal_helpers.py:focal_weight": "focal_weight(p, gamma): its second input 'gamma' is a hyper-parameter by its name",
        "focal_helpers.py:save_focal_config": "save_focal_config(cfg, path): its first input 'cfg' is a configuration by its name",
    }
    for target, why in skipped.items():
        assert targets[target]["status"] == "skipped" and targets[target]["findings"] == [], target
        assert targets[target]["hint"] == f"not a loss signature: {why}; not imported or run"
    assert not (project / "focal_stats.log").exists()  # log_focal_stats never ran (it appended 430 lines before)
    for symbol in ("sigmoid_focal_loss", "FocalLoss", "DetectionFocalLoss"):  # DetectionFocalLoss inherits forward
        target = targets[f"losses.py:{symbol}"]
        assert target["status"] == "audited" and target["detected"]["matched"], symbol
        assert not [f for f in target["findings"] if f["severity"] != "info"], symbol
    discovered = {d["target"]: d.get("skipped") for d in document["discovered"]}
    assert [t["target"] for t in document["targets"]] == list(discovered)
    assert {t for t, skip in discovered.items() if skip} == set(skipped)
    assert document["summary"]["skipped"] == 3 and document["summary"]["errors"] == 0
    text = render(
        "text",
        [TargetResult.from_dict(t) for t in document["targets"]],
        [
            Candidate(Path(d["target"].partition(":")[0]), d["target"].partition(":")[2], d["line"], d["reason"], d.get("skipped", ""))
            for d in document["discovered"]
        ],
    )
    assert text.startswith("Discovered 6 candidates (3 skipped: not a loss signature): focal_helpers.py:log_focal_stats (name contains 'focal'; skipped)")
    assert (
        f"focal_helpers.py:log_focal_stats: skipped: not a loss signature: {skipped['focal_helpers.py:log_focal_stats']}; not imported or run"
        in text.splitlines()
    )


def _signature(source: str) -> str | None:
    module = ast.parse(textwrap.dedent(source))
    classes = {node.name: node for node in module.body if isinstance(node, ast.ClassDef)}
    return not_a_loss(module.body[-1], classes)


@pytest.mark.parametrize(
    "source,expected",
    [
        # fits: two tensor-like inputs, whatever they are called, or *args; a forward inherited
        ("def focal(logits, targets, alpha=0.25, gamma=2.0): pass", None),
        ("def focal(pred, gt): pass", None),
        ("def focal(y_pred: torch.Tensor, y_true: torch.Tensor, gamma: float = 2): pass", None),
        ("def focal(log_probs, labels): pass", None),
        ("def focal(*args, **kwargs): pass", None),
        ("def focal(pred, target, weights): pass", None),  # a third required input: called, then 'uncallable'
        ("def focal_loss(pred, target, alpha: Optional[float], gamma: float = 2.0): pass", None),  # kornia's: lint supplies alpha
        ("class F(nn.Module):\n    def forward(self, input, target): pass", None),
        ("class F:\n    def __call__(self, outputs, targets): pass", None),
        ("class Base(nn.Module):\n    def forward(self, x, y): pass\nclass F(Base): pass", None),
        ("class F(SomeLibraryLoss): pass", None),  # an outside base may define forward
        # does not fit
        ("def focal(values, step): pass", "focal(values, step): its second input 'step' is a step or epoch count by its name"),
        ("def focal(p, gamma): pass", "focal(p, gamma): its second input 'gamma' is a hyper-parameter by its name"),
        ("def focal(outputs, global_step): pass", "focal(outputs, global_step): its second input 'global_step' is a step or epoch count by its name"),
        ("def focal(logits, n: int): pass", "focal(logits, n): its second input 'n' is annotated int"),
        ("def focal(logits, level=2): pass", "focal(logits, level): its second input 'level' has the default 2 (a setting, not an input)"),
        ("def focal(stats, where):\n    open(where, 'w')", "focal(stats, where): its second input 'where' is used as a path (passed to open)"),
        ("def focal(options, x):\n    return options['gamma']", "focal(options, x): its first input 'options' is a configuration by its name"),
        ("def focal(table, x):\n    return table['gamma']", "focal(table, x): its first input 'table' is used as a mapping (indexed by 'gamma')"),
        (
            "def focal(board, x):\n    board.add_scalar('focal', x)",
            "focal(board, x): its first input 'board' is used as a logger or writer (its .add_scalar() is called)",
        ),
        ("def focal(logits): pass", "focal(logits) takes one positional input ('logits'); a loss takes two (predictions and targets)"),
        (
            "def plot_focal(rows, exp, out: Path, scale: float, est=None): pass",
            "plot_focal(rows, exp, out, scale, est): its required parameter 'out' is annotated Path",
        ),
        ("def focal(pred, target, *, writer): pass", "focal(pred, target): its required parameter 'writer' is a logger or writer by its name"),
        (
            "def focal(gamma=2.0, alpha=0.25):\n    def fixed(y_true, y_pred):\n        pass\n    return fixed",
            "focal(gamma, alpha): its first input 'gamma' has the default 2.0 (a setting, not an input); it is a loss factory (it returns fixed(y_true, y_pred))",
        ),
        (
            "class F(nn.Module):\n    def forward(self, batch): pass",
            "F.forward(batch) takes one positional input ('batch'); a loss takes two (predictions and targets)",
        ),
        ("class F(nn.Module):\n    def __init__(self, gamma=2.0): pass", "F defines no forward or __call__ (nn.Module's forward raises NotImplementedError)"),
        ("class FocalConfig:\n    gamma: float = 2.0", "FocalConfig defines no forward or __call__"),
    ],
)
def test_a_loss_signature_is_read_from_the_source(source, expected):
    assert _signature(source) == expected


# point 8: checks that did not run are visible without -v


def test_checks_that_could_not_run_are_counted_listed_and_can_fail_the_run(run_cli, tmp_path, monkeypatch):
    result, document = lint_json(run_cli, UNCHECKED, "--init", "include_background=False")
    assert result.exit_code == 0  # two infos (FL018, FL019), no error
    (target,) = document["targets"]
    assert {f["severity"] for f in target["findings"]} == {"info"}
    unchecked = target["unchecked"]
    codes = list(dict.fromkeys(code for item in unchecked for code in item["codes"]))
    # with class 0 dropped, the probes that move one element of class 0 cannot conclude: alpha's balance,
    # the modulating factor and the class weights (the five of MONAI's FocalLoss in the issue)
    assert {"FL001", "FL002", "FL004", "FL023", "FL024"} <= set(codes)
    reasons = {code: item["reason"] for item in unchecked for code in item["codes"]}
    assert "quiet elements are not quiet" in reasons["FL001"] and "class 0 is not counted (include_background=False)" in reasons["FL023"]
    assert all(set(item) >= {"codes", "reason", "probe"} for item in unchecked)
    # a check that does not apply (this loss has no ignore index) is not one that could not run
    assert "FL011" not in codes

    text = run_cli("lint", UNCHECKED, "--init", "include_background=False")
    assert text.exit_code == 0
    lines = text.stdout.splitlines()
    summary = f"Found 0 errors, 0 warnings, 2 infos in {UNCHECKED}; {len(codes)} checks could not run on BackgroundDroppingFocalLoss: {', '.join(codes)}"
    assert summary in lines
    assert [line for line in lines if line.startswith("  not checked: ")] == [
        f"  not checked: {', '.join(item['codes'])}: {item['reason']}" for item in unchecked
    ]
    assert not any(line.startswith("  note: ") for line in lines)  # the notes stay under -v

    required = run_cli("lint", UNCHECKED, "--init", "include_background=False", "--require-checks")
    assert required.exit_code == 1 and "checks could not run on BackgroundDroppingFocalLoss (--require-checks: fails)" in required.stdout
    assert run_cli("lint", UNCHECKED, "--init", "include_background=False", "--require-checks", "--exit-zero").exit_code == 0

    # the configuration key, read from [tool.lossaudit.lint]
    (tmp_path / "pyproject.toml").write_text("[tool.lossaudit.lint]\nrequire-checks = true\n")
    monkeypatch.chdir(tmp_path)
    assert run_cli("lint", UNCHECKED, "--init", "include_background=False").exit_code == 1
    # with class 0 counted every check runs, and the same requirement passes
    counted, document = lint_json(run_cli, UNCHECKED)
    assert counted.exit_code == 0 and document["targets"][0]["unchecked"] == []
    (tmp_path / "pyproject.toml").write_text("[tool.lossaudit.lint]\nrequire-checks = 1\n")
    bad = run_cli("lint", UNCHECKED)
    assert bad.exit_code == 2 and "key 'require-checks': expected true or false" in bad.stderr


def _audited_with_unchecked() -> TargetResult:
    return TargetResult(
        target="losses.py:FocalLoss",
        detected={"kind": "sigmoid", "inputs": "logits", "targets": "onehot", "reference": "r", "normalisation": "n", "matched": True, "max_rel_error": 1e-7},
        findings=[Finding("FL019", "defaults differ", path="losses.py", line=3)],
        location={"path": "losses.py", "line": 3},
        unchecked=[
            {"codes": ["FL001", "FL002"], "reason": "quiet elements are not quiet for this target", "probe": "probe_alpha_balance"},
            {"codes": ["FL023"], "reason": "class 0 is not counted (include_background=False), so its weight cannot be probed", "probe": "probe_class_weights"},
        ],
    )


@pytest.mark.parametrize("require_checks", [False, True])
def test_every_format_lists_the_checks_that_could_not_run(require_checks):
    result = _audited_with_unchecked()
    text = render("text", [result], [], require_checks=require_checks)
    fails = " (--require-checks: fails)" if require_checks else ""
    assert f"Found 0 errors, 0 warnings, 1 info in losses.py:FocalLoss; 3 checks could not run on FocalLoss{fails}: FL001, FL002, FL023" in text.splitlines()
    assert "  not checked: FL001, FL002: quiet elements are not quiet for this target" in text.splitlines()

    document = json.loads(render("json", [result], []))
    assert document["targets"][0]["unchecked"] == result.unchecked

    sarif = json.loads(render("sarif", [result], [], require_checks=require_checks))
    jsonschema.validate(sarif, SARIF_SCHEMA)
    notifications = sarif["runs"][0]["invocations"][0]["toolExecutionNotifications"]
    assert [n["properties"]["codes"] for n in notifications] == [["FL001", "FL002"], ["FL023"]]
    assert [n["properties"]["reason"] for n in notifications] == [item["reason"] for item in result.unchecked]
    assert {n["level"] for n in notifications} == {"error" if require_checks else "warning"}
    assert notifications[0]["properties"]["target"] == "losses.py:FocalLoss"
    assert sarif["runs"][0]["invocations"][0]["executionSuccessful"] is True

    junit = ElementTree.fromstring(render("junit", [result], [], require_checks=require_checks))
    cases = {c.get("name").split()[0]: c for c in junit.iter("testcase")}
    assert len(cases) == len(RULES)
    for code in ("FL001", "FL002", "FL023"):
        element = cases[code].find("failure" if require_checks else "skipped")
        assert element is not None and element.get("message").startswith("could not run: "), code
    assert cases["FL004"].find("failure") is None and cases["FL004"].find("skipped") is None

    github = render("github", [result], [], require_checks=require_checks).splitlines()
    level = "error" if require_checks else "warning"
    assert github[0].startswith(f"::{level} file=losses.py,line=3,title=lossaudit%3A 3 checks could not run on FocalLoss")
    assert "FL001, FL002: quiet elements are not quiet for this target%0AFL023: class 0 is not counted" in github[0]

    markdown = render("markdown", [result], [], require_checks=require_checks)
    assert "(0 suppressed, 0 not audited, 0 not imported, 0 skipped); 3 checks could not run" in markdown
    assert f"  - 3 checks could not run on FocalLoss{fails}: FL001, FL002, FL023: FL001, FL002: quiet elements" in markdown


def test_verbose_shows_the_other_notes_once():
    result = _audited_with_unchecked()
    result.notes = [
        "FL001/FL002 not checked: quiet elements are not quiet for this target",
        "FL011 not checked: no ignore index (pass --ignore-index, or give the target an ignore_index parameter)",
    ]
    lines = render("text", [result], [], verbose=True).splitlines()
    assert [line for line in lines if "FL001" in line and "not checked" in line] == [
        "  not checked: FL001, FL002: quiet elements are not quiet for this target"
    ]
    assert "  note: FL011 not checked: no ignore index (pass --ignore-index, or give the target an ignore_index parameter)" in lines
    assert not any(line.startswith("  note:") for line in render("text", [result], []).splitlines())


def test_the_report_object_fails_on_unchecked_checks_only_when_required():
    report = LintReport((_audited_with_unchecked(),))
    assert report.ok() and report.ok(fail_on="warning") and not report.ok(require_checks=True)
    assert [item["codes"] for _, item in report.unchecked] == [["FL001", "FL002"], ["FL023"]]


def test_unchecked_falls_back_to_the_notes_and_leaves_out_what_does_not_apply():
    """The battery fills ``unchecked``; a result without it is read from its 'not checked' notes.
    Either way a check that does not apply to the target (no such parameter, no ignore index) is
    not listed, and items with one reason are merged."""
    notes = [
        "FL001/FL002 not checked: quiet elements are not quiet for this target (quiet 4.5e-19 vs active 4.5e-19)",
        "FL023 not checked: class 0 is not counted (include_background=False), so its weight cannot be probed",
        "FL024 not checked: class 0 is not counted (include_background=False), so its weight cannot be probed",
        "FL011 not checked: no ignore index (pass --ignore-index, or give the target an ignore_index parameter)",
        "FL025 not checked: the target takes no reduction, size_average or reduce argument",
        "FL026 not checked: the target has no per-class weight parameter (weight, class_weight, pos_weight)",
        "read as a softmax loss: FL004 not checked: skipped: the loss is batch-coupled (FL008): per-element ratios are not defined",
        "calibrated with 3 classes",
    ]
    from_notes = fill_unchecked(TargetResult(target="t", notes=notes))
    assert from_notes.unchecked == [
        {"codes": ["FL001", "FL002"], "reason": "quiet elements are not quiet for this target (quiet 4.5e-19 vs active 4.5e-19)", "probe": ""},
        {"codes": ["FL023", "FL024"], "reason": "class 0 is not counted (include_background=False), so its weight cannot be probed", "probe": ""},
        {"codes": ["FL004"], "reason": "read as a softmax loss: skipped: the loss is batch-coupled (FL008): per-element ratios are not defined", "probe": ""},
    ]
    given = [
        {"codes": ["FL023"], "reason": "class 0 is not counted", "probe": "probe_weight_modulation"},
        {"codes": ["FL024"], "reason": "class 0 is not counted", "probe": "probe_weight_balance"},
        {"codes": ["FL027"], "reason": "the target has no background parameter", "probe": "probe_background"},
        {"codes": ["FL009"], "reason": "no gradient", "probe": "probe_gradient", "applies": False},
    ]
    from_battery = fill_unchecked(TargetResult(target="t", notes=notes, unchecked=given))
    assert from_battery.unchecked == [
        {"codes": ["FL023", "FL024"], "reason": "class 0 is not counted", "probe": "probe_weight_modulation, probe_weight_balance"}
    ]
    assert fill_unchecked(TargetResult(target="t", status="skipped", notes=notes)).unchecked == []


# point 9: every format holds a result for every target, import errors included


@pytest.mark.parametrize("format", FORMATS)
def test_a_named_target_that_cannot_be_imported_is_in_every_format(run_cli, format, monkeypatch):
    monkeypatch.chdir(ROOT)
    path = UNIMPORTABLE.relative_to(ROOT)
    target = f"{path}:UnimportableFocalLoss"
    line = next(i for i, text in enumerate(UNIMPORTABLE.read_text().splitlines(), 1) if text.startswith("import lossaudit_not_installed"))
    hint = "ModuleNotFoundError: No module named 'lossaudit_not_installed_anywhere'"
    message = f"target '{target}' cannot be imported: {hint} (at {path}:{line})"
    result = run_cli("lint", target, "--format", format)
    assert result.exit_code == 2
    assert result.stderr.strip() == f"lossaudit: error: {message}"
    out = result.stdout
    if format == "json":
        (entry,) = json.loads(out)["targets"]
        assert (entry["target"], entry["status"], entry["hint"], entry["message"]) == (target, "error", hint, message)
        assert entry["location"] == {"path": str(path), "line": line}
        assert json.loads(out)["summary"]["import_errors"] == 1
    elif format == "sarif":
        document = json.loads(out)
        jsonschema.validate(document, SARIF_SCHEMA)
        (invocation,) = document["runs"][0]["invocations"]
        (notification,) = invocation["toolExecutionNotifications"]
        assert invocation["executionSuccessful"] is False and notification["level"] == "error" and hint in notification["message"]["text"]
        assert notification["properties"] == {"target": target, "status": "error", "hint": hint}
    elif format == "junit":
        failing = [c for c in ElementTree.fromstring(out).iter("testcase") if c.find("failure") is not None]
        assert [(c.get("classname"), c.get("name"), c.find("failure").get("message")) for c in failing] == [(target, "import", hint)]
    elif format == "github":
        assert out == f"::error file={path},line={line},title=lossaudit%3A {path}%3AUnimportableFocalLoss cannot be imported::{hint}\n"
    elif format == "markdown":
        assert "1 not imported" in out and f"- `{target}`: error: cannot be imported ({path}:{line}): {hint}" in out
    else:
        assert out.splitlines()[0] == f"{target}: error: cannot be imported ({path}:{line}): {hint}"


def test_the_other_targets_are_still_audited_and_reported(run_cli):
    """Before, a named target that could not be imported stopped the run: the report was empty even
    for the targets that could be audited."""
    good = f"{FIXTURES / 'project' / 'losses.py'}:FocalLoss"
    missing = f"{FIXTURES / 'nope.py'}:Focal"
    result, document = lint_json(run_cli, good, f"{UNIMPORTABLE}:UnimportableFocalLoss", missing)
    assert result.exit_code == 2
    audited, unimportable, absent = document["targets"]
    assert audited["target"] == good and audited["status"] == "audited" and audited["detected"]["matched"]
    assert unimportable["status"] == "error" and "cannot be imported" in unimportable["message"]
    assert absent["status"] == "error" and absent["message"] == f"'{missing}': no such file {FIXTURES / 'nope.py'}" and absent["location"] == {}
    assert result.stderr.strip().splitlines() == [f"lossaudit: error: {unimportable['message']}", f"lossaudit: error: {absent['message']}"]


def test_the_library_still_raises_for_a_named_target_that_cannot_be_imported():
    import lossaudit
    from lossaudit.errors import InputError

    with pytest.raises(InputError, match="cannot be imported: ModuleNotFoundError"):
        lossaudit.lint(f"{UNIMPORTABLE}:UnimportableFocalLoss")


def test_discovery_splits_the_fixture_project_into_losses_and_skipped_helpers():
    found = discover(FIXTURES / "project")
    assert [c.symbol for c in found.candidates] == ["sigmoid_focal_loss", "FocalLoss", "DetectionFocalLoss"]
    assert [c.symbol for c in found.skipped] == ["log_focal_stats", "focal_weight", "save_focal_config"]
