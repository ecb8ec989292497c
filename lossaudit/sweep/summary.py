"""The sweep's "Summary": a few plain sentences, each from one rule below, saying how the swept
loss's shares move across the grid, with the settings at either end and the numbers.

Every rule reads the sweep document (:func:`lossaudit.sweep.run.sweep`) and returns ``{"rule",
"text", "numbers"}`` (as ``compare``'s summary) or None when the data gives it nothing to say:

- ``loss``: which loss was swept and why (``--loss``, or the data kind it fits);
- ``rare-classes``: the share of the loss on the rare classes (``compare``'s rule,
  :func:`~lossaudit.compare.report.build.rare_classes`); none without a rare class;
- ``easy-negatives``: the share on easy negatives (g < 0.1), sigmoid focal loss only (a softmax
  loss has no negative term);
- ``very-hard``: the share on very hard elements (g ≥ 0.9), or rows (q_target ≤ 0.1) for
  softmax-focal; none when there is none.

The axis a sentence follows is gamma, from its smallest to its largest value, at the first alpha
setting (focal: the first ``--alpha``; softmax-focal: no alpha); with one gamma, the alpha settings
in the order given. When the grid has more settings than that line, the sentence adds the lowest
and the highest share over the whole grid with their settings. Shares are of these predictions:
every sentence says so (a model trained otherwise gives other shares).

When the input looks misread (``compare``'s ``misread`` rule), the summary says so and nothing else.
A weighted dump's sweep starts with ``compare``'s ``estimate`` sentence, and each share it states
carries its standard error.
"""

from __future__ import annotations

from lossaudit.losses.focusing import SOFTMAX_FOCAL
from lossaudit.render.formatting import count, names, pct, pct_se


def _sentence(rule: str, text: str, **numbers: object) -> dict:
    return {"rule": rule, "text": text, "numbers": numbers}


def _alpha_key(row: dict) -> tuple:
    return (row["alpha"], tuple(row["alpha_per_class"] or ()))


def _line(settings: list[dict]) -> tuple[str, list[dict]]:
    """The axis the sentences follow and its settings in order: gamma (ascending) at the first alpha
    setting, or with one gamma the alpha settings as given."""
    first = _alpha_key(settings[0])
    gammas = sorted({row["gamma"] for row in settings})
    if len(gammas) > 1:
        by_gamma = {row["gamma"]: row for row in settings if _alpha_key(row) == first}
        return "gamma", [by_gamma[gamma] for gamma in gammas]
    return ("alpha" if len(settings) > 1 else "none"), list(settings)


def _alpha_text(row: dict) -> str:
    """The alpha part of a setting's label: ``alpha 0.25``, ``alpha off``, ``alpha #1``, or ``no alpha``."""
    label = row["label"]
    return "alpha " + label.split(", α ", 1)[1] if ", α " in label else "no alpha"


def _at(row: dict, key: str) -> str:
    """A setting's share, with its standard error in a weighted dump's sweep."""
    return pct_se(row[key], row.get(key + "_se"))


def _moves(loss: str, what: str, key: str, settings: list[dict]) -> tuple[str, dict] | None:
    """``"as gamma goes 0 → 5 (alpha 0.25), focal's share of its loss on <what> falls from A to B
    (of its gradient: C → D); over the 20 settings it lies between L (γ 5, α 0.75) and H (γ 0, α off)"``
    and its numbers, or None when a share is undefined (a loss total of 0)."""
    gradient_key = "gradient_" + key
    if any(row[key] is None for row in settings):
        return None
    axis, line = _line(settings)
    start, end = line[0], line[-1]
    a, b = start[key], end[key]
    moved = "stays at " + _at(start, key) if pct(a) == pct(b) else f"{'rises' if b > a else 'falls'} from {_at(start, key)} to {_at(end, key)}"
    ga, gb = start[gradient_key], end[gradient_key]
    gradient = f" (of its gradient: {_at(start, gradient_key)} → {_at(end, gradient_key)})" if ga is not None and gb is not None else ""
    if axis == "gamma":
        lead = f"as gamma goes {start['gamma']:g} → {end['gamma']:g} ({_alpha_text(start)}), {loss}'s share of its loss on {what} {moved}"
    elif axis == "alpha":
        lead = f"as the setting goes from {_alpha_text(start)} to {_alpha_text(end)} (gamma {start['gamma']:g}), {loss}'s share of its loss on {what} {moved}"
    else:
        lead = (
            f"at {start['label']}, {loss} puts {_at(start, key)} of its loss"
            + (f" ({_at(start, gradient_key)} of its gradient)" if ga is not None else "")
            + f" on {what}"
        )
    numbers = {
        "axis": axis,
        "from": {"label": start["label"], "gamma": start["gamma"], "share": a, "gradient_share": ga},
        "to": {"label": end["label"], "gamma": end["gamma"], "share": b, "gradient_share": gb},
    }
    if len(settings) > len(line):
        low, high = min(settings, key=lambda row: row[key]), max(settings, key=lambda row: row[key])
        lead += f"{gradient}; over the {len(settings)} settings it lies between {_at(low, key)} ({low['label']}) and {_at(high, key)} ({high['label']})"
        numbers.update(lowest={"label": low["label"], "share": low[key]}, highest={"label": high["label"], "share": high[key]})
    elif axis != "none":
        lead += gradient
    return lead, numbers


def loss_choice(document: dict) -> dict:
    """Rule ``loss``: which loss was swept and why; what was ignored."""
    choice = document["loss_choice"]
    loss = document["loss"]
    counts = document["counts"]
    seen = f"{count(counts['units'])} {'rows with a target' if counts['unit'] == 'rows' else 'elements'}"
    settings = len(document["settings"])
    text = f"Swept {loss} over {settings} setting{'' if settings == 1 else 's'}, on {seen}: {choice['why']}"
    if choice["ignored"]:
        text += f"; {', '.join(choice['ignored'])} ignored (a scalar alpha only rescales {SOFTMAX_FOCAL}; weight its classes with --alpha-per-class)"
    return _sentence("loss", text + ".", loss=loss, asked=choice["asked"], data_kind=choice["data_kind"], fits_data=choice["fits_data"])


def _moving(rule: str, document: dict, what: str, key: str, **numbers: object) -> dict | None:
    """Rule ``rule``'s sentence: how the swept loss's share ``key`` on ``what`` moves across the
    grid (:func:`_moves`), said of these predictions; None when it does not move."""
    moved = _moves(document["loss"], what, key, document["settings"])
    if moved is None:
        return None
    text, moves = moved
    return _sentence(rule, f"On these predictions, {text}.", **numbers, **moves)


def rare_classes(document: dict) -> dict | None:
    """Rule ``rare-classes``: with rare classes, how the loss's share on them moves."""
    rare = document["rare_classes"]
    if not rare:
        return None
    counts = document["counts"]
    if counts["unit"] == "rows":
        what = f"the rows of the rare classes ({names(rare)}: {count(counts['rare_units'])} of {count(counts['units'])} rows)"
    else:
        what = f"the rare classes ({names(rare)}: {count(counts['rare_positives'])} of {count(counts['positives'])} positives)"
    return _moving("rare-classes", document, what, "rare_share", classes=rare)


def easy_negatives(document: dict) -> dict | None:
    """Rule ``easy-negatives`` (sigmoid focal loss): how the share on easy negatives moves."""
    counts = document["counts"]
    if counts["easy_negatives"] is None or not counts["easy_negatives"]:
        return None
    what = f"easy negatives (g < 0.1: {count(counts['easy_negatives'])} of {count(counts['units'])} elements)"
    return _moving("easy-negatives", document, what, "easy_negative_share", elements=counts["easy_negatives"])


def very_hard(document: dict) -> dict | None:
    """Rule ``very-hard``: how the share on the very hard elements (rows) moves."""
    counts = document["counts"]
    if not counts["very_hard"]:
        return None
    if counts["unit"] == "rows":
        what = f"very hard rows (q_target ≤ 0.1: {count(counts['very_hard'])} of {count(counts['units'])} rows)"
    else:
        what = f"very hard elements (g ≥ 0.9: {count(counts['very_hard'])} of {count(counts['units'])} elements)"
    return _moving("very-hard", document, what, "very_hard_share", **{counts["unit"]: counts["very_hard"]})


def summarise(document: dict, report: dict) -> list[dict]:
    """Every rule's sentence, in order, for the document's ``summary``; ``report`` is one setting's
    ``compare`` report, whose ``misread`` sentence (the input looks misread) replaces them all."""
    from lossaudit.compare.report.summary import estimate, misread

    first = misread(report)
    if first is not None:
        return [sentence for sentence in (estimate(document), first) if sentence is not None]
    sentences = [estimate(document), loss_choice(document), rare_classes(document), easy_negatives(document), very_hard(document)]
    return [sentence for sentence in sentences if sentence is not None]
