"""The committed example dumps are what the generator writes, and small enough to commit."""

from __future__ import annotations

import runpy
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.torch_free  # also run without torch, on every Python (.ci/run)

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_examples_are_reproducible_and_small():
    generator = runpy.run_path(str(EXAMPLES / "make_examples.py"))
    for name in ("detection", "classification", "centernet"):
        committed = np.load(EXAMPLES / f"{name}.npz", allow_pickle=False)
        fresh = generator[name](np.random.default_rng(sum(map(ord, name))))
        assert sorted(committed.files) == sorted(fresh)
        for key in committed.files:
            np.testing.assert_array_equal(committed[key], fresh[key])
        assert (EXAMPLES / f"{name}.npz").stat().st_size <= 2 * 1024 * 1024
