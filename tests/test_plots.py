"""Plots: every figure renders to a valid PNG and SVG of the expected size and number of axes, the
curves and bars hold the numbers of the formulas (written here) and of the report's counts, and
``--plot`` on ``compare`` and ``explain`` writes a new file or stops with one line and exit 2."""

from __future__ import annotations

import json
import math
import os
import struct
import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
import pytest

import lossaudit
from lossaudit.explain import sigmoid_steps, softmax_steps
from lossaudit.render import plots
from tests.test_torch_free import BLOCK_TORCH

pytest.importorskip("matplotlib")

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ["detection", "classification", "centernet"]
SVG = "{http://www.w3.org/2000/svg}"


@pytest.fixture(scope="module")
def reports() -> dict[str, dict]:
    return {name: lossaudit.compare(ROOT / "examples" / f"{name}.npz").to_dict() for name in EXAMPLES}


@pytest.fixture(scope="module")
def pngs(reports) -> dict[str, bytes]:
    """Each example report's figure as PNG, rendered once for the tests that read it."""
    return {name: plots.render(plots.compare_figure(report), "png") for name, report in reports.items()}


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk (checking the signature and the chunk's name)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def svg_axes(data: bytes) -> int:
    """The axes matplotlib drew into an SVG: its ``<g id="axes_N">`` groups (the file must parse)."""
    root = ElementTree.fromstring(data)
    assert root.tag == f"{SVG}svg"
    return sum(1 for g in root.iter(f"{SVG}g") if g.get("id", "").startswith("axes_"))


def axes(figure, text: str):
    """The one axes of ``figure`` whose title or y label starts with ``text``."""
    (found,) = [ax for ax in figure.axes if ax.get_title().startswith(text) or ax.get_ylabel().startswith(text)]
    return found


def expected_axes(report: dict) -> int:
    """Loss versus p_t with its histogram's twin (2); the density, with a twin for GHM-C's weights
    when sigmoid elements are shown (2, else 1); the heatmaps of loss and gradient shares per
    class, each with its colour bar (2 + 2)."""
    sigmoid = any(d["family"] == "sigmoid" for d in report["losses"].values())
    return 2 + (2 if sigmoid else 1) + 2 + 2


@pytest.mark.parametrize("name", EXAMPLES)
def test_compare_figure_renders_to_png_and_svg(name, reports, pngs):
    report = reports[name]
    figure = plots.compare_figure(report)
    assert len(figure.axes) == expected_axes(report) == 8
    png = pngs[name]
    width, height = png_size(png)
    # 8 inches at 100 dpi; the heights 3.6 + 3.2 + 2 × (1.4 + 0.28 per class) inches
    assert width == 800 and height == round(100 * (3.6 + 3.2 + 2 * (1.4 + 0.28 * len(report["per_class"]))))
    assert len(png) > 50_000
    svg = plots.render(figure, "svg")
    assert svg_axes(svg) == 8 and len(svg) > 50_000


def test_softmax_losses_alone_have_no_ghm_axis():
    report = lossaudit.compare(ROOT / "examples" / "classification.npz", losses=["ce", "softmax-focal"]).to_dict()
    figure = plots.compare_figure(report)
    assert len(figure.axes) == expected_axes(report) == 7
    density = axes(figure, "Gradient-norm density")
    assert not [ax for ax in figure.axes if ax.get_ylabel().startswith("GHM-C")]
    rows = [d["rows"] for d in report["per_difficulty"]]
    np.testing.assert_allclose([bar.get_height() for bar in density.patches], [r / (sum(rows) * 0.1) for r in rows], rtol=1e-12)
    assert svg_axes(plots.render(figure, "svg")) == 7


def test_panels_are_figures_of_their_own(reports):
    panels = plots.compare_panels(reports["detection"])
    assert [len(figure.axes) for _, figure in panels] == [2, 2, 2, 2]
    assert png_size(plots.render(panels[0][1], "png")) == (800, 360)
    for caption, figure in panels:
        assert caption.endswith(".") and figure.get_size_inches()[0] == 8


def test_loss_curves_follow_the_formulas(reports):
    """CE = −log p_t; focal = alpha_t (1 − p_t)^2 CE with alpha_t 0.25 for positives and 0.75 for
    negatives; softmax focal = (1 − q)^2 (−log q): the drawn lines, point by point."""
    figure = plots.compare_figure(reports["detection"])
    lines = {line.get_label(): line for line in axes(figure, "Loss versus p_t").get_lines()}
    assert len(lines) == 4
    p_t = np.asarray(lines["CE, BCE: −log p_t"].get_xdata())
    assert p_t.min() > 0 and p_t.max() < 1 and len(p_t) > 100
    ce = -np.log(p_t)
    expected = {
        "CE, BCE: −log p_t": ce,
        "focal, positives: α_t = 0.25, γ = 2": 0.25 * (1 - p_t) ** 2 * ce,
        "focal, negatives: α_t = 0.75, γ = 2": 0.75 * (1 - p_t) ** 2 * ce,
        "softmax-focal, γ = 2 (p_t = q_target)": (1 - p_t) ** 2 * ce,
    }
    for label, values in expected.items():
        np.testing.assert_allclose(lines[label].get_ydata(), values, rtol=1e-12, err_msg=label)


def test_alpha_off_and_gamma_follow_the_options():
    report = lossaudit.compare(ROOT / "examples" / "detection.npz", losses=["focal"], alpha=-1, gamma=0.5).to_dict()
    lines = {line.get_label(): line for line in axes(plots.compare_figure(report), "Loss versus p_t").get_lines()}
    assert list(lines) == ["focal, γ = 0.5 (alpha off)"]
    p_t = np.asarray(lines["focal, γ = 0.5 (alpha off)"].get_xdata())
    np.testing.assert_allclose(lines["focal, γ = 0.5 (alpha off)"].get_ydata(), (1 - p_t) ** 0.5 * -np.log(p_t), rtol=1e-12)


def test_histogram_and_density_hold_the_counts(reports):
    """The grey histogram: elements per bin at p_t = 1 − g; the density: count / (N · 0.1); GHM-C's
    weight of a non-empty bin: N / (count · non-empty bins), computed here from the counts."""
    report = reports["centernet"]
    counts = [d["elements"] for d in report["per_difficulty"]]
    figure = plots.compare_figure(report)
    histogram = axes(figure, "elements per p_t bin")  # the twin of the loss curves
    assert sorted((round(bar.get_x(), 9), bar.get_height()) for bar in histogram.patches) == sorted(
        (round(1 - (b + 1) / 10, 9), c) for b, c in enumerate(counts)
    )
    n, filled = sum(counts), sum(1 for c in counts if c)
    density, weights = axes(figure, "Gradient-norm density"), axes(figure, "GHM-C weight")
    np.testing.assert_allclose([bar.get_height() for bar in density.patches], [c / (n * 0.1) for c in counts], rtol=1e-12)
    (line,) = weights.get_lines()
    np.testing.assert_allclose(line.get_xdata(), [(b + 0.5) / 10 for b, c in enumerate(counts) if c], rtol=1e-12)
    np.testing.assert_allclose(line.get_ydata(), [n / (c * filled) for c in counts if c], rtol=1e-9)


@pytest.mark.parametrize("title, key", [("Share of each loss's total", "share"), ("Share of each loss's gradient", "gradient_share")])
def test_class_heatmaps_hold_the_shares(reports, title, key):
    report = reports["classification"]
    image = axes(plots.compare_figure(report), title).get_images()[0]
    shares = np.array([[c[key][loss] for loss in report["losses"]] for c in report["per_class"]])
    np.testing.assert_allclose(image.get_array(), shares)
    assert np.allclose(shares.sum(axis=0), 1)  # each loss's column sums to its whole total


def test_a_report_without_gradient_shares_has_no_gradient_panel(reports):
    """A report of schema 3 (before gradient shares) still draws: the panel whose data is missing
    is left out."""
    report = {**reports["detection"], "per_class": [{k: v for k, v in c.items() if k != "gradient_share"} for c in reports["detection"]["per_class"]]}
    assert len(plots.compare_figure(report).axes) == 6 and len(plots.compare_panels(report)) == 3


@pytest.mark.parametrize("target, p, expected_focal", [(1, 0.9, 0.25 * 0.01 * -math.log(0.9)), (0, 0.2, 0.75 * 0.04 * -math.log(0.8))])
def test_explain_figure_marks_the_example(target, p, expected_focal):
    """The issue's seed examples: a positive at p = 0.9, a negative at p = 0.2 (p_t 0.8)."""
    steps = sigmoid_steps(math.log(p / (1 - p)), target)
    figure = plots.explain_figure(steps, target, 2.0)
    (ax,) = figure.axes
    curve_ce, curve_fl, mark_ce, mark_fl = ax.get_lines()[:4]
    p_t = p if target else 1 - p
    assert mark_ce.get_xydata()[0].tolist() == pytest.approx([p_t, -math.log(p_t)])
    assert mark_fl.get_xydata()[0].tolist() == pytest.approx([p_t, expected_focal])
    x = np.asarray(curve_fl.get_xdata())
    alpha_t = 0.25 if target else 0.75
    np.testing.assert_allclose(curve_fl.get_ydata(), alpha_t * (1 - x) ** 2 * -np.log(x), rtol=1e-12)
    np.testing.assert_allclose(curve_ce.get_ydata(), -np.log(x), rtol=1e-12)
    assert png_size(plots.render(figure, "png")) == (800, 400) and svg_axes(plots.render(figure, "svg")) == 1


def test_explain_figure_of_a_softmax_row():
    steps = softmax_steps([2.0, 0.5, -1.0], 1, gamma=1.0)
    (ax,) = plots.explain_figure(steps, 1, 1.0).axes
    q = math.exp(0.5) / (math.exp(2) + math.exp(0.5) + math.exp(-1))
    assert ax.get_lines()[3].get_xydata()[0].tolist() == pytest.approx([q, (1 - q) * -math.log(q)])


def test_compare_plot_option_writes_a_new_file(run_cli, tmp_path):
    out = tmp_path / "c.svg"
    old = os.umask(0o027)
    try:
        result = run_cli("compare", ROOT / "examples" / "centernet.npz", "--plot", out, "--isolated", "--format", "json")
    finally:
        os.umask(old)
    assert result.exit_code == 0, result.stderr
    assert '"summary"' in result.stdout  # the report still goes to stdout
    assert svg_axes(out.read_bytes()) == 8 and out.stat().st_mode & 0o777 == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["c.svg"]  # no temporary file left


@pytest.fixture(scope="module")
def sweep_report(tmp_path_factory) -> dict:
    from typer.testing import CliRunner

    from lossaudit.cli import app

    folder = tmp_path_factory.mktemp("sweep")
    result = CliRunner().invoke(
        app, ["sweep", str(ROOT / "examples" / "detection.npz"), "--gamma", "0,2,5", "--alpha", "0.25,-1", "--format", "json", "--plot", str(folder / "s.svg")]
    )
    assert result.exit_code == 0, result.stderr
    return {"report": json.loads(result.stdout), "svg": (folder / "s.svg").read_bytes()}


def test_sweep_figure(sweep_report):
    """Focal loss before alpha_t per gamma, (1 − p_t)^gamma (−log p_t); the cumulative curves are
    the report's; the share heatmap holds the eight shares of each of the 6 settings."""
    report = sweep_report["report"]
    figure = plots.sweep_figure(report)
    assert len(figure.axes) == 5 and svg_axes(sweep_report["svg"]) == 5
    assert png_size(plots.render(figure, "png")) == (800, round(100 * (3 * 3.4 + 1.6 + 0.3 * 6)))
    for line in axes(figure, "Focal loss versus p_t").get_lines():
        gamma = float(line.get_label().removeprefix("γ = "))
        x = np.asarray(line.get_xdata())
        np.testing.assert_allclose(line.get_ydata(), (1 - x) ** gamma * -np.log(x), rtol=1e-12)
    for which in ("positives", "negatives"):
        lines = axes(figure, f"Cumulative loss of the {which}").get_lines()
        assert [line.get_label() for line in lines] == ["γ = 0", "γ = 2", "γ = 5", "equal losses"]
        for line, curve in zip(lines, report["cumulative"]):
            assert list(line.get_xdata()) == curve["fractions"] and list(line.get_ydata()) == curve[which]["share"]
    image = axes(figure, "Where the loss and its gradient").get_images()[0]
    assert image.get_array().shape == (6, 8)
    assert image.get_array()[3, 0] == report["settings"][3]["positive_share"]


def test_explain_plot_option(run_cli, tmp_path):
    result = run_cli("explain", "--prob", "0.2", "--target", "0", "--plot", tmp_path / "e.png")
    assert result.exit_code == 0, result.stderr
    assert png_size((tmp_path / "e.png").read_bytes()) == (800, 400)


@pytest.mark.parametrize("command", [["compare", ROOT / "examples" / "detection.npz", "--isolated"], ["explain", "--prob", "0.2"]])
def test_plot_refusals_are_one_line(run_cli, tmp_path, command, monkeypatch):
    existing = tmp_path / "there.png"
    existing.write_bytes(b"mine")
    cases = {
        tmp_path / "p.pdf": "expected a file name ending in .png or .svg",
        existing: "exists; lossaudit never overwrites a file with a plot",
        tmp_path / "no" / "p.png": f"the folder {tmp_path / 'no'} does not exist",
    }
    for path, says in cases.items():
        result = run_cli(*command, "--plot", path)
        assert result.exit_code == 2 and result.stderr.strip() == f"lossaudit: error: --plot {path}: {says}"
    assert existing.read_bytes() == b"mine"
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if it were not installed
    result = run_cli(*command, "--plot", tmp_path / "new.png")
    assert result.exit_code == 2 and result.stderr.strip() == "lossaudit: error: --plot needs matplotlib: pip install 'lossaudit[plot]'"
    assert result.stdout == "" and not (tmp_path / "new.png").exists()


def test_plot_and_output_cannot_be_one_file(run_cli, tmp_path):
    same = tmp_path / "r.svg"
    result = run_cli("compare", ROOT / "examples" / "detection.npz", "--isolated", "--output", same, "--plot", same)
    assert result.exit_code == 2 and "the report goes to that file (--output)" in result.stderr and not same.exists()


def test_plots_need_neither_torch_nor_matplotlib_at_import(tmp_path):
    """compare --plot on an .npz dump runs without torch; importing the CLI loads no matplotlib."""
    (tmp_path / "sitecustomize.py").write_text(BLOCK_TORCH)
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    dump = ROOT / "examples" / "centernet.npz"
    run = subprocess.run(
        [sys.executable, "-m", "lossaudit", "compare", str(dump), "--isolated", "--format", "json", "--plot", str(tmp_path / "c.png")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert png_size((tmp_path / "c.png").read_bytes())[0] == 800
    probe = subprocess.run([sys.executable, "-c", "import sys, lossaudit.cli; print('matplotlib' in sys.modules)"], capture_output=True, text=True)
    assert probe.stdout.strip() == "False"


def test_the_docs_embed_a_plot_drawn_by_the_code(pngs):
    """The plots page's image is ``compare examples/detection.npz --plot``'s figure: a PNG of the
    size that figure renders to now."""
    page = (ROOT / "docs" / "plots.md").read_text()
    assert "](detection-plot.png)" in page
    assert "lossaudit compare examples/detection.npz --plot docs/detection-plot.png" in page
    committed = (ROOT / "docs" / "detection-plot.png").read_bytes()
    assert png_size(committed) == png_size(pngs["detection"])


@pytest.mark.parametrize("case", ["all logits NaN", "one difficulty bin"])
def test_degenerate_data_draws_without_warnings(case):
    """Nothing, or a single value, to put on a log axis: the axis stays linear, and matplotlib has
    nothing to warn about on the user's stderr."""
    import warnings

    logits = np.full((4, 3), np.nan if case == "all logits NaN" else 0.0, dtype=np.float32)  # 0: every g is 0.5
    report = lossaudit.compare(logits=logits, targets=np.array([0, 1, 2, 1])).to_dict()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert plots.render(plots.compare_figure(report), "png").startswith(b"\x89PNG")


def test_softmax_focal_sweep_figure():
    """A single-label sweep (softmax-focal, alpha null in schema 3): the loss curve of q, the rows'
    cumulative loss, and the share heatmap with one row per setting labelled as the table."""
    from typer.testing import CliRunner

    from lossaudit.cli import app

    result = CliRunner().invoke(app, ["sweep", str(ROOT / "examples" / "classification.npz"), "--gamma", "0,2", "--format", "json"])
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["loss"] == "softmax-focal" and all(s["alpha"] is None for s in report["settings"])
    figure = plots.sweep_figure(report)
    assert len(figure.axes) == 4  # curves, rows' cumulative loss, shares and its colour bar
    assert axes(figure, "Softmax focal loss versus q").get_xlabel() == "q, the softmax probability of the target"
    assert [label.get_text() for label in axes(figure, "Where the loss and its gradient").get_yticklabels()] == [s["label"] for s in report["settings"]]
