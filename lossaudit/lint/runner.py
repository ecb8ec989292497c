"""Run the audit of each target in a child process with a time limit.

The child imports the user's code, probes it and writes its result to a file. Its stdout goes to
/dev/null and only the tail of its stderr is kept, so a target that floods output, hangs, calls
``sys.exit`` or kills its process cannot take lossaudit down: each of those becomes an FL015
finding. Independent audits run side by side, :func:`default_jobs` at a time.

The child is forked by the run's fork server (:mod:`lossaudit.lint.forkserver`), which imported
torch once for all of them; where there is none (no ``fork``, or the server cannot start) it is
``python -m lossaudit.lint.worker``, which pays ``import torch`` itself. Either way:

- it sees a reduced environment (:func:`child_environment`): what Python and torch need, and the
  variables named by ``--pass-env``; CI tokens and other secrets are not passed. A module target's
  ``root`` (a configuration file's folder) is first on its ``PYTHONPATH`` and ``sys.path``;
- it runs in an empty temporary folder, removed after it (``--keep-cwd``: the current folder), so
  relative paths the target writes do not land in the user's folder; the user's folder stays on its
  ``sys.path`` and is the folder paths in findings are shown relative to. It still runs the
  target's code, which can write to ``$HOME`` or its own folder: this is not a sandbox;
- it runs in a process group of its own under an address-space limit (``--memory-limit``, set by
  the child on itself before it imports the target, and inherited by anything the target starts);
  when it finishes or is stopped, the whole group is killed, so a target that forks workers leaves
  none behind.
"""

from __future__ import annotations

import json
import os
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
from lossaudit.lint.forkserver import ForkedChild, ForkServers, ServerLost, kill_group

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
    keep_cwd: bool = False
    """Run the child in the current folder instead of a temporary one."""


CHILD_ENVIRONMENT = (
    "PATH",
    "HOME",
    "LANG",
    "LANGUAGE",
    "LC_*",
    "TZ",
    "TMPDIR",
    "PYTHON*",
    "VIRTUAL_ENV",
    "CONDA_PREFIX",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "LD_LIBRARY_PATH",
    "CUDA_*",
    "CUBLAS_*",
    "CUDNN_*",
    "NVIDIA_*",
    "PYTORCH_*",
    "TORCH_*",
    "OMP_*",
    "MKL_*",
    "OPENBLAS_*",
    "KMP_*",
    "HIP_*",
    "ROCM_*",
    "XDG_CACHE_HOME",
)
"""The variables (``*``: a prefix) an audit's child gets from this process: what Python and torch
need to start and find their libraries, caches and devices. Anything else (a CI token, a cloud
credential) stays out unless named with ``--pass-env``."""


def child_environment(environ: dict[str, str], pass_env: tuple[str, ...] = (), root: Path | None = None) -> dict[str, str]:
    """The child's environment: the variables of ``environ`` that :data:`CHILD_ENVIRONMENT` or
    ``pass_env`` name, with ``root`` (a configuration's folder) first on ``PYTHONPATH``, its
    entries made absolute (read from the current folder: the child runs in another) and
    :data:`LOSSAUDIT_FOLDER` last."""
    exact = {name for name in (*CHILD_ENVIRONMENT, *pass_env) if not name.endswith("*")}
    prefixes = tuple(name[:-1] for name in CHILD_ENVIRONMENT if name.endswith("*"))
    kept = {name: value for name, value in environ.items() if name in exact or name.startswith(prefixes)}
    python_path = [os.path.abspath(path) for path in (str(root) if root is not None else "", *environ.get("PYTHONPATH", "").split(os.pathsep)) if path]
    kept["PYTHONPATH"] = os.pathsep.join([*python_path, LOSSAUDIT_FOLDER])
    return kept


LOSSAUDIT_FOLDER = str(Path(__file__).resolve().parents[2])
"""The folder lossaudit is imported from, last on the child's ``PYTHONPATH``: the child runs in
another folder, so a source tree used without installing it (``python -m lossaudit`` from the
repository root) stays importable there; for an installed package it is a folder already on the path."""


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


def _drain(reading: int, tail: deque) -> None:
    """Read the pipe ``reading`` to its end, keeping its last STDERR_TAIL_BYTES or so in ``tail``."""
    with os.fdopen(reading, "rb") as stream:
        for chunk in iter(lambda: stream.read1(4096), b""):
            tail.append(chunk)
            while sum(map(len, tail)) > STDERR_TAIL_BYTES and len(tail) > 1:
                tail.popleft()


class _Spawned:
    """A child started as ``python -m lossaudit.lint.worker`` (no fork server), with the handle
    of :class:`~lossaudit.lint.forkserver.ForkedChild`."""

    def __init__(self, order: dict, environment: dict[str, str], stderr_fd: int):
        self.process = subprocess.Popen(
            [sys.executable, "-m", "lossaudit.lint.worker", order["request"], order["result"]],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr_fd,
            cwd=order["cwd"],
            env=environment,
            start_new_session=True,
        )

    def wait(self, timeout: float) -> bool:
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return False
        return True

    def stop(self) -> int:
        kill_group(self.process.pid)  # what the target started (forked workers) goes with it
        return self.process.wait()


def _start(order: dict, options: AuditOptions, root: Path | None, servers: ForkServers | None) -> tuple[ForkedChild | _Spawned, threading.Thread, deque]:
    """The child for ``order``: forked by the run's server when there is one, else spawned;
    with the thread that keeps the tail of its stderr."""
    reading, writing = os.pipe()
    try:
        child: ForkedChild | _Spawned | None = (
            servers.fork(child_environment(dict(os.environ), options.pass_env), order, writing) if servers is not None else None
        )
        child = child or _Spawned(order, child_environment(dict(os.environ), options.pass_env, root), writing)
    except BaseException:
        os.close(reading)
        raise
    finally:
        os.close(writing)
    tail: deque = deque()
    reader = threading.Thread(target=_drain, args=(reading, tail), daemon=True)
    reader.start()
    return child, reader, tail


def audit(spec: TargetSpec, options: AuditOptions, servers: ForkServers | None = None) -> TargetResult:
    """Audit one target in a child process: forked by ``servers`` (the run's fork servers) when
    they work, else a process of its own. The child runs in a temporary folder, removed after it,
    unless ``options.keep_cwd``.

    Raises:
        InputError: the target cannot be imported or its symbol does not exist (exit 2).
    """
    request = {
        "target": {"text": spec.text, "symbol": spec.symbol, "file": str(spec.file) if spec.file else None, "module": spec.module, "init": spec.init},
        "options": {**asdict(options), "memory_limit_mb": options.memory_limit_mb or default_memory_limit_mb()},
        "user_folder": os.getcwd(),
    }
    with tempfile.TemporaryDirectory(prefix="lossaudit-lint-", ignore_cleanup_errors=True) as folder:
        request_path, result_path, work = Path(folder, "request.json"), Path(folder, "result.json"), Path(folder, "work")
        request_path.write_text(json.dumps(request))
        work.mkdir()
        order = {
            "request": str(request_path),
            "result": str(result_path),
            "cwd": os.getcwd() if options.keep_cwd else str(work),
            "root": os.path.abspath(spec.root) if spec.root is not None else None,
            "pythonpath": child_environment(dict(os.environ), (), spec.root).get("PYTHONPATH"),
        }
        child, reader, tail = _start(order, options, spec.root, servers)
        limit = STARTUP_ALLOWANCE_S + CALL_BUDGET * options.timeout
        try:
            finished = child.wait(limit)
        except ServerLost:  # the server died under it: audit it again in a process of its own
            return audit(spec, options)
        exit_code = child.stop()
        if not finished:
            return _crashed(spec, f"the audit ran past {limit:.0f} s and was stopped (the target hangs)", {"limit_s": limit})
        reader.join(timeout=5)
        if not result_path.exists():
            stderr_tail = b"".join(tail).decode(errors="replace").strip().splitlines()[-3:]
            return _crashed(
                spec,
                f"the process exited with code {exit_code} without a result (os._exit, a signal or a fatal error)",
                {"exit_code": exit_code, "stderr_tail": stderr_tail},
            )
        outcome = json.loads(result_path.read_text())
    if outcome["status"] == "import-error":
        raise InputError(outcome["message"])
    return TargetResult.from_dict(outcome["result"])


def _crashed(spec: TargetSpec, message: str, evidence: dict) -> TargetResult:
    path = str(spec.file) if spec.file else None
    return TargetResult(target=spec.text, findings=[Finding("FL015", message, path=path, line=None, evidence=evidence)])
