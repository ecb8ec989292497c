"""The text report fits every width without cutting anything: every section rendered at 60, 80,
100 and 200 columns holds every number of the JSON report, written as the report documents
(shares with one decimal, two significant digits below 0.1%, ``<0.01%`` below 0.01%; loss values with four significant
digits; counts with thousands separators), whole; no line is wider than the width or ends in a
space. The 80-column rendering of each example dump, and the excerpts of it in the README and the docs."""

from __future__ import annotations

import math
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from rich.cells import cell_len

from lossaudit.render.compare import render_text
from tests.conftest import write_npz

pytestmark = pytest.mark.torch_free  # also run without torch, on every Python (.ci/run)

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.npz"))
WIDTHS = (60, 80, 100, 200)


def _pct(value):
    if value is None:
        return "—"
    percent = 100 * value
    if 0 < abs(percent) < 0.01:
        return "<0.01%"
    if 0 < abs(percent) < 0.1:
        return f"{percent:.{1 - math.floor(math.log10(abs(percent)))}f}%"
    return f"{percent:.1f}%"


def _num(value):
    return "—" if value is None else f"{value:.4g}"


def _shown(report: dict) -> list[str]:
    """Every number (and class name) of the JSON report that the text report shows."""
    inp = report["input"]
    values = [f"{inp[key]:,}" for key in ("rows", "elements", "positives", "negatives", "ignored_elements", "nonfinite_elements")]
    for d in report["losses"].values():
        values += [
            _num(d["sum"]),
            _num(d["mean"]),
            _num(d["per_positive"]),
            _pct(d["positive_share"]),
            _pct(d["easy_negative_share"]),
            _pct(d["very_hard_share"]),
            f"{d['covers']['count']:,}",
        ]
    for c in report["per_class"]:
        values += [c["name"], f"{c['positives']:,}", f"{c['negatives']:,}", _num(c["mean_p"]), _num(c["focal_ce_ratio"])]
        values += [_pct(share) for share in c["share"].values()]
    for d in report["per_difficulty"]:
        values += [f"{d['elements']:,}", _pct(d["element_share"]), f"{d['positives']:,}", _num(d["ghm_weight"])]
        values += [_pct(share) for share in d["share"].values()]
        if d["rows"] is not None:
            values += [f"{d['rows']:,}", _pct(d["row_share"])]
    for cell in report["quadrants"]["cells"].values():
        values += [f"{cell['elements']:,}"] + [_pct(share) for share in cell["share"].values()]
        if cell["rows"] is not None:
            values.append(f"{cell['rows']:,}")
    return values


def _whole(value: str, text: str) -> bool:
    return re.search(r"(?<![\w.,<])" + re.escape(value) + r"(?![\w]|[.,]\d)", text) is not None


def _long_names(tmp_path) -> Path:
    rng = np.random.default_rng(1)
    names = np.array(["a-class-name-of-forty-characters-exactly", "person", "okapi"])
    return write_npz(tmp_path / "long.npz", logits=rng.normal(-1, 2, size=(50, 3)).astype(np.float32), targets=rng.integers(0, 4, 50), class_names=names)


@pytest.mark.parametrize("width", WIDTHS)
def test_every_number_appears_whole_at_every_width(compare_json, tmp_path, width, monkeypatch):
    long_names = _long_names(tmp_path)
    for example in EXAMPLES:
        shutil.copy(example, tmp_path)
    monkeypatch.chdir(tmp_path)  # short file names, wherever the checkout is: a path longer than the width stays whole, on its own line
    for dump in [*(Path(example.name) for example in EXAMPLES), long_names.relative_to(tmp_path)]:
        report = compare_json(dump, "--isolated")
        text = render_text(report, width)
        lines = text.splitlines()
        assert all(cell_len(line) <= width for line in lines), (dump, max(lines, key=cell_len))
        assert all(line == line.rstrip() for line in lines)
        assert "…" not in text
        for title in ("Summary", "Loaded", "Losses", "Per class", "Per difficulty", "Attention quadrants"):
            assert title in text
        missing = [value for value in _shown(report) if not _whole(value, text)]
        assert not missing, (dump, width, missing[:10])


def test_piped_text_is_as_wide_as_its_content(run_cli, tmp_path):
    out = tmp_path / "report.txt"
    assert run_cli("compare", ROOT / "examples" / "classification.npz", "--isolated", "--output", out).exit_code == 0
    lines = out.read_text().splitlines()
    assert all(line == line.rstrip() for line in lines)
    widest_table = max(cell_len(line) for line in lines if line.startswith("─"))
    assert widest_table > 80 and max(cell_len(line) for line in lines) == widest_table  # not a fixed 120 columns


def _at_80(run_cli, dump: Path) -> str:
    from typer.testing import CliRunner

    from lossaudit.cli import app

    result = CliRunner().invoke(app, ["compare", str(dump), "--isolated"], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.stderr
    return result.stdout


@pytest.mark.parametrize("dump", EXAMPLES, ids=[path.stem for path in EXAMPLES])
def test_examples_at_80_columns(run_cli, dump):
    text = _at_80(run_cli, dump)
    assert max(cell_len(line) for line in text.splitlines()) <= 80
    assert "…" not in text and text.startswith("Summary\n")


@pytest.mark.parametrize("document, shown", [("README.md", 10), ("docs/compare/index.md", 20)])
def test_readme_excerpt_is_the_80_column_rendering(run_cli, document, shown):
    """The README's short excerpt of the detection example's report and the compare page's long one."""
    excerpt = re.search(r"```text\n(.*?)```", (ROOT / document).read_text(), flags=re.S).group(1)
    text = _at_80(run_cli, ROOT / "examples" / "detection.npz")
    lines = [line for line in excerpt.splitlines() if line.strip() and line.strip() != "..."]
    assert len(lines) > shown
    for line in lines:
        assert line in text.splitlines(), line


def test_natural_width_is_what_rich_lays_out(compare_json, tmp_path):
    """The layout's width arithmetic equals Rich's own measurement of the drawn table, for every
    section of every example and of the long-names dump, whole and for each single column."""
    from rich.console import Console
    from rich.measure import Measurement

    from lossaudit.render.compare import sections
    from lossaudit.render.layout import _table, natural_width

    console = Console(width=10**4)
    for dump in [*EXAMPLES, _long_names(tmp_path)]:
        for section in sections(compare_json(dump, "--isolated")):
            for columns in [list(range(len(section.headers))), *([0, i] for i in range(1, len(section.headers)))]:
                measured = Measurement.get(console, console.options, _table(section, columns)).maximum
                assert natural_width(section, columns) == measured, (dump, section.title, columns)


def test_class_names_that_look_like_markup_stay_visible(compare_json, tmp_path):
    names = np.array(["[bold]cat[/bold]", "dog [x]", "[/]"])
    rng = np.random.default_rng(2)
    dump = write_npz(tmp_path / "markup.npz", logits=rng.normal(size=(30, 3)).astype(np.float32), targets=rng.integers(0, 3, 30), class_names=names)
    text = render_text(compare_json(dump, "--isolated"), 80)
    for name in names:
        assert name in text
