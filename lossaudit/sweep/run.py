"""``lossaudit sweep``: a focal loss under every setting of a grid, from one pass: the sigmoid focal
loss (``focal``) under every (gamma, alpha), or the softmax focal loss (``softmax-focal``) under every
gamma (and ``--alpha-per-class`` vector); by default the one that fits the data
(:func:`~lossaudit.compare.report.build.fitting_family`: softmax-focal on single-label data).

Every chunk of the data is read once (:func:`~lossaudit.compare.engine.stream.stream_pass`) and given to
one :class:`~lossaudit.compare.engine.stream.StreamTally` per gamma (the tallies share one dense pass,
with every gamma's powers, and the work on each chunk that does not depend on gamma:
:class:`~lossaudit.compare.engine.shared.SharedPass`), which keeps focal's sums split into
``Σ (1 - y) h`` and ``Σ y h`` (``h`` the loss before ``alpha_t``). ``alpha_t = alpha y + (1 -
alpha)(1 - y)`` is linear in the target, so each alpha (a scalar, or a per-class vector) is a
weighting of those sums at the end: a setting's tally is exactly the one ``compare --alpha A --gamma G
--losses focal`` computes. softmax-focal is tallied per gamma, and per gamma and ``--alpha-per-class``
vector, as ``compare --losses softmax-focal --gamma G [--alpha-per-class V]`` tallies it. Each
setting's report (:func:`~lossaudit.compare.report.build.build_report`) gives the shares with
``compare``'s definitions: positives, easy negatives (g < 0.1), very hard elements (g ≥ 0.9; rows
with q_target ≤ 0.1 for softmax-focal), rare classes (:func:`~lossaudit.compare.report.build.rare_classes`:
the ``rare_*`` quadrants), per class, and the same for the gradient magnitude ``|∂L/∂x|``.

Per gamma, the same pass also keeps the cumulative distribution of the element losses over the
positives and over the negatives (the focal loss paper's Figure 4; softmax-focal: over the rows'
target terms): sorted from the smallest, the share of the total loss the lowest fraction ``f`` of
them holds (:mod:`lossaudit.sweep.histogram`: the elements tallied one by one in loss bins, the
easy negatives counted once by logit in the dense pass, within a stated bound). The summary (:mod:`lossaudit.sweep.summary`) says how the
shares move across the grid.

A weighted dump (a Poisson sample, issue 24) gives estimates: the tallies are Horvitz–Thompson sums,
each share comes with its standard error (``compare``'s, :mod:`lossaudit.compare.report.estimates`),
and the histogram counts each element by its weight, so its cumulative shares are plug-in estimates
(the document's ``estimate`` section says so).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any, cast

import numpy as np

from lossaudit._version import __version__
from lossaudit.compare.engine import elements
from lossaudit.compare.engine.shared import SharedPass
from lossaudit.compare.engine.stream import StreamTally, dense_block_rows, stream_pass
from lossaudit.compare.report.build import HEADLINE, build_report, data_kind, fitting_family
from lossaudit.compare.settings import LossSettings
from lossaudit.errors import InputError
from lossaudit.io.dataset import DataPlan
from lossaudit.io.dataset.rows import SCAN_ROWS
from lossaudit.losses.focusing import FOCAL, SOFTMAX_FOCAL
from lossaudit.losses.registry import LOSSES, PARAMS
from lossaudit.losses.spec import PerClassParam
from lossaudit.render.formatting import rare_rule
from lossaudit.sweep.histogram import FRACTIONS, LossHistogram, RowHistogram
from lossaudit.sweep.summary import summarise

SCHEMA_VERSION = 4
"""Of the ``sweep --format json`` document. 2: rare classes by ``compare``'s rule
(:func:`~lossaudit.compare.report.build.rare_classes`), stated in ``rare_rule`` (``rare_share`` 0 without a rare class).
3: ``summary`` (sentences ``{rule, text, numbers}``, as ``compare``'s); ``loss`` may be ``softmax-focal``
(``loss_choice`` says why: ``--loss``, or the data kind); ``alpha_per_class`` (the vectors swept);
``counts`` (what the shares are of); per setting ``label`` and ``alpha_per_class`` (``alpha`` null
for a vector, and for softmax-focal); softmax-focal's ``cumulative`` items hold ``rows`` instead of
``positives`` and ``negatives``.
4: weighted dumps (issue 24): the section ``estimate`` (``compare``'s, with ``cumulative_shares``
among its ``plug_in``); per setting ``sum_se`` and ``<share>_se`` beside each share (``rare_share_se``,
``gradient_rare_share_se`` included; per class ``share_se``, ``gradient_share_se``); the cumulative
histograms count each element (term) by its weight. An unweighted dump's document has none of these."""

TOP_CLASSES = 3


def parse_values(text: str, option: str, check: Callable[[float], bool], expected: str) -> tuple[float, ...]:
    """``"0,0.5,2"`` -> ``(0.0, 0.5, 2.0)``, in the given order, repeats dropped.

    Raises:
        InputError: an empty list, a value that is no number, or one ``check`` refuses.
    """
    values = []
    for item in (part.strip() for part in text.split(",") if part.strip()):
        try:
            value = float(item)
        except ValueError:
            raise InputError(f"{option} {text}: {item!r} is not a number; expected a comma list of {expected}") from None
        if not check(value):
            raise InputError(f"{option} {text}: {item} is out of range; expected a comma list of {expected}")
        values.append(value)
    if not values:
        raise InputError(f"{option}: empty; expected a comma list of {expected}")
    return tuple(dict.fromkeys(values))


def setting_label(loss: str, gamma: float, alpha: float | None, vector: int | None) -> str:
    """``γ 2, α 0.25``, ``γ 2, α off`` (-1), ``γ 2, α #1`` (the first ``--alpha-per-class``),
    ``γ 2`` (softmax-focal without alpha)."""
    if vector is not None:
        return f"γ {gamma:g}, α #{vector + 1}"
    if loss == SOFTMAX_FOCAL:
        return f"γ {gamma:g}"
    return f"γ {gamma:g}, α {'off' if alpha == -1 else format(alpha, 'g')}"


def _setting(report: dict, loss: str, gamma: float, alpha: float | None, vectors: tuple[tuple[float, ...], ...], vector: int | None) -> dict:
    """One setting's row: the loss's shares (and gradient shares) from its compare report."""
    numbers, cells = report["losses"][loss], report["quadrants"]["cells"]

    def rare(key: str) -> float | None:
        shares = [cells[name][key][loss] for name in ("rare_easy", "rare_hard")]
        return None if None in shares else shares[0] + shares[1]

    def errors(row: dict) -> dict:
        """A per-class or per-difficulty row's standard errors for ``loss`` (a weighted dump), else nothing."""
        return {key: row[key][loss] for key in ("share_se", "gradient_share_se") if key in row}

    per_class = [{"name": c["name"], "share": c["share"][loss], "gradient_share": c["gradient_share"][loss], **errors(c)} for c in report["per_class"]]
    ranked = sorted(per_class, key=lambda c: c["share"] or 0.0, reverse=True)
    quadrants = report["quadrants"]
    weighted = {
        f"{key}_se": numbers[f"{key}_se"] for key in ("sum", *(prefix + share for prefix in ("", "gradient_") for share in HEADLINE)) if f"{key}_se" in numbers
    }
    if "rare_share_se" in quadrants:
        weighted.update(rare_share_se=quadrants["rare_share_se"][loss], gradient_rare_share_se=quadrants["rare_gradient_share_se"][loss])
    return {
        "gamma": gamma,
        "alpha": alpha,
        "alpha_per_class": None if vector is None else list(vectors[vector]),
        "label": setting_label(loss, gamma, alpha, vector),
        "sum": numbers["sum"],
        "mean": numbers["mean"],
        "positive_share": numbers["positive_share"],
        "easy_negative_share": numbers["easy_negative_share"],
        "very_hard_share": numbers["very_hard_share"],
        "rare_share": rare("share"),
        "gradient_mean": numbers["gradient_mean"],
        "gradient_positive_share": numbers["gradient_positive_share"],
        "gradient_easy_negative_share": numbers["gradient_easy_negative_share"],
        "gradient_very_hard_share": numbers["gradient_very_hard_share"],
        "gradient_rare_share": rare("gradient_share"),
        "top_classes": [c["name"] for c in ranked[:TOP_CLASSES] if c["share"]],
        "per_class": per_class,
        "per_difficulty": [
            {"g_low": d["g_low"], "g_high": d["g_high"], "share": d["share"][loss], "gradient_share": d["gradient_share"][loss], **errors(d)}
            for d in report["per_difficulty"]
        ],
        **weighted,
    }


LOSS_CHOICES = ("auto", FOCAL, SOFTMAX_FOCAL)
"""``sweep --loss``: auto sweeps the focal loss of the family that fits the data
(:func:`~lossaudit.compare.report.build.fitting_family`): softmax-focal on single-label data, the
sigmoid focal loss on detection-style data and heatmaps."""


def _fits_by_targets(data: DataPlan) -> str:
    """The focal loss that fits the data as its targets alone tell (read once more, not the
    logits): focal when some row is background (an index label equal to the background label, or
    per-class targets all 0) or multi-hot, else softmax-focal. The pass confirms it
    (:func:`~lossaudit.compare.report.build.data_kind`, which counts valid rows only)."""
    info = data.info
    if info.encoding == "heatmap" or info.multi_label:
        return FOCAL
    for source in data.sources:
        for values in source.targets.scan(source.rows, SCAN_ROWS):
            values = np.asarray(values)
            if info.encoding == "index":
                if (values.astype(np.int64) == info.background_index).any():
                    return FOCAL
            elif values.size and not values.reshape(len(values), -1).any(axis=1).all():
                return FOCAL
    return SOFTMAX_FOCAL


def _candidates(data: DataPlan, loss: str) -> str:
    """The loss the pass tallies: the one asked for; with auto, softmax-focal for softmax
    probabilities (the only one they give), else the one the targets say fits (:func:`_fits_by_targets`)."""
    info = data.info
    if loss == FOCAL and info.inputs == "softmax-probs":
        raise InputError(
            "--inputs softmax-probs: --loss focal is a sigmoid loss, which softmax probabilities cannot give "
            "(the logits are known only up to a per-row constant); sweep softmax-focal (--loss softmax-focal) or dump the logits"
        )
    if loss != "auto":
        return loss
    if info.inputs == "softmax-probs":
        return SOFTMAX_FOCAL
    return _fits_by_targets(data)


def _tally(
    data: DataPlan,
    loss: str,
    gammas: tuple[float, ...],
    vectors: tuple[tuple[float, ...], ...],
    bins: int,
    chunk_rows: int | None,
    workers: int | None,
    progress: Callable[[int], None] | None,
) -> tuple[dict, dict, LossHistogram]:
    """One pass: ``(settings by key, finished tallies by key, histogram)``. Focal: one tally per
    gamma (its alphas are weightings of the sums at the end). softmax-focal: one per gamma (no
    alpha) and one per gamma and ``--alpha-per-class`` vector (key ``(gamma, v)``)."""
    info = data.info
    settings: dict[float | tuple[float, int], LossSettings] = {gamma: LossSettings(losses=(loss,), gamma=gamma, bins=bins) for gamma in gammas}
    if loss == SOFTMAX_FOCAL:
        settings.update(
            {(gamma, v): LossSettings(losses=(loss,), gamma=gamma, bins=bins, alpha_per_class=vectors[v]) for gamma in gammas for v in range(len(vectors))}
        )

    def make(rows: int) -> list:
        """One worker's tallies, which share a dense pass and the work on each chunk, and its histogram."""
        histogram = LossHistogram(gammas) if loss == FOCAL else RowHistogram(gammas)
        shared = SharedPass(rows, info.num_classes, dense_block_rows(info.num_classes), histogram.by_logit)
        tallies = [StreamTally(chosen, info.num_classes, len(info.files), rows, shared=shared) for chosen in settings.values()]
        histogram.tally = tallies[0]
        if isinstance(histogram, RowHistogram):
            histogram.shared = shared
        return [*tallies, histogram]

    *tallies, kept = stream_pass(data, make, chunk_rows, workers, progress)
    for accumulator in tallies:
        accumulator.finish(data)
    return settings, dict(zip(settings, tallies)), kept


DATA_WORDS = {
    "detection": "detection-style data (some row is background or multi-hot)",
    "single-label": "single-label data (no row is background or multi-hot)",
}


def _choice(asked: str, chosen: str, kind: str, inputs: str, alpha_asked: bool) -> dict:
    """The document's ``loss_choice``: what was asked, what was swept and why."""
    fits = fitting_family(kind) == LOSSES[chosen].family
    data = f"{DATA_WORDS.get(kind, kind + ' data')}, which the {fitting_family(kind)} losses fit"
    if asked != "auto":
        why = f"--loss {asked}" + ("" if fits else f", a {LOSSES[chosen].family} loss, on {data}")
    elif chosen == SOFTMAX_FOCAL and inputs == "softmax-probs":
        why = "softmax probabilities give only the softmax losses"
    else:
        other = FOCAL if chosen == SOFTMAX_FOCAL else SOFTMAX_FOCAL
        why = f"{data}; --loss {other} sweeps the {'sigmoid' if other == FOCAL else 'softmax'} focal loss"
    ignored = ["--alpha"] if alpha_asked and chosen == SOFTMAX_FOCAL else []
    return {"asked": asked, "chosen": chosen, "data_kind": kind, "fits_data": fits, "why": why, "ignored": ignored}


def _counts(report: dict, loss: str) -> dict:
    """What the summary's shares are shares of, the same under every setting: the unit the loss
    sees (elements, or rows with a target), how many, and how many of them are very hard, easy
    negatives (sigmoid) and of the rare classes."""
    covers = report["losses"][loss]["covers"]
    unit = covers["unit"]
    levels, cells = report["levels"], report["quadrants"]["cells"]
    rare = set(report["quadrants"]["rare_classes"])
    sigmoid = unit == "elements"
    return {
        "unit": unit,
        "units": covers["count"],
        "positives": report["input"]["positives"],
        "very_hard": int(levels[-1][unit] or 0),
        "easy_negatives": int(levels[0]["elements"] - levels[0]["positives"]) if sigmoid else None,
        "rare_positives": int(sum(c["positives"] for c in report["per_class"] if c["name"] in rare)),
        "rare_units": int(sum(cells[name][unit] or 0 for name in ("rare_easy", "rare_hard"))),
    }


def sweep(
    data: DataPlan,
    gammas: tuple[float, ...],
    alphas: tuple[float, ...],
    bins: int = 10,
    chunk_rows: int | None = None,
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
    loss: str = "auto",
    alpha_per_class: tuple[tuple[float, ...], ...] = (),
    alpha_asked: bool = False,
) -> dict:
    """The loss's report under every setting of the planned data, from one pass over it: the
    ``sweep --format json`` document (see the module docstring). ``loss``: focal, softmax-focal
    or auto (the one that fits the data, :data:`LOSS_CHOICES`): the targets are read first to tell
    which (:func:`_fits_by_targets`), and in the rare case the pass finds otherwise (every
    background row masked or ignored), a second pass tallies the other. Settings: focal, every gamma ×
    (every alpha, then every ``alpha_per_class`` vector); softmax-focal, every gamma × (no alpha,
    then every vector; a scalar alpha only rescales it). ``alpha_asked``: ``--alpha`` was given
    (with softmax-focal it is ignored, and ``loss_choice`` says so)."""
    info = data.info
    if loss not in LOSS_CHOICES:
        raise InputError(f"--loss {loss}: expected one of {', '.join(LOSS_CHOICES)}")
    for vector in alpha_per_class:
        cast(PerClassParam, PARAMS["alpha_per_class"]).check_classes(vector, info.num_classes)
    vectors = tuple(alpha_per_class)
    chosen = _candidates(data, loss)
    settings, tallies, histogram = _tally(data, chosen, gammas, vectors, bins, chunk_rows, workers, progress)
    kind = data_kind(info, tallies[gammas[0]].result(data))
    fits = SOFTMAX_FOCAL if fitting_family(kind) == "softmax" else FOCAL
    if loss == "auto" and info.inputs != "softmax-probs" and fits != chosen:  # the targets said otherwise (rows all masked…)
        chosen = fits
        settings, tallies, histogram = _tally(data, chosen, gammas, vectors, bins, chunk_rows, workers, progress)
    rows, first = [], None
    for gamma in gammas:
        if chosen == FOCAL:
            grid: list[tuple[float | None, int | None, LossSettings, elements.SigmoidParams]] = [
                (alpha, None, replace(settings[gamma], alpha=alpha), elements.SigmoidParams(alpha=alpha, gamma=gamma)) for alpha in alphas
            ]
            grid += [
                (
                    None,
                    v,
                    replace(settings[gamma], alpha_per_class=vectors[v]),
                    elements.SigmoidParams(alpha=np.array(vectors[v], dtype=np.float64), gamma=gamma),
                )
                for v in range(len(vectors))
            ]
            tallied: list[tuple[float | None, int | None, LossSettings, Any]] = [
                (alpha, v, setting, tallies[gamma].result(data, params)) for alpha, v, setting, params in grid
            ]
        else:
            tallied = [(None, v, settings[key], tallies[key].result(data)) for v, key in [(None, gamma), *((v, (gamma, v)) for v in range(len(vectors)))]]
        for alpha, v, setting, tally in tallied:
            report = build_report(info, setting, tally)
            first = first or report
            rows.append(_setting(report, chosen, gamma, alpha, vectors, v))
    if chosen == FOCAL:
        cumulative = [
            {"gamma": gamma, "fractions": list(FRACTIONS), "positives": histogram.cumulative(i, True), "negatives": histogram.cumulative(i, False)}
            for i, gamma in enumerate(gammas)
        ]
    else:
        cumulative = [{"gamma": gamma, "fractions": list(FRACTIONS), "rows": histogram.cumulative(i, True)} for i, gamma in enumerate(gammas)]
    assert first is not None  # one report per gamma at least
    document = {
        "schema_version": SCHEMA_VERSION,
        "lossaudit_version": __version__,
        "summary": [],
        "loss": chosen,
        "loss_choice": _choice(loss, chosen, kind, info.inputs, alpha_asked),
        "alpha_per_class": [list(vector) for vector in vectors],
        "input": first["input"],
        **({"estimate": {**first["estimate"], "plug_in": [*first["estimate"]["plug_in"], "cumulative_shares"]}} if "estimate" in first else {}),
        "rare_classes": first["quadrants"]["rare_classes"],
        "rare_rule": rare_rule(first["quadrants"]),
        "counts": _counts(first, chosen),
        "settings": rows,
        "cumulative": cumulative,
        "findings": first["findings"],
    }
    document["summary"] = summarise(document, first)
    return document


def check_alpha(value: float) -> bool:
    return 0 <= value <= 1 or value == -1


def check_gamma(value: float) -> bool:
    return value >= 0


DEFAULT_ALPHAS = "0.25,0.5,0.75,-1"
"""``--alpha``'s default (focal; softmax-focal takes no scalar alpha)."""


def run(
    paths: list,
    load_options,
    gamma_text: str,
    alpha_text: str | None = None,
    bins: int = 10,
    loss: str = "auto",
    alpha_per_class: list | tuple = (),
    arrays: dict | None = None,
) -> dict:
    """Parse the lists, read the dumps (or take ``arrays``: ``{"logits", "targets"[, "mask",
    "weights"]}`` numpy arrays) and sweep them (the ``lossaudit sweep`` command). ``alpha_text``
    None: the default alphas (:data:`DEFAULT_ALPHAS`); ``alpha_per_class``: each
    ``--alpha-per-class`` (a comma list or a file, as ``compare`` takes it)."""
    from lossaudit.io.dataset import plan
    from lossaudit.io.readers import expand_paths, read_batches
    from lossaudit.render.progress import reading_status, tally_progress

    gammas = parse_values(gamma_text, "--gamma", check_gamma, "values ≥ 0")
    alphas = parse_values(DEFAULT_ALPHAS if alpha_text is None else alpha_text, "--alpha", check_alpha, "values in [0, 1], or -1 (no weighting)")
    if loss not in LOSS_CHOICES:
        raise InputError(f"--loss {loss}: expected one of {', '.join(LOSS_CHOICES)}")
    if loss == SOFTMAX_FOCAL and alpha_text is not None:
        raise InputError(f"--alpha {alpha_text}: a scalar alpha only rescales softmax-focal (every row alike); weight its classes with --alpha-per-class")
    vectors = tuple(dict.fromkeys(cast(PerClassParam, PARAMS["alpha_per_class"]).parse(text) for text in alpha_per_class))
    if bins < 1:
        raise InputError(f"--bins {bins}: expected at least 1")
    if bool(paths) == bool(arrays):
        raise InputError("nothing to sweep: pass prediction dumps" if not paths else "pass prediction dumps or arrays (logits=, targets=), not both")
    if arrays:
        from lossaudit.io.readers import ArrayFile

        data = plan([ArrayFile(source="arrays", arrays=dict(arrays))], load_options)
    else:
        with reading_status(sum(file.stat().st_size for file in expand_paths(paths))):
            data = plan(read_batches(paths), load_options)
    with tally_progress(data.info.num_rows, data.info.num_classes) as progress:
        return sweep(data, gammas, alphas, bins, progress=progress, loss=loss, alpha_per_class=vectors, alpha_asked=alpha_text is not None)
