"""Write the example dumps that the README runs ``lossaudit compare`` on (deterministic, seeded).

    python examples/make_examples.py            # writes examples/*.npz next to this file

- ``detection.npz``: RetinaNet-like anchors × 20 VOC classes, sigmoid logits, index targets with
  background label 20 and ignore label -1; about 1 positive per 1000 elements, a long-tailed
  class distribution, hard negatives, a few label-noise outliers.
- ``classification.npz``: an imbalanced 10-class classifier's softmax logits and class ids.
- ``centernet.npz``: CenterNet heatmap logits (B, C, H, W) and Gaussian target heatmaps.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
VOC = [
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
]


def detection(rng: np.random.Generator) -> dict[str, np.ndarray]:
    images, anchors, classes = 8, 2000, len(VOC)
    rows = images * anchors
    frequency = 1.0 / np.arange(1, classes + 1) ** 1.1  # long tail: person-like head, rare tail
    frequency /= frequency.sum()
    labels = np.full(rows, classes, dtype=np.int64)  # background
    positive_rows = rng.choice(rows, size=rows * classes // 1000, replace=False)
    labels[positive_rows] = rng.choice(classes, size=positive_rows.size, p=frequency[rng.permutation(classes)])
    ignored_rows = rng.choice(np.setdiff1d(np.arange(rows), positive_rows), size=rows // 100, replace=False)
    labels[ignored_rows] = -1
    # Background logits around the RetinaNet prior bias -log(99), a few hard negatives near 0..2.
    logits = rng.normal(-4.6, 1.0, size=(rows, classes))
    hard = rng.random((rows, classes)) < 0.004
    logits[hard] = rng.normal(1.0, 1.0, size=hard.sum())
    # Positives: mostly learnt (p ≈ 0.5..0.95); rare classes worse; 3% label noise far on the wrong side.
    is_positive = labels[positive_rows]
    rank = np.argsort(np.argsort(-np.bincount(is_positive, minlength=classes)))
    logits[positive_rows, is_positive] = rng.normal(1.5 - 0.08 * rank[is_positive], 1.2)
    noisy = positive_rows[rng.random(positive_rows.size) < 0.03]
    logits[noisy, labels[noisy]] = rng.normal(-7.0, 0.5, size=noisy.size)
    return {
        "logits": logits.reshape(images, anchors, classes).astype(np.float32),
        "targets": labels.reshape(images, anchors),
        "class_names": np.asarray(VOC),
    }


def classification(rng: np.random.Generator) -> dict[str, np.ndarray]:
    names = ["cat", "dog", "bird", "horse", "sheep", "cow", "fox", "owl", "lynx", "okapi"]
    rows, classes = 5000, len(names)
    frequency = np.geomspace(1.0, 0.01, classes)
    frequency /= frequency.sum()
    labels = rng.choice(classes, size=rows, p=frequency)
    logits = rng.normal(0.0, 1.0, size=(rows, classes)) + np.log(frequency)  # prior towards the head
    margin = np.linspace(4.0, 1.0, classes)  # the classifier separates common classes better
    logits[np.arange(rows), labels] += rng.normal(margin[labels], 1.0)
    return {"logits": logits.astype(np.float32), "targets": labels.astype(np.int64), "class_names": np.asarray(names)}


def centernet(rng: np.random.Generator) -> dict[str, np.ndarray]:
    batch, classes, size = 2, 3, 64
    heatmap = np.zeros((batch, classes, size, size), dtype=np.float32)
    yy, xx = np.mgrid[0:size, 0:size]
    for b in range(batch):
        for _ in range(6):
            c, cy, cx = rng.integers(classes), rng.integers(4, size - 4), rng.integers(4, size - 4)
            sigma = rng.uniform(1.5, 3.0)
            gaussian = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma**2))
            gaussian[gaussian < np.finfo(np.float32).eps * gaussian.max()] = 0
            heatmap[b, c] = np.maximum(heatmap[b, c], gaussian)
            heatmap[b, c, cy, cx] = 1.0
    # A trained head: high where the target is high, with noise; one missed centre.
    prob = np.clip(0.02 + 0.85 * heatmap + rng.normal(0, 0.03, heatmap.shape), 1e-3, 1 - 1e-3)
    peaks = np.argwhere(heatmap == 1)
    b, c, y, x = peaks[0]
    prob[b, c, y, x] = 0.01
    return {
        "logits": np.log(prob / (1 - prob)).astype(np.float32),
        "targets": heatmap,
        "class_names": np.asarray(["person", "car", "bicycle"]),
    }


def main() -> None:
    for name, build in (("detection", detection), ("classification", classification), ("centernet", centernet)):
        arrays = build(np.random.default_rng(sum(map(ord, name))))
        np.savez(HERE / f"{name}.npz", **arrays)
        print(f"wrote {HERE / f'{name}.npz'}")


if __name__ == "__main__":
    main()
