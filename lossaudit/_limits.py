"""Time and memory limits for user code run in this process: lint's child running a target,
``compare``'s child running a user loss, and ``compare --model`` running the ``--arch`` module
and the model's forward passes in lossaudit's own process.

Both limits work only on the main thread (a signal stops a hang; the address-space limit is the
whole process's); on another thread, or where the :mod:`resource` module is missing, the code
runs without them.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

try:
    import resource
except ImportError:  # not on Windows
    resource = None  # type: ignore[assignment]


class CallTimeout(BaseException):
    """Raised when user code runs past its time limit (not an Exception, so the user's own
    ``except Exception`` cannot swallow it)."""


class MemoryLimitExceeded(BaseException):
    """Raised when user code ran out of memory under :func:`memory_limit`; ``megabytes`` is the
    limit (a BaseException, as :class:`CallTimeout`, so it passes through handlers of the user's
    failures, e.g. :func:`lossaudit.io.symbols.import_quietly`)."""

    def __init__(self, megabytes: int):
        super().__init__(f"used more than {megabytes} MiB")
        self.megabytes = megabytes


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextmanager
def time_limit(timeout: float | None) -> Iterator[None]:
    """Raise :class:`CallTimeout` in the block after ``timeout`` seconds (SIGALRM; None: no limit)."""
    if timeout is None or not _main_thread():
        yield
        return

    def on_alarm(signum, frame):
        raise CallTimeout(f"ran past {timeout:g} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def run_with_timeout(fn: Callable, timeout: float | None):
    """``fn()`` under :func:`time_limit`."""
    with time_limit(timeout):
        return fn()


def mapped_bytes() -> int:
    """This process's address-space size now (``VmSize``, what ``RLIMIT_AS`` bounds)."""
    return int(Path("/proc/self/statm").read_text().split()[0]) * resource.getpagesize()


def out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` says an allocation failed: MemoryError, or an error whose message says so
    (torch's 'DefaultCPUAllocator: can't allocate memory', Windows' 'not enough memory')."""
    text = str(error)
    return isinstance(error, MemoryError) or "allocate memory" in text or "not enough memory" in text


@contextmanager
def memory_limit(megabytes: int | None) -> Iterator[None]:
    """Let the block map at most ``megabytes`` MiB more address space than the process maps on
    entry: ``RLIMIT_AS``'s soft limit is lowered to that for the block (never above the hard limit,
    never above a lower soft limit already set) and restored after it, which an unprivileged
    process may do as the soft limit stays at or below the hard one. A failed allocation in the
    block (a MemoryError, or torch's allocator RuntimeError: :func:`out_of_memory`) leaves it as
    :class:`MemoryLimitExceeded`. No limit when
    ``megabytes`` is None, off the main thread, or without :mod:`resource` or ``/proc``."""
    if megabytes is None or resource is None or not _main_thread() or not Path("/proc/self/statm").exists():
        yield
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    ceiling = mapped_bytes() + megabytes * 2**20
    for bound in (soft, hard):
        if bound != resource.RLIM_INFINITY:
            ceiling = min(ceiling, bound)
    resource.setrlimit(resource.RLIMIT_AS, (ceiling, hard))
    try:
        yield
    except (MemoryError, RuntimeError) as error:  # not an ImportError's "cannot allocate memory in static TLS block"
        if not out_of_memory(error):
            raise
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
        raise MemoryLimitExceeded(megabytes) from None
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


@dataclass(frozen=True)
class Limits:
    """The limits one call of user code runs under: ``timeout`` seconds and ``memory_mb`` MiB of
    address space beyond what the process maps when it starts (None: no limit)."""

    timeout: float | None = None
    memory_mb: int | None = None

    @contextmanager
    def applied(self) -> Iterator[None]:
        """:func:`time_limit` and :func:`memory_limit` over the block."""
        with memory_limit(self.memory_mb), time_limit(self.timeout):  # the alarm is off before the memory limit is restored
            yield
