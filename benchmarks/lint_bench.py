"""Time one full ``lossaudit lint`` audit, start-up included, against the cost of ``import torch``.

    python benchmarks/lint_bench.py [TARGET] [--repeat N]

Both are whole processes started from this one, measured alternately; the report gives the
median wall time of each and their ratio. The target of issue #3 is a full audit under 5 s.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_TARGET = "examples/losses/buggy.py:NaiveFocalLoss"


def wall_time(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target", nargs="?", default=DEFAULT_TARGET)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    audit = [sys.executable, "-m", "lossaudit", "lint", args.target]
    baseline = [sys.executable, "-c", "import torch"]
    audits, baselines = [], []
    for _ in range(args.repeat):
        baselines.append(wall_time(baseline))
        audits.append(wall_time(audit))
    audit_median, baseline_median = statistics.median(audits), statistics.median(baselines)
    print(f"target:                 {args.target}")
    print(f"lossaudit lint (whole): median {audit_median:.2f} s over {args.repeat} runs (min {min(audits):.2f}, max {max(audits):.2f})")
    print(f"python -c 'import torch': median {baseline_median:.2f} s")
    print(f"ratio audit / import torch: {audit_median / baseline_median:.2f}")
    print(f"under 5 s: {'yes' if audit_median < 5 else 'NO'}")


if __name__ == "__main__":
    main()
