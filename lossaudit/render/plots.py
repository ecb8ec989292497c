"""Plots of a comparison report and of an explained example (``--plot FILE.png|svg``, the HTML report).

matplotlib is an optional extra (``pip install 'lossaudit[plot]'``), imported only here, inside the
functions that draw, and never through pyplot: figures are :class:`matplotlib.figure.Figure`
objects rendered by the Agg (PNG) or SVG canvas, with no global state and no display.

A comparison report (the dict of :func:`lossaudit.compare.report.build.build_report`) gives one panel
per :data:`COMPARE_PANELS` entry that has data in the report:

- loss versus p_t for the report's settings (CE/BCE, focal for positives with alpha_t = alpha and
  for negatives with alpha_t = 1 - alpha, softmax focal), over a histogram of the data's p_t,
  read from the per-difficulty bins of g = |p - y| (p_t = 1 - g: a sigmoid element's probability
  of its true label; for softmax losses alone, the rows' q_target = 1 - g);
- the gradient-norm density (units per unit of g: bin count / (total x bin width)) with GHM-C's
  weight per bin, N / (count x non-empty bins), as the report states it;
- each loss's share of each class.

A panel is a function ``draw(ax, report)`` drawing into one axes (it may add a twin axes or a
colour bar beside it) and ``wanted(report)`` saying whether the report carries its data.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from lossaudit.errors import InputError
from lossaudit.losses.cross_entropy import BCE, CE
from lossaudit.losses.focusing import FOCAL, SOFTMAX_FOCAL

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

FORMATS = {".png": "png", ".svg": "svg"}
"""The plot file's suffix decides its format."""

MISSING_EXTRA = "--plot needs matplotlib: pip install 'lossaudit[plot]'"
WIDTH = 8.0
"""Figure width in inches (at 100 dpi: 800 pixels)."""

CURVE_POINTS = 199
"""p_t values a loss curve is drawn through, evenly spaced inside (0, 1)."""


def available() -> bool:
    """Whether matplotlib can be imported (without importing it)."""
    import importlib.util

    return importlib.util.find_spec("matplotlib") is not None


def check_plot_path(path: Path, output: Path | None = None) -> None:
    """Refuse, before any work is done, a plot file that cannot be written: a suffix other than
    ``.png``/``.svg``, a file that exists (a plot never replaces a file, so never an input either),
    a folder that does not exist, the report's own ``output``, or matplotlib missing.

    Raises:
        InputError: naming the file and what was expected.
    """
    if path.suffix.lower() not in FORMATS:
        raise InputError(f"--plot {path}: expected a file name ending in .png or .svg")
    if path.exists():
        raise InputError(f"--plot {path}: exists; lossaudit never overwrites a file with a plot")
    if not path.resolve().parent.is_dir():
        raise InputError(f"--plot {path}: the folder {path.parent} does not exist")
    if output is not None and path.resolve() == output.resolve():
        raise InputError(f"--plot {path}: the report goes to that file (--output); give the plot a name of its own")
    if not available():
        raise InputError(MISSING_EXTRA)


def save(figure: Figure, path: Path) -> None:
    """Render ``figure`` to a new file ``path`` (format from its suffix), whole: a temporary file
    in the same folder (mode as ``open()`` under the umask), then linked into place, which fails
    rather than replace a file that appeared meanwhile.

    Raises:
        InputError: the file exists or cannot be written.
    """
    from lossaudit.io.filemode import create_temporary

    data = render(figure, FORMATS[path.suffix.lower()])
    temporary = None
    try:
        descriptor, temporary = create_temporary(path.resolve().parent, f".{path.name}.")
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
        os.link(temporary, path)
    except FileExistsError:
        raise InputError(f"--plot {path}: exists; lossaudit never overwrites a file with a plot") from None
    except OSError as error:
        raise InputError(f"--plot {path}: cannot write ({error.strerror})") from None
    finally:
        if temporary is not None:
            temporary.unlink(missing_ok=True)


def render(figure: Figure, fmt: str) -> bytes:
    """The figure as ``png`` (100 dpi) or ``svg`` bytes, without a date or creator (the same
    report gives the same file)."""
    buffer = io.BytesIO()
    metadata = {"Software": None} if fmt == "png" else {"Date": None, "Creator": None, "Format": None, "Type": None}
    figure.savefig(buffer, format=fmt, dpi=100, metadata=metadata)
    return buffer.getvalue()


def inline_svg(figure: Figure) -> str:
    """The figure as an ``<svg>`` element to place in an HTML page: text kept as text (not glyph
    paths), no XML declaration or DOCTYPE, and no namespace declarations (an HTML parser puts
    ``<svg>`` and ``xlink:href`` in their namespaces itself), so the page names no URL."""
    from matplotlib import rc_context

    with rc_context({"svg.fonttype": "none"}):
        text = render(figure, "svg").decode("utf-8")
    text = text[text.index("<svg") :]
    for declaration in (' xmlns:xlink="http://www.w3.org/1999/xlink"', ' xmlns="http://www.w3.org/2000/svg"'):
        text = text.replace(declaration, "", 1)
    return text


# --- the comparison report ------------------------------------------------------------------


def _p_t_grid() -> list[float]:
    return [(k + 1) / (CURVE_POINTS + 1) for k in range(CURVE_POINTS)]


def _sigmoid_curve(target: int, alpha: float, gamma: float) -> tuple[list[float], list[float]]:
    """``(CE, focal)`` over :func:`_p_t_grid` for an element of ``target``, from
    :func:`lossaudit.explain.sigmoid_steps` (x is the logit giving that p_t)."""
    from lossaudit.explain import sigmoid_steps

    sign = 1 if target == 1 else -1
    steps = [sigmoid_steps(sign * math.log(p_t / (1 - p_t)), target, alpha, gamma) for p_t in _p_t_grid()]
    return [s[CE]["value"] for s in steps], [s[FOCAL]["value"] for s in steps]


def _softmax_curve(gamma: float) -> tuple[list[float], list[float]]:
    """``(CE, softmax focal)`` over :func:`_p_t_grid`, q_target = p_t, from
    :func:`lossaudit.explain.softmax_steps` on a two-class row."""
    from lossaudit.explain import softmax_steps

    steps = [softmax_steps([math.log(q / (1 - q)), 0.0], 0, gamma) for q in _p_t_grid()]
    return [s[CE]["value"] for s in steps], [s[FOCAL]["value"] for s in steps]


def _unit(report: dict) -> str:
    """``elements`` when a sigmoid loss is shown (its units are binned by g), else ``rows``."""
    return "elements" if any(d["family"] == "sigmoid" for d in report["losses"].values()) else "rows"


def _focal_alpha(params: dict) -> float | None:
    """The scalar alpha of focal's parameters; None for a per-class alpha (a list)."""
    alpha = params.get("alpha")
    return alpha if isinstance(alpha, (int, float)) else None


def loss_curves(report: dict) -> list[tuple[str, list[float]]]:
    """``(label, loss over the p_t grid)`` for the report's losses that are functions of p_t alone:
    CE (= BCE per element), focal for positives and for negatives (one curve with alpha off or per
    class), softmax focal."""
    losses = report["losses"]
    curves = []
    if {CE, BCE} & set(losses) or not ({FOCAL, SOFTMAX_FOCAL} & set(losses)):
        curves.append(("CE, BCE: −log p_t", _sigmoid_curve(1, -1, 0.0)[0]))
    if FOCAL in losses:
        params = losses[FOCAL]["params"]
        alpha, gamma = _focal_alpha(params), params["gamma"]
        if alpha is None or alpha == -1:
            why = "alpha per class, not drawn" if alpha is None else "alpha off"
            curves.append((f"focal, γ = {gamma:g} ({why})", _sigmoid_curve(1, -1, gamma)[1]))
        else:
            curves.append((f"focal, positives: α_t = {alpha:g}, γ = {gamma:g}", _sigmoid_curve(1, alpha, gamma)[1]))
            curves.append((f"focal, negatives: α_t = {1 - alpha:g}, γ = {gamma:g}", _sigmoid_curve(0, alpha, gamma)[1]))
    if SOFTMAX_FOCAL in losses:
        gamma = losses[SOFTMAX_FOCAL]["params"]["gamma"]
        curves.append((f"softmax-focal, γ = {gamma:g} (p_t = q_target)", _softmax_curve(gamma)[1]))
    return curves


def _log_scale(ax: Axes, values: list[float]) -> None:
    """A log y axis when ``values`` hold two different positive numbers; else the linear one stays
    (a log axis of nothing, or of one value, is degenerate: matplotlib warns and guesses)."""
    if len({value for value in values if value > 0}) > 1:
        ax.set_yscale("log")


def draw_loss_curves(ax: Axes, report: dict) -> None:
    """Loss versus p_t (left axis) over the histogram of the data's p_t = 1 − g (right axis, log)."""
    unit = _unit(report)
    bins = report["per_difficulty"]
    twin = ax.twinx()
    lefts = [1 - d["g_high"] for d in bins]
    widths = [d["g_high"] - d["g_low"] for d in bins]
    counts = [d[unit] or 0 for d in bins]
    twin.bar(lefts, counts, width=widths, align="edge", color="0.85", edgecolor="0.6", linewidth=0.5)
    _log_scale(twin, counts)
    twin.set_ylabel(f"{unit} per p_t bin")
    ax.set_zorder(twin.get_zorder() + 1)
    ax.patch.set_visible(False)
    grid = _p_t_grid()
    for label, values in loss_curves(report):
        ax.plot(grid, values, label=label, linewidth=1.6)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 5)
    ax.set_xlabel("p_t, the probability of the true label (1 − g)")
    ax.set_ylabel("loss of one element")
    ax.set_title(f"Loss versus p_t, over the data's {unit} (grey)")
    ax.legend(fontsize="small", loc="upper right")


def draw_gradient_density(ax: Axes, report: dict) -> None:
    """Density of the gradient norm g (log) and, for sigmoid elements, GHM-C's weight per bin."""
    unit = _unit(report)
    bins = report["per_difficulty"]
    total = sum(d[unit] or 0 for d in bins)
    density = [(d[unit] or 0) / (max(total, 1) * (d["g_high"] - d["g_low"])) for d in bins]
    ax.bar(
        [d["g_low"] for d in bins],
        density,
        width=[d["g_high"] - d["g_low"] for d in bins],
        align="edge",
        color="tab:blue",
        alpha=0.6,
        edgecolor="tab:blue",
        linewidth=0.5,
        label=f"density of {unit}",
    )
    _log_scale(ax, density)
    ax.set_xlim(0, 1)
    ax.set_xlabel("g = |p − y|, the gradient norm" if unit == "elements" else "g = 1 − q_target")
    ax.set_ylabel(f"{unit} density")
    ax.set_title("Gradient-norm density" + (" and GHM-C weights" if unit == "elements" else ""))
    if unit == "elements":
        twin = ax.twinx()
        filled = [d for d in bins if d["ghm_weight"] > 0]
        weights = [d["ghm_weight"] for d in filled]
        twin.plot([(d["g_low"] + d["g_high"]) / 2 for d in filled], weights, "o-", color="tab:red", label="GHM-C weight")
        _log_scale(twin, weights)
        twin.set_ylabel("GHM-C weight\nN / (count · non-empty bins)")  # two lines: one is taller than the panel
        handles = ax.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
        ax.legend(handles=handles, fontsize="small", loc="center right")
    else:
        ax.legend(fontsize="small", loc="upper right")


def _share_heatmap(ax: Axes, values: list[list[float | None]], rows: list[str], columns: list[str], cmap: str, label: str) -> None:
    """A table of shares as a heatmap (a row per label, a column per loss or setting), with a
    colour bar, and the values written in the cells when they are few enough to read."""
    from lossaudit.render.formatting import pct

    grid = [[math.nan if v is None else v for v in row] for row in values]
    image = ax.imshow(grid, aspect="auto", cmap=cmap, vmin=0, interpolation="nearest")
    crowded = max(map(len, columns), default=0) * len(columns) > 80  # long names (logit-adjusted-ce) would overlap
    ax.set_xticks(range(len(columns)), columns, rotation=30 if crowded else 0, ha="left" if crowded else "center")
    ax.set_yticks(range(len(rows)), rows)
    ax.tick_params(axis="x", top=True, bottom=False, labeltop=True, labelbottom=False)
    if len(rows) * len(columns) <= 400:
        top = max((v for row in grid for v in row if not math.isnan(v)), default=0)
        for i, row in enumerate(grid):
            for j, value in enumerate(row):
                shade = "white" if not math.isnan(value) and value > top / 2 else "black"
                ax.text(j, i, pct(None if math.isnan(value) else value), ha="center", va="center", fontsize="x-small", color=shade)
    ax.figure.colorbar(image, ax=ax, label=label)


def draw_class_shares(ax: Axes, report: dict) -> None:
    """Each loss's share of each class (a class per row, a loss per column)."""
    loss_ids = list(report["losses"])
    values = [[c["share"][loss] for loss in loss_ids] for c in report["per_class"]]
    _share_heatmap(ax, values, [c["name"] for c in report["per_class"]], loss_ids, "Blues", "share of the loss")
    ax.set_title("Share of each loss's total, per class")


def draw_class_gradient_shares(ax: Axes, report: dict) -> None:
    """Each loss's share of its gradient magnitude Σ |∂L/∂x| in each class."""
    loss_ids = list(report["losses"])
    values = [[c["gradient_share"][loss] for loss in loss_ids] for c in report["per_class"]]
    _share_heatmap(ax, values, [c["name"] for c in report["per_class"]], loss_ids, "Oranges", "share of the gradient")
    ax.set_title("Share of each loss's gradient Σ |∂L/∂x|, per class")


def _has_gradient_shares(report: dict) -> bool:
    return bool(report["per_class"]) and "gradient_share" in report["per_class"][0]


@dataclass(frozen=True)
class Panel:
    """One plot of a comparison report: its caption in the HTML report, its height in inches, how
    to draw it, and whether the report carries its data."""

    caption: str
    height: Callable[[dict], float]
    draw: Callable[[Axes, dict], None]
    wanted: Callable[[dict], bool] = lambda report: True


COMPARE_PANELS = (
    Panel("The loss of one element as a function of p_t for these settings; grey: how the data spreads over p_t.", lambda report: 3.6, draw_loss_curves),
    Panel("How crowded each gradient-norm bin is; GHM-C weights a bin by the inverse of its count.", lambda report: 3.2, draw_gradient_density),
    Panel(
        "Where each loss puts its weight, class by class (each column sums to 100%).", lambda report: 1.4 + 0.28 * len(report["per_class"]), draw_class_shares
    ),
    Panel(
        "Where each loss's gradient goes, class by class: what actually trains the model (each column sums to 100%).",
        lambda report: 1.4 + 0.28 * len(report["per_class"]),
        draw_class_gradient_shares,
        _has_gradient_shares,
    ),
)


def _figure(heights: list[float]) -> tuple[Figure, list[Axes]]:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(WIDTH, sum(heights)), layout="constrained")
    axes = figure.subplots(len(heights), 1, squeeze=False, gridspec_kw={"height_ratios": heights})[:, 0]
    return figure, list(axes)


def _stack(panels: tuple[Panel, ...], report: dict) -> Figure:
    """Every wanted panel of ``panels``, stacked in one figure; a weighted dump's (the report's
    ``estimate``) titled as the estimate it is."""
    wanted = [panel for panel in panels if panel.wanted(report)]
    figure, axes = _figure([panel.height(report) for panel in wanted])
    for panel, ax in zip(wanted, axes):
        panel.draw(ax, report)
    estimate = report.get("estimate")
    if estimate:
        figure.suptitle(
            f"Estimates from a weighted sample: {estimate['sampled_elements']:,} sampled elements of "
            f"{estimate['population_elements']:,} (shares, sums; GHM-C weights and cumulative shares plug-in)",
            fontsize="small",
        )
    return figure


def compare_figure(report: dict) -> Figure:
    """Every wanted panel of a comparison report, stacked in one figure."""
    return _stack(COMPARE_PANELS, report)


def compare_panels(report: dict) -> list[tuple[str, Figure]]:
    """``(caption, figure)`` per wanted panel, each a figure of its own (the HTML report)."""
    result = []
    for panel in COMPARE_PANELS:
        if panel.wanted(report):
            figure, (ax,) = _figure([panel.height(report)])
            panel.draw(ax, report)
            result.append((panel.caption, figure))
    return result


def plot_report(report: dict, path: Path) -> None:
    """``--plot``: the comparison report's figure written to ``path`` (``.png`` or ``.svg``).
    Call :func:`check_plot_path` before the work that makes the report."""
    save(compare_figure(report), path)


# --- a sweep of focal loss settings (lossaudit sweep) ----------------------------------------


def _gammas(report: dict) -> list[float]:
    return list(dict.fromkeys(setting["gamma"] for setting in report["settings"]))


def draw_sweep_curves(ax: Axes, report: dict) -> None:
    """Focal loss before alpha_t, (1 − p_t)^gamma (−log p_t), versus p_t for each gamma swept."""
    grid = _p_t_grid()
    for gamma in _gammas(report):
        ax.plot(grid, _sigmoid_curve(1, -1, gamma)[1], label=f"γ = {gamma:g}", linewidth=1.6)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 5)
    ax.set_xlabel("p_t, the probability of the true label")
    ax.set_ylabel("loss of one element, before alpha_t")
    ax.set_title("Focal loss versus p_t for each gamma swept")
    ax.legend(fontsize="small", loc="upper right")


def draw_cumulative(ax: Axes, report: dict, which: str) -> None:
    """The focal loss paper's Figure 4: ``which`` ("positives" or "negatives") sorted by loss from
    the smallest; the share of their total loss held by the lowest fraction, one line per gamma."""
    for curve in report["cumulative"]:
        ax.plot(curve["fractions"], curve[which]["share"], label=f"γ = {curve['gamma']:g}", linewidth=1.6)
    elements = report["cumulative"][0][which]["elements"] if report["cumulative"] else 0
    ax.plot([0, 1], [0, 1], color="0.6", linestyle=":", linewidth=1, label="equal losses")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel(f"fraction of the {which} ({elements:,}), sorted by loss")
    ax.set_ylabel("cumulative share of their loss")
    ax.set_title(f"Cumulative loss of the {which}")
    ax.legend(fontsize="small", loc="upper left")


SWEEP_SHARE_LABELS = {"positive_share": "pos", "easy_negative_share": "easy neg", "very_hard_share": "v.hard", "rare_share": "rare"}
"""The sweep's share keys and their column labels (as the sweep's settings table)."""


def _softmax_sweep(report: dict) -> bool:
    """The sweep swept ``softmax-focal`` (schema 3's ``loss``), not the sigmoid focal loss."""
    return report.get("loss") == SOFTMAX_FOCAL


def setting_label(row: dict) -> str:
    """A setting as the settings table labels it (schema 3's ``label``; before, from gamma and alpha)."""
    if "label" in row:
        return row["label"]
    return f"γ {row['gamma']:g}, α {'off' if row['alpha'] == -1 else format(row['alpha'], 'g')}"


def draw_sweep_shares(ax: Axes, report: dict) -> None:
    """Per setting, the shares of the loss and of the gradient from positives, easy negatives, very
    hard elements and rare classes (softmax focal: very hard rows and rare classes)."""
    keys = ("very_hard_share", "rare_share") if _softmax_sweep(report) else tuple(SWEEP_SHARE_LABELS)
    columns = [*keys, *("gradient_" + key for key in keys)]
    settings = report["settings"]
    _share_heatmap(
        ax,
        [[s[key] for key in columns] for s in settings],
        [setting_label(s) for s in settings],
        [*(SWEEP_SHARE_LABELS[key] for key in keys), *(f"∇ {SWEEP_SHARE_LABELS[key]}" for key in keys)],
        "Purples",
        "share",
    )
    ax.set_title("Where the loss and its gradient (∇) go, per setting")


def _draw_sweep_loss_curves(ax: Axes, report: dict) -> None:
    draw_sweep_curves(ax, report)
    if _softmax_sweep(report):  # -(1 - q)^gamma log q: the same curve, of the target's softmax probability
        ax.set_xlabel("q, the softmax probability of the target")
        ax.set_ylabel("loss of one row, before alpha")
        ax.set_title("Softmax focal loss versus q for each gamma swept")


SWEEP_CUMULATIVE = {
    "positives": "Positives sorted by loss: how much of their loss the easiest ones hold.",
    "negatives": "Negatives sorted by loss: at a high gamma the hardest few hold nearly all of it.",
    "rows": "Rows sorted by loss: how much of their loss the easiest ones hold.",
}


def _sweep_panels(report: dict) -> tuple[Panel, ...]:
    """The loss curve per gamma, the cumulative loss (positives and negatives; softmax focal: rows)
    and the shares per setting."""
    sets = ("rows",) if _softmax_sweep(report) else ("positives", "negatives")
    return (
        Panel("The loss of one element (row) versus its probability for each gamma (alpha apart).", lambda report: 3.4, _draw_sweep_loss_curves),
        *(Panel(SWEEP_CUMULATIVE[which], lambda report: 3.4, lambda ax, report, which=which: draw_cumulative(ax, report, which)) for which in sets),  # type: ignore[misc]  # a lambda with a default
        Panel("Shares of the loss and of the gradient per setting.", lambda report: 1.6 + 0.3 * len(report["settings"]), draw_sweep_shares),
    )


def sweep_figure(report: dict) -> Figure:
    """Every panel of a sweep report (``lossaudit sweep --format json``), stacked in one figure."""
    return _stack(_sweep_panels(report), report)


def plot_sweep(report: dict, path: Path) -> None:
    """``sweep --plot``: the sweep report's figure written to ``path`` (``.png`` or ``.svg``).
    Call :func:`check_plot_path` before the sweep."""
    save(sweep_figure(report), path)


# --- one explained example ------------------------------------------------------------------


def explain_figure(steps: dict, target: int, gamma: float) -> Figure:
    """CE and focal loss versus p_t for the example's settings, the example marked on both.

    ``steps`` are :func:`lossaudit.explain.sigmoid_steps` of an element of ``target`` (0 or 1)
    with ``gamma`` (the curve keeps the example's alpha_t: alpha for a positive, 1 - alpha for a
    negative, 1 with alpha off) or :func:`lossaudit.explain.softmax_steps` of a row with ``gamma``
    (q_k, CE, FL; alpha is not drawn: a scalar only rescales, a per-class one weights this row alone).
    """
    softmax = "q_k" in steps
    p_t = steps["q_k" if softmax else "p_t"]["value"]
    if softmax:
        ce, focal = _softmax_curve(gamma)
    else:
        alpha_t = steps["alpha_t"]["value"]
        ce, focal = _sigmoid_curve(target, alpha_t if target == 1 else 1 - alpha_t, gamma)
    figure, (ax,) = _figure([4.0])
    grid = _p_t_grid()
    name = "q_k, the softmax probability of the target" if softmax else "p_t, the probability of the true label"
    focal_label = f"FL, γ = {gamma:g}" if softmax else f"FL, α_t = {steps['alpha_t']['value']:g}, γ = {gamma:g}"
    ax.plot(grid, ce, label="CE = −log p_t", color="tab:blue")
    ax.plot(grid, focal, label=focal_label, color="tab:orange")
    ax.plot([p_t], [steps[CE]["value"]], "o", color="tab:blue")
    ax.plot([p_t], [steps[FOCAL]["value"]], "o", color="tab:orange")
    ax.axvline(p_t, color="0.5", linestyle=":", linewidth=1)
    ax.annotate(
        f"CE = {steps[CE]['value']:.4g}\nFL = {steps[FOCAL]['value']:.4g}\nFL / CE = {steps['ratio']['value']:.4g}",
        (p_t, steps[CE]["value"]),
        xytext=(8, 8),
        textcoords="offset points",
        fontsize="small",
    )
    ax.set_xlim(0, 1)
    ax.set_ylim(0, max(5.0, 1.2 * steps[CE]["value"]))
    ax.set_xlabel(name)
    ax.set_ylabel("loss")
    ax.set_title(f"This example at {'q_k' if softmax else 'p_t'} = {p_t:.4g}")
    ax.legend(fontsize="small", loc="upper right")
    return figure
