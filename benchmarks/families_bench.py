"""What the later loss families cost ``compare``, against the core losses in the same process.

    python benchmarks/families_bench.py

Two seeded dumps of 100,000 × 80 float32 logits (8M elements, the benchmark of
``compare_bench.py`` at a tenth of its size): index targets with about 8% of rows holding a class,
and soft targets with 5% of rows holding one value in (0, 1). Each setting runs
``lossaudit.compare.run`` in this process (read, tally, report) with the default workers; the
figures are medians of ``--repeat`` runs, and each is also given as a ratio to the core losses
(``ce, bce, focal, softmax-focal, ghm``) on the same dump. The sigmoid families are computed
element by element in float64, without the dense pass's shortcut for easy negatives; ``cb-ce``
and ``logit-adjusted-ce`` only touch the rows with a target.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

ROWS, CLASSES = 100_000, 80
CORE = ("ce", "bce", "focal", "softmax-focal", "ghm")
SETTINGS = {
    "index": [("default", None), ("core", CORE)],
    "soft": [
        ("default", None),
        ("core", CORE),
        ("qfl", ("qfl",)),
        ("vfl", ("vfl",)),
        ("asl", ("asl",)),
        ("cb-ce", ("cb-ce",)),
        ("logit-adjusted-ce", ("logit-adjusted-ce",)),
    ],
}


def make_dumps(folder: Path, seed: int = 0) -> dict[str, Path]:
    """Write (once) the index and the soft dump into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {name: folder / f"{name}.npz" for name in SETTINGS}
    if all(path.exists() for path in paths.values()):
        return paths
    rng = np.random.default_rng(seed)
    logits = rng.normal(-4.6, 1.2, (ROWS, CLASSES)).astype(np.float32)
    labels = np.full(ROWS, CLASSES)
    labelled = rng.random(ROWS) < 0.08
    labels[labelled] = rng.integers(0, CLASSES, int(labelled.sum()))
    np.savez(paths["index"], logits=logits, targets=labels)
    soft = np.zeros((ROWS, CLASSES), dtype=np.float32)
    rows = np.flatnonzero(rng.random(ROWS) < 0.05)
    soft[rows, rng.integers(0, CLASSES, len(rows))] = rng.random(len(rows)).astype(np.float32)
    np.savez(paths["soft"], logits=logits, targets=soft)
    return paths


def timed(path: Path, losses: tuple[str, ...] | None, repeat: int) -> float:
    from lossaudit import compare
    from lossaudit.compare.settings import LossSettings
    from lossaudit.io.dataset import LoadOptions

    settings = LossSettings() if losses is None else LossSettings(losses=losses)
    compare.run([path], LoadOptions(), settings, losses)  # warm the page cache and the imports
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        compare.run([path], LoadOptions(), settings, losses)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/lossaudit-bench/families"))
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    report = {}
    for dump, path in make_dumps(args.workdir).items():
        seconds = {name: timed(path, losses, args.repeat) for name, losses in SETTINGS[dump]}
        report[dump] = {name: {"seconds": value, "over_core": value / seconds["core"]} for name, value in seconds.items()}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
