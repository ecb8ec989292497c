"""Shared helpers: write dumps, run the real CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from lossaudit.cli import app


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
