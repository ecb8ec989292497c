"""lossaudit: audit focal, GHM and cross-entropy losses on your predictions and your loss code.

The Python API (README "Python API"):

- ``lossaudit.compare(paths or logits=..., targets=..., **options) -> Report``
- ``lossaudit.sweep(paths or logits=..., targets=..., gamma=..., alpha=...) -> SweepReport``
- ``lossaudit.lint(target, **options) -> LintReport``
- ``lossaudit.save(path, logits=..., targets=...)``: dump batches from a training loop
- ``lossaudit.Recorder(path, rate=...)``: record weighted samples of huge batches (``.add(logits, targets)``)
- ``lossaudit.testing.assert_focal_loss(target, **options)``: a pytest helper

``import lossaudit`` stays cheap: every name is imported when first used, and torch only by the
modules that compute.
"""

import sys
import types
from typing import Any

from lossaudit._version import __version__

_CALLABLE_PACKAGES = ("compare", "lint", "sweep")
"""Subpackages that are also the API functions of their name (:mod:`lossaudit._callable`)."""

__all__ = ["__version__", "compare", "sweep", "lint", "save", "Recorder", "Report", "SweepReport", "LintReport", "InputError", "testing"]

_LAZY = {
    "save": ("lossaudit.io.dump", "save"),
    "Recorder": ("lossaudit.record.recorder", "Recorder"),
    "Report": ("lossaudit.compare.report.types", "Report"),
    "SweepReport": ("lossaudit.sweep.report", "SweepReport"),
    "LintReport": ("lossaudit.lint.findings", "LintReport"),
    "InputError": ("lossaudit.errors", "InputError"),
}


def __getattr__(name: str) -> Any:
    import importlib

    if name in (*_CALLABLE_PACKAGES, "testing"):
        return importlib.import_module(f"lossaudit.{name}")
    if name in _LAZY:
        module, attribute = _LAZY[name]
        return getattr(importlib.import_module(module), attribute)
    raise AttributeError(f"module 'lossaudit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)


class _Lossaudit(types.ModuleType):
    """The ``lossaudit`` module: the import system binds each subpackage on it once imported, and
    the callable packages become callable then, however they were imported."""

    def __setattr__(self, name: str, value: object) -> None:
        if name in _CALLABLE_PACKAGES and isinstance(value, types.ModuleType):
            from lossaudit._callable import make_callable

            make_callable(value.__name__, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Lossaudit
