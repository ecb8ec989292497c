"""The later loss families in ``compare``: QFL, VFL, ASL, class-balanced and logit-adjusted CE.

They cost nothing unless asked for. Their sums go into the same tables as the core losses', keyed
by (class, positive, difficulty interval), and follow the reference functions of
:mod:`lossaudit.losses` with the hyper-parameters of their registry entries (``LossSettings.params``):

- the sigmoid families (:class:`SigmoidFamilies`, kept by the
  :class:`~lossaudit.compare.engine.stream.StreamTally` beside the core losses): the elements its dense
  pass takes out, per element, in float64, with ``p = sigmoid(x)``, ``b = BCE(x, y)`` and
  ``d = |p - y|`` (binned by the GHM gradient norm, as every sigmoid loss); the easy negatives
  (y = 0, p below the first difficulty edge) from the dense pass's power sums ``Σ p^k b``, since
  there QFL is ``p^beta b``, VFL ``alpha p^gamma b`` and ASL without a clip ``p^gamma_neg b``, and
  ASL with a clip ``p_m^gamma_neg (-log(1 - p_m))``, 0 below the clip, which the dense pass sums
  too (``clipped``; where ASL's ``eps`` could bind there, it leaves the negatives from the clip up
  to the first edge to the per-element path instead):

  - ``qfl``: ``d^beta b``; gradient magnitude ``beta d^(beta - 1) p (1 - p) b + d^(beta + 1)``
    (both parts have the sign of ``p - y``);
  - ``vfl``: ``y b`` where ``y > 0``, ``alpha p^gamma b`` where y = 0 (the weight differentiated, as
    mmdet); gradient magnitudes ``y d`` and ``alpha p^gamma (gamma (1 - p) b + p)``;
  - ``asl``: ``-(y l+ + (1 - y) l-) m^e`` with ``p_m = max(p - clip, 0)``,
    ``l+ = max(log p, log eps)``, ``l- = max(log(1 - p_m), log eps)``,
    ``m = (1 - p) y + p_m (1 - y)``, ``e = gamma_pos y + gamma_neg (1 - y)``; its gradient by the
    chain rule through each factor (a clamped log or ``p_m`` at 0 passes none), then ``|·|``;

- the softmax families (:class:`FamilyTally`, given every chunk of the streaming pass beside the
  :class:`~lossaudit.compare.engine.stream.StreamTally`), per target term of the rows a softmax loss uses
  (valid rows with a target), binned by ``1 - q_target`` of the model's own softmax as ``ce`` is,
  so that the difficulty tables compare the losses over the same terms:

  - ``cb-ce``: CE with each term weighted by the class-balanced weight of its class (effective
    number; :func:`lossaudit.losses.balanced.class_balanced_weights_numpy`);
  - ``logit-adjusted-ce``: CE of ``x + tau log pi``, ``pi`` the class frequencies (its softmax
    from the model's own softmax exponents, each class's weighted by its ``pi^tau``, the row's
    largest target term left out of the sum: :func:`~lossaudit.compare.engine.elements.adjusted_softmax_terms`).

  The model's own softmax terms are those the core softmax losses computed for the chunk, when
  they share its pass (:class:`~lossaudit.compare.engine.shared.SharedPass`).

  Both take their class counts from the dump itself, read before the pass (only when one of them
  is asked for): :meth:`~lossaudit.io.dataset.DataPlan.class_target_sums` (each class's targets as
  stored, before masks, the ignore label or non-finite logits exclude anything; hard targets: its
  positives).

Weighted dumps (sampling weights): each element or term adds its weight times its loss, and
``w (w - 1)`` times its square to a second-moment table (see
:mod:`~lossaudit.compare.engine.stream`, whose dense pass then runs only on the rows whose
elements all weigh 1: the other rows' elements come through :meth:`SigmoidFamilies.add_elements`); the class counts of the softmax families are
then weighted too (:meth:`~lossaudit.io.dataset.DataPlan.class_target_sums`).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from lossaudit.compare.engine import elements
from lossaudit.compare.engine.binning import Intervals
from lossaudit.compare.engine.dense import DensePass
from lossaudit.compare.engine.mistakes import Mistakes
from lossaudit.compare.engine.shared import SharedPass, softmax_targets
from lossaudit.compare.settings import LossSettings, Tally
from lossaudit.errors import InputError
from lossaudit.io.dataset import Chunk, DataPlan
from lossaudit.losses.asymmetric import ASL
from lossaudit.losses.balanced import (
    CB_CE,
    LOGIT_ADJUSTED_CE,
    class_balanced_weights_numpy,
)
from lossaudit.losses.quality import QFL, VFL

SIGMOID_FAMILIES = (QFL, VFL, ASL)
SOFTMAX_FAMILIES = (CB_CE, LOGIT_ADJUSTED_CE)
FAMILY_LOSSES = SIGMOID_FAMILIES + SOFTMAX_FAMILIES
"""The losses this module's accumulators compute (the others are the streaming pass's own, or
:mod:`~lossaudit.compare.engine.generic`'s)."""


@dataclass(frozen=True)
class FamilySetup:
    """What the accumulators of a pass share: the families asked for with their hyper-parameters,
    and the softmax families' per-class constants, computed once from the dump's class counts (None
    when not asked for)."""

    params: dict[str, dict[str, float]]
    cb_weights: np.ndarray | None
    log_prior: np.ndarray | None


def setup(settings: LossSettings, plan: DataPlan, counts: np.ndarray | None = None) -> FamilySetup | None:
    """The families among ``settings.losses`` (None when there are none), with the class counts of
    ``plan`` (``counts``, when the caller has read them) when a softmax family needs them.

    Raises:
        InputError: a softmax family asked for while a class has no targets in the dump (its
            weight or its prior would be undefined).
    """
    params = {loss: settings.params(loss) for loss in settings.losses if loss in FAMILY_LOSSES}
    if not params:
        return None
    softmax = [loss for loss in params if loss in SOFTMAX_FAMILIES]
    if not softmax:
        return FamilySetup(params, None, None)
    counts = plan.class_target_sums() if counts is None else counts
    empty = np.flatnonzero(~(counts > 0))
    if len(empty):
        info = plan.info
        name = info.class_names[empty[0]]
        one_based = empty[0] == 0 and info.encoding == "index" and not info.label_base
        hint = " (label 0 is never used: are the labels counted from 1? pass --label-base 1)" if one_based else ""
        raise InputError(
            f"--losses {softmax[0]}: class {name!r} has no targets in the dump ({len(empty)} of {len(counts)} classes have none); "
            f"its class count must be positive{hint}"
        )
    cb = class_balanced_weights_numpy(counts, params[CB_CE]["beta"]) if CB_CE in params else None
    prior = np.log(counts / counts.sum()) if LOGIT_ADJUSTED_CE in params else None
    return FamilySetup(params, cb, prior)


@dataclass
class SigmoidParts:
    """float64 quantities of ``(k,)`` elements shared by the sigmoid families: ``p``, ``1 - p``,
    ``log p = -softplus(-x)``, ``log(1 - p) = -softplus(x)`` and ``bce = BCE(x, y)``."""

    p: np.ndarray
    one_minus_p: np.ndarray
    log_p: np.ndarray
    log_one_minus_p: np.ndarray
    bce: np.ndarray

    def select(self, keep: np.ndarray) -> SigmoidParts:
        """The elements where the ``(k,)`` bool ``keep`` is true."""
        return SigmoidParts(*(getattr(self, part.name)[keep] for part in fields(self)))


def sigmoid_parts(x: np.ndarray, y: np.ndarray) -> SigmoidParts:
    """The :class:`SigmoidParts` of finite float64 logits and targets, from one ``exp(-x)`` and one
    ``log1p(exp(-|x|))`` per element (no cancellation: each sum adds terms of one sign). ``p`` is
    ``1 / (1 + exp(-x))``, the float64 value :func:`~lossaudit.compare.engine.elements.sigmoid32` rounds."""
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # exp(-x) = inf: p = 0 (x < 0 branch)
        exp_minus_x = np.exp(-x)
        denominator = 1 + exp_minus_x
        p = 1 / denominator
        nonnegative = x >= 0
        one_minus_p = np.where(nonnegative, exp_minus_x / denominator, 1 - p)
        log1p = np.log1p(np.where(nonnegative, exp_minus_x, 1 / exp_minus_x))  # exp(-|x|)
    positive_part = np.maximum(x, 0)
    return SigmoidParts(
        p=p,
        one_minus_p=one_minus_p,
        log_p=-(np.maximum(-x, 0) + log1p),
        log_one_minus_p=-(positive_part + log1p),
        bce=positive_part - x * y + log1p,
    )


def qfl(parts: SigmoidParts, y: np.ndarray, beta: float) -> tuple[np.ndarray, np.ndarray]:  # lossaudit: ignore -- numpy sums for compare, not a torch loss
    """float64 (loss, gradient magnitude) of Quality Focal Loss at each element."""
    p, bce = parts.p, parts.bce
    d = np.abs(p - y)
    with np.errstate(divide="ignore", invalid="ignore"):
        focusing = np.where(d > 0, beta * d ** (beta - 1) * p * parts.one_minus_p * bce, 0.0) if beta > 0 else 0.0
    return d**beta * bce, focusing + d ** (beta + 1)


def vfl(
    parts: SigmoidParts, y: np.ndarray, alpha: float, gamma: float
) -> tuple[np.ndarray, np.ndarray]:  # lossaudit: ignore -- numpy sums for compare, not a torch loss
    """float64 (loss, gradient magnitude) of Varifocal Loss at each element."""
    p, bce = parts.p, parts.bce
    focused = alpha * p**gamma
    positive = y > 0
    loss = np.where(positive, y, focused) * bce
    gradient = np.where(positive, y * np.abs(p - y), focused * (gamma * parts.one_minus_p * bce + p))
    return loss, gradient


def asl(
    parts: SigmoidParts, y: np.ndarray, gamma_pos: float, gamma_neg: float, clip: float, eps: float
) -> tuple[np.ndarray, np.ndarray]:  # lossaudit: ignore -- numpy sums for compare, not a torch loss
    """float64 (loss, gradient magnitude) of the Asymmetric Loss at each element."""
    p, one_minus_p = parts.p, parts.one_minus_p
    slope = p * one_minus_p  # dp/dx
    shifted = p - clip
    p_m = np.maximum(shifted, 0)
    dp_m = np.where(shifted >= 0, slope, 0.0) if clip > 0 else slope
    log_floor = np.log(eps) if eps > 0 else -np.inf
    raw_pos = parts.log_p
    raw_neg = np.log1p(-p_m) if clip > 0 else parts.log_one_minus_p
    log_pos, log_neg = np.maximum(raw_pos, log_floor), np.maximum(raw_neg, log_floor)
    dlog_pos = np.where(raw_pos >= log_floor, one_minus_p, 0.0)
    dlog_neg = np.where(raw_neg >= log_floor, -dp_m / (1 - p_m), 0.0)
    m = one_minus_p * y + p_m * (1 - y)
    dm = -slope * y + dp_m * (1 - y)
    exponent = gamma_pos * y + gamma_neg * (1 - y)
    weight = m**exponent
    with np.errstate(divide="ignore", invalid="ignore"):
        dweight = np.where(exponent == 0, 0.0, np.where(m > 0, exponent * m ** (exponent - 1), np.where(exponent == 1, 1.0, 0.0)) * dm)
    log_likelihood = y * log_pos + (1 - y) * log_neg
    gradient = -(y * dlog_pos + (1 - y) * dlog_neg) * weight - log_likelihood * dweight
    return -log_likelihood * weight, np.abs(gradient)


class SigmoidFamilies:
    """The sums of the sigmoid families among ``params`` (QFL, VFL, ASL; see the module docstring),
    in the flat ``(C, 2, intervals)`` keys of ``intervals``: kept by a
    :class:`~lossaudit.compare.engine.stream.StreamTally`, which gives them its taken-out elements
    (:meth:`add_elements`) and its dense pass's sums (:meth:`add_easy`)."""

    def __init__(self, params: dict[str, dict[str, float]], intervals: Intervals, num_classes: int):
        self.params = {loss: value for loss, value in params.items() if loss in SIGMOID_FAMILIES}
        self.intervals, self.num_classes = intervals, num_classes
        self.size = num_classes * 2 * intervals.count
        self.tables = {loss: np.zeros((2, self.size)) for loss in self.params}  # loss, gradient magnitude
        self.second: dict[str, np.ndarray] | None = None  # Σ w (w - 1) v², weighted (:meth:`weigh`)

    def weigh(self) -> None:
        """Keep second moments too (a weighted dump)."""
        if self.second is None:
            self.second = {loss: np.zeros((2, self.size)) for loss in self.params}

    def _easy_power(self, loss: str) -> tuple[float, float] | None:
        """``(k, factor)``: the easy negatives' loss is ``factor × p^k b``; None: it is 0."""
        params = self.params[loss]
        if loss == QFL:
            return params["beta"], 1.0
        if loss == VFL:
            return params["gamma"], params["alpha"]
        return (params["gamma_neg"], 1.0) if params["clip"] == 0 else None

    def powers(self) -> tuple[float, ...]:
        """The exponents the dense pass must keep power sums of."""
        powers = (self._easy_power(loss) for loss in self.params)
        return tuple(power[0] for power in powers if power is not None)

    def clipped(self, first_edge: float) -> tuple[tuple[float, float], ...]:
        """The clipped powers ``(gamma_neg, clip)`` the dense pass must keep sums of: ASL's, when
        its clip is set and its log floor ``eps`` stays below ``-log(1 - p_m)`` for every easy
        negative (``p < first_edge``, so ``1 - p_m > 1 - first_edge``)."""
        params = self.params.get(ASL)
        if params is None or params["clip"] <= 0 or params["eps"] >= 1 - first_edge:
            return ()
        return ((params["gamma_neg"], params["clip"]),)

    def easy_edge(self, first_edge: float) -> float:
        """The probability below which a negative is easy for every family: the first difficulty
        edge, or ASL's clip where it is set below it and the dense pass cannot keep ASL's sums
        (:meth:`clipped`: a negative from the clip up to the edge is not 0)."""
        clip = self.params[ASL]["clip"] if ASL in self.params else 0.0
        return min(first_edge, clip) if clip > 0 and not self.clipped(first_edge) else first_edge

    def add_elements(self, x32: np.ndarray, y: np.ndarray, col: np.ndarray, positive: np.ndarray, w: np.ndarray | None = None) -> None:
        """Tally ``(k,)`` valid elements one by one: float32 logits and targets, their classes,
        whether each is a positive, and their weights (weighted mode)."""
        if not self.params or not len(x32):
            return
        y64 = y.astype(np.float64)
        parts = sigmoid_parts(x32.astype(np.float64), y64)
        keys = self.intervals.keys(col, positive, np.abs(parts.p.astype(np.float32) - y))  # as elements.sigmoid32 bins
        for loss, function in ((QFL, qfl), (VFL, vfl)):
            if loss in self.params:
                self._add(loss, keys, function(parts, y64, **self.params[loss]), w)
        if ASL in self.params:
            asl_params = self.params[ASL]
            # a negative below the clip costs nothing and passes no gradient (p_m = 0): left out
            keep = (y64 != 0) | (parts.p >= asl_params["clip"])
            self._add(ASL, keys[keep], asl(parts.select(keep), y64[keep], **asl_params), None if w is None else w[keep])

    def _add(self, loss: str, keys: np.ndarray, values: tuple[np.ndarray, np.ndarray], w: np.ndarray | None = None) -> None:
        _add_sums(self.tables[loss], keys, values, w, self.second[loss] if self.second is not None else None)

    def add_easy(self, dense: DensePass, at: np.ndarray) -> None:
        """Add the easy negatives' sums of a dense pass, at the flat keys ``at`` of (class,
        negative, first interval)."""
        for loss in self.params:
            power = self._easy_power(loss)
            if power is not None:
                k, factor = power
                for table, sums in zip(self.tables[loss], dense.power_sums(k)):
                    table[at] += factor * sums
                if dense.weighted:
                    assert self.second is not None  # weighted mode (weigh)
                    for table, sums in zip(self.second[loss], dense.second_power_sums(k)):
                        table[at] += factor**2 * sums
        for k, clip in self.clipped(float(self.intervals.first)):
            for table, sums in zip(self.tables[ASL], dense.clipped_sums(k, clip)):
                table[at] += sums
            if dense.weighted:
                assert self.second is not None  # weighted mode (weigh)
                for table, sums in zip(self.second[ASL], dense.second_clipped_sums(k, clip)):
                    table[at] += sums

    def merge(self, other: SigmoidFamilies) -> None:
        for loss, tables in other.tables.items():
            self.tables[loss] += tables
        if other.second is not None:
            self.weigh()
            assert self.second is not None  # weighted mode (_weigh)
            for loss, tables in other.second.items():
                self.second[loss] += tables

    def finish(self, tally: Tally) -> None:
        """Put the families' sums and normalisers (the valid elements) into ``tally``."""
        _put(tally, self.tables, self.intervals, self.num_classes, float(tally.element_counts.sum()), "valid elements", self.second)


def _add_sums(
    tables: np.ndarray, keys: np.ndarray, values: tuple[np.ndarray, np.ndarray], w: np.ndarray | None = None, second: np.ndarray | None = None
) -> None:
    """Add ``(k,)`` losses and gradient magnitudes at the flat ``keys`` to a loss's ``(2, size)``
    tables; weighted (``w``), their ``w v`` there and ``w (w - 1) v²`` to ``second``."""
    for index, (table, value) in enumerate(zip(tables, values)):
        table += np.bincount(keys, weights=value if w is None else w * value, minlength=table.shape[-1])
        if w is not None:
            assert second is not None  # given with w
            second[index] += np.bincount(keys, weights=w * (w - 1) * np.square(value, dtype=np.float64), minlength=table.shape[-1])


def _put(
    tally: Tally, tables: dict[str, np.ndarray], intervals: Intervals, classes: int, normaliser: float, name: str, second: dict[str, np.ndarray] | None = None
) -> None:
    """Each loss's ``(2, C × 2 × intervals)`` sums (loss, gradient magnitude) into ``tally``'s
    cells, with its normaliser, and its second moments (weighted mode) into ``tally.second_moments``."""

    def cells(table: np.ndarray) -> np.ndarray:
        return intervals.to_cells(table.reshape(classes, 2, intervals.count)).sum(axis=-1)

    for loss, (table, gradient) in tables.items():
        tally.loss_sums[loss], tally.gradient_sums[loss] = cells(table), cells(gradient)
        tally.normalisers[loss], tally.normaliser_names[loss] = normaliser, name
        if second is not None:
            assert tally.second_moments is not None  # weighted mode (_weigh)
            tally.second_moments[loss], tally.second_moments["gradient:" + loss] = (cells(values) for values in second[loss])


def _rows(chunk: Chunk, rows: np.ndarray) -> np.ndarray:
    """``(m, C)`` the chunk's logits at the sorted ``rows``: a view when they are all of its rows."""
    return chunk.logits if len(rows) == len(chunk.logits) else np.take(chunk.logits, rows, axis=0)


class FamilyTally:
    """Sums of the softmax families of ``family`` over the chunks given to :meth:`add` (the same
    keys as :class:`~lossaudit.compare.engine.stream.StreamTally`'s tables).

    Args:
        settings: the difficulty bins (``bins``, ``ghm_bins``).
        family: from :func:`setup`.
        num_classes: C.
        softmax_counts: also count the softmax terms, Σ q and the positives of the softmax rows (when
            no core softmax loss does).
        weighted: the chunks carry sampling weights.
        shared: the pass of the :class:`~lossaudit.compare.engine.stream.StreamTally` given the
            same chunks (:class:`~lossaudit.compare.engine.shared.SharedPass`), whose softmax terms
            it takes (computed once per chunk), or None.
    """

    def __init__(
        self, settings: LossSettings, family: FamilySetup, num_classes: int, softmax_counts: bool, weighted: bool = False, shared: SharedPass | None = None
    ):
        self.family, self.num_classes, self.shared = family, num_classes, shared
        self.intervals = Intervals(settings.bins, settings.ghm_bins)
        self.size = num_classes * 2 * self.intervals.count
        self.tables = {loss: np.zeros((2, self.size)) for loss in family.params if loss in SOFTMAX_FAMILIES}  # loss, gradient magnitude
        self.second: dict[str, np.ndarray] | None = None  # Σ w (w - 1) v², weighted (also set by the first weighted chunk)
        if weighted:
            self._weigh()
        self.softmax_counts = np.zeros(self.size) if softmax_counts else None
        self.sum_q_positive, self.softmax_positives = np.zeros(num_classes), np.zeros(num_classes)
        self.mistakes = Mistakes(num_classes)
        self.softmax_rows: float = 0

    def _add(self, loss: str, keys: np.ndarray, values: tuple[np.ndarray, np.ndarray], w: np.ndarray | None = None) -> None:
        _add_sums(self.tables[loss], keys, values, w, self.second[loss] if self.second is not None else None)

    def _weigh(self) -> None:
        if self.second is None:
            self.second = {loss: np.zeros((2, self.size)) for loss in self.tables}

    def add(self, chunk: Chunk, file: int = 0) -> None:
        """Tally one chunk of rows (``file`` is not needed)."""
        if chunk.weights is not None:
            self._weigh()
        self._add_softmax(chunk)

    def _add_softmax(self, chunk: Chunk) -> None:
        """The softmax families at the targets of the valid rows with a target."""
        row_valid = chunk.valid_rows
        rows = np.flatnonzero(row_valid & chunk.has_target)
        self.softmax_rows += len(rows) if chunk.weights is None else float(chunk.row_weights[rows].sum())
        if not len(rows):
            return
        row, col, y32, positive, local_row, terms, w = softmax_targets(chunk, rows, row_valid, self.shared)
        y = y32.astype(np.float64)
        keys = self.intervals.keys(col, positive, np.float32(1) - terms.q)
        family = self.family
        if family.cb_weights is not None:
            weight = family.cb_weights[col]
            self._add(CB_CE, keys, (terms.loss(y, 0.0, weight), elements.softmax_gradient(terms, terms.pull(y, 0.0, weight), y, local_row)), w)
        if family.log_prior is not None:
            adjusted = elements.adjusted_softmax_terms(_rows(chunk, rows), family.params[LOGIT_ADJUSTED_CE]["tau"] * family.log_prior, local_row, col, terms)
            self._add(LOGIT_ADJUSTED_CE, keys, (adjusted.loss(y, 0.0), elements.softmax_gradient(adjusted, adjusted.pull(y, 0.0), y, local_row)), w)
        if self.softmax_counts is not None:
            self.softmax_counts += np.bincount(keys, weights=w, minlength=self.size)
            self.sum_q_positive += np.bincount(
                col[positive], weights=terms.q[positive] if w is None else w[positive] * terms.q[positive], minlength=self.num_classes
            )
            self.softmax_positives += np.bincount(col[positive], weights=None if w is None else w[positive], minlength=self.num_classes)
            self.mistakes.add_softmax(col, terms, positive, w)

    def merge(self, other: FamilyTally) -> None:
        """Add another accumulator's sums (of other chunks) to this one."""
        for loss, tables in other.tables.items():
            self.tables[loss] += tables
        if other.second is not None:
            self._weigh()
            assert self.second is not None  # weighted mode (_weigh)
            for loss, tables in other.second.items():
                self.second[loss] += tables
        if self.softmax_counts is not None:
            assert other.softmax_counts is not None  # counted by both or neither
            self.softmax_counts += other.softmax_counts
        self.sum_q_positive += other.sum_q_positive
        self.softmax_positives += other.softmax_positives
        self.softmax_rows += other.softmax_rows
        self.mistakes.merge(other.mistakes)

    def finish(self, tally: Tally) -> None:
        """Put the families' sums, normalisers and (when counted here) softmax counts into ``tally``."""
        _put(tally, self.tables, self.intervals, self.num_classes, float(self.softmax_rows), "rows with a target", self.second)
        if self.softmax_counts is not None:
            tally.softmax_counts = self.intervals.to_cells(self.softmax_counts.reshape(self.num_classes, 2, self.intervals.count)).sum(axis=-1)
            tally.sum_q_positive, tally.softmax_positives = self.sum_q_positive, self.softmax_positives
            tally.mistakes.merge(self.mistakes)
