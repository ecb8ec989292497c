"""The workers of a pass (:mod:`lossaudit.compare.engine.parallel`): forked processes on Linux, threads
elsewhere. A child's result, exported state, progress and failure all reach the parent, and no
child outlives a run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from lossaudit.compare.engine import parallel
from lossaudit.errors import InputError

pytestmark = [pytest.mark.torch_free, pytest.mark.skipif(not parallel.FORK, reason="forked workers are used on Linux only")]


def _no_child_left() -> bool:
    try:
        os.waitpid(-1, os.WNOHANG)
    except ChildProcessError:
        return True
    return False


def test_results_come_back_in_worker_order_with_their_process_state():
    absorbed = []

    def work(index, report):
        report(10 + index)
        return {"index": index, "pid": os.getpid()}

    calls = []
    results = parallel.run(work, 3, calls.append, export=os.getpid, absorb=absorbed.append)
    assert [r["index"] for r in results] == [0, 1, 2]
    assert results[0]["pid"] == os.getpid() and len({r["pid"] for r in results}) == 3
    assert absorbed == [results[1]["pid"], results[2]["pid"]]  # each child's export, in order
    assert sum(calls) == 10 + 11 + 12
    assert _no_child_left()


def test_a_childs_error_is_raised_in_the_parent():
    def work(index, report):
        if index == 2:
            raise InputError("b.npz: key 'logits' has values outside [0, 1]")
        return index

    with pytest.raises(InputError, match=r"b\.npz: key 'logits'"):
        parallel.run(work, 3)
    assert _no_child_left()


def test_an_error_that_does_not_pickle_arrives_as_its_traceback():
    class Local(Exception):  # a local class cannot be pickled
        pass

    def work(index, report):
        if index:
            raise Local("unpicklable")
        return index

    with pytest.raises(RuntimeError, match="Local: unpicklable"):
        parallel.run(work, 2)
    assert _no_child_left()


class _Strict(Exception):
    """Pickles, but does not unpickle: ``__init__`` wants two arguments."""

    def __init__(self, path, line):
        super().__init__(f"{path}:{line}")


def test_an_error_that_does_not_unpickle_arrives_as_its_traceback():
    def work(index, report):
        if index:
            raise _Strict("losses.py", 12)
        return index

    with pytest.raises(RuntimeError, match="_Strict: losses.py:12"):
        parallel.run(work, 2)
    assert _no_child_left()


def test_a_child_that_dies_is_reported():
    def work(index, report):
        if index:
            os.kill(os.getpid(), signal.SIGKILL)
        return index

    with pytest.raises(RuntimeError, match=f"killed by signal {int(signal.SIGKILL)}"):
        parallel.run(work, 2)
    assert _no_child_left()


def test_a_failing_parent_stops_its_children():
    def work(index, report):
        if index == 0:
            raise KeyboardInterrupt
        import time

        time.sleep(60)  # a child still working

    with pytest.raises(KeyboardInterrupt):
        parallel.run(work, 2)
    assert _no_child_left()


def test_threads_elsewhere(monkeypatch):
    monkeypatch.setattr(parallel, "FORK", False)
    results = parallel.run(lambda index, report: os.getpid(), 3, export=lambda: pytest.fail("threads share the state"))
    assert results == [os.getpid()] * 3


def test_a_share_no_process_could_be_forked_for_is_done_here(monkeypatch):
    forks = []
    real_fork = os.fork

    def fork():
        if forks:
            raise BlockingIOError(11, "Resource temporarily unavailable")
        forks.append(1)
        return real_fork()

    monkeypatch.setattr(os, "fork", fork)
    calls = []
    results = parallel.run(lambda index, report: report(index + 1) or (index, os.getpid()), 3, calls.append)
    assert [index for index, _ in results] == [0, 1, 2]
    assert results[1][1] != os.getpid() and results[0][1] == results[2][1] == os.getpid()
    assert sum(calls) == 1 + 2 + 3
    assert _no_child_left()


def _alive(pid: int) -> bool:
    try:
        state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_children_die_with_their_parent(tmp_path):
    """A parent killed outright (no cleanup runs) takes its forked children with it."""
    marker = tmp_path / "child.pid"
    script = (
        "import os, time\n"
        "from lossaudit.compare.engine import parallel\n"
        "def work(index, report):\n"
        f"    if index: open({str(marker)!r}, 'w').write(str(os.getpid()))\n"
        "    time.sleep(60)\n"
        "parallel.run(work, 2)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.monotonic() + 30
    while not (marker.exists() and marker.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    child = int(marker.read_text())
    assert _alive(child)
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 10
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child)


def test_a_program_that_ignores_sigchld_still_gets_its_results():
    """With SIGCHLD ignored, Linux reaps children itself and ``waitpid`` fails: the results come
    through the pipes all the same."""
    previous = signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    try:
        assert parallel.run(lambda index, report: index * 10, 3) == [0, 10, 20]
    finally:
        signal.signal(signal.SIGCHLD, previous)
