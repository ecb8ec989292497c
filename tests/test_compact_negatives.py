"""A weighted batch's negatives stored compactly (``negatives_logits``, ``negatives_weights``,
``negatives_per_class``) are read as the pseudo-rows they stand for: column c, pseudo-row j holds
class c's j-th element, target 0, the shorter columns padded. The expected pseudo-rows are laid out
here in numpy element by element; ``compare`` on a compact file equals ``compare`` on the same data
written as explicit pseudo-rows with padding; the Recorder's file takes at most 3x the float32
logit per kept element when one class holds most of the negatives."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import lossaudit
from lossaudit.compare.engine.stream import stream_tally
from lossaudit.compare.settings import LossSettings
from lossaudit.io.dataset import plan
from lossaudit.io.readers import ArrayFile, read_batches
from tests.test_weighted_engine import _assert_same_tally

CLASSES = 4


def _compact(seed: int, counts: tuple[int, ...], stored: int = 5, dtype: type = np.float32, row_mask: bool = False) -> dict:
    """A compact weighted batch: ``stored`` rows with a target (one of them with a masked element:
    padding), and ``counts[c]`` negatives of class c with weights 1, 4 or 50."""
    rng = np.random.default_rng(seed)
    targets = np.zeros((stored, CLASSES), dtype=np.uint8)
    targets[np.arange(stored), rng.integers(0, CLASSES, stored)] = 1
    batch = {
        "logits": rng.normal(0, 2, (stored, CLASSES)).astype(dtype),
        "targets": targets,
        "weights": np.ones((stored, CLASSES), dtype=np.float16),
        "negatives_logits": rng.normal(-3, 2, sum(counts)).astype(dtype),
        "negatives_weights": rng.choice(np.array([1.0, 4.0, 50.0], dtype=np.float16), sum(counts)),
        "negatives_per_class": np.array(counts, dtype=np.int64),
        "population_rows": np.array(1000),
        "population_elements": np.array(1000 * CLASSES),
        "sample_rate": np.array(0.02),
    }
    if stored:
        batch["padding"] = np.zeros((stored, CLASSES), dtype=bool)
        batch["padding"][0, (np.argmax(targets[0]) + 1) % CLASSES] = True
    if row_mask:
        batch["mask"] = (rng.random(stored) > 0.3).astype(np.uint8)
    return batch


def _explicit(batch: dict) -> dict:
    """The same batch as explicit pseudo-rows: element k, the j-th of its class c, at (P + j, c);
    logit 0, weight 1 and padding elsewhere in the pseudo-rows."""
    counts, (stored, classes) = batch["negatives_per_class"], batch["logits"].shape
    height = int(max(counts, default=0))
    logits = np.vstack([batch["logits"], np.zeros((height, classes), dtype=batch["logits"].dtype)])
    weights = np.vstack([batch["weights"], np.ones((height, classes), dtype=np.float16)])
    targets = np.vstack([batch["targets"], np.zeros((height, classes), dtype=np.uint8)])
    padding = np.vstack([batch.get("padding", np.zeros((stored, classes), dtype=bool)), np.ones((height, classes), dtype=bool)])
    k = 0
    for c, count in enumerate(counts):
        for j in range(count):
            logits[stored + j, c], weights[stored + j, c], padding[stored + j, c] = batch["negatives_logits"][k], batch["negatives_weights"][k], False
            k += 1
    explicit = {key: value for key, value in batch.items() if not key.startswith("negatives_")}
    explicit.update(logits=logits, weights=weights, targets=targets, padding=padding)
    if "mask" in batch:
        explicit["mask"] = np.concatenate([batch["mask"], np.ones(height, dtype=np.uint8)])
    return explicit


def _read(data_plan, chunk_rows: int | None) -> dict:
    """Every chunk of the plan, concatenated: logits, dense targets, weights, padding."""
    parts = {"logits": [], "targets": [], "weights": [], "padding": []}
    for chunk in data_plan.chunks(chunk_rows):
        parts["logits"].append(np.array(chunk.logits))
        parts["targets"].append(chunk.targets)
        parts["weights"].append(chunk.weights)
        parts["padding"].append(chunk.padding if chunk.padding is not None else np.zeros(chunk.logits.shape, dtype=bool))
    return {key: np.concatenate(values) for key, values in parts.items()}


COUNTS = {
    "a class without negatives": (3, 0, 11, 1),
    "one class holds them all": (0, 0, 17, 0),
    "no negatives": (0, 0, 0, 0),
    "equal columns": (6, 6, 6, 6),
}


@pytest.mark.parametrize("counts", COUNTS.values(), ids=COUNTS.keys())
@pytest.mark.parametrize("chunk_rows", [1, 2, 5, 7, 64, None])
def test_pseudo_rows_are_read_as_laid_out_by_hand(counts, chunk_rows):
    batch = _compact(0, counts)
    expected = _explicit(batch)
    got = _read(plan([ArrayFile(source="c.npz", arrays=batch)]), chunk_rows)
    padding = expected["padding"]
    np.testing.assert_array_equal(got["padding"], padding)
    np.testing.assert_array_equal(got["logits"][~padding], expected["logits"][~padding])
    np.testing.assert_array_equal(got["weights"][~padding], expected["weights"][~padding].astype(np.float64))
    np.testing.assert_array_equal(got["targets"], expected["targets"])


@pytest.mark.parametrize("layout", ["npz", "compressed npz", "npy folder", "pt"])
def test_every_file_format_is_read_with_every_row_picked(layout, tmp_path):
    """From every format compare reads (npz and npy memory-mapped), float16 negatives, stored rows
    and none: the chunks and the rows picked by index (as OHEM reads them again) are the
    pseudo-rows by hand."""
    for stored in (0, 4):
        batch = _compact(3, (9, 0, 2, 30), stored=stored, dtype=np.float16)
        if layout in ("npz", "compressed npz"):
            path = tmp_path / f"c{stored}.npz"
            (np.savez if layout == "npz" else np.savez_compressed)(path, **batch)
        elif layout == "pt":
            path = tmp_path / f"c{stored}.pt"
            torch.save({key: torch.from_numpy(np.asarray(value)) for key, value in batch.items()}, path)
        else:
            path = tmp_path / f"c{stored}"
            path.mkdir()
            for key, value in batch.items():
                np.save(path / f"{key}.npy", value)
        expected = _explicit(batch)
        data_plan = plan(read_batches([path]))
        assert data_plan.info.logits_shapes == [expected["logits"].shape] and data_plan.info.num_rows == len(expected["logits"])
        assert isinstance(data_plan.sources[0].logits.view()[1], np.memmap) == (layout in ("npz", "npy folder"))
        got = _read(data_plan, 8)
        present = ~expected["padding"]
        np.testing.assert_array_equal(got["padding"], expected["padding"])
        np.testing.assert_array_equal(got["logits"][present], expected["logits"][present].astype(np.float32))
        rows = np.array([0, 3, 4, 5, 17, 33]) if stored else np.array([0, 1, 8, 29])
        picked = data_plan.read_rows(rows)
        np.testing.assert_array_equal(picked.padding, expected["padding"][rows])
        np.testing.assert_array_equal(picked.weights[present[rows]], expected["weights"][rows][present[rows]])
        np.testing.assert_array_equal(np.asarray(picked.logits)[present[rows]], expected["logits"][rows][present[rows]].astype(np.float32))


TALLY_LOSSES = ("bce", "focal", "ghm", "ce", "ohem")


@pytest.mark.parametrize("chunk_rows, workers", [(None, 1), (3, 1), (4, 2)])
def test_tallies_of_compact_and_explicit_pseudo_rows_are_the_same(chunk_rows, workers):
    """Every sum, count and second moment (a row mask on the stored rows too)."""
    batches = [_compact(seed, counts, row_mask=seed == 1) for seed, counts in enumerate(((3, 0, 11, 1), (0, 0, 40, 0), (2, 2, 2, 2)))]
    settings = LossSettings(losses=TALLY_LOSSES, alpha=0.25, gamma=2.0)

    def tally(arrays: list[dict]):
        return stream_tally(plan([ArrayFile(source=f"b{k}.npz", arrays=a) for k, a in enumerate(arrays)]), settings, workers=workers, chunk_rows=chunk_rows)

    got, expected = tally(batches), tally([_explicit(batch) for batch in batches])
    _assert_same_tally(got, expected)
    for loss, values in expected.second_moments.items():
        np.testing.assert_allclose(got.second_moments[loss], values, rtol=1e-6, atol=1e-9, err_msg=loss)
    assert got.sample == expected.sample


def test_compare_reports_of_a_recorded_run_and_its_explicit_pseudo_rows_are_the_same(tmp_path, run_cli):
    """A run the Recorder writes, and the same batches rewritten with explicit padded pseudo-rows:
    ``compare``'s JSON reports are equal (the folders' names aside)."""
    rng = np.random.default_rng(2)
    logits = torch.from_numpy(rng.normal(-4, 2, (3000, 5)).astype(np.float32))
    labels = torch.from_numpy(np.where(rng.random(3000) < 0.1, rng.integers(0, 5, 3000), 5))
    with lossaudit.Recorder(tmp_path / "compact" / "run", rate=0.05, seed=0) as recorder:
        paths = [recorder.add(logits[part], labels[part]) for part in (slice(0, 2000), slice(2000, 3000))]
    (tmp_path / "explicit" / "run").mkdir(parents=True)
    for path in paths:
        with np.load(path) as data:
            np.savez(tmp_path / "explicit" / "run" / path.name, **_explicit({key: data[key] for key in data.files}))
    reports = []
    for layout in ("compact", "explicit"):
        result = run_cli("compare", tmp_path / layout / "run", "--format", "json", "--isolated")
        assert result.exit_code == 0, result.stderr
        reports.append(json.loads(result.stdout.replace(str(tmp_path / layout), "FOLDER")))
    assert reports[0] == reports[1]
    assert reports[0]["estimate"]["sampled_elements"] < reports[0]["estimate"]["population_elements"] == 15000


def test_a_class_holding_most_negatives_costs_no_padding_on_disk(tmp_path):
    """The benchmark's skewed case, smaller: half of the elements that are not easy in class 0.
    The file takes at most 3x the float32 logit per kept element (rows with a target, negatives
    and their counts together), which explicit pseudo-rows (7x the kept elements in slots here)
    could not."""
    rng = np.random.default_rng(4)
    rows, classes = 40_000, 40
    x = rng.uniform(math.log(1e-5), math.log(0.05 / 0.95), (rows, classes))
    hard = rng.random((rows, classes)) < np.r_[0.02 * classes / 2, np.full(classes - 1, 0.02 * classes / 2 / (classes - 1))]
    x[hard] = rng.uniform(math.log(0.1 / 0.9), 4.0, int(hard.sum()))
    labels = np.where(rng.random(rows) < 0.04, rng.integers(0, classes, rows), classes)
    with lossaudit.Recorder(tmp_path / "run", rate=0.01, seed=0) as recorder:
        path = recorder.add(torch.from_numpy(x.astype(np.float32)), torch.from_numpy(labels))
    with np.load(path) as data:
        kept = data["logits"].size + len(data["negatives_logits"])
        assert int(data["negatives_per_class"].max()) * classes > 5 * len(data["negatives_logits"])  # explicit pseudo-rows: > 5 slots per negative
    assert path.stat().st_size / kept <= 3 * 4
