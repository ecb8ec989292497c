"""The mode of the files lossaudit creates: what ``open(path, "w")`` would give them.

Files are written to a temporary name in their destination folder first and then renamed or
linked into place. :func:`create_temporary` creates that name with ``os.open(..., 0o666)``, so the
kernel applies the user's umask (or the folder's default ACL) exactly as for a plain ``open()``;
``tempfile`` would create it 0600. The process's umask is never read by setting it: ``os.umask``
is process-wide, and ``lossaudit.save`` runs inside the user's program, beside its own threads.
"""

from __future__ import annotations

import os
from pathlib import Path

ATTEMPTS = 100
"""Random names tried before giving up (as ``tempfile`` does, with 64 random bits per name, from
``os.urandom`` as ``secrets.token_hex`` takes them: importing :mod:`secrets` costs ~4 ms)."""


def create_temporary(folder: Path, prefix: str, suffix: str = "") -> tuple[int, Path]:
    """A new, empty file ``folder/{prefix}{16 hex digits}{suffix}``, opened for writing.

    Returns:
        The open descriptor (the caller closes it, e.g. with ``os.fdopen``) and the path.

    Raises:
        OSError: the folder cannot be written (``FileExistsError`` only if every name was taken).
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    tries = ATTEMPTS
    while True:
        path = folder / f"{prefix}{os.urandom(8).hex()}{suffix}"
        try:
            return os.open(path, flags, 0o666), path
        except FileExistsError:
            tries -= 1
            if not tries:
                raise
