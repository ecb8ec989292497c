"""How fast ``compare`` reads a weighted dump, against the unweighted dump it samples (issue 27).

    python benchmarks/weighted_bench.py --repeat 5
    PYTHONPATH=/tmp/before python benchmarks/weighted_bench.py --repeat 5    # an older tree

The unweighted dump is :func:`compare_bench.make_dump`'s 80M-element detection dump; the weighted
one its 1% sample, written once by ``lossaudit sample DUMP --rate 0.01 --seed 0`` (every row with a
target whole at weight 1, and of the other rows every element that is not easy at weight 1 and the
easy negatives at 1% with weight 100, stored compactly); and the same elements without their
weights, as an unweighted dump (:func:`without_weights`: the rows with a target, then the sampled
negatives in the columns of their classes, padded with easy logits). ``lossaudit.compare.run``
with the default losses runs on each in this process, in turns, with the default workers; the
figures are medians of ``--repeat`` runs: seconds, stored elements per second, and three ratios of
the weighted sample's elements per second: over the 80M dump's (stored elements), over the same
elements without weights (what the weights cost), and of the elements each stands for (the
sample's population, 80M) per second over the 80M dump's.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare_bench import make_dump  # noqa: E402

ANCHORS = 1_000_000


def sample(dump: Path, folder: Path) -> Path:
    """Write (once) the 1% sample of ``dump`` into ``folder``."""
    if not folder.exists():
        subprocess.run([sys.executable, "-m", "lossaudit", "sample", str(dump), "--output", str(folder), "--rate", "0.01", "--seed", "0"], check=True)
    return folder


def without_weights(sample: Path, folder: Path) -> Path:
    """Write (once) the sample's stored elements as an unweighted dump into ``folder``: its rows
    (logits, targets), then ``max(negatives_per_class)`` rows of targets 0 holding each class's
    sampled negatives in its column, the rest of a column at logit -30 (an easy negative)."""
    if (folder / "logits.npy").exists():
        return folder
    (batch,) = sorted(sample.glob("*.npz"))
    with np.load(batch) as arrays:
        logits, targets, negatives, per_class = arrays["logits"], arrays["targets"], arrays["negatives_logits"], arrays["negatives_per_class"]
    pseudo = np.full((int(per_class.max()), len(per_class)), -30, dtype=np.float32)
    for c, start in enumerate(np.cumsum(per_class) - per_class):
        pseudo[: per_class[c], c] = negatives[start : start + per_class[c]]
    folder.mkdir(parents=True)
    np.save(folder / "logits.npy", np.concatenate([logits, pseudo]))
    np.save(folder / "targets.npy", np.concatenate([targets, np.zeros(pseudo.shape, dtype=targets.dtype)]))
    return folder


def stored_elements(folder: Path) -> int:
    """Elements a dump folder stores (the compact negatives counted one each)."""
    total = 0
    for path in sorted(folder.glob("*.np[yz]")):
        if path.suffix == ".npy":
            total += int(np.load(path, mmap_mode="r").size) if path.stem == "logits" else 0
            continue
        with np.load(path) as arrays:
            total += int(arrays["logits"].size) + (int(arrays["negatives_logits"].size) if "negatives_logits" in arrays.files else 0)
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/lossaudit-bench"))
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    from lossaudit import compare
    from lossaudit.compare.settings import LossSettings
    from lossaudit.io.dataset import LoadOptions

    dump = make_dump(args.workdir / f"retinanet-{ANCHORS}", ANCHORS)
    weighted = sample(dump, args.workdir / f"retinanet-{ANCHORS}-sample-1pct")
    dumps = {
        "unweighted": dump,
        "weighted": weighted,
        "sample without weights": without_weights(weighted, args.workdir / f"retinanet-{ANCHORS}-sample-1pct-unweighted"),
    }
    seconds: dict[str, list[float]] = {name: [] for name in dumps}
    for path in dumps.values():  # warm the page cache and the imports
        compare.run([path], LoadOptions(), LossSettings(), None)
    for _ in range(args.repeat):
        for name, path in dumps.items():
            start = time.perf_counter()
            compare.run([path], LoadOptions(), LossSettings(), None)
            seconds[name].append(time.perf_counter() - start)
    elements = {"unweighted": ANCHORS * 80, "weighted": stored_elements(weighted), "sample without weights": stored_elements(dumps["sample without weights"])}
    report: dict = {name: {"s": statistics.median(values), "stored_elements": elements[name]} for name, values in seconds.items()}
    for entry in report.values():
        entry["elements_per_s"] = entry["stored_elements"] / entry["s"]
    report["weighted_over_unweighted_stored_elements_per_s"] = report["weighted"]["elements_per_s"] / report["unweighted"]["elements_per_s"]
    report["weighted_over_unweighted_population_elements_per_s"] = report["unweighted"]["s"] / report["weighted"]["s"]
    report["weighted_over_same_elements_without_weights_per_s"] = report["weighted"]["elements_per_s"] / report["sample without weights"]["elements_per_s"]
    report["lossaudit"] = compare.__file__
    report["load_average"] = os.getloadavg()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
