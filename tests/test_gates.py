"""The CI gates of ``lossaudit compare``: ``--fail-if-share-moves`` with shares that fall and rise,
moves just under and just over the limit and exactly at it; ``--strict`` on both sides of what
gates; and a configuration file's relative paths, which resolve against the file's folder, not
the current one.

The baselines are built by hand: a report's JSON with one share moved by a known amount, so the
largest move (new − old, in percentage points) is known without reading lossaudit's numbers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lossaudit.errors import InputError
from tests.conftest import write_npz

pytestmark = pytest.mark.torch_free  # also run without torch, on every Python (.ci/run)

LIMIT = 10.0


@pytest.fixture
def dump(tmp_path):
    """60 rows × 3 classes: one-hot targets (every 4th row background), seeded logits."""
    rng = np.random.default_rng(7)
    labels = np.arange(60) % 4  # label 3: background (all-zero row)
    targets = np.eye(4, dtype=np.float32)[labels][:, :3]
    logits = rng.normal(-1.0, 2.0, size=(60, 3)).astype(np.float32)
    return write_npz(tmp_path / "run.npz", logits=logits, targets=targets)


def _report(run_cli, dump: Path, out: Path, *extra: object) -> dict:
    result = run_cli("compare", dump, "--isolated", "--losses", "bce,focal,ghm", "--format", "json", "--output", out, *extra)
    assert result.exit_code == 0, result.stderr
    return json.loads(out.read_text())


def _moved(report: dict, section: str, row: int, loss: str, move: float) -> dict:
    """A copy of ``report`` as a baseline from which ``loss``'s share of ``section`` row ``row`` has
    moved by ``move`` (a fraction): the baseline holds share − move."""
    baseline = json.loads(json.dumps(report))
    baseline[section][row]["share"][loss] = report[section][row]["share"][loss] - move
    return baseline


def _largest_row(report: dict, section: str, loss: str) -> int:
    """The row where ``loss`` has its largest share (at least 0.11, so a rise of 0.101 leaves the
    baseline's share positive)."""
    shares = [row["share"][loss] or 0.0 for row in report[section]]
    row = int(np.argmax(shares))
    assert shares[row] > 0.11
    return row


@pytest.mark.parametrize("section, where", [("per_class", "class"), ("per_difficulty", "difficulty bin")])
@pytest.mark.parametrize("sign", [-1, +1], ids=["falls", "rises"])
@pytest.mark.parametrize("points, code", [(10.1, 1), (9.9, 0)], ids=["over", "under"])
def test_share_moves_gate_both_directions(run_cli, dump, tmp_path, section, where, sign, points, code):
    """One share moved by ±points (every other share unchanged): the largest move is ±points;
    limit 10 trips at 10.1 (exit 1, the gate's message with the signed move) and not at 9.9."""
    new = _report(run_cli, dump, tmp_path / "new.json")
    row = _largest_row(new, section, "focal")
    base = tmp_path / "base.json"
    base.write_text(json.dumps(_moved(new, section, row, "focal", sign * points / 100)))
    key = "name" if section == "per_class" else "bin"
    result = run_cli("compare", dump, "--isolated", "--losses", "bce,focal,ghm", "--baseline", base, "--fail-if-share-moves", f"{LIMIT:g}", "--format", "json")
    assert result.exit_code == code, result.stderr
    largest = json.loads(result.stdout)["baseline"]["largest_move"]
    assert largest["points"] == pytest.approx(sign * points, abs=1e-9)
    assert (largest["section"], largest["row"], largest["loss"]) == (section, new[section][row][key], "focal")
    message = f"--fail-if-share-moves 10: focal's share of {where} {new[section][row][key]} moved {sign * points:+.1f} points"
    if code:
        assert message in result.stderr
    else:
        assert "--fail-if-share-moves" not in result.stderr


def test_the_largest_move_is_by_size_not_sign(run_cli, dump, tmp_path):
    """bce rises 5 points in one class and falls 8 in another: the largest move is −8, so limit 6
    trips on the fall and limit 8.5 does not."""
    new = _report(run_cli, dump, tmp_path / "new.json")
    baseline = _moved(new, "per_class", 0, "bce", +0.05)
    baseline["per_class"][1]["share"]["bce"] = new["per_class"][1]["share"]["bce"] + 0.08
    (tmp_path / "base.json").write_text(json.dumps(baseline))
    args = ("compare", dump, "--isolated", "--losses", "bce,focal,ghm", "--baseline", tmp_path / "base.json", "--fail-if-share-moves")
    tripped = run_cli(*args, "6")
    assert tripped.exit_code == 1
    assert f"--fail-if-share-moves 6: bce's share of class {new['per_class'][1]['name']} moved -8.0 points" in tripped.stderr
    assert run_cli(*args, "8.5").exit_code == 0


def _minimal(shares: dict[str, float]) -> dict:
    """A schema-4 report with only what the comparison reads: one class ``a``."""
    return {"schema_version": 4, "per_class": [{"name": "a", "share": shares}], "per_difficulty": [], "findings": []}


@pytest.mark.parametrize("old, new, points", [(0.375, 0.25, -12.5), (0.25, 0.375, +12.5)], ids=["falls", "rises"])
def test_diff_gate_at_exactly_the_limit(run_cli, tmp_path, old, new, points):
    """Shares in eighths: the move is exactly ±0.125, ±12.5 points. The gate is "at least PCT":
    12.5 trips, 12.6 does not; 12.4 trips."""
    (tmp_path / "old.json").write_text(json.dumps(_minimal({"bce": old})))
    (tmp_path / "new.json").write_text(json.dumps(_minimal({"bce": new})))
    for limit, code in (("12.4", 1), ("12.5", 1), ("12.6", 0)):
        result = run_cli("diff", tmp_path / "old.json", tmp_path / "new.json", "--fail-if-share-moves", limit)
        assert result.exit_code == code, (limit, result.stderr)
        if code:
            assert f"--fail-if-share-moves {limit}: bce's share of class a moved {points:+.1f} points" in result.stderr
    assert f"largest move: {points:+.1f} points, bce's share of class a" in run_cli("diff", tmp_path / "old.json", tmp_path / "new.json").stdout


def test_no_move_passes_any_limit(run_cli, dump, tmp_path):
    """The report as its own baseline: every move 0 (limit 0.1 passes, limit 0 trips: 0 ≥ 0)."""
    _report(run_cli, dump, tmp_path / "new.json")
    args = ("compare", dump, "--isolated", "--losses", "bce,focal,ghm", "--baseline", tmp_path / "new.json", "--fail-if-share-moves")
    assert run_cli(*args, "0.1").exit_code == 0
    assert run_cli(*args, "0").exit_code == 1


# --- --strict ---------------------------------------------------------------------------------


def _strict(run_cli, path: Path, *extra: object):
    return run_cli("compare", path, "--isolated", "--strict", *extra)


@pytest.mark.parametrize(
    "edge, code",
    [(None, 1), (np.nextafter(np.float32(1), np.float32(2)), 0), (np.nextafter(np.float32(0), np.float32(-1)), 0)],
    ids=["all-in-unit-interval", "one-just-above-1", "one-just-below-0"],
)
def test_strict_probabilities_as_logits_at_the_unit_interval(run_cli, tmp_path, edge, code):
    """Every logit in [0, 1] (0 and 1 included) looks like probabilities: exit 1 with --strict; one
    logit a float32 step outside [0, 1] and the finding is gone: exit 0."""
    logits = np.linspace(0, 1, 30, dtype=np.float32).reshape(10, 3)
    if edge is not None:
        logits[4, 1] = edge
    path = write_npz(tmp_path / "p.npz", logits=logits, targets=np.arange(10) % 3)
    result = _strict(run_cli, path)
    assert result.exit_code == code, result.stderr
    assert ("--strict: probabilities-as-logits" in result.stderr) == bool(code)
    assert run_cli("compare", path, "--isolated").exit_code == 0  # without --strict it only reports


@pytest.mark.parametrize("nans, code", [(0, 0), (1, 1)])
def test_strict_non_finite(run_cli, tmp_path, nans, code):
    logits = np.linspace(-3, 3, 30, dtype=np.float32).reshape(10, 3)
    logits[:nans, 0] = np.nan
    result = _strict(run_cli, write_npz(tmp_path / "n.npz", logits=logits, targets=np.arange(10) % 3))
    assert result.exit_code == code, result.stderr
    assert ("--strict: non-finite" in result.stderr) == bool(code)


@pytest.mark.parametrize("losses, code", [(None, 0), ("ce,bce", 1), ("bce,focal", 0)], ids=["default", "asked-softmax", "no-softmax"])
def test_strict_background_rows_gate_only_when_a_softmax_loss_was_asked_for(run_cli, dump, losses, code):
    """Background rows (every 4th): a finding that gates only with an explicitly requested softmax loss."""
    result = _strict(run_cli, dump, *(("--losses", losses) if losses else ()))
    assert result.exit_code == code, result.stderr
    assert ("--strict: softmax-background" in result.stderr) == bool(code)


# --- configuration paths ------------------------------------------------------------------------


@pytest.fixture
def project(tmp_path, run_cli, dump):
    """``project/pyproject.toml`` naming ``names.txt``, ``alpha.txt`` and ``reports/base.json``
    relative to ``project/``; the baseline has dog's focal share 10.1 points above the new one.
    ``project/sub`` and ``elsewhere`` hold decoys under the same relative paths (other names, other
    alphas, the new report itself as baseline), so resolving against the current folder shows."""
    root = tmp_path / "project"
    (root / "reports").mkdir(parents=True)
    (root / "names.txt").write_text("cat\ndog\nbird\n")
    (root / "alpha.txt").write_text("0.25\n0.5\n0.75\n")
    inputs = ("--class-names", root / "names.txt", "--alpha-per-class", root / "alpha.txt")
    new = _report(run_cli, dump, tmp_path / "new.json", *inputs)
    (root / "reports" / "base.json").write_text(json.dumps(_moved(new, "per_class", 1, "focal", -0.101)))
    (root / "pyproject.toml").write_text(
        '[tool.lossaudit.compare]\nbaseline = "reports/base.json"\nclass-names = "names.txt"\nalpha-per-class = "alpha.txt"\n'
        'fail-if-share-moves = 10.0\nlosses = ["bce", "focal", "ghm"]\n'
    )
    for folder in (root / "sub", tmp_path / "elsewhere"):
        (folder / "reports").mkdir(parents=True)
        (folder / "names.txt").write_text("x\ny\nz\n")
        (folder / "alpha.txt").write_text("0.1\n0.1\n0.1\n")
        (folder / "reports" / "base.json").write_text(json.dumps(new))
    return root


def _check_config_paths(result, root: Path) -> None:
    assert result.exit_code == 1, result.stderr
    assert "--fail-if-share-moves 10: focal's share of class dog moved -10.1 points" in result.stderr
    report = json.loads(result.stdout)
    assert [row["name"] for row in report["per_class"]] == ["cat", "dog", "bird"]
    assert report["losses"]["focal"]["params"]["alpha"] == [0.25, 0.5, 0.75]
    assert Path(report["baseline"]["source"]).resolve() == (root / "reports" / "base.json").resolve()


def test_config_paths_resolve_against_the_config_folder_from_a_subfolder(run_cli, project, dump, monkeypatch):
    """Run from ``project/sub``: the configuration is found by walking up, and its relative paths
    are ``project/...``, not ``project/sub/...`` (the decoys there would give classes x, y, z,
    alphas 0.1 and another baseline)."""
    monkeypatch.chdir(project / "sub")
    _check_config_paths(run_cli("compare", dump, "--format", "json"), project)


def test_config_paths_resolve_against_the_config_folder_with_config_option(run_cli, project, dump, tmp_path, monkeypatch):
    """Run from an unrelated folder with ``--config project/pyproject.toml`` given relative to it."""
    monkeypatch.chdir(tmp_path / "elsewhere")
    _check_config_paths(run_cli("compare", dump, "--config", Path("..") / "project" / "pyproject.toml", "--format", "json"), project)


@pytest.mark.parametrize("section, chosen", [("compare", "html"), ("compare", "junit"), ("lint", "sarif")])
def test_every_format_of_a_command_is_a_valid_configuration_value(section, chosen, tmp_path):
    """The configuration's ``format`` takes what the command's ``--format`` takes: one list
    (lossaudit.formats). Before: ``format = "html"`` in [tool.lossaudit.compare] was refused."""
    from lossaudit.formats import FORMATS
    from lossaudit.io.config import load_config

    (tmp_path / "pyproject.toml").write_text(f'[tool.lossaudit.{section}]\nformat = "{chosen}"\n')
    assert getattr(load_config(tmp_path / "pyproject.toml"), section)["format"] == chosen
    (tmp_path / "pyproject.toml").write_text(f'[tool.lossaudit.{section}]\nformat = "xml"\n')
    with pytest.raises(InputError, match=f"expected one of {', '.join(FORMATS[section])}; got 'xml'"):
        load_config(tmp_path / "pyproject.toml")
