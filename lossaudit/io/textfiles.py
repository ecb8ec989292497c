"""Reading the small text files a user names: configuration, class names, per-class alpha.

Only regular files are opened — a FIFO blocks forever and ``/dev/zero`` never ends — and only up
to :data:`MAX_TEXT_BYTES`. YAML is read without aliases (an alias bomb, "billion laughs", expands
a few lines into billions of nodes once walked) and with at most :data:`MAX_DEPTH` levels of
nesting; TOML nested deeper than its recursive parser can go is refused too. Every failure is an
:class:`~lossaudit.errors.InputError` that names the file.
"""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

from lossaudit.errors import InputError

MAX_TEXT_BYTES = 16 * 1024 * 1024
"""Class-name lists and configuration files are far smaller; anything larger is not one."""
MAX_DEPTH = 64
"""Nesting levels allowed in YAML (configuration needs three)."""


def require_regular_file(path: Path, what: str) -> os.stat_result:
    """The file's status, after refusing what is not a regular file (by type, before opening)."""
    try:
        status = os.stat(path)
    except OSError as error:
        raise InputError(f"{path}: cannot read {what} ({error.strerror})") from None
    if not stat.S_ISREG(status.st_mode):
        kind = "a folder" if stat.S_ISDIR(status.st_mode) else "a FIFO" if stat.S_ISFIFO(status.st_mode) else "a device or socket"
        raise InputError(f"{path}: {what} must be a regular file, not {kind}")
    return status


def read_text(path: Path, what: str) -> str:
    """The UTF-8 text of a regular file of at most :data:`MAX_TEXT_BYTES`."""
    status = require_regular_file(path, what)
    if status.st_size > MAX_TEXT_BYTES:
        raise InputError(f"{path}: {what} is {status.st_size:,} bytes; at most {MAX_TEXT_BYTES:,} are read")
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_TEXT_BYTES + 1)
    except OSError as error:
        raise InputError(f"{path}: cannot read {what} ({error.strerror})") from None
    if len(data) > MAX_TEXT_BYTES:
        raise InputError(f"{path}: {what} is larger than {MAX_TEXT_BYTES:,} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise InputError(f"{path}: {what} is not UTF-8 text (byte {error.start})") from None


def parse_yaml(text: str, path: Path) -> object:
    """``yaml.safe_load`` without aliases and with bounded nesting.

    Raises:
        InputError: not valid YAML, an alias, or nesting deeper than :data:`MAX_DEPTH`.
    """
    import yaml

    class BoundedLoader(yaml.SafeLoader):
        depth = 0

        def compose_node(self, parent, index):
            if self.check_event(yaml.AliasEvent):
                mark = self.peek_event().start_mark
                raise InputError(f"{path}:{mark.line + 1}: YAML aliases (*name) are not accepted")
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise InputError(f"{path}: YAML nested deeper than {MAX_DEPTH} levels")
            try:
                return super().compose_node(parent, index)
            finally:
                self.depth -= 1

    try:
        return yaml.load(text, Loader=BoundedLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as error:
        raise InputError(f"{path}: not valid YAML ({str(error).splitlines()[0]})") from None


def parse_toml(text: str, path: Path) -> dict:
    """``tomllib.loads`` with nesting bounded (deep arrays exhaust the parser's recursion).

    Raises:
        InputError: not valid TOML, or nested deeper than the parser can go.
    """
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # Python 3.10
        import tomli as tomllib
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise InputError(f"{path}: not valid TOML ({error})") from None
    except RecursionError:
        raise InputError(f"{path}: TOML nested too deeply to read") from None
