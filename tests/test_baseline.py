"""Reports compared across runs: `compare NEW --baseline OLD.json`, `--fail-if-share-moves` and
`lossaudit diff`, on the example classifier's validation logits after 40 and 400 training steps
(examples/model/make_model.py writes both, deterministically)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import lossaudit

pytestmark = pytest.mark.torch_free  # also run without torch, on every Python (.ci/run)

RUNS = Path(__file__).resolve().parents[1] / "examples" / "model" / "runs"


@pytest.fixture
def reports(tmp_path, run_cli):
    """The early and late runs' JSON reports, written by the CLI."""
    for name in ("early", "late"):
        assert run_cli("compare", RUNS / f"{name}.npz", "--format", "json", "--output", tmp_path / f"{name}.json").exit_code == 0
    return {name: json.loads((tmp_path / f"{name}.json").read_text()) for name in ("early", "late")}, tmp_path


def test_baseline_shows_each_share_move(reports, run_cli):
    documents, folder = reports
    result = run_cli("compare", RUNS / "late.npz", "--baseline", folder / "early.json", "--format", "json")
    section = json.loads(result.stdout)["baseline"]
    early = {row["name"]: row["share"] for row in documents["early"]["per_class"]}
    late = {row["name"]: row["share"] for row in documents["late"]["per_class"]}
    assert [row["name"] for row in section["per_class"]] == list(late)
    for row in section["per_class"]:
        for loss, move in row["share"].items():
            assert move == pytest.approx(late[row["name"]][loss] - early[row["name"]][loss], abs=1e-12)
    moves = [abs(m) for row in section["per_class"] + section["per_difficulty"] for m in row["share"].values()]
    assert section["largest_move"]["points"] == pytest.approx(100 * max(moves) * np.sign(section["largest_move"]["points"]))
    assert max(abs(m) for row in section["per_class"] for m in row["share"].values()) > 0.05  # the per-class shares do move


def test_the_gate_trips_below_the_move_and_not_above(reports, run_cli):
    documents, folder = reports
    result = run_cli("compare", RUNS / "late.npz", "--baseline", folder / "early.json", "--format", "json")
    largest = abs(json.loads(result.stdout)["baseline"]["largest_move"]["points"])
    tripped = run_cli("compare", RUNS / "late.npz", "--baseline", folder / "early.json", "--fail-if-share-moves", f"{largest - 1:.1f}")
    assert tripped.exit_code == 1 and "--fail-if-share-moves" in tripped.stderr
    assert run_cli("compare", RUNS / "late.npz", "--baseline", folder / "early.json", "--fail-if-share-moves", f"{largest + 1:.1f}").exit_code == 0


def test_diff_prints_the_same_without_data(reports, run_cli):
    documents, folder = reports
    from_compare = json.loads(run_cli("compare", RUNS / "late.npz", "--baseline", folder / "early.json", "--format", "json").stdout)["baseline"]
    from_diff = json.loads(run_cli("diff", folder / "early.json", folder / "late.json", "--format", "json").stdout)
    assert from_diff == from_compare
    text = run_cli("diff", folder / "early.json", folder / "late.json").stdout
    assert "largest move" in text and "road" in text
    assert run_cli("diff", folder / "early.json", folder / "late.json", "--fail-if-share-moves", "1").exit_code == 1


def test_findings_that_appear_are_listed(tmp_path, run_cli):
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(40, 3)).astype(np.float32)
    np.savez(tmp_path / "a.npz", logits=logits, targets=np.arange(40) % 3)
    logits[0, 0] = np.nan
    np.savez(tmp_path / "b.npz", logits=logits, targets=np.arange(40) % 3)
    assert run_cli("compare", tmp_path / "a.npz", "--format", "json", "--output", tmp_path / "a.json").exit_code == 0
    report = lossaudit.compare(tmp_path / "b.npz", baseline=tmp_path / "a.json")
    assert report.extra["baseline"]["findings"] == {"appeared": ["non-finite"], "disappeared": []}


@pytest.mark.parametrize(
    "content, says",
    [
        ('{"schema_version": 1, "per_class": []}', "schema_version 1"),
        ('{"targets": []}', "not a `lossaudit compare --format json` report"),
        ("not json", "not a JSON report"),
    ],
)
def test_an_unreadable_baseline_is_a_one_line_error(tmp_path, run_cli, content, says):
    (tmp_path / "old.json").write_text(content)
    result = run_cli("compare", RUNS / "late.npz", "--baseline", tmp_path / "old.json")
    assert result.exit_code == 2 and says in result.stderr and "old.json" in result.stderr


def test_the_gate_needs_a_baseline(run_cli):
    result = run_cli("compare", RUNS / "late.npz", "--fail-if-share-moves", "5")
    assert result.exit_code == 2 and "goes with --baseline" in result.stderr


def test_the_readme_excerpt_is_real_output(tmp_path, run_cli, monkeypatch):
    page = (Path(__file__).resolve().parents[1] / "docs" / "compare" / "baseline.md").read_text()  # the docs' "Tracking runs"
    excerpt = page[page.index("# Tracking runs") :].split("```\n", 2)[1]
    monkeypatch.chdir(tmp_path)
    assert run_cli("compare", RUNS / "early.npz", "--format", "json", "--output", "early.json").exit_code == 0
    result = run_cli("compare", RUNS / "late.npz", "--baseline", "early.json", "--fail-if-share-moves", "20")
    assert result.exit_code == 1 and "--fail-if-share-moves 20: focal's share of difficulty bin 9 moved +57.4 points" in result.stderr
    shown = result.stdout.splitlines()
    for line in excerpt.splitlines():
        if line.strip() and line.strip() != "…":
            assert line in shown, line
