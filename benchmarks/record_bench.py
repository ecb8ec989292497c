"""Cost of recording a weighted sample (issue 24): on a RetinaNet-like ``(8, 100000, 80)`` float32
batch (one positive per 1,000 elements, 2% of the negatives not easy), ``sample_batch`` at 1% against
one ``torch.sigmoid`` pass over the batch (medians of 5; goal: at most 3x on the CPU; on a GPU, at
most a fifth of the batch's ``.cpu()``), and the bytes on disk per kept element of the file the
Recorder writes (goal: at most 3x the logit's 4 bytes, targets, weights and the per-class counts
included). The file holds the rows with a target whole (``(P, C)`` logits, targets, weights) and the
kept elements of the other rows grouped by class (``(K,)`` logits and weights, ``(C,)`` counts): 6
bytes per kept negative, however the classes share them. ``--skewed`` puts half of the elements
that are not easy in one class (a detector's frequent class), which a dense ``(M, C)`` layout would
pad to 7.6 slots per kept element.

Run: ``python benchmarks/record_bench.py [--device cuda] [--repeats 5] [--skewed] [--threads 1]``.
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from lossaudit.record import Recorder, sample_batch

SHAPE = (8, 100_000, 80)
POSITIVE_RATE = 1e-3
HARD_RATE = 0.02
COPY = "the batch's .cpu()"


def batch(device: str, seed: int = 0, skewed: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """RetinaNet-like logits and ``(B, A)`` class ids: a row with a positive per 1,000 elements
    (``C / 1000`` of the anchors), the others background; 2% of the negatives not easy
    (``p >= 0.1``), the rest easy (``p`` from 1e-5 to 0.05). ``skewed``: half of the elements that
    are not easy are in class 0 (as a frequent class draws the hard negatives of a detector)."""
    generator = torch.Generator().manual_seed(seed)
    batches, anchors, classes = SHAPE
    logits = torch.empty(SHAPE).uniform_(math.log(1e-5), math.log(0.05 / 0.95), generator=generator)
    shares = torch.full((classes,), HARD_RATE * classes / 2 / (classes - 1)) if skewed else torch.full((classes,), HARD_RATE)
    if skewed:
        shares[0] = HARD_RATE * classes / 2
    hard = torch.rand(SHAPE, generator=generator) < shares
    logits[hard] = torch.empty(int(hard.sum())).uniform_(math.log(0.1 / 0.9), 4.0, generator=generator)
    labels = torch.full((batches, anchors), classes)
    positive = torch.rand((batches, anchors), generator=generator) < POSITIVE_RATE * classes
    labels[positive] = torch.randint(0, classes, (int(positive.sum()),), generator=generator)
    return logits.to(device), labels.to(device)


def medians(steps: dict, repeats: int, device: str) -> dict[str, float]:
    """The median seconds of each of ``steps`` (name -> callable), run in turns (so that a busy
    machine slows them alike)."""
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            if device != "cpu":
                torch.cuda.synchronize()
            start = time.perf_counter()
            step()
            if device != "cpu":
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rate", type=float, default=0.01)
    parser.add_argument("--skewed", action="store_true", help="half of the elements that are not easy in class 0")
    parser.add_argument("--threads", type=int, default=None, help="torch's CPU threads (default: torch's choice)")
    arguments = parser.parse_args()
    if arguments.threads:
        torch.set_num_threads(arguments.threads)
    logits, labels = batch(arguments.device, skewed=arguments.skewed)
    generator = torch.Generator(device=arguments.device).manual_seed(1)
    sample_batch(logits, labels, rate=arguments.rate, generator=generator)  # warm-up
    with tempfile.TemporaryDirectory() as folder:
        with Recorder(Path(folder) / "run", rate=arguments.rate, seed=2) as recorder:
            written = recorder.add(logits, labels)
            steps = {
                "torch.sigmoid pass": lambda: torch.sigmoid(logits),
                "sample_batch": lambda: sample_batch(logits, labels, rate=arguments.rate, generator=generator),
                "Recorder.add (sample_batch and writing the file)": lambda: recorder.add(logits, labels),
            }
            if arguments.device != "cpu":
                steps[COPY] = lambda: logits.cpu()
            seconds = medians(steps, arguments.repeats, arguments.device)
        with np.load(written) as data:
            padded = int(np.count_nonzero(data["padding"])) if "padding" in data.files else 0
            rows, negatives = data["logits"].shape[0], len(data["negatives_logits"])
            kept = data["logits"].size - padded + negatives
            dtypes = {key: str(data[key].dtype) for key in ("logits", "targets", "weights", "negatives_logits", "negatives_weights", "negatives_per_class")}
        size = written.stat().st_size
    print(
        f"batch {SHAPE} float32 on {arguments.device}{' (skewed)' if arguments.skewed else ''}, rate {arguments.rate:g}, "
        f"medians of {arguments.repeats}, {torch.get_num_threads()} threads"
    )
    print("| step | seconds | ÷ sigmoid |")
    print("|---|---:|---:|")
    for name, value in seconds.items():
        print(f"| {name} | {value:.4f} | {value / seconds['torch.sigmoid pass']:.2f} |")
    if arguments.device != "cpu":
        print(f"sample_batch ÷ .cpu(): {seconds['sample_batch'] / seconds[COPY]:.3f} (goal <= 0.2)")
    elements = math.prod(SHAPE)
    print(f"kept {kept} of {elements} elements ({100 * kept / elements:.2f}%): {rows} rows with a target and {negatives} negatives; {dtypes}")
    print(
        f"file {size} bytes: {size / kept:.2f} bytes per kept element ({size / kept / 4:.2f}x the float32 logit; goal <= 3x); "
        f"the full batch would take {4 * elements} bytes of logits ({4 * elements / size:.1f}x the file)"
    )


if __name__ == "__main__":
    main()
