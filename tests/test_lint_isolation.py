"""lint's child, isolated and fast (issue 23 point 3): forked by the run's fork server, in an empty
temporary folder, with the reduced environment; its time and memory limits, its crash reports and
the order of the results as with a process per target; and that process per target when there is
no fork server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lossaudit.io.symbols import parse_target
from lossaudit.lint import forkserver, runner
from lossaudit.lint.forkserver import ForkServer, ForkServers, ServerLost
from lossaudit.lint.runner import AuditOptions
from tests.test_hostile import FOCAL_FUNCTION, LIMIT_S, SECRET_READER, Case, _alive, run_case

HOSTILE = Path(__file__).parent / "fixtures" / "hostile_losses.py"

WRITER = (
    SECRET_READER
    + """

with open("x", "w") as _handle:  # relative: into the child's current folder
    _handle.write("written by the target")
"""
)
"""The secrets test's target (reads $SOME_TOKEN from os.environ and /proc/self/environ, and
raises if it sees it), writing ``./x`` when it is imported."""


def _parent(name: str, sleep: float = 0) -> str:
    """A correct focal loss whose module, when imported, writes its parent's pid to ``NAME.ppid``
    beside itself (lossaudit, for a process per target; else a fork server) and sleeps ``sleep`` s."""
    return (
        FOCAL_FUNCTION
        + f"""
import os
import time

with open(os.path.join(os.path.dirname(__file__), "{name}.ppid"), "w") as _handle:
    _handle.write(str(os.getppid()))
time.sleep({sleep})
"""
    )


STUBBORN = '''import os
import signal
import time


def focal(inputs, targets):
    """Blocks the alarm the child's own time limit uses, then hangs: only the parent's limit stops it."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
    with open(os.path.join(os.path.dirname(__file__), "stubborn.ppid"), "w") as handle:
        handle.write(str(os.getppid()))
    while True:
        time.sleep(0.1)
'''

HOARDER = '''import torch

HOARD = []


def focal(inputs, targets):
    """Maps 256 MiB at a time (every page written) and never frees it."""
    while True:
        HOARD.append(torch.empty(1 << 26).fill_(1.0))
'''


@pytest.fixture
def forks(monkeypatch):
    """The children forked by a fork server in this test (a list that fills as lint runs)."""
    forked = []
    fork = ForkServers.fork

    def recording(self, environment, order, stderr_fd):
        child = fork(self, environment, order, stderr_fd)
        if child is not None:
            forked.append(child.pid)
        return child

    monkeypatch.setattr(ForkServers, "fork", recording)
    return forked


@pytest.fixture
def no_fork(monkeypatch):
    """A platform without the fork server: each target in a process of its own."""
    monkeypatch.setattr(forkserver, "available", lambda: False)


def _write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text)
    return path


def _lint_json(run_cli, *args):
    result = run_cli("lint", *args, "--format", "json", "--isolated")
    return result, json.loads(result.stdout)


def test_target_finds_neither_the_users_folder_nor_its_secrets(tmp_path):
    """Run from ``tmp_path``, the target writes ``./x`` elsewhere (run_case checks that nothing in
    ``tmp_path`` changed) and does not see $SOME_TOKEN (it would raise: FL015, exit 1)."""
    make = lambda folder: ["lint", _write(folder, "losses.py", WRITER).name + ":focal", "--isolated"]  # noqa: E731
    result = run_case(Case(make, exit_code=0, env={"SOME_TOKEN": "hunter2"}), tmp_path)
    assert "saw SOME_TOKEN" not in result.stdout and not (tmp_path / "x").exists()


@pytest.mark.parametrize("configured", [False, True])
def test_keep_cwd_runs_the_target_in_the_current_folder(tmp_path, configured):
    """--keep-cwd, or ``keep-cwd = true`` in [tool.lossaudit.lint]: ./x lands in the folder lint ran in."""
    _write(tmp_path, "losses.py", WRITER)
    if configured:
        _write(tmp_path, "pyproject.toml", "[tool.lossaudit.lint]\nkeep-cwd = true\n")
    arguments = ["lint", "losses.py:focal"] + ([] if configured else ["--keep-cwd", "--isolated"])
    result = subprocess.run(
        [sys.executable, "-m", "lossaudit", *arguments], cwd=tmp_path, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=LIMIT_S
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "x").read_text() == "written by the target"


def test_findings_show_paths_relative_to_the_users_folder(tmp_path):
    """The child runs elsewhere, yet a finding's path is relative to the folder lint ran in, as a
    target named relative to it: ``sub/hostile_losses.py``, not an absolute path."""
    (tmp_path / "sub").mkdir()
    _write(tmp_path / "sub", "hostile_losses.py", HOSTILE.read_text())
    result = subprocess.run(
        [sys.executable, "-m", "lossaudit", "lint", "sub/hostile_losses.py:exits", "--format", "json", "--isolated"],
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=LIMIT_S,
    )
    (target,) = json.loads(result.stdout)["targets"]
    assert target["location"]["path"] == "sub/hostile_losses.py"
    assert {finding["path"] for finding in target["findings"]} == {"sub/hostile_losses.py"}


def test_results_keep_their_order_with_several_jobs(run_cli, tmp_path, forks):
    """Three targets, the first the slowest, three at a time: the report lists them as named, each
    forked by the one fork server (their parent is neither this process nor each other)."""
    names = [("slow", 1.5), ("quick", 0), ("middle", 0.5)]
    targets = [f"{_write(tmp_path, f'{name}.py', _parent(name, sleep))}:focal" for name, sleep in names]
    result, document = _lint_json(run_cli, *targets, "--jobs", "3")
    assert result.exit_code == 0, result.stdout
    assert [target["target"] for target in document["targets"]] == targets
    parents = {(tmp_path / f"{name}.ppid").read_text() for name, _ in names}
    assert len(forks) == 3 and len(parents) == 1 and parents != {str(os.getpid())}


def test_a_hanging_target_is_stopped_at_the_parents_limit(run_cli, tmp_path, forks, monkeypatch):
    """A forked child that its own time limit cannot stop is killed with its group when the
    parent's limit (here 1 s + 4 x 0.5 s) runs out: FL015."""
    monkeypatch.setattr(runner, "STARTUP_ALLOWANCE_S", 1.0)
    target = _write(tmp_path, "stubborn.py", STUBBORN)
    started = time.monotonic()
    result, document = _lint_json(run_cli, f"{target}:focal", "--timeout", "0.5")
    elapsed = time.monotonic() - started
    (finding,) = document["targets"][0]["findings"]
    assert result.exit_code == 1 and finding["code"] == "FL015" and "ran past 3 s and was stopped" in finding["message"]
    assert forks and (tmp_path / "stubborn.ppid").read_text() != str(os.getpid())
    assert elapsed < 3 + 10  # the limit, starting the server and killing the child
    assert not _alive(forks[0])


@pytest.mark.parametrize("fork", [True, False], ids=["fork-server", "process-per-target"])
def test_exit_and_its_stderr_are_reported(run_cli, request, fork):
    """os._exit(7) in the target: FL015 with the exit code, whichever starts the child."""
    forked = request.getfixturevalue("forks" if fork else "no_fork")
    result, document = _lint_json(run_cli, f"{HOSTILE}:kills_its_process", "--timeout", "1")
    (finding,) = document["targets"][0]["findings"]
    assert result.exit_code == 1 and finding["code"] == "FL015" and "exited with code 7 without a result" in finding["message"]
    assert finding["evidence"]["exit_code"] == 7 and "stderr_tail" in finding["evidence"]
    assert bool(forked) == fork


def test_memory_limit_holds_in_a_forked_child(run_cli, tmp_path, forks):
    """A target mapping memory without end is stopped by its --memory-limit, not by the machine."""
    result, document = _lint_json(run_cli, f"{_write(tmp_path, 'hoarder.py', HOARDER)}:focal", "--memory-limit", "1500")
    findings = document["targets"][0]["findings"]
    assert result.exit_code == 1 and forks
    assert any(finding["code"] == "FL015" and "memory limit (1,500 MiB" in finding["message"] for finding in findings), findings


def test_without_fork_each_target_runs_in_a_process_of_its_own(run_cli, tmp_path, no_fork):
    """No fork server (forced): the target's parent is lossaudit itself, and it is audited as usual."""
    result, document = _lint_json(run_cli, f"{_write(tmp_path, 'quick.py', _parent('quick'))}:focal")
    assert result.exit_code == 0 and document["targets"][0]["status"] == "audited"
    assert (tmp_path / "quick.ppid").read_text() == str(os.getpid())


def test_a_server_that_cannot_start_or_dies_is_replaced_by_a_process_per_target(tmp_path, monkeypatch):
    """A fork server killed between two targets: the second is audited in a process of its own;
    one that cannot start at all: every target is."""
    spec = parse_target(f"{_write(tmp_path, 'quick.py', _parent('quick'))}:focal")
    options = AuditOptions(timeout=5)
    with ForkServers() as servers:
        assert runner.audit(spec, options, servers).findings == []
        forked_by = (tmp_path / "quick.ppid").read_text()
        (server,) = servers.servers.values()
        assert forked_by == str(server.process.pid)
        server.process.kill()
        server.process.wait()
        assert runner.audit(spec, options, servers).findings == []
        assert (tmp_path / "quick.ppid").read_text() == str(os.getpid())

    def cannot_start(self, environment):
        raise ServerLost("the fork server cannot start: test")

    monkeypatch.setattr(ForkServer, "__init__", cannot_start)
    with ForkServers() as servers:
        assert runner.audit(spec, options, servers).findings == []
        assert (tmp_path / "quick.ppid").read_text() == str(os.getpid()) and list(servers.servers.values()) == [None]


def test_module_targets_import_from_their_root_and_a_relative_pythonpath(tmp_path):
    """The child runs in another folder, yet a module target still imports from its configuration's
    folder (``root``, here named relative to the current folder) and from a relative PYTHONPATH."""
    for folder in ("conf", "src"):
        (tmp_path / folder).mkdir()
    _write(tmp_path / "conf", "confmod.py", FOCAL_FUNCTION)
    _write(tmp_path / "conf", "pyproject.toml", '[tool.lossaudit.lint]\ntargets = ["confmod:focal"]\n')
    _write(tmp_path / "src", "srcmod.py", FOCAL_FUNCTION)
    environment = {**os.environ, "PYTHONPATH": "src"}
    for arguments in (["--config", "conf/pyproject.toml"], ["srcmod:focal", "--isolated"]):
        result = subprocess.run(
            [sys.executable, "-m", "lossaudit", "lint", *arguments, "--format", "json"],
            cwd=tmp_path,
            env=environment,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=LIMIT_S,
        )
        assert result.returncode == 0, (arguments, result.stderr, result.stdout[-2000:])
        assert [target["status"] for target in json.loads(result.stdout)["targets"]] == ["audited"]


STRIP_EDITABLE = """import sys
sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in type(f).__module__ and "editable" not in getattr(f, "__module__", "")]
"""
"""A sitecustomize that removes the editable install's import hook: lossaudit is then importable
only from the folder Python starts in (or the path), as from a source tree nobody installed."""


def test_a_source_tree_used_without_installing_it_still_lints(tmp_path):
    """``python -m lossaudit lint`` from the repository root with lossaudit not installed: the
    child, started in a temporary folder, still imports lossaudit (its folder is last on the
    child's PYTHONPATH). Before: the server and the fallback child could not find lossaudit."""
    (tmp_path / "strip").mkdir()
    _write(tmp_path / "strip", "sitecustomize.py", STRIP_EDITABLE)
    root = Path(__file__).resolve().parent.parent
    environment = {**os.environ, "PYTHONPATH": str(tmp_path / "strip")}
    check = subprocess.run([sys.executable, "-c", "import lossaudit"], cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=60)
    assert check.returncode != 0, "lossaudit must not be importable outside the source tree for this test"
    result = subprocess.run(
        [sys.executable, "-m", "lossaudit", "lint", "examples/losses/fixed.py:SoftmaxFocalLoss", "--isolated", "--format", "json"],
        cwd=root,
        env=environment,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=LIMIT_S,
    )
    assert result.returncode == 0, result.stderr
    assert [target["status"] for target in json.loads(result.stdout)["targets"]] == ["audited"]
