"""docs/extending.md, followed step by step on a copy of the package: a new loss family is one
module and one registry line, and it shows up in ``compare --losses``, ``lossaudit.compare``,
the configuration, the help, ``lossaudit losses`` and ``lint --kind``."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
GUIDE = (ROOT / "docs" / "extending.md").read_text()
EXAMPLE = ROOT / "examples" / "detection.npz"


def _block(title: str) -> str:
    match = re.search(rf'```python title="{re.escape(title)}"\n(.*?)```', GUIDE, flags=re.S)
    assert match, f"docs/extending.md has no block titled {title}"
    return match.group(1)


@pytest.fixture(scope="module")
def extended(tmp_path_factory) -> Path:
    """A copy of lossaudit with the guide's family added as it says: its module written, its name
    added to FAMILIES and to the registry's imports."""
    folder = tmp_path_factory.mktemp("extended")
    shutil.copytree(ROOT / "lossaudit", folder / "lossaudit", ignore=shutil.ignore_patterns("__pycache__"))
    module = _block("lossaudit/losses/smoothed_bce.py")
    (folder / "lossaudit" / "losses" / "smoothed_bce.py").write_text(module)
    registry = folder / "lossaudit" / "losses" / "registry.py"
    text = registry.read_text()
    families_line = _block("lossaudit/losses/registry.py").strip()
    text, replaced = re.subn(r"^FAMILIES = \(.*?\)$", families_line, text, count=1, flags=re.M | re.S)
    assert replaced == 1
    text, imported = re.subn(r"^(from lossaudit\.losses import \(?)", r"\1smoothed_bce, ", text, count=1, flags=re.M)
    assert imported == 1
    registry.write_text(text)
    return folder


PREFER_COPY = """\
import sys
sys.meta_path[:] = [finder for finder in sys.meta_path if "editable" not in type(finder).__module__]
sys.path.insert(0, {folder!r})
"""
"""A ``sitecustomize`` that makes every interpreter started with it (lint's child processes too)
import the copy: an editable install finds lossaudit through a meta-path finder ahead of
``sys.path``, so it is left out."""


def _run(folder: Path, *args: str) -> subprocess.CompletedProcess:
    """``python ARGS`` with the copy in ``folder`` imported (``-m lossaudit ...`` or ``-c CODE``), run
    from ``folder``: ``-m`` puts the current folder first on ``sys.path``."""
    boot = folder / "boot"
    boot.mkdir(exist_ok=True)
    (boot / "sitecustomize.py").write_text(PREFER_COPY.format(folder=str(folder)))
    env = {**os.environ, "PYTHONPATH": str(boot)}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=folder, env=env, timeout=120)


def _bce(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Stable BCE with logits in float64: max(x, 0) - x y + log(1 + exp(-|x|))."""
    return np.maximum(x, 0) - x * y + np.log1p(np.exp(-np.abs(x)))


def test_the_new_family_runs_in_compare_with_its_option(extended):
    """The report's mean of smoothed-bce at smoothing 0.2 is BCE against y·0.8 + 0.1, averaged over
    the valid elements of examples/detection.npz, computed here in numpy."""
    result = _run(extended, "-m", "lossaudit", "compare", str(EXAMPLE), "--isolated", "--losses", "bce,smoothed-bce", "--smoothing", "0.2", "--format", "json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    with np.load(EXAMPLE) as dump:
        logits, labels = dump["logits"].astype(np.float64), dump["targets"]
    classes = logits.shape[-1]  # (B, A, C) logits, (B, A) labels
    logits, labels = logits.reshape(-1, classes), labels.reshape(-1)
    onehot = np.zeros_like(logits)
    rows = np.flatnonzero((labels >= 0) & (labels < classes))
    onehot[rows, labels[rows]] = 1
    valid = labels >= 0  # -1 rows are ignored; label C is background (an all-zero row)
    expected = _bce(logits[valid], onehot[valid] * 0.8 + 0.1).mean()
    assert report["losses"]["smoothed-bce"]["params"] == {"smoothing": 0.2}
    assert report["losses"]["smoothed-bce"]["mean"] == pytest.approx(expected, rel=1e-5)
    assert report["losses"]["bce"]["mean"] == pytest.approx(_bce(logits[valid], onehot[valid]).mean(), rel=1e-5)


def test_the_new_family_is_an_api_keyword_and_a_checked_constraint(extended):
    code = (
        "import lossaudit, numpy as np\n"
        "from lossaudit.errors import InputError\n"
        "x = np.array([[0.0, 1.0], [2.0, -1.0]], np.float32)\n"
        "r = lossaudit.compare(logits=x, targets=np.array([0, 1]), losses=['smoothed-bce'], smoothing=0.0)\n"
        "print(round(r.losses['smoothed-bce'].mean, 6))\n"
        "try:\n"
        "    lossaudit.compare(logits=x, targets=np.array([0, 1]), losses=['smoothed-bce'], smoothing=2.0)\n"
        "except InputError as error:\n"
        "    print(error)\n"
    )
    result = _run(extended, "-c", code)
    assert result.returncode == 0, result.stderr
    mean, refused = result.stdout.strip().splitlines()
    x, y = np.array([[0.0, 1.0], [2.0, -1.0]]), np.array([[1.0, 0.0], [0.0, 1.0]])
    assert float(mean) == pytest.approx(_bce(x, y).mean(), abs=1e-6)  # smoothing 0 is BCE
    assert refused == "--smoothing 2.0: expected a value in [0, 1]"


def test_the_new_family_is_listed_in_the_help_the_listing_and_the_configuration(extended, tmp_path):
    listing = json.loads(_run(extended, "-m", "lossaudit", "losses", "--format", "json").stdout)
    assert listing["losses"][-1]["id"] == "smoothed-bce"
    assert any(param["option"] == "--smoothing" for param in listing["parameters"])
    help_text = _run(extended, "-m", "lossaudit", "compare", "--help").stdout
    assert "--smoothing" in help_text and "smoothed-bce" in help_text
    config = tmp_path / "pyproject.toml"
    config.write_text('[tool.lossaudit.compare]\nlosses = ["smoothed-bce"]\nsmoothing = 1.5\n')
    refused = _run(extended, "-m", "lossaudit", "compare", str(EXAMPLE), "--config", str(config))
    assert refused.returncode == 2
    assert f"{config}: [tool.lossaudit.compare] key 'smoothing': expected a value in [0, 1]; got 1.5" in refused.stderr


def test_the_guide_leaves_the_real_package_unchanged():
    """The fixture edits a copy: the installed registry has no smoothed-bce."""
    from lossaudit.losses.registry import LOSSES

    assert "smoothed-bce" not in LOSSES


USER_LOSSES = '''
import torch
import torch.nn.functional as F


def smoothed_bce_loss(logits, targets, smoothing=0.1):
    """A user's label-smoothed BCE, as the reference: targets pulled to 1/2 by smoothing."""
    return F.binary_cross_entropy_with_logits(logits, targets * (1 - smoothing) + smoothing / 2)


def smoothed_bce_loss_to_one(logits, targets, smoothing=0.1):
    """A common slip: every target pulled up by smoothing (y (1 - s) + s), negatives included."""
    return F.binary_cross_entropy_with_logits(logits, targets * (1 - smoothing) + smoothing)
'''


def test_the_new_lint_kind_audits_user_code(extended, tmp_path):
    """`lint --kind smoothed-bce` is accepted, matches a correct implementation (no error) and
    reports one that smooths towards 1 as not matching the reference (an error, exit 1)."""
    source = tmp_path / "user_losses.py"
    source.write_text(USER_LOSSES)
    help_text = _run(extended, "-m", "lossaudit", "lint", "--help").stdout
    assert "smoothed-bce" in help_text
    good = _run(extended, "-m", "lossaudit", "lint", f"{source}:smoothed_bce_loss", "--kind", "smoothed-bce", "--format", "json")
    assert good.returncode == 0, good.stdout + good.stderr
    (target,) = json.loads(good.stdout)["targets"]
    assert target["detected"]["kind"] == "smoothed-bce" and target["detected"]["matched"]
    assert target["detected"]["reference"].startswith("lossaudit.losses.smoothed_bce.smoothed_bce(smoothing=0.1")
    bad = _run(extended, "-m", "lossaudit", "lint", f"{source}:smoothed_bce_loss_to_one", "--kind", "smoothed-bce", "--format", "json")
    assert bad.returncode == 1, bad.stdout + bad.stderr
    (target,) = json.loads(bad.stdout)["targets"]
    assert not target["detected"]["matched"]
    assert any(finding["severity"] == "error" for finding in target["findings"])
