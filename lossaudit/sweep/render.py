"""Render a sweep (the dict of :func:`lossaudit.sweep.run.sweep`) as text (JSON:
:func:`lossaudit.render.compare.render_json`), with the text report's tables (:class:`~lossaudit.render.layout.Section`), fitted to a width."""

from __future__ import annotations

from rich.console import Console

from lossaudit.render.compare import GRADIENT_MARK, _finding_line, _loaded, plain_text
from lossaudit.render.formatting import MISSING, names, num, pct
from lossaudit.render.layout import Section, print_lines, print_section, wrap

TEXT_FRACTIONS = (0.5, 0.8, 0.9, 0.95, 0.99)
"""The fractions of the elements the text shows of each cumulative distribution (JSON: all)."""


def _label(row: dict) -> str:
    alpha = "off" if row["alpha"] == -1 else f"{row['alpha']:g}"
    return f"γ {row['gamma']:g}, α {alpha}"


def _settings(document: dict) -> Section:
    mark = GRADIENT_MARK
    keys = ("positive_share", "easy_negative_share", "very_hard_share", "rare_share")
    rare = document["rare_classes"]

    def share(row: dict, key: str) -> str:  # no rare class: no rare share to show
        return MISSING if key.endswith("rare_share") and not rare else pct(row[key])

    rows = [[_label(row), num(row["mean"]), *(share(row, key) for key in keys), num(row["gradient_mean"]), *(share(row, "gradient_" + key) for key in keys)]
            for row in document["settings"]]
    return Section(
        "Focal loss per setting",
        ["setting", "mean", "pos", "easy neg", "v.hard", "rare", f"{mark} mean", f"{mark}pos", f"{mark}easy neg", f"{mark}v.hard", f"{mark}rare"],
        rows,
        note="mean: the loss over the valid elements; pos, easy neg, v.hard, rare: share of the loss from positives, easy "
        f"negatives (g < 0.1), very hard elements (g ≥ 0.9) and rare classes ({names(rare, 8) if rare else 'none'}: "
        f"{document['rare_rule']}; — without one); {mark}: the same for the gradient magnitude Σ |∂L/∂x| ({mark} mean: of the mean loss); "
        "α off: no weighting (-1)",
        groups=[("loss", [1]), ("share of its loss", [2, 3, 4, 5]), ("gradient", [6]), ("share of its gradient", [7, 8, 9, 10])],
    )


def _top_lines(document: dict) -> list[str]:
    lines = []
    for row in document["settings"]:
        by_name = {c["name"]: c for c in row["per_class"]}
        top = [f"{name} {pct(by_name[name]['share'])} ({GRADIENT_MARK}{pct(by_name[name]['gradient_share'])})" for name in row["top_classes"]]
        lines.append(f"{_label(row)}: {', '.join(top) or MISSING}")
    return lines


def _cumulative(document: dict) -> Section:
    columns = [document["cumulative"][0]["fractions"].index(f) for f in TEXT_FRACTIONS] if document["cumulative"] else []
    rows = []
    for item in document["cumulative"]:
        for which in ("positives", "negatives"):
            shares = item[which]["share"]
            rows.append([f"γ {item['gamma']:g} {which}", *(pct(shares[i]) if shares else MISSING for i in columns)])
    return Section(
        "Cumulative loss (the focal loss paper's Figure 4)",
        ["elements", *(f"{100 * f:g}%" for f in TEXT_FRACTIONS)],
        rows,
        note="the share of the positives' (negatives') total loss held by that fraction of them with the smallest loss; "
        "focal before alpha (constant within each set for 0/1 targets); each within 1/256 of exact, the JSON gives every "
        "percent and each bound",
    )


def sections(document: dict) -> list[Section]:
    return [_settings(document), _cumulative(document)]


def _print(document: dict, console: Console, width: int) -> None:
    print_lines(console, ["Loaded"], style="bold")
    for label, text in _loaded(document):
        print_lines(console, wrap(text, width, f"  {label:<10} ", " " * 13))
    tables = sections(document)
    print_section(console, tables[0], width)
    print_lines(console, ["", f"Top classes (share of the loss; {GRADIENT_MARK}: of its gradient)"], style="bold")
    for line in _top_lines(document):
        print_lines(console, wrap(line, width, "  ", "    "))
    for section in tables[1:]:
        print_section(console, section, width)
    if document["findings"]:
        print_lines(console, ["", "Data findings"], style="bold")
        for finding in document["findings"]:
            print_lines(console, wrap(_finding_line(finding), width, "  ", "    "), style="yellow" if finding["level"] == "warning" else None)


def print_text(document: dict, console: Console) -> None:
    """Print the sweep to a terminal ``console``, fitted to its width."""
    _print(document, console, console.width)


def render_text(document: dict, width: int | None = None) -> str:
    """The sweep as plain text ``width`` cells wide (None: as wide as its widest table, at least
    80), without trailing spaces."""
    return plain_text(lambda console, fitted: _print(document, console, fitted), sections(document), width)
