"""The workers of a pass over the data, run in parallel: forked processes on Linux, threads elsewhere.

A worker of :func:`~lossaudit.compare.engine.stream.stream_pass` makes a few dozen numpy calls per block
of a chunk, and each call takes the GIL and gives it back around its loop. With a thread per core,
the threads keep waiting for each other's hand-overs: on two cores, 80M elements in blocks of 2^15
take 0.50 s in one thread and 0.52 s in two; in two forked processes, which have a GIL each,
0.27 s. So on Linux the workers but the first are forked children of this process:

- a child computes its share, sends its result back pickled through a pipe together with
  ``export()`` (state it changed that the parent must learn, given to ``absorb``), and leaves
  with ``os._exit``: no cleanup of the parent's (``atexit``, buffered output, context managers);
- its progress goes through a shared counter, which the parent forwards whenever its own worker
  reports (so ``progress`` gets rows in batches, adding up to every worker's);
- an exception in a child is raised again in the parent; when the parent fails or is
  interrupted, its children are killed and reaped, and when it dies, Linux kills them
  (``PR_SET_PDEATHSIG``);
- a share no child could be forked for (``fork`` failed) is done by the parent after its own.

A child only runs numpy on what it inherited and opens its own files, so the threads a parent may
have (a progress display, BLAS's pool) do not matter to it; Python 3.12 warns about forking a
process that has threads, and that warning is silenced here for this reason. Elsewhere (macOS,
where forking without ``exec`` is unsafe, and Windows, which has no ``fork``) the workers are threads.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import pickle
import signal
import sys
import traceback
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

FORK = sys.platform.startswith("linux") and hasattr(os, "fork")
"""Whether workers beyond the first are forked processes (else threads)."""

Report = Callable[[int], None]
"""A worker's progress: called with the rows of each chunk it has tallied."""


def run(
    work: Callable[[int, Report], Any],
    workers: int,
    progress: Report | None = None,
    export: Callable[[], Any] = lambda: None,
    absorb: Callable[[Any], None] = lambda state: None,
) -> list:
    """``[work(0, report), ..., work(workers - 1, report)]``, run in parallel (see the module
    docstring). ``progress`` gets every worker's reports, in this process."""
    progress = progress or (lambda rows: None)
    if workers == 1:
        return [work(0, progress)]
    if not FORK:
        from concurrent.futures import ThreadPoolExecutor  # here: it imports logging, which Linux's runs never need

        with ThreadPoolExecutor(workers) as pool:
            return list(pool.map(lambda index: work(index, progress), range(workers)))
    return _forked(work, workers, progress, export, absorb)


class _Child:
    """A forked worker: its process id and the pipe its result comes through."""

    def __init__(self, pid: int, pipe: int):
        self.pid, self.pipe = pid, pipe
        self.reaped = False

    def result(self) -> tuple[Any, Any]:
        """``(value, exported state)`` once the child has finished; its exception, raised here."""
        with os.fdopen(self.pipe, "rb") as pipe:
            data = pipe.read()
        status = self._reap()
        if not data:
            raise RuntimeError(f"a worker process ended without a result ({_describe(status)})")
        outcome, value, state = pickle.loads(data)
        if outcome == "error":
            raise value
        return value, state

    def stop(self) -> None:
        """Kill and reap the child if it has not been reaped."""
        if self.reaped:
            return
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self._reap()

    def _reap(self) -> int | None:
        """Wait for the child; its wait status, or None where the program reaps its children
        itself (``SIGCHLD`` ignored)."""
        self.reaped = True
        try:
            return os.waitpid(self.pid, 0)[1]
        except ChildProcessError:
            return None


PR_SET_PDEATHSIG = 1
"""Linux's ``prctl`` request: a signal for this process when its parent dies."""


def _die_with_parent(parent: int) -> None:
    """Have Linux kill this forked child when its parent dies, however it dies (killed, too)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # no prctl: the child finishes its share, then fails to write
        return
    if os.getppid() != parent:  # the parent died before the request
        os._exit(1)


def _describe(status: int | None) -> str:
    if status is None:
        return "its exit status unknown"
    if os.WIFSIGNALED(status):
        return f"killed by signal {os.WTERMSIG(status)}"
    return f"exit status {os.waitstatus_to_exitcode(status)}"


def _forked(work: Callable[[int, Report], Any], workers: int, progress: Report, export: Callable[[], Any], absorb: Callable[[Any], None]) -> list:
    counters = np.frombuffer(mmap.mmap(-1, 8 * workers), dtype=np.int64)  # anonymous, shared with the children: rows each has tallied
    forwarded = np.zeros(workers, dtype=np.int64)

    def report(rows: int) -> None:
        """The parent worker's rows, and the children's since the last report, in one call."""
        done = counters.copy()
        rows += int((done - forwarded).sum())
        forwarded[:] = done
        if rows:
            progress(rows)

    children: dict[int, _Child] = {}
    try:
        for index in range(1, workers):
            try:
                children[index] = _fork(work, index, counters[index : index + 1], export)
            except OSError:  # no process to be had (a process limit, memory): this one does the share
                break
        results = [work(0, report)]
        for index in range(1, workers):
            if index in children:
                value, state = children[index].result()
                absorb(state)
            else:
                value = work(index, report)
            results.append(value)
        report(0)
        return results
    finally:
        for child in children.values():
            child.stop()


def _fork(work: Callable[[int, Report], Any], index: int, counter: np.ndarray, export: Callable[[], Any]) -> _Child:
    read_end, write_end = os.pipe()
    parent = os.getpid()
    sys.stdout.flush()
    sys.stderr.flush()  # nothing buffered before the fork is written twice
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # a multi-threaded parent (see the module docstring)
            pid = os.fork()
    except OSError:
        os.close(read_end)
        os.close(write_end)
        raise
    if pid:
        os.close(write_end)
        return _Child(pid, read_end)
    try:  # the child: never returns
        _die_with_parent(parent)
        os.close(read_end)

        def report(rows: int) -> None:
            counter[0] += rows

        try:
            data = pickle.dumps(("value", work(index, report), export()), protocol=pickle.HIGHEST_PROTOCOL)
        except BaseException as error:  # noqa: BLE001 -- every failure goes to the parent
            try:
                data = pickle.dumps(("error", error, None))
                pickle.loads(data)  # some exceptions pickle but do not unpickle (their own __init__)
            except Exception:  # an exception that does not travel: its traceback as text
                data = pickle.dumps(("error", RuntimeError("".join(traceback.format_exception(error))), None))
        with os.fdopen(write_end, "wb") as pipe:
            pipe.write(data)
    finally:
        os._exit(0)
