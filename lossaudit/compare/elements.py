"""Element losses in numpy, for elements taken one by one (any target, any logit).

The streaming engine's dense pass (:mod:`lossaudit.compare.dense`) covers the bulk of the data:
negatives in the easiest difficulty interval. The elements it takes out — negatives with a harder
logit (:func:`negative_terms`), non-zero targets (:func:`sigmoid_terms`), the rows hard-negative
mining keeps — and the softmax rows go through these functions, which follow the reference
functions of :mod:`lossaudit.losses` (the contract; the tests compare them):

- ``p = sigmoid(x)`` and ``g = |p - y|`` in float32, as the reference bins them;
- ``bce = max(x, 0) - x y + log1p(exp(-|x|))``;
- ``focal = alpha_t (1 - p_t)^gamma bce`` with ``1 - p_t = p + y - 2 p y``,
  ``alpha_t = alpha y + (1 - alpha)(1 - y)`` (alpha -1: 1; a per-class alpha taken at the class);
- ``centernet``: ``p_c = clip(p, 1e-4, 1 - 1e-4)``; ``-log(p_c) (1 - p_c)^2`` at a peak (y = 1),
  ``-log(1 - p_c) p_c^2 (1 - y)^4`` elsewhere;
- softmax terms ``-w_c y_c (1 - q_c)^gamma log q_c`` with ``q = softmax(x)`` over the row.

The logit's ``exp`` and ``log1p`` come from :func:`sigmoid_parts`, which the dense pass also
uses (its buffers are gathered at the elements taken out). Negatives (y = 0) are computed in
float32, as the dense pass computes them; targets, whose BCE can cancel (``x - x y``), in float64.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CENTERNET_PROB_CLAMP = np.float32(1e-4)
"""CenterNet clamps heatmap probabilities to [1e-4, 1 - 1e-4] (:data:`lossaudit.losses.CENTERNET_PROB_CLAMP`)."""


SIGN_BIT = np.uint32(1 << 31)
"""The sign bit of a float32: setting it makes ``-|x|`` (NaN stays NaN)."""


def sigmoid_parts(x: np.ndarray, log1p_out: np.ndarray | None = None, q_out: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """From one ``e = exp(-|x|)`` per float32 logit: ``(log1p(e), q = e / (1 + e))``, float32,
    written into the given buffers (``out=``) or new arrays. ``q = sigmoid(-|x|)`` is ``p`` where
    x < 0 and ``1 - p`` elsewhere; ``log1p(e)`` is softplus(x) less ``max(x, 0)``."""
    log1p = np.empty(x.shape, dtype=np.float32) if log1p_out is None else log1p_out
    np.bitwise_or(x.view(np.uint32), SIGN_BIT, out=log1p.view(np.uint32))  # -|x| in one pass
    np.exp(log1p, out=log1p)
    q = np.add(log1p, 1, out=q_out)
    np.divide(log1p, q, out=q)
    np.log1p(log1p, out=log1p)
    return log1p, q


@dataclass(frozen=True)
class SigmoidParams:
    """The hyper-parameters of the sigmoid losses. ``alpha`` is a scalar (-1: no weighting) or a
    ``(C,)`` float64 array of per-class alphas."""

    alpha: float | np.ndarray
    gamma: float

    def alpha_t(self, y: np.ndarray, cols: np.ndarray) -> np.ndarray | float:
        """``alpha_t`` of elements with targets ``y`` in classes ``cols`` (1.0 without weighting)."""
        if isinstance(self.alpha, np.ndarray):
            alpha = self.alpha[cols]
        elif self.alpha < 0:
            return 1.0
        else:
            alpha = self.alpha
        return alpha * y + (1 - alpha) * (1 - y)

    def negative_weight(self, classes: int) -> np.ndarray:
        """``(C,)`` ``alpha_t`` of a negative (y = 0) in each class: ``1 - alpha``, or 1."""
        if isinstance(self.alpha, np.ndarray):
            return 1 - self.alpha
        return np.full(classes, 1 - self.alpha if self.alpha >= 0 else 1.0)


@dataclass
class SigmoidTerms:
    """Per-element quantities of ``(k,)`` elements (see the module docstring).

    Attributes:
        p: float32 ``sigmoid(x)``.
        g: float32 gradient norm ``|p - y|``.
        positive: bool, ``y >= 0.5`` (heatmaps: ``y == 1``).
        bce: float64 binary cross-entropy.
    """

    p: np.ndarray
    g: np.ndarray
    positive: np.ndarray
    bce: np.ndarray


def sigmoid_terms(x: np.ndarray, log1p: np.ndarray, q: np.ndarray, y: np.ndarray, heatmap: bool) -> SigmoidTerms:
    """The shared quantities of elements with float32 logits ``x``, their :func:`sigmoid_parts`
    ``log1p`` and ``q``, and float32 targets ``y`` (any: zero or not)."""
    p = np.where(x >= 0, 1 - q, q)
    x64 = x.astype(np.float64)
    bce = np.maximum(x64, 0) - x64 * y + log1p
    positive = y == 1 if heatmap else y >= 0.5
    return SigmoidTerms(p=p, g=np.abs(p - y), positive=positive, bce=bce)


def focal(terms: SigmoidTerms, y: np.ndarray, cols: np.ndarray, params: SigmoidParams) -> np.ndarray:
    """float64 sigmoid focal loss of the elements of ``terms``."""
    p = terms.p.astype(np.float64)
    return params.alpha_t(y, cols) * (p + y - 2 * p * y) ** params.gamma * terms.bce


def centernet(terms: SigmoidTerms, y: np.ndarray) -> np.ndarray:
    """float64 CenterNet penalty-reduced focal loss of the elements of ``terms``."""
    p = np.clip(terms.p, CENTERNET_PROB_CLAMP, 1 - CENTERNET_PROB_CLAMP).astype(np.float64)
    peak = y == 1
    return np.where(peak, -np.log(p) * (1 - p) ** 2, -np.log1p(-p) * p**2 * (1 - y.astype(np.float64)) ** 4)


@dataclass
class NegativeTerms:
    """float32 quantities of ``(k,)`` negatives (y = 0): ``p`` (= g), ``bce`` (softplus(x)),
    ``focal`` (``p^gamma bce``, before the weight ``1 - alpha``) and ``centernet``."""

    p: np.ndarray
    bce: np.ndarray
    focal: np.ndarray | None = None
    centernet: np.ndarray | None = None


def negative_terms(x: np.ndarray, log1p: np.ndarray, q: np.ndarray, gamma: float | None, centernet: bool) -> NegativeTerms:
    """The quantities of negatives with float32 logits ``x`` and their :func:`sigmoid_parts`;
    ``gamma`` None: no focal term."""
    p = np.where(x >= 0, 1 - q, q)
    bce = np.maximum(x, 0) + log1p
    terms = NegativeTerms(p=p, bce=bce)
    if gamma is not None:
        terms.focal = (p * p if gamma == 2 else p ** np.float32(gamma)) * bce
    if centernet:
        clamped = np.clip(p, CENTERNET_PROB_CLAMP, 1 - CENTERNET_PROB_CLAMP)
        terms.centernet = -np.log1p(-clamped) * clamped * clamped
    return terms


@dataclass
class SoftmaxTerms:
    """Softmax quantities at ``(k,)`` target elements of some rows.

    Attributes:
        q: float32 ``softmax(x)`` of the row, at the element's class.
        log_q: float64 ``log softmax(x)`` there.
    """

    q: np.ndarray
    log_q: np.ndarray

    def loss(self, y: np.ndarray, gamma: float, weight: np.ndarray | float = 1.0) -> np.ndarray:
        """float64 ``-w y (1 - q)^gamma log q`` (gamma 0, weight 1: cross-entropy)."""
        terms = -weight * y * self.log_q
        return terms * (1 - np.exp(self.log_q)) ** gamma if gamma != 0 else terms


def softmax_terms(rows_x: np.ndarray, row: np.ndarray, cols: np.ndarray) -> SoftmaxTerms:
    """Softmax of the ``(m, C)`` float32 logits ``rows_x`` over each row, taken at the elements
    ``(row, cols)`` (``row`` indexes ``rows_x``): ``log q = z - log Σ exp(z)`` with ``z = x - max``
    in float32 (the row sums pairwise; each term is at most 1 and one of them is 1), the logarithm
    in float64."""
    z = rows_x - rows_x.max(axis=1, keepdims=True)
    at = z[row, cols].astype(np.float64)
    log_q = at - np.log(np.exp(z, out=z).sum(axis=1).astype(np.float64))[row]
    return SoftmaxTerms(q=np.exp(log_q).astype(np.float32), log_q=log_q)
