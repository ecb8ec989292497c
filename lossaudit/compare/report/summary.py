"""The report's "Summary": plain sentences, each from one rule below, stated with the numbers it
rests on. A rule whose condition the data does not meet says nothing, so the summary holds at most
one sentence per rule (ten), in this order: a weighted dump's report starts with ``estimate``. When
the input looks misread (``misread``), the summary says so first and draws no conclusion from it:
only the findings follow.

Every rule reads the report of :func:`lossaudit.compare.report.build.build_report` (shares are fractions
of each loss's own total; g is the gradient norm |p − y|, 1 − q_target for softmax losses) and
returns ``{"rule", "text", "numbers"}`` or None. Thresholds are the module constants and those of
:mod:`lossaudit.compare.report.diagnosis`. Sentences about the losses say they describe these
predictions: the same loss weighs another model's outputs differently.

Like with like: a rule that ranks losses against each other ranks those of one family, counted in
one unit (elements for sigmoid losses, rows for softmax ones): the family that fits the data
(:func:`_compared`); ``easy-negatives`` and ``ghm-very-hard`` compare sigmoid losses only and say
so on data they do not fit. No sentence compares across families.
"""

from __future__ import annotations

from typing import Any, cast

from lossaudit.compare.report.diagnosis import ARGMAX, MISSED_PROBABILITY, MISSED_RECALL, is_missed
from lossaudit.losses.cross_entropy import BCE
from lossaudit.losses.density import GHM
from lossaudit.render.formatting import MISSING, count, names, num, pct, pct_se, plural

EASY_NEGATIVE_SHARE = 0.5
"""``easy-negatives`` fires when a sigmoid loss takes at least this share from easy negatives."""
RARE_HARD_SPREAD = 0.05
"""``rare-hard`` fires when the losses' rare-hard shares differ by at least this (5 points)."""
NOISE_UNIT_SHARE, NOISE_LOSS_SHARE = 0.01, 0.25
"""``confidently-wrong``: at most 1% of the units hold at least 25% of a loss."""
NAMED_CAUSE_SHARE = 0.1
"""``confidently-wrong`` names as a cause what holds at least 10% of the confidently wrong units (and
always the largest)."""
MISSED_LISTED = 6
"""``missed-classes`` names at most this many classes (the lowest recall first)."""
GHM_CHANGE = 1.5
"""``ghm-very-hard`` fires when GHM-C's very-hard share is ≥ 1.5× or ≤ 1/1.5 of BCE's."""


def _sentence(rule: str, text: str, **numbers: object) -> dict:
    return {"rule": rule, "text": text, "numbers": numbers}


def estimate(report: dict) -> dict | None:
    """Rule ``estimate``: a weighted dump's report (section ``estimate``) says first that its
    numbers are estimates, from how many sampled elements of how many (the population recorded,
    else the sum of the weights), that shares carry ± one standard error, and which quantities are
    plug-in estimates."""
    section = report.get("estimate")
    if not section:
        return None
    from lossaudit.compare.report.estimates import PLUG_IN

    source = "as recorded" if section["population_source"] == "recorded" else "by the sum of the weights"
    text = (
        f"These numbers are estimates from a weighted sample: {count(section['sampled_elements'])} sampled elements of "
        f"{count(section['population_elements'])} ({source}); each share is given ± one standard error in percentage points; "
        f"{_listed([PLUG_IN.get(name, name) for name in section['plug_in']])} are plug-in estimates, without one."
    )
    return _sentence(
        "estimate",
        text,
        sampled_elements=section["sampled_elements"],
        population_elements=section["population_elements"],
        population_source=section["population_source"],
        plug_in=section["plug_in"],
    )


def _share(report: dict, loss: str, key: str) -> str:
    """A loss's headline share as a sentence writes it: with its standard error when there is one."""
    numbers = report["losses"][loss]
    return pct_se(numbers[key], numbers.get(key + "_se"))


def _rows(inp: dict) -> int:
    """The rows the data holds: a weighted dump's estimate (``estimated_rows``), else those read."""
    return inp.get("estimated_rows", inp["rows"])


def _cell(row: dict, loss: str) -> str:
    """A row's (a level's, a quadrant cell's) share of ``loss``, with its standard error when there is one."""
    return pct_se(row["share"][loss], row.get("share_se", {}).get(loss))


def _by_family(report: dict, family: str) -> list[str]:
    return [loss for loss, d in report["losses"].items() if d["family"] == family]


def _unit(report: dict, loss: str) -> str:
    return report["losses"][loss]["covers"]["unit"]


def _listed(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def fit(report: dict) -> dict | None:
    """Rule ``fit``: when both sigmoid and softmax losses are shown, say which fit the data and
    which rows each sees (on heatmaps, with sigmoid losses only, the peaks: what a positive is). Detection-style data (some valid row background or multi-hot) fits the
    sigmoid losses (C binary problems), and the softmax losses see only the rows with a target;
    single-label data (no such row) fits the softmax losses; heatmaps fit the sigmoid losses, and
    their counts follow the heatmap positive rule (peaks: target = 1). Rows are named for what they
    are (``input.row_noun``: cells of maps, positions, rows)."""
    sigmoid, softmax = _by_family(report, "sigmoid"), _by_family(report, "softmax")
    inp = report["input"]
    if inp["data_kind"] == "heatmap" and sigmoid and not softmax:
        noun = inp.get("row_noun", "rows")
        return _sentence(
            "fit",
            f"Heatmap data: {plural(inp['positives'], 'peak')} (target = 1) among {count(_rows(inp))} {noun}, the rest "
            f"Gaussian or zero targets: every positive counted below is a peak.",
            data_kind="heatmap",
            rows=_rows(inp),
            peaks=inp["positives"],
            elements=inp["valid_elements"],
        )
    if not sigmoid or not softmax:
        return None
    kind, rows, seen = inp["data_kind"], _rows(inp), report["losses"][softmax[0]]["covers"]["count"]
    numbers = {
        "data_kind": kind,
        "rows": rows,
        "rows_with_target": seen,
        "background_rows": inp["background_rows"],
        "multi_hot_rows": inp["multi_hot_rows"],
        "elements": inp["valid_elements"],
    }
    noun = inp.get("row_noun", "rows")
    if kind == "single-label":
        return _sentence(
            "fit",
            f"Single-label data (no background or multi-hot {noun[:-1]} among the {count(seen)} {noun} with a target), so the "
            f"softmax losses ({', '.join(softmax)}) are listed first; {_listed(sigmoid)} {'treats' if len(sigmoid) == 1 else 'treat'} the "
            f"{count(inp['valid_elements'])} elements as {inp['classes']} binary problems.",
            **numbers,
        )
    if kind == "heatmap":
        return _sentence(
            "fit",
            f"Heatmap data: {plural(inp['positives'], 'peak')} (target = 1) among {count(rows)} {noun}, the rest Gaussian "
            f"or zero targets, so the sigmoid losses ({', '.join(sigmoid)}) are listed first; {_listed(softmax)} {'reads' if len(softmax) == 1 else 'read'} the "
            f"{count(seen)} {noun} with a non-zero target as soft softmax targets.",
            **numbers,
        )
    why = [f"{count(inp['background_rows'])} of {count(rows)} {noun} have no positive class"] if inp["background_rows"] else []
    if inp["multi_hot_rows"]:
        why.append(f"{count(inp['multi_hot_rows'])} have several")
    return _sentence(
        "fit",
        f"Detection-style data: {' and '.join(why)}, so the sigmoid losses ({', '.join(sigmoid)}) are listed "
        f"first; {_listed(softmax)} {'sees' if len(softmax) == 1 else 'see'} only the {count(seen)} {noun} with a target.",
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
    top = max(sigmoid, key=shares.__getitem__)
    if shares[top] < EASY_NEGATIVE_SHARE:
        return None
    easy = report["levels"][0]
    negatives = easy["elements"] - easy["positives"]
    element_share = negatives / report["input"]["valid_elements"]
    others = "; " + ", ".join(f"{loss} {_share(report, loss, 'easy_negative_share')}" for loss in sigmoid if loss != top) if len(sigmoid) > 1 else ""
    return _sentence(
        "easy-negatives",
        f"On these predictions, {top} spends {_share(report, top, 'easy_negative_share')} of its loss on easy negatives (g < 0.1: {count(negatives)} elements, "
        f"{pct(element_share)} of all){others}{_misfit_note(report, sigmoid)}.",
        loss=top,
        shares=shares,
        easy_negatives=negatives,
        element_share=element_share,
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
    shares = {loss: share for loss, share in cell["share"].items() if loss in group and share is not None and cell[_unit(report, loss)]}
    if not quadrants["rare_classes"] or len(shares) < 2:
        return None
    top, low = max(shares, key=shares.__getitem__), min(shares, key=shares.__getitem__)
    if shares[top] - shares[low] < RARE_HARD_SPREAD:
        return None
    return _sentence(
        "rare-hard",
        f"On these predictions, {top} gives the rare-hard quadrant (rare classes {names(quadrants['rare_classes'])}; g ≥ "
        f"{quadrants['hard_from_g']:g}) the most weight: {_cell(cell, top)} of its loss, against {_cell(cell, low)} "
        f"for {low}{caveat}.",
        loss=top,
        least=low,
        shares=shares,
        rare_classes=quadrants["rare_classes"],
    )


def _probability(value: float | None) -> str:
    """A probability to two significant digits (0.77, 0.053, 0.0078); — for none."""
    return MISSING if value is None else f"{value:.2g}"


def _class_outcome(row: dict, rule: str) -> str:
    mean_p = row["mean_p_softmax"] if rule == ARGMAX else row["mean_p"]
    return f"{plural(row['positives'], 'positive')}, mean target probability {_probability(mean_p)}, recall {pct(row['recall'])}"


def _recall_words(rule: str) -> str:
    return "at its argmax" if rule == ARGMAX else "at p > 0.5"


def imbalance(report: dict) -> dict | None:
    """Rule ``imbalance``: with rare classes (the ``imbalance`` section), the spread (the rare
    classes with their positives against the median class's), how the model does on them and on
    the others (mean target probability, recall), and the rare classes' share of the loss and of
    its gradient under each loss of the fitting family, those made for imbalance included
    (:func:`lossaudit.compare.report.diagnosis.advice`): the numbers, on this dump, that a
    choice of loss rests on."""
    section = report.get("imbalance")
    if not section:
        return None
    rare = section["rare_classes"]
    rule, on_rare, others = section["recall_rule"], section["rare"], section["others"]
    shown = list(rare.items())[:MISSED_LISTED]
    more = f" and {len(rare) - len(shown)} more" if len(rare) > len(shown) else ""
    text = (
        f"Imbalanced classes: the rare {'class' if len(rare) == 1 else 'classes'} {_listed([name for name, _ in shown])}{more} "
        f"{'has' if len(rare) == 1 else 'have'} {_listed([count(n) for _, n in shown])} positives against the median class's "
        f"{count(round(section['median_positives']))} (largest ÷ smallest {section['class_spread']:.3g}×)."
    )
    if on_rare["positives"] and others["positives"]:
        text += (
            f" On these predictions the model's mean target probability on them is {_probability(on_rare['mean_p'])} and its recall "
            f"{pct(on_rare['recall'])} ({_recall_words(rule)}), against {_probability(others['mean_p'])} and {pct(others['recall'])} on the other classes."
        )
    losses = [entry for entry in section["losses"] if entry["rare_share"] is not None]
    if losses:
        shares = "; ".join(
            f"{entry['label']} {pct_se(entry['rare_share'], entry.get('rare_share_se'))} "
            f"({pct_se(entry['rare_gradient_share'], entry.get('rare_gradient_share_se'))})"
            for entry in losses
        )
        text += (
            f" The rare {'class' if len(rare) == 1 else 'classes'}' share of each loss (of its gradient) on this dump: {shares}; "
            f"per-class alpha: {section['alpha_rule']}."
        ).replace("class' share", "class's share")
    return _sentence(
        "imbalance",
        text,
        rare_classes=rare,
        median_positives=section["median_positives"],
        class_spread=section["class_spread"],
        recall_rule=rule,
        rare=on_rare,
        others=others,
        advice={
            entry["label"]: {"loss": entry["loss"], "rare_share": entry["rare_share"], "rare_gradient_share": entry["rare_gradient_share"]}
            for entry in section["losses"]
        },
    )


def missed_classes(report: dict) -> dict | None:
    """Rule ``missed-classes``: the classes the model misses — recall below 50% and mean target
    probability below 0.5 (:func:`~lossaudit.compare.report.diagnosis.is_missed`; recall at the
    argmax on single-label data, else p > 0.5) —, rare or not, each with its positives, mean target
    probability and recall (and the class its confidently wrong units are mostly predicted as), and
    the other classes' lowest recall."""
    rule = report["input"].get("recall_rule")
    mean_key = "mean_p_softmax" if rule == ARGMAX else "mean_p"
    rows = [row for row in report.get("per_class", []) if row.get("recall") is not None]
    missed = sorted((row for row in rows if is_missed(row["recall"], row[mean_key])), key=lambda row: (row["recall"], row["index"]))
    if not missed:
        return None
    rare = set(report["quadrants"]["rare_classes"])
    instead: dict[str, Any] = {}
    for pair in (report.get("mistakes") or {}).get("confusions", []):
        instead.setdefault(pair["true"], pair["predicted"])
    parts = []
    for row in missed[:MISSED_LISTED]:
        extra = "rare; " if row["name"] in rare else ""
        mostly = f"; confidently wrong mostly as {instead[row['name']]}" if row["name"] in instead else ""
        parts.append(f"{row['name']} ({extra}{_class_outcome(row, rule)}{mostly})")
    others = [row["recall"] for row in rows if row not in missed]
    tail = f"; the other classes' recall is at least {pct(min(others))}" if others else ""
    more = f" and {len(missed) - MISSED_LISTED} more" if len(missed) > MISSED_LISTED else ""
    text = (
        f"On these predictions the model misses {len(missed)} of {plural(len(rows), 'class')} (recall below {MISSED_RECALL:.0%}, "
        f"{_recall_words(rule)}, and mean target probability below {MISSED_PROBABILITY:g}): {'; '.join(parts)}{more}{tail}."
    )
    return _sentence(
        "missed-classes",
        text,
        classes=[row["name"] for row in missed],
        recall_rule=rule,
        per_class={
            row["name"]: {"positives": row["positives"], "mean_p": row[mean_key], "recall": row["recall"], "rare": row["name"] in rare} for row in missed
        },
    )


CAUSE_WORDS = {
    "shifted": (("found one cell off", "found one cell off"), "the assignment of objects to cells"),
    "missed_rare": (("miss of the rare classes", "misses of the rare classes"), "the under-learned rare classes (sampling, class weights)"),
    "missed_class": (("miss of a class the model misses", "misses of classes the model misses"), "the classes the model misses"),
    "confused": (("class confusion{top}", "class confusions{top}"), "confusions between classes"),
    "missed": (("isolated miss", "isolated misses"), None),
    "false_positive": (("false positive", "false positives"), None),
}
"""Per cause of the ``mistakes`` section: how a count of it reads (one, several), and what it points to."""


def confidently_wrong(report: dict) -> dict | None:
    """Rule ``confidently-wrong``: in the units of the losses that fit the data (elements for
    sigmoid losses, rows for softmax ones; :func:`_compared`), the very hard level (g ≥ 0.9:
    confidently wrong, p ≤ 0.1 on a positive or p ≥ 0.9 on a negative; q_target ≤ 0.1) holds at
    most 1% of the units (:data:`NOISE_UNIT_SHARE`) yet at least 25% (:data:`NOISE_LOSS_SHARE`) of
    one of those losses. The sentence says where they come from (the ``mistakes`` section: rare
    classes, missed classes, one cell off, confusions, isolated misses, false positives) and names
    label noise only when isolated misses and false positives make half of them; otherwise it
    names the causes the counts show."""
    group, caveat = _compared(report)
    if not group:
        return None
    first = group[0]
    family = report["losses"][first]["family"]
    very_hard = report["levels"][-1]
    unit = "rows" if family == "softmax" else "elements"
    units = report["losses"][first]["covers"]["count"]
    held = very_hard[unit]
    shares = {loss: very_hard["share"][loss] for loss in group if very_hard["share"][loss] is not None}
    if not held or not units or not shares:
        return None
    top = max(shares, key=shares.__getitem__)
    if held / units > NOISE_UNIT_SHARE or shares[top] < NOISE_LOSS_SHARE:
        return None
    noun = report["input"].get("row_noun", "rows") if unit == "rows" else unit
    if family == "softmax":
        which = "q_target ≤ 0.1"
    else:
        positives = very_hard["positives"]
        which = f"g ≥ 0.9: {plural(positives, 'positive')} at p ≤ 0.1, {plural(held - positives, 'negative')} at p ≥ 0.9"
    text = (
        f"{count(held)} of {count(units)} {noun} ({pct(held / units)}) {'is' if held == 1 else 'are'} confidently wrong ({which}) yet "
        f"{'carries' if held == 1 else 'carry'} {_cell(very_hard, top)} of {top}'s loss{caveat}"
    )
    numbers = {"loss": top, "unit": unit, "very_hard": held, "units": units, "share": shares[top]}
    mistakes = report.get("mistakes")
    if mistakes and mistakes["unit"] == unit and mistakes["very_hard"]:
        causes = mistakes["causes"]
        pairs = mistakes["confusions"]
        top_pair = f" (most: {pairs[0]['true']} as {pairs[0]['predicted']}, {count(pairs[0]['count'])})" if pairs else ""
        parts = [f"{count(causes[cause])} {words[causes[cause] != 1].format(top=top_pair)}" for cause, (words, _) in CAUSE_WORDS.items() if causes[cause]]
        if mistakes["label_noise"]:
            verdict = (
                "most are isolated misses or false positives, which no rare or missed class, cell or confusion explains; that looks "
                "like label noise or missed objects: inspect them before tuning the loss"
            )
        else:
            ranked = sorted((cause for cause, (_, why) in CAUSE_WORDS.items() if why and causes[cause]), key=lambda cause: -causes[cause])
            named = [CAUSE_WORDS[cause][1] for i, cause in enumerate(ranked) if i == 0 or causes[cause] >= NAMED_CAUSE_SHARE * mistakes["very_hard"]]
            verdict = f"that points to {_listed(cast('list[str]', named))}, not to label noise"
        text += f". On these predictions {'it is' if held == 1 else 'they are'} {_listed(parts)}: {verdict}."
        numbers.update(causes=causes, label_noise=mistakes["label_noise"], confusions=pairs)
    else:  # no breakdown (a report of the full-tensor oracle)
        text += f": that much loss on so few {noun} looks like label noise or missed objects; inspect them before tuning the loss."
    return _sentence("confidently-wrong", text, **numbers)


def ghm_very_hard(report: dict) -> dict | None:
    """Rule ``ghm-very-hard``: with ghm and bce shown (GHM-C is BCE re-weighted by the inverse count
    of each gradient-norm bin) and very hard elements (g ≥ 0.9) present, state how GHM-C changes
    their share of the loss when it is at least 1.5× (:data:`GHM_CHANGE`) or at most 1/1.5× BCE's.
    The reason given is the one the per-difficulty table shows: the ratio of the shares is the
    GHM weight of the very hard bins (per unit of BCE loss) over the weight BCE's whole loss gets on
    average. With as many difficulty bins as GHM bins those are the table's ``ghm_weight`` column."""
    losses = report["losses"]
    very_hard = report["levels"][-1]
    if GHM not in losses or BCE not in losses or not very_hard["elements"]:
        return None
    ghm, bce = losses[GHM]["very_hard_share"], losses[BCE]["very_hard_share"]
    if not ghm or not bce or 1 / GHM_CHANGE < ghm / bce < GHM_CHANGE:
        return None
    element_share = very_hard["elements"] / report["input"]["valid_elements"]
    numbers = {GHM: ghm, BCE: bce, "ratio": ghm / bce, "element_share": element_share}
    table = report.get("per_difficulty", [])
    hard_bins = [row for row in table if row["g_low"] >= very_hard["g_low"] - 1e-9]
    loss_in_hard = sum(row["share"][BCE] or 0 for row in hard_bins)
    if losses[GHM].get("params", {}).get("bins") == len(table) and loss_in_hard:
        weight = sum(row["ghm_weight"] * (row["share"][BCE] or 0) for row in hard_bins) / loss_in_hard
        average = sum(row["ghm_weight"] * (row["share"][BCE] or 0) for row in table)
        why = (
            f"GHM-C weights their bin (g ≥ 0.9, {pct(element_share)} of the elements) by {num(weight)} per unit of BCE loss, "
            f"{'above' if ghm > bce else 'below'} the {num(average)} that BCE's loss gets on average (the per-difficulty table's ghm weights)"
        )
        numbers.update(bin_weight=weight, average_weight=average)
    else:
        why = f"GHM-C weights their bins {'more' if ghm > bce else 'less'} per unit of BCE loss than BCE's loss gets on average"
    return _sentence(
        "ghm-very-hard",
        f"On these predictions, ghm {'raises' if ghm > bce else 'lowers'} the very hard elements' (g ≥ 0.9) share of the loss from bce's "
        f"{_share(report, BCE, 'very_hard_share')} to {_share(report, GHM, 'very_hard_share')} (×{num(ghm / bce)}): {why}{_misfit_note(report, [GHM, BCE])}.",
        **numbers,
    )


def _finding_phrase(finding: dict, report: dict) -> str:
    n = count(finding["count"])
    return {
        "probabilities-as-logits": "every value lies in [0, 1] (probabilities saved as logits?)",
        "labels-one-based": f"label 0 is unused and label {finding.get('background_label')} ({n} rows) is read as background (labels counted from 1?)",
        "sigmoid-losses-skipped": (
            f"the sigmoid losses ({', '.join(finding.get('skipped', []))}) are not computed: softmax probabilities "
            "give the logits only up to a per-row constant"
            if finding["count"]
            else "no sigmoid loss can be computed from softmax probabilities"
        ),
        "non-finite": f"{n} non-finite logits are excluded from every loss",
        "labels-out-of-range": f"{n} rows with labels out of range are excluded from every loss",
        "softmax-background": f"{n} of {count(_rows(report['input']))} rows are background, which no softmax loss can use",
        "softmax-multi-hot": f"{n} rows have several positive classes, which a softmax loss reads as one unnormalised target",
        "class-without-positives": f"{n} {'class has' if finding['count'] == 1 else 'classes have'} no positive ({names(finding.get('classes', []))})",
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
    kinds = {"softmax-probs": "softmax probabilities (every row sums to 1)", "sigmoid-probs": "sigmoid probabilities"}
    fixes = {
        "probabilities-as-logits": lambda f: f"the values look like {kinds.get(f.get('inputs'), 'probabilities')} (pass --inputs {f.get('inputs', 'probs')})",
        "labels-one-based": lambda f: f"the labels look counted from 1 (pass --label-base 1; {plural(f['count'], 'row')} now read as background)",
    }
    text = "The input looks misread: " + "; ".join(fixes[f["code"]](f) for f in listed) + ". No conclusion is drawn from it as read."
    return _sentence("misread", text, codes=[f["code"] for f in listed])


def summarise(report: dict) -> list[dict]:
    """Every rule's sentence, in order, for the report's ``summary``; on a misread input, the
    ``misread`` sentence and the findings only."""
    first = misread(report)
    if first is not None:
        misread_codes = frozenset(f["code"] for f in report["findings"] if f.get("misread"))
        return [sentence for sentence in (estimate(report), first, findings(report, misread_codes)) if sentence is not None]
    fitting = fit(report)
    sentences = [estimate(report), fitting]
    stated = frozenset({"softmax-background", "softmax-multi-hot"}) if fitting else frozenset()
    sentences += [
        imbalance(report),
        missed_classes(report),
        easy_negatives(report),
        rare_hard(report),
        confidently_wrong(report),
        ghm_very_hard(report),
        findings(report, stated),
    ]
    return [sentence for sentence in sentences if sentence is not None]
