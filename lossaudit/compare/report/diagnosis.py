"""What the report says about the model beside the losses: each class's recall, the classes the
model misses, where its confidently wrong units come from, and — on imbalanced data — what the
losses made for imbalance would change on this dump. Sections ``mistakes`` and ``imbalance`` and
the per-class ``recall`` of ``compare --format json``; the summary's ``missed-classes``,
``confidently-wrong`` and ``imbalance`` rules read them.

Recall is counted by the family that fits the data: on single-label data the share of a class's
rows whose argmax is the class (when a softmax loss was computed), otherwise the share of its
positives at p > 0.5. The mean target probability goes with it (softmax q or sigmoid p).
"""

from __future__ import annotations

import heapq

import numpy as np

from lossaudit.compare.engine.mistakes import CONFUSED, OTHER, SHIFTED
from lossaudit.compare.report.estimates import share_se
from lossaudit.compare.settings import LossSettings, Tally
from lossaudit.losses.balanced import CB_CE, LOGIT_ADJUSTED_CE, class_balanced_weights_numpy
from lossaudit.losses.cross_entropy import BCE, CE
from lossaudit.losses.focusing import FOCAL, SOFTMAX_FOCAL

MISSED_RECALL = MISSED_PROBABILITY = 0.5
"""A class is missed when the model gets fewer than half of its positives right (recall < 0.5) and
gives them less than even odds on average (mean target probability < 0.5)."""
NOISE_SHARE = 0.5
"""``label_noise``: isolated misses (of classes neither rare nor missed) and false positives make at
least half of the confidently wrong units; otherwise the causes the counts show are named."""
ARGMAX, THRESHOLD = "argmax", "p > 0.5"
ADVICE_LOSSES = {"softmax": (CE, SOFTMAX_FOCAL, LOGIT_ADJUSTED_CE), "sigmoid": (BCE, FOCAL)}
"""The losses computed for the imbalance advice (beside cb-ce and the per-class alphas, which
reweight ce's, softmax-focal's and focal's class sums), by the family that fits the data."""
ALPHA_RULES = {
    "softmax": "alpha_c ∝ 1 / positives_c, mean 1 over the classes",
    "sigmoid": "alpha_c = m / (m + positives_c), m the median class's positives (0.5 at the median, → 1 for rare classes)",
}


def recall_rule(kind: str, tally: Tally) -> str:
    """``argmax`` on single-label data with softmax rows counted, else ``p > 0.5``."""
    counted = tally.mistakes is not None and float(tally.softmax_positives.sum()) > 0
    return ARGMAX if kind == "single-label" and counted else THRESHOLD


def outcome_sums(rule: str, tally: Tally, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(C,)`` each, by ``rule``: the positives got right (argmax at the class, or p > 0.5), the sum
    of the target probability (softmax q or sigmoid p) and the positives counted. ``counts``: the
    ``(C, 2, bins, levels)`` element counts (levels 0 and 1: g < 0.5, p > 0.5 at a positive)."""
    if rule == ARGMAX:
        return tally.mistakes.argmax_correct, tally.sum_q_positive, tally.softmax_positives
    return counts[:, 1, :, :2].sum(axis=(1, 2)), tally.sum_p_positive, counts[:, 1].sum(axis=(1, 2))


def _ratio(part: float, total: float) -> float | None:
    return float(part / total) if total else None


def class_outcomes(rule: str, tally: Tally, counts: np.ndarray) -> tuple[list[float | None], list[float | None]]:
    """Per class, ``(recall, mean target probability)`` by ``rule`` (None without positives)."""
    right, probability, total = outcome_sums(rule, tally, counts)
    return [_ratio(r, t) for r, t in zip(right, total)], [_ratio(s, t) for s, t in zip(probability, total)]


def pooled_outcomes(rule: str, tally: Tally, counts: np.ndarray, classes: np.ndarray) -> dict:
    """Recall and mean target probability over the positives of the ``classes`` (bool mask) together."""
    right, probability, total = (float(values[classes].sum()) for values in outcome_sums(rule, tally, counts))
    return {"positives": int(total), "recall": _ratio(right, total), "mean_p": _ratio(probability, total)}


def is_missed(recall: float | None, mean_p: float | None) -> bool:
    """A class the model misses: recall below :data:`MISSED_RECALL` and mean target probability
    below :data:`MISSED_PROBABILITY` (False without positives)."""
    return recall is not None and mean_p is not None and recall < MISSED_RECALL and mean_p < MISSED_PROBABILITY


def missed(recall: list[float | None], mean_p: list[float | None]) -> np.ndarray:
    """``(C,)`` bool: the classes the model misses (:func:`is_missed`)."""
    return np.array([is_missed(r, p) for r, p in zip(recall, mean_p)], dtype=bool)


def _pairs(counter, names: list[str], top: int = 5) -> list[dict]:
    ranked = heapq.nsmallest(top, counter.items(), key=lambda item: (-item[1], item[0]))  # (sweep asks once per setting: no whole sort)
    return [{"true": names[t], "predicted": names[p], "count": int(n)} for (t, p), n in ranked]


def mistakes_section(kind: str, tally: Tally, names: list[str], rare: np.ndarray, missed_classes: np.ndarray) -> dict | None:
    """The confidently wrong units of the family that fits ``kind``, each with the first cause
    that holds (see :mod:`lossaudit.compare.engine.mistakes`): ``shifted`` (maps: one cell off),
    ``missed_rare`` (the other misses of rare classes, whatever is predicted instead),
    ``missed_class`` (of the other classes the model misses: recall < 0.5), ``confused`` (another
    class predicted: the remaining misses with another class detected, and the non-positives at
    p ≥ 0.9 in a cell whose positive is another class), ``missed`` (isolated misses) and
    ``false_positive`` (sigmoid: the rest); their top confusions, and ``label_noise``: whether the
    isolated misses and false positives make at least :data:`NOISE_SHARE` of them. None from the
    full-tensor oracle."""
    found = tally.mistakes
    if found is None:
        return None
    softmax = kind == "single-label"
    by_class = found.softmax[:, None, :] if softmax else found.sigmoid  # (C, positive?, cause); softmax: positives only
    misses = by_class[:, -1, CONFUSED] + by_class[:, -1, OTHER]  # the positives not shifted
    known = rare | missed_classes
    causes = {
        "shifted": float(by_class[..., SHIFTED].sum()),
        "missed_rare": float(misses[rare].sum()),
        "missed_class": float(misses[~rare & missed_classes].sum()),
        "confused": float(by_class[~known, -1, CONFUSED].sum()) + (0.0 if softmax else float(found.sigmoid[:, 0, CONFUSED].sum())),
        "missed": float(by_class[~known, -1, OTHER].sum()),
        "false_positive": 0.0 if softmax else float(found.sigmoid[:, 0, OTHER].sum()),
    }
    total = sum(causes.values())
    return {
        "unit": "rows" if softmax else "elements",
        "very_hard": int(total),
        "causes": {cause: int(n) for cause, n in causes.items()},
        "confusions": _pairs(found.pairs["softmax" if softmax else "sigmoid"], names),
        "label_noise": bool(total) and causes["missed"] + causes["false_positive"] >= NOISE_SHARE * total,
    }


ClassTotals = tuple[np.ndarray, np.ndarray, "np.ndarray | None", "np.ndarray | None"]
"""A loss's ``(C,)`` class sums of the loss and of its gradient, then (a weighted dump) their
``(C,)`` second moments Σ w (w - 1) v², else None and None."""


def _class_totals(tally: Tally, loss: str) -> ClassTotals | None:
    if loss not in tally.loss_sums:
        return None
    moments = tally.second_moments
    return (
        tally.loss_sums[loss].sum(axis=(1, 2, 3)),
        tally.gradient_sums[loss].sum(axis=(1, 2, 3)),
        None if moments is None else moments[loss].sum(axis=(1, 2, 3)),
        None if moments is None else moments["gradient:" + loss].sum(axis=(1, 2, 3)),
    )


def _scaled(totals: ClassTotals, factor: np.ndarray, divisor: np.ndarray | float = 1.0) -> ClassTotals:
    """Class totals with each class's values times ``factor / divisor`` (second moments times its square)."""
    sums, gradients, moments, gradient_moments = totals
    square = (factor / divisor) ** 2
    return (
        sums * factor / divisor,
        gradients * factor / divisor,
        None if moments is None else moments * square,
        None if gradient_moments is None else gradient_moments * square,
    )


def _shares(totals: ClassTotals, rare: np.ndarray, weighted: bool) -> dict:
    """The rare classes' share of the loss and of its gradient; from a weighted dump (``weighted``)
    with their standard errors, None where the totals carry no second moments."""
    sums, gradients, moments, gradient_moments = totals
    total, gradient = float(sums.sum()), float(gradients.sum())
    out = {
        "rare_share": float(sums[rare].sum() / total) if total else None,
        "rare_gradient_share": float(gradients[rare].sum() / gradient) if gradient else None,
    }
    if weighted:
        out.update(
            rare_share_se=None if moments is None else share_se(sums, moments, lambda table: table[rare]),
            rare_gradient_share_se=None if gradient_moments is None else share_se(gradients, gradient_moments, lambda table: table[rare]),
        )
    return out


def advice(kind: str, settings: LossSettings, tally: Tally, rare: np.ndarray, positives: np.ndarray, median: float) -> list[dict]:
    """On imbalanced data (some ``rare`` class), the rare classes' share of the loss and of its
    gradient under each loss of the family that fits ``kind``, those made for imbalance included:
    for single-label data ce, cb-ce (ce's class sums weighted by the class-balanced weights of
    ``settings.cb_beta``), logit-adjusted-ce, softmax-focal and softmax-focal with a per-class
    alpha; for the sigmoid family bce, focal and focal with a per-class alpha (rules:
    :data:`ALPHA_RULES`; ``median``: the median class's positives). A loss the pass did not
    compute is left out. From a weighted dump each share has its standard error (``rare_share_se``,
    ``rare_gradient_share_se``), given the classes' weights; None for focal with a per-class alpha
    (the tally keeps no second moments of focal's parts)."""
    family = "softmax" if kind == "single-label" else "sigmoid"
    n = np.maximum(positives.astype(np.float64), 1.0)
    out = []

    def add(loss: str, label: str, how: str, totals: ClassTotals | None) -> None:
        if totals is not None:
            out.append({"loss": loss, "label": label, "how": how, **_shares(totals, rare, tally.second_moments is not None)})

    if family == "softmax":
        ce = _class_totals(tally, CE)
        add(CE, CE, "computed", ce)
        if ce is not None:
            weights = class_balanced_weights_numpy(n, settings.cb_beta)
            add(CB_CE, f"{CB_CE} (beta {settings.cb_beta:g})", "ce's class sums × class-balanced weights", _scaled(ce, weights))
        add(LOGIT_ADJUSTED_CE, f"{LOGIT_ADJUSTED_CE} (tau {settings.la_tau:g})", "computed", _class_totals(tally, LOGIT_ADJUSTED_CE))
        focal = _class_totals(tally, SOFTMAX_FOCAL)
        add(SOFTMAX_FOCAL, f"{SOFTMAX_FOCAL} (gamma {settings.gamma:g})", "computed", focal)
        given = np.asarray(settings.alpha_per_class, dtype=np.float64) if settings.alpha_per_class is not None else np.ones(len(n))
        if focal is not None and (given > 0).all():
            alpha = (1 / n) / np.mean(1 / n)
            add(SOFTMAX_FOCAL, f"{SOFTMAX_FOCAL} with alpha per class", "softmax-focal's class sums × alpha_c", _scaled(focal, alpha, given))
        return out
    add(BCE, BCE, "computed", _class_totals(tally, BCE))
    add(FOCAL, f"{FOCAL} (gamma {settings.gamma:g})", "computed", _class_totals(tally, FOCAL))
    if tally.focal_parts is not None:
        off, on, gradient_off, gradient_on = tally.focal_parts
        alpha = median / (median + n)
        add(
            FOCAL,
            f"{FOCAL} with alpha per class",
            "focal's class sums, alpha_c at the positives and 1 - alpha_c elsewhere",
            ((1 - alpha) * off + alpha * on, (1 - alpha) * gradient_off + alpha * gradient_on, None, None),
        )
    return out
