"""Run the audit of each target in a child process with a time limit.

The child (``python -m lossaudit.lint.worker``) imports the user's code, probes it and writes its
result to a file. Its stdout goes to /dev/null and only the tail of its stderr is kept, so a target
that floods output, hangs, calls ``sys.exit`` or kills its process cannot take lossaudit down: each
of those becomes an FL015 finding. The child runs in the current folder; a module target with a
``root`` (a configuration file's folder) has that folder on its ``PYTHONPATH``. Independent audits
run side by side, :func:`default_jobs` at a time.

The child sees a reduced environment (:func:`child_environment`): what Python and torch need,
and the variables named by ``--pass-env``; CI tokens and other secrets are not passed. It still
runs the target's code, in the current folder: this is not a sandbox.

The child runs in a process group of its own under an address-space limit (``--memory-limit``,
set by the child on itself before it imports the target, and inherited by anything the target
starts); when it finishes or is stopped, the whole group is killed, so a target that forks
workers leaves none behind.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path

from lossaudit.errors import InputError
from lossaudit.io.symbols import TargetSpec
from lossaudit.lint.findings import Finding, TargetResult

STDERR_TAIL_BYTES = 4000
STARTUP_ALLOWANCE_S = 30.0
"""Time for the child to start and import torch, on top of the per-call limits."""
CALL_BUDGET = 4
"""The child is killed after STARTUP_ALLOWANCE_S + CALL_BUDGET * timeout without a result."""


@dataclass(frozen=True)
class AuditOptions:
    """The ``lint`` options that reach the child. None means infer."""

    kind: str = "auto"
    inputs: str = "auto"
    targets: str = "auto"
    num_classes: int | None = None
    ignore_index: int | None = None
    seed: int = 0
    timeout: float = 10.0
    memory_limit_mb: int | None = None
    """The child's address-space limit in MiB; None: :func:`default_memory_limit_mb`."""
    pass_env: tuple[str, ...] = ()
    """Environment variables the child gets besides :data:`CHILD_ENVIRONMENT`'s."""


CHILD_ENVIRONMENT = ("PATH", "HOME", "LANG", "LANGUAGE", "LC_*", "TZ", "TMPDIR", "PYTHON*", "VIRTUAL_ENV", "CONDA_PREFIX",
                     "SSL_CERT_FILE", "SSL_CERT_DIR", "LD_LIBRARY_PATH", "CUDA_*", "CUBLAS_*", "CUDNN_*", "NVIDIA_*", "PYTORCH_*", "TORCH_*",
                     "OMP_*", "MKL_*", "OPENBLAS_*", "KMP_*", "HIP_*", "ROCM_*", "XDG_CACHE_HOME")
"""The variables (``*``: a prefix) an audit's child gets from this process: what Python and torch
need to start and find their libraries, caches and devices. Anything else (a CI token, a cloud
credential) stays out unless named with ``--pass-env``."""


def child_environment(environ: dict[str, str], pass_env: tuple[str, ...] = (), root: Path | None = None) -> dict[str, str]:
    """The child's environment: the variables of ``environ`` that :data:`CHILD_ENVIRONMENT` or
    ``pass_env`` name, with ``root`` (a configuration's folder) first on ``PYTHONPATH``."""
    exact = {name for name in (*CHILD_ENVIRONMENT, *pass_env) if not name.endswith("*")}
    prefixes = tuple(name[:-1] for name in CHILD_ENVIRONMENT if name.endswith("*"))
    kept = {name: value for name, value in environ.items() if name in exact or name.startswith(prefixes)}
    if root is not None:
        kept["PYTHONPATH"] = os.pathsep.join(path for path in (str(root), environ.get("PYTHONPATH", "")) if path)
    return kept


def default_memory_limit_mb() -> int:
    """Half the machine's physical memory, at least 2 GiB (torch alone maps about 0.7 GiB)."""
    try:
        physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return 8192
    return max(physical // 2 // 2**20, 2048)


def default_jobs() -> int:
    """One child process per core this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _drain(stream, tail: deque) -> None:
    for chunk in iter(lambda: stream.read(4096), b""):
        tail.append(chunk)
        while sum(map(len, tail)) > STDERR_TAIL_BYTES and len(tail) > 1:
            tail.popleft()


def audit(spec: TargetSpec, options: AuditOptions) -> TargetResult:
    """Audit one target in a child process.

    Raises:
        InputError: the target cannot be imported or its symbol does not exist (exit 2).
    """
    request = {
        "target": {"text": spec.text, "symbol": spec.symbol, "file": str(spec.file) if spec.file else None, "module": spec.module, "init": spec.init},
        "options": {**asdict(options), "memory_limit_mb": options.memory_limit_mb or default_memory_limit_mb()},
    }
    with tempfile.TemporaryDirectory(prefix="lossaudit-lint-") as folder:
        request_path, result_path = Path(folder, "request.json"), Path(folder, "result.json")
        request_path.write_text(json.dumps(request))
        process = subprocess.Popen(
            [sys.executable, "-m", "lossaudit.lint.worker", str(request_path), str(result_path)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            cwd=os.getcwd(),
            env=child_environment(dict(os.environ), options.pass_env, spec.root),
            start_new_session=True,
        )
        tail: deque = deque()
        reader = threading.Thread(target=_drain, args=(process.stderr, tail), daemon=True)
        reader.start()
        limit = STARTUP_ALLOWANCE_S + CALL_BUDGET * options.timeout
        try:
            process.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            _kill_group(process)
            return _crashed(spec, f"the audit ran past {limit:.0f} s and was stopped (the target hangs)", {"limit_s": limit})
        _kill_group(process)  # what the target started (forked workers) goes with it
        reader.join(timeout=5)
        if not result_path.exists():
            stderr_tail = b"".join(tail).decode(errors="replace").strip().splitlines()[-3:]
            return _crashed(
                spec,
                f"the process exited with code {process.returncode} without a result (os._exit, a signal or a fatal error)",
                {"exit_code": process.returncode, "stderr_tail": stderr_tail},
            )
        outcome = json.loads(result_path.read_text())
    if outcome["status"] == "import-error":
        raise InputError(outcome["message"])
    return TargetResult.from_dict(outcome["result"])


def _kill_group(process: subprocess.Popen) -> None:
    """Kill the child's process group (the child, and every descendant that stayed in it)."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    process.wait()


def _crashed(spec: TargetSpec, message: str, evidence: dict) -> TargetResult:
    path = str(spec.file) if spec.file else None
    return TargetResult(target=spec.text, findings=[Finding("FL015", message, path=path, line=None, evidence=evidence)])
