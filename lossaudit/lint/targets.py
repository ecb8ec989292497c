"""Parse and check lint targets (``path/to/file.py:Symbol`` or ``package.module:Symbol``) and
``--init KEY=VALUE`` arguments, without importing the user's code."""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path

from lossaudit.errors import InputError


@dataclass(frozen=True)
class TargetSpec:
    """What to import: a file or a module, and a top-level symbol in it."""

    text: str
    symbol: str
    file: Path | None = None
    module: str | None = None
    init: dict = field(default_factory=dict)


def parse_target(text: str, init: dict | None = None) -> TargetSpec:
    """``losses.py:FocalLoss`` or ``pkg.losses:focal``; checks that a file target defines the symbol."""
    location, sep, symbol = text.rpartition(":")
    if not sep or not location or not symbol.replace(".", "").replace("_", "a").isalnum():
        raise InputError(f"target {text!r}: expected path/to/file.py:Symbol, package.module:Symbol, or an existing file or folder")
    init = dict(init or {})
    if location.endswith(".py") or "/" in location or "\\" in location:
        path = Path(location)
        if not path.is_file():
            raise InputError(f"target {text!r}: no such file {location}")
        defined = _top_level_names(path)
        if symbol.split(".")[0] not in defined:
            listed = ", ".join(sorted(defined)[:12]) or "none"
            raise InputError(f"target {text!r}: {location} defines no top-level {symbol.split('.')[0]!r}; it defines: {listed}")
        return TargetSpec(text=text, symbol=symbol, file=path, init=init)
    if not all(part.isidentifier() for part in location.split(".")):
        raise InputError(f"target {text!r}: {location!r} is not a module name")
    return TargetSpec(text=text, symbol=symbol, module=location, init=init)


def _top_level_names(path: Path) -> set[str]:
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except SyntaxError as error:
        raise InputError(f"{path}:{error.lineno}: cannot be parsed: {error.msg}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"{path}: cannot be read ({error})") from None
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                if isinstance(target, ast.Name):
                    names.add(target.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
    return names


def parse_init(items: list[str] | None) -> dict:
    """``["alpha=0.25", "reduction=sum"]`` -> ``{"alpha": 0.25, "reduction": "sum"}``.

    Values are Python literals; a bare word is taken as a string.
    """
    parsed: dict = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise InputError(f"--init {item!r}: expected KEY=VALUE with KEY a Python identifier")
        try:
            parsed[key] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            if not value.strip().isidentifier():
                raise InputError(f"--init {item!r}: {value!r} is not a Python literal") from None
            parsed[key] = value.strip()
    return parsed
