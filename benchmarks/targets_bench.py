"""What per-class targets cost ``compare``, against class ids on the same logits.

    python benchmarks/targets_bench.py --repeat 5
    python benchmarks/targets_bench.py --repeat 5 --before /tmp/before      # an older tree in turns

Three dumps share :func:`compare_bench.make_dump`'s 80M logits (1,000,000 anchors × 80 classes):
its class ids (``index``), the same labels as float32 one-hot targets (``onehot``: a row of
zeros for the background and the ignored anchors, 320 MB of targets), and issue 27's sparse soft
targets (``soft``: one element in 1,000 holding an IoU-like quality in (0.3, 1], at a logit raised
as the detection dump's positives; the default losses then include the soft families). Each is
timed as ``python -m lossaudit compare DUMP --format json --isolated``, start to exit, in turns
(with ``--before``, the older tree's process right after this one's); medians of ``--repeat``.
Per-class targets are read three times: checked before the pass (their encoding and range),
counted per class for the imbalance advice, and decoded in the pass.
"""

from __future__ import annotations

import argparse
import compileall
import json
import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare_bench import CLASSES, ROOT, lossaudit_command, make_dump, run_in  # noqa: E402

ANCHORS = 1_000_000


def make_target_dumps(folder: Path, seed: int = 1) -> dict[str, Path]:
    """Write (once) the three dumps into ``folder``: the one-hot and the soft dump link to the
    index dump's logits (the soft dump's are a copy, raised at its targets)."""
    index = make_dump(folder / "index", ANCHORS)
    dumps = {"index": index, "onehot": folder / "onehot", "soft": folder / "soft"}
    if not (dumps["onehot"] / "targets.npy").exists():
        labels = np.load(index / "targets.npy")
        onehot = np.zeros((len(labels), CLASSES), dtype=np.float32)
        labelled = np.flatnonzero((labels >= 0) & (labels < CLASSES))
        onehot[labelled, labels[labelled]] = 1
        dumps["onehot"].mkdir(parents=True, exist_ok=True)
        (dumps["onehot"] / "logits.npy").symlink_to(index / "logits.npy")
        np.save(dumps["onehot"] / "targets.npy", onehot)
    if not (dumps["soft"] / "targets.npy").exists():
        rng = np.random.default_rng(seed)
        logits = np.load(index / "logits.npy")
        quality = rng.choice(logits.size, size=logits.size // 1000, replace=False)
        soft = np.zeros(logits.shape, dtype=np.float32)
        soft.reshape(-1)[quality] = rng.uniform(0.3, 1.0, len(quality)).astype(np.float32) + np.float32(1e-3)
        np.minimum(soft, 1, out=soft)
        logits.reshape(-1)[quality] = rng.normal(1.0, 1.5, len(quality)).astype(np.float32)
        dumps["soft"].mkdir(parents=True, exist_ok=True)
        np.save(dumps["soft"] / "logits.npy", logits)
        np.save(dumps["soft"] / "targets.npy", soft)
    return dumps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/lossaudit-bench/targets"))
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--before", type=Path, help="a folder holding an older lossaudit package, whose process is timed in the same rounds")
    args = parser.parse_args()
    trees: dict[str, Path | None] = {"after": None, **({"before": args.before} if args.before else {})}
    for tree in (ROOT, *([args.before] if args.before else [])):
        compileall.compile_dir(tree / "lossaudit", quiet=1)
    dumps = make_target_dumps(args.workdir)
    runs: dict[str, dict[str, list[float]]] = {name: {label: [] for label in trees} for name in dumps}
    for name, folder in dumps.items():  # warm the page cache
        run_in(None, lossaudit_command(folder))
    for _ in range(args.repeat):
        for name, folder in dumps.items():
            for label, tree in trees.items():
                runs[name][label].append(run_in(tree, lossaudit_command(folder))[0])
    report: dict[str, dict[str, float]] = {}
    for name, by_tree in runs.items():
        report[name] = {f"{label}_process_s": statistics.median(times) for label, times in by_tree.items()}
        report[name]["after_over_index"] = report[name]["after_process_s"] / statistics.median(runs["index"]["after"])
        if args.before:
            report[name]["after_over_before"] = report[name]["after_process_s"] / report[name]["before_process_s"]
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
