"""Turn a :class:`~lossaudit.compare.engine.Tally` into the comparison report: plain data with the
stable keys of ``compare --format json``, which the text and markdown renderers read.

Shares are fractions of a loss's total (``None`` where the total is 0). Unrounded floats.
"""

from __future__ import annotations

import numpy as np

from lossaudit import __version__, losses
from lossaudit.compare.engine import LEVEL_EDGES, SOFTMAX_LOSSES, LossSettings, Tally
from lossaudit.dataset import DataInfo

SCHEMA_VERSION = 1
EASY, HARD_LEVEL, VERY_HARD = 0, 2, 3
"""Indices into ``LEVELS``: easy g < 0.1; hard (quadrants) g ≥ 0.5; very hard g ≥ 0.9."""
HARD_FROM_G = LEVEL_EDGES[HARD_LEVEL - 1]

FINDING_NAMES = {
    "probabilities-as-logits": "values all lie in [0, 1]: these look like probabilities saved as logits",
    "non-finite": "NaN or infinite logits, excluded from every loss",
    "labels-out-of-range": "labels that are no class, background or ignore label, excluded from every loss",
    "softmax-background": "rows without a positive class while a softmax loss is requested",
    "class-without-positives": "classes with no positive element",
}


def _share(part: float, total: float) -> float | None:
    return float(part / total) if total else None


def _ratio(numerator: float, denominator: float) -> float | None:
    return float(numerator / denominator) if denominator else None


def _input_section(data: DataInfo, tally: Tally, counts: np.ndarray) -> dict:
    positives = int(counts[:, 1].sum())
    valid = int(counts.sum())
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
        "positive_rule": "target == 1" if data.encoding == "heatmap" else "target >= 0.5",
        "valid_elements": valid,
        "positives": positives,
        "negatives": negatives,
        "ignored_elements": int(tally.ignored.sum()),
        "nonfinite_elements": int(tally.nonfinite.sum()),
        "background_rows": tally.background_rows,
        "negatives_per_positive": _ratio(negatives, positives),
    }


def _loss_section(settings: LossSettings, tally: Tally, positives: int) -> dict:
    section = {}
    for loss in settings.losses:
        sums = tally.loss_sums[loss]
        total = float(sums.sum())
        section[loss] = {
            "params": settings.params(loss),
            "sum": total,
            "mean": _ratio(total, tally.normalisers[loss]),
            "mean_divides_by": tally.normaliser_names[loss],
            "normaliser": tally.normalisers[loss],
            "per_positive": _ratio(total, positives),
            "positive_share": _share(float(sums[:, 1].sum()), total),
            "easy_negative_share": _share(float(sums[:, 0, :, EASY].sum()), total),
            "very_hard_share": _share(float(sums[..., VERY_HARD].sum()), total),
        }
    return section


def _focal_ce_pair(loss_ids: tuple[str, ...]) -> tuple[str, str] | None:
    for pair in (("focal", "bce"), ("softmax-focal", "ce")):
        if set(pair) <= set(loss_ids):
            return pair
    return None


def _per_class(data: DataInfo, settings: LossSettings, tally: Tally, counts: np.ndarray) -> list[dict]:
    pair = _focal_ce_pair(settings.losses)
    totals = {loss: float(tally.loss_sums[loss].sum()) for loss in settings.losses}
    rows = []
    for c, name in enumerate(data.class_names):
        class_sums = {loss: float(tally.loss_sums[loss][c].sum()) for loss in settings.losses}
        positives = int(counts[c, 1].sum())
        rows.append(
            {
                "index": c,
                "name": name,
                "positives": positives,
                "negatives": int(counts[c, 0].sum()),
                "ignored": int(tally.ignored[c]),
                "nonfinite": int(tally.nonfinite[c]),
                "mean_p": _ratio(tally.sum_p_positive[c], positives),
                "mean_p_softmax": _ratio(tally.sum_q_positive[c], tally.softmax_positives[c]),
                "sum": class_sums,
                "share": {loss: _share(class_sums[loss], totals[loss]) for loss in settings.losses},
                "focal_ce_ratio": _ratio(class_sums[pair[0]], class_sums[pair[1]]) if pair else None,
            }
        )
    return rows


def _per_difficulty(settings: LossSettings, tally: Tally, counts: np.ndarray) -> list[dict]:
    bins = settings.bins
    bin_counts = counts.sum(axis=(0, 1, 3))
    total = float(bin_counts.sum())
    weights = losses.ghm_bin_weights(_as_tensor(bin_counts), max(total, 1.0)).numpy()
    totals = {loss: float(tally.loss_sums[loss].sum()) for loss in settings.losses}
    return [
        {
            "bin": b,
            "g_low": b / bins,
            "g_high": (b + 1) / bins,
            "elements": int(bin_counts[b]),
            "element_share": _share(float(bin_counts[b]), total),
            "positives": int(counts[:, 1, b].sum()),
            "share": {loss: _share(float(tally.loss_sums[loss][:, :, b].sum()), totals[loss]) for loss in settings.losses},
            "ghm_weight": float(weights[b]),
        }
        for b in range(bins)
    ]


def _as_tensor(array: np.ndarray):
    import torch

    return torch.from_numpy(np.ascontiguousarray(array))


def _quadrants(data: DataInfo, settings: LossSettings, tally: Tally, counts: np.ndarray) -> dict:
    """Rare vs common classes (positives below the median class count) × easy (g < 0.5) vs hard."""
    positives = counts[:, 1].sum(axis=(1, 2))
    median = float(np.median(positives))
    rare = positives < median
    cells = {}
    for rarity, classes in (("rare", rare), ("common", ~rare)):
        for difficulty, levels in (("easy", slice(0, HARD_LEVEL)), ("hard", slice(HARD_LEVEL, None))):
            cell = {}
            for loss in settings.losses:
                sums = tally.loss_sums[loss]
                cell[loss] = _share(float(sums[classes][..., levels].sum()), float(sums.sum()))
            cells[f"{rarity}_{difficulty}"] = {
                "elements": int(counts[classes][..., levels].sum()),
                "share": cell,
            }
    return {
        "median_positives": median,
        "rare_classes": [data.class_names[c] for c in np.nonzero(rare)[0]],
        "common_classes": [data.class_names[c] for c in np.nonzero(~rare)[0]],
        "hard_from_g": HARD_FROM_G,
        "cells": cells,
    }


def _findings(data: DataInfo, settings: LossSettings, tally: Tally, counts: np.ndarray) -> list[dict]:
    findings = []

    def add(code: str, count: int, detail: str, **extra: object) -> None:
        findings.append({"code": code, "level": "warning", "count": count, "message": f"{FINDING_NAMES[code]}: {detail}", **extra})

    if data.inputs_look_like_probabilities:
        add("probabilities-as-logits", data.num_rows * data.num_classes, "pass --inputs probs if they are probabilities")
    nonfinite = int(tally.nonfinite.sum())
    if nonfinite:
        per_class = {data.class_names[c]: int(n) for c, n in enumerate(tally.nonfinite) if n}
        add("non-finite", nonfinite, f"{nonfinite} elements", per_class=per_class)
    if data.out_of_range_labels:
        rows = sum(data.out_of_range_labels.values())
        listed = ", ".join(f"{value} (×{count})" for value, count in list(data.out_of_range_labels.items())[:5])
        add(
            "labels-out-of-range",
            rows,
            f"{rows} rows: {listed}; expected [0, {data.num_classes}), background {data.background_index} or ignore "
            f"{data.ignore_index} (set --background-index / --ignore-index)",
            labels={str(value): count for value, count in data.out_of_range_labels.items()},
        )
    requested_softmax = [loss for loss in settings.losses if loss in SOFTMAX_LOSSES]
    if requested_softmax and tally.background_rows:
        add(
            "softmax-background",
            tally.background_rows,
            f"{tally.background_rows} of {tally.rows} rows contribute nothing to {', '.join(requested_softmax)}",
        )
    empty = [data.class_names[c] for c in range(data.num_classes) if counts[c, 1].sum() == 0]
    if empty:
        add("class-without-positives", len(empty), ", ".join(empty[:10]) + (" …" if len(empty) > 10 else ""), classes=empty)
    return findings


STRICT_FINDINGS = frozenset({"non-finite", "labels-out-of-range", "softmax-background", "probabilities-as-logits"})
"""Findings that make ``compare --strict`` exit 1; a class without positives is reported only."""


def build_report(data: DataInfo, settings: LossSettings, tally: Tally) -> dict:
    """The comparison as plain data (the ``compare --format json`` document)."""
    counts = tally.element_counts
    positives = int(counts[:, 1].sum())
    return {
        "schema_version": SCHEMA_VERSION,
        "lossaudit_version": __version__,
        "input": _input_section(data, tally, counts),
        "losses": _loss_section(settings, tally, positives),
        "per_class": _per_class(data, settings, tally, counts),
        "per_difficulty": _per_difficulty(settings, tally, counts),
        "quadrants": _quadrants(data, settings, tally, counts),
        "findings": _findings(data, settings, tally, counts),
        "focal_ce_ratio": _focal_ce_total(settings, tally),
    }


def _focal_ce_total(settings: LossSettings, tally: Tally) -> float | None:
    """Total focal / CE over all classes (focal/bce, else softmax-focal/ce), as the per-class ratio."""
    pair = _focal_ce_pair(settings.losses)
    return _ratio(float(tally.loss_sums[pair[0]].sum()), float(tally.loss_sums[pair[1]].sum())) if pair else None
