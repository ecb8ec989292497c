"""Render a sweep (the dict of :func:`lossaudit.sweep.run.sweep`) as text or markdown (JSON:
:func:`lossaudit.render.compare.render_json`), with the text report's tables (:class:`~lossaudit.render.layout.Section`), fitted to a width."""

from __future__ import annotations

from rich.console import Console

from lossaudit.losses.focusing import SOFTMAX_FOCAL
from lossaudit.render.compare import GRADIENT_MARK, SE_NOTE, _finding_line, _loaded, plain_text
from lossaudit.render.formatting import MISSING, names, num, pct, pct_se
from lossaudit.render.layout import Section, print_lines, print_section, wrap
from lossaudit.render.plots import setting_label

TEXT_FRACTIONS = (0.5, 0.8, 0.9, 0.95, 0.99)
"""The fractions of the elements the text shows of each cumulative distribution (JSON: all)."""


def _softmax(document: dict) -> bool:
    return document.get("loss") == SOFTMAX_FOCAL


def _vectors(document: dict) -> str:
    """``; α #1: 0.1,0.9,…`` for the ``--alpha-per-class`` vectors swept."""
    return "".join(f"; α #{i + 1}: {','.join(f'{v:g}' for v in vector)}" for i, vector in enumerate(document.get("alpha_per_class", [])))


def _settings(document: dict) -> Section:
    mark = GRADIENT_MARK
    softmax = _softmax(document)
    keys = ("very_hard_share", "rare_share") if softmax else ("positive_share", "easy_negative_share", "very_hard_share", "rare_share")
    labels = ["v.hard", "rare"] if softmax else ["pos", "easy neg", "v.hard", "rare"]
    rare = document["rare_classes"]

    def share(row: dict, key: str) -> str:  # no rare class: no rare share to show
        return MISSING if key.endswith("rare_share") and not rare else pct_se(row[key], row.get(key + "_se"))

    rows = [
        [setting_label(row), num(row["mean"]), *(share(row, key) for key in keys), num(row["gradient_mean"]), *(share(row, "gradient_" + key) for key in keys)]
        for row in document["settings"]
    ]
    n = len(keys)
    rare_text = f"rare classes ({names(rare, 8) if rare else 'none'}: {document['rare_rule']}; — without one)"
    if softmax:
        what = (
            f"mean: the loss over the rows with a target; v.hard, rare: share of the loss from very hard rows (q_target ≤ 0.1) and the rows of the {rare_text}"
        )
        alpha = "no α: unweighted (a scalar alpha only rescales softmax-focal); α #k: the k-th --alpha-per-class, taken at the target class"
    else:
        what = (
            f"mean: the loss over the valid elements; pos, easy neg, v.hard, rare: share of the loss from positives, easy "
            f"negatives (g < 0.1), very hard elements (g ≥ 0.9) and {rare_text}"
        )
        alpha = "α off: no weighting (-1)" + ("; α #k: the k-th --alpha-per-class, by class column" if document.get("alpha_per_class") else "")
    return Section(
        "Softmax focal loss per setting" if softmax else "Focal loss per setting",
        ["setting", "mean", *labels, f"{mark} mean", *(f"{mark}{label}" for label in labels)],
        rows,
        note=f"{what}; {mark}: the same for the gradient magnitude Σ |∂L/∂x| ({mark} mean: of the mean loss); {alpha}{_vectors(document)}"
        + (f"; {SE_NOTE}" if "estimate" in document else ""),
        groups=[("loss", [1]), ("share of its loss", list(range(2, 2 + n))), ("gradient", [2 + n]), ("share of its gradient", list(range(3 + n, 3 + 2 * n)))],
    )


def _top_lines(document: dict) -> list[str]:
    lines = []
    for row in document["settings"]:
        by_name = {c["name"]: c for c in row["per_class"]}
        top = [
            f"{name} {pct_se(by_name[name]['share'], by_name[name].get('share_se'))} "
            f"({GRADIENT_MARK}{pct_se(by_name[name]['gradient_share'], by_name[name].get('gradient_share_se'))})"
            for name in row["top_classes"]
        ]
        lines.append(f"{setting_label(row)}: {', '.join(top) or MISSING}")
    return lines


def _cumulative(document: dict) -> Section:
    columns = [document["cumulative"][0]["fractions"].index(f) for f in TEXT_FRACTIONS] if document["cumulative"] else []
    rows = []
    for item in document["cumulative"]:
        for which in ("positives", "negatives", "rows"):
            if which in item:
                shares = item[which]["share"]
                rows.append([f"γ {item['gamma']:g} {which}", *(pct(shares[i]) if shares else MISSING for i in columns)])
    if _softmax(document):
        note = (
            "the share of the rows' total loss held by that fraction of them with the smallest loss (their target terms); "
            "softmax-focal before its per-class alpha; each within 1/256 of exact, the JSON gives every percent and each bound"
        )
    else:
        note = (
            "the share of the positives' (negatives') total loss held by that fraction of them with the smallest loss; "
            "focal before alpha (constant within each set for 0/1 targets); each within 1/256 of exact, the JSON gives every "
            "percent and each bound"
        )
    if "estimate" in document:
        note += "; from a weighted sample, each element counted by its weight: plug-in estimates, without a standard error"
    return Section(
        "Cumulative loss (the focal loss paper's Figure 4)",
        ["rows" if _softmax(document) else "elements", *(f"{100 * f:g}%" for f in TEXT_FRACTIONS)],
        rows,
        note=note,
    )


def sections(document: dict) -> list[Section]:
    return [_settings(document), _cumulative(document)]


def _loaded_lines(document: dict) -> list[tuple[str, str]]:
    lines = _loaded(document)
    choice = document.get("loss_choice")
    if choice:
        lines.append(("loss", f"{document['loss']}: {choice['why']}"))
    return lines


def _print(document: dict, console: Console, width: int) -> None:
    summary = document.get("summary", [])
    if summary:
        print_lines(console, ["Summary"], style="bold")
        for sentence in summary:
            print_lines(console, wrap(sentence["text"], width, "  - ", "    "))
    print_lines(console, ([""] if summary else []) + ["Loaded"], style="bold")
    for label, text in _loaded_lines(document):
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


def render_markdown(document: dict) -> str:
    """The sweep as GitHub-flavoured markdown (for ``$GITHUB_STEP_SUMMARY``): the summary, what was
    loaded, the tables and the findings."""
    out = ["## lossaudit sweep", ""]
    if document.get("summary"):
        out += ["### Summary", ""] + [f"- {sentence['text']}" for sentence in document["summary"]] + [""]
    out += ["### Loaded", ""] + [f"- {label}: {text}" for label, text in _loaded_lines(document)]
    tables = sections(document)
    top = Section(
        f"Top classes (share of the loss; {GRADIENT_MARK}: of its gradient)",
        ["setting", "classes"],
        [[line.split(": ", 1)[0], line.split(": ", 1)[1]] for line in _top_lines(document)],
    )
    for section in [tables[0], top, *tables[1:]]:
        out += [
            "",
            f"### {section.title}",
            "",
            "| " + " | ".join(section.headers) + " |",
            "|" + "|".join([" --- "] + [" ---: "] * (len(section.headers) - 1)) + "|",
        ]
        out += ["| " + " | ".join(row) + " |" for row in section.rows]
        if section.note:
            out += ["", f"_{section.note}_"]
    if document["findings"]:
        out += ["", "### Data findings", ""] + [f"- {_finding_line(f)}" for f in document["findings"]]
    return "\n".join(out) + "\n"
