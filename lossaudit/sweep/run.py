"""``lossaudit sweep``: the sigmoid focal loss under every (gamma, alpha) setting, from one pass.

Every chunk of the data is read once (:func:`~lossaudit.compare.engine.stream.stream_pass`) and given to
one :class:`~lossaudit.compare.engine.stream.StreamTally` per gamma, which keeps focal's sums split into
``Σ (1 - y) h`` and ``Σ y h`` (``h`` the loss before ``alpha_t``). ``alpha_t = alpha y + (1 -
alpha)(1 - y)`` is linear in the target, so each alpha is a weighting of those sums at the end: a
setting's tally is exactly the one ``compare --alpha A --gamma G --losses focal`` computes, and
its report (:func:`~lossaudit.compare.report.build.build_report`) gives the shares with ``compare``'s
definitions: positives, easy negatives (g < 0.1), very hard elements (g ≥ 0.9), rare classes
(:func:`~lossaudit.compare.report.build.rare_classes`: the ``rare_*`` quadrants), per class, and the same for the
gradient magnitude ``|∂L/∂x|``.

Per gamma, the same pass also keeps the cumulative distribution of the element losses over the
positives and over the negatives (the focal loss paper's Figure 4): sorted from the smallest, the
share of the total loss the lowest fraction ``f`` of the elements holds (:class:`LossHistogram`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np

from lossaudit._version import __version__
from lossaudit.compare.engine import elements
from lossaudit.compare.engine.stream import StreamTally, stream_pass
from lossaudit.compare.report.build import build_report
from lossaudit.compare.settings import LossSettings
from lossaudit.errors import InputError
from lossaudit.io.dataset import Chunk, DataPlan
from lossaudit.losses.focusing import FOCAL
from lossaudit.render.formatting import rare_rule

SCHEMA_VERSION = 2
"""Of the ``sweep --format json`` document. 2: rare classes by ``compare``'s rule
(:func:`~lossaudit.compare.report.build.rare_classes`), stated in ``rare_rule`` (``rare_share`` 0 without a rare class)."""

SUB_BITS = 8
SUB_BINS = 1 << SUB_BITS
"""Loss bins per octave (:class:`LossHistogram`): the cumulative shares are within 1/256 of exact.
A bin is a float32 loss's exponent and the first ``SUB_BITS`` bits of its fraction."""
LOWEST_EXPONENT, HIGHEST_EXPONENT = -148, 129
"""The float32 losses, 0 excepted (its own bin), lie in [2^-149, 2^128): ``frexp`` exponents -148 to 128."""
FRACTIONS = tuple(round(k / 100, 2) for k in range(101)) + (0.995, 0.999)
"""Fractions of the elements (sorted by loss) at which the JSON gives the cumulative loss share."""
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


NORMAL_KEY_OFFSET = 1 + (-126 - LOWEST_EXPONENT) * SUB_BINS
"""The key of a normal float32 loss less its bits shifted right by ``23 - SUB_BITS``: the exponent
field E gives ``frexp``'s exponent ``E - 126``."""


def _frexp_keys(h: np.ndarray) -> np.ndarray:
    """The bins of float32 losses ``h >= 0`` from ``frexp``: octave ``e`` of ``h = m 2^e``
    (``m`` in [0.5, 1)), sub-bin ``floor((m - 0.5) 2 SUB_BINS)``; 0 has key 0."""
    mantissa, exponent = np.frexp(h)
    mantissa -= np.float32(0.5)
    mantissa *= np.float32(2 * SUB_BINS)
    keys = (exponent - LOWEST_EXPONENT) * SUB_BINS + 1
    keys += mantissa.astype(np.int32)
    keys[h == 0] = 0
    return keys


def _modulated(m: np.ndarray, gamma: float) -> np.ndarray:
    """float32 ``m^gamma``, by products for gamma 1 and 2 (``power`` is several times slower)."""
    return m if gamma == 1 else m * m if gamma == 2 else m ** np.float32(gamma)


class LossHistogram:
    """Per gamma, over the positives and over the negatives: counts and sums of the element losses
    ``h = (1 - p_t)^gamma bce`` (focal before ``alpha_t``, which is constant within the positives
    and within the negatives for 0/1 targets, so the shares do not depend on alpha) by bin of
    ``h``, computed in float32 (the histogram is the costly part of a sweep): ``h = m 2^e`` (``m``
    in [0.5, 1)) falls in sub-bin ``floor((m - 0.5) 2 K)`` of octave ``e``, ``K`` =
    :data:`SUB_BINS`, so a bin's upper edge is at most ``1 + 1/K`` times its lower.

    :meth:`cumulative` sorts by bin and interpolates inside the bin where the fraction falls,
    taking its elements at their mean loss. The lowest ``k`` of a bin's ``n`` elements, losses in
    ``[a, b)`` with sum ``s``, hold between ``k a`` and ``k s / n``, so the estimate is at most
    ``k (s / n - a) <= s / K`` too high: the error of a cumulative share is below the share of the
    bin holding the cut divided by ``K`` (1/256), and the document states each bound.
    """

    def __init__(self, gammas: tuple[float, ...]):
        self.gammas = gammas
        self.size = 1 + (HIGHEST_EXPONENT - LOWEST_EXPONENT + 1) * SUB_BINS
        self.counts = np.zeros((len(gammas), 2, self.size))
        self.sums = np.zeros((len(gammas), 2, self.size))

    def _keys(self, h: np.ndarray) -> np.ndarray:
        """The bin of each float32 loss ``h >= 0`` (0: its own bin, key 0): for a normal float,
        ``frexp``'s exponent and the first 8 bits of its fraction are the float's bits shifted
        right by 15 (exponent field, then fraction), so the key is those bits plus a constant;
        subnormal losses (below 2^-126) and 0 are keyed from ``frexp``."""
        keys = np.right_shift(h.view(np.int32), 23 - SUB_BITS)
        keys += NORMAL_KEY_OFFSET
        small = h < np.float32(np.finfo(np.float32).tiny)
        if small.any():
            keys[small] = _frexp_keys(h[small])
        return keys

    def lower_edges(self) -> np.ndarray:
        """``(size,)`` the smallest loss of each bin."""
        k = np.arange(self.size - 1)
        exponent, fine = LOWEST_EXPONENT + k // SUB_BINS, k % SUB_BINS
        return np.concatenate([[0.0], np.ldexp(0.5 + fine / (2 * SUB_BINS), exponent)])

    def add(self, chunk: Chunk, file: int = 0) -> None:
        """Add the valid elements of a chunk (``file`` is unused: the histogram is of all files)."""
        valid = chunk.valid
        x, y, positive = chunk.logits[valid], chunk.targets[valid], chunk.positive[valid]
        terms = elements.sigmoid_terms(x, *elements.sigmoid_parts(x), y, chunk.heatmap)
        bce = terms.bce.astype(np.float32)
        m = np.maximum(terms.p + y - 2 * terms.p * y, 0)  # 1 - p_t
        offset = positive * self.size
        for i, gamma in enumerate(self.gammas):
            h = _modulated(m, gamma) * bce if gamma else bce  # focal before alpha_t
            keys = self._keys(h) + offset
            self.counts[i] += np.bincount(keys, minlength=2 * self.size).reshape(2, self.size)
            self.sums[i] += np.bincount(keys, weights=h, minlength=2 * self.size).reshape(2, self.size)

    def merge(self, other: LossHistogram) -> None:
        self.counts += other.counts
        self.sums += other.sums

    def cumulative(self, i: int, positive: bool, fractions: tuple[float, ...] = FRACTIONS) -> dict:
        """The cumulative loss share of gamma ``self.gammas[i]`` over the positives (or negatives) at
        each fraction of their elements, with its error bound (see the class docstring)."""
        counts, sums = self.counts[i, int(positive)], self.sums[i, int(positive)]
        elements_, total = float(counts.sum()), float(sums.sum())
        result = {"elements": int(elements_), "share": None, "error_bound": None}
        if not total:
            return result
        cumulative_counts, cumulative_sums = np.cumsum(counts), np.cumsum(sums)
        wanted = np.array(fractions) * elements_
        at = np.minimum(np.searchsorted(cumulative_counts, wanted, side="left"), self.size - 1)
        before_counts = cumulative_counts[at] - counts[at]
        before_sums = cumulative_sums[at] - sums[at]
        taken = np.clip(wanted - before_counts, 0, None)
        mean = np.divide(sums[at], counts[at], out=np.zeros(len(at)), where=counts[at] > 0)
        share = np.minimum((before_sums + taken * mean) / total, 1.0)
        bound = taken * np.maximum(mean - self.lower_edges()[at], 0) / total
        result.update(share=[float(v) for v in share], error_bound=[float(v) for v in bound])
        return result


def _setting(report: dict, gamma: float, alpha: float) -> dict:
    """One setting's row: focal's shares (and gradient shares) from its compare report."""
    loss, cells = report["losses"][FOCAL], report["quadrants"]["cells"]

    def rare(key: str) -> float | None:
        shares = [cells[name][key][FOCAL] for name in ("rare_easy", "rare_hard")]
        return None if None in shares else shares[0] + shares[1]

    per_class = [{"name": c["name"], "share": c["share"][FOCAL], "gradient_share": c["gradient_share"][FOCAL]} for c in report["per_class"]]
    ranked = sorted(per_class, key=lambda c: c["share"] or 0.0, reverse=True)
    return {
        "gamma": gamma,
        "alpha": alpha,
        "sum": loss["sum"],
        "mean": loss["mean"],
        "positive_share": loss["positive_share"],
        "easy_negative_share": loss["easy_negative_share"],
        "very_hard_share": loss["very_hard_share"],
        "rare_share": rare("share"),
        "gradient_mean": loss["gradient_mean"],
        "gradient_positive_share": loss["gradient_positive_share"],
        "gradient_easy_negative_share": loss["gradient_easy_negative_share"],
        "gradient_very_hard_share": loss["gradient_very_hard_share"],
        "gradient_rare_share": rare("gradient_share"),
        "top_classes": [c["name"] for c in ranked[:TOP_CLASSES] if c["share"]],
        "per_class": per_class,
        "per_difficulty": [{"g_low": d["g_low"], "g_high": d["g_high"], "share": d["share"][FOCAL], "gradient_share": d["gradient_share"][FOCAL]}
                           for d in report["per_difficulty"]],
    }


def sweep(data: DataPlan, gammas: tuple[float, ...], alphas: tuple[float, ...], bins: int = 10, chunk_rows: int | None = None,
          workers: int | None = None, progress: Callable[[int], None] | None = None) -> dict:
    """Focal's report under every (gamma, alpha) of the planned data, from one pass over it: the
    ``sweep --format json`` document (see the module docstring)."""
    info = data.info
    if info.inputs == "softmax-probs":
        raise InputError("--inputs softmax-probs: sweep sweeps the sigmoid focal loss, which softmax probabilities cannot give "
                         "(the logits are known only up to a per-row constant); dump the logits")
    settings = {gamma: LossSettings(losses=(FOCAL,), gamma=gamma, bins=bins) for gamma in gammas}

    def make(rows: int) -> list:
        return [*(StreamTally(settings[gamma], info.num_classes, len(info.files), rows) for gamma in gammas), LossHistogram(gammas)]

    *tallies, histogram = stream_pass(data, make, chunk_rows, workers, progress)
    rows, first = [], None
    for gamma, accumulator in zip(gammas, tallies):
        accumulator.finish(data)
        for alpha in alphas:
            chosen = replace(settings[gamma], alpha=alpha)
            report = build_report(info, chosen, accumulator.result(data, elements.SigmoidParams(alpha=alpha, gamma=gamma)))
            first = first or report
            rows.append(_setting(report, gamma, alpha))
    return {
        "schema_version": SCHEMA_VERSION,
        "lossaudit_version": __version__,
        "loss": FOCAL,
        "input": first["input"],
        "rare_classes": first["quadrants"]["rare_classes"],
        "rare_rule": rare_rule(first["quadrants"]),
        "settings": rows,
        "cumulative": [
            {"gamma": gamma, "fractions": list(FRACTIONS), "positives": histogram.cumulative(i, True), "negatives": histogram.cumulative(i, False)}
            for i, gamma in enumerate(gammas)
        ],
        "findings": first["findings"],
    }


def check_alpha(value: float) -> bool:
    return 0 <= value <= 1 or value == -1


def check_gamma(value: float) -> bool:
    return value >= 0


def run(paths: list, load_options, gamma_text: str, alpha_text: str, bins: int = 10) -> dict:
    """Parse the lists, read the dumps and sweep them (the ``lossaudit sweep`` command)."""
    from lossaudit.io.dataset import plan
    from lossaudit.io.readers import expand_paths, read_batches
    from lossaudit.render.progress import reading_status, tally_progress

    gammas = parse_values(gamma_text, "--gamma", check_gamma, "values ≥ 0")
    alphas = parse_values(alpha_text, "--alpha", check_alpha, "values in [0, 1], or -1 (no weighting)")
    if bins < 1:
        raise InputError(f"--bins {bins}: expected at least 1")
    if not paths:
        raise InputError("nothing to sweep: pass prediction dumps")
    with reading_status(sum(file.stat().st_size for file in expand_paths(paths))):
        data = plan(read_batches(paths), load_options)
    with tally_progress(data.info.num_rows, data.info.num_classes) as progress:
        return sweep(data, gammas, alphas, bins, progress=progress)
