"""``lossaudit sweep``: every (gamma, alpha) setting from one pass over the data, each setting's
numbers those of ``compare`` run once for it, and the cumulative loss distributions (the focal
loss paper's Figure 4) within their stated bounds of a direct sort of the element losses."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from rich.cells import cell_len

from lossaudit import api, losses
from lossaudit.io.dataset import DataPlan, LoadOptions, _Reader, plan
from lossaudit.io.readers import read_batches
from lossaudit.sweep import run as sweeping
from lossaudit.sweep.histogram import SUB_BINS
from lossaudit.sweep.render import render_text
from tests.conftest import write_npz

ROOT = Path(__file__).resolve().parent.parent
DETECTION = ROOT / "examples" / "detection.npz"
GAMMAS, ALPHAS = (0.0, 0.5, 2.0, 5.0), (0.25, 0.75, -1.0)


@pytest.fixture(scope="module")
def swept():
    return sweeping.sweep(plan(read_batches([DETECTION])), GAMMAS, ALPHAS, chunk_rows=3000, workers=2)


def test_each_dump_file_is_read_once_and_each_row_decoded_once(tmp_path, monkeypatch):
    """Two dump files: each opened once, each row range decoded once, no row read again (the two
    workers are threads here, so that this process sees every call)."""
    from lossaudit.compare.engine import parallel
    from lossaudit.io import readers

    monkeypatch.setattr(parallel, "FORK", False)

    rng = np.random.default_rng(0)
    paths = [write_npz(tmp_path / f"b{i}.npz", logits=rng.normal(-2, 2, (700, 5)).astype(np.float32), targets=rng.integers(0, 6, 700)) for i in (0, 1)]
    opened, decoded = [], []
    read_npz, decode = readers._read_npz, _Reader.decode
    monkeypatch.setattr(readers, "_read_npz", lambda path: opened.append(path) or read_npz(path))
    monkeypatch.setattr(_Reader, "decode", lambda self, span, **options: decoded.append(span) or decode(self, span, **options))
    monkeypatch.setattr(DataPlan, "read_rows", lambda self, rows: pytest.fail("a row was read again"))
    monkeypatch.setattr(sweeping, "stream_pass", _with_small_chunks(sweeping.stream_pass))
    document = sweeping.run(paths, LoadOptions(), "0,1,2,3,5", "0.25,0.5,-1")
    assert sorted(opened) == sorted(paths)
    assert sorted(decoded) == [(0, start, start + 100) for start in range(0, 700, 100)] + [(1, start, start + 100) for start in range(0, 700, 100)]
    assert len(document["settings"]) == 15 and len(document["cumulative"]) == 5


def _with_small_chunks(stream_pass):
    def run(data, make, chunk_rows=None, workers=None, progress=None):
        return stream_pass(data, make, 100, 2, progress)

    return run


@pytest.mark.parametrize("gamma", GAMMAS)
@pytest.mark.parametrize("alpha", ALPHAS)
def test_each_setting_equals_compare_run_for_it(swept, gamma, alpha):
    row = next(r for r in swept["settings"] if r["gamma"] == gamma and r["alpha"] == alpha)
    report = api.compare(DETECTION, losses=["focal"], alpha=alpha, gamma=gamma).to_dict()
    focal, cells = report["losses"]["focal"], report["quadrants"]["cells"]
    for key in (
        "sum",
        "mean",
        "positive_share",
        "easy_negative_share",
        "very_hard_share",
        "gradient_mean",
        "gradient_positive_share",
        "gradient_easy_negative_share",
        "gradient_very_hard_share",
    ):
        assert row[key] == pytest.approx(focal[key], rel=1e-6, abs=1e-9), key
    for key in ("share", "gradient_share"):
        rare = cells["rare_easy"][key]["focal"] + cells["rare_hard"][key]["focal"]
        assert row[("" if key == "share" else "gradient_") + "rare_share"] == pytest.approx(rare, rel=1e-6, abs=1e-9)
        np.testing.assert_allclose([c[key] for c in row["per_class"]], [c[key]["focal"] for c in report["per_class"]], rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose([d[key] for d in row["per_difficulty"]], [d[key]["focal"] for d in report["per_difficulty"]], rtol=1e-6, atol=1e-9)
    by_share = sorted(report["per_class"], key=lambda c: c["share"]["focal"], reverse=True)
    assert row["top_classes"] == [c["name"] for c in by_share[:3]]


def _exact_cumulative(h: np.ndarray, fractions) -> np.ndarray:
    """The smallest fraction f of the elements' losses over the total, from a full sort (a
    fractional element counted in part)."""
    ordered = np.sort(h)
    cumulative = np.concatenate([[0.0], np.cumsum(ordered)])
    wanted = np.asarray(fractions) * len(h)
    whole = np.floor(wanted).astype(int)
    part = np.where(whole < len(h), ordered[np.minimum(whole, len(h) - 1)] * (wanted - whole), 0.0)
    return (cumulative[whole] + part) / cumulative[-1]


def _check_cumulative(document, logits, targets, positive):
    """Every cumulative share within its bound above the sort (never below it, up to rounding),
    bounds ≤ 1/256."""
    x, y = torch.from_numpy(logits).double(), torch.from_numpy(targets).double()
    for item in document["cumulative"]:
        h = losses.focal(x, y, alpha=-1, gamma=item["gamma"]).numpy()  # the reference, before alpha_t
        for which, chosen in (("positives", positive), ("negatives", ~positive)):
            got, bound = np.array(item[which]["share"]), np.array(item[which]["error_bound"])
            exact = _exact_cumulative(h[chosen], item["fractions"])
            assert item[which]["elements"] == int(chosen.sum())
            assert (bound <= 1 / SUB_BINS).all()
            # 1e-6: the histogram keeps float32 losses (exp, log1p and the power in float32)
            assert (got >= exact - 1e-6).all() and (got <= exact + bound + 1e-6).all(), (item["gamma"], which, np.max(got - exact))


def test_cumulative_loss_matches_a_direct_sort(swept):
    with np.load(DETECTION) as dump:
        logits, labels = dump["logits"].reshape(-1, 20), dump["targets"].reshape(-1)
    kept = labels >= 0
    targets = np.eye(21, dtype=np.float32)[np.where(kept, labels, 20)][:, :20]
    _check_cumulative(swept, logits[kept].reshape(-1), targets[kept].reshape(-1), targets[kept].reshape(-1) == 1)


def test_cumulative_loss_with_soft_targets_and_masks(tmp_path):
    """Soft targets (positives y ≥ 0.5), an element mask and a non-finite logit left out."""
    rng = np.random.default_rng(4)
    logits = rng.normal(0, 3, (400, 3)).astype(np.float32)
    targets = np.where(rng.random((400, 3)) < 0.3, rng.random((400, 3)), 0).astype(np.float32)
    mask = (rng.random((400, 3)) > 0.1).astype(np.uint8)
    logits[5, 1] = np.nan
    path = write_npz(tmp_path / "soft.npz", logits=logits, targets=targets, mask=mask)
    document = sweeping.sweep(plan(read_batches([path]), LoadOptions(targets="soft")), (0.0, 1.0, 2.0), (0.25,), chunk_rows=64)
    valid = (mask == 1) & np.isfinite(logits)
    _check_cumulative(document, logits[valid], targets[valid], targets[valid] >= 0.5)


def test_cli_text_fits_80_columns_and_json_parses(run_cli, tmp_path):
    out = tmp_path / "sweep.txt"
    result = run_cli("sweep", DETECTION, "--gamma", "0,2", "--alpha", "0.25,-1", "--output", out)
    assert result.exit_code == 0, result.stderr
    text = out.read_text()
    assert "γ 2, α 0.25" in text and "Cumulative loss" in text and "∇easy neg" in text
    for width in (60, 80):
        lines = render_text(sweeping.sweep(plan(read_batches([DETECTION])), (0.0, 2.0), (0.25, -1.0)), width).splitlines()
        assert max(cell_len(line) for line in lines) <= width and "γ 2 negatives" in "\n".join(lines)
    result = run_cli("sweep", DETECTION, "--gamma", "2", "--alpha", "0.25", "--format", "json")
    document = json.loads(result.stdout)
    assert [(r["gamma"], r["alpha"]) for r in document["settings"]] == [(2.0, 0.25)]
    assert len(document["cumulative"][0]["positives"]["share"]) == len(document["cumulative"][0]["fractions"])


@pytest.mark.parametrize(
    ("arguments", "says"),
    [
        (["--gamma", "0,x"], "--gamma 0,x: 'x' is not a number"),
        (["--gamma", ""], "--gamma: empty"),
        (["--gamma", ",,"], "--gamma: empty"),
        (["--gamma", "-1"], "--gamma -1: -1 is out of range"),
        (["--alpha", "0.25,2"], "--alpha 0.25,2: 2 is out of range"),
        (["--bins", "0"], "--bins 0: expected at least 1"),
    ],
)
def test_bad_lists_are_one_line_errors(run_cli, arguments, says):
    result = run_cli("sweep", DETECTION, *arguments)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lossaudit: error: ") and says in lines[0], result.stderr


def test_no_dump_and_a_missing_file_are_one_line_errors(run_cli, tmp_path):
    for arguments in ([], [tmp_path / "missing.npz"]):
        result = run_cli("sweep", *arguments)
        assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_loss_bins_from_the_bits_are_frexps():
    """A normal float32 loss is binned from its bits; subnormal ones and 0 from ``frexp``: the
    same bins as ``frexp`` gives every one (the octave and the first 8 bits of the fraction)."""
    from lossaudit.sweep.histogram import LossHistogram, _frexp_keys

    rng = np.random.default_rng(3)
    tiny = np.finfo(np.float32).tiny
    edges = np.array(
        [0, 1e-45, 1e-40, tiny, np.nextafter(tiny, np.float32(0)), np.nextafter(tiny, np.float32(1)), 0.5, 1, 2 - 2**-23, np.finfo(np.float32).max],
        dtype=np.float32,
    )
    h = np.concatenate(
        [edges, rng.random(10_000).astype(np.float32), np.exp(rng.uniform(-87, 88, 10_000)).astype(np.float32), (rng.random(1_000) * tiny).astype(np.float32)]
    )
    keys = LossHistogram((2.0,))._keys(h)
    np.testing.assert_array_equal(keys, _frexp_keys(h))
    assert keys[0] == 0 and keys.min() >= 0 and keys.max() < LossHistogram((2.0,)).size
