"""Render a comparison report (the dict of :func:`~lossaudit.compare.report.build.build_report`) as
rich text, markdown, JSON, GitHub annotations or JUnit. The tables are built once as plain rows
(:class:`~lossaudit.render.layout.Section`) and drawn by each format."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from lossaudit.errors import InputError
from lossaudit.losses.cross_entropy import BCE, CE
from lossaudit.losses.focusing import FOCAL, SOFTMAX_FOCAL
from lossaudit.render.formatting import MISSING, count, names, num, pct, pct_se, plural, rare_rule
from lossaudit.render.layout import (
    Section,
    natural_width,
    print_lines,
    print_section,
    wrap,
)

if TYPE_CHECKING:
    from rich.console import Console

MIN_WIDTH = 80
"""Text written to a file or a pipe is as wide as its widest table, and at least this."""


def _loaded(report: dict) -> list[tuple[str, str]]:
    """``(label, text)`` lines of the Loaded section."""
    inp = report["input"]
    shapes = "; ".join(f"{s['file']} {tuple(s['logits'])}" for s in inp["shapes"][:3])
    if len(inp["shapes"]) > 3:
        shapes += f"; … ({len(inp['shapes'])} files)"
    encoding = inp["target_encoding"] + (" (detected)" if inp["encoding_detected"] else "")
    conventions = [f"positive: {inp['positive_rule']}"]
    if inp["target_encoding"] == "index":
        conventions += [f"background label {inp['background_index']}", f"ignore label {inp['ignore_index']}"]
    ratio = inp["negatives_per_positive"]
    lines = []
    model = inp.get("model")
    if model:
        how = f"{model['kind']}" + (f", {model['detail']}" if model["detail"] else "") + (f", arch {model['arch']}" if model["arch"] else "")
        lines.append(("model", f"{model['checkpoint']} ({how}) on {model['data']}; device {model['device']}, batch size {model['batch_size']}"))
        if model["saved_logits"]:
            lines.append(("saved", f"logits and targets to {model['saved_logits']}"))
    ratio_text = f" (1:{ratio:,.0f})" if ratio is not None else ""
    return lines + [
        ("files", shapes),
        ("keys", f"logits '{inp['logits_key']}', targets '{inp['targets_key']}'; dtype {inp['dtype']}; class axis {inp['class_dim']}"),
        (
            "samples",
            f"{count(inp['rows'])} {_noun(report)} × {plural(inp['classes'], 'class')} = {count(inp['elements'])} elements"
            + (f" stored (an estimated {count(inp['estimated_rows'])} {_noun(report)})" if "estimated_rows" in inp else "")
            + f"; inputs read as {inp['inputs']}",
        ),
        *([("estimate", estimate_line(report["estimate"]))] if "estimate" in report else []),
        ("targets", f"{encoding}; {', '.join(conventions)}; {inp['data_kind']} data"),
        (
            "counts",
            f"{count(inp['positives'])} positives, {count(inp['negatives'])} negatives{ratio_text}, "
            f"{count(inp['ignored_elements'])} ignored, {count(inp['nonfinite_elements'])} non-finite" + (" (estimated)" if "estimate" in report else ""),
        ),
    ]


SE_NOTE = "± one standard error of the share, in percentage points (delta method, from the sample's weights)"


def estimate_line(estimate: dict) -> str:
    """What a weighted dump's report rests on: the sample, the population, what is plug-in."""
    from lossaudit.compare.report.estimates import PLUG_IN

    source = "as recorded" if estimate["population_source"] == "recorded" else "the sum of the weights"
    plug_in = ", ".join(PLUG_IN.get(name, name) for name in estimate["plug_in"])
    return (
        f"a weighted sample: estimated from {count(estimate['sampled_elements'])} sampled elements of {count(estimate['population_elements'])} "
        f"({source}); counts and sums are Horvitz–Thompson estimates, shares {SE_NOTE}; plug-in, without a standard error: {plug_in}"
    )


def _with_se(values: dict, key: str, loss: str) -> str:
    """``values[key][loss]`` as a percentage, with its standard error when ``values`` has ``key_se``."""
    return pct_se(values[key][loss], values.get(key + "_se", {}).get(loss))


def _params(params: dict) -> str:
    def show(value: object) -> str:
        if isinstance(value, list):
            return "[" + ", ".join(f"{v:g}" for v in value) + "]"
        return MISSING if value is None else f"{value:g}"

    return ", ".join(f"{key}={show(value)}" for key, value in params.items()) or MISSING


GRADIENT_MARK = "∇"
"""Marks a column of gradient shares: ``∇focal`` is the share of focal's gradient magnitude."""
GRADIENT_NOTE = (
    f"{GRADIENT_MARK}: the same share of the loss's gradient magnitude Σ |∂L/∂x| over every logit (what trains "
    "the model; a softmax row's, over its logits, goes to its target class)"
)


def _losses(report: dict) -> Section:
    def share(d: dict, key: str) -> str:
        return pct_se(d[key], d.get(key + "_se"))

    rows = [
        [
            loss,
            f"{count(d['covers']['count'])} {_shown(report, d['covers']['unit'])}",
            _params(d["params"]),
            num(d["sum"]),
            num(d["mean"]),
            d["mean_divides_by"],
            num(d["per_positive"]),
            share(d, "positive_share"),
            share(d, "easy_negative_share"),
            share(d, "very_hard_share"),
            num(d["gradient_mean"]),
            share(d, "gradient_positive_share"),
            share(d, "gradient_easy_negative_share"),
            share(d, "gradient_very_hard_share"),
        ]
        for loss, d in report["losses"].items()
    ]
    mark = GRADIENT_MARK
    weighted = f"; {SE_NOTE}" if "estimate" in report else ""
    return Section(
        "Losses",
        [
            "loss",
            "sees",
            "params",
            "sum",
            "mean",
            "mean ÷",
            "per pos",
            "pos",
            "easy neg",
            "v.hard",
            f"{mark} mean",
            f"{mark}pos",
            f"{mark}easy neg",
            f"{mark}v.hard",
        ],
        rows,
        note="sees: the elements (row × class) a sigmoid loss sums over, or the rows with a target a softmax loss "
        "sums over; pos, easy neg, v.hard: share of the loss from positives, from easy negatives (g < 0.1) and "
        f"from very hard elements (g ≥ 0.9); g = |p − y| (softmax losses: g = 1 − q_target); {mark} mean: Σ |∂L/∂x| "
        f"of the mean loss L; {GRADIENT_NOTE}{weighted}",
        groups=[
            ("coverage", [1]),
            ("parameters", [2]),
            ("values", [3, 4, 5, 6]),
            ("where the weight goes", [7, 8, 9]),
            ("where the gradient goes", [10, 11, 12, 13]),
        ],
    )


def ranking_loss(report: dict, top_by: str | None) -> str:
    """The loss ``--top`` ranks classes by: ``top_by``, else the first listed loss that fits the data
    (the softmax losses on single-label data, the sigmoid ones otherwise), else the first listed."""
    loss_ids = list(report["losses"])
    if top_by is not None:
        if top_by not in report["losses"]:
            raise InputError(f"--top-by {top_by}: not one of the losses shown ({', '.join(loss_ids)})")
        return top_by
    return next((loss for loss in loss_ids if report["losses"][loss].get("fits_data")), loss_ids[0])


def ratio_header(loss_ids: list[str]) -> str:
    """The per-class ratio column's header: the pair it divides (``focal÷bce``, ``softmax-focal÷ce``)."""
    for pair in ((FOCAL, BCE), (SOFTMAX_FOCAL, CE)):
        if set(pair) <= set(loss_ids):
            return "÷".join(pair)
    return "focal÷CE"


def _per_class(report: dict, top: int | None, top_by: str | None) -> Section:
    loss_ids = list(report["losses"])
    classes = report["per_class"]
    shown = classes
    notes = []
    if top is not None and top < len(classes):
        key = ranking_loss(report, top_by)
        shown = sorted(classes, key=lambda c: c["sum"][key], reverse=True)[:top]
        why = "--top-by" if top_by else "the first listed loss that fits the data; --top-by picks another"
        notes.append(f"top {top} of {plural(len(classes), 'class')} by {key} loss ({why}); the total row covers all classes")
    has_softmax = any(c["mean_p_softmax"] is not None for c in classes)
    probs = ["p̄ pos"] + (["q̄ pos"] if has_softmax else [])
    ratio = ratio_header(loss_ids)
    headers = ["class", "positives", "negatives", *probs, *loss_ids, ratio, *(GRADIENT_MARK + loss for loss in loss_ids)]

    def row(c: dict) -> list[str]:
        values = [num(c["mean_p"])] + ([num(c["mean_p_softmax"])] if has_softmax else [])
        return [
            c["name"],
            count(c["positives"]),
            count(c["negatives"]),
            *values,
            *(_with_se(c, "share", loss) for loss in loss_ids),
            num(c["focal_ce_ratio"]),
            *(_with_se(c, "gradient_share", loss) for loss in loss_ids),
        ]

    totals = [report["losses"][loss] for loss in loss_ids]
    total = [
        "total",
        count(sum(c["positives"] for c in classes)),
        count(sum(c["negatives"] for c in classes)),
        *([""] * len(probs)),
        *("100.0%" if t["sum"] else MISSING for t in totals),
        num(report["focal_ce_ratio"]),
        *("100.0%" if t["gradient_positive_share"] is not None else MISSING for t in totals),
    ]
    notes.append(
        "positives and negatives are elements; p̄ pos: mean sigmoid p over positives"
        + ("; q̄ pos: mean softmax q of the target over rows with a target" if has_softmax else "")
    )
    notes.append(f"{ratio}: the class's {ratio.replace('÷', ' loss ÷ its ')} loss")
    notes.append(GRADIENT_NOTE)
    if "estimate" in report:
        notes.append(SE_NOTE)
    counts_end = 3 + len(probs)
    gradients_start = counts_end + len(loss_ids) + 1
    return Section(
        "Per class",
        headers,
        [row(c) for c in shown],
        total,
        "; ".join(notes),
        groups=[
            ("counts", list(range(1, counts_end))),
            ("share of each loss's total", list(range(counts_end, counts_end + len(loss_ids)))),
            (f"loss ratio {ratio}", [counts_end + len(loss_ids)]),
            ("share of each loss's gradient", list(range(gradients_start, gradients_start + len(loss_ids)))),
        ],
    )


def _families(report: dict) -> list[tuple[str, list[str]]]:
    """``(family, losses)`` in the report's order (the family that fits the data first)."""
    result: dict[str, list[str]] = {}
    for loss, d in report["losses"].items():
        result.setdefault(d["family"], []).append(loss)
    return list(result.items())


UNITS = {"sigmoid": ("elements", "g = |p − y|"), "softmax": ("rows", "g = 1 − q_target")}


def _noun(report: dict) -> str:
    """What a row is in the data (``input.row_noun``: cells of maps, positions, rows)."""
    return report["input"].get("row_noun", "rows")


def _shown(report: dict, unit: str) -> str:
    """A unit key (``elements`` or ``rows``) as the text names it: rows by the data's noun."""
    return _noun(report) if unit == "rows" else unit


def _per_difficulty(report: dict) -> list[Section]:
    families = _families(report)
    sections = []
    for family, loss_ids in families:
        unit, g = UNITS[family]
        which = f", {family} losses" if len(families) > 1 else ""
        rows = []
        for d in report["per_difficulty"]:
            counts = [count(d["elements"]), pct(d["element_share"]), count(d["positives"])] if unit == "elements" else [count(d["rows"]), pct(d["row_share"])]
            ghm = [num(d["ghm_weight"])] if unit == "elements" else []
            rows.append(
                [
                    f"{d['g_low']:.2f}–{d['g_high']:.2f}",
                    *counts,
                    *(_with_se(d, "share", loss) for loss in loss_ids),
                    *ghm,
                    *(_with_se(d, "gradient_share", loss) for loss in loss_ids),
                ]
            )
        shown = _shown(report, unit)
        count_headers = [shown, "of all", "positives"] if unit == "elements" else [shown, "of all"]
        ghm_header = ["GHM weight"] if unit == "elements" else []
        note = (
            f"{unit} binned by {g}; GHM weight = N / (count · non-empty bins)"
            if unit == "elements"
            else f"{shown} with a target binned by {g} of each target class (a multi-hot {shown[:-1]} once per positive class)"
        )
        n, shares_end = len(count_headers), len(count_headers) + 1 + len(loss_ids) + len(ghm_header)
        sections.append(
            Section(
                f"Per difficulty{which} ({shown} by {g})",
                ["g", *count_headers, *loss_ids, *ghm_header, *(GRADIENT_MARK + loss for loss in loss_ids)],
                rows,
                note=f"{note}; {GRADIENT_NOTE}" + (f"; {SE_NOTE}; GHM weight: plug-in" if "estimate" in report else ""),
                groups=[
                    ("counts", list(range(1, n + 1))),
                    ("share of each loss", list(range(n + 1, shares_end))),
                    ("share of each loss's gradient", list(range(shares_end, shares_end + len(loss_ids)))),
                ],
            )
        )
    return sections


def _quadrants(report: dict) -> list[Section]:
    quadrants = report["quadrants"]
    families = _families(report)
    rare = quadrants["rare_classes"]
    note = f"rare: {rare_rule(quadrants)}: {names(rare, 8) if rare else 'none'}; hard: g ≥ {quadrants['hard_from_g']:g}"
    if "estimate" in report:
        note += f"; {SE_NOTE}, given which classes are rare (plug-in)"
    sections = []
    for family, loss_ids in families:
        unit, g = UNITS[family]
        which = f", {family} losses" if len(families) > 1 else ""
        rows = [[name.replace("_", " "), count(cell[unit]), *(_with_se(cell, "share", loss) for loss in loss_ids)] for name, cell in quadrants["cells"].items()]
        sections.append(Section(f"Attention quadrants{which} ({_shown(report, unit)})", ["quadrant", _shown(report, unit), *loss_ids], rows, note=note))
    return sections


def sections(report: dict, top: int | None = None, top_by: str | None = None) -> list[Section]:
    """Every table of the report, in order."""
    return [_losses(report), _per_class(report, top, top_by), *_per_difficulty(report), *_quadrants(report)]


def _finding_line(finding: dict) -> str:
    return f"{finding['level']}: [{finding['code']}] {finding['message']}"


def _print(report: dict, console: Console, width: int, top: int | None, top_by: str | None) -> None:
    tables = sections(report, top, top_by)
    if report["summary"]:
        print_lines(console, ["Summary"], style="bold")
        for sentence in report["summary"]:
            print_lines(console, wrap(sentence["text"], width, "  - ", "    "))
    print_lines(console, ([""] if report["summary"] else []) + ["Loaded"], style="bold")
    for label, text in _loaded(report):
        print_lines(console, wrap(text, width, f"  {label:<10} ", " " * 13))
    for section in tables:
        print_section(console, section, width)
    if report["findings"]:
        print_lines(console, ["", "Data findings"], style="bold")
        for finding in report["findings"]:
            print_lines(console, wrap(_finding_line(finding), width, "  ", "    "), style="yellow" if finding["level"] == "warning" else None)


def print_text(report: dict, console: Console, top: int | None = None, top_by: str | None = None) -> None:
    """Print the report to a terminal ``console``, fitted to its width."""
    _print(report, console, console.width, top, top_by)


def render_text(report: dict, width: int | None = None, top: int | None = None, top_by: str | None = None) -> str:
    """The report as plain text ``width`` cells wide (None: as wide as its widest table, at least
    :data:`MIN_WIDTH`), without trailing spaces: for pipes and files."""
    return plain_text(lambda console, fitted: _print(report, console, fitted, top, top_by), sections(report, top, top_by), width)


def plain_text(draw: Callable[[Console, int], None], tables: list[Section], width: int | None = None) -> str:
    """What ``draw(console, width)`` prints, as plain text ``width`` cells wide (None: as wide as
    the widest of ``tables``, at least :data:`MIN_WIDTH`), without trailing spaces."""
    from rich.console import Console

    if width is None:
        width = max([MIN_WIDTH] + [natural_width(section) for section in tables])
    with io.StringIO() as buffer:
        draw(Console(file=buffer, width=width, color_system=None, force_terminal=False, legacy_windows=False), width)
        text = buffer.getvalue()
    return "\n".join(line.rstrip() for line in text.splitlines()) + "\n"


def render_markdown(report: dict, top: int | None = None, top_by: str | None = None) -> str:
    """The comparison as GitHub-flavoured markdown (for ``$GITHUB_STEP_SUMMARY``)."""
    out = ["## lossaudit compare", ""]
    if report["summary"]:
        out += ["### Summary", ""] + [f"- {sentence['text']}" for sentence in report["summary"]] + [""]
    out += ["### Loaded", ""] + [f"- {label}: {text}" for label, text in _loaded(report)]
    for section in sections(report, top, top_by):
        out += [
            "",
            f"### {section.title}",
            "",
            "| " + " | ".join(section.headers) + " |",
            "|" + "|".join([" --- "] + [" ---: "] * (len(section.headers) - 1)) + "|",
        ]
        out += ["| " + " | ".join(row) + " |" for row in section.rows + ([section.total] if section.total else [])]
        if section.note:
            out += ["", f"_{section.note}_"]
    if report["findings"]:
        out += ["", "### Data findings", ""] + [f"- {_finding_line(f)}" for f in report["findings"]]
    return "\n".join(out) + "\n"


def render_json(report: dict) -> str:
    return json.dumps(report, indent=2, allow_nan=False) + "\n"


def render_github(report: dict, strict: bool = False) -> str:
    """Workflow-command annotations: one per data finding and dump file that has it (a finding of the
    whole data, like a class without positives, has no file). Under ``--strict`` the gating findings
    are errors; informational ones are notices. A weighted dump's report starts with a notice that
    it is an estimate (:func:`estimate_line`)."""
    from lossaudit.render.formats import (
        annotation,
        repository_relative,
        repository_root,
    )

    root = repository_root()
    lines = [annotation("info", estimate_line(report["estimate"]), title="lossaudit compare: estimate")] if "estimate" in report else []
    for f in report["findings"]:
        severity = "error" if strict and f["gates_strict"] else "warning" if f["level"] == "warning" else "info"
        title = f"lossaudit compare: {f['code']}"
        files = f.get("files")
        if not files:
            lines.append(annotation(severity, f["message"], title=title))
            continue
        for file, n in files.items():
            message = f["message"] + (f" ({count(n)} in this file)" if len(files) > 1 or n != f["count"] else "")
            lines.append(annotation(severity, message, file=repository_relative(file, root), title=title))
    return "\n".join(lines) + ("\n" if lines else "")


def render_junit(report: dict) -> str:
    """One test case per data check: a failure for a finding ``--strict`` gates on, output for
    the others; a weighted dump's report first has a case ``estimate`` whose output says what it
    is estimated from (:func:`estimate_line`)."""
    from lossaudit.compare.report.build import FINDING_NAMES
    from lossaudit.render.formats import junit_xml

    found = {f["code"]: f for f in report["findings"]}
    classname = "lossaudit compare " + " ".join(report["input"]["files"])
    cases = [{"classname": classname, "name": "estimate", "output": estimate_line(report["estimate"])}] if "estimate" in report else []
    for code in FINDING_NAMES:
        case: dict[str, Any] = {"classname": classname, "name": code}
        if code in found and found[code]["gates_strict"]:
            case["failure"] = (found[code]["message"], json.dumps(found[code], default=str))
        elif code in found:
            case["output"] = found[code]["message"]
        cases.append(case)
    return junit_xml("lossaudit compare", cases)
