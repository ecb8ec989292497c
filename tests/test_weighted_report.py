"""The report of a weighted dump (issue 24), in every format, against numbers worked out here from
the elements: Horvitz–Thompson shares and their delta-method standard errors, what the report says
it is estimated from, what it marks plug-in; and an unweighted dump's report without any of it."""

import json

import numpy as np
import pytest

from lossaudit.compare.report.types import Report
from tests.conftest import write_npz

ROWS, CLASSES = 60, 4


def weighted_dump(seed: int = 0) -> dict[str, np.ndarray]:
    """One-hot targets, a few positives, per-element weights: 1 at the positives and at some
    negatives, 2, 5 or 10 at the others."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(-1.5, 2.0, (ROWS, CLASSES)).astype(np.float32)
    targets = np.zeros((ROWS, CLASSES), dtype=np.uint8)
    targets[rng.choice(ROWS, 12, replace=False), rng.integers(0, CLASSES, 12)] = 1
    weights = rng.choice([1.0, 2.0, 5.0, 10.0], (ROWS, CLASSES)).astype(np.float32)
    weights[targets == 1] = 1.0
    return {"logits": logits, "targets": targets, "weights": weights}


def bce(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Element BCE with logits in float64: softplus(x) - y x."""
    x = x.astype(np.float64)
    return np.logaddexp(0.0, x) - y * x


def ht_share_and_se(values: np.ndarray, weights: np.ndarray, inside: np.ndarray) -> tuple[float, float]:
    """R = Σ w y 1[G] / Σ w y and sqrt(Σ w (w - 1) z²), z = (1[G] - R) y / Y, over the elements."""
    total = (weights * values).sum()
    share = (weights * values * inside).sum() / total
    z = (inside - share) * values / total
    return float(share), float(np.sqrt((weights * (weights - 1) * z**2).sum()))


@pytest.fixture
def dump(tmp_path):
    arrays = weighted_dump()
    return write_npz(tmp_path / "weighted.npz", **arrays), arrays


def test_shares_and_errors_from_the_elements(dump, compare_json):
    """bce's and focal's (alpha 0.25, gamma 2) positive, easy-negative and very-hard shares and
    their standard errors, per class too, as worked out from the elements in numpy."""
    path, arrays = dump
    report = compare_json(path, "--losses", "bce,focal")
    x, y, w = arrays["logits"].astype(np.float64), arrays["targets"].astype(np.float64), arrays["weights"].astype(np.float64)
    p = 1 / (1 + np.exp(-x))
    g = np.abs(p - y)
    alpha_t = np.where(y == 1, 0.25, 0.75)
    focal = alpha_t * (1 - np.where(y == 1, p, 1 - p)) ** 2 * bce(x, y)
    groups = {"positive_share": y == 1, "easy_negative_share": (y == 0) & (g < 0.1), "very_hard_share": g >= 0.9}
    for loss, values in (("bce", bce(x, y)), ("focal", focal)):
        numbers = report["losses"][loss]
        assert numbers["sum"] == pytest.approx((w * values).sum(), rel=1e-6)
        assert numbers["sum_se"] == pytest.approx(np.sqrt((w * (w - 1) * values**2).sum()), rel=1e-6)
        for key, inside in groups.items():
            share, se = ht_share_and_se(values, w, inside.astype(float))
            assert numbers[key] == pytest.approx(share, rel=1e-6, abs=1e-12), (loss, key)
            assert numbers[key + "_se"] == pytest.approx(se, rel=1e-6, abs=1e-12), (loss, key)
        for row in report["per_class"]:
            inside = np.zeros_like(values)
            inside[:, row["index"]] = 1
            share, se = ht_share_and_se(values, w, inside)
            assert row["share"][loss] == pytest.approx(share, rel=1e-6)
            assert row["share_se"][loss] == pytest.approx(se, rel=1e-6)
    estimate = report["estimate"]
    assert estimate["sampled_elements"] == ROWS * CLASSES
    assert estimate["population_source"] == "sum of weights"
    assert estimate["population_elements"] == pytest.approx(w.sum())
    assert {"ghm_weights", "rare_classes"} <= set(estimate["plug_in"])
    assert report["schema_version"] == 7
    assert Report.from_dict(report).to_dict() == report


def test_every_format_says_it_is_an_estimate(dump, run_cli):
    path, arrays = dump
    population = f"{int(round(float(arrays['weights'].astype(np.float64).sum()))):,}"
    said = f"{ROWS * CLASSES:,} sampled elements of {population}"
    text = run_cli("compare", path, "--losses", "bce,focal,ghm").stdout
    assert said in text and "±" in text and "plug-in" in text and "GHM-C's bin weights" in text
    report = json.loads(run_cli("compare", path, "--losses", "bce,focal,ghm", "--format", "json").stdout)
    share, se = report["losses"]["bce"]["positive_share"], report["losses"]["bce"]["positive_share_se"]
    assert f"{100 * share:.1f}% ± {100 * se:.1f}" in text  # the losses table: share ± its error in points
    for fmt in ("markdown", "html", "github", "junit"):
        out = run_cli("compare", path, "--losses", "bce,focal,ghm", "--format", fmt).stdout
        assert said in out, fmt
    assert "± " in run_cli("compare", path, "--losses", "bce,focal,ghm", "--format", "markdown").stdout
    assert report["summary"][0]["rule"] == "estimate"


def test_unit_weights_change_nothing_but_add_zero_errors(tmp_path, compare_json):
    """Every weight 1: the sums and shares are the unweighted dump's, every standard error is 0."""
    arrays = weighted_dump()
    plain = compare_json(write_npz(tmp_path / "plain.npz", logits=arrays["logits"], targets=arrays["targets"]), "--losses", "bce,focal")
    ones = compare_json(
        write_npz(tmp_path / "ones.npz", logits=arrays["logits"], targets=arrays["targets"], weights=np.ones((ROWS, CLASSES), np.float32)),
        "--losses",
        "bce,focal",
    )
    for loss in ("bce", "focal"):
        for key in ("sum", "positive_share", "easy_negative_share", "very_hard_share"):
            assert ones["losses"][loss][key] == pytest.approx(plain["losses"][loss][key], rel=1e-7)  # float32 losses, summed in another order
            assert ones["losses"][loss][key + "_se"] == 0.0
    assert "estimate" not in plain


def test_an_unweighted_report_has_no_estimate(tmp_path, compare_json, run_cli):
    arrays = weighted_dump()
    path = write_npz(tmp_path / "plain.npz", logits=arrays["logits"], targets=arrays["targets"])
    report = compare_json(path)

    def keys(value):
        if isinstance(value, dict):
            for key, item in value.items():
                yield key
                yield from keys(item)
        elif isinstance(value, list):
            for item in value:
                yield from keys(item)

    assert "estimate" not in report and not [key for key in keys(report) if key.endswith("_se")]
    for fmt in ("text", "markdown", "github", "junit"):
        out = run_cli("compare", path, "--format", fmt).stdout
        assert "±" not in out and "estimate" not in out.lower(), fmt


def test_integer_weights_read_as_repeated_rows(tmp_path, run_cli):
    """Per-row weights 1..4: compare's and sweep's numbers are those of the dump with each row
    repeated as many times, unweighted (the cumulative histograms' within their error bounds)."""
    arrays = weighted_dump(1)
    repeat = np.random.default_rng(2).integers(1, 5, ROWS)
    weighted = write_npz(tmp_path / "weighted.npz", logits=arrays["logits"], targets=arrays["targets"], weights=repeat.astype(np.float32))
    repeated = write_npz(tmp_path / "repeated.npz", logits=np.repeat(arrays["logits"], repeat, axis=0), targets=np.repeat(arrays["targets"], repeat, axis=0))
    a = json.loads(run_cli("compare", weighted, "--losses", "bce,focal", "--format", "json").stdout)
    b = json.loads(run_cli("compare", repeated, "--losses", "bce,focal", "--format", "json").stdout)
    for loss in ("bce", "focal"):
        for key in ("sum", "positive_share", "easy_negative_share", "very_hard_share"):
            assert a["losses"][loss][key] == pytest.approx(b["losses"][loss][key], rel=1e-7)
    sweep_a = json.loads(run_cli("sweep", weighted, "--gamma", "0,2", "--alpha", "0.25", "--format", "json").stdout)
    sweep_b = json.loads(run_cli("sweep", repeated, "--gamma", "0,2", "--alpha", "0.25", "--format", "json").stdout)
    for item_a, item_b in zip(sweep_a["cumulative"], sweep_b["cumulative"]):
        for which in ("positives", "negatives"):
            assert item_a[which]["elements"] == item_b[which]["elements"]
            # both overestimate the same shares within their bounds (the repeated rows' easy negatives are binned by logit)
            bound = np.maximum(item_a[which]["error_bound"], item_b[which]["error_bound"])
            assert (np.abs(np.subtract(item_a[which]["share"], item_b[which]["share"])) <= bound + 1e-9).all()
    for row_a, row_b in zip(sweep_a["settings"], sweep_b["settings"]):
        assert row_a["easy_negative_share"] == pytest.approx(row_b["easy_negative_share"], rel=1e-7)
        assert "easy_negative_share_se" in row_a and "easy_negative_share_se" not in row_b
    assert "cumulative_shares" in sweep_a["estimate"]["plug_in"] and "estimate" not in sweep_b
    assert sweep_a["schema_version"] == 4


def test_sweep_text_says_it_is_an_estimate(dump, run_cli):
    path, _ = dump
    text = run_cli("sweep", path, "--gamma", "0,2", "--alpha", "0.25").stdout
    assert "sampled elements of" in text and "±" in text and "plug-in" in text


def test_explain_marks_a_sampled_ghm_weight_plug_in(dump, tmp_path, run_cli):
    path, arrays = dump
    plain = write_npz(tmp_path / "plain.npz", logits=arrays["logits"], targets=arrays["targets"])
    assert "plug-in" in run_cli("explain", "--logit", "1.5", "--target", "0", "--dump", path).stdout
    assert "plug-in" not in run_cli("explain", "--logit", "1.5", "--target", "0", "--dump", plain).stdout


def test_rare_classes_share_and_error(tmp_path, compare_json):
    """Positives 20, 20, 20 and 1: class 3 is rare (below a quarter of the median 20, spread 20×).
    bce's rare share and its error in the imbalance section and the quadrants, from the elements;
    focal with a per-class alpha has no error (the tally keeps no second moments of its parts)."""
    rng = np.random.default_rng(5)
    rows = 200
    logits = rng.normal(-1.0, 2.0, (rows, CLASSES)).astype(np.float32)
    targets = np.zeros((rows, CLASSES), dtype=np.uint8)
    chosen = rng.choice(rows, 61, replace=False)
    targets[chosen, [0] * 20 + [1] * 20 + [2] * 20 + [3]] = 1
    weights = rng.choice([1.0, 4.0, 20.0], (rows, CLASSES)).astype(np.float32)
    weights[targets == 1] = 1.0
    report = compare_json(write_npz(tmp_path / "rare.npz", logits=logits, targets=targets, weights=weights), "--losses", "bce,focal")
    assert report["quadrants"]["rare_classes"] == ["3"]
    x, y, w = logits.astype(np.float64), targets.astype(np.float64), weights.astype(np.float64)
    inside = np.zeros_like(x)
    inside[:, 3] = 1
    share, se = ht_share_and_se(bce(x, y), w, inside)
    entries = {entry["label"]: entry for entry in report["imbalance"]["losses"]}
    assert entries["bce"]["rare_share"] == pytest.approx(share, rel=1e-6)
    assert entries["bce"]["rare_share_se"] == pytest.approx(se, rel=1e-6)
    assert report["quadrants"]["rare_share_se"]["bce"] == pytest.approx(se, rel=1e-6)
    assert entries["focal with alpha per class"]["rare_share_se"] is None


def test_the_plots_say_they_are_estimates(dump, tmp_path, run_cli):
    pytest.importorskip("matplotlib")
    path, _ = dump
    for command in ("compare", "sweep"):
        figure = tmp_path / f"{command}.svg"
        assert run_cli(command, path, "--plot", figure).exit_code == 0
        assert "Estimates from a weighted sample" in figure.read_text()


def test_the_api_gives_the_estimate_and_errors(dump, tmp_path):
    import lossaudit

    path, arrays = dump
    report = lossaudit.compare(path, losses=["bce"])
    assert report.estimate["sampled_elements"] == ROWS * CLASSES
    assert report.losses["bce"].details["positive_share_se"] > 0
    assert report.per_class[0].details["share_se"]["bce"] > 0
    plain = lossaudit.compare(logits=arrays["logits"], targets=arrays["targets"], losses=["bce"])
    assert plain.estimate is None and "positive_share_se" not in plain.losses["bce"].details
