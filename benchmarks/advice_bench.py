"""What the imbalance advice costs ``compare`` (issue 22, point 2).

    python benchmarks/advice_bench.py                      # 1M rows x 100 classes, long-tailed
    python benchmarks/advice_bench.py --rows 200000 --classes 1000 --repeat 7

On a seeded long-tailed single-label dump (class sizes falling exponentially, e^6 from the first
to the last, so that the last quarter or so of the classes are rare by compare's rule; logits of a
fair classifier: normal noise around -4, the target's logit raised by 6), ``lossaudit.compare.run``
with the default losses, in this process, interleaved: with the advice (what ``compare`` does: the
class counts read before the pass find rare classes, so ``logit-adjusted-ce`` is computed besides
the defaults) and without it (the same run with the advice switched off), one after the other in
each round, which goes first alternating. Also the class-count read alone. Prints the medians,
their ratio with / without, and the median of each round's own ratio (less moved by the
machine's speed drifting between rounds).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def make_dump(folder: Path, rows: int, classes: int, seed: int = 0) -> Path:
    """A long-tailed dump: ``logits.npy`` (rows, classes) float32 and ``targets.npy`` labels."""
    rng = np.random.default_rng(seed)
    weights = np.exp(-6.0 * np.arange(classes) / classes)  # the last quarter or so of the classes are rare
    labels = rng.choice(classes, size=rows, p=weights / weights.sum())
    labels[:classes] = np.arange(classes)  # every class has a row (logit-adjusted-ce needs a prior)
    logits = rng.standard_normal((rows, classes), dtype=np.float32) - 4.0
    logits[np.arange(rows), labels] += 6.0
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "logits.npy", logits)
    np.save(folder / "targets.npy", labels)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    import lossaudit.compare as comparison
    from lossaudit.compare.settings import LossSettings
    from lossaudit.io.dataset import LoadOptions, plan
    from lossaudit.io.readers import read_batches

    with tempfile.TemporaryDirectory() as workdir:
        dump = make_dump(Path(workdir) / "dump", args.rows, args.classes)
        advice = comparison._imbalance_advice

        def run(with_advice: bool) -> float:
            comparison._imbalance_advice = advice if with_advice else (lambda data, settings: (None, ()))
            start = time.perf_counter()
            report = comparison.run([dump], LoadOptions(), LossSettings(), None)
            elapsed = time.perf_counter() - start
            assert (report["imbalance"] is not None and report["imbalance"]["losses"]) if with_advice else True
            return elapsed

        run(True)  # warm the page cache and the imports
        times: dict[str, list[float]] = {"with advice": [], "without": [], "class counts": []}
        ratios = []
        for round_ in range(args.repeat):
            first = round_ % 2 == 0  # each round's pair in turn order, so that a drift of the machine's speed cancels
            pair = {first: run(first), not first: run(not first)}
            times["with advice"].append(pair[True])
            times["without"].append(pair[False])
            ratios.append(pair[True] / pair[False])
            data = plan(read_batches([dump]), LoadOptions())
            start = time.perf_counter()
            data.class_target_sums()
            times["class counts"].append(time.perf_counter() - start)
        comparison._imbalance_advice = advice
    medians = {name: statistics.median(values) for name, values in times.items()}
    print(f"{args.rows:,} rows x {args.classes} classes, long-tailed; medians of {args.repeat}")
    for name, value in medians.items():
        print(f"  {name:<13} {value:.3f} s")
    print(
        f"  with / without: {medians['with advice'] / medians['without']:.3f} (of the medians); {statistics.median(ratios):.3f} (median of each round's ratio)"
    )


if __name__ == "__main__":
    main()
