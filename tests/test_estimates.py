"""The standard errors of :mod:`lossaudit.compare.report.estimates` against values derived here,
element by element: the linearised (delta-method) variance of a ratio of Horvitz–Thompson sums,
and the spread of the estimates over many Poisson samples of one population."""

import numpy as np
import pytest

from lossaudit.compare.report.estimates import class_share_ses, share_se, sum_se

SHAPE = (3, 2, 2, 4)
"""Tables as the tally keeps them: class × positive × difficulty bin × difficulty level."""


def tables(cells: np.ndarray, weights: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The sums Σ w y and second moments Σ w (w - 1) y² per cell, as the tally keeps them."""
    sums, moments = np.zeros(SHAPE), np.zeros(SHAPE)
    index = tuple(cells.T)
    np.add.at(sums, index, weights * values)
    np.add.at(moments, index, weights * (weights - 1) * values**2)
    return sums, moments


def linearised_se(weights: np.ndarray, values: np.ndarray, inside: np.ndarray) -> float:
    """sqrt(Σ w (w - 1) z²) with z_i = (1[i in G] - R) y_i / Y, straight from the sampled elements."""
    total = (weights * values).sum()
    share = (weights * values * inside).sum() / total
    z = (inside - share) * values / total
    return float(np.sqrt((weights * (weights - 1) * z**2).sum()))


def test_tiny_sample_by_hand():
    """Six sampled elements: two certain (w = 1), four sampled at rates 1/2, 1/4, 1/10, 1/10. The
    positives (cells [:, 1]) are elements 0 and 3: Y = 1·2 + 4·0.5 + 1·1 + 2·3 + 10·0.2 + 10·0.1 = 14,
    Y_G = 2 + 6 = 8, R = 4/7; z = (1[G] - R) y / Y and V = Σ w(w - 1) z², worked out in numpy
    from the elements, not from any table."""
    cells = np.array([[0, 1, 1, 3], [0, 0, 0, 0], [1, 0, 0, 1], [1, 1, 1, 2], [2, 0, 0, 0], [2, 0, 0, 0]])
    weights = np.array([1.0, 4.0, 1.0, 2.0, 10.0, 10.0])
    values = np.array([2.0, 0.5, 1.0, 3.0, 0.2, 0.1])
    sums, moments = tables(cells, weights, values)
    assert sums.sum() == pytest.approx(14.0)
    positives = cells[:, 1] == 1
    expected = linearised_se(weights, values, positives.astype(float))
    assert share_se(sums, moments, lambda t: t[:, 1]) == pytest.approx(expected, rel=1e-12)
    # the same by the closed form of the module docstring, with the numbers above
    r, s2_in, s2_all = 8 / 14, 2 * 1 * 9.0, 4 * 3 * 0.25 + 2 * 1 * 9.0 + 10 * 9 * 0.04 + 10 * 9 * 0.01
    assert expected == pytest.approx(np.sqrt(((1 - r) ** 2 * s2_in + r**2 * (s2_all - s2_in)) / 14**2), rel=1e-12)
    # class 2 (cells [2]): only sampled elements, the easy level (cells [..., 0]) of every class
    for group, inside in ((lambda t: t[2], cells[:, 0] == 2), (lambda t: t[..., 0], cells[:, 3] == 0)):
        assert share_se(sums, moments, group) == pytest.approx(linearised_se(weights, values, inside.astype(float)), rel=1e-12)
    assert sum_se(moments) == pytest.approx(np.sqrt((weights * (weights - 1) * values**2).sum()), rel=1e-12)


def test_every_class_share_at_once_is_each_class_share():
    """``class_share_ses``: each class's share (cells ``[c]``) at once, as the linearised SE of the
    sampled elements in that class; None for every class where the total is 0."""
    rng = np.random.default_rng(8)
    cells = np.stack([rng.integers(0, size, 200) for size in SHAPE], axis=1)
    weights = rng.choice([1.0, 2.0, 5.0, 50.0], 200)
    values = rng.random(200)
    sums, moments = tables(cells, weights, values)
    found = class_share_ses(sums, moments)
    assert len(found) == SHAPE[0]
    for c in range(SHAPE[0]):
        assert found[c] == pytest.approx(linearised_se(weights, values, (cells[:, 0] == c).astype(float)), rel=1e-12)
    assert class_share_ses(np.zeros(SHAPE), np.zeros(SHAPE)) == [None] * SHAPE[0]


def test_certain_elements_have_no_error():
    """Every element kept with certainty (w = 1): the sample is the population, every SE is 0."""
    cells = np.array([[0, 1, 0, 0], [1, 0, 1, 3]])
    sums, moments = tables(cells, np.ones(2), np.array([1.0, 2.0]))
    assert share_se(sums, moments, lambda t: t[:, 1]) == 0.0
    assert sum_se(moments) == 0.0


def test_empty_total_has_no_share():
    assert share_se(np.zeros(SHAPE), np.zeros(SHAPE), lambda t: t[:, 1]) is None


def test_standard_errors_match_the_spread_over_samples():
    """A population of 3,000 elements: positives and hard elements kept with certainty, easy
    negatives Poisson-sampled at rate 0.05 (weight 20), as the Recorder samples. Over 3,000 samples
    the standard deviation of each estimated share (positives', easy negatives', class 0's) and of
    the estimated total is within 15% of the mean standard error reported."""
    rng = np.random.default_rng(24)
    n = 3000
    cells = np.stack([rng.integers(0, 3, n), (rng.random(n) < 0.02).astype(int), rng.integers(0, 2, n), np.zeros(n, int)], axis=1)
    easy = (cells[:, 1] == 0) & (rng.random(n) < 0.9)
    cells[~easy, 3] = rng.integers(1, 4, (~easy).sum())
    values = np.where(easy, rng.exponential(0.02, n), rng.exponential(1.0, n))
    rate = np.where(easy, 0.05, 1.0)
    groups = {"positives": lambda t: t[:, 1], "easy negatives": lambda t: t[:, 0, :, 0], "class 0": lambda t: t[0]}
    estimates = {name: [] for name in [*groups, "total"]}
    errors = {name: [] for name in estimates}
    for _ in range(3000):
        kept = rng.random(n) < rate
        sums, moments = tables(cells[kept], 1 / rate[kept], values[kept])
        for name, group in groups.items():
            estimates[name].append(group(sums).sum() / sums.sum())
            errors[name].append(share_se(sums, moments, group))
        estimates["total"].append(sums.sum())
        errors["total"].append(sum_se(moments))
    population = tables(cells, np.ones(n), values)[0]
    assert np.mean(estimates["total"]) == pytest.approx(population.sum(), rel=3 * np.std(estimates["total"]) / np.sqrt(3000) / population.sum())
    for name in estimates:
        assert np.std(estimates[name]) == pytest.approx(np.mean(errors[name]), rel=0.15), name
