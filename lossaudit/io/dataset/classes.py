"""Class names: from a dump's ``class_names`` key, or from a file (``--class-names``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lossaudit.errors import InputError
from lossaudit.io.dataset.options import CLASS_NAMES_KEY
from lossaudit.io.readers import ArrayFile
from lossaudit.io.textfiles import parse_yaml, read_text


def class_names_from(batch: ArrayFile, num_classes: int) -> list[str] | None:
    """The names stored under ``class_names`` in ``batch`` (one per class), or None."""
    if CLASS_NAMES_KEY not in batch.keys():
        return None
    names = batch.get(CLASS_NAMES_KEY)
    if not isinstance(names, np.ndarray) or names.dtype.kind not in "US" or names.ndim != 1:
        raise InputError(f"{batch.source}: key '{CLASS_NAMES_KEY}' must be a 1-D array of strings")
    if len(names) != num_classes:
        raise InputError(f"{batch.source}: key '{CLASS_NAMES_KEY}' has {len(names)} names; expected {num_classes} (one per class)")
    return [str(name) for name in names]


def read_class_names(path: Path) -> list[str]:
    """Class names from a file: one per line, or a YAML list, or a YAML mapping ``{index: name}``
    (a regular file of text only: see :mod:`lossaudit.io.textfiles`)."""
    text = read_text(path, "class names")
    try:
        parsed = parse_yaml(text, path)
    except InputError:
        parsed = None
    if isinstance(parsed, list):
        return [str(name) for name in parsed]
    if isinstance(parsed, dict):
        try:
            indexed = {int(index): str(name) for index, name in parsed.items()}
        except (TypeError, ValueError):
            raise InputError(f"{path}: a class-name mapping needs integer keys (0: person, 1: car)") from None
        if sorted(indexed) != list(range(len(indexed))):
            raise InputError(f"{path}: class-name mapping keys must be 0..{len(indexed) - 1}")
        return [indexed[index] for index in range(len(indexed))]
    names = [line.strip() for line in text.splitlines() if line.strip()]
    if not names:
        raise InputError(f"{path}: no class names found")
    return names
