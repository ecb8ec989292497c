"""Modules imported on first use: ``torch`` costs about 1.4 s to import, and the loss registry
(:mod:`lossaudit.losses`) must be readable without it (``--help``, ``lossaudit losses``,
``compare`` on numpy dumps). The reference losses name ``torch`` and ``F`` from here; the first
attribute read imports the module."""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import TYPE_CHECKING


class LazyModule:
    """Stands for the module ``name`` until an attribute is read, then imports it."""

    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, attribute: str) -> object:
        module: ModuleType = importlib.import_module(self._name)
        return getattr(module, attribute)

    def __repr__(self) -> str:
        return f"<lazy module {self._name!r}>"


if TYPE_CHECKING:  # the type checker sees the modules themselves
    import torch
    import torch.nn.functional as F
else:
    torch = LazyModule("torch")
    F = LazyModule("torch.nn.functional")
