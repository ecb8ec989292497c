"""The report's "Summary": plain sentences, each from one rule below, stated with the numbers it
rests on. A rule whose condition the data does not meet says nothing, so the summary holds at most
one sentence per rule (seven), in this order. When the input looks misread (``misread``), the
summary says so first and draws no conclusion from it: only the findings follow.

Every rule reads the report of :func:`lossaudit.compare.report.build.build_report` (shares are fractions
of each loss's own total; g is the gradient norm |p − y|, 1 − q_target for softmax losses) and
returns ``{"rule", "text", "numbers"}`` or None. Thresholds are the module constants.

Like with like: a rule that ranks losses against each other ranks those of one family, counted in
one unit (elements for sigmoid losses, rows for softmax ones): the family that fits the data
(:func:`_compared`); ``label-noise`` the first listed family's, ``easy-negatives`` and
``ghm-very-hard`` sigmoid losses only. No sentence compares across families.
"""

from __future__ import annotations

from lossaudit.losses.cross_entropy import BCE
from lossaudit.losses.density import GHM
from lossaudit.render.formatting import count, names, num, pct

EASY_NEGATIVE_SHARE = 0.5
"""``easy-negatives`` fires when a sigmoid loss takes at least this share from easy negatives."""
RARE_HARD_SPREAD = 0.05
"""``rare-hard`` fires when the losses' rare-hard shares differ by at least this (5 points)."""
NOISE_UNIT_SHARE, NOISE_LOSS_SHARE = 0.01, 0.25
"""``label-noise``: at most 1% of the units hold at least 25% of a loss."""
GHM_CHANGE = 1.5
"""``ghm-very-hard`` fires when GHM-C's very-hard share is ≥ 1.5× or ≤ 1/1.5 of BCE's."""


def _sentence(rule: str, text: str, **numbers: object) -> dict:
    return {"rule": rule, "text": text, "numbers": numbers}


def _by_family(report: dict, family: str) -> list[str]:
    return [loss for loss, d in report["losses"].items() if d["family"] == family]


def _unit(report: dict, loss: str) -> str:
    return report["losses"][loss]["covers"]["unit"]


def _plural(n: int, word: str) -> str:
    return f"{count(n)} {word}" + ("" if n == 1 else "s")


def _listed(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def fit(report: dict) -> dict | None:
    """Rule ``fit``: when both sigmoid and softmax losses are shown, say which fit the data and
    which rows each sees. Detection-style data (some valid row background or multi-hot) fits the
    sigmoid losses (C binary problems), and the softmax losses see only the rows with a target;
    single-label data (no such row) fits the softmax losses; heatmaps fit the sigmoid losses."""
    sigmoid, softmax = _by_family(report, "sigmoid"), _by_family(report, "softmax")
    if not sigmoid or not softmax:
        return None
    inp = report["input"]
    kind, rows, seen = inp["data_kind"], inp["rows"], report["losses"][softmax[0]]["covers"]["count"]
    numbers = {"data_kind": kind, "rows": rows, "rows_with_target": seen, "background_rows": inp["background_rows"],
               "multi_hot_rows": inp["multi_hot_rows"], "elements": inp["valid_elements"]}
    if kind == "single-label":
        return _sentence(
            "fit",
            f"Single-label data (no background or multi-hot row among the {count(seen)} rows with a target), so the "
            f"softmax losses ({', '.join(softmax)}) are listed first; {_listed(sigmoid)} treat the "
            f"{count(inp['valid_elements'])} elements as {inp['classes']} binary problems.",
            **numbers,
        )
    unit = "rows (pixels)" if kind == "heatmap" else "rows"
    why = [f"{count(inp['background_rows'])} of {count(rows)} {unit} have no positive class"] if inp["background_rows"] else []
    if inp["multi_hot_rows"]:
        why.append(f"{count(inp['multi_hot_rows'])} have several")
    label = "Heatmap data" if kind == "heatmap" else "Detection-style data"
    return _sentence(
        "fit",
        f"{label}: {' and '.join(why) or 'heatmap targets'}, so the sigmoid losses ({', '.join(sigmoid)}) are listed "
        f"first; {_listed(softmax)} see only the {count(seen)} rows with a target.",
        **numbers,
    )


def easy_negatives(report: dict) -> dict | None:
    """Rule ``easy-negatives``: a sigmoid loss takes at least 50% (:data:`EASY_NEGATIVE_SHARE`) of its
    total from easy negatives (g < 0.1): name the loss with the largest such share, the easy
    negatives' share of the elements, and the other sigmoid losses' shares."""
    sigmoid = [loss for loss in _by_family(report, "sigmoid") if report["losses"][loss]["easy_negative_share"] is not None]
    if not sigmoid:
        return None
    shares = {loss: report["losses"][loss]["easy_negative_share"] for loss in sigmoid}
    top = max(sigmoid, key=shares.get)
    if shares[top] < EASY_NEGATIVE_SHARE:
        return None
    easy = report["levels"][0]
    negatives = easy["elements"] - easy["positives"]
    element_share = negatives / report["input"]["valid_elements"]
    others = "; " + ", ".join(f"{loss} {pct(shares[loss])}" for loss in sigmoid if loss != top) if len(sigmoid) > 1 else ""
    return _sentence(
        "easy-negatives",
        f"{top} spends {pct(shares[top])} of its loss on easy negatives (g < 0.1: {count(negatives)} elements, "
        f"{pct(element_share)} of all){others}{_misfit_note(report, sigmoid)}.",
        loss=top, shares=shares, easy_negatives=negatives, element_share=element_share,
    )


def _compared(report: dict) -> tuple[list[str], str]:
    """The losses a comparing rule ranks against each other, like with like: those of the family
    that fits the data (softmax on single-label data, sigmoid otherwise; a user's loss counts in its
    registered family), so that every share is of the same unit. When no shown loss fits the data,
    those of the first listed family, and ``" (… losses, which do not fit …)"`` to say so."""
    losses = report["losses"]
    fitting = [loss for loss, d in losses.items() if d.get("fits_data")]
    if fitting:
        return fitting, ""
    first = next(iter(losses), None)
    if first is None:
        return [], ""
    family = losses[first]["family"]
    return _by_family(report, family), _misfit_note(report, [first])


def _misfit_note(report: dict, compared: list[str]) -> str:
    """``" (sigmoid losses, which do not fit single-label data)"`` when the losses a sentence compares
    are of a family that does not fit the data, else nothing: a sentence says so when it does not
    compare the losses that fit."""
    misfit = [loss for loss in compared if report["losses"][loss].get("fits_data") is False]
    if not misfit:
        return ""
    return f" ({report['losses'][misfit[0]]['family']} losses, which do not fit {report['input']['data_kind']} data)"


def rare_hard(report: dict) -> dict | None:
    """Rule ``rare-hard``: with rare classes (:func:`~lossaudit.compare.report.build.rare_classes`)
    and at least two losses of the family that fits the data (:func:`_compared`: shares of the same
    unit, elements or rows) whose rare-hard quadrant (rare classes, g ≥ 0.5) holds some of their
    units, name the loss giving it the largest share of its total and the one giving the smallest,
    when they differ by at least 5 points (:data:`RARE_HARD_SPREAD`)."""
    quadrants = report["quadrants"]
    cell = quadrants["cells"]["rare_hard"]
    group, caveat = _compared(report)
    shares = {loss: share for loss, share in cell["share"].items()
              if loss in group and share is not None and cell[_unit(report, loss)]}
    if not quadrants["rare_classes"] or len(shares) < 2:
        return None
    top, low = max(shares, key=shares.get), min(shares, key=shares.get)
    if shares[top] - shares[low] < RARE_HARD_SPREAD:
        return None
    return _sentence(
        "rare-hard",
        f"{top} gives the rare-hard quadrant (rare classes {names(quadrants['rare_classes'])}; g ≥ "
        f"{quadrants['hard_from_g']:g}) the most weight: {pct(shares[top])} of its loss, against {pct(shares[low])} "
        f"for {low}{caveat}.",
        loss=top, least=low, shares=shares, rare_classes=quadrants["rare_classes"],
    )


def label_noise(report: dict) -> dict | None:
    """Rule ``label-noise``: in the units of the losses listed first (elements for sigmoid losses,
    rows for softmax ones), the very hard level (g ≥ 0.9: confidently wrong, p ≤ 0.1 on a positive
    or p ≥ 0.9 on a negative) holds at most 1% of the units (:data:`NOISE_UNIT_SHARE`) yet at least
    25% (:data:`NOISE_LOSS_SHARE`) of one of those losses: a large share of loss from few confident
    mistakes, the signature of label noise (or missed objects)."""
    first = next(iter(report["losses"]), None)
    if first is None:
        return None
    family = report["losses"][first]["family"]
    group = _by_family(report, family)
    very_hard = report["levels"][-1]
    unit = "rows" if family == "softmax" else "elements"
    units = report["losses"][first]["covers"]["count"]
    held = very_hard[unit]
    shares = {loss: very_hard["share"][loss] for loss in group if very_hard["share"][loss] is not None}
    if not held or not units or not shares:
        return None
    top = max(shares, key=shares.get)
    if held / units > NOISE_UNIT_SHARE or shares[top] < NOISE_LOSS_SHARE:
        return None
    if family == "softmax":
        which = "q_target ≤ 0.1"
    else:
        positives = very_hard["positives"]
        which = f"g ≥ 0.9: {_plural(positives, 'positive')} at p ≤ 0.1, {_plural(held - positives, 'negative')} at p ≥ 0.9"
    return _sentence(
        "label-noise",
        f"{count(held)} of {count(units)} {unit} ({pct(held / units)}) {'is' if held == 1 else 'are'} confidently wrong ({which}) yet {'carries' if held == 1 else 'carry'} "
        f"{pct(shares[top])} of {top}'s loss: that much loss on so few {unit} looks like label noise or missed "
        f"objects; inspect them before tuning the loss.",
        loss=top, unit=unit, very_hard=held, units=units, share=shares[top],
    )


def ghm_very_hard(report: dict) -> dict | None:
    """Rule ``ghm-very-hard``: with ghm and bce shown (GHM-C is BCE re-weighted by the inverse count
    of each gradient-norm bin) and very hard elements (g ≥ 0.9) present, state how GHM-C changes
    their share of the loss when it is at least 1.5× (:data:`GHM_CHANGE`) or at most 1/1.5× BCE's."""
    losses = report["losses"]
    very_hard = report["levels"][-1]
    if GHM not in losses or BCE not in losses or not very_hard["elements"]:
        return None
    ghm, bce = losses[GHM]["very_hard_share"], losses[BCE]["very_hard_share"]
    if not ghm or not bce or 1 / GHM_CHANGE < ghm / bce < GHM_CHANGE:
        return None
    element_share = very_hard["elements"] / report["input"]["valid_elements"]
    if ghm > bce:
        why = f"their bins are sparse ({pct(element_share)} of the elements) and GHM-C up-weights sparse bins"
    else:
        why = f"their bins are crowded ({pct(element_share)} of the elements) and GHM-C down-weights crowded bins"
    return _sentence(
        "ghm-very-hard",
        f"ghm {'raises' if ghm > bce else 'lowers'} the very hard elements' (g ≥ 0.9) share of the loss from bce's "
        f"{pct(bce)} to {pct(ghm)} (×{num(ghm / bce)}): {why}{_misfit_note(report, [GHM, BCE])}.",
        ghm=ghm, bce=bce, ratio=ghm / bce, element_share=element_share,
    )


def _finding_phrase(finding: dict, report: dict) -> str:
    n = count(finding["count"])
    return {
        "probabilities-as-logits": "every value lies in [0, 1] (probabilities saved as logits?)",
        "labels-one-based": f"label 0 is unused and label {finding.get('background_label')} ({n} rows) is read as background (labels counted from 1?)",
        "sigmoid-losses-skipped": (f"the sigmoid losses ({', '.join(finding.get('skipped', []))}) are not computed: softmax probabilities "
                                   "give the logits only up to a per-row constant" if finding["count"] else "no sigmoid loss can be computed from softmax probabilities"),
        "non-finite": f"{n} non-finite logits are excluded from every loss",
        "labels-out-of-range": f"{n} rows with labels out of range are excluded from every loss",
        "softmax-background": f"{n} of {count(report['input']['rows'])} rows are background, which no softmax loss can use",
        "softmax-multi-hot": f"{n} rows have several positive classes, which a softmax loss reads as one unnormalised target",
        "class-without-positives": f"{n} classes have no positive ({names(finding.get('classes', []))})",
        "mixed-runs": f"the {n} files come from {len(finding.get('runs', {}))} different runs, tallied together",
    }[finding["code"]]


def findings(report: dict, stated: frozenset[str] = frozenset()) -> dict | None:
    """Rule ``findings``: the data findings not already stated by ``fit`` (background and multi-hot
    rows), each with its count."""
    listed = [f for f in report["findings"] if f["code"] not in stated]
    if not listed:
        return None
    phrases = [_finding_phrase(f, report) for f in listed]
    return _sentence("findings", "Data findings: " + "; ".join(phrases) + ".", codes=[f["code"] for f in listed])


def misread(report: dict) -> dict | None:
    """Rule ``misread``: the input looks misread (finding ``probabilities-as-logits`` or
    ``labels-one-based``): say so first, with the option that reads it right; the other rules
    then draw no conclusion from it."""
    listed = [f for f in report["findings"] if f.get("misread")]
    if not listed:
        return None
    fixes = {"probabilities-as-logits": lambda f: f"the values look like {f.get('inputs', 'probabilities')} (pass --inputs {f.get('inputs', 'probs')})",
             "labels-one-based": lambda f: f"the labels look counted from 1 (pass --label-base 1; {_plural(f['count'], 'row')} now read as background)"}
    text = "The input looks misread: " + "; ".join(fixes[f["code"]](f) for f in listed) + ". No conclusion is drawn from it as read."
    return _sentence("misread", text, codes=[f["code"] for f in listed])


def summarise(report: dict) -> list[dict]:
    """Every rule's sentence, in order, for the report's ``summary``; on a misread input, the
    ``misread`` sentence and the findings only."""
    first = misread(report)
    if first is not None:
        misread_codes = frozenset(f["code"] for f in report["findings"] if f.get("misread"))
        return [sentence for sentence in (first, findings(report, misread_codes)) if sentence is not None]
    sentences = [fit(report)]
    stated = frozenset({"softmax-background", "softmax-multi-hot"}) if sentences[0] else frozenset()
    sentences += [easy_negatives(report), rare_hard(report), label_noise(report), ghm_very_hard(report), findings(report, stated)]
    return [sentence for sentence in sentences if sentence is not None]
