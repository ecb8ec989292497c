"""A user's own loss in ``compare`` (README "Your own loss in compare"): a file's function, a
module's class, an installed entry point or an API callable, tabled beside the built-in losses;
every failure of the user's code is one line on stderr and exit 2."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

import lossaudit
from tests.conftest import write_npz

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures" / "user_losses"
DETECTION, CLASSIFICATION = ROOT / "examples" / "detection.npz", ROOT / "examples" / "classification.npz"
MY_FOCAL, FAILING = FIXTURES / "my_focal.py", FIXTURES / "failing.py"


def shares(report: dict, loss: str) -> list[float]:
    """Every share of ``loss`` in the tables: per class, per difficulty bin, per level, per
    quadrant cell, loss and gradient alike, then its summary shares."""
    values = []
    for section in ("per_class", "per_difficulty", "levels"):
        for row in report[section]:
            values += [row["share"][loss], row["gradient_share"][loss]]
    for cell in report["quadrants"]["cells"].values():
        values += [cell["share"][loss], cell["gradient_share"][loss]]
    summary = report["losses"][loss]
    values += [summary[key] for key in summary if key.endswith("_share")]
    return [0.0 if value is None else value for value in values]


def assert_same_shares(report: dict, reference: str, user: str) -> None:
    np.testing.assert_allclose(shares(report, user), shares(report, reference), rtol=0, atol=1e-5)
    np.testing.assert_allclose(report["losses"][user]["mean"], report["losses"][reference]["mean"], rtol=1e-5)
    np.testing.assert_allclose(report["losses"][user]["gradient_mean"], report["losses"][reference]["gradient_mean"], rtol=1e-5)


def test_a_sigmoid_focal_restatement_matches_focal_in_every_table(compare_json):
    user = f"{MY_FOCAL}:sigmoid_focal_loss"
    report = compare_json(DETECTION, "--losses", f"focal,{user}")
    assert list(report["losses"]) == ["focal", user]
    assert report["losses"][user]["family"] == "sigmoid"
    assert report["losses"][user]["source"] == {"kind": "user", "from": "file", "target": user, "targets": "onehot"}
    assert_same_shares(report, "focal", user)


def test_a_softmax_focal_restatement_matches_softmax_focal(compare_json):
    """Inferred as a softmax loss taking class indices (a function), declared for the class, which
    takes one-hot rows and its gamma from --loss-init."""
    function, module = f"{MY_FOCAL}:softmax_focal_loss", f"{MY_FOCAL}:SoftmaxFocal"
    report = compare_json(CLASSIFICATION, "--losses", f"softmax-focal,{function},{module}@softmax", "--loss-init", "SoftmaxFocal.gamma=2.0")
    for user, targets in ((function, "index"), (module, "onehot")):
        assert report["losses"][user]["family"] == "softmax"
        assert report["losses"][user]["source"]["targets"] == targets
        assert_same_shares(report, "softmax-focal", user)
    assert report["losses"][module]["params"] == {"gamma": 2.0}


def test_every_format_and_the_baseline_show_the_user_loss(run_cli, tmp_path):
    user = f"{MY_FOCAL}:sigmoid_focal_loss"
    saved = tmp_path / "before.json"
    assert run_cli("compare", DETECTION, "--losses", f"focal,{user}", "--format", "json", "--output", saved).exit_code == 0
    for format in ("text", "markdown", "html"):
        result = run_cli("compare", DETECTION, "--losses", f"focal,{user}", "--format", format)
        assert result.exit_code == 0, result.stderr
        assert "sigmoid_focal_loss" in result.stdout
    result = run_cli("compare", DETECTION, "--losses", f"focal,{user}", "--baseline", saved, "--fail-if-share-moves", "0.1", "--format", "json")
    assert result.exit_code == 0, result.stderr
    assert user in json.dumps(json.loads(result.stdout)["baseline"])


FAILURES = {
    "raises": "ValueError: targets must be class indices",
    "hangs": "hung: ran past 1 s",
    "exits": "called sys.exit(3)",
    "hard_exit": "exited with code 7 without a result",
    "nan": "returned NaN or infinite values",
    "wrong_shape": "returned shape (",
    "scalar": 'returned a scalar; pass reduction="none"',
    "batch_mean_pt": "is not separable over rows: row ",
}


@pytest.mark.parametrize("name", list(FAILURES))
def test_a_failing_loss_is_one_line_and_exit_2(run_cli, name):
    user = f"{FAILING}:{name}"
    result = run_cli("compare", DETECTION, "--losses", f"focal,{user}@sigmoid", "--timeout", "1")
    assert result.exit_code == 2, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"lossaudit: error: {user}: "), lines[0]
    assert FAILURES[name] in lines[0]
    assert result.stdout == ""


def test_a_loss_allocating_without_limit_is_stopped_by_the_memory_limit(run_cli):
    resident = int(next(line.split()[1] for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("VmSize:"))) // 1024
    user = f"{FAILING}:greedy"
    result = run_cli("compare", DETECTION, "--losses", f"{user}@sigmoid", "--timeout", "20", "--memory-limit", resident + 1536)
    assert result.exit_code == 2
    line = result.stderr.strip()
    assert "\n" not in line and line.startswith(f"lossaudit: error: {user}: ") and "memory" in line, line


def test_a_scalar_loss_is_refused_with_the_fix_and_inference_uses_lints_calibration(run_cli):
    """Undeclared, the family is inferred by lint's calibration, which calls the loss too."""
    result = run_cli("compare", DETECTION, "--losses", f"{FAILING}:raises", "--timeout", "1")
    assert result.exit_code == 2
    assert "under every calling convention lint tries" in result.stderr and "@sigmoid or @softmax" in result.stderr


def test_what_the_loss_prints_stays_out_of_the_report(compare_json):
    report = compare_json(DETECTION, "--losses", f"focal,{FAILING}:prints@sigmoid")
    assert f"{FAILING}:prints" in report["losses"]


def test_unknown_names_and_loss_init_without_its_loss_are_usage_errors(run_cli):
    result = run_cli("compare", DETECTION, "--losses", "focal,nope")
    assert result.exit_code == 2 and "unknown loss nope" in result.stderr and "path/to/file.py:function" in result.stderr
    result = run_cli("compare", DETECTION, "--losses", f"focal,{MY_FOCAL}:sigmoid_focal_loss", "--loss-init", "Other.gamma=1")
    assert result.exit_code == 2 and "--loss-init Other" in result.stderr
    result = run_cli("compare", DETECTION, "--losses", f"focal,{MY_FOCAL}:missing")
    assert result.exit_code == 2 and "defines no top-level 'missing'" in result.stderr
    result = run_cli("compare", DETECTION, "--losses", f"focal,{MY_FOCAL}:sigmoid_focal_loss@tanh")
    assert result.exit_code == 2 and "expected @sigmoid or @softmax" in result.stderr


def test_the_api_takes_a_callable_and_leaves_the_inputs_unchanged():
    """A callable runs in the forked child even where this process has used torch; the arrays
    given are not changed; a callable named like a registry loss is refused."""
    import torch
    import torch.nn.functional as F

    def bce(logits, targets):
        return F.binary_cross_entropy_with_logits(logits, targets, reduction="none")

    def user_bce(logits, targets):
        logits.mul_(0)  # in place: on compare's copy, not on the caller's arrays
        return bce(logits, targets)

    torch.ones(3, requires_grad=True).sum().backward()
    data = np.load(DETECTION)
    logits, targets = data["logits"][:2].copy(), data["targets"][:2].copy()
    tensor = torch.from_numpy(logits.copy())
    report = lossaudit.compare(logits=tensor, targets=targets, losses=["bce", user_bce])
    assert report.losses["user_bce"].family == "sigmoid" and report.losses["user_bce"].details["source"]["from"] == "callable"
    np.testing.assert_array_equal(tensor.numpy(), logits)
    np.testing.assert_array_equal(targets, data["targets"][:2])
    with pytest.raises(lossaudit.InputError, match="two losses are named 'bce'"):
        lossaudit.compare(logits=logits, targets=targets, losses=["bce", bce])


def test_the_api_callable_matches_bce():
    import torch.nn.functional as F

    def my_bce(logits, targets):
        return F.binary_cross_entropy_with_logits(logits, targets, reduction="none")

    report = lossaudit.compare(DETECTION, losses=["bce", my_bce]).to_dict()
    assert report["losses"]["my_bce"]["source"]["from"] == "callable"
    assert_same_shares(report, "bce", "my_bce")


def test_the_configuration_names_user_losses_relative_to_its_folder(run_cli, tmp_path, monkeypatch):
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "losses.py").write_text(MY_FOCAL.read_text())
    config = folder / "pyproject.toml"
    config.write_text(
        '[tool.lossaudit.compare]\nlosses = ["focal", "losses.py:SoftmaxFocal@softmax"]\ntimeout = 5\n[tool.lossaudit.compare.loss-init]\nSoftmaxFocal = { gamma = 2.0 }\n'
    )
    monkeypatch.chdir(tmp_path)
    result = run_cli("compare", DETECTION, "--config", config, "--format", "json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    (user,) = [loss for loss in report["losses"] if loss != "focal"]
    assert user == "project/losses.py:SoftmaxFocal" and report["losses"][user]["params"] == {"gamma": 2.0}


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    """An installed distribution offering two losses through the ``lossaudit.losses`` entry
    points: ``my-focal`` and ``bomb``, whose module raises when imported."""
    site = tmp_path / "site"
    (site / "plugin_focal").mkdir(parents=True)
    (site / "plugin_focal" / "__init__.py").write_text("")
    (site / "plugin_focal" / "losses.py").write_text(MY_FOCAL.read_text())
    (site / "plugin_bomb.py").write_text("raise RuntimeError('imported during the listing')\n")
    info = site / "plugin_focal-1.0.dist-info"
    info.mkdir()
    info.joinpath("METADATA").write_text("Metadata-Version: 2.1\nName: plugin-focal\nVersion: 1.0\n")
    info.joinpath("entry_points.txt").write_text("[lossaudit.losses]\nmy-focal = plugin_focal.losses:sigmoid_focal_loss\nbomb = plugin_bomb:loss\n")
    monkeypatch.syspath_prepend(str(site))
    yield site
    for name in ("plugin_focal", "plugin_focal.losses", "plugin_bomb"):
        sys.modules.pop(name, None)


def test_an_entry_point_loss_is_listed_without_import_and_used_by_name(plugin, run_cli, compare_json):
    listing = run_cli("losses")
    assert listing.exit_code == 0
    assert "my-focal = plugin_focal.losses:sigmoid_focal_loss  (from plugin-focal)" in listing.stdout and "bomb = plugin_bomb:loss" in listing.stdout
    installed = json.loads(run_cli("losses", "--format", "json").stdout)["installed"]
    assert {"name": "my-focal", "target": "plugin_focal.losses:sigmoid_focal_loss", "package": "plugin-focal"} in installed
    assert "plugin_bomb" not in sys.modules and "plugin_focal.losses" not in sys.modules
    report = compare_json(DETECTION, "--losses", "focal,my-focal")
    assert report["losses"]["my-focal"]["source"]["from"] == "entry point of plugin-focal"
    assert_same_shares(report, "focal", "my-focal")
    assert "plugin_focal.losses" not in sys.modules  # imported by the child process only
    result = run_cli("compare", DETECTION, "--losses", "focal,bomb@sigmoid")
    assert result.exit_code == 2 and "bomb" in result.stderr and "imported during the listing" in result.stderr


def test_the_api_checks_the_limits_and_loss_init_needs_a_user_loss():
    with pytest.raises(lossaudit.InputError, match="expected seconds > 0"):
        lossaudit.compare(DETECTION, losses=["focal"], timeout=0)
    with pytest.raises(lossaudit.InputError, match="--loss-init goes with a user loss"):
        lossaudit.compare(DETECTION, loss_init={"x": {"gamma": 1}})


def test_softmax_probabilities_need_a_declared_family(run_cli, compare_json, tmp_path):
    """From softmax probabilities only softmax losses can be computed, so a user loss must say it is
    one (@softmax): undeclared, one line and exit 2; declared, its mean equals the registry's
    softmax focal loss computed from the same probabilities."""
    data = np.load(CLASSIFICATION)
    logits = data["logits"].astype(np.float64)
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    path = write_npz(tmp_path / "probs.npz", logits=probs.astype(np.float32), targets=data["targets"])
    function = f"{MY_FOCAL}:softmax_focal_loss"
    refused = run_cli("compare", path, "--inputs", "softmax-probs", "--losses", function)
    assert refused.exit_code == 2 and "@softmax" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
    module = f"{MY_FOCAL}:SoftmaxFocal"
    report = compare_json(path, "--inputs", "softmax-probs", "--losses", f"softmax-focal,{module}@softmax", "--loss-init", "SoftmaxFocal.gamma=2.0")
    assert report["losses"][module]["mean"] == pytest.approx(report["losses"]["softmax-focal"]["mean"], rel=1e-5)
