"""User code named on the command line: ``path/to/file.py:Symbol`` or ``package.module:Symbol``
(lint targets, ``compare --arch``), and ``--init KEY=VALUE`` keyword arguments.

Parsing and checking never import anything; :func:`import_symbol` does, and only for code the
user named explicitly.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

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
        raise InputError(f"{text!r}: expected path/to/file.py:Symbol, package.module:Symbol, or an existing file or folder")
    init = dict(init or {})
    if location.endswith(".py") or "/" in location or "\\" in location:
        path = Path(location)
        if not path.is_file():
            raise InputError(f"{text!r}: no such file {location}")
        defined = _top_level_names(path)
        if symbol.split(".")[0] not in defined:
            listed = ", ".join(sorted(defined)[:12]) or "none"
            raise InputError(f"{text!r}: {location} defines no top-level {symbol.split('.')[0]!r}; it defines: {listed}")
        return TargetSpec(text=text, symbol=symbol, file=path, init=init)
    if not all(part.isidentifier() for part in location.split(".")):
        raise InputError(f"{text!r}: {location!r} is not a module name")
    return TargetSpec(text=text, symbol=symbol, module=location, init=init)


def parse_python(path: Path) -> ast.Module:
    """The syntax tree of a Python file, without running it.

    Raises:
        InputError: the file cannot be read or parsed.
    """
    try:
        return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except SyntaxError as error:
        raise InputError(f"{path}:{error.lineno}: cannot be parsed: {error.msg}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"{path}: cannot be read ({error})") from None


def _top_level_names(path: Path) -> set[str]:
    tree = parse_python(path)
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


def import_symbol(spec: TargetSpec, run: Callable[[Callable], object] = lambda load: load()) -> object:
    """Import ``spec``'s module (a file, with its folder on ``sys.path``, or a module importable
    from the current folder) and return the symbol. ``run`` wraps the import, e.g. in a time limit.

    Raises:
        InputError: the file or module cannot be imported, or lacks the symbol.
    """
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        if spec.file is not None:
            path = spec.file.resolve()
            sys.path.insert(0, str(path.parent))
            name = f"lossaudit_user_{path.stem}"
            module_spec = importlib.util.spec_from_file_location(name, path)
            if module_spec is None or module_spec.loader is None:
                raise InputError(f"{spec.text!r}: {path} cannot be imported")
            module = importlib.util.module_from_spec(module_spec)
            sys.modules[name] = module
            run(lambda: module_spec.loader.exec_module(module))
        else:
            module = run(lambda: importlib.import_module(spec.module))
    except (ImportError, SyntaxError) as error:
        raise InputError(f"{spec.text!r} cannot be imported: {type(error).__name__}: {error}") from None
    obj = module
    for part in spec.symbol.split("."):
        if not hasattr(obj, part):
            raise InputError(f"{spec.text!r}: {getattr(module, '__name__', spec.text)} has no attribute {part!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise InputError(f"{spec.text!r}: {spec.symbol} is not a class or function")
    return obj
