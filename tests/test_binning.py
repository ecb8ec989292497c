"""Where a gradient norm falls (:class:`lossaudit.compare.engine.binning.Intervals`): the table lookup
gives what a search of the edges gives, at the edges and between them."""

from __future__ import annotations

import numpy as np
import pytest

from lossaudit.compare.engine.binning import Intervals

pytestmark = pytest.mark.torch_free  # also run without torch, on every Python (.ci/run)


@pytest.mark.parametrize(("bins", "ghm_bins"), [(10, 10), (7, 30), (1, 1), (3, 1000), (100, 99), (1000, 999)])
def test_the_lookup_is_the_search(bins, ghm_bins):
    intervals = Intervals(bins, ghm_bins)
    rng = np.random.default_rng(bins * ghm_bins)
    edges = intervals.edges
    g32 = np.concatenate(
        [rng.random(20_000), edges, np.nextafter(edges, np.float32(0)), np.nextafter(edges, np.float32(2)), [0, 1e-45, np.nextafter(np.float32(1), 0), 1]]
    ).astype(np.float32)
    for g in (g32, g32.astype(np.float64), rng.random(20_000)):  # float64 norms compare as they are
        np.testing.assert_array_equal(intervals.index(g), np.searchsorted(edges, g, side="right"))


def test_edges_closer_than_the_table_are_searched():
    assert Intervals(1000, 999)._lookup is None and Intervals(10, 10)._lookup is not None
