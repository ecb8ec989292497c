"""lint's fork server: one clean process that imports torch and the audit's modules once, then
forks one child per target, so that a run pays ``import torch`` once instead of once per target.

:class:`ForkServer` starts it (``python -m lossaudit.lint.forkserver FD``) with the audit's
reduced environment already in place, so that its ``/proc/self/environ``, and its children's,
holds nothing else; it runs in an empty temporary folder and never runs a torch operation itself,
so no thread pool exists when it forks (each child still sets its thread count,
:data:`lossaudit.lint.worker.THREADS`, which starts torch's pool afresh). A run starts one server
per distinct environment (:class:`ForkServers`; within a run it differs only if ``--pass-env``
did); a module target's ``root``, which differs between configuration entries, is put on the
child's ``sys.path`` and ``PYTHONPATH`` after the fork instead, so that one server serves them all.

Protocol: the parent binds a Unix ``SOCK_SEQPACKET`` socket and hands it to the server; each
target is one connection, on which

- the parent sends one message, ``{"request", "result", "cwd", "root", "pythonpath"}`` (JSON),
  with the write end of a pipe for the child's stderr attached (``SCM_RIGHTS``);
- the server forks; the child starts a session of its own (its pid is its process group), points
  stderr at the pipe and stdin/stdout at ``/dev/null``, moves to ``cwd``, puts ``root`` on its
  path and runs :func:`lossaudit.lint.worker.run` (which sets the memory limit on itself);
- the server answers ``{"pid": N}``; a message ``kill`` (or the parent closing the connection)
  kills the child's process group; when the child exits, the server kills what is left in its
  group, reaps it and answers ``{"exit": CODE}`` (negative: the signal that ended it).

The server ends when its stdin closes (the run is over, or lossaudit died), killing every child's
group first. Where ``fork`` or these sockets are missing (:func:`available`), or the server cannot
start, :mod:`lossaudit.lint.runner` starts one ``python -m lossaudit.lint.worker`` per target.
"""

from __future__ import annotations

import importlib
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from typing import cast

SERVER_START_S = 60.0
"""How long the first target waits for the server to import torch and take its connection."""
REAP_INTERVAL_S = 0.02
"""How often the server looks for children that exited."""
PRELOADED = (
    "torch",
    "lossaudit.lint.worker",
    "lossaudit.lint.battery",
    "lossaudit.lint.calibrate",
    "lossaudit.lint.canonical",
    "lossaudit.lint.crashes",
    "lossaudit.lint.locate",
    "lossaudit.lint.rules",
    "lossaudit.lint.subject",
)
"""What the server imports before it forks: what every audit imports."""
MESSAGE_BYTES = 65536


class ServerLost(Exception):
    """The fork server did not start, or stopped answering; the target is audited without it."""


def available() -> bool:
    """Whether this platform can run the fork server (fork, waitid, Unix sockets passing descriptors)."""
    return all(hasattr(module, name) for module, name in ((os, "fork"), (os, "waitid"), (socket, "AF_UNIX"), (socket, "SOCK_SEQPACKET"), (socket, "send_fds")))


class ForkedChild:
    """The parent's handle on one forked child: its connection to the server, and its pid."""

    def __init__(self, connection: socket.socket):
        self.connection = connection
        try:
            self.pid: int = self._receive(SERVER_START_S)["pid"]
        except TimeoutError:
            raise ServerLost(f"the fork server did not answer within {SERVER_START_S:.0f} s") from None
        self.exit_code: int | None = None

    def _receive(self, timeout: float) -> dict:
        """The server's next message; TimeoutError after ``timeout`` seconds."""
        self.connection.settimeout(timeout)
        try:
            message = self.connection.recv(MESSAGE_BYTES)
        except TimeoutError:
            raise
        except OSError as error:
            raise ServerLost(f"the fork server did not answer: {error}") from None
        if not message:
            raise ServerLost("the fork server closed the connection")
        return json.loads(message)

    def wait(self, timeout: float) -> bool:
        """Whether the child exited within ``timeout`` seconds (its exit code is then known).

        Raises:
            ServerLost: the server stopped; the child's group is killed.
        """
        try:
            self.exit_code = self._receive(timeout)["exit"]
        except TimeoutError:
            return False
        except ServerLost:
            kill_group(self.pid)
            self.connection.close()
            raise
        return True

    def stop(self) -> int:
        """Kill the child's process group (the child and what it started), let the server reap it,
        and return its exit code."""
        if self.exit_code is None:
            try:
                self.connection.send(b"kill")
                self.exit_code = self._receive(30.0)["exit"]
            except (OSError, ServerLost):  # the server is gone (TimeoutError is an OSError): kill the group from here
                kill_group(self.pid)
                self.exit_code = -signal.SIGKILL
        self.connection.close()
        return self.exit_code


class ForkServer:
    """One running fork server with the environment ``environment``."""

    def __init__(self, environment: dict[str, str]):
        self.folder = tempfile.TemporaryDirectory(prefix="lossaudit-server-", ignore_cleanup_errors=True)
        self.address = os.path.join(self.folder.name, "socket")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            listener.bind(self.address)
            listener.listen(64)
            self.process = subprocess.Popen(
                [sys.executable, "-m", "lossaudit.lint.forkserver", str(listener.fileno())],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                cwd=self.folder.name,
                env=environment,
                pass_fds=[listener.fileno()],
                start_new_session=True,
            )
        except OSError as error:
            self.folder.cleanup()
            raise ServerLost(f"the fork server cannot start: {error}") from None
        finally:
            listener.close()  # the server holds it now: if it dies, connecting fails at once

    def fork(self, order: dict, stderr_fd: int) -> ForkedChild:
        """Fork a child for ``order`` (the message above) with ``stderr_fd`` as its stderr."""
        connection = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            connection.connect(self.address)
            socket.send_fds(connection, [json.dumps(order).encode()], [stderr_fd])
            return ForkedChild(connection)
        except (OSError, ServerLost) as error:
            connection.close()
            raise ServerLost(f"the fork server is not running: {error}") from None

    def close(self) -> None:
        """End the server (it kills any child still running) and remove its folder."""
        try:
            self.process.stdin.close()  # type: ignore[union-attr]  # started with stdin=PIPE
            self.process.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            kill_group(self.process.pid)
            self.process.wait()
        self.folder.cleanup()


class ForkServers:
    """The fork servers of one run, one per distinct environment, started on first use and ended
    with the run (``with ForkServers() as servers``). A server that cannot start or stops
    answering is not tried again: its targets run in a process of their own."""

    def __init__(self):
        self.lock = threading.Lock()
        self.servers: dict[tuple, ForkServer | None] = {}

    def __enter__(self) -> ForkServers:
        return self

    def __exit__(self, *exc_info) -> None:
        for server in self.servers.values():
            if server is not None:
                server.close()

    def fork(self, environment: dict[str, str], order: dict, stderr_fd: int) -> ForkedChild | None:
        """A child forked by the server of ``environment``; None when there is no working server."""
        key = tuple(sorted(environment.items()))
        with self.lock:
            if key not in self.servers:
                try:
                    self.servers[key] = ForkServer(environment) if available() else None
                except ServerLost:
                    self.servers[key] = None
            server = self.servers[key]
        if server is None:
            return None
        try:
            return server.fork(order, stderr_fd)
        except ServerLost:
            with self.lock:
                self.servers[key] = None
            server.close()
            return None


def kill_group(pgid: int) -> None:
    """SIGKILL the process group ``pgid`` (a child's, whose pid is its group's id)."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


# The server's side.


class Server:
    """The server process's loop: accept a connection, fork, answer; reap exited children."""

    def __init__(self, listener: socket.socket):
        self.listener = listener
        self.running: dict[int, socket.socket] = {}
        self.selector = selectors.DefaultSelector()
        self.selector.register(listener, selectors.EVENT_READ, "accept")
        self.selector.register(sys.stdin.fileno(), selectors.EVENT_READ, "stdin")

    def serve(self) -> None:
        """Serve until stdin closes."""
        while True:
            for key, _ in self.selector.select(timeout=REAP_INTERVAL_S):
                if key.data == "stdin":
                    if not os.read(sys.stdin.fileno(), 4096):
                        return self.stop()
                elif key.data == "accept":
                    self.accept()
                else:
                    self.on_message(cast(socket.socket, key.fileobj), key.data)
            self.reap()

    def accept(self) -> None:
        connection, _ = self.listener.accept()
        connection.settimeout(10)
        try:
            message, fds, _, _ = socket.recv_fds(connection, MESSAGE_BYTES, 1)
            order = json.loads(message)
        except (OSError, ValueError):
            connection.close()
            return
        if len(fds) != 1:
            connection.close()
            return
        pid = os.fork()
        if pid == 0:
            self.child(order, fds[0])
        os.close(fds[0])
        try:
            connection.send(json.dumps({"pid": pid}).encode())
        except OSError:
            kill_group(pid)
        self.running[pid] = connection
        self.selector.register(connection, selectors.EVENT_READ, pid)

    def child(self, order: dict, stderr_fd: int) -> None:
        """In the forked child: set it up as the request says, audit, and exit (never returns)."""
        code = 70
        try:
            os.setsid()
            self.selector.close()
            for inherited in (self.listener, *self.running.values()):
                inherited.close()
            null = os.open(os.devnull, os.O_RDWR)
            os.dup2(null, 0)
            os.dup2(null, 1)
            os.dup2(stderr_fd, 2)
            os.close(null)
            os.close(stderr_fd)
            os.chdir(order["cwd"])
            if order["root"] is not None:
                sys.path.insert(0, order["root"])
                os.environ["PYTHONPATH"] = order["pythonpath"]
            from lossaudit.lint import worker

            worker.run(order["request"], order["result"])
            code = 0
        except BaseException:  # noqa: BLE001 - said on the child's stderr, whose tail the parent reports
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)  # skip the target's atexit handlers and non-daemon threads

    def on_message(self, connection: socket.socket, pid: int) -> None:
        """``kill``, or the parent gone: kill the child's group (the reaping answers)."""
        try:
            message = connection.recv(MESSAGE_BYTES)
        except OSError:
            message = b""
        if not message:
            self.selector.unregister(connection)
        kill_group(pid)

    def reap(self) -> None:
        """Answer each child that exited: kill what is left in its group, reap it, send its code."""
        while self.running:
            try:
                info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                return
            if info is None:
                return
            kill_group(info.si_pid)  # before reaping: its pid (the group's id) cannot be reused yet
            _, status = os.waitpid(info.si_pid, 0)
            self.answer(info.si_pid, os.waitstatus_to_exitcode(status))

    def answer(self, pid: int, code: int) -> None:
        connection = self.running.pop(pid, None)
        if connection is None:
            return
        try:
            self.selector.unregister(connection)
        except KeyError:  # the parent had closed it
            pass
        try:
            connection.send(json.dumps({"exit": code}).encode())
        except OSError:
            pass
        connection.close()

    def stop(self) -> None:
        for pid in list(self.running):
            kill_group(pid)
        deadline = time.monotonic() + 10
        while self.running and time.monotonic() < deadline:
            self.reap()
            time.sleep(REAP_INTERVAL_S)


def main() -> None:
    listener = socket.socket(fileno=int(sys.argv[1]))
    for module in PRELOADED:
        importlib.import_module(module)
    Server(listener).serve()


if __name__ == "__main__":
    main()
