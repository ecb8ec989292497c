"""Errors that end a command with exit code 2 and a one-line message."""


class InputError(Exception):
    """Bad input or usage: the message names the file, the key and what was expected."""


NEEDS_TORCH = (
    "this needs PyTorch, which is not installed here: pip install torch (compare and sweep on saved .npz/.npy dumps, explain, rules and losses run without it)"
)
"""The error of a path that needs torch where it is not installed."""


def require_torch() -> None:
    """Raise :class:`InputError` (:data:`NEEDS_TORCH`) when torch cannot be imported; torch is not
    imported here (a lint run checks before its children try, so a missing torch is not read as
    every target crashing)."""
    import importlib.util

    try:
        found = importlib.util.find_spec("torch") is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise InputError(NEEDS_TORCH)
