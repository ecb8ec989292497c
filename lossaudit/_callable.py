"""Packages that are also functions: ``lossaudit.compare(...)``, ``lossaudit.sweep(...)`` and ``lossaudit.lint(...)``.

Python binds ``lossaudit.compare`` to the subpackage as soon as any of its modules is imported, so
a function of that name on ``lossaudit`` would be shadowed; instead the subpackage itself is made
callable and forwards to the API function in :mod:`lossaudit.api`. ``lossaudit`` does it when it
binds the subpackage (see its ``__init__``): the subpackages know nothing of the API that calls
them, so nothing below :mod:`lossaudit.api` imports it back.
"""

from __future__ import annotations

import sys
import types


def make_callable(package: str, function: str) -> None:
    """Make the module ``package`` callable as ``lossaudit.api.<function>`` (imported on the first call)."""

    class CallablePackage(types.ModuleType):
        def __call__(self, *args, **kwargs):
            from lossaudit import api

            return getattr(api, function)(*args, **kwargs)

    CallablePackage.__call__.__doc__ = f"lossaudit.{function}(...): see lossaudit.api.{function}."
    sys.modules[package].__class__ = CallablePackage
