"""``lossaudit.record``: the sampler keeps every row with a target and every element that is not easy
with weight 1, samples the easy negatives independently at the rate of their class (weight 1/r), so
Horvitz-Thompson sums are unbiased; every dtype and layout; the Recorder's run folders (never
overwritten, resumed, the user's umask, one run id). Expected values are computed here in numpy
float64 from the full batch, never taken from lossaudit."""

from __future__ import annotations

import math
import os
import stat
import subprocess
import sys

import numpy as np
import pytest
import torch

import lossaudit
import lossaudit.io.dataset
from lossaudit.record import sample_batch

EDGE_LOGIT = math.log(0.1 / 0.9)


def _detection_batch(rows: int, classes: int, seed: int, positive_rows: float = 0.05, hard: float = 0.03):
    """``(rows, C)`` float32 logits and class ids (background = C): easy negatives with p in
    (1e-4, 0.09), a share ``hard`` of elements with p in (0.11, 0.95), ``positive_rows`` rows labelled."""
    rng = np.random.default_rng(seed)
    logits = rng.uniform(math.log(1e-4), math.log(0.09 / 0.91), (rows, classes))
    is_hard = rng.random((rows, classes)) < hard
    logits[is_hard] = rng.uniform(math.log(0.11 / 0.89), 3.0, int(is_hard.sum()))
    labels = np.full(rows, classes)
    labelled = rng.random(rows) < positive_rows
    labels[labelled] = rng.integers(0, classes, int(labelled.sum()))
    return logits.astype(np.float32), labels


def _pseudo(batch: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(class, logit, weight) of the kept elements of the rows without a target, and the number of
    rows with a target (the stored rows)."""
    counts = batch["negatives_per_class"]
    assert counts.dtype == np.int64 and counts.sum() == len(batch["negatives_logits"]) == len(batch["negatives_weights"])
    classes = np.repeat(np.arange(len(counts)), counts)
    return classes, batch["negatives_logits"].astype(np.float64), batch["negatives_weights"].astype(np.float64), len(batch["logits"])


def dense(batch: dict) -> dict:
    """``batch`` with its negatives laid out as explicit pseudo-rows after the stored rows (column
    c, row j: class c's j-th negative; the shorter columns padded: logit 0, weight 1, target 0),
    built here in numpy: ``logits``, ``targets``, ``weights``, ``padding`` ``(P + M, C)``."""
    counts = batch["negatives_per_class"]
    stored, height, classes = len(batch["logits"]), int(counts.max(initial=0)), len(counts)
    shape = (stored + height, classes)
    logits = np.zeros(shape, dtype=np.result_type(batch["logits"], batch["negatives_logits"]))
    weights = np.ones(shape, dtype=np.result_type(batch["weights"], batch["negatives_weights"]))
    targets, padding = np.zeros(shape, dtype=batch["targets"].dtype), np.ones(shape, dtype=bool)
    logits[:stored], weights[:stored], targets[:stored] = batch["logits"], batch["weights"], batch["targets"]
    padding[:stored] = batch["padding"] if "padding" in batch else False
    ends = np.cumsum(counts)
    for c in range(classes):
        elements = slice(ends[c] - counts[c], ends[c])
        logits[stored : stored + counts[c], c] = batch["negatives_logits"][elements]
        weights[stored : stored + counts[c], c] = batch["negatives_weights"][elements]
        padding[stored : stored + counts[c], c] = False
    others = {key: value for key, value in batch.items() if not key.startswith("negatives_")}
    return {**others, "logits": logits, "targets": targets, "weights": weights, "padding": padding}


def _seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_rows_with_a_target_and_elements_that_are_not_easy_are_kept_with_weight_one():
    logits, labels = _detection_batch(4000, 6, seed=1)
    batch = sample_batch(torch.from_numpy(logits), torch.from_numpy(labels), rate=0.05, generator=_seeded(0))
    positive = labels < 6
    classes, values, weights, target_rows = _pseudo(batch)
    assert target_rows == positive.sum()
    np.testing.assert_array_equal(batch["logits"][:target_rows], logits[positive])
    np.testing.assert_array_equal(batch["targets"][:target_rows].argmax(axis=1), labels[positive])
    assert batch["targets"].dtype == np.uint8 and batch["targets"][:target_rows].sum() == target_rows
    assert (batch["weights"] == 1).all() and "padding" not in batch
    free = logits[~positive].astype(np.float64)
    hard = 1 / (1 + np.exp(-free)) >= 0.1
    for c in range(6):
        kept_hard = np.sort(values[(classes == c) & (weights == 1)])
        np.testing.assert_array_equal(kept_hard, np.sort(free[:, c][hard[:, c]]))
    assert set(np.unique(weights)) == {1.0, 20.0}  # 1/0.05
    assert (1 / (1 + np.exp(-values[weights == 20.0])) < 0.1).all()
    assert int(batch["population_rows"]) == 4000 and int(batch["population_elements"]) == 24000
    assert float(batch["sample_rate"]) == 0.05
    assert batch["weights"].dtype == batch["negatives_weights"].dtype == np.float16 and batch["negatives_logits"].dtype == np.float32


def test_inclusion_rate_of_each_class_is_its_rate_within_binomial_error():
    rows, classes, rate = 200_000, 5, 0.02
    logits = torch.full((rows, classes), -6.0)
    batch = sample_batch(logits, torch.full((rows,), classes), rate=rate, generator=_seeded(3))
    found, _, weights, _ = _pseudo(batch)
    assert (weights == 50).all()
    for c in range(classes):
        assert abs(np.count_nonzero(found == c) - rows * rate) < 4 * math.sqrt(rows * rate * (1 - rate)), c


def test_target_size_gives_each_class_an_equal_share_and_its_own_weight():
    rows, classes, target = 100_000, 4, 2000
    rng = np.random.default_rng(5)
    logits = np.full((rows, classes), -6.0, dtype=np.float32)
    hard_share = [0.0, 0.5, 0.9, 0.99]  # class c has (1 - share) * rows easy negatives
    for c, share in enumerate(hard_share):
        logits[rng.random(rows) < share, c] = 2.0
    batch = sample_batch(logits, np.full(rows, classes), target_size=target, generator=_seeded(4))
    found, values, weights, _ = _pseudo(batch)
    easy_counts = (logits < EDGE_LOGIT).sum(axis=0)
    for c in range(classes):
        wanted = easy_counts[c] / (target / classes)
        sampled = weights[(found == c) & (values < EDGE_LOGIT)]
        weight = float(sampled[0])
        assert wanted * (1 - 2**-10) <= weight <= wanted  # rounded down to a float16 value
        rate = 1 / weight
        assert abs(len(sampled) - easy_counts[c] * rate) < 4 * math.sqrt(easy_counts[c] * rate * (1 - rate)) + 1, c
        assert np.count_nonzero((found == c) & (values >= EDGE_LOGIT)) == rows - easy_counts[c]
    assert float(batch["sample_rate"]) == -1


@pytest.mark.parametrize("spread", [6.0, -3.0])  # -3: the first draw of gaps falls short and the walk goes on
@pytest.mark.parametrize("per_class", [False, True])
def test_each_element_is_included_independently_at_its_class_rate(monkeypatch, spread, per_class):
    """Inclusion of each identifiable easy negative over 2000 seeds: frequency r_c within 4.5
    binomial standard errors, and neighbours in a column co-included at r^2. One rate for all the
    classes (one walk over the batch), or a target size with class 0 half hard (r_0 = 0.5, the others
    0.25: one walk per class)."""
    monkeypatch.setattr("lossaudit.record.sampler.SPREAD", spread)
    rows, classes, seeds = 50, 4, 2000
    logits = (-3.0 - np.arange(rows * classes) / 1000).reshape(rows, classes).astype(np.float32)
    if per_class:
        logits[:25, 0] = 2.0
    rates = np.array([0.5, 0.25, 0.25, 0.25]) if per_class else np.full(classes, 0.25)
    options = {"target_size": 50} if per_class else {"rate": 0.25}
    counts = np.zeros((rows, classes))
    pairs = np.zeros(classes)
    for seed in range(seeds):
        found, values, weights, _ = _pseudo(sample_batch(logits, np.full(rows, classes), generator=_seeded(seed), **options))
        easy = values < 0
        np.testing.assert_array_equal(weights[easy], 1 / rates[found[easy]])
        chosen = np.zeros(rows * classes, dtype=bool)
        chosen[np.rint((-3.0 - values[easy]) * 1000).astype(int)] = True
        chosen = chosen.reshape(rows, classes)
        counts += chosen
        pairs += (chosen[:-1] & chosen[1:]).sum(axis=0)
    easy = logits < 0
    error = np.sqrt(seeds * rates * (1 - rates))
    assert (np.abs(counts - seeds * rates) < 4.5 * error)[easy].all()
    neighbours = (easy[:-1] & easy[1:]).sum(axis=0)
    expected_pairs = seeds * neighbours * rates**2
    assert (np.abs(pairs - expected_pairs) < 4.5 * np.sqrt(expected_pairs)).all(), (pairs, expected_pairs)


@pytest.mark.parametrize("options", [{"rate": 0.03}, {"target_size": 300}])
def test_horvitz_thompson_sums_are_unbiased_over_seeds(options):
    """The count and the BCE sum of the easy negatives, and the BCE sum of the whole batch, as HT
    sums over the sample: their mean over 200 seeds lies within 3 standard errors of the full batch's."""
    logits, labels = _detection_batch(3000, 5, seed=2)
    x = logits.astype(np.float64)
    targets = np.eye(6)[labels][:, :5]
    bce = np.logaddexp(0, x) - targets * x
    easy = (labels[:, None] == 5) & (x < EDGE_LOGIT)
    truth = np.array([easy.sum(), bce[easy].sum(), bce.sum()])
    estimates = []
    for seed in range(200):
        batch = dense(sample_batch(logits, labels, generator=_seeded(seed), **options))
        kept = ~batch["padding"]
        v, w, t = batch["logits"].astype(np.float64), batch["weights"].astype(np.float64), batch["targets"].astype(np.float64)
        loss = np.logaddexp(0, v) - t * v
        is_easy = (t.sum(axis=1, keepdims=True) == 0) & (v < EDGE_LOGIT) & kept
        estimates.append([w[is_easy].sum(), (w * loss)[is_easy].sum(), (w * loss)[kept].sum()])
    estimates = np.array(estimates)
    standard_error = estimates.std(axis=0, ddof=1) / math.sqrt(len(estimates))
    assert (np.abs(estimates.mean(axis=0) - truth) < 3 * standard_error).all(), (estimates.mean(axis=0), truth, standard_error)


@pytest.mark.parametrize("dtype, stored", [(torch.float16, np.float16), (torch.bfloat16, np.float32), (torch.float32, np.float32)])
def test_half_precision_logits(dtype, stored):
    logits, labels = _detection_batch(2000, 3, seed=7)
    tensor = torch.from_numpy(logits).to(dtype)
    batch = sample_batch(tensor, torch.from_numpy(labels), rate=0.1, generator=_seeded(1))
    assert batch["logits"].dtype == batch["negatives_logits"].dtype == stored
    exact = tensor.float().numpy()
    positive = labels < 3
    np.testing.assert_array_equal(batch["logits"][: positive.sum()].astype(np.float32), exact[positive])
    classes, values, weights, _ = _pseudo(batch)
    hard = 1 / (1 + np.exp(-exact[~positive].astype(np.float64))) >= 0.1
    assert np.count_nonzero(weights == 1) == hard.sum()


def test_anchor_and_map_layouts_are_flattened_as_compare_flattens_them():
    rng = np.random.default_rng(0)
    anchors = rng.uniform(-9, -5, (2, 30, 4)).astype(np.float32)
    anchor_labels = np.full((2, 30), 4)
    anchor_labels[1, 7] = 2
    batch = sample_batch(anchors, anchor_labels, rate=1.0)
    np.testing.assert_array_equal(batch["logits"][0], anchors[1, 7])
    assert int(batch["population_rows"]) == 60 and batch["logits"].size + len(batch["negatives_logits"]) == 240

    maps = rng.uniform(-9, -5, (2, 3, 4, 5)).astype(np.float32)  # (B, C, H, W)
    map_labels = np.full((2, 4, 5), 3)
    map_labels[0, 2, 1] = 0
    map_labels[1, 3, 4] = 2
    batch = sample_batch(torch.from_numpy(maps), torch.from_numpy(map_labels), rate=1.0)
    np.testing.assert_array_equal(batch["logits"][:2], [maps[0, :, 2, 1], maps[1, :, 3, 4]])
    np.testing.assert_array_equal(batch["targets"][:2].argmax(axis=1), [0, 2])
    assert int(batch["population_rows"]) == 40

    one_hot = np.zeros(maps.shape, dtype=np.float32)
    one_hot[1, 2, 3, 4] = 0.7  # a soft target
    batch = sample_batch(maps, one_hot, rate=1.0)
    np.testing.assert_array_equal(batch["logits"][0], maps[1, :, 3, 4])
    assert batch["targets"].dtype == np.float32 and batch["targets"][0].tolist() == pytest.approx([0, 0, 0.7])


def test_masks_and_the_ignore_label_drop_and_count():
    rng = np.random.default_rng(3)
    logits = rng.uniform(-9, 2, (40, 3)).astype(np.float32)
    labels = np.full(40, 3)
    labels[:5] = 1
    labels[5:8] = -1  # ignored rows
    mask = np.ones((40, 3), dtype=bool)
    mask[0, 2] = mask[10, 0] = mask[11, 0] = mask[6, 1] = False
    batch = dense(sample_batch(logits, labels, rate=1.0, mask=mask))
    dropped = (labels[:, None] == -1) | ~mask
    np.testing.assert_array_equal(batch["ignored"], dropped.sum(axis=0))
    present = ~batch["padding"]
    assert present.sum() == (~dropped).sum()
    assert batch["padding"][0].tolist() == [False, False, True]  # a masked element of a kept row
    kept = np.sort(batch["logits"][present])
    np.testing.assert_array_equal(kept, np.sort(logits[~dropped]))

    row_mask = np.ones(40)
    row_mask[20:30] = 0
    batch = sample_batch(logits, labels, rate=1.0, mask=row_mask)
    np.testing.assert_array_equal(batch["ignored"], [13, 13, 13])


def test_masks_of_maps_follow_the_maps_flattening():
    """(B, C, H, W) logits with an element mask shaped like them and a row mask shaped like the
    maps: what is kept and counted, against numpy's flattening (class axis last, then rows)."""
    rng = np.random.default_rng(8)
    maps = rng.uniform(-9, 2, (2, 3, 4, 5)).astype(np.float32)
    labels = np.full((2, 4, 5), 3)
    labels[0, 1, 2], labels[1, 3, 0] = 1, -1
    element_mask = rng.random(maps.shape) > 0.2
    rows = np.moveaxis(maps, 1, -1).reshape(-1, 3)
    flat_labels = labels.reshape(-1)
    dropped = (flat_labels[:, None] == -1) | ~np.moveaxis(element_mask, 1, -1).reshape(-1, 3)
    batch = dense(sample_batch(torch.from_numpy(maps), torch.from_numpy(labels), rate=1.0, mask=torch.from_numpy(element_mask)))
    np.testing.assert_array_equal(batch["ignored"], dropped.sum(axis=0))
    np.testing.assert_array_equal(np.sort(batch["logits"][~batch["padding"]]), np.sort(rows[~dropped]))
    labelled = flat_labels == 1
    np.testing.assert_array_equal(batch["padding"][0], dropped[labelled][0])

    row_mask = np.ones((2, 4, 5))
    row_mask[0, 1, 2] = 0  # the labelled cell
    batch = sample_batch(maps, labels, rate=1.0, mask=row_mask)
    assert not batch["targets"].any() and batch["ignored"].tolist() == [2, 2, 2]


@pytest.mark.parametrize(
    "arguments, says",
    [
        ({"rate": 0.0}, "rate 0.0: expected an inclusion probability in (0, 1]"),
        ({"rate": 1.5}, "rate 1.5"),
        ({"target_size": 0}, "target_size 0: expected a whole number"),
        ({"easy_edge": 1.0}, "easy_edge 1.0"),
    ],
)
def test_bad_settings_are_refused(arguments, says):
    with pytest.raises(ValueError) as error:
        sample_batch(np.zeros((4, 3), np.float32), np.zeros(4, dtype=np.int64), **arguments)
    assert says in str(error.value)


def test_bad_batches_are_refused():
    with pytest.raises(ValueError, match=r"targets holds 1 class id outside -1\.\.3 \(the first 7\)"):
        sample_batch(np.zeros((4, 3), np.float32), np.array([0, 1, 7, 3]))
    with pytest.raises(ValueError, match=r"targets has shape \(5,\) but logits has shape \(4, 3\)"):
        sample_batch(np.zeros((4, 3), np.float32), np.zeros(5, dtype=np.int64))
    for labels in (np.zeros(4), np.zeros(4, dtype=bool)):
        with pytest.raises(
            ValueError, match=r"targets has shape \(4,\) and dtype torch\.(float64|bool); expected integer class ids \(or \(4, 3\) one-hot/soft targets\)"
        ):
            sample_batch(np.zeros((4, 3), np.float32), labels)
    with pytest.raises(TypeError, match="expected floating-point logits"):
        sample_batch(np.zeros((4, 3), np.int32), np.zeros(4, dtype=np.int64))


def test_read_only_arrays_are_sampled_without_a_warning(recwarn):
    logits, labels = _detection_batch(100, 3, seed=4)
    logits.flags.writeable = labels.flags.writeable = False
    batch = dense(sample_batch(logits, labels, rate=1.0))
    assert np.count_nonzero(~batch["padding"]) == 300 and not recwarn.list


def test_a_batch_with_nothing_kept_is_one_padded_row():
    batch = sample_batch(torch.full((3, 2), -9.0), torch.full((3,), 2), rate=1e-6, generator=_seeded(0))
    assert batch["padding"].shape == (1, 2) and batch["padding"].all() and int(batch["population_elements"]) == 6
    assert batch["negatives_per_class"].tolist() == [0, 0] and not len(batch["negatives_logits"])


def test_non_finite_logits_are_kept_so_compare_counts_them():
    logits = np.full((10, 2), -9.0, dtype=np.float32)
    logits[3, 0], logits[4, 1] = np.nan, np.inf
    classes, values, weights, _ = _pseudo(sample_batch(logits, np.full(10, 2), rate=1e-6, generator=_seeded(0)))
    assert np.isnan(values).sum() == 1 and np.isposinf(values).sum() == 1 and (weights == 1).all()


# --- the Recorder's run folders


def _record(folder, batches: int = 2, **options) -> list:
    logits, labels = _detection_batch(500, 4, seed=0)
    with lossaudit.Recorder(folder, rate=0.1, seed=0, **options) as recorder:
        return [recorder.add(torch.from_numpy(logits), torch.from_numpy(labels)) for _ in range(batches)]


def test_recorder_writes_numbered_files_of_one_run(tmp_path):
    written = _record(tmp_path / "run")
    assert [path.name for path in written] == ["rank000-000000.npz", "rank000-000001.npz"]
    ids = set()
    for path in written:
        with np.load(path, allow_pickle=False) as data:
            ids.add(str(data["run_id"]))
            assert {
                "logits",
                "targets",
                "weights",
                "negatives_logits",
                "negatives_weights",
                "negatives_per_class",
                "population_rows",
                "population_elements",
                "sample_rate",
            } <= set(data.files)
            assert data["logits_shape"].tolist() == list(data["logits"].shape)
    assert len(ids) == 1


def test_recorder_never_writes_into_another_run(tmp_path):
    run = tmp_path / "run"
    _record(run)
    before = {path.name: path.read_bytes() for path in run.iterdir()}
    with pytest.raises(
        FileExistsError,
        match=r"run: exists and holds 2 items; a run is never written over another: choose a new folder, or add to this run with Recorder\(\.\.\., resume=True\)",
    ):
        lossaudit.Recorder(run)
    assert {path.name: path.read_bytes() for path in run.iterdir()} == before
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError):
        lossaudit.Recorder(tmp_path / "file")


def test_recorder_resumes_a_run(tmp_path):
    run = tmp_path / "run"
    first = _record(run)
    more = _record(run, batches=1, resume=True)
    assert [path.name for path in more] == ["rank000-000002.npz"]
    ids = set()
    for path in [*first, *more]:
        with np.load(path, allow_pickle=False) as data:
            ids.add(str(data["run_id"]))
    assert len(ids) == 1


@pytest.mark.parametrize("content", [b"PK\x03\x04 not a zip", b"not numpy"])
def test_resuming_a_run_whose_file_cannot_be_read_names_it(tmp_path, content):
    (tmp_path / "rank000-000000.npz").write_bytes(content)
    with pytest.raises(OSError, match=r"rank000-000000\.npz: cannot read the run id of the run to resume"):
        lossaudit.Recorder(tmp_path, resume=True)
    assert [path.name for path in tmp_path.iterdir()] == ["rank000-000000.npz"]


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_recorder_files_get_the_users_umask(tmp_path, umask):
    previous = os.umask(umask)
    try:
        written = _record(tmp_path / "run", batches=1)
    finally:
        os.umask(previous)
    assert stat.S_IMODE(written[0].stat().st_mode) == 0o666 & ~umask


def test_a_closed_recorder_refuses_batches(tmp_path):
    recorder = lossaudit.Recorder(tmp_path / "run")
    recorder.close()
    with pytest.raises(ValueError, match="is closed"):
        recorder.add(torch.zeros(2, 3), torch.zeros(2, dtype=torch.long))


def test_recorder_counts_and_memory_stay_per_batch(tmp_path):
    logits, labels = _detection_batch(500, 4, seed=0)
    with lossaudit.Recorder(tmp_path / "run", rate=0.1, seed=0) as recorder:
        for _ in range(3):
            recorder.add(logits, labels)
        assert recorder.batches == 3 and recorder.population_elements == 3 * 2000
        assert 0 < recorder.sampled_elements < 3 * 2000
        assert set(vars(recorder)) == {
            "rate",
            "target_size",
            "easy_edge",
            "seed",
            "writer",
            "path",
            "batches",
            "population_elements",
            "sampled_elements",
            "_generators",
            "_closed",
        }


def test_importing_the_recorder_does_not_import_torch():
    code = "import sys, lossaudit; lossaudit.Recorder; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


@pytest.mark.skipif(
    "weighted" not in lossaudit.io.dataset.DataInfo.__dataclass_fields__, reason="compare's reader of weighted dumps (issue 24, ENGINE) is not there yet"
)
def test_compare_reads_a_recorded_run(tmp_path, compare_json):
    logits, labels = _detection_batch(3000, 4, seed=9)
    labels[:10] = -1
    with lossaudit.Recorder(tmp_path / "run", rate=0.05, seed=1) as recorder:
        recorder.add(torch.from_numpy(logits).half(), torch.from_numpy(labels))
        recorder.add(torch.from_numpy(logits), torch.from_numpy(labels))
    report = compare_json(tmp_path / "run", "--isolated")
    assert report["estimate"]["weighted"] is True and report["estimate"]["population_elements"] == 2 * 3000 * 4
    assert report["estimate"]["sampled_elements"] == recorder.sampled_elements
    assert [row["positives"] for row in report["per_class"]] == [2 * int((labels == c).sum()) for c in range(4)]
    assert [row["ignored"] for row in report["per_class"]] == [20] * 4


@pytest.mark.parametrize("module", ["lossaudit.record.sampler", "lossaudit.record.recorder"])
def test_docstring_examples_run(module):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0


def test_a_weighted_batch_sampled_again_multiplies_the_weights_and_skips_the_padding():
    from lossaudit.record import pack, select

    logits, labels = _detection_batch(3000, 4, seed=12)
    first = dense(sample_batch(logits, labels, rate=0.25, generator=_seeded(0)))
    second = dense(
        pack(
            [
                select(
                    first["logits"],
                    first["targets"],
                    0.5,
                    mask=np.ones(first["logits"].shape, bool),
                    generator=_seeded(1),
                    weights=first["weights"],
                    padding=first["padding"],
                )
            ]
        )
    )
    before, after = first["weights"][~first["padding"]], second["weights"][~second["padding"]]
    assert set(np.unique(after)) == {1.0, 8.0} and np.count_nonzero(after == 1) == np.count_nonzero(before == 1)
    assert second["ignored"].tolist() == [0, 0, 0, 0]  # padding is no ignored element
    rows = int(first["targets"].any(axis=1).sum())
    np.testing.assert_array_equal(second["logits"][:rows], first["logits"][:rows])
    with pytest.raises(ValueError, match=r"shaped like its \(N, C\) logits"):
        select(first["logits"], first["targets"], weights=first["weights"][:-1])
