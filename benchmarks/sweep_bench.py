"""Benchmark ``lossaudit sweep`` against one ``lossaudit compare`` on the same dump (issue 27).

    python benchmarks/sweep_bench.py --repeat 5
    python benchmarks/sweep_bench.py --repeat 5 --before /tmp/before    # also an older tree, in turns

Two dumps of 1,000,000 × 80 float32 logits (80M elements, 313 MiB), written once under ``--workdir``:

- ``detection``: :func:`compare_bench.make_dump`'s RetinaNet-like dump (index targets with background,
  about one positive per 1,000 elements, 1% ignored anchors);
- ``single-label``: a classifier's logits, every row a class (no background): N(0, 1.5) logits,
  the target's raised by N(3, 2) (seed 1).

Each round runs, as fresh processes started by GNU time (wall seconds and peak RSS: see
:func:`compare_bench.process`): ``compare DUMP --format json`` and ``sweep DUMP --gamma
0,0.5,1,2 --alpha 0.25,0.5,0.75,0.9,-1 --format json`` on the detection dump (the sigmoid focal loss),
``compare`` and ``sweep --gamma 0,0.5,1,2`` on the single-label one (softmax-focal, chosen by the
data). ``--before DIR`` adds the same commands run on the ``lossaudit`` package under ``DIR``
(``git archive COMMIT lossaudit | tar -x -C DIR``), in the same rounds. Prints the medians over
``--repeat`` rounds, each sweep over its compare (both from the same tree), and the peak RSS above
compare's.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare_bench import CLASSES, GENERATION_ROWS, ROOT, make_dump, run_in  # noqa: E402

GRID = ["--gamma", "0,0.5,1,2", "--alpha", "0.25,0.5,0.75,0.9,-1"]
ANCHORS = 1_000_000


def make_single_label(folder: Path, rows: int = ANCHORS, seed: int = 1) -> Path:
    """Write (once) a single-label dump: ``rows × 80`` N(0, 1.5) logits, the label's raised by N(3, 2)."""
    folder.mkdir(parents=True, exist_ok=True)
    logits_path, targets_path = folder / "logits.npy", folder / "targets.npy"
    if logits_path.exists() and targets_path.exists():
        return folder
    rng = np.random.default_rng(seed)
    logits = np.lib.format.open_memmap(logits_path, mode="w+", dtype=np.float32, shape=(rows, CLASSES))
    labels = rng.integers(0, CLASSES, rows)
    for start in range(0, rows, GENERATION_ROWS):
        stop = min(start + GENERATION_ROWS, rows)
        block = rng.normal(0, 1.5, (stop - start, CLASSES)).astype(np.float32)
        block[np.arange(stop - start), labels[start:stop]] += rng.normal(3, 2, stop - start).astype(np.float32)
        logits[start:stop] = block
    logits.flush()
    del logits
    np.save(targets_path, labels)
    return folder


def commands(detection: Path, single: Path) -> dict[str, list[str]]:
    lossaudit = [sys.executable, "-m", "lossaudit"]
    return {
        "detection compare": [*lossaudit, "compare", str(detection), "--format", "json"],
        "detection sweep": [*lossaudit, "sweep", str(detection), *GRID, "--format", "json"],
        "single-label compare": [*lossaudit, "compare", str(single), "--format", "json"],
        "single-label sweep": [*lossaudit, "sweep", str(single), "--gamma", "0,0.5,1,2", "--format", "json"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/lossaudit-bench"))
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--before", type=Path, help="a folder holding an older lossaudit package, run in the same rounds")
    args = parser.parse_args()
    trees = {"after": None, **({"before": args.before} if args.before else {})}
    for tree in trees.values():
        compileall.compile_dir((tree or ROOT) / "lossaudit", quiet=1)
    detection = make_dump(args.workdir / f"retinanet-{ANCHORS}", ANCHORS)
    single = make_single_label(args.workdir / f"single-label-{ANCHORS}")
    runs: dict[str, dict[str, list[tuple[float, float]]]] = {name: {key: [] for key in commands(detection, single)} for name in trees}
    for key, command in commands(detection, single).items():  # warm the page cache
        run_in(None, command)
    for _ in range(args.repeat):
        for key, command in commands(detection, single).items():
            for name, tree in trees.items():
                runs[name][key].append(run_in(tree, command))
    report: dict[str, dict] = {}
    for name, measured in runs.items():
        medians = {key: {"s": statistics.median(t for t, _ in values), "peak_mib": statistics.median(m for _, m in values)} for key, values in measured.items()}
        for data in ("detection", "single-label"):
            sweep, compare = medians[f"{data} sweep"], medians[f"{data} compare"]
            sweep["over_compare"] = sweep["s"] / compare["s"]
            sweep["peak_over_compare_mib"] = sweep["peak_mib"] - compare["peak_mib"]
        report[name] = medians
    if "before" in report:
        report["after_over_before"] = {key: report["after"][key]["s"] / report["before"][key]["s"] for key in report["after"]}
    report["load_average"] = os.getloadavg()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
