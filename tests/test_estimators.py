"""Issue 24's estimator tests: a 1% weighted sample of a 20M-element detection-like dump, over 24
seeds, against the full dump.

The dump: 250,000 rows × 80 classes of float32 logits from a seeded numpy generator; one positive
per 1,000 elements (20,000 rows with one target each, classes drawn with frequencies ∝ 1/k^0.7),
2% of the negatives not easy (p ≥ 0.1), every other negative easy (p < 0.1). Each seed samples it
with the Recorder's sampler (:func:`lossaudit.record.sample_batch`, rate 0.01: rows with a target
whole, the other rows' non-easy elements with weight 1 and their easy negatives with weight 100),
writes the weighted batch as ``compare`` reads it and compares it. The truth is ``compare`` on the
full dump.

What must hold (the issue's "Must show"):
- the Horvitz–Thompson sums are unbiased: over the seeds, the mean of bce's and focal's sums and of
  the estimated element count lies within 3 standard errors of that mean (the seeds' standard
  deviation / sqrt(seeds)) of the full dump's. GHM-C's sum is left out: its bin weights are plug-in
  estimates (weights from estimated counts), not a Horvitz–Thompson sum, and the report gives it no
  standard error;
- each loss's positive, easy-negative and very-hard shares lie within 3 reported standard errors of
  the full dump's in at least 95% of the seeds;
- the 10 largest classes' shares (each loss's 10 classes with the largest share of the full dump)
  are within 1 percentage point in every seed.
"""

import numpy as np
import pytest

import lossaudit

torch = pytest.importorskip("torch")
from lossaudit.record import sample_batch  # noqa: E402

ROWS, CLASSES = 250_000, 80
SEEDS = 24
RATE = 0.01
LOSSES = ["bce", "focal", "ghm"]
SHARES = ("positive_share", "easy_negative_share", "very_hard_share")
EASY_LOGIT = float(np.log(0.1 / 0.9))
"""logit(0.1): a negative below it is easy (g = p < 0.1)."""


def detection_dump(seed: int = 2024) -> tuple[np.ndarray, np.ndarray]:
    """``(logits (250000, 80) float32, index targets (250000,), background = 80)``."""
    rng = np.random.default_rng(seed)
    frequencies = 1 / np.arange(1, CLASSES + 1) ** 0.7
    logits = rng.normal(-5.0, 1.0, (ROWS, CLASSES)).astype(np.float32)
    np.minimum(logits, EASY_LOGIT - 0.1, out=logits)  # easy negatives: p < 0.1
    not_easy = rng.random((ROWS, CLASSES)) < 0.02
    logits[not_easy] = rng.uniform(EASY_LOGIT + 0.1, 4.0, not_easy.sum())
    positives = ROWS * CLASSES // 1000
    rows = rng.choice(ROWS, positives, replace=False)
    classes = rng.choice(CLASSES, positives, p=frequencies / frequencies.sum())
    targets = np.full(ROWS, CLASSES, dtype=np.int64)
    targets[rows] = classes
    logits[rows, classes] = rng.normal(1.0, 2.0, positives)
    return logits, targets


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The full dump's report and one weighted sample's report per seed (``to_dict()`` documents)."""
    logits, targets = detection_dump()
    assert logits.size >= 20_000_000
    full = lossaudit.compare(logits=logits, targets=targets, losses=LOSSES).to_dict()
    folder = tmp_path_factory.mktemp("samples")
    samples = []
    logits_t, targets_t = torch.from_numpy(logits), torch.from_numpy(targets)
    for seed in range(SEEDS):
        batch = sample_batch(logits_t, targets_t, rate=RATE, generator=torch.Generator().manual_seed(seed))
        path = folder / f"seed{seed}.npz"
        np.savez(path, **batch)
        samples.append(lossaudit.compare(path, losses=LOSSES).to_dict())
        path.unlink()
    return full, samples


def test_the_sample_is_small_and_says_so(runs):
    full, samples = runs
    for report in samples:
        estimate = report["estimate"]
        assert estimate["population_elements"] == ROWS * CLASSES and estimate["population_source"] == "recorded"
        # rows with a target whole (about 20,000 × 80), 2% of the rest's negatives, 1% of their easy ones
        assert estimate["sampled_elements"] < 0.12 * ROWS * CLASSES
    assert "estimate" not in full


def test_sums_are_unbiased(runs):
    full, samples = runs
    for loss in ("bce", "focal"):
        sums = np.array([report["losses"][loss]["sum"] for report in samples])
        error = sums.std(ddof=1) / np.sqrt(len(sums))
        assert abs(sums.mean() - full["losses"][loss]["sum"]) <= 3 * error, loss
        # the reported standard error describes the spread over the seeds
        assert np.mean([report["losses"][loss]["sum_se"] for report in samples]) == pytest.approx(sums.std(ddof=1), rel=0.4), loss
    assert all(report["losses"]["ghm"]["sum_se"] is None for report in samples)  # plug-in weights: no standard error
    elements = np.array([report["estimate"]["estimated_elements"] for report in samples])
    assert abs(elements.mean() - full["input"]["valid_elements"]) <= 3 * elements.std(ddof=1) / np.sqrt(len(elements))


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("share", SHARES)
def test_shares_within_three_reported_standard_errors(runs, loss, share):
    full, samples = runs
    truth = full["losses"][loss][share]
    inside = [abs(report["losses"][loss][share] - truth) <= 3 * report["losses"][loss][share + "_se"] for report in samples]
    assert np.mean(inside) >= 0.95, (loss, share, truth, [(r["losses"][loss][share], r["losses"][loss][share + "_se"]) for r in samples])


@pytest.mark.parametrize("loss", LOSSES)
def test_largest_classes_within_one_point(runs, loss):
    full, samples = runs
    truth = {row["name"]: row["share"][loss] for row in full["per_class"]}
    largest = sorted(truth, key=truth.get, reverse=True)[:10]
    for report in samples:
        estimated = {row["name"]: row["share"][loss] for row in report["per_class"]}
        for name in largest:
            assert abs(estimated[name] - truth[name]) <= 0.01, (loss, name)
