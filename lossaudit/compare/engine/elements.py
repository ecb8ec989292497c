"""Element losses in numpy, for elements taken one by one (any target, any logit).

The streaming engine's dense pass (:mod:`lossaudit.compare.engine.dense`) covers the bulk of the data:
negatives in the easiest difficulty interval. The elements it takes out — negatives with a harder
logit (:func:`negative_terms`), non-zero targets (:func:`sigmoid_terms`), the rows hard-negative
mining keeps — and the softmax rows go through these functions, which follow the reference
functions of :mod:`lossaudit.losses` (the contract; the tests compare them):

- ``p = sigmoid(x)`` and ``g = |p - y|`` in float32, as the reference bins them;
- ``bce = max(x, 0) - x y + log1p(exp(-|x|))``;
- ``focal = alpha_t (1 - p_t)^gamma bce`` with ``1 - p_t = p + y - 2 p y``,
  ``alpha_t = alpha y + (1 - alpha)(1 - y)`` (alpha -1: 1; a per-class alpha taken at the class),
  applied to the sums: elements add ``(1 - y) h`` and ``y h`` (``h`` the unweighted loss) to two
  tables, weighted ``1 - alpha`` and ``alpha`` at the end (:meth:`SigmoidParams.weights`);
- ``centernet``: ``p_c = clip(p, 1e-4, 1 - 1e-4)``; ``-log(p_c) (1 - p_c)^2`` at a peak (y = 1),
  ``-log(1 - p_c) p_c^2 (1 - y)^4`` elsewhere;
- softmax terms ``-w_c y_c (1 - q_c)^gamma log q_c`` with ``q = softmax(x)`` over the row.

Gradient magnitudes ``|∂loss/∂x|`` of the element losses (for ``compare``'s gradient shares; a
loss's normaliser is a constant, so it cancels in a share) follow the same closed forms:

- BCE: ``|p - y|`` (= g); GHM-C: its weight times that (``p`` is detached in the weight);
- focal: ``alpha_t |h'|`` with ``h = m^gamma bce``, ``m = 1 - p_t``:
  ``h' = m^gamma (p - y) + gamma m^(gamma - 1) (1 - 2y) p (1 - p) bce``; a negative (y = 0):
  ``p^gamma (p + gamma (1 - p) bce)``;
- CenterNet: ``p (1 - p) |∂loss/∂p_c|`` where p is not clamped, 0 where it is;
- softmax terms: see :meth:`SoftmaxTerms.gradient`.

The logit's ``exp`` and ``log1p`` come from :func:`sigmoid_parts`, which the dense pass also
uses (its buffers are gathered at the elements taken out). Negatives (y = 0) are computed in
float32, as the dense pass computes them; targets, whose BCE can cancel (``x - x y``), in float64.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lossaudit.io.dataset import is_positive

CENTERNET_PROB_CLAMP = np.float32(1e-4)
"""CenterNet clamps heatmap probabilities to [1e-4, 1 - 1e-4] (:data:`lossaudit.losses.CENTERNET_PROB_CLAMP`)."""


SIGN_BIT = np.uint32(1 << 31)
"""The sign bit of a float32: setting it makes ``-|x|`` (NaN stays NaN)."""


def sigmoid_parts(x: np.ndarray, log1p_out: np.ndarray | None = None, q_out: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """From one ``e = exp(-|x|)`` per float32 logit: ``(log1p(e), q = e / (1 + e))``, float32,
    written into the given buffers (``out=``) or new arrays. ``q = sigmoid(-|x|)`` is ``p`` where
    x < 0 and ``1 - p`` elsewhere; ``log1p(e)`` is softplus(x) less ``max(x, 0)``."""
    log1p = np.empty(x.shape, dtype=np.float32) if log1p_out is None else log1p_out
    negative_abs(x, out=log1p)
    np.exp(log1p, out=log1p)
    return parts_from_exp(log1p, q_out)


def negative_abs(x: np.ndarray, out: np.ndarray) -> np.ndarray:
    """float32 ``-|x|`` into ``out``, in one pass (the sign bit set: NaN stays NaN)."""
    np.bitwise_or(x.view(np.uint32), SIGN_BIT, out=out.view(np.uint32))
    return out


def parts_from_exp(buffer: np.ndarray, q_out: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """:func:`sigmoid_parts` from float32 ``e = exp(-|x|)`` in ``buffer``, which becomes ``log1p(e)``
    (in place); ``q`` goes into ``q_out`` (or a new array). ``e = 0`` gives 0 and 0."""
    q = np.add(buffer, 1, out=q_out)
    np.divide(buffer, q, out=q)
    np.log1p(buffer, out=buffer)
    return buffer, q


def power(base: np.ndarray, k: float, out: np.ndarray | None = None) -> np.ndarray:
    """float32 ``base ** k`` for ``base >= 0``, into ``out`` (or a new array). A whole or half ``k``
    up to :data:`PRODUCT_POWERS` is made of products and a square root, a few float32 rounding steps
    from ``np.power``, which is 3-10 times slower (slowest at 0.5); other exponents go to ``np.power``."""
    out = np.empty(base.shape, dtype=np.float32) if out is None else out
    twice = 2 * float(k)
    if twice != int(twice) or k > PRODUCT_POWERS:
        return np.power(base, np.float32(k), out=out)
    whole = int(k)
    if twice % 2:
        np.sqrt(base, out=out)
    elif whole >= 2:
        np.multiply(base, base, out=out)
        whole -= 2
    elif whole:
        np.copyto(out, base)
        whole -= 1
    else:
        out[...] = 1
    for _ in range(whole):
        np.multiply(out, base, out=out)
    return out


PRODUCT_POWERS = 8
"""The largest exponent :func:`power` computes by products."""


def sigmoid32(x: np.ndarray) -> np.ndarray:
    """float32 ``sigmoid(x)`` rounded from float64, as the full-tensor engine bins elements
    (``g = |p - y|`` in float32 from that p): both engines put an element in the same difficulty
    interval, even at an edge (x = 2^-23, y = 1 gives g = 0.5 exactly)."""
    with np.errstate(over="ignore"):
        return (1 / (1 + np.exp(-x.astype(np.float64)))).astype(np.float32)


@dataclass(frozen=True)
class SigmoidParams:
    """The hyper-parameters of the sigmoid losses. ``alpha`` is a scalar (-1: no weighting) or a
    ``(C,)`` float64 array of per-class alphas."""

    alpha: float | np.ndarray
    gamma: float

    def weights(self, classes: int) -> tuple[np.ndarray, np.ndarray]:
        """``(C,)`` weights of the parts ``Σ (1 - y) h`` and ``Σ y h`` of a class's focal sums
        (``alpha_t = alpha y + (1 - alpha)(1 - y)`` is linear in y): ``(1 - alpha, alpha)``, or
        ``(1, 1)`` without weighting."""
        if isinstance(self.alpha, np.ndarray):
            return 1 - self.alpha, self.alpha.copy()
        if self.alpha < 0:
            return np.ones(classes), np.ones(classes)
        return np.full(classes, 1 - self.alpha), np.full(classes, float(self.alpha))


@dataclass
class SigmoidTerms:
    """Per-element quantities of ``(k,)`` elements (see the module docstring).

    Attributes:
        p: float32 ``sigmoid(x)`` (the difficulty bins are read from it, as the oracle's).
        g: float32 gradient norm ``|p - y|``.
        positive: bool, ``y >= 0.5`` (heatmaps: ``y == 1``).
        bce: float64 binary cross-entropy.
        p64: float64 ``sigmoid(x)``, for the losses and gradients: ``1 - p`` of a confident
            positive from the float32 p keeps few bits (x = 10: 5e-4 relative off; from x = 17
            on, 0).
    """

    p: np.ndarray
    g: np.ndarray
    positive: np.ndarray
    bce: np.ndarray
    p64: np.ndarray


def sigmoid_terms(x: np.ndarray, log1p: np.ndarray, q: np.ndarray, y: np.ndarray, heatmap: bool) -> SigmoidTerms:
    """The shared quantities of elements with float32 logits ``x``, their :func:`sigmoid_parts`
    ``log1p`` and ``q``, and float32 targets ``y`` (any: zero or not)."""
    x64 = x.astype(np.float64)
    with np.errstate(over="ignore"):
        p64 = 1 / (1 + np.exp(-x64))
    p = p64.astype(np.float32)  # as sigmoid32
    bce = np.maximum(x64, 0) - x64 * y + log1p
    positive = is_positive(y, heatmap)
    return SigmoidTerms(p=p, g=np.abs(p - y), positive=positive, bce=bce, p64=p64)


def bce_gradient(terms: SigmoidTerms, y: np.ndarray) -> np.ndarray:
    """float64 ``|∂ BCE / ∂x| = |p - y|`` of the elements of ``terms``."""
    return np.abs(terms.p64 - y)


def focal(terms: SigmoidTerms, y: np.ndarray, gamma: float) -> np.ndarray:  # lossaudit: ignore -- numpy terms of compare's engine, not a loss
    """float64 sigmoid focal loss of the elements of ``terms`` before the weight ``alpha_t``:
    ``h = (1 - p_t)^gamma bce`` (:meth:`SigmoidParams.weights` applies alpha to class sums)."""
    p = terms.p64
    return (p + y - 2 * p * y) ** gamma * terms.bce


def centernet(terms: SigmoidTerms, y: np.ndarray) -> np.ndarray:
    """float64 CenterNet penalty-reduced focal loss of the elements of ``terms``."""
    p = np.clip(terms.p, CENTERNET_PROB_CLAMP, 1 - CENTERNET_PROB_CLAMP).astype(np.float64)
    peak = y == 1
    return np.where(peak, -np.log(p) * (1 - p) ** 2, -np.log1p(-p) * p**2 * (1 - y.astype(np.float64)) ** 4)


def focal_gradient(terms: SigmoidTerms, y: np.ndarray, gamma: float) -> np.ndarray:  # lossaudit: ignore -- numpy terms of compare's engine, not a loss
    """float64 ``|h'|``: the sigmoid focal loss's gradient magnitude before the weight
    ``alpha_t`` (which is ≥ 0), for elements with any target ``y``."""
    p, y = terms.p64, y.astype(np.float64)
    m = p + y - 2 * p * y
    modulated = m**gamma * (p - y)
    if gamma == 0:
        return np.abs(modulated)
    with np.errstate(divide="ignore", invalid="ignore"):
        focusing = np.where(m > 0, gamma * m ** (gamma - 1) * (1 - 2 * y) * p * (1 - p) * terms.bce, 0.0)
    return np.abs(modulated + focusing)


def centernet_gradient(terms: SigmoidTerms, y: np.ndarray) -> np.ndarray:
    """float64 ``|∂ centernet / ∂x|``: zero where the probability is clamped."""
    p = terms.p.astype(np.float64)
    unclamped = (p >= CENTERNET_PROB_CLAMP) & (p <= 1 - CENTERNET_PROB_CLAMP)
    peak = y == 1
    with np.errstate(divide="ignore", invalid="ignore"):
        at_peak = (1 - p) ** 3 - 2 * p * (1 - p) ** 2 * np.log(p)
        elsewhere = (p**3 - 2 * p**2 * (1 - p) * np.log1p(-p)) * (1 - y.astype(np.float64)) ** 4
    return np.where(unclamped, np.where(peak, at_peak, elsewhere), 0.0)


@dataclass
class NegativeTerms:
    """float32 quantities of ``(k,)`` negatives (y = 0): ``p`` (= g, BCE's gradient magnitude),
    ``bce`` (softplus(x)), ``focal`` (``p^gamma bce``, before the weight ``1 - alpha``) and
    ``centernet``, with the gradient magnitudes ``focal_gradient`` (before ``1 - alpha``) and
    ``centernet_gradient``."""

    p: np.ndarray
    bce: np.ndarray
    focal: np.ndarray | None = None
    centernet: np.ndarray | None = None
    focal_gradient: np.ndarray | None = None
    centernet_gradient: np.ndarray | None = None


def negative_terms(
    x: np.ndarray, log1p: np.ndarray, q: np.ndarray, gamma: float | None, centernet: bool
) -> NegativeTerms:  # lossaudit: ignore -- numpy terms of compare's engine, not a loss
    """The quantities of negatives with float32 logits ``x`` and their :func:`sigmoid_parts`;
    ``gamma`` None: no focal term."""
    p = sigmoid32(x)
    bce = np.maximum(x, 0) + log1p
    terms = NegativeTerms(p=p, bce=bce)
    if gamma is not None:
        terms.focal, terms.focal_gradient = negative_focal(p, bce, gamma)
    if centernet:
        terms.centernet, terms.centernet_gradient = negative_centernet(p)
    return terms


def negative_focal(
    p: np.ndarray, bce: np.ndarray, gamma: float
) -> tuple[np.ndarray, np.ndarray]:  # lossaudit: ignore -- numpy terms of compare's engine, not a loss
    """float32 focal loss of negatives with float32 ``p`` and ``bce`` (:func:`negative_terms`),
    before the weight ``1 - alpha``, and its gradient magnitude: ``p^gamma bce`` and ``p^gamma (p +
    gamma (1 - p) bce)``."""
    modulating = power(p, gamma)
    return modulating * bce, modulating * (p + np.float32(gamma) * (1 - p) * bce)


def negative_centernet(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # lossaudit: ignore -- numpy terms of compare's engine, not a loss
    """float32 CenterNet term of negatives (target 0) with float32 ``p``, and its gradient magnitude."""
    clamped = np.clip(p, CENTERNET_PROB_CLAMP, 1 - CENTERNET_PROB_CLAMP)
    loss = -np.log1p(-clamped) * clamped * clamped
    unclamped = (p >= CENTERNET_PROB_CLAMP) & (p <= 1 - CENTERNET_PROB_CLAMP)
    return loss, np.where(unclamped, clamped**3 + 2 * (1 - clamped) * loss, np.float32(0))


@dataclass
class SoftmaxTerms:
    """Softmax quantities at ``(k,)`` target elements of some rows.

    Attributes:
        q: float32 ``softmax(x)`` of the row, at the element's class.
        log_q: float64 ``log softmax(x)`` there.
        top: int ``(k,)`` the argmax of the element's row (its first maximum); None for
            :func:`adjusted_softmax_terms`, which does not look for it.
        exponents: :func:`softmax_terms`' float32 ``(m, C)`` ``exp(x - max)`` of the rows, 0 at
            each row's maximum (whose term is 1), for :func:`adjusted_softmax_terms`; else None.
        row_top: ``(m,)`` each row's argmax, with ``exponents``.
        row_max: float32 ``(m,)`` each row's largest logit, with ``exponents``.
        log_e: float64 ``(k,)`` ``x - max`` at the elements, with ``exponents``.
    """

    q: np.ndarray
    log_q: np.ndarray
    top: np.ndarray | None = None
    exponents: np.ndarray | None = None
    row_top: np.ndarray | None = None
    row_max: np.ndarray | None = None
    log_e: np.ndarray | None = None

    def loss(self, y: np.ndarray, gamma: float, weight: np.ndarray | float = 1.0) -> np.ndarray:
        """float64 ``-w y (1 - q)^gamma log q`` (gamma 0, weight 1: cross-entropy)."""
        terms = -weight * y * self.log_q
        return terms * (1 - np.exp(self.log_q)) ** gamma if gamma != 0 else terms

    def pull(self, y: np.ndarray, gamma: float, weight: np.ndarray | float = 1.0) -> np.ndarray:
        """float64 ``a = q ∂term/∂q`` of each term ``-w y (1 - q)^gamma log q`` (≤ 0):
        ``-w y (1 - q)^gamma (1 - gamma q log q / (1 - q))``. The term's gradient with respect to the
        row's logits is ``a (δ_jc - q_j)``."""
        one_minus_q = -np.expm1(self.log_q)
        if gamma == 0:
            return -weight * y * np.ones_like(self.log_q)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(one_minus_q > 0, self.log_q / one_minus_q, -1.0)  # log q / (1 - q) -> -1 as q -> 1
        return -weight * y * one_minus_q**gamma * (1 - gamma * np.exp(self.log_q) * ratio)


def softmax_gradient(terms: SoftmaxTerms, pull: np.ndarray, y: np.ndarray, row: np.ndarray) -> np.ndarray:
    """float64 ``(k,)``: each target term's part of its row's gradient magnitude ``Σ_j |∂L/∂x_j|``.

    With ``a`` the terms' :meth:`SoftmaxTerms.pull` and ``A = Σ a`` over the row's targets T, the
    row's gradient is ``a_j - q_j A`` (``a_j = 0`` off T), so its magnitude is
    ``|A| (1 - Σ_T q) + Σ_T |a_c (1 - q_c) - q_c (A - a_c)|`` (a one-hot row: ``2 |a| (1 - q)``).
    A row's magnitude is shared among its targets in proportion to ``y``. ``row`` numbers each
    term's row (terms of a row adjacent or not)."""
    rows = int(row.max()) + 1 if len(row) else 0
    one_minus_q = -np.expm1(terms.log_q)
    q = np.exp(terms.log_q)
    total = np.bincount(row, weights=pull, minlength=rows)
    targets = np.bincount(row, minlength=rows)
    rest = np.bincount(row, weights=one_minus_q, minlength=rows) - (targets - 1)  # 1 - Σ_T q
    own = np.abs(pull * one_minus_q - q * (total[row] - pull))
    magnitude = np.abs(total) * rest + np.bincount(row, weights=own, minlength=rows)
    y_sum = np.bincount(row, weights=y, minlength=rows)
    return magnitude[row] * y / y_sum[row]


def softmax_terms(rows_x: np.ndarray, row: np.ndarray, cols: np.ndarray) -> SoftmaxTerms:
    """Softmax of the ``(m, C)`` float32 logits ``rows_x`` over each row, taken at the elements
    ``(row, cols)`` (``row`` indexes ``rows_x``): ``log q = z - log1p(s)`` with ``z = x - max`` and
    ``s`` the sum of ``exp(z)`` over the row's other classes (one maximum left out, whose term is
    exactly 1), summed pairwise in float32, the logarithm and the target's ``z`` in float64. Leaving the 1 out of the
    float32 sum keeps a confident row's small ``-log q`` to float32's relative precision: summed as
    ``1 + s`` it lost up to 1% of it (a row with ``q = 0.9999``)."""
    top = rows_x.argmax(axis=1)
    maximum = rows_x[np.arange(len(rows_x)), top]
    with np.errstate(over="ignore"):  # a row spanning more than float32's range: exp(-inf) = 0 below
        others = rows_x - maximum[:, None]
    np.exp(others, out=others)
    others[np.arange(len(rows_x)), top] = 0
    log_e = rows_x[row, cols].astype(np.float64) - maximum[row]  # in float64: -FLT_MAX - FLT_MAX is finite there
    log_q = log_e - np.log1p(others.sum(axis=1).astype(np.float64))[row]
    return SoftmaxTerms(q=np.exp(log_q).astype(np.float32), log_q=log_q, top=top[row], exponents=others, row_top=top, row_max=maximum, log_e=log_e)


WIDE_LOGIT = 2.0**30
"""A row whose largest logit is beyond this (no model's; the boundary tests' ``FLT_MAX``) gets
:func:`adjusted_softmax_terms` from float64 shifted logits, as the torch reference computes them:
there a shift below the logits' precision is lost, which the exact exponents would keep."""


def adjusted_softmax_terms(rows_x: np.ndarray, shift: np.ndarray, row: np.ndarray, cols: np.ndarray, plain: SoftmaxTerms) -> SoftmaxTerms:
    """:func:`softmax_terms` (without ``top``) of the logits ``rows_x + shift``
    (``(C,)`` float64, a shift per class: logit-adjusted cross-entropy's ``tau log prior``) at
    ``(row, cols)``, from the exponents ``e_j = exp(x_j - max)`` that :func:`softmax_terms`
    computed for the same rows (``plain``) rather than another ``exp`` of every element: the
    shifted row's terms are ``m_j = e_j w_j``, ``w_j = exp(s_j - max s) <= 1``. Each row leaves
    one term ``m_d`` out of its float32 sum ``r = Σ_{j != d} m_j`` (one product of the exponents
    with ``w``, no ``(m, C)`` temporary): ``d`` is the row's target with the largest ``log m``
    (its only target, for single-label rows). With ``log m_j = (x_j - max) + (s_j - max s)`` in
    float64, ``log q_t = log m_t - logaddexp(log m_d, log r)``: a target that dominates its row
    is ``d``, and its small ``-log q = log1p(r / m_d)`` keeps float32's relative precision; any
    other target has ``q <= 1/2``. ``plain.exponents`` are left as they were."""
    exponents, row_top, maximum, log_e = plain.exponents, plain.row_top, plain.row_max, plain.log_e
    assert exponents is not None and row_top is not None and maximum is not None and log_e is not None  # made by softmax_terms
    excess = shift - shift.max()
    factors = np.exp(excess).astype(np.float32)
    log_m = log_e + excess[cols]
    if len(row) == len(rows_x):  # a target per row (every row has one)
        left_out, log_m_left_out = np.empty_like(cols), np.empty_like(log_m)
        left_out[row], log_m_left_out[row] = cols, log_m
    else:
        log_m_left_out = np.full(len(rows_x), -np.inf)
        np.maximum.at(log_m_left_out, row, log_m)
        largest = log_m == log_m_left_out[row]
        left_out = row_top.copy()  # (every row has a target, so each gets one here)
        left_out[row[largest]] = cols[largest]
    moved = np.flatnonzero(left_out != row_top)  # where d is not the plain maximum, whose exponent is 0 already
    kept = exponents[moved, left_out[moved]]
    exponents[moved, left_out[moved]] = 0
    rest = np.einsum("ij,j->i", exponents, factors)  # numpy's own SIMD sum: no BLAS threads on a chunk's rows
    exponents[moved, left_out[moved]] = kept
    rest[moved] += factors[row_top[moved]]  # the plain maximum's own term there, e = 1
    with np.errstate(divide="ignore"):  # r = 0: log q = 0 at d
        log_q = log_m - np.logaddexp(log_m_left_out, np.log(rest.astype(np.float64)))[row]
    wide = np.abs(maximum) > WIDE_LOGIT
    if wide.any():  # the reference's own arithmetic there: float64 shifted logits, a shift below a logit's precision lost
        at = np.flatnonzero(wide[row])
        shifted = rows_x[row[at]].astype(np.float64) + shift
        with np.errstate(invalid="ignore", over="ignore"):
            shifted -= shifted.max(axis=1)[:, None]
            log_q[at] = shifted[np.arange(len(at)), cols[at]] - np.log(np.exp(shifted).sum(axis=1))
    return SoftmaxTerms(q=np.exp(log_q).astype(np.float32), log_q=log_q)
