"""``compare`` on ``.npz``/``.npy`` dumps never imports torch: the CLI runs on each example dump, and on
a folder of ``.npy`` files, in a child process where ``import torch`` fails, and its report gives
the numbers of the torch references (the full-tensor engine, float64, computed here with torch)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from lossaudit.compare.oracle import tally
from lossaudit.compare.settings import LOSS_IDS, LossSettings
from lossaudit.io.dataset import load

ROOT = Path(__file__).resolve().parent.parent
BLOCK_TORCH = 'import sys\nsys.modules["torch"] = None  # from here on, import torch raises ModuleNotFoundError\n'


@pytest.fixture(scope="module")
def without_torch(tmp_path_factory) -> dict[str, str]:
    """The environment of a child process that cannot import torch (a ``sitecustomize`` first on
    ``PYTHONPATH``), checked to be in effect."""
    shim = tmp_path_factory.mktemp("no-torch")
    (shim / "sitecustomize.py").write_text(BLOCK_TORCH)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(shim), os.environ.get("PYTHONPATH")]))}
    probe = subprocess.run([sys.executable, "-c", "import torch"], env=env, capture_output=True, text=True)
    assert probe.returncode == 1 and "import of torch halted" in probe.stderr
    return env


def _compare(paths: list[Path], env: dict[str, str], *options: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "lossaudit", "compare", *map(str, paths), "--isolated", *options]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def _references(paths: list[Path]):
    data = load(paths)
    return tally(replace(data, logits=data.logits.double(), targets=data.targets.double()), LossSettings(losses=LOSS_IDS))


def _assert_report_matches(report: dict, expected) -> None:
    for loss in LOSS_IDS:
        assert report["losses"][loss]["sum"] == pytest.approx(float(expected.loss_sums[loss].sum()), rel=1e-5), loss
        per_class = [row["sum"][loss] for row in report["per_class"]]
        np.testing.assert_allclose(per_class, expected.loss_sums[loss].sum(axis=(1, 2, 3)), rtol=1e-5, atol=1e-9, err_msg=loss)
    assert report["input"]["rows"] == expected.rows


@pytest.mark.parametrize("name", ["detection", "classification", "centernet"])
def test_example_dumps_compare_without_torch(name, without_torch):
    dump = ROOT / "examples" / f"{name}.npz"
    result = _compare([dump], without_torch, "--losses", ",".join(LOSS_IDS), "--format", "json")
    assert result.returncode == 0, result.stderr
    _assert_report_matches(json.loads(result.stdout), _references([dump]))
    text = _compare([dump], without_torch)  # the default text report too
    assert text.returncode == 0 and text.stdout.startswith("Summary"), text.stderr


def test_a_folder_of_npy_files_compares_without_torch(tmp_path, without_torch):
    rng = np.random.default_rng(12)
    folder = tmp_path / "dump"
    folder.mkdir()
    np.save(folder / "logits.npy", rng.normal(-3, 2, size=(400, 7)).astype(np.float32))
    np.save(folder / "targets.npy", rng.integers(-1, 8, size=400))
    result = _compare([folder], without_torch, "--losses", ",".join(LOSS_IDS), "--format", "json")
    assert result.returncode == 0, result.stderr
    _assert_report_matches(json.loads(result.stdout), _references([folder]))


def test_a_torch_file_still_needs_torch(tmp_path, without_torch):
    """The guard is real: a ``.pt`` dump is read with torch, so under the shim it cannot be read."""
    import torch

    torch.save({"logits": torch.zeros(3, 2), "targets": torch.tensor([0, 1, 2])}, tmp_path / "dump.pt")
    result = _compare([tmp_path / "dump.pt"], without_torch)
    assert result.returncode == 2 and "torch" in result.stderr
