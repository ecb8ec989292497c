"""Command line: one module per command (:mod:`lossaudit.cli.compare`, ``explain``, ``sweep``,
``diff``, ``lint``, ``rules``, ``sample``), registered on the app of :mod:`lossaudit.cli.app` in the order the
help lists them."""

from lossaudit.cli import compare, diff, explain, lint, rules, sample, sweep  # noqa: F401 (each registers its command)
from lossaudit.cli.app import app, main

__all__ = ["app", "main"]
