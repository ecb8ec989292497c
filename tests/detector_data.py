"""A small dense detector on real scans, for the detection conclusions tests (issue 22).

Data. Canvases of 64×64 pixels are composed of scikit-learn's bundled digits scans (8×8 images,
values 0..16 scaled to 0..1) on a black background, 4 to 8 digits per canvas (:data:`OBJECTS`). The
canvas is an 8×8 grid of 8-pixel cells; the target is a one-hot map ``(B, 10, 8, 8)``: the cell holding
a digit's centre is positive for the digit's class, every other element (class, cell) is a negative,
and a cell with no digit is background. The labels are exact. Digits never overlap and never lie in
neighbouring cells (:data:`SPACING`: no two digits within one cell of each other, diagonals included).

Centre and border rule. A scan whose top-left pixel is at ``(x, y)`` covers ``[x, x + 8)`` and has its
centre at ``x + 4``; the centre belongs to cell ``(x + 4) // 8``. A centre that lies exactly on the
border between two cells (``x + 4`` a multiple of 8) therefore belongs to the cell right of (below)
the border. :data:`BORDER_SHARE` of the digits (not in the first row or column) are placed so on one
axis, in training and validation alike, which makes the model miss them or fire a cell off; the
others lie within :data:`JITTER` (3) pixels of their cell's centre on each axis, anywhere in the cell.

Long tail. Digits :data:`TAIL` (3 and 8) are drawn :data:`TAIL_WEIGHT` (1/10) as often as each
other digit, in training and validation alike. Training canvases use the first :data:`TRAIN_SCANS`
scans, validation canvases the others (scans the model never saw).

Model. A tiny fully-convolutional network (three 3×3 convolutions of stride 2 and one of stride 1,
each with batch norm and ReLU, then a 1×1 convolution: stride 8 overall) gives ``(B, 10, 8, 8)``
logits, one sigmoid per class and cell; the last bias starts at RetinaNet's prior (p = 0.01). It is
trained on the CPU with one thread (reproducible) for :data:`EPOCHS` epochs of Adam with mean BCE;
a second checkpoint continues from it for :data:`FOCAL_EPOCHS` epochs with the torchvision-style
sigmoid focal loss (alpha 0.25, gamma 2, summed and divided by the positives), written here by
hand. Everything is seeded (numpy's generator and ``torch.manual_seed``). The whole build takes about
4 seconds on an idle 2-core machine (10 under heavy load), about 4 CPU seconds of it training.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass

import numpy as np

CLASSES, GRID, CELL = 10, 8, 8
SIZE = GRID * CELL
TAIL = (3, 8)
TAIL_WEIGHT = 0.1
"""How often a tail digit is drawn, relative to each other digit."""
OBJECTS = (4, 8)
"""Digits per canvas: uniform in [4, 8] (fewer when the canvas has no room left)."""
SPACING = 1
"""No two digits' cells within this many cells of each other (diagonals included)."""
BORDER_SHARE = 0.2
"""The share of digits whose centre lies exactly on a cell border, on one axis."""
JITTER = 3
"""The other digits lie within this many pixels of their cell's centre, on each axis (3: anywhere in it)."""
TRAIN_SCANS = 1200
"""Training canvases use scans ``[:1200]``, validation canvases scans ``[1200:]`` (597 scans)."""
TRAIN_CANVASES, VALID_CANVASES = 1000, 400
EPOCHS, BATCH, LR = 4, 25, 6e-3
FOCAL_EPOCHS = 2
"""The focal checkpoint: the BCE one trained on for this many epochs with the focal loss."""
WIDTHS = (16, 32, 64)
"""Channels of the three strided convolutions (the fourth keeps the last)."""
FOCAL_ALPHA, FOCAL_GAMMA = 0.25, 2.0
SEED = 0


@dataclass(frozen=True)
class Detector:
    """The validation canvases' targets ``(B, 10, 8, 8)`` (float32, 1 at each digit's cell), the
    logits of each checkpoint (``{"bce": ..., "focal": ...}``, same shape, float32), the border
    mask (positives whose centre lies exactly on a cell border), the seconds the build took
    (imports included) and each checkpoint's mean training loss over its last epoch."""

    targets: np.ndarray
    logits: dict[str, np.ndarray]
    border: np.ndarray
    seconds: float
    train_loss: dict[str, float]


def _scans() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    return (x.reshape(-1, 8, 8) / 16.0).astype(np.float32), y.astype(np.int64)


def _offset(rng: np.random.Generator, cell: int, border: bool) -> int:
    """The top-left pixel, on one axis, of a scan whose centre lies in ``cell``: exactly on the cell's
    first border (``x + 4 == 8 * cell``), or within :data:`JITTER` pixels of the cell's centre."""
    if border:
        return CELL * cell - 4
    low, high = max(-JITTER, -CELL * cell), min(JITTER, SIZE - CELL - CELL * cell)
    return CELL * cell + int(rng.integers(low, high + 1))


def compose(n: int, scans: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` canvases from the given scans: images ``(n, 1, 64, 64)``, one-hot targets ``(n, 10, 8, 8)``
    and the border mask ``(n, 10, 8, 8)`` (positives whose centre lies exactly on a cell border)."""
    by_class = [np.nonzero(labels == c)[0] for c in range(CLASSES)]
    weights = np.array([TAIL_WEIGHT if c in TAIL else 1.0 for c in range(CLASSES)])
    weights /= weights.sum()
    images = np.zeros((n, 1, SIZE, SIZE), np.float32)
    targets = np.zeros((n, CLASSES, GRID, GRID), np.float32)
    border = np.zeros((n, CLASSES, GRID, GRID), bool)
    for b in range(n):
        boxes: list[tuple[int, int]] = []
        taken = np.zeros((GRID, GRID), bool)
        wanted = int(rng.integers(OBJECTS[0], OBJECTS[1] + 1))
        for _ in range(wanted * 20):
            if len(boxes) == wanted:
                break
            row, col = (int(v) for v in rng.integers(0, GRID, 2))
            axis = int(rng.integers(0, 2))  # on a border: the one above the cell (0) or left of it (1)
            on_border = bool(rng.random() < BORDER_SHARE) and (row, col)[axis] > 0
            y = _offset(rng, row, on_border and axis == 0)
            x = _offset(rng, col, on_border and axis == 1)
            assert (y + 4) // CELL == row and (x + 4) // CELL == col  # the centre rule
            near = taken[max(row - SPACING, 0) : row + SPACING + 1, max(col - SPACING, 0) : col + SPACING + 1]
            if near.any() or any(abs(y - y0) < CELL and abs(x - x0) < CELL for y0, x0 in boxes):
                continue
            c = int(rng.choice(CLASSES, p=weights))
            images[b, 0, y : y + 8, x : x + 8] = scans[rng.choice(by_class[c])]
            targets[b, c, row, col] = 1.0
            border[b, c, row, col] = on_border
            taken[row, col] = True
            boxes.append((y, x))
    return images, targets, border


def model():
    """The detector: ``(B, 1, 64, 64)`` images to ``(B, 10, 8, 8)`` logits."""
    import torch
    from torch import nn

    def block(n_in: int, n_out: int, stride: int = 2) -> list:
        return [nn.Conv2d(n_in, n_out, 3, stride=stride, padding=1), nn.BatchNorm2d(n_out), nn.ReLU()]

    a, b, c = WIDTHS
    net = nn.Sequential(*block(1, a), *block(a, b), *block(b, c), *block(c, c, 1), nn.Conv2d(c, CLASSES, 1))
    with torch.no_grad():  # RetinaNet's prior: every sigmoid starts at p = 0.01
        net[-1].bias.fill_(-float(np.log(99.0)))
    return net


def sigmoid_focal_loss(logits, targets, alpha: float = FOCAL_ALPHA, gamma: float = FOCAL_GAMMA):
    """torchvision's ``sigmoid_focal_loss`` with ``reduction="sum"``, written out:
    ``alpha_t (1 - p_t)^gamma · BCE``, alpha for positives and 1 - alpha for negatives."""
    import torch.nn.functional as F

    p = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    alpha_t = alpha * targets + (1 - alpha) * (1 - targets)
    return (alpha_t * (1 - p_t) ** gamma * ce).sum()


def train(images: np.ndarray, targets: np.ndarray, loss: str, seed: int = SEED, epochs: int = EPOCHS, net=None):
    """Train ``net`` (by default a fresh :func:`model`) on the canvases with ``loss`` ("bce": mean BCE;
    "focal": :func:`sigmoid_focal_loss` divided by the batch's positives, as RetinaNet does) for
    ``epochs`` epochs of Adam, one CPU thread, seeded; returns the net and the last epoch's mean loss."""
    import torch
    import torch.nn.functional as F

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(seed)
        net = model() if net is None else net
        net.train()
        optimizer = torch.optim.Adam(net.parameters(), lr=LR)
        x, t = torch.from_numpy(images), torch.from_numpy(targets)
        order = np.random.default_rng(seed)
        last = 0.0
        for _ in range(epochs):
            total = 0.0
            shuffled = torch.from_numpy(order.permutation(len(x)))
            for start in range(0, len(x), BATCH):
                batch = shuffled[start : start + BATCH]
                logits, target = net(x[batch]), t[batch]
                if loss == "bce":
                    value = F.binary_cross_entropy_with_logits(logits, target)
                else:
                    value = sigmoid_focal_loss(logits, target) / target.sum().clamp_min(1.0)
                optimizer.zero_grad()
                value.backward()
                optimizer.step()
                total += float(value.detach()) * len(batch)
            last = total / len(x)
        return net, last
    finally:
        torch.set_num_threads(threads)


def predict(net, images: np.ndarray) -> np.ndarray:
    """The net's logits on ``images`` (evaluation mode, one thread), float32."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        net.eval()
        with torch.no_grad():
            return net(torch.from_numpy(images)).numpy().astype(np.float32)
    finally:
        torch.set_num_threads(threads)


@functools.lru_cache(maxsize=None)
def build(seed: int = SEED, focal: bool = True) -> Detector:
    """Compose the training and validation canvases, train the BCE checkpoint (and the focal one
    from it), and return the validation targets and each checkpoint's logits. Deterministic for a
    given seed on a given machine; cached (one build per process)."""
    start = time.perf_counter()
    scans, labels = _scans()
    rng = np.random.default_rng(seed)
    train_images, train_targets, _ = compose(TRAIN_CANVASES, scans[:TRAIN_SCANS], labels[:TRAIN_SCANS], rng)
    valid_images, valid_targets, border = compose(VALID_CANVASES, scans[TRAIN_SCANS:], labels[TRAIN_SCANS:], rng)
    logits, losses = {}, {}
    net, losses["bce"] = train(train_images, train_targets, "bce", seed)
    logits["bce"] = predict(net, valid_images)
    if focal:
        net, losses["focal"] = train(train_images, train_targets, "focal", seed + 1, FOCAL_EPOCHS, net)
        logits["focal"] = predict(net, valid_images)
    return Detector(valid_targets, logits, border, time.perf_counter() - start, losses)
