"""Start-up cost of the ``lossaudit`` process (issue 26 point 8), as ratios in one run.

    python benchmarks/startup_bench.py [--repeat 11]

Times, in turns, ``python -c "import typer, rich"`` (the baseline: what any Typer/rich CLI pays)
and ``lossaudit --help``, every command's ``--help``, ``lossaudit --version``, ``lossaudit rules``,
``lossaudit compare --help`` on a terminal (a pseudo-terminal: the help is styled through rich
there) and ``lossaudit compare examples/detection.npz --format json`` (a whole run, reading and
computing included), each a fresh process, and prints each command's median wall time and its
ratio to the baseline's median. lossaudit's bytecode is compiled first, as an installed package's
is (a checkout run with ``PYTHONDONTWRITEBYTECODE`` would compile every module in every process).
"""

from __future__ import annotations

import argparse
import compileall
import os
import pty
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOSSAUDIT = [sys.executable, "-m", "lossaudit"]
HELPS = ["compare", "sweep", "explain", "diff", "lint", "rules", "losses", "sample"]
COMMANDS = {
    "python -c 'import typer, rich'": [sys.executable, "-c", "import typer, rich"],
    "lossaudit --help": [*LOSSAUDIT, "--help"],
    **{f"lossaudit {name} --help": [*LOSSAUDIT, name, "--help"] for name in HELPS},
    "lossaudit --version": [*LOSSAUDIT, "--version"],
    "lossaudit rules": [*LOSSAUDIT, "rules"],
    "lossaudit compare --help (terminal)": [*LOSSAUDIT, "compare", "--help"],
    "lossaudit compare detection.npz": [*LOSSAUDIT, "compare", str(ROOT / "examples" / "detection.npz"), "--format", "json", "--isolated"],
}
ON_A_TERMINAL = {"lossaudit compare --help (terminal)"}


def run(name: str, command: list[str]) -> float:
    """Seconds ``command`` took, its output discarded (or read from a pseudo-terminal)."""
    if name not in ON_A_TERMINAL:
        started = time.perf_counter()
        subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        return time.perf_counter() - started
    controller, terminal = pty.openpty()
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=terminal, stderr=subprocess.DEVNULL, env={**os.environ, "COLUMNS": "100"})
    os.close(terminal)
    while True:  # drain the terminal, or the child blocks once its buffer is full
        try:
            if not os.read(controller, 65536):
                break
        except OSError:
            break
    process.wait()
    elapsed = time.perf_counter() - started
    os.close(controller)
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=11, help="runs of each command, in turns (the median is reported)")
    args = parser.parse_args()
    compileall.compile_dir(ROOT / "lossaudit", quiet=1)
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(args.repeat):
        for name, command in COMMANDS.items():
            times[name].append(run(name, command))
    baseline = statistics.median(times["python -c 'import typer, rich'"])
    print(f"{'command':<40} {'median s':>9} {'× baseline':>11}")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:<40} {median:>9.3f} {median / baseline:>11.2f}")


if __name__ == "__main__":
    main()
