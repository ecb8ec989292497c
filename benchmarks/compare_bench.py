"""Benchmark ``lossaudit compare`` against the straightforward way of computing the same losses.

    python benchmarks/compare_bench.py --anchors 1000000            # in-process: baseline vs engine
    python benchmarks/compare_bench.py --anchors 1000000 --cli      # the whole CLI process on the file
    python benchmarks/compare_bench.py --examples                   # the small example dumps

The dump is a seeded RetinaNet-like one: ``anchors × 80`` float32 logits (background around the
prior bias -log(99), hard negatives, positives), index targets with background 80, about one
positive per 1,000 elements and 1% ignored anchors, written as ``logits.npy``/``targets.npy`` in a
folder (memory-mapped by lossaudit). Files are cached under ``--workdir``.

In-process mode times, in this one process,
  (a) the baseline: the file loaded into memory and each default loss computed separately on the
      full tensors as a user would write it — ``F.cross_entropy``, ``F.binary_cross_entropy_with_logits``,
      torchvision's sigmoid focal loss formula, a softmax focal loss, and mmdet's ``GHMC`` loop —
      totals only, no breakdowns;
  (b) lossaudit's engine (``lossaudit.compare.run``): every default loss, every breakdown.
It reports the median of ``--repeat`` runs of each, elements per second, the ratio (a)/(b), and the
peak resident memory each phase added (sampled from /proc/self/status). CLI mode reports the wall time and the peak resident memory of
the whole ``lossaudit compare`` process, next to the input size.
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
CLASSES = 80
GENERATION_ROWS = 1 << 16


def make_dump(folder: Path, anchors: int, seed: int = 0) -> Path:
    """Write (once) a RetinaNet-like dump of ``anchors × 80`` logits into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    logits_path, targets_path = folder / "logits.npy", folder / "targets.npy"
    if logits_path.exists() and targets_path.exists():
        return folder
    rng = np.random.default_rng(seed)
    logits = np.lib.format.open_memmap(logits_path, mode="w+", dtype=np.float32, shape=(anchors, CLASSES))
    labels = np.full(anchors, CLASSES, dtype=np.int64)
    positive_rate = CLASSES / 1000  # about one positive per 1,000 elements
    for start in range(0, anchors, GENERATION_ROWS):
        stop = min(start + GENERATION_ROWS, anchors)
        block = rng.normal(-4.6, 1.2, size=(stop - start, CLASSES)).astype(np.float32)
        hard = rng.random(block.shape) < 0.002
        block[hard] = rng.normal(0.5, 1.0, size=int(hard.sum()))
        chunk_labels = labels[start:stop]
        positive = rng.random(stop - start) < positive_rate
        chunk_labels[positive] = rng.integers(0, CLASSES, int(positive.sum()))
        block[np.nonzero(positive)[0], chunk_labels[positive]] = rng.normal(1.0, 1.5, size=int(positive.sum()))
        chunk_labels[rng.random(stop - start) < 0.01] = -1
        logits[start:stop] = block
    logits.flush()
    del logits
    np.save(targets_path, labels)
    return folder


class PeakMemory:
    """The peak resident memory (MiB) reached above the level at entry, sampled every 20 ms (a
    sampler thread; coarse enough not to compete for the interpreter with the engine's workers)."""

    def __enter__(self):
        self.start = self.peak = _rss_mib()
        self._running = True
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while self._running:
            self.peak = max(self.peak, _rss_mib())
            time.sleep(0.02)

    def __exit__(self, *exc):
        self._running = False
        self._thread.join()
        self.peak = max(self.peak, _rss_mib())
        self.added = self.peak - self.start


def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def baseline(folder: Path) -> float:
    """Each default loss computed separately on the full tensors, as commonly written. Returns a
    checksum so that nothing is optimised away."""
    import torch
    import torch.nn.functional as F

    logits = torch.from_numpy(np.load(folder / "logits.npy"))
    labels = torch.from_numpy(np.load(folder / "targets.npy"))
    keep = labels >= 0
    logits, labels = logits[keep], labels[keep]
    onehot = F.one_hot(labels, CLASSES + 1)[:, :CLASSES].to(logits.dtype)
    foreground = labels < CLASSES
    ce = F.cross_entropy(logits[foreground], labels[foreground])
    bce = F.binary_cross_entropy_with_logits(logits, onehot)
    p = torch.sigmoid(logits)  # torchvision.ops.sigmoid_focal_loss
    ce_loss = F.binary_cross_entropy_with_logits(logits, onehot, reduction="none")
    p_t = p * onehot + (1 - p) * (1 - onehot)
    focal = (0.25 * onehot + 0.75 * (1 - onehot)) * ce_loss * ((1 - p_t) ** 2)
    focal = focal.mean()
    log_q = F.log_softmax(logits[foreground], dim=1).gather(1, labels[foreground][:, None]).squeeze(1)
    softmax_focal = (-((1 - log_q.exp()) ** 2) * log_q).mean()
    ghm = mmdet_ghmc(logits, onehot)
    return float(ce + bce + focal + softmax_focal + ghm)


def mmdet_ghmc(pred, target, bins: int = 10):
    """mmdet's GHMC forward (momentum 0), as published."""
    import torch
    import torch.nn.functional as F

    edges = torch.arange(bins + 1).float() / bins
    edges[-1] += 1e-6
    weights = torch.zeros_like(pred)
    g = torch.abs(pred.sigmoid().detach() - target)
    valid = torch.ones_like(pred) > 0
    tot = max(valid.float().sum().item(), 1.0)
    n = 0
    for i in range(bins):
        inds = (g >= edges[i]) & (g < edges[i + 1]) & valid
        num_in_bin = inds.sum().item()
        if num_in_bin > 0:
            weights[inds] = tot / num_in_bin
            n += 1
    if n > 0:
        weights = weights / n
    return (F.binary_cross_entropy_with_logits(pred, target, reduction="none") * weights).sum() / tot


def engine(folder: Path) -> dict:
    from lossaudit import compare
    from lossaudit.compare.engine import LossSettings
    from lossaudit.dataset import LoadOptions

    return compare.run([folder], LoadOptions(), LossSettings(), None)


def in_process(folder: Path, elements: int, skip_baseline: bool, repeat: int) -> dict:
    """Median wall time of ``repeat`` runs of each phase, and the peak memory each run added."""
    import statistics

    import torch  # imported before timing: both phases run in a process that has torch

    from lossaudit import compare  # noqa: F401 - lossaudit's imports stay out of the timing too

    def timed(phase) -> tuple[float, float]:
        times, peaks = [], []
        for _ in range(repeat):
            gc.collect()
            with PeakMemory() as memory:
                start = time.perf_counter()
                phase(folder)
                times.append(time.perf_counter() - start)
            peaks.append(memory.added)
        return statistics.median(times), max(peaks)

    engine_s, engine_peak = timed(engine)
    result = {"elements": elements, "repeat": repeat, "engine_s": engine_s, "engine_elements_per_s": elements / engine_s,
              "engine_peak_added_mib": engine_peak, "torch_threads": torch.get_num_threads()}
    if not skip_baseline:
        baseline_s, baseline_peak = timed(baseline)
        result.update(baseline_s=baseline_s, baseline_elements_per_s=elements / baseline_s, baseline_peak_added_mib=baseline_peak, ratio=baseline_s / engine_s)
    return result


def cli(folder: Path, elements: int) -> dict:
    start = time.perf_counter()
    completed = subprocess.run([sys.executable, "-m", "lossaudit", "compare", str(folder), "--format", "json", "--isolated"], cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if completed.returncode != 0:
        raise SystemExit(completed.stderr)
    input_mib = sum(path.stat().st_size for path in folder.glob("*.npy")) / 2**20
    peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"elements": elements, "cli_s": wall, "cli_elements_per_s": elements / wall, "cli_peak_rss_mib": peak_mib, "input_mib": input_mib,
            "peak_minus_input_mib": peak_mib - input_mib, "focal_mean": json.loads(completed.stdout)["losses"]["focal"]["mean"]}


def examples() -> dict:
    """Whole-process time of ``lossaudit compare`` on each example dump, against ``import torch``."""
    def wall(command):
        start = time.perf_counter()
        subprocess.run(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        return time.perf_counter() - start

    torch_s = min(wall([sys.executable, "-c", "import torch"]) for _ in range(3))
    result = {"import_torch_s": torch_s}
    for name in ("detection", "classification", "centernet"):
        best = min(wall([sys.executable, "-m", "lossaudit", "compare", f"examples/{name}.npz", "--isolated"]) for _ in range(3))
        result[f"{name}_s"] = best
        result[f"{name}_minus_import_torch_s"] = best - torch_s
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--anchors", type=int, default=250_000, help="rows of the dump (× 80 classes)")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/lossaudit-bench"))
    parser.add_argument("--cli", action="store_true", help="time the whole CLI process instead")
    parser.add_argument("--skip-baseline", action="store_true", help="time the engine only")
    parser.add_argument("--examples", action="store_true", help="time the example dumps end to end")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each in-process phase (the median is reported)")
    args = parser.parse_args()
    if args.examples:
        print(json.dumps(examples(), indent=2))
        return
    folder = make_dump(args.workdir / f"retinanet-{args.anchors}", args.anchors)
    elements = args.anchors * CLASSES
    result = cli(folder, elements) if args.cli else in_process(folder, elements, args.skip_baseline, args.repeat)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
