"""Packages that are also functions: ``lossaudit.compare(...)`` and ``lossaudit.lint(...)``.

Python binds ``lossaudit.compare`` to the subpackage as soon as any of its modules is imported, so
a function of that name on ``lossaudit`` would be shadowed; instead the subpackage itself is made
callable and forwards to the API function in :mod:`lossaudit.api`.
"""

from __future__ import annotations

import importlib
import sys
import types


def make_callable(package: str, function: str) -> None:
    """Make the module ``package`` callable as ``lossaudit.api.<function>``."""

    class CallablePackage(types.ModuleType):
        def __call__(self, *args, **kwargs):
            return getattr(importlib.import_module("lossaudit.api"), function)(*args, **kwargs)

    CallablePackage.__call__.__doc__ = f"lossaudit.{function}(...): see lossaudit.api.{function}."
    sys.modules[package].__class__ = CallablePackage
