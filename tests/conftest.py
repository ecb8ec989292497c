"""Shared helpers: write dumps, run the real CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from lossaudit.cli import app


@pytest.fixture(autouse=True)
def _no_terminal_width(monkeypatch):
    """Text outputs follow ``$COLUMNS`` when piped; pytest-xdist's workers have it set (80), a
    plain run does not: every test starts without it, and those about widths set it themselves."""
    monkeypatch.delenv("COLUMNS", raising=False)


@pytest.fixture
def run_cli():
    """Run ``lossaudit ARGS...`` in-process; returns the click Result (exit_code, stdout, stderr)."""
    runner = CliRunner()

    def run(*args: object):
        return runner.invoke(app, [str(arg) for arg in args], catch_exceptions=False)

    return run


@pytest.fixture
def compare_json(run_cli):
    """Run ``compare ... --format json`` and return the parsed report (asserting exit 0)."""

    def run(*args: object) -> dict:
        result = run_cli("compare", *args, "--format", "json")
        assert result.exit_code == 0, result.stderr
        return json.loads(result.stdout)

    return run


def write_npz(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)
    return path


DIGITS_TAIL = {3: 3, 5: 4, 8: 6}
"""The long-tailed digits keep this many rows of these digits (all of the others)."""


def _digits_model(x: np.ndarray, y: np.ndarray):
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=0.1, max_iter=300, random_state=0).fit(x / 16, y)


@pytest.fixture(scope="session")
def digits():
    """scikit-learn's digits scans, balanced: (validation logits ``(597, 10)`` float32, labels 0..9)
    of a seeded multinomial logistic regression trained on the first 1,200 scans."""
    load_digits = pytest.importorskip("sklearn.datasets").load_digits
    x, y = load_digits(return_X_y=True)
    logits = _digits_model(x[:1200], y[:1200]).decision_function(x[1200:] / 16).astype(np.float32)
    assert (logits.argmax(axis=1) == y[1200:]).mean() > 0.85  # a real classifier, not noise
    return logits, y[1200:].astype(np.int64)


@pytest.fixture(scope="session")
def long_tailed():
    """The digits long-tailed: digits 3, 5 and 8 cut to 3, 4 and 6 rows (:data:`DIGITS_TAIL`) in
    training and validation alike (the first rows of each), the others whole; the model is
    trained on the long-tailed training half."""
    load_digits = pytest.importorskip("sklearn.datasets").load_digits
    x, y = load_digits(return_X_y=True)

    def cut(rows: np.ndarray) -> np.ndarray:
        keep = np.ones(len(rows), bool)
        for digit, n in DIGITS_TAIL.items():
            keep[np.nonzero(y[rows] == digit)[0][n:]] = False
        return rows[keep]

    train, valid = cut(np.arange(1200)), cut(np.arange(1200, len(y)))
    logits = _digits_model(x[train], y[train]).decision_function(x[valid] / 16).astype(np.float32)
    return logits, y[valid].astype(np.int64)
