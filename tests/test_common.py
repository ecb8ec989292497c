"""The common tester of ``compare``: every registered loss (:data:`lossaudit.losses.registry.LOSS_IDS`)
through the same checks, so that a loss added to the registry is tested without a line here (as
scikit-learn's ``test_common.py`` and torchmetrics' ``MetricTester`` do for theirs):

1. the streaming engine gives the full-tensor oracle's tally (to :func:`tests.test_stream._assert_same`'s
   1e-5 relative) on index (detection: background, ignore label, row mask, NaN/inf logits, a label
   out of range), soft, heatmap and multi-label dumps, at the default hyper-parameters and at a
   value other than the default for every one the loss reads (derived from the registry);
2. the oracle's per-class sums are the registry's ``terms`` summed by class and sign in float64,
   and its gradient sums autograd's ``|∂ Σ terms / ∂x|`` summed the same way, computed here without
   the oracle's binning;
3. chunk size, worker count and the order of the rows change no sum (1e-9 relative);
4. rows with the ignore label, or masked rows, appended to a dump change no sum or normaliser;
5. boundary values (soft targets exactly 0.5 and 1, logits ±FLT_MAX and ±1e-45, all-background
   dumps) give finite results, the oracle's;
6. every loss whose terms are separable over rows (a property checked here, not assumed) gives
   the oracle's tally on the engine's generic path (its registry ``terms`` per chunk), with one and
   two (forked) workers;

and the registry is consistent: declared parameters exist, are used, are read, and reach ``terms``.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import fields, replace

import numpy as np
import pytest
import torch

from lossaudit.compare.engine import families, stream
from lossaudit.compare.engine.stream import stream_tally
from lossaudit.compare.settings import LossSettings
from lossaudit.errors import InputError
from lossaudit.io.dataset import LoadOptions, load_batches, plan
from lossaudit.io.readers import read_batches
from lossaudit.losses.registry import LOSS_IDS, LOSSES, PARAMS
from lossaudit.losses.spec import SIGMOID, SOFTMAX, Param, PerClassParam
from tests.conftest import write_npz
from tests.test_compare_families import _multi_label
from tests.test_stream import _assert_same, _assert_same_mistakes, _detection, _heatmap, _oracle, _soft

FLT_MAX = float(np.finfo(np.float32).max)
SUBNORMAL = np.float32(1e-45)

KINDS = {"index": _detection, "soft": _soft, "heatmap": _heatmap, "multi-label": _multi_label}
"""The dumps every loss runs on (tests.test_stream's and tests.test_compare_families' writers):
index targets with background, ignore label, row mask, NaN/inf logits and a label out of range;
soft targets with an element mask and background rows; Gaussian heatmaps; multi-hot targets."""


# --- hyper-parameters, derived from the registry --------------------------------------------------


def _other_value(param: Param) -> float:
    """A value of ``param`` other than its default that its constraint allows."""
    bounds, default = param.bounds, param.default
    if param.integer:
        value = default + 3
    elif bounds.low is not None and bounds.high is not None:
        value = (bounds.low + bounds.high) / 2
        value = value if value != default else (bounds.low + value) / 2
    elif bounds.low is not None:
        value = 1.5 * default + 0.5
    else:
        value = default + 0.5
    assert value != default and bounds.allows(value), param.name
    return value


def _settings(loss: str, variant: str, num_classes: int, **extra) -> LossSettings:
    """``loss`` alone at its defaults (``defaults``), with every scalar hyper-parameter at another
    value (``other``), or with a per-class parameter given too (``per-class``)."""
    values: dict[str, object] = {}
    if variant in ("other", "per-class"):
        values = {name: _other_value(param) for name, param in PARAMS.items() if isinstance(param, Param)}
    if variant == "per-class":
        values.update({name: tuple(np.linspace(0.1, 0.9, num_classes)) for name, param in PARAMS.items() if isinstance(param, PerClassParam)})
    return LossSettings(losses=(loss,), **{**values, **extra})


def _variants(loss: str) -> list[str]:
    per_class = any(isinstance(PARAMS[name], PerClassParam) for name in LOSSES[loss].params)
    return ["defaults", *(["other"] if LOSSES[loss].params else []), *(["per-class"] if per_class else [])]


def _paths(tmp_path, kind: str, seeds=(1, 2)):
    """Two dumps of ``kind`` (chunks cross the files)."""
    return [KINDS[kind](tmp_path / f"{kind}{seed}.npz", seed) for seed in seeds]


def _num_classes(paths, options=LoadOptions()) -> int:
    return plan(read_batches(paths), options).info.num_classes


def _streamed(paths, settings, options=LoadOptions(), **arguments):
    return stream_tally(plan(read_batches(paths), options), settings, **arguments)


SOFTMAX_ROW_STATISTICS = ("sum_q_positive", "softmax_positives")


def _oracle_tally(paths, settings, options=LoadOptions()):
    """:func:`tests.test_stream._oracle`, with the statistics of "the rows a softmax loss uses"
    (:class:`~lossaudit.compare.settings.Tally`) zero when no softmax loss is asked for, as the
    streaming engine has them: the oracle computes them whatever the losses
    (:func:`test_softmax_row_statistics_agree_without_a_softmax_loss`)."""
    full = _oracle(paths, settings, options)
    if not any(LOSSES[loss].family == SOFTMAX for loss in settings.losses):
        full = replace(full, **{name: np.zeros_like(getattr(full, name)) for name in SOFTMAX_ROW_STATISTICS})
    return full


# --- 1. streaming = full-tensor oracle --------------------------------------------------------------


CASES = [(loss, kind, variant) for loss in LOSS_IDS for kind in KINDS for variant in _variants(loss)]


@pytest.mark.parametrize("loss, kind, variant", CASES, ids=["-".join(case) for case in CASES])
def test_stream_equals_oracle(tmp_path, loss, kind, variant):
    paths = _paths(tmp_path, kind)
    settings = _settings(loss, variant, _num_classes(paths), bins=7)
    full = _oracle_tally(paths, settings)
    assert full.loss_sums[loss].sum() > 0, f"{loss} is 0 on the {kind} dump: the comparison proves nothing"
    _assert_same(_streamed(paths, settings, chunk_rows=7), full)


def test_softmax_row_statistics_agree_without_a_softmax_loss(tmp_path):
    """With sigmoid losses only, both engines give the same ``sum_q_positive`` and
    ``softmax_positives`` (the report's ``mean_p_softmax``)."""
    paths = _paths(tmp_path, "index")
    settings = LossSettings(losses=("bce",))
    full, streamed = _oracle(paths, settings), _streamed(paths, settings)
    for name in SOFTMAX_ROW_STATISTICS:
        np.testing.assert_allclose(getattr(streamed, name), getattr(full, name), rtol=1e-5, err_msg=name)


def test_every_loss_meets_a_dump_it_is_a_default_on(tmp_path):
    """A loss made a default for some data (``default_when``) has such a dump among :data:`KINDS`:
    a loss added for a new kind of data fails here until a dump of that kind is added."""
    infos = {kind: plan(read_batches(_paths(tmp_path, kind, seeds=(1,)))).info for kind in KINDS}
    for loss, spec in LOSSES.items():
        if spec.default_when is not None:
            assert any(spec.default_when(info) for info in infos.values()), f"{loss}: no dump among {list(KINDS)} is one it is a default on"


# --- 2. the oracle is the registry's terms, summed by class --------------------------------------


def _class_counts(paths, num_classes: int) -> torch.Tensor:
    """Each class's targets summed over the dumps as stored (labels 0..C-1 counted for index
    targets), from the raw arrays."""
    counts = np.zeros(num_classes)
    for path in paths:
        targets = np.load(path)["targets"]
        if np.issubdtype(targets.dtype, np.integer):
            labels = targets.reshape(-1)
            counts += np.bincount(labels[(labels >= 0) & (labels < num_classes)], minlength=num_classes)[:num_classes]
        else:
            class_axis = 1 if targets.ndim == 4 else targets.ndim - 1
            counts += np.moveaxis(targets, class_axis, -1).reshape(-1, num_classes).sum(axis=0, dtype=np.float64)
    return torch.from_numpy(counts)


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("loss", LOSS_IDS)
def test_oracle_sums_are_the_registry_terms_by_class(tmp_path, loss, kind):
    """Σ of ``spec.terms`` over the valid elements (sigmoid) or the rows with a target (softmax),
    per class and sign, in float64; the gradient magnitude from autograd the same way (softmax: a
    row's ``Σ_c |∂/∂x_c|`` shared among its targets in proportion to them)."""
    paths = _paths(tmp_path, kind)
    data = load_batches(read_batches(paths))
    settings = _settings(loss, "other", data.num_classes, bins=3)
    spec, arguments = LOSSES[loss], settings.params(loss)
    valid, positive = data.valid, data.positive
    x = torch.where(valid, data.logits.double(), 0.0)
    y = data.targets.double()
    if spec.family == SIGMOID:
        x.requires_grad_()
        terms = spec.terms(x, y, valid, positive, **arguments)
        (gradient,) = torch.autograd.grad((terms * valid).sum(), x)
        keep, gradient = valid, gradient.abs()
    else:
        rows = valid.all(dim=1) & (y.sum(dim=1) > 0)
        x, y, positive = x[rows].requires_grad_(), y[rows], positive[rows]
        terms = spec.terms(x, y, _class_counts(paths, data.num_classes), **arguments)
        (gradient,) = torch.autograd.grad(terms.sum(), x)
        keep = y != 0
        gradient = gradient.abs().sum(dim=1, keepdim=True) * y / y.sum(dim=1, keepdim=True)
    expected = np.zeros((2, data.num_classes, 2))
    for sign in (0, 1):
        cells = keep & (positive == bool(sign))
        expected[0, :, sign] = torch.where(cells, terms.detach(), 0.0).sum(dim=0).numpy()
        expected[1, :, sign] = torch.where(cells, gradient, 0.0).sum(dim=0).numpy()
    full = _oracle_tally(paths, settings)
    assert expected[0].sum() > 0
    np.testing.assert_allclose(full.loss_sums[loss].sum(axis=(2, 3)), expected[0], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(full.gradient_sums[loss].sum(axis=(2, 3)), expected[1], rtol=1e-10, atol=1e-12)


# --- 3. chunks, workers, row order ------------------------------------------------------------------


def _rows(path) -> dict[str, np.ndarray]:
    """The arrays of a dump with one row per sample: ``(N, C)`` logits, ``(N,)`` or ``(N, C)``
    targets and mask."""
    arrays = dict(np.load(path))
    classes = arrays["logits"].shape[-1]
    out = {"logits": arrays["logits"].reshape(-1, classes)}
    for name in ("targets", "mask"):
        if name in arrays:
            value = arrays[name]
            out[name] = value.reshape(-1) if value.shape == arrays["logits"].shape[:-1] else value.reshape(-1, classes)
    return out


DENSE_RTOL = 4e-6
"""The dense pass (:mod:`lossaudit.compare.engine.dense`) sums the easy negatives in float32 over
groups of rows, each class's sum within 2e-6 relative of exact (its docstring): two groupings of
the same rows (other chunks, another order) may differ by twice that in those cells."""


def _assert_close(got, expected, rtol: float, skip=()) -> None:
    """Every field of two tallies to ``rtol`` (sums of non-negative terms: no cancellation), but
    the cells the dense pass adds to (class, negative, first bin, easy) to :data:`DENSE_RTOL`."""
    for field in fields(expected):
        if field.name in skip:
            continue
        a, b = getattr(got, field.name), getattr(expected, field.name)
        if b is None and field.name in ("mistakes", "focal_parts"):  # the oracle's
            continue
        if field.name == "mistakes":
            _assert_same_mistakes(a, b)
            continue
        pairs = [(f"{field.name}[{key}]", a[key], b[key]) for key in b] if isinstance(b, dict) else [(field.name, a, b)]
        if isinstance(b, dict):
            assert a.keys() == b.keys(), field.name
        for name, value, reference in pairs:
            if isinstance(reference, str):
                assert value == reference, name
                continue
            value, reference = np.asarray(value, dtype=np.float64), np.asarray(reference, dtype=np.float64)
            assert value.shape == reference.shape, name
            if reference.ndim == 4:  # (C, 2, bins, levels)
                np.testing.assert_allclose(value[:, 0, 0, 0], reference[:, 0, 0, 0], rtol=DENSE_RTOL, atol=1e-300, err_msg=name + " (easy negatives)")
                value, reference = value.copy(), reference.copy()
                value[:, 0, 0, 0] = reference[:, 0, 0, 0] = 0
            np.testing.assert_allclose(value, reference, rtol=rtol, atol=1e-300, err_msg=name)


INVARIANCE_KINDS = ("index", "soft")
MINING = replace(LossSettings(), ohem_ratio=0.2)
"""OHEM with a negative per five positives: the selection leaves out negatives on every dump
(:func:`_assert_ohem_selects`)."""


def _invariance_settings(loss: str, num_classes: int) -> LossSettings:
    return _settings(loss, "defaults", num_classes, bins=7, ohem_ratio=MINING.ohem_ratio)


def _assert_ohem_selects(paths, loss: str, settings: LossSettings, got) -> None:
    """Hard-negative mining leaves some valid row out (else its invariance is BCE's)."""
    if loss == "ohem":
        everything = _streamed(paths, replace(settings, ohem_ratio=1e9))
        assert got.loss_sums[loss].sum() < everything.loss_sums[loss].sum()


@pytest.mark.parametrize("kind", INVARIANCE_KINDS)
@pytest.mark.parametrize("loss", LOSS_IDS)
def test_chunks_and_workers_change_nothing(tmp_path, loss, kind):
    paths = _paths(tmp_path, kind)
    settings = _invariance_settings(loss, _num_classes(paths))
    whole = _streamed(paths, settings, chunk_rows=10**6, workers=1)
    assert whole.loss_sums[loss].sum() > 0
    _assert_ohem_selects(paths, loss, settings, whole)
    for chunk_rows, workers in ((1, 1), (7, 1), (7, 2), (10**6, 2)):  # (all rows in one chunk, 2 workers: one idle)
        _assert_close(_streamed(paths, settings, chunk_rows=chunk_rows, workers=workers), whole, 1e-9)


@pytest.mark.parametrize("kind", INVARIANCE_KINDS)
@pytest.mark.parametrize("loss", LOSS_IDS)
def test_row_order_changes_nothing(tmp_path, loss, kind):
    """The rows of a dump in a random order: every sum, GHM's and OHEM's (functions of the multiset
    of rows; the dumps' row losses are distinct, so OHEM's selection has no ties to break), and
    every count."""
    arrays = _rows(KINDS[kind](tmp_path / "raw.npz", 3))
    order = np.random.default_rng(4).permutation(len(arrays["logits"]))
    original = write_npz(tmp_path / "rows.npz", **arrays)
    shuffled = write_npz(tmp_path / "shuffled.npz", **{name: value[order] for name, value in arrays.items()})
    settings = _invariance_settings(loss, _num_classes([original]))
    expected = _streamed([original], settings, chunk_rows=11)
    assert expected.loss_sums[loss].sum() > 0
    _assert_ohem_selects([original], loss, settings, expected)
    _assert_close(_streamed([shuffled], settings, chunk_rows=11), expected, 1e-9)
    _assert_same(_streamed([shuffled], settings, chunk_rows=11), _oracle_tally([shuffled], settings))


# --- 4. ignored rows --------------------------------------------------------------------------------


EXTRA_ROWS = 9


def _with_ignored_rows(arrays: dict[str, np.ndarray], needs_counts: bool) -> dict[str, np.ndarray]:
    """``arrays`` and :data:`EXTRA_ROWS` rows that count for nothing: the ignore label (index
    targets, under the row mask too) or masked out element by element (other targets). Their logits
    would be the hardest of the dump (±30, NaN, ±inf); their targets are non-zero unless the loss
    reads the class counts, which are taken before masks by design
    (:meth:`~lossaudit.io.dataset.DataPlan.class_target_sums`)."""
    rng = np.random.default_rng(5)
    logits, targets = arrays["logits"], arrays["targets"]
    classes = logits.shape[1]
    extra_logits = rng.choice(np.array([30, -30, np.nan, np.inf, -np.inf, 0.3], np.float32), size=(EXTRA_ROWS, classes))
    out = {"logits": np.concatenate([logits, extra_logits])}
    if targets.ndim == 1:
        out["targets"] = np.concatenate([targets, np.full(EXTRA_ROWS, -1, dtype=targets.dtype)])
        if "mask" in arrays:
            out["mask"] = np.concatenate([arrays["mask"], rng.integers(0, 2, EXTRA_ROWS).astype(arrays["mask"].dtype)])
    else:
        extra = np.zeros((EXTRA_ROWS, classes), np.float32) if needs_counts else rng.choice(np.array([0, 0.5, 1, 0.3], np.float32), size=(EXTRA_ROWS, classes))
        out["targets"] = np.concatenate([targets, extra.astype(targets.dtype)])
        mask = arrays.get("mask", np.ones(targets.shape, np.uint8))
        out["mask"] = np.concatenate([np.broadcast_to(mask.reshape(len(targets), -1), targets.shape), np.zeros((EXTRA_ROWS, classes), mask.dtype)])
    return out


@pytest.mark.parametrize("kind", ["index", "soft", "multi-label"])
@pytest.mark.parametrize("loss", LOSS_IDS)
def test_ignored_rows_change_nothing(tmp_path, loss, kind):
    arrays = _rows(KINDS[kind](tmp_path / "raw.npz", 6))
    if kind == "multi-label":  # no mask of its own: every element valid but the NaN/inf ones
        arrays.pop("mask")
    original = write_npz(tmp_path / "rows.npz", **arrays)
    padded = write_npz(tmp_path / "padded.npz", **_with_ignored_rows(arrays, LOSSES[loss].needs_class_counts))
    settings = _invariance_settings(loss, _num_classes([original]))
    expected = _streamed([original], settings, chunk_rows=8)
    assert expected.loss_sums[loss].sum() > 0
    _assert_ohem_selects([original], loss, settings, expected)
    pairs = [(_streamed([padded], settings, chunk_rows=8), expected), (_oracle_tally([padded], settings), _oracle_tally([original], settings))]
    for got, reference in pairs:
        _assert_close(got, reference, 1e-9, skip=("rows", "ignored"))
        assert got.rows == reference.rows + EXTRA_ROWS
        np.testing.assert_array_equal(got.ignored, reference.ignored + EXTRA_ROWS)


# --- 5. boundary values -----------------------------------------------------------------------------


def _boundary_soft(path):
    """Soft targets exactly 0, 0.5 and 1 (and between) against logits ±FLT_MAX, ±1e-45 (subnormal),
    ±0 and ordinary values; background rows; every class has targets."""
    rng = np.random.default_rng(7)
    specials = np.array([FLT_MAX, -FLT_MAX, SUBNORMAL, -SUBNORMAL, 0.0, -0.0], np.float32)
    logits = rng.normal(0, 3, size=(48, 4)).astype(np.float32)
    logits.reshape(-1)[rng.choice(logits.size, 40, replace=False)] = rng.choice(specials, 40)
    targets = rng.choice(np.array([0, 0, 0.5, 1, 0.25], np.float32), size=(48, 4))
    targets[:6] = 0  # background rows
    targets[6:10] = np.eye(4, dtype=np.float32) * 0.5
    targets[10:14] = np.eye(4, dtype=np.float32)
    logits[6:14] = rng.choice(specials, size=(8, 4))
    return write_npz(path, logits=logits, targets=targets)


def _boundary_index(path):
    """Index targets (background C, ignore -1) with logits ±FLT_MAX and ±1e-45 in some rows, whole rows of them."""
    rng = np.random.default_rng(8)
    logits = rng.normal(-2, 3, size=(40, 3)).astype(np.float32)
    logits[:3] = [[FLT_MAX, -FLT_MAX, SUBNORMAL], [-FLT_MAX, FLT_MAX, -SUBNORMAL], [SUBNORMAL, SUBNORMAL, -FLT_MAX]]
    logits[3:6] = [[FLT_MAX, -FLT_MAX, SUBNORMAL], [-FLT_MAX] * 3, [SUBNORMAL] * 3]
    logits.reshape(-1)[rng.choice(np.arange(18, logits.size), 20, replace=False)] = rng.choice([FLT_MAX, -FLT_MAX, SUBNORMAL], 20)
    labels = rng.choice([0, 1, 2, 3, -1], size=40, p=[0.2, 0.2, 0.2, 0.3, 0.1])
    labels[:6] = [0, 1, 2, 1, 1, 2]  # row 3: the target at -FLT_MAX, another class at +FLT_MAX
    return write_npz(path, logits=logits, targets=labels)


def _all_background_index(path):
    rng = np.random.default_rng(9)
    labels = np.full(30, 3)
    labels[::7] = -1
    return write_npz(path, logits=rng.normal(-1, 4, size=(30, 3)).astype(np.float32), targets=labels)


def _all_background_soft(path):
    rng = np.random.default_rng(10)
    logits = rng.normal(-1, 4, size=(30, 3)).astype(np.float32)
    logits[0] = [FLT_MAX, -FLT_MAX, SUBNORMAL]
    return write_npz(path, logits=logits, targets=np.zeros((30, 3), np.float32))


BOUNDARY = {
    "soft": (_boundary_soft, LoadOptions()),
    "index": (_boundary_index, LoadOptions()),
    "all-background-index": (_all_background_index, LoadOptions(targets="index")),
    "all-background-soft": (_all_background_soft, LoadOptions(targets="soft")),
}


def _assert_finite(result, loss: str) -> None:
    for name in ("loss_sums", "gradient_sums"):
        assert np.isfinite(getattr(result, name)[loss]).all(), f"{name}[{loss}] is not finite"
    assert math.isfinite(result.normalisers[loss])


CENTERNET_NEAR_ONE = (
    "the stream takes CenterNet's negative term -log(1 - p) from p rounded to float32: just below the "
    "clamp (a logit of 9.1, p = 0.99989) 1 - p keeps few bits, 1.4e-5 relative off the oracle (1e-6 at 7.5)"
)
KNOWN_LIMITS = {("centernet", "all-background-index"): CENTERNET_NEAR_ONE}
"""Boundary cases the engine does not meet yet (strict: each fails the suite once fixed, to be removed
here). Found here and fixed: the streamed softmax of a row holding -FLT_MAX and +FLT_MAX was inf;
CenterNet's clamp differed between the float64 oracle and float32 CenterNet by 1.8e-5."""
BOUNDARY_CASES = [
    pytest.param(
        loss, dump, id=f"{loss}-{dump}", marks=[pytest.mark.xfail(strict=True, reason=KNOWN_LIMITS[loss, dump])] if (loss, dump) in KNOWN_LIMITS else []
    )
    for loss in LOSS_IDS
    for dump in BOUNDARY
]


@pytest.mark.parametrize("loss, dump", BOUNDARY_CASES)
def test_boundary_values_are_finite_and_the_oracles(tmp_path, loss, dump):
    make, options = BOUNDARY[dump]
    paths = [make(tmp_path / "dump.npz")]
    settings = _settings(loss, "defaults", _num_classes(paths, options))
    background = dump.startswith("all-background")
    if background and LOSSES[loss].needs_class_counts:
        with pytest.raises(InputError, match="has no targets"):
            _streamed(paths, settings, options)
        return
    full = _oracle_tally(paths, settings, options)
    _assert_finite(full, loss)
    for workers in (1, 2):
        got = _streamed(paths, settings, options, chunk_rows=5, workers=workers)
        _assert_finite(got, loss)
        _assert_same(got, full)
    if background and LOSSES[loss].family == SOFTMAX:
        assert full.normalisers[loss] == 0  # no row has a target
    elif not background:
        assert full.loss_sums[loss].sum() > 0


# --- 6. the generic path ----------------------------------------------------------------------------


def _separable(loss: str) -> bool:
    """Whether ``spec.terms`` of a set of rows is the terms of its parts (rows 0..16 and 17..39),
    concatenated, on soft and hard targets, positives in many rows or in two (a softmax loss:
    every row a target, the same class counts given to all three calls)."""
    spec = LOSSES[loss]
    arguments = LossSettings().params(loss)
    rng = np.random.default_rng(11)
    x = torch.from_numpy(rng.normal(-1, 3, size=(40, 4)))
    dense = torch.from_numpy(np.where(rng.random((40, 4)) < 0.3, rng.choice([0.3, 0.5, 1.0], size=(40, 4)), 0.0))
    sparse = torch.zeros(40, 4, dtype=torch.float64)
    sparse[0, 1] = sparse[1, 2] = 1.0
    pieces = (slice(0, 17), slice(17, None))
    for y in (dense, sparse):
        if spec.family == SOFTMAX:
            empty = torch.nonzero(y.sum(dim=1) == 0).flatten()
            y = y.clone()
            y[empty, empty % y.shape[1]] = 1.0
            counts = y.sum(dim=0)
            parts = [spec.terms(x[rows], y[rows], counts, **arguments) for rows in pieces]
            whole = spec.terms(x, y, counts, **arguments)
        else:
            valid, positive = torch.ones_like(y, dtype=torch.bool), y >= 0.5
            parts = [spec.terms(x[rows], y[rows], valid[rows], positive[rows], **arguments) for rows in pieces]
            whole = spec.terms(x, y, valid, positive, **arguments)
        if not torch.allclose(torch.cat(parts), whole, rtol=1e-12, atol=0):
            return False
    return True


SEPARABLE = tuple(loss for loss in LOSS_IDS if _separable(loss))


def test_only_row_separable_losses_may_take_the_generic_path():
    """GHM-C's weights depend on every element's bin and OHEM's selection on every row: the
    probe tells them apart (it can fail), and every loss it finds not separable has numpy terms."""
    assert {"ghm", "ohem"}.isdisjoint(SEPARABLE)
    assert {"bce", "ce", "focal", "centernet", "qfl", "cb-ce"} <= set(SEPARABLE)
    for loss in set(LOSS_IDS) - set(SEPARABLE):
        assert loss in stream.FAST_LOSSES + families.FAMILY_LOSSES, f"{loss} is not separable over rows but has no numpy terms"


class _Spy(stream.GenericTally):
    """The generic accumulator, recording the losses it finished (in this process: after the merge)."""

    finished: list = []

    def finish(self, result) -> None:
        _Spy.finished.append(self.losses)
        super().finish(result)


GENERIC_CASES = [pytest.param(loss, kind, id=f"{loss}-{kind}") for loss in SEPARABLE for kind in KINDS]
"""(Found here and fixed: the generic path added CenterNet's max(peaks, 1) chunk by chunk.)"""


@pytest.mark.parametrize("loss, kind", GENERIC_CASES)
def test_generic_path_equals_oracle(tmp_path, monkeypatch, loss, kind):
    """The loss taken out of the engine's numpy losses (:data:`stream.FAST_LOSSES` and
    :data:`families.FAMILY_LOSSES`, read by :func:`stream_tally` at each call) is computed from its
    registry ``terms`` chunk by chunk (chunks of 16 rows: some without a target or a peak). With 2
    workers the pass keeps to this process, which has imported torch
    (:func:`test_generic_path_in_forked_workers_equals_oracle` forks)."""
    monkeypatch.setattr(stream, "FAST_LOSSES", tuple(other for other in stream.FAST_LOSSES if other != loss))
    monkeypatch.setattr(families, "FAMILY_LOSSES", tuple(other for other in families.FAMILY_LOSSES if other != loss))
    monkeypatch.setattr(stream, "GenericTally", _Spy)
    monkeypatch.setattr(_Spy, "finished", [])
    paths = _paths(tmp_path, kind)
    settings = _settings(loss, "other", _num_classes(paths), bins=7)
    full = _oracle_tally(paths, settings)
    assert full.loss_sums[loss].sum() > 0
    workers = (1, 2) if kind == "index" else (1,)  # 2 here: this process has torch, the pass keeps to it
    for count in workers:
        _assert_same(_streamed(paths, settings, chunk_rows=16, workers=count), full)
    assert _Spy.finished == [(loss,)] * len(workers)


FORKED_PASS = """
import os, pickle, sys

from lossaudit.compare.engine import families, stream
from lossaudit.io.dataset import plan
from lossaudit.io.readers import read_batches


class PidSpy(stream.GenericTally):
    \"\"\"The generic accumulator, recording the processes that added chunks to it (pickled back and merged).\"\"\"

    def __init__(self, *arguments, **keywords):
        super().__init__(*arguments, **keywords)
        self.pids = set()

    def add(self, chunk, file=0):
        self.pids.add(os.getpid())
        super().add(chunk, file)

    def merge(self, other):
        super().merge(other)
        self.pids |= other.pids

    def finish(self, tally):
        super().finish(tally)
        PidSpy.seen = sorted(self.pids)


jobs, out = pickle.load(open(sys.argv[1], "rb")), []
assert "torch" not in sys.modules  # else the pass keeps to this process
stream.GenericTally = PidSpy
for paths, settings in jobs:
    stream.FAST_LOSSES = tuple(loss for loss in stream.FAST_LOSSES if loss not in settings.losses)
    families.FAMILY_LOSSES = tuple(loss for loss in families.FAMILY_LOSSES if loss not in settings.losses)
    PidSpy.seen = None
    result = stream.stream_tally(plan(read_batches(paths)), settings, chunk_rows=7, workers=2)
    out.append((result, PidSpy.seen))
pickle.dump(out, open(sys.argv[2], "wb"))
"""
"""Every separable loss on the generic path in a fresh interpreter that has not imported torch, so
that the pass forks its second worker (where this process has imported torch the pass keeps to
it: torch's thread pools do not survive a fork)."""


FORKED_KINDS = ("index", "soft")


def test_generic_path_in_forked_workers_equals_oracle(tmp_path):
    """The generic accumulators of two forked workers, pickled back and merged, give the oracle's
    tally for every separable loss; both processes added chunks. One fresh interpreter per dump
    (run at once): the pass no longer forks once torch is imported. A loss of :data:`GENERIC_BUGS`
    must still differ (fix it, then remove it there)."""
    import os
    import pickle
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    runs = []
    for kind in FORKED_KINDS:
        paths = _paths(tmp_path, kind)
        job = (paths, replace(_settings(SEPARABLE[0], "other", _num_classes(paths), bins=7), losses=SEPARABLE))
        (tmp_path / f"{kind}.jobs").write_bytes(pickle.dumps([job]))
        command = [sys.executable, "-c", FORKED_PASS, tmp_path / f"{kind}.jobs", tmp_path / f"{kind}.out"]
        runs.append((job, kind, subprocess.Popen(command, cwd=root, env=environment)))
    for (paths, settings), kind, process in runs:
        assert process.wait(timeout=120) == 0
        [(streamed, pids)] = pickle.loads((tmp_path / f"{kind}.out").read_bytes())
        assert pids is not None and len(pids) == 2 and os.getpid() not in pids, pids
        full = _oracle_tally(paths, settings)
        for loss in SEPARABLE:
            assert full.loss_sums[loss].sum() > 0, (loss, kind)
            _assert_same(_only(streamed, loss), _only(full, loss))


def _only(result, loss: str):
    """``result`` with the per-loss tables of ``loss`` alone."""
    per_loss = ("loss_sums", "gradient_sums", "normalisers", "normaliser_names")
    return replace(result, **{name: {loss: getattr(result, name)[loss]} for name in per_loss})


# --- the registry -----------------------------------------------------------------------------------


def test_registry_is_consistent():
    """Every declared parameter exists and some loss uses it; a loss's arguments change with its
    declared parameters and with no other; the arguments are keywords of its ``terms``; a sigmoid
    loss has a normaliser."""
    used = {name for spec in LOSSES.values() for name in spec.params}
    assert used <= set(PARAMS)
    assert set(PARAMS) <= used, f"parameters no loss uses: {set(PARAMS) - used}"
    base = LossSettings()
    for loss, spec in LOSSES.items():
        assert spec.id == loss and spec.family in (SIGMOID, SOFTMAX) and spec.terms is not None
        assert (spec.normaliser is not None) == (spec.family == SIGMOID), loss
        arguments = base.params(loss)
        signature = inspect.signature(spec.terms).parameters
        var_keyword = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in signature.values())
        assert var_keyword or set(arguments) <= set(signature), f"{loss}: {set(arguments) - set(signature)} are no keywords of its terms"
        for name, param in PARAMS.items():
            value = tuple(np.linspace(0.1, 0.9, 4)) if isinstance(param, PerClassParam) else _other_value(param)
            changed = LossSettings(**{name: value}).params(loss) != arguments
            assert changed == (name in spec.params), f"{loss}: {name} {'is read but not declared' if changed else 'is declared but not read'}"
