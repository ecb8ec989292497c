"""The weighted dense pass (issue 27): the easy negatives of the rows whose elements do not all
weigh 1 (a Recorder's pseudo-rows) are summed by a weighted dense pass instead of one by one.

Its sums ``Σ w v`` and second moments ``Σ w (w - 1) v²`` are checked per class against the loss
and gradient magnitude of every element, computed here by the torch references of
:mod:`lossaudit.losses` (float64, autograd for the gradients) and weighted in numpy, for every loss
the pass keeps sums of: BCE, focal (gamma 2 and 0.5), QFL, VFL, ASL without and with its clip,
and CenterNet on heatmaps; at several chunk sizes and worker counts, with padding and with rows of
weight 1 (the plain dense pass) in the same chunks; and through the pass a tally shares with the
softmax families (cb-ce).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lossaudit import losses
from lossaudit.compare.engine import dense
from lossaudit.compare.engine.stream import stream_tally
from lossaudit.compare.settings import LossSettings
from lossaudit.io.dataset import plan
from lossaudit.io.readers import ArrayFile
from tests.test_weighted_engine import _heatmaps

RTOL = 1e-5
SIGMOID = ("bce", "focal", "qfl", "vfl", "asl", "centernet")
"""The losses whose easy negatives the dense passes sum (checked here)."""


def _sampled(seed: int, rows: int = 300, classes: int = 4, soft: bool = False, ones_first: bool = False) -> dict:
    """Rows 0-39 carry targets at weight 1; the others are pseudo-rows of negatives, mostly easy
    (logits around -4), at weights 1, 10 and 100, their columns padded at the end. Some of those
    rows weigh 1 throughout (each pass then sees every row, the other's dropped), none with
    ``ones_first`` (each pass sees only its own rows)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(-4, 1.5, size=(rows, classes)).astype(np.float32)
    y = np.zeros((rows, classes), dtype=np.float32)
    hit = rng.random((40, classes)) < 0.3
    y[:40][hit] = rng.uniform(0.3, 1.0, int(hit.sum())) if soft else 1.0
    x[:40][hit] += 5
    w = rng.choice([1.0, 10.0, 100.0], size=(rows, classes), p=[0.3, 0.4, 0.3])
    w[:40] = 1
    if ones_first:
        w[40:, 0] = 10  # no later row weighs 1 throughout
    else:
        w[40::50] = 1  # rows 40, 90, 140 and 190 do (no padding there)
    padding = np.zeros((rows, classes), dtype=bool)
    for c, length in enumerate(rng.integers(200, rows, size=classes)):
        padding[length:, c] = True
    return {"logits": x, "targets": y, "weights": w, "padding": padding}


def _weighted_heatmaps(seed: int) -> dict:
    """:func:`test_weighted_engine._heatmaps`' (4, 3, 16, 16) heatmaps with a weight per image (1 for the first)."""
    arrays = _heatmaps(seed)
    arrays["weights"] = np.broadcast_to(np.array([1.0, 7.0, 30.0, 3.0])[:, None, None], (4, 16, 16)).copy()
    return arrays


def _reference(loss: str, x: np.ndarray, y: np.ndarray, settings: LossSettings) -> tuple[np.ndarray, np.ndarray]:
    """Per element, float64: the loss of the torch reference and its gradient magnitude |∂/∂x|."""
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    yt = torch.tensor(y, dtype=torch.float64)
    if loss == "bce":
        values = torch.nn.functional.binary_cross_entropy_with_logits(xt, yt, reduction="none")
    elif loss == "focal":
        values = losses.focal(xt, yt, alpha=settings.alpha, gamma=settings.gamma, reduction="none")
    elif loss == "centernet":
        clamp = float(losses.CENTERNET_PROB_CLAMP)
        values = losses.centernet(torch.sigmoid(xt).clamp(clamp, 1 - clamp), yt, reduction="none")
    else:
        values = {"qfl": losses.qfl, "vfl": losses.vfl, "asl": losses.asl}[loss](xt, yt, **settings.params(loss), reduction="none")
    (gradient,) = torch.autograd.grad(values.sum(), xt)
    return values.detach().numpy(), gradient.abs().numpy()


def _by_class(values: np.ndarray, weights: np.ndarray, classes: int, axis: int) -> np.ndarray:
    """``(C,)`` sums of ``weights × values`` over every element of each class (class axis ``axis``)."""
    return np.moveaxis(weights * values, axis, 0).reshape(classes, -1).sum(axis=1)


def _check(arrays: dict, settings: LossSettings, classes: int, axis: int, workers: int, chunk_rows: int | None) -> None:
    tally = stream_tally(plan([ArrayFile(source="sample.npz", arrays=arrays)]), settings, workers=workers, chunk_rows=chunk_rows)
    x, y = arrays["logits"].astype(np.float64), arrays["targets"].astype(np.float64)
    w = np.broadcast_to(arrays["weights"][:, None] if axis == 1 and arrays["weights"].ndim == 3 else arrays["weights"], x.shape)
    present = ~arrays["padding"] if "padding" in arrays else np.ones(x.shape, dtype=bool)
    w = np.where(present, w, 0.0)
    for loss in (loss for loss in settings.losses if loss in SIGMOID):
        values, gradient = _reference(loss, x, y, settings)
        values, gradient = np.where(present, values, 0.0), np.where(present, gradient, 0.0)
        got = {
            name: table.reshape(classes, -1).sum(axis=1)
            for name, table in (
                ("loss", tally.loss_sums[loss]),
                ("gradient", tally.gradient_sums[loss]),
                ("loss second", tally.second_moments[loss]),
                ("gradient second", tally.second_moments["gradient:" + loss]),
            )
        }
        expected = {
            "loss": _by_class(values, w, classes, axis),
            "gradient": _by_class(gradient, w, classes, axis),
            "loss second": _by_class(values**2, w * (w - 1), classes, axis),
            "gradient second": _by_class(gradient**2, w * (w - 1), classes, axis),
        }
        for name, value in expected.items():
            np.testing.assert_allclose(got[name], value, rtol=RTOL, err_msg=f"{loss} {name}")
    np.testing.assert_allclose(tally.element_counts.reshape(classes, -1).sum(axis=1), _by_class(np.ones_like(x), w, classes, axis))


@pytest.fixture
def weighted_passes(monkeypatch) -> list[tuple[float, tuple[int, int] | None]]:
    """The weights the weighted dense passes summed so far at each call, and the rows each call
    looked at (None: all), so a test knows the pass ran and how."""
    seen: list[tuple[float, tuple[int, int] | None]] = []
    add = dense.DensePass.add

    def counting(self, chunk, rows=None):
        taken = add(self, chunk, rows)
        if self.weighted:
            seen.append((float(self.count.sum()), rows))
        return taken

    monkeypatch.setattr(dense.DensePass, "add", counting)
    return seen


@pytest.mark.parametrize("ones_first", [False, True], ids=["interleaved", "ones-first"])
@pytest.mark.parametrize("workers, chunk_rows", [(1, None), (1, 37), (2, 64)])
@pytest.mark.parametrize(
    "soft, settings",
    [
        (False, LossSettings(losses=("bce", "focal", "asl"), alpha=0.3, gamma=2.0)),
        (False, LossSettings(losses=("focal", "asl"), gamma=0.5, asl_clip=0.0, asl_gamma_neg=3.0)),
        (True, LossSettings(losses=("bce", "focal", "qfl", "vfl"), gamma=2.0)),
        (False, LossSettings(losses=("bce", "focal", "cb-ce"))),
        (False, LossSettings(losses=("focal", "asl"), gamma=0.0, asl_clip=0.0, asl_gamma_neg=0.0)),
    ],
    ids=["asl-clipped", "gamma-0.5-asl-unclipped", "soft-qfl-vfl", "shared-pass-cb-ce", "powers-0-without-bce"],
)
def test_weighted_dense_sums_and_second_moments_are_the_references(soft, settings, workers, chunk_rows, ones_first, weighted_passes):
    arrays = _sampled(41, soft=soft, ones_first=ones_first)
    _check(arrays, settings, 4, 1, workers, chunk_rows)
    if workers == 1:  # (a forked worker's calls are not seen here)
        assert max(weight for weight, _ in weighted_passes) > 1000  # the easy negatives of weight 10 and 100 went through it
        looked = [rows for _, rows in weighted_passes]
        assert all(rows is not None for rows in looked) if ones_first else any(rows is None for rows in looked)


def test_weighted_dense_centernet_on_heatmaps(weighted_passes):
    arrays = _weighted_heatmaps(43)
    _check(arrays, LossSettings(losses=("bce", "focal", "centernet")), 3, 1, 1, None)
    assert weighted_passes


def test_weights_beyond_float32s_reach_are_tallied_one_by_one(weighted_passes):
    """A weight of 1e30 (w (w - 1) beyond float32's range) sends its chunk's weighted rows to the
    float64 path: finite second moments, as written out here."""
    arrays = _sampled(47)
    arrays["weights"][250, 1] = 1e30
    _check(arrays, LossSettings(losses=("bce", "focal")), 4, 1, 1, None)
    assert not weighted_passes
