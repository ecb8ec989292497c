"""Start-up cost of the ``lossaudit`` process (issue 26 point 8), as ratios in one run.

    python benchmarks/startup_bench.py [--repeat 11]

Times, in turns, ``python -c "import typer, rich"`` (the baseline: what any Typer/rich CLI pays)
and ``lossaudit --help``, ``lossaudit compare --help``, ``lossaudit --version`` and ``lossaudit
rules``, each a fresh process, and prints each command's median wall time and its ratio to the
baseline's median.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

COMMANDS = {
    "python -c 'import typer, rich'": [sys.executable, "-c", "import typer, rich"],
    "lossaudit --help": [sys.executable, "-m", "lossaudit", "--help"],
    "lossaudit compare --help": [sys.executable, "-m", "lossaudit", "compare", "--help"],
    "lossaudit --version": [sys.executable, "-m", "lossaudit", "--version"],
    "lossaudit rules": [sys.executable, "-m", "lossaudit", "rules"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=11, help="runs of each command, in turns (the median is reported)")
    args = parser.parse_args()
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(args.repeat):
        for name, command in COMMANDS.items():
            started = time.perf_counter()
            subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
            times[name].append(time.perf_counter() - started)
    baseline = statistics.median(times["python -c 'import typer, rich'"])
    print(f"{'command':<32} {'median s':>9} {'× baseline':>11}")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:<32} {median:>9.3f} {median / baseline:>11.2f}")


if __name__ == "__main__":
    main()
