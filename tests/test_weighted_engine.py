"""Weighted dumps in the reader and in every tally (issue 24; design: sampling weights w = 1/pi >= 1,
every sum a Horvitz–Thompson sum, second moments sum w (w - 1) v^2 per cell).

The main independent check is replication: a dump whose rows carry integer weights must give the
numbers of the unweighted dump with each row repeated w times — which the unchanged unweighted path
computes (itself checked against the full-tensor oracle in test_stream). Per-element weights, the
second moments and padding are checked against sums written out here in numpy (and torch autograd
for focal's gradient).
"""

from __future__ import annotations

import numpy as np
import pytest

import lossaudit
from lossaudit.compare.engine.generic import GenericTally
from lossaudit.compare.engine.stream import stream_tally
from lossaudit.compare.settings import LossSettings
from lossaudit.io.dataset import plan
from lossaudit.io.readers import ArrayFile

TOLERANCE = {"rtol": 1e-6, "atol": 1e-9}


def _plan(arrays: dict, source: str = "dump.npz"):
    return plan([ArrayFile(source=source, arrays=dict(arrays))])


def _tally(arrays: dict, losses: tuple[str, ...], workers: int = 1, chunk_rows: int | None = None, **settings):
    return stream_tally(_plan(arrays), LossSettings(losses=losses, **settings), workers=workers, chunk_rows=chunk_rows)


def _assert_same_tally(got, expected) -> None:
    """Every sum of two tallies (the weighted one's second moments and sample aside)."""
    for name in ("loss_sums", "gradient_sums", "normalisers"):
        assert getattr(got, name).keys() == getattr(expected, name).keys(), name
        for loss, values in getattr(expected, name).items():
            np.testing.assert_allclose(getattr(got, name)[loss], values, **TOLERANCE, err_msg=f"{name}[{loss}]")
    assert got.normaliser_names == expected.normaliser_names
    for name in (
        "element_counts",
        "sum_p_positive",
        "sum_q_positive",
        "softmax_positives",
        "ignored",
        "nonfinite",
        "rows",
        "background_rows",
        "softmax_counts",
        "multi_hot_rows",
    ):
        np.testing.assert_allclose(getattr(got, name), getattr(expected, name), **TOLERANCE, err_msg=name)
    for name, values in expected.file_counts.items():
        np.testing.assert_allclose(got.file_counts[name], values, **TOLERANCE, err_msg=f"file_counts[{name}]")
    if expected.focal_parts is not None:
        np.testing.assert_allclose(got.focal_parts, expected.focal_parts, **TOLERANCE)
    for part in ("sigmoid", "softmax", "argmax_correct"):
        np.testing.assert_allclose(getattr(got.mistakes, part), getattr(expected.mistakes, part), err_msg=part)
    for kind, pairs in expected.mistakes.pairs.items():
        assert dict(got.mistakes.pairs[kind]) == pytest.approx(dict(pairs)), kind


def _replicated(arrays: dict, weights: np.ndarray, axis: int = 0) -> dict:
    """The unweighted dump with each row (or each image, ``axis`` 0 of a map) repeated ``weights`` times."""
    return {key: np.repeat(value, weights, axis=axis) for key, value in arrays.items()}


def _detection(seed: int, rows: int = 600, classes: int = 6) -> dict:
    """Index targets with background (label C), the ignore label, a row mask and a NaN logit."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(-3, 2.5, size=(rows, classes)).astype(np.float32)
    labels = np.where(rng.random(rows) < 0.6, classes, rng.integers(0, classes, size=rows))
    labels[rng.random(rows) < 0.05] = -1
    logits[labels[:, None] == np.arange(classes)] += 4
    logits[7, 2] = np.nan
    return {"logits": logits, "targets": labels, "mask": (rng.random(rows) > 0.05).astype(np.uint8)}


def _multi_label(seed: int, rows: int = 500, classes: int = 5) -> dict:
    rng = np.random.default_rng(seed)
    targets = (rng.random((rows, classes)) < 0.15).astype(np.uint8)
    return {"logits": (rng.normal(-2, 2, size=(rows, classes)) + 3 * targets).astype(np.float32), "targets": targets}


def _soft(seed: int, rows: int = 500, classes: int = 4) -> dict:
    rng = np.random.default_rng(seed)
    targets = np.where(rng.random((rows, classes)) < 0.2, rng.random((rows, classes)), 0).astype(np.float32)
    return {"logits": rng.normal(-1.5, 2, size=(rows, classes)).astype(np.float32), "targets": targets}


def _heatmaps(seed: int, images: int = 4, classes: int = 3, size: int = 16) -> dict:
    """(B, C, H, W) Gaussian heatmaps with peaks of exactly 1."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    targets = np.zeros((images, classes, size, size), dtype=np.float32)
    for b in range(images):
        for c in range(classes):
            cy, cx = rng.integers(2, size - 2, size=2)
            targets[b, c] = np.maximum(targets[b, c], np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 4.0))
            targets[b, c, cy, cx] = 1.0
    logits = (rng.normal(-4, 1.5, size=targets.shape) + 5 * targets).astype(np.float32)
    return {"logits": logits, "targets": targets}


SOFTMAX_FAMILY = ("ce", "softmax-focal", "cb-ce", "logit-adjusted-ce")
CASES = {
    "index targets, default losses, ohem, cb-ce, logit-adjusted-ce": (
        _detection,
        ("ce", "bce", "focal", "softmax-focal", "ghm", "ohem", "cb-ce", "logit-adjusted-ce"),
    ),
    "multi-hot targets: asl, ghm, ohem": (_multi_label, ("bce", "focal", "ghm", "asl", "ohem")),
    "soft targets: qfl, vfl": (_soft, ("bce", "focal", "qfl", "vfl", "ghm")),
}


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("workers, chunk_rows", [(1, None), (2, 97)])
def test_integer_row_weights_replicate_rows(name, workers, chunk_rows):
    """Per-row integer weights give every sum of the dump with each row repeated w times, OHEM
    included (its weighted top-k keeps the boundary row in part: with integer weights, exactly
    the copies the unweighted selection keeps), across chunks and forked workers."""
    make, losses = CASES[name]
    arrays = make(1)
    rows = len(arrays["logits"])
    weights = np.random.default_rng(2).integers(1, 5, size=rows)
    weighted = _tally({**arrays, "weights": weights}, losses, workers, chunk_rows)
    _assert_same_tally(weighted, _tally(_replicated(arrays, weights), losses))
    assert weighted.sample["sampled_elements"] == arrays["logits"].size
    assert weighted.sample["estimated_elements"] == pytest.approx(weighted.element_counts.sum())
    assert set(weighted.second_moments) == {prefix + loss for loss in losses for prefix in ("", "gradient:")}


def test_integer_image_weights_replicate_heatmaps():
    """CenterNet (and the sigmoid losses) on (B, C, H, W) heatmaps, weights shaped (B, H, W)
    constant per image: the dump with each image repeated w times (whole images, so each cell
    keeps its neighbours)."""
    arrays = _heatmaps(3)
    per_image = np.array([1, 3, 2, 4])
    weights = np.broadcast_to(per_image[:, None, None], (4, 16, 16)).astype(np.float32)
    losses = ("bce", "focal", "ghm", "centernet")
    weighted = _tally({**arrays, "weights": weights}, losses)
    _assert_same_tally(weighted, _tally(_replicated(arrays, per_image), losses))


def test_generic_torch_path_replicates_rows():
    """The generic path (a loss's torch reference per chunk, as for a user's loss), here run on
    registry losses of both families: weighted dump = replicated dump."""
    arrays = _detection(4, rows=200, classes=4)
    weights = np.random.default_rng(5).integers(1, 4, size=200)
    settings = LossSettings(losses=("focal", "qfl", "ce", "softmax-focal"))

    def generic(data, weighted: bool):
        tally = GenericTally(settings, settings.losses, 4, None, weighted=weighted)
        for chunk in data.chunks(64):
            tally.add(chunk)
        sink = _replicated_sink()
        tally.finish(sink)
        return sink

    got = generic(_plan({**arrays, "weights": weights}), True)
    expected = generic(_plan(_replicated(arrays, weights)), False)
    for name in ("loss_sums", "gradient_sums", "normalisers"):
        for loss in settings.losses:
            np.testing.assert_allclose(getattr(got, name)[loss], getattr(expected, name)[loss], **TOLERANCE, err_msg=f"{name}[{loss}]")
    assert set(got.second_moments) == {prefix + loss for loss in settings.losses for prefix in ("", "gradient:")}


def _replicated_sink():
    from types import SimpleNamespace

    return SimpleNamespace(loss_sums={}, gradient_sums={}, normalisers={}, normaliser_names={}, second_moments={})


USER_LOSS = """import torch.nn.functional as F


def my_bce(inputs, targets):
    return F.binary_cross_entropy_with_logits(inputs, targets, reduction="none")
"""


def test_report_numbers_replicate_rows_with_a_user_loss(tmp_path):
    """Through ``lossaudit.compare(..., weights=)``: every number of each loss's report entry and
    of the per-class table (sums, means, shares, normalisers) equals the replicated dump's, for
    the default losses and a user's torch loss (run in its child process)."""
    (tmp_path / "mine.py").write_text(USER_LOSS)
    arrays = _detection(6, rows=300, classes=4)
    del arrays["mask"]
    weights = np.random.default_rng(7).integers(1, 4, size=300)
    losses = ["ce", "bce", "focal", "softmax-focal", "ghm", f"{tmp_path / 'mine.py'}:my_bce@sigmoid"]
    weighted = lossaudit.compare(logits=arrays["logits"], targets=arrays["targets"], weights=weights, losses=losses).to_dict()
    repeated = _replicated(arrays, weights)
    expected = lossaudit.compare(logits=repeated["logits"], targets=repeated["targets"], losses=losses).to_dict()
    assert weighted["losses"].keys() == expected["losses"].keys()
    for section in ("losses", "per_class"):
        _assert_numbers_equal(weighted[section], expected[section], section)


def _assert_numbers_equal(got, expected, where: str) -> None:
    """Every number in ``expected`` (nested dicts and lists) equals ``got``'s; a weighted report's
    additions (standard errors ``*_se``, an ``estimate`` object) are not compared."""
    if isinstance(expected, dict):
        for key, value in expected.items():
            _assert_numbers_equal(got[key], value, f"{where}.{key}")
    elif isinstance(expected, list):
        assert len(got) == len(expected), where
        for index, (a, b) in enumerate(zip(got, expected)):
            _assert_numbers_equal(a, b, f"{where}[{index}]")
    elif isinstance(expected, (int, float)) and not isinstance(expected, bool):
        assert got == pytest.approx(expected, rel=1e-6, abs=1e-9), where


@pytest.mark.parametrize(
    "make, losses",
    [(_soft, ("bce", "focal", "ghm", "qfl", "vfl")), (_multi_label, ("bce", "focal", "asl", "ghm")), (_heatmaps, ("bce", "focal", "centernet"))],
    ids=["soft", "multi-label", "heatmaps"],
)
def test_integer_element_weights_replicate_elements(make, losses):
    """Per-element integer weights w <= K, for the losses that sum over elements: the same sums as
    K copies of the unweighted dump, copy k masking the elements of weight below k (each element
    is then present w times; a masked element adds to no loss, no count and no normaliser)."""
    arrays = make(30)
    weights = np.random.default_rng(31).integers(1, 4, size=arrays["logits"].shape)
    weighted = _tally({**arrays, "weights": weights}, losses)
    copies = [ArrayFile(source=f"copy{k}.npz", arrays={**arrays, "mask": (weights >= k).astype(np.uint8)}) for k in (1, 2, 3)]
    expected = stream_tally(plan(copies), LossSettings(losses=losses), workers=1)
    for name in ("loss_sums", "gradient_sums", "normalisers"):
        for loss in losses:
            np.testing.assert_allclose(getattr(weighted, name)[loss], getattr(expected, name)[loss], **TOLERANCE, err_msg=f"{name}[{loss}]")
    np.testing.assert_allclose(weighted.element_counts, expected.element_counts)
    np.testing.assert_allclose(weighted.sum_p_positive, expected.sum_p_positive, **TOLERANCE)


def _bce(x, y):
    return np.maximum(x, 0) - x * y + np.log1p(np.exp(-np.abs(x)))


def _focal_by_hand(x, y, alpha, gamma):
    """Focal loss and its gradient magnitude per element, in float64 torch (autograd)."""
    import torch

    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    yt = torch.tensor(y, dtype=torch.float64)
    p = torch.sigmoid(xt)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(xt, yt, reduction="none")
    alpha_t = alpha * yt + (1 - alpha) * (1 - yt)
    loss = alpha_t * (p + yt - 2 * p * yt) ** gamma * bce
    (gradient,) = torch.autograd.grad(loss.sum(), xt)
    return loss.detach().numpy(), gradient.abs().numpy()


def _per_class(values, y, w, classes):
    """``(C, 2)`` sums of ``values`` weighted by ``w``, by class and positive (y >= 0.5)."""
    positive = (y >= 0.5).astype(int)
    out = np.zeros((classes, 2))
    np.add.at(out, (np.broadcast_to(np.arange(classes), y.shape), positive), w * values)
    return out


def _tiny(seed: int = 11, rows: int = 9, classes: int = 3):
    """A tiny dump of soft targets (some 0, some 1, some between) and per-element weights."""
    rng = np.random.default_rng(seed)
    x = rng.normal(-0.5, 2.5, size=(rows, classes)).astype(np.float32)
    y = np.select([rng.random((rows, classes)) < 0.5, rng.random((rows, classes)) < 0.5], [0.0, 1.0], rng.random((rows, classes))).astype(np.float32)
    w = rng.choice([1.0, 1.5, 4.0, 20.0], size=(rows, classes))
    return x, y, w


def test_element_weights_and_second_moments_by_hand():
    """Per-element weights: Σ w v and Σ w (w - 1) v² per (class, positive) for BCE and focal
    (alpha 0.3, gamma 2: alpha_t enters the second moments squared, soft targets included), loss
    and gradient, and the weighted element counts, against numpy/torch written out here."""
    x, y, w = _tiny()
    tally = _tally({"logits": x, "targets": y, "weights": w}, ("bce", "focal"), alpha=0.3, gamma=2.0)
    x64, y64 = x.astype(np.float64), y.astype(np.float64)
    bce, bce_gradient = _bce(x64, y64), np.abs(1 / (1 + np.exp(-x64)) - y64)
    focal, focal_gradient = _focal_by_hand(x64, y64, 0.3, 2.0)
    squared = w * (w - 1)
    for loss, values, gradient in (("bce", bce, bce_gradient), ("focal", focal, focal_gradient)):
        np.testing.assert_allclose(tally.loss_sums[loss].sum(axis=(2, 3)), _per_class(values, y64, w, 3), rtol=1e-6, err_msg=loss)
        np.testing.assert_allclose(tally.gradient_sums[loss].sum(axis=(2, 3)), _per_class(gradient, y64, w, 3), rtol=1e-6, err_msg=loss)
        np.testing.assert_allclose(tally.second_moments[loss].sum(axis=(2, 3)), _per_class(values**2, y64, squared, 3), rtol=1e-6, err_msg=loss)
        np.testing.assert_allclose(tally.second_moments["gradient:" + loss].sum(axis=(2, 3)), _per_class(gradient**2, y64, squared, 3), rtol=1e-6, err_msg=loss)
    np.testing.assert_allclose(tally.element_counts.sum(axis=(2, 3)), _per_class(np.ones_like(w), y64, w, 3))
    assert tally.normalisers["bce"] == pytest.approx(w.sum())


def test_weights_of_one_change_nothing_and_have_no_variance():
    """A dump whose weights are all 1 sums as the unweighted dump, with second moments of 0; the
    unweighted dump has neither second moments nor a sample."""
    arrays = _detection(8)
    losses = ("ce", "bce", "focal", "softmax-focal", "ghm", "ohem")
    plain = _tally(arrays, losses)
    assert plain.second_moments is None and plain.sample is None
    ones = _tally({**arrays, "weights": np.ones(len(arrays["logits"]), dtype=np.float16)}, losses)
    _assert_same_tally(ones, plain)
    assert all(not table.any() for table in ones.second_moments.values())


def _padded_dump():
    """Pseudo-rows as the Recorder packs them: per-element weights, targets 0, columns of
    different lengths padded at their end; plus two rows with a target, kept whole at weight 1."""
    rng = np.random.default_rng(13)
    rows, classes = 8, 3
    x = rng.normal(-3, 1.5, size=(rows, classes)).astype(np.float32)
    y = np.zeros((rows, classes), dtype=np.uint8)
    y[0, 1] = y[1, 2] = 1
    w = rng.choice([1.0, 10.0, 50.0], size=(rows, classes))
    w[:2] = 1
    padding = np.zeros((rows, classes), dtype=bool)
    padding[5:, 0] = padding[7:, 1] = True
    padding[6:, 2] = True
    return x, y, w, padding


def test_padding_counts_nowhere():
    """Padded positions add to no sum, no count, no ignored or non-finite count, whatever their
    logit (NaN, 50) or weight (0.5, never read): the per-class sums are those of the positions that
    are not padding, written out here; the rows of padding only can be dropped from the dump."""
    x, y, w, padding = _padded_dump()
    losses = ("bce", "focal", "ghm", "ce")
    tally = _tally({"logits": x, "targets": y, "weights": w, "padding": padding}, losses, alpha=0.25, gamma=2.0)
    present = ~padding
    bce = _bce(x.astype(np.float64), y.astype(np.float64))
    np.testing.assert_allclose(tally.loss_sums["bce"].sum(axis=(2, 3)), _per_class(np.where(present, bce, 0), y, w, 3), rtol=1e-6)
    np.testing.assert_allclose(tally.element_counts.sum(axis=(2, 3)), _per_class(present.astype(float), y, w, 3))
    np.testing.assert_allclose(tally.second_moments["bce"].sum(axis=(2, 3)), _per_class(np.where(present, bce**2, 0), y, w * (w - 1), 3), rtol=1e-6)
    assert not tally.ignored.any() and not tally.nonfinite.any()
    assert tally.sample["sampled_elements"] == int(present.sum())
    garbage_x, garbage_w = x.copy(), w.copy()
    garbage_x[padding] = np.where(np.arange(padding.sum()) % 2, np.nan, 50.0)
    garbage_w[padding] = 0.5
    _assert_same_tally(_tally({"logits": garbage_x, "targets": y, "weights": garbage_w, "padding": padding}, losses, alpha=0.25, gamma=2.0), tally)
    full = np.zeros((2, 3), dtype=bool) | True  # two rows of padding only, at the end
    padded_rows = {
        "logits": np.vstack([x, np.zeros((2, 3), np.float32)]),
        "targets": np.vstack([y, np.zeros((2, 3), np.uint8)]),
        "weights": np.vstack([w, np.ones((2, 3))]),
        "padding": np.vstack([padding, full]),
    }
    _assert_same_tally(_tally(padded_rows, losses, alpha=0.25, gamma=2.0), tally)


def test_row_weights_population_rows_and_recorded_ignored():
    """Row totals of pseudo-rows: a row with a target weighs its target's weight, another the mean
    weight of its elements that are not padding; a batch's ``population_rows`` replaces its row
    total, its background rows being those less its rows with a target; the recorded ``ignored``
    counts add to the ignored ones; the scalars are summed over batches into ``sample``."""
    x, y, w, padding = _padded_dump()
    present = ~padding
    counts = present.sum(axis=1)
    means = (w * present).sum(axis=1) / np.maximum(counts, 1)  # 0 for the row of padding only
    assert counts[-1] == 0
    tally = _tally({"logits": x, "targets": y, "weights": w, "padding": padding}, ("bce", "ce"))
    assert tally.rows == pytest.approx(2 + means[2:].sum())
    assert tally.background_rows == pytest.approx(means[2:].sum())
    assert tally.normalisers["ce"] == 2
    recorded = {"population_rows": np.array(1000), "population_elements": np.array(3000), "sample_rate": np.array(0.01), "ignored": np.array([3, 0, 1])}
    batches = [ArrayFile(source=f"rank000-00000{k}.npz", arrays={"logits": x, "targets": y, "weights": w, "padding": padding, **recorded}) for k in range(2)]
    tally = stream_tally(plan(batches), LossSettings(losses=("bce", "ce")), workers=1)
    assert tally.rows == 2000 and tally.background_rows == 2000 - 4
    np.testing.assert_array_equal(tally.file_counts["background_rows"], [998, 998])
    np.testing.assert_allclose(tally.ignored, [6, 0, 2])
    assert tally.sample == {
        "sampled_elements": 2 * int(present.sum()),
        "population_rows": 2000.0,
        "population_elements": 6000.0,
        "sample_rate": 0.01,
        "recorded_ignored": [6, 0, 2],
        "estimated_elements": pytest.approx(2 * (w * present).sum()),
        "population_source": "recorded",
    }


def test_a_batch_without_weights_weighs_one():
    """A dump of two batches, one weighted and one not: the other weighs 1 — the sums of the
    weighted batch's replication followed by the unweighted batch."""
    first, second = _multi_label(20, rows=100), _multi_label(21, rows=80)
    weights = np.random.default_rng(22).integers(1, 4, size=100)
    losses = ("bce", "focal", "asl")
    mixed = stream_tally(
        plan([ArrayFile(source="a.npz", arrays={**first, "weights": weights}), ArrayFile(source="b.npz", arrays=second)]),
        LossSettings(losses=losses),
        workers=1,
    )
    expected = stream_tally(
        plan([ArrayFile(source="a.npz", arrays=_replicated(first, weights)), ArrayFile(source="b.npz", arrays=second)]), LossSettings(losses=losses), workers=1
    )
    _assert_same_tally(mixed, expected)
    assert mixed.sample["sampled_elements"] == 180 * 5 and mixed.sample["population_source"] == "sum of weights"


def test_api_weights_need_arrays():
    with pytest.raises(lossaudit.InputError, match="weights= goes with logits="):
        lossaudit.compare("examples/detection.npz", weights=np.ones(3))


def test_an_accumulator_made_without_the_flag_counts_weights():
    """A :class:`StreamTally` made without ``weighted`` (as another command's pass may make it)
    switches to weighted mode at its first weighted chunk, in every forked worker, and gives
    ``stream_tally``'s sums and second moments."""
    from lossaudit.compare.engine.stream import StreamTally, stream_pass

    arrays = _soft(40, rows=300)
    data = _plan({**arrays, "weights": np.random.default_rng(41).integers(1, 4, size=300)})
    settings = LossSettings(losses=("bce", "focal", "qfl"))

    def make(rows: int) -> list:
        return [StreamTally(LossSettings(losses=("bce", "focal")), 4, 1, rows, {"qfl": settings.params("qfl")})]

    (accumulator,) = stream_pass(data, make, chunk_rows=50, workers=2)
    got, expected = accumulator.finish(data), stream_tally(data, settings, workers=1)
    for loss in settings.losses:
        np.testing.assert_allclose(got.loss_sums[loss], expected.loss_sums[loss], **TOLERANCE)
        np.testing.assert_allclose(got.second_moments[loss], expected.second_moments[loss], **TOLERANCE)


def test_the_full_tensor_oracle_refuses_weights():
    from lossaudit.compare.oracle import tally
    from lossaudit.io.dataset import load_batches

    data = load_batches([ArrayFile(source="w.npz", arrays={**_soft(50, rows=20), "weights": np.full(20, 2.0)})])
    with pytest.raises(ValueError, match="unweighted dumps only"):
        tally(data, LossSettings(losses=("bce",)))


@pytest.mark.parametrize("layout", ["npz", "compressed npz", "npy folder", "pt"])
def test_every_dump_format_carries_weights(layout, tmp_path):
    """The weights, padding and scalars are read from every format ``compare`` reads, memory-mapped
    or not: the same tally as the arrays given directly."""
    import torch

    from lossaudit.io.readers import read_batches

    x, y, w, padding = _padded_dump()
    arrays = {"logits": x, "targets": y, "weights": w.astype(np.float32), "padding": padding, "population_rows": np.array(40), "ignored": np.array([1, 0, 2])}
    if layout == "npz":
        np.savez(tmp_path / "d.npz", **arrays)
        path = tmp_path / "d.npz"
    elif layout == "compressed npz":
        np.savez_compressed(tmp_path / "d.npz", **arrays)
        path = tmp_path / "d.npz"
    elif layout == "npy folder":
        (tmp_path / "d").mkdir()
        for key, value in arrays.items():
            np.save(tmp_path / "d" / f"{key}.npy", value)
        path = tmp_path / "d"
    else:
        torch.save({key: torch.from_numpy(np.asarray(value)) for key, value in arrays.items()}, tmp_path / "d.pt")
        path = tmp_path / "d.pt"
    losses = ("bce", "focal", "ce")
    got = stream_tally(plan(read_batches([path])), LossSettings(losses=losses), workers=1)
    _assert_same_tally(got, _tally(arrays, losses))
    assert got.rows == 40 and got.ignored.sum() == 3


def test_float16_weights_are_checked_by_their_bits_as_by_their_values():
    """Every one of the 65,536 float16 values is refused as a weight exactly when, as a float64,
    it is below 1, infinite or NaN (the check reads float16 weights by their bits)."""
    from lossaudit.io.dataset.weights import not_weights

    every = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16)
    as_float64 = every.astype(np.float64)
    with np.errstate(invalid="ignore"):
        expected = ~((as_float64 >= 1) & (as_float64 < np.inf))
    np.testing.assert_array_equal(not_weights(every), expected)
