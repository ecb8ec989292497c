"""The mode of the files lossaudit creates: what ``open()`` would give under the user's umask.

Files are written to a temporary name first (``tempfile`` creates it 0600) and then renamed or
linked into place; :func:`as_if_opened` gives them the mode a plain ``open(path, "w")`` would.
"""

from __future__ import annotations

import os
import threading

_lock = threading.Lock()


def user_file_mode() -> int:
    """``0o666`` less the process's umask (read by setting it and putting it back)."""
    with _lock:
        umask = os.umask(0o022)
        os.umask(umask)
    return 0o666 & ~umask


def as_if_opened(descriptor: int) -> None:
    """Give an open temporary file the mode ``open()`` would have created it with."""
    os.fchmod(descriptor, user_file_mode())
