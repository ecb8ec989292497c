"""Benchmark ``lossaudit compare`` against the straightforward way of computing the same numbers.

    python benchmarks/compare_bench.py                                   # 80M elements: everything below
    python benchmarks/compare_bench.py --anchors 1000000 4000000 --skip-baseline    # 80M and 320M
    python benchmarks/compare_bench.py --before /tmp/before              # also an older tree's process, in turns

The dump is a seeded RetinaNet-like one: ``anchors × 80`` float32 logits (background around the
prior bias -log(99), hard negatives, positives), index targets with background 80, about one
positive per 1,000 elements and 1% ignored anchors, written as ``logits.npy``/``targets.npy`` in a
folder (memory-mapped by lossaudit). Files are cached under ``--workdir``.

One run measures, on the first ``--anchors`` size:

- the baseline process: a fresh Python process that loads the dump with torch and computes each
  default loss as commonly written (``F.cross_entropy``, ``F.binary_cross_entropy_with_logits``,
  torchvision's sigmoid focal formula, a softmax focal loss, mmdet's ``GHMC`` loop) on the full
  tensors, each with its per-class and per-difficulty-bin sums;
- lossaudit's process: ``python -m lossaudit compare DUMP --format json``, start to exit; with
  ``--before DIR``, also the same command on the ``lossaudit`` package under ``DIR`` (an older tree:
  ``git archive COMMIT lossaudit | tar -x -C DIR``; see :func:`run_in`), each run right after this
  tree's, and the ratio of the medians after / before (also for the example detection dump below,
  whose run is almost all fixed cost: start-up, the plan's checks, the report);
- the in-process engine: ``lossaudit.compare.run`` (read, tally, report) in this process;
- the one-log floor: ``np.log1p(np.exp(-np.abs(x)))`` over the same memory-mapped logits with a
  worker per CPU, in blocks of 2^15, 2^16 and 2^18 elements, as written and with reused ``out=``
  buffers, in threads and in the engine's workers (forked processes on Linux): the fastest of the
  twelve is the floor;

and the ratios baseline / lossaudit process and engine / floor; then ``lossaudit compare --help``
and the example detection dump end to end, and, for every ``--anchors`` size, lossaudit's process
(time and peak memory against the input size). Times are medians of ``--repeat`` runs,
interleaved. Memory: the peak RSS of the largest process as GNU time reports it (see
:func:`process`) and, in runs of their own, the peak of the summed RSS of lossaudit's process and
its forked workers (see :func:`tree_memory`). lossaudit's
modules (and ``--before``'s) are byte-compiled first, as ``pip install`` leaves an installed package: an editable
install run under ``PYTHONDONTWRITEBYTECODE=1`` would otherwise compile them from source in every
process (about 45 ms here), which no user's installed copy pays.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
CLASSES = 80
GENERATION_ROWS = 1 << 16
BINS = 10


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


def baseline(folder: Path) -> float:
    """Each default loss on the full tensors as commonly written, with its per-class and
    per-difficulty-bin sums (g = |p - y| in 10 bins; softmax losses: 1 - q_target). Returns a
    checksum so that nothing is optimised away."""
    import torch
    import torch.nn.functional as F

    logits = torch.from_numpy(np.load(folder / "logits.npy"))
    labels = torch.from_numpy(np.load(folder / "targets.npy"))
    keep = labels >= 0
    logits, labels = logits[keep], labels[keep]
    onehot = F.one_hot(labels, CLASSES + 1)[:, :CLASSES].to(logits.dtype)
    p = torch.sigmoid(logits)
    sigmoid_bins = ((p - onehot).abs() * BINS).long().clamp(max=BINS - 1).flatten()

    def sigmoid_breakdown(loss: torch.Tensor) -> float:
        per_class = loss.sum(dim=0)
        per_bin = torch.bincount(sigmoid_bins, weights=loss.flatten().double(), minlength=BINS)
        return float(loss.sum() + per_class.sum() + per_bin.sum())

    bce = F.binary_cross_entropy_with_logits(logits, onehot, reduction="none")
    p_t = p * onehot + (1 - p) * (1 - onehot)  # torchvision.ops.sigmoid_focal_loss
    focal = (0.25 * onehot + 0.75 * (1 - onehot)) * bce * ((1 - p_t) ** 2)
    checksum = sigmoid_breakdown(bce) + sigmoid_breakdown(focal) + sigmoid_breakdown(bce * mmdet_ghmc_weights(logits, onehot))

    foreground = labels < CLASSES
    rows, classes = logits[foreground], labels[foreground]
    log_q = F.log_softmax(rows, dim=1).gather(1, classes[:, None]).squeeze(1)
    softmax_bins = ((1 - log_q.exp()) * BINS).long().clamp(max=BINS - 1)
    for loss in (F.cross_entropy(rows, classes, reduction="none"), -((1 - log_q.exp()) ** 2) * log_q):
        per_class = torch.bincount(classes, weights=loss.double(), minlength=CLASSES)
        per_bin = torch.bincount(softmax_bins, weights=loss.double(), minlength=BINS)
        checksum += float(loss.mean() + per_class.sum() + per_bin.sum())
    return checksum


def mmdet_ghmc_weights(pred, target, bins: int = BINS):
    """mmdet's GHMC element weights (momentum 0), as published."""
    import torch

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
    return weights / n if n > 0 else weights


GNU_TIME = shutil.which("time", path="/usr/bin:/bin")
"""GNU time, the launcher whose child's peak RSS is measured (see :func:`process`)."""


def process(command: list[str]) -> tuple[float, float]:
    """Wall seconds and peak resident MiB of a child process.

    Linux carries a process's peak RSS across ``exec`` from the memory it was forked from, so a
    child of this script (which holds the generated dumps) would report this script's peak. The
    command is therefore started by GNU time, a process of a few MiB, and its ``%M`` read back;
    without GNU time, the child's own ``ru_maxrss`` is reported (an upper bound) and
    :func:`environment` says so.
    """
    with tempfile.NamedTemporaryFile("r") as report:
        launched = [GNU_TIME, "--format", "%M", "--output", report.name, *command] if GNU_TIME else command
        start = time.perf_counter()
        child = subprocess.Popen(launched, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - start
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"{' '.join(command)} failed:\n{child.stderr.read().decode()}")
        child.stderr.close()
        peak_kib = int(report.read().split()[-1]) if GNU_TIME else usage.ru_maxrss
    return wall, peak_kib / 1024


def run_in(tree: Path | None, command: list[str]) -> tuple[float, float]:
    """``process(command)``, its ``python -m lossaudit`` taken from the ``lossaudit`` package under
    ``tree`` when given (``-m`` would put the working directory, this checkout, first on the path)."""
    if tree is not None:
        start = f"import runpy, sys; sys.path[0] = {str(tree)!r}; sys.argv[0] = 'lossaudit'; runpy.run_module('lossaudit', run_name='__main__')"
        command = [command[0], "-c", start, *command[3:]]
    return process(command)


def tree_memory(command: list[str], interval: float = 0.0005) -> float:
    """Peak of the summed resident memory (MiB) of a child process and its descendants (lossaudit's
    forked workers), read from ``/proc/PID/statm`` every ``interval`` seconds. A page the fork left
    shared (the interpreter's, the modules') counts once per process, so the sum is an upper
    bound on the memory in use at each sample; the workers exit at different times, so it is below
    the sum of each process's own peak. Run apart from the timed runs (the sampling takes a CPU)."""
    page = os.sysconf("SC_PAGE_SIZE")
    child = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peak = 0
    while child.poll() is None:
        resident = 0
        for pid in _tree(child.pid):
            try:
                resident += int(Path(f"/proc/{pid}/statm").read_text().split()[1])
            except (OSError, IndexError):  # it has just exited
                continue
        peak = max(peak, resident)
        time.sleep(interval)
    if child.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed")
    return peak * page / 2**20


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants, from ``/proc/PID/task/TID/children``."""
    found, pending = [], [pid]
    while pending:
        current = pending.pop()
        found.append(current)
        try:
            tasks = list(Path(f"/proc/{current}/task").iterdir())
        except OSError:
            continue
        for task in tasks:
            try:
                pending.extend(int(child) for child in (task / "children").read_text().split())
            except OSError:
                pass
    return found


def floor_name(buffered: bool, block: int, processes: bool) -> str:
    return f"{'buffered' if buffered else 'as_written'}_{block}_{'processes' if processes else 'threads'}"


def lossaudit_command(folder: Path) -> list[str]:
    return [sys.executable, "-m", "lossaudit", "compare", str(folder), "--format", "json", "--isolated"]


def engine(folder: Path) -> None:
    from lossaudit import compare
    from lossaudit.compare.settings import LossSettings
    from lossaudit.io.dataset import LoadOptions

    compare.run([folder], LoadOptions(), LossSettings(), None)


FLOOR_BLOCKS = (1 << 15, 1 << 16, 1 << 18)
"""Block sizes (elements) the floor is measured at, the fastest counting: 2^15 is the engine's
(``lossaudit.compare.engine.stream.BLOCK_ELEMENTS``), 2^16 keeps one buffer in a core's L2 cache, 2^18
hands the GIL over least often."""


def one_log_floor(folder: Path, buffered: bool, block: int, processes: bool) -> None:
    """``log1p(exp(-abs(x)))`` over the memory-mapped logits with a worker per CPU, each taking
    every ``workers``-th block of ``block`` elements (cache-sized: the temporaries of larger blocks
    would cost page faults). The workers are threads, or (``processes``) the engine's workers
    (:mod:`lossaudit.compare.engine.parallel`: forked processes on Linux)."""
    from lossaudit.compare.engine import parallel
    from lossaudit.compare.engine.stream import default_workers

    logits = np.load(folder / "logits.npy", mmap_mode="r")
    rows, workers = block // CLASSES, default_workers()

    def work(first: int, report=None) -> None:
        out = np.empty((rows, CLASSES), dtype=np.float32) if buffered else None
        for start in range(first * rows, len(logits), workers * rows):
            x = logits[start : start + rows]
            if buffered:
                y = out[: len(x)]
                np.abs(x, out=y)
                np.negative(y, out=y)
                np.exp(y, out=y)
                np.log1p(y, out=y)
            else:
                np.log1p(np.exp(-np.abs(x)))

    if processes:
        parallel.run(work, workers)
        return
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(work, range(workers)))


FLOOR_VARIANTS = [(buffered, block, processes) for buffered in (False, True) for block in FLOOR_BLOCKS for processes in (False, True)]
"""The ways the floor is measured (as written or with ``out=`` buffers, two block sizes, threads or
the engine's workers); the fastest counts."""


def timed(function, *args) -> float:
    start = time.perf_counter()
    function(*args)
    return time.perf_counter() - start


def input_mib(folder: Path) -> float:
    return sum(path.stat().st_size for path in folder.glob("*.npy")) / 2**20


def main_run(folder: Path, elements: int, repeat: int, skip_baseline: bool, before: Path | None = None) -> dict:
    """Everything measured on one dump (see the module docstring), runs interleaved; ``before``:
    an older tree whose process runs right after this one's in each round."""
    names: tuple[str, ...] = (
        "lossaudit_process_s",
        "lossaudit_process_peak_mib",
        "lossaudit_tree_peak_mib",
        "engine_s",
        "floor_s",
        "help_s",
        "example_detection_s",
    )
    names += ("before_process_s", "before_process_peak_mib", "before_example_detection_s") if before is not None else ()
    runs: dict[str, list[float]] = {name: [] for name in names}
    floors: dict[str, list[float]] = {floor_name(*variant): [] for variant in FLOOR_VARIANTS}
    engine(folder)  # warm the page cache and lossaudit's imports
    for _ in range(repeat):
        wall, peak = process(lossaudit_command(folder))
        runs["lossaudit_process_s"].append(wall)
        runs["lossaudit_process_peak_mib"].append(peak)
        if before is not None:
            wall, peak = run_in(before, lossaudit_command(folder))
            runs["before_process_s"].append(wall)
            runs["before_process_peak_mib"].append(peak)
        runs["engine_s"].append(timed(engine, folder))
        for variant in FLOOR_VARIANTS:
            floors[floor_name(*variant)].append(timed(one_log_floor, folder, *variant))
        runs["floor_s"].append(min(values[-1] for values in floors.values()))
        runs["help_s"].append(process([sys.executable, "-m", "lossaudit", "compare", "--help"])[0])
        example = [sys.executable, "-m", "lossaudit", "compare", "examples/detection.npz", "--isolated"]
        runs["example_detection_s"].append(process(example)[0])
        if before is not None:
            runs["before_example_detection_s"].append(run_in(before, example)[0])
        runs["lossaudit_tree_peak_mib"].append(tree_memory(lossaudit_command(folder)))
    result = {"elements": elements, "input_mib": input_mib(folder), **{name: statistics.median(values) for name, values in runs.items()}}
    result["floors_s"] = {name: statistics.median(values) for name, values in floors.items()}
    add_memory_over_input(result)
    result["engine_over_floor"] = result["engine_s"] / result["floor_s"]
    if before is not None:
        result["process_after_over_before"] = result["lossaudit_process_s"] / result["before_process_s"]
        result["example_after_over_before"] = result["example_detection_s"] / result["before_example_detection_s"]
    if not skip_baseline:
        baseline_s, baseline_peak = process([sys.executable, __file__, "--baseline-child", str(folder)])
        result.update(
            baseline_process_s=baseline_s, baseline_process_peak_mib=baseline_peak, baseline_over_lossaudit_process=baseline_s / result["lossaudit_process_s"]
        )
    result["runs"] = runs
    return result


def scaling_run(folder: Path, elements: int, repeat: int) -> dict:
    walls, peaks = zip(*(process(lossaudit_command(folder)) for _ in range(repeat)))
    trees = [tree_memory(lossaudit_command(folder)) for _ in range(repeat)]
    result = {
        "elements": elements,
        "input_mib": input_mib(folder),
        "lossaudit_process_s": statistics.median(walls),
        "lossaudit_process_peak_mib": statistics.median(peaks),
        "lossaudit_tree_peak_mib": statistics.median(trees),
    }
    add_memory_over_input(result)
    return result


def add_memory_over_input(result: dict) -> None:
    for name in ("process_peak", "tree_peak"):
        result[f"lossaudit_{name}_minus_input_mib"] = result[f"lossaudit_{name}_mib"] - result["input_mib"]


def environment() -> dict:
    from lossaudit.compare.engine.stream import default_workers

    return {
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "cpus": os.cpu_count(),
        "workers": default_workers(),
        **{name: os.environ.get(name) for name in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "PYTHONDONTWRITEBYTECODE")},
        "peak_rss_from": "GNU time" if GNU_TIME else "ru_maxrss (includes this script's peak: an upper bound)",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--anchors", type=int, nargs="+", default=[1_000_000], help="rows of the dumps (× 80 classes); the first gets the full run")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/lossaudit-bench"))
    parser.add_argument("--repeat", type=int, default=3, help="runs of each measurement (the median is reported)")
    parser.add_argument("--skip-baseline", action="store_true", help="leave out the baseline process (minutes and GBs at 320M)")
    parser.add_argument("--before", type=Path, help="a folder holding an older lossaudit package, whose process is timed in the same rounds")
    parser.add_argument("--baseline-child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.baseline_child is not None:
        baseline(args.baseline_child)
        return
    for tree in (ROOT, *([args.before] if args.before else [])):
        compileall.compile_dir(tree / "lossaudit", quiet=1)
    folders = [(make_dump(args.workdir / f"retinanet-{anchors}", anchors), anchors * CLASSES) for anchors in args.anchors]
    report = {"environment": environment(), "main": main_run(*folders[0], args.repeat, args.skip_baseline, args.before)}
    report["scaling"] = [scaling_run(folder, elements, args.repeat) for folder, elements in folders]
    if len(folders) > 1:
        first = report["scaling"][0]
        for entry in report["scaling"][1:]:
            entry["time_over_first"] = entry["lossaudit_process_s"] / first["lossaudit_process_s"]
            entry["elements_over_first"] = entry["elements"] / first["elements"]
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
