"""Render a comparison report (the dict of :func:`~lossaudit.compare.report.build_report`) as
rich text, markdown or JSON. The tables are built once as plain rows and drawn by each format."""

from __future__ import annotations

import json
from dataclasses import dataclass

from rich import box
from rich.console import Console
from rich.table import Table

MISSING = "—"


@dataclass
class Section:
    """One table: a title, column headers, rows of strings, an optional total row and a note."""

    title: str
    headers: list[str]
    rows: list[list[str]]
    total: list[str] | None = None
    note: str = ""


def _pct(value: float | None) -> str:
    return MISSING if value is None else f"{100 * value:.1f}%"


def _num(value: float | None) -> str:
    return MISSING if value is None else f"{value:.4g}"


def _int(value: int) -> str:
    return f"{value:,}"


def _loaded(report: dict) -> list[str]:
    inp = report["input"]
    shapes = "; ".join(f"{s['file']} {tuple(s['logits'])}" for s in inp["shapes"][:3])
    if len(inp["shapes"]) > 3:
        shapes += f"; … ({len(inp['shapes'])} files)"
    encoding = inp["target_encoding"] + (" (detected)" if inp["encoding_detected"] else "")
    conventions = [f"positive: {inp['positive_rule']}"]
    if inp["target_encoding"] == "index":
        conventions += [f"background label {inp['background_index']}", f"ignore label {inp['ignore_index']}"]
    ratio = inp["negatives_per_positive"]
    model = inp.get("model")
    model_lines = []
    if model:
        how = f"{model['kind']}" + (f", {model['detail']}" if model["detail"] else "") + (f", arch {model['arch']}" if model["arch"] else "")
        model_lines.append(f"model      {model['checkpoint']} ({how}) on {model['data']}; device {model['device']}, batch size {model['batch_size']}")
        if model["saved_logits"]:
            model_lines.append(f"saved      logits and targets to {model['saved_logits']}")
    return model_lines + [
        f"files      {shapes}",
        f"keys       logits '{inp['logits_key']}', targets '{inp['targets_key']}'; dtype {inp['dtype']}; class axis {inp['class_dim']}",
        f"samples    {_int(inp['rows'])} rows × {inp['classes']} classes = {_int(inp['elements'])} elements; inputs read as {inp['inputs']}",
        f"targets    {encoding}; {', '.join(conventions)}",
        f"counts     {_int(inp['positives'])} positives, {_int(inp['negatives'])} negatives "
        f"(1:{ratio:,.0f}), {_int(inp['ignored_elements'])} ignored, {_int(inp['nonfinite_elements'])} non-finite"
        if ratio is not None
        else f"counts     0 positives, {_int(inp['negatives'])} negatives, {_int(inp['ignored_elements'])} ignored, "
        f"{_int(inp['nonfinite_elements'])} non-finite",
    ]


def _params(params: dict) -> str:
    def show(value: object) -> str:
        if isinstance(value, list):
            return "[" + ", ".join(f"{v:g}" for v in value[:4]) + (", …]" if len(value) > 4 else "]")
        return MISSING if value is None else f"{value:g}"

    return ", ".join(f"{key}={show(value)}" for key, value in params.items()) or MISSING


def _summary(report: dict) -> Section:
    rows = [
        [loss, _params(d["params"]), _num(d["sum"]), _num(d["mean"]), d["mean_divides_by"], _num(d["per_positive"]),
         _pct(d["positive_share"]), _pct(d["easy_negative_share"]), _pct(d["very_hard_share"])]
        for loss, d in report["losses"].items()
    ]
    return Section(
        "Losses",
        ["loss", "params", "sum", "mean", "mean ÷", "per pos", "pos", "easy neg", "v.hard"],
        rows,
        note="pos/easy neg/v.hard: share of the loss from positives, easy negatives (g < 0.1), very hard elements "
        "(g ≥ 0.9); g = |p − y| (softmax losses: 1 − p_target)",
    )


def _per_class(report: dict, top: int | None) -> Section:
    loss_ids = list(report["losses"])
    classes = report["per_class"]
    shown = classes
    note = ""
    if top is not None and top < len(classes):
        key = "focal" if "focal" in loss_ids else loss_ids[0]
        shown = sorted(classes, key=lambda c: c["sum"][key], reverse=True)[:top]
        note = f"top {top} of {len(classes)} classes by {key} loss; the total row covers all classes"
    has_softmax = any(c["mean_p_softmax"] is not None for c in classes)
    headers = ["class", "positives", "negatives", "p̄ pos"] + (["q̄ pos"] if has_softmax else []) + loss_ids + ["focal/CE"]

    def row(c: dict) -> list[str]:
        probs = [_num(c["mean_p"])] + ([_num(c["mean_p_softmax"])] if has_softmax else [])
        return [c["name"], _int(c["positives"]), _int(c["negatives"]), *probs, *(_pct(c["share"][l]) for l in loss_ids), _num(c["focal_ce_ratio"])]

    total_pos = sum(c["positives"] for c in classes)
    totals = [report["losses"][l] for l in loss_ids]
    total = ["total", _int(total_pos), _int(sum(c["negatives"] for c in classes)), "", *([""] if has_softmax else []),
             *("100.0%" if t["sum"] else MISSING for t in totals), _num(report["focal_ce_ratio"])]
    p_note = "p̄ pos: mean sigmoid p over positives" + ("; q̄ pos: mean softmax p of the target" if has_softmax else "")
    return Section("Per class (share of each loss's total)", headers, [row(c) for c in shown], total, "; ".join(filter(None, [note, p_note])))


def _per_difficulty(report: dict) -> Section:
    loss_ids = list(report["losses"])
    rows = [
        [f"{d['g_low']:.2f}–{d['g_high']:.2f}", _int(d["elements"]), _pct(d["element_share"]), _int(d["positives"]),
         *(_pct(d["share"][l]) for l in loss_ids), _num(d["ghm_weight"])]
        for d in report["per_difficulty"]
    ]
    return Section(
        "Per difficulty (gradient norm g)",
        ["g", "elements", "of all", "positives", *loss_ids, "GHM weight"],
        rows,
        note="elements binned by sigmoid g = |p − y|; softmax losses binned by 1 − p_target; GHM weight = N / (count · non-empty bins)",
    )


def _quadrants(report: dict) -> Section:
    quadrants = report["quadrants"]
    loss_ids = list(report["losses"])
    rows = [
        [name.replace("_", " "), _int(cell["elements"]), *(_pct(cell["share"][l]) for l in loss_ids)]
        for name, cell in quadrants["cells"].items()
    ]
    rare = quadrants["rare_classes"]
    note = (
        f"rare: fewer positives than the median class ({quadrants['median_positives']:g}): "
        + (", ".join(rare[:8]) + (" …" if len(rare) > 8 else "") if rare else "none")
        + f"; hard: g ≥ {quadrants['hard_from_g']:g}"
    )
    return Section("Attention quadrants", ["quadrant", "elements", *loss_ids], rows, note=note)


def sections(report: dict, top: int | None = None) -> list[Section]:
    return [_summary(report), _per_class(report, top), _per_difficulty(report), _quadrants(report)]


def _finding_lines(report: dict) -> list[str]:
    return [f"{f['level']}: [{f['code']}] {f['message']}" for f in report["findings"]]


def render_text(report: dict, console: Console, top: int | None = None) -> None:
    """Print the comparison with rich tables to ``console``."""
    console.print("[bold]Loaded[/bold]")
    for line in _loaded(report):
        console.print("  " + line, highlight=False, markup=False)
    for section in sections(report, top):
        table = Table(
            title=section.title, title_justify="left", title_style="bold", caption=section.note or None,
            caption_justify="left", box=box.SIMPLE_HEAD, padding=(0, 1), pad_edge=False,
        )
        for i, header in enumerate(section.headers):
            table.add_column(header, justify="left" if i == 0 else "right")
        for row in section.rows:
            table.add_row(*row)
        if section.total:
            table.add_section()
            table.add_row(*section.total, style="bold")
        console.print(table)
    if report["findings"]:
        console.print("[bold]Data findings[/bold]")
        for line in _finding_lines(report):
            console.print("  " + line, style="yellow", highlight=False, markup=False)


def render_markdown(report: dict, top: int | None = None) -> str:
    """The comparison as GitHub-flavoured markdown (for ``$GITHUB_STEP_SUMMARY``)."""
    out = ["## lossaudit compare", ""] + [f"- {line.split(maxsplit=1)[0]}: {line.split(maxsplit=1)[1]}" for line in _loaded(report)]
    for section in sections(report, top):
        out += ["", f"### {section.title}", "", "| " + " | ".join(section.headers) + " |",
                "|" + "|".join([" --- "] + [" ---: "] * (len(section.headers) - 1)) + "|"]
        out += ["| " + " | ".join(row) + " |" for row in section.rows + ([section.total] if section.total else [])]
        if section.note:
            out += ["", f"_{section.note}_"]
    if report["findings"]:
        out += ["", "### Data findings", ""] + [f"- {line}" for line in _finding_lines(report)]
    return "\n".join(out) + "\n"


def render_json(report: dict) -> str:
    return json.dumps(report, indent=2, allow_nan=False) + "\n"


def render_github(report: dict, strict: bool = False) -> str:
    """One workflow-command annotation per data finding, on the first dump file; the findings
    ``--strict`` gates on are errors under ``--strict``."""
    from lossaudit.compare.report import STRICT_FINDINGS
    from lossaudit.reporting import annotation, repository_relative, repository_root

    file = repository_relative(report["input"]["files"][0], repository_root())
    lines = [
        annotation("error" if strict and f["code"] in STRICT_FINDINGS else "warning", f["message"], file=file, title=f"lossaudit compare: {f['code']}")
        for f in report["findings"]
    ]
    return "\n".join(lines) + ("\n" if lines else "")


def render_junit(report: dict) -> str:
    """One test case per data check: a failure for a finding ``--strict`` gates on, output for
    the others."""
    from lossaudit.compare.report import FINDING_NAMES, STRICT_FINDINGS
    from lossaudit.reporting import junit_xml

    found = {f["code"]: f for f in report["findings"]}
    classname = "lossaudit compare " + " ".join(report["input"]["files"])
    cases = []
    for code in FINDING_NAMES:
        case = {"classname": classname, "name": code}
        if code in found and code in STRICT_FINDINGS:
            case["failure"] = (found[code]["message"], json.dumps(found[code], default=str))
        elif code in found:
            case["output"] = found[code]["message"]
        cases.append(case)
    return junit_xml("lossaudit compare", cases)
