"""Turn a :class:`~lossaudit.compare.settings.Tally` into the comparison report: plain data with the
stable keys of ``compare --format json``, which the text and markdown renderers read.

Shares are fractions of a loss's total (``None`` where the total is 0). Unrounded floats.
Gradient shares (``gradient_share``, ``gradient_*_share``) are fractions of a loss's total
gradient magnitude ``Σ |∂L/∂x|`` over every logit (see :class:`~lossaudit.compare.settings.Tally`),
grouped like the loss: where the gradient that trains the model comes from.

Units: sigmoid losses see elements (row × class); softmax losses see rows with a target and are
binned by ``1 - q_target`` (a multi-hot row once per positive class). Their counts are kept in
separate keys (``elements``, ``rows``) and never added together.

Losses are listed with those that fit the data first (:func:`data_kind`): sigmoid losses for
detection-style data (background or multi-hot rows) and heatmaps, softmax losses for single-label
data; the requested order is kept within each group.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lossaudit._version import __version__
from lossaudit.compare.engine.binning import ghm_bin_weights
from lossaudit.compare.report import diagnosis
from lossaudit.compare.report.estimates import class_share_ses, share_se, sum_se
from lossaudit.compare.settings import (
    LEVEL_EDGES,
    LEVELS,
    LossSettings,
    Tally,
)
from lossaudit.io.dataset import DataInfo, name_files, positive_rule
from lossaudit.losses.cross_entropy import BCE, CE
from lossaudit.losses.density import GHM
from lossaudit.losses.focusing import FOCAL, SOFTMAX_FOCAL
from lossaudit.losses.mining import OHEM
from lossaudit.losses.registry import LOSSES

SCHEMA_VERSION = 7
"""2 added ``summary``, ``loss_selection``, ``levels``, per loss ``family``/``fits_data``/``covers``,
softmax ``rows`` beside ``elements``, findings' ``gates_strict``/``files``; losses ordered by fit.
3 added the optional ``baseline`` section (``--baseline``; :mod:`lossaudit.compare.report.baseline`).
4 added gradient shares: per loss ``gradient_mean`` and ``gradient_{positive,easy_negative,
very_hard}_share``; ``gradient_share`` beside ``share`` in ``per_class``, ``per_difficulty``,
``levels`` and the quadrants' cells.
5: rare classes follow :func:`rare_classes` (not "below the median"); ``quadrants`` adds
``rare_below`` (the count a rare class is below), ``class_spread`` and ``rare_rule``.
6 added per class ``recall``, ``input.recall_rule`` and ``input.row_noun``, the sections
``mistakes`` (confidently wrong units by cause) and ``imbalance`` (null on data without rare
classes); the summary rule ``label-noise`` became ``confidently-wrong``, and ``missed-classes`` and
``imbalance`` were added (:mod:`lossaudit.compare.report.diagnosis`).
7: weighted dumps (a Poisson sample, issue 24). Their report adds the section ``estimate``
(``weighted``, ``sampled_elements``, ``population_elements``, ``population_source``: ``recorded`` or
``sum of weights``, ``estimated_elements``, ``sample_rate``, ``plug_in``: the plug-in quantities,
without a standard error) and, beside the shares, their delta-method standard errors
(:mod:`lossaudit.compare.report.estimates`): per loss ``sum_se`` (None for ghm, whose sum rests on
plug-in weights) and ``<share>_se`` for each of
its six shares; ``share_se`` and ``gradient_share_se`` (keyed by loss) in ``per_class`` (with
``sum_se``), ``per_difficulty``, ``levels`` and the quadrants' cells; the quadrants'
``rare_share_se`` and ``rare_gradient_share_se`` (of the rare classes' share, rare_easy +
rare_hard); ``input.estimated_rows`` (``input.rows`` are the rows stored). Counts and sums are then
Horvitz–Thompson estimates. An unweighted dump's report has
none of these keys: only its ``schema_version`` differs from schema 6."""
RARE_FRACTION = 0.25
"""A class is rare when its positives are below this fraction of the median class's ..."""
RARE_SPREAD = 5.0
"""... and only when the largest class has at least this many times the positives of the smallest
(classes with no positive count as 1): balanced data has no rare class."""
EASY, HARD_LEVEL, VERY_HARD = 0, 2, 3
"""Indices into ``LEVELS``: easy g < 0.1; hard (quadrants) g ≥ 0.5; very hard g ≥ 0.9."""
HARD_FROM_G = LEVEL_EDGES[HARD_LEVEL - 1]

FINDING_NAMES = {
    "probabilities-as-logits": "values all lie in [0, 1]: these look like probabilities saved as logits",
    "labels-one-based": "index labels that look counted from 1 (label 0 unused, label C used like a class), read as counted from 0",
    "sigmoid-losses-skipped": "sigmoid losses not computed: softmax probabilities give the logits only up to a per-row constant",
    "non-finite": "NaN or infinite logits, excluded from every loss",
    "labels-out-of-range": "labels that are no class, background or ignore label, excluded from every loss",
    "softmax-background": "rows without a positive class, which a softmax loss cannot use",
    "softmax-multi-hot": "rows with more than one positive class, which a softmax loss reads as one unnormalised target",
    "class-without-positives": "classes with no positive element",
    "mixed-runs": "files saved by different runs (lossaudit.save's run_id), tallied together",
}
STRICT_FINDINGS = frozenset(
    {"non-finite", "labels-out-of-range", "softmax-background", "softmax-multi-hot", "probabilities-as-logits", "labels-one-based", "mixed-runs"}
)
"""Findings that can make ``compare --strict`` exit 1 (``gates_strict``); a class without positives
is reported only."""
MISREAD_FINDINGS = ("probabilities-as-logits", "labels-one-based")
"""Findings that say the input looks misread: they come first, and the summary draws no conclusion."""
ONE_BASED_CLASS_RATIO = 2.0
"""``labels-one-based`` fires when label 0 labels no row and the background label C labels at most
this many times the rows of the largest class among 1..C-1 (and fewer than half the rows): used as a
class, not as the background most rows carry."""
INFO_FINDINGS = frozenset({"sigmoid-losses-skipped"})
"""Notes (``info``): what the input cannot give, not something wrong with it."""
SOFTMAX_FIT_FINDINGS = frozenset({"softmax-background", "softmax-multi-hot"})
"""Gate only when a softmax loss was asked for (``--losses`` or the configuration's ``losses``); with
the default set they are informational notes on which losses see which rows."""


def _count(value: float) -> int:
    """A count as reported: a weighted dump's counts are estimates (sums of weights), rounded."""
    return int(round(float(value)))


def _share(part: float, total: float) -> float | None:
    return float(part / total) if total else None


def _ratio(numerator: float, denominator: float) -> float | None:
    return float(numerator / denominator) if denominator else None


def family(loss: str, families: dict[str, str] | None = None) -> str:
    """``softmax`` for the losses over a softmax of the row (ce, softmax-focal, cb-ce,
    logit-adjusted-ce), else ``sigmoid``; ``families`` gives those of the user's losses."""
    return families[loss] if families and loss in families else LOSSES[loss].family


def data_kind(data: DataInfo, tally: Tally) -> str:
    """``heatmap``; ``detection`` when a valid row is background or multi-hot (C independent binary
    problems: sigmoid losses fit); else ``single-label`` (softmax losses fit)."""
    if data.encoding == "heatmap":
        return "heatmap"
    return "detection" if tally.background_rows or tally.multi_hot_rows else "single-label"


def fitting_family(kind: str) -> str:
    return "softmax" if kind == "single-label" else "sigmoid"


def order_by_fit(loss_ids: tuple[str, ...], kind: str, families: dict[str, str] | None = None) -> list[str]:
    """The losses that fit ``kind`` first, each group in the requested order."""
    fits = fitting_family(kind)
    return [loss for loss in loss_ids if family(loss, families) == fits] + [loss for loss in loss_ids if family(loss, families) != fits]


def _input_section(data: DataInfo, tally: Tally, counts: np.ndarray) -> dict:
    positives = _count(counts[:, 1].sum())
    valid = _count(counts.sum())
    negatives = valid - positives
    return {
        "files": data.files,
        "logits_key": data.logits_key,
        "targets_key": data.targets_key,
        "shapes": [
            {"file": file, "logits": list(logits), "targets": list(targets)}
            for file, logits, targets in zip(data.files, data.logits_shapes, data.targets_shapes)
        ],
        "dtype": data.dtype,
        "class_dim": data.class_dim,
        "rows": data.num_rows,
        "classes": data.num_classes,
        "elements": data.num_rows * data.num_classes,
        "target_encoding": data.encoding,
        "encoding_detected": data.encoding_detected,
        "inputs": data.inputs,
        "background_index": data.background_index,
        "ignore_index": data.ignore_index,
        "positive_rule": positive_rule(data.encoding == "heatmap"),
        "valid_elements": valid,
        "positives": positives,
        "negatives": negatives,
        "ignored_elements": _count(tally.ignored.sum()),
        "nonfinite_elements": _count(tally.nonfinite.sum()),
        "background_rows": _count(tally.background_rows),
        "multi_hot_rows": _count(tally.multi_hot_rows),
        "negatives_per_positive": _ratio(negatives, positives),
        "data_kind": data_kind(data, tally),
        "row_noun": row_noun(data),
        **({"estimated_rows": _count(tally.rows)} if tally.sample is not None else {}),
    }


def row_noun(data: DataInfo) -> str:
    """What a row is in the data, for the sentences: ``cells`` of maps (:attr:`DataInfo.grid`),
    ``positions`` of ``(B, A, C)`` sequences or anchors, else ``rows``."""
    if data.grid is not None:
        return "cells"
    return "positions" if data.logits_shapes and all(len(shape) == 3 for shape in data.logits_shapes) else "rows"


HEADLINE = {
    "positive_share": lambda table: table[:, 1],
    "easy_negative_share": lambda table: table[:, 0, :, EASY],
    "very_hard_share": lambda table: table[..., VERY_HARD],
}
"""Each loss's headline shares and the cells they take: positives, easy negatives (g < 0.1),
very hard elements (g ≥ 0.9)."""


PLUG_IN_SUMS = frozenset({GHM})
"""Losses whose sum rests on plug-in weights (GHM-C's: 1 / the estimated count of each bin), whose
variability the second moments do not hold: their ``sum_se`` is None (on a 1% sample GHM-C's sum
varies some 500 times more than Σ w (w - 1) v² says). Their shares' standard errors, given the
weights, hold: the weights' variability mostly cancels in a ratio."""


def _sum_se(moments: np.ndarray, loss: str) -> float | None:
    """:func:`~lossaudit.compare.report.estimates.sum_se` of a loss's cells, None for :data:`PLUG_IN_SUMS`."""
    return None if loss in PLUG_IN_SUMS else sum_se(moments)


def _moments(tally: Tally) -> dict[str, np.ndarray] | None:
    """The tally's second-moment tables (a weighted dump), else None: the report gives no standard error."""
    return tally.second_moments


def _share_errors(tally: Tally, order: list[str], group) -> dict[str, dict[str, float | None]]:
    """``{"share_se": {loss: …}, "gradient_share_se": {loss: …}}``: the standard errors of
    ``group``'s share of each loss and of its gradient (:func:`~lossaudit.compare.report.estimates.share_se`);
    empty for an unweighted tally."""
    moments = _moments(tally)
    if moments is None:
        return {}
    return {
        "share_se": {loss: share_se(tally.loss_sums[loss], moments[loss], group) for loss in order},
        "gradient_share_se": {loss: share_se(tally.gradient_sums[loss], moments["gradient:" + loss], group) for loss in order},
    }


def _class_share_errors(tally: Tally, order: list[str]) -> dict[str, dict[str, list[float | None]]]:
    """:func:`_share_errors` of every class's cells at once: ``{"share_se": {loss: (C,) list}, …}``
    (:func:`~lossaudit.compare.report.estimates.class_share_ses`); empty for an unweighted tally."""
    moments = _moments(tally)
    if moments is None:
        return {}
    return {
        "share_se": {loss: class_share_ses(tally.loss_sums[loss], moments[loss]) for loss in order},
        "gradient_share_se": {loss: class_share_ses(tally.gradient_sums[loss], moments["gradient:" + loss]) for loss in order},
    }


def _headline(sums: np.ndarray, moments: np.ndarray | None, prefix: str = "") -> dict:
    """The :data:`HEADLINE` shares of a loss (or of its gradient, ``prefix`` ``gradient_``), each
    followed by its standard error ``…_se`` when there are second moments."""
    out = {}
    total = float(sums.sum())
    for key, group in HEADLINE.items():
        out[prefix + key] = _share(float(group(sums).sum()), total)
        if moments is not None:
            out[prefix + key + "_se"] = share_se(sums, moments, group)
    return out


def _loss_section(settings: LossSettings, tally: Tally, positives: int, order: list[str], kind: str) -> dict:
    section = {}
    valid = _count(tally.element_counts.sum())
    moments = _moments(tally)
    for loss in order:
        sums, gradients = tally.loss_sums[loss], tally.gradient_sums[loss]
        total, gradient = float(sums.sum()), float(gradients.sum())
        loss_family = settings.family(loss)
        softmax = loss_family == "softmax"
        section[loss] = {
            "family": loss_family,
            "fits_data": loss_family == fitting_family(kind),
            "covers": {"unit": "rows", "count": _count(tally.normalisers[loss])} if softmax else {"unit": "elements", "count": valid},
            "params": settings.params(loss),
            "sum": total,
            **({"sum_se": _sum_se(moments[loss], loss)} if moments is not None else {}),
            "mean": _ratio(total, tally.normalisers[loss]),
            "mean_divides_by": tally.normaliser_names[loss],
            "normaliser": tally.normalisers[loss],
            "per_positive": _ratio(total, positives),
            **_headline(sums, None if moments is None else moments[loss]),
            "gradient_mean": _ratio(gradient, tally.normalisers[loss]),
            **_headline(gradients, None if moments is None else moments["gradient:" + loss], "gradient_"),
        }
        user = settings.user(loss)
        if user is not None:
            section[loss]["source"] = user.to_report()
    return section


def _focal_ce_pair(loss_ids) -> tuple[str, str] | None:
    for pair in ((FOCAL, BCE), (SOFTMAX_FOCAL, CE)):
        if set(pair) <= set(loss_ids):
            return pair
    return None


def _per_class(data: DataInfo, order: list[str], tally: Tally, counts: np.ndarray, recall: list[float | None]) -> list[dict]:
    pair = _focal_ce_pair(order)
    totals = {loss: float(tally.loss_sums[loss].sum()) for loss in order}
    gradients = {loss: float(tally.gradient_sums[loss].sum()) for loss in order}
    moments = _moments(tally)
    class_errors = _class_share_errors(tally, order)
    rows = []
    for c, name in enumerate(data.class_names):
        class_sums = {loss: float(tally.loss_sums[loss][c].sum()) for loss in order}
        positives = _count(counts[c, 1].sum())
        errors = {kind: {loss: ses[c] for loss, ses in by_loss.items()} for kind, by_loss in class_errors.items()}
        rows.append(
            {
                "index": c,
                "name": name,
                "positives": positives,
                "negatives": _count(counts[c, 0].sum()),
                "ignored": _count(tally.ignored[c]),
                "nonfinite": _count(tally.nonfinite[c]),
                "mean_p": _ratio(tally.sum_p_positive[c], float(counts[c, 1].sum())),
                "mean_p_softmax": _ratio(tally.sum_q_positive[c], tally.softmax_positives[c]),
                "recall": recall[c],
                "sum": class_sums,
                **({"sum_se": {loss: _sum_se(moments[loss][c], loss) for loss in order}} if moments is not None else {}),
                "share": {loss: _share(class_sums[loss], totals[loss]) for loss in order},
                **({"share_se": errors["share_se"]} if errors else {}),
                "gradient_share": {loss: _share(float(tally.gradient_sums[loss][c].sum()), gradients[loss]) for loss in order},
                **({"gradient_share_se": errors["gradient_share_se"]} if errors else {}),
                "focal_ce_ratio": _ratio(class_sums[pair[0]], class_sums[pair[1]]) if pair else None,
            }
        )
    return rows


def _has_softmax(order: list[str], families: dict[str, str] | None = None) -> bool:
    return any(family(loss, families) == "softmax" for loss in order)


def _per_difficulty(settings: LossSettings, order: list[str], tally: Tally, counts: np.ndarray, families: dict[str, str] | None = None) -> list[dict]:
    bins = settings.bins
    bin_counts = counts.sum(axis=(0, 1, 3))
    row_counts = tally.softmax_counts.sum(axis=(0, 1, 3))
    total, total_rows = float(bin_counts.sum()), float(row_counts.sum())
    weights = ghm_bin_weights(bin_counts, max(total, 1.0))
    totals = {loss: float(tally.loss_sums[loss].sum()) for loss in order}
    gradients = {loss: float(tally.gradient_sums[loss].sum()) for loss in order}
    softmax = _has_softmax(order, families)
    return [
        {
            "bin": b,
            "g_low": b / bins,
            "g_high": (b + 1) / bins,
            "elements": _count(bin_counts[b]),
            "element_share": _share(float(bin_counts[b]), total),
            "positives": _count(counts[:, 1, b].sum()),
            "rows": _count(row_counts[b]) if softmax else None,
            "row_share": _share(float(row_counts[b]), total_rows) if softmax else None,
            **_shares(tally, order, totals, gradients, lambda table, b=b: table[:, :, b]),
            "ghm_weight": float(weights[b]),
        }
        for b in range(bins)
    ]


def _shares(tally: Tally, order: list[str], totals: dict[str, float], gradients: dict[str, float], group) -> dict:
    """``share`` and ``gradient_share`` of ``group``'s cells per loss, each followed by its
    standard errors (``share_se``, ``gradient_share_se``) when the tally has second moments."""
    errors = _share_errors(tally, order, group)
    out = {"share": {loss: _share(float(group(tally.loss_sums[loss]).sum()), totals[loss]) for loss in order}}
    if errors:
        out["share_se"] = errors["share_se"]
    out["gradient_share"] = {loss: _share(float(group(tally.gradient_sums[loss]).sum()), gradients[loss]) for loss in order}
    if errors:
        out["gradient_share_se"] = errors["gradient_share_se"]
    return out


def _levels(order: list[str], tally: Tally, counts: np.ndarray, families: dict[str, str] | None = None) -> list[dict]:
    """The four difficulty levels (easy, medium, hard, very hard): counts and each loss's share."""
    edges = (0.0, *LEVEL_EDGES, 1.0)
    softmax = _has_softmax(order, families)
    totals = {loss: float(tally.loss_sums[loss].sum()) for loss in order}
    gradients = {loss: float(tally.gradient_sums[loss].sum()) for loss in order}
    return [
        {
            "level": name,
            "g_low": edges[i],
            "g_high": edges[i + 1],
            "elements": _count(counts[..., i].sum()),
            "positives": _count(counts[:, 1, :, i].sum()),
            "rows": _count(tally.softmax_counts[..., i].sum()) if softmax else None,
            **_shares(tally, order, totals, gradients, lambda table, i=i: table[..., i]),
        }
        for i, name in enumerate(LEVELS)
    ]


def rare_classes(positives: np.ndarray) -> tuple[np.ndarray, float, float, float]:
    """Which classes are rare, from the data's own class counts: ``(rare mask, median, the count a
    rare class is below, the spread largest / smallest)``. A class is rare when its positives are
    below :data:`RARE_FRACTION` (1/4) of the median class's and the spread reaches
    :data:`RARE_SPREAD` (5×); otherwise no class is."""
    ordered = np.sort(positives)  # the median, without np.median (which imports numpy.ma: 10 ms)
    median = float(ordered[(len(ordered) - 1) // 2] + ordered[len(ordered) // 2]) / 2
    spread = float(ordered[-1]) / max(float(ordered[0]), 1.0) if len(ordered) else 1.0
    below = RARE_FRACTION * median
    rare = (positives < below) & (spread >= RARE_SPREAD)
    return rare, median, below, spread


def _quadrants(data: DataInfo, order: list[str], tally: Tally, counts: np.ndarray, rarity: tuple, families: dict[str, str] | None = None) -> dict:
    """Rare vs common classes (``rarity``: :func:`rare_classes` of the positives) × easy (g < 0.5) vs hard."""
    rare, median, below, spread = rarity
    softmax = _has_softmax(order, families)
    totals = {loss: float(tally.loss_sums[loss].sum()) for loss in order}
    gradients = {loss: float(tally.gradient_sums[loss].sum()) for loss in order}
    cells: dict[str, Any] = {}
    for group, classes in (("rare", rare), ("common", ~rare)):
        for difficulty, levels in (("easy", slice(0, HARD_LEVEL)), ("hard", slice(HARD_LEVEL, None))):
            cells[f"{group}_{difficulty}"] = {
                "elements": _count(counts[classes][..., levels].sum()),
                "rows": _count(tally.softmax_counts[classes][..., levels].sum()) if softmax else None,
                **_shares(tally, order, totals, gradients, lambda table, classes=classes, levels=levels: table[classes][..., levels]),
            }
    rare_errors = _share_errors(tally, order, lambda table: table[rare])
    return {
        "median_positives": median,
        "rare_below": below,
        "class_spread": spread,
        "rare_rule": {"fraction_of_median": RARE_FRACTION, "min_spread": RARE_SPREAD},
        "rare_classes": [data.class_names[c] for c in np.nonzero(rare)[0]],
        "common_classes": [data.class_names[c] for c in np.nonzero(~rare)[0]],
        "hard_from_g": HARD_FROM_G,
        "cells": cells,
        **({"rare_share_se": rare_errors["share_se"], "rare_gradient_share_se": rare_errors["gradient_share_se"]} if rare_errors else {}),
    }


def _files(data: DataInfo, per_file: np.ndarray) -> dict[str, int]:
    return {file: _count(n) for file, n in zip(data.files, per_file) if n}


class _Findings:
    """The findings of a report, in the order found. ``explicit``: the losses were asked for (see
    :func:`build_report`), so the softmax-fit findings gate ``--strict`` too."""

    def __init__(self, explicit: bool):
        self.explicit = explicit
        self.items: list[dict] = []

    def add(self, code: str, count: int, detail: str, files: dict[str, int] | None = None, **extra: object) -> None:
        gates = code in STRICT_FINDINGS and (self.explicit or code not in SOFTMAX_FIT_FINDINGS)
        warning = gates or (code not in STRICT_FINDINGS and code not in INFO_FINDINGS)
        finding: dict[str, object] = {
            "code": code,
            "level": "warning" if warning else "info",
            "gates_strict": gates,
            "count": count,
            "message": f"{FINDING_NAMES[code]}: {detail}",
        }
        if files is not None:
            finding["files"] = files
        if code in MISREAD_FINDINGS:
            finding["misread"] = True
        self.items.append({**finding, **extra})


def _findings(
    data: DataInfo, order: list[str], tally: Tally, counts: np.ndarray, explicit: bool, families: dict[str, str] | None = None, skipped: tuple[str, ...] = ()
) -> list[dict]:
    findings = _Findings(explicit)
    _misread_findings(findings, data, tally, counts)
    if data.inputs == "softmax-probs":
        findings.add(
            "sigmoid-losses-skipped",
            len(skipped),
            f"{', '.join(skipped) or 'none asked for'}; the softmax losses, from log p, equal those of the logits; dump the logits for the sigmoid losses",
            skipped=list(skipped),
        )
    _input_findings(findings, data, tally)
    _softmax_findings(findings, data, order, tally, families)
    empty = [data.class_names[c] for c in range(data.num_classes) if counts[c, 1].sum() == 0]
    if empty:
        findings.add("class-without-positives", len(empty), ", ".join(empty[:10]) + (" …" if len(empty) > 10 else ""), classes=empty)
    return findings.items


def _misread_findings(findings: _Findings, data: DataInfo, tally: Tally, counts: np.ndarray) -> None:
    """The input looks misread (these come first): probabilities read as logits, labels counted
    from 1 read as counted from 0."""
    if data.inputs_look_like_probabilities:
        softmax = data.probabilities_kind == "softmax-probs"
        kind = "every row sums to 1: softmax probabilities" if softmax else "rows do not all sum to 1: sigmoid probabilities"
        findings.add(
            "probabilities-as-logits",
            data.num_rows * data.num_classes,
            f"{kind}; pass --inputs {data.probabilities_kind} if they are probabilities; nothing below is concluded from these values",
            files={file: int(np.prod(shape)) for file, shape in zip(data.files, data.logits_shapes)},
            inputs=data.probabilities_kind,
        )
    one_based = _one_based(data, tally, counts)
    if one_based is not None:
        low, high = one_based
        c = data.num_classes
        findings.add(
            "labels-one-based",
            _count(tally.background_rows),
            f"label 0 labels no row and label {c}, read as background, labels {_count(tally.background_rows):,} rows, as a class would "
            f"(labels 1..{c - 1}: {low:,} to {high:,} rows each); pass --label-base 1 (labels 1..{c}) or shift the labels in the dump "
            f"(labels - 1)",
            label_0_rows=0,
            background_label=c,
            background_rows=_count(tally.background_rows),
            class_rows=[low, high],
        )


def _one_based(data: DataInfo, tally: Tally, counts: np.ndarray) -> tuple[int, int] | None:
    """(the fewest, the most rows of the labels 1..C-1) when index labels look counted from 1:
    label 0 labels no row, and the default background label C labels some rows, at most
    :data:`ONE_BASED_CLASS_RATIO` times the largest of those classes and fewer than half the rows
    with a target or background; else None."""
    if data.encoding != "index" or data.label_base or not data.background_default or data.background_index != data.num_classes:
        return None
    positives = counts[:, 1].sum(axis=(1, 2))
    if data.num_classes < 2 or positives[0] or not tally.background_rows:
        return None
    others = positives[1:]
    background = tally.background_rows
    if background > ONE_BASED_CLASS_RATIO * others.max() or 2 * background >= background + positives.sum():
        return None
    return int(others.min()), int(others.max())


def _input_findings(findings: _Findings, data: DataInfo, tally: Tally) -> None:
    """What is wrong with the dumps: several runs, non-finite logits, labels out of range."""
    by_file = tally.file_counts
    if len(data.runs) > 1:
        listed = "; ".join(f"run {run}: {name_files(files)}" for run, files in data.runs.items())
        findings.add(
            "mixed-runs",
            sum(map(len, data.runs.values())),
            f"{listed}; compare one run's folder at a time",
            files={file: 1 for files in data.runs.values() for file in files},
            runs=data.runs,
        )
    nonfinite = _count(tally.nonfinite.sum())
    if nonfinite:
        per_class = {data.class_names[c]: _count(n) for c, n in enumerate(tally.nonfinite) if n}
        findings.add("non-finite", nonfinite, f"{nonfinite:,} elements", _files(data, by_file["nonfinite"]), per_class=per_class)
    if data.out_of_range_labels:
        rows = sum(data.out_of_range_labels.values())
        listed = ", ".join(f"{value} (×{count})" for value, count in list(data.out_of_range_labels.items())[:5])
        findings.add(
            "labels-out-of-range",
            rows,
            f"{rows:,} rows: {listed}; expected [0, {data.num_classes}), background {data.background_index} or ignore "
            f"{data.ignore_index} (set --background-index / --ignore-index)",
            _files(data, by_file["out_of_range_rows"]),
            labels={str(value): count for value, count in data.out_of_range_labels.items()},
        )


def _softmax_findings(findings: _Findings, data: DataInfo, order: list[str], tally: Tally, families: dict[str, str] | None = None) -> None:
    """Rows a softmax loss reads differently from the sigmoid losses: background rows (no target)
    and multi-hot rows."""
    softmax = [loss for loss in order if family(loss, families) == "softmax"]
    sigmoid = [loss for loss in order if family(loss, families) == "sigmoid"]
    if softmax and tally.background_rows:
        seen = f"{', '.join(softmax)} see the {_count(tally.normalisers[softmax[0]]):,} {row_noun(data)} with a target"
        if sigmoid:
            seen += f"; {', '.join(sigmoid)} see every valid element"
        findings.add(
            "softmax-background",
            _count(tally.background_rows),
            f"{_count(tally.background_rows):,} of {_count(tally.rows):,} {row_noun(data)}; {seen}",
            _files(data, tally.file_counts["background_rows"]),
        )
    if softmax and tally.multi_hot_rows:
        findings.add(
            "softmax-multi-hot",
            _count(tally.multi_hot_rows),
            f"{_count(tally.multi_hot_rows):,} rows; {', '.join(softmax)} add a full -log q term for each positive class of such a row",
            _files(data, tally.file_counts["multi_hot_rows"]),
        )


def gating(report: dict) -> list[str]:
    """Codes of the findings that make ``--strict`` exit 1."""
    return [f["code"] for f in report["findings"] if f["gates_strict"]]


def build_report(data: DataInfo, settings: LossSettings, tally: Tally, explicit: bool = False, skipped: tuple[str, ...] = ()) -> dict:
    """The comparison as plain data (the ``compare --format json`` document). ``explicit``: the
    losses were asked for (command line or configuration) rather than the default set; ``skipped``:
    the losses asked for that the input cannot give (sigmoid losses from softmax probabilities).
    ``tally`` may hold more losses than ``settings.losses`` (those of the imbalance advice,
    :func:`lossaudit.compare.report.diagnosis.advice`): only the imbalance section reads them."""
    from lossaudit.compare.report.summary import summarise

    counts = tally.element_counts
    positives = _count(counts[:, 1].sum())
    kind = data_kind(data, tally)
    families = {user.id: user.family for user in settings.user_losses}
    order = order_by_fit(settings.losses, kind, families)
    rule = diagnosis.recall_rule(kind, tally)
    recall, mean_p = diagnosis.class_outcomes(rule, tally, counts)
    rarity = rare_classes(counts[:, 1].sum(axis=(1, 2)))
    rare = rarity[0]
    quadrants = _quadrants(data, order, tally, counts, rarity, families)
    report = {
        "schema_version": SCHEMA_VERSION,
        "lossaudit_version": __version__,
        "summary": [],
        "loss_selection": "explicit" if explicit else "default",
        "input": {**_input_section(data, tally, counts), "recall_rule": rule},
        **({"estimate": _estimate(tally, order)} if tally.sample is not None else {}),
        "losses": _loss_section(settings, tally, positives, order, kind),
        "per_class": _per_class(data, order, tally, counts, recall),
        "per_difficulty": _per_difficulty(settings, order, tally, counts, families),
        "levels": _levels(order, tally, counts, families),
        "quadrants": quadrants,
        "mistakes": diagnosis.mistakes_section(kind, tally, data.class_names, rare, diagnosis.missed(recall, mean_p)),
        "imbalance": _imbalance(data, settings, tally, counts, kind, rule, rare, quadrants),
        "findings": _findings(data, order, tally, counts, explicit, families, skipped),
        "focal_ce_ratio": _focal_ce_total(order, tally),
    }
    report["summary"] = summarise(report)
    return report


def _estimate(tally: Tally, order: list[str]) -> dict:
    """The ``estimate`` section of a weighted dump's report: how many elements were sampled, of how
    many (the population the recorder counted, else the sum of the weights: the Horvitz–Thompson
    estimate), and which quantities are plug-in estimates (:data:`~lossaudit.compare.report.estimates.PLUG_IN`, those shown)."""
    sample = tally.sample
    assert sample is not None  # a weighted dump's tally
    recorded = sample.get("population_elements") is not None and sample.get("population_source", "recorded") == "recorded"
    plug_in = ["ghm_weights", *(["ohem_top_k"] if OHEM in order else []), "rare_classes", *(["mistakes"] if tally.mistakes is not None else [])]
    return {
        "weighted": True,
        "sampled_elements": _count(sample["sampled_elements"]),
        "population_elements": _count(sample["population_elements"] if recorded else sample["estimated_elements"]),
        "population_source": "recorded" if recorded else "sum of weights",
        "estimated_elements": float(sample["estimated_elements"]),
        "sample_rate": sample.get("sample_rate"),
        "plug_in": plug_in,
    }


def _imbalance(
    data: DataInfo, settings: LossSettings, tally: Tally, counts: np.ndarray, kind: str, rule: str, rare: np.ndarray, quadrants: dict
) -> dict | None:
    """The ``imbalance`` section, on data with rare classes (else None): the rare classes with
    their positives, how the model does on them and on the others (``recall_rule``), and the rare
    classes' share of each loss of the fitting family under the losses made for imbalance
    (:func:`lossaudit.compare.report.diagnosis.advice`)."""
    if not rare.any() or kind == "heatmap":
        return None
    positives = counts[:, 1].sum(axis=(1, 2))
    return {
        "rare_classes": {data.class_names[c]: _count(positives[c]) for c in np.nonzero(rare)[0]},
        "median_positives": quadrants["median_positives"],
        "class_spread": quadrants["class_spread"],
        "recall_rule": rule,
        "rare": diagnosis.pooled_outcomes(rule, tally, counts, rare),
        "others": diagnosis.pooled_outcomes(rule, tally, counts, ~rare),
        "alpha_rule": diagnosis.ALPHA_RULES["softmax" if kind == "single-label" else "sigmoid"],
        "losses": diagnosis.advice(kind, settings, tally, rare, positives, quadrants["median_positives"]),
    }


def _focal_ce_total(order: list[str], tally: Tally) -> float | None:
    """Total focal / CE over all classes (focal/bce, else softmax-focal/ce), as the per-class ratio."""
    pair = _focal_ce_pair(order)
    return _ratio(float(tally.loss_sums[pair[0]].sum()), float(tally.loss_sums[pair[1]].sum())) if pair else None
