"""Errors that end a command with exit code 2 and a one-line message."""


class InputError(Exception):
    """Bad input or usage: the message names the file, the key and what was expected."""
