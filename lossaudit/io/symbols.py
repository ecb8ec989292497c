"""User code named on the command line: ``path/to/file.py:Symbol`` or ``package.module:Symbol``
(lint targets, ``compare --arch``), and ``--init KEY=VALUE`` keyword arguments.

Parsing and checking never import anything; :func:`import_symbol` does, and only for code the
user named explicitly. A module target resolves from ``TargetSpec.root`` (a configuration file's
folder) or the current folder.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import os
import re
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Callable, cast

from lossaudit.errors import InputError
from lossaudit.io.textfiles import MAX_TEXT_BYTES, require_regular_file


@dataclass(frozen=True)
class TargetSpec:
    """What to import: a file or a module, and a top-level symbol in it. ``root`` is the folder a
    module is imported from (None: the current folder)."""

    text: str
    symbol: str
    file: Path | None = None
    module: str | None = None
    init: dict = field(default_factory=dict)
    root: Path | None = None


IMPORT_FAILURE = re.compile(r"cannot be imported: (?P<exception>.*?)(?: \(at (?P<path>[^()]+):(?P<line>\d+)\))?$")
"""An import failure's message: ``... cannot be imported: EXCEPTION (at PATH:LINE)``; the location
travels in the text because the child process reports an import failure as one line."""


def parse_target(text: str, init: dict | None = None, root: Path | None = None) -> TargetSpec:
    """``losses.py:FocalLoss`` or ``pkg.losses:focal``; checks that a file target defines the symbol."""
    location, sep, symbol = text.rpartition(":")
    if not sep or not location or not symbol.replace(".", "").replace("_", "a").isalnum():
        raise InputError(f"{text!r}: expected path/to/file.py:Symbol, package.module:Symbol, or an existing file or folder")
    init = dict(init or {})
    if location.endswith(".py") or "/" in location or "\\" in location:
        path = Path(location)
        if not path.exists():
            raise InputError(f"{text!r}: no such file {location}")
        defined = _top_level_names(path)
        if symbol.split(".")[0] not in defined:
            listed = ", ".join(sorted(defined)[:12]) or "none"
            raise InputError(f"{text!r}: {location} defines no top-level {symbol.split('.')[0]!r}; it defines: {listed}")
        return TargetSpec(text=text, symbol=symbol, file=path, init=init)
    if not all(part.isidentifier() for part in location.split(".")):
        raise InputError(f"{text!r}: {location!r} is not a module name")
    return TargetSpec(text=text, symbol=symbol, module=location, init=init, root=root)


_user_folder: Path | None = None
"""Set by :func:`set_user_folder` in lint's child, which runs in a folder of its own."""


def set_user_folder(folder: Path | str) -> None:
    """Make ``folder`` the user's folder of this process (lint's child: the folder ``lint`` ran in)."""
    global _user_folder
    _user_folder = Path(folder)


def user_folder() -> Path:
    """The folder the user ran lossaudit in: paths are shown relative to it and a module target
    imports from it. The current folder, except in lint's child (:func:`set_user_folder`)."""
    return _user_folder or Path.cwd()


def relative_to_cwd(path: Path | str) -> str:
    """``path`` relative to the user's folder (:func:`user_folder`) when it lies below it, else absolute."""
    resolved = Path(path).resolve()
    try:
        return str(resolved.relative_to(user_folder().resolve()))
    except ValueError:
        return str(resolved)


def module_source(module: str, root: Path | None = None) -> Path | None:
    """The ``.py`` file of ``module``, found from ``root`` (default: the current folder) or
    ``sys.path`` without running any of its code; None when that cannot be told without importing
    (a builtin or compiled module, or a module whose attributes stand for submodules).

    Raises:
        InputError: no such module.
    """
    from importlib.machinery import PathFinder

    parts = module.split(".")
    top = parts[0]
    try:
        spec = PathFinder.find_spec(top, [str(root or Path.cwd())]) or importlib.util.find_spec(top)
    except ValueError:  # already imported without a spec (__main__)
        return None
    if spec is None:
        raise InputError(f"no module named {top!r}")
    for index in range(1, len(parts)):
        if spec.submodule_search_locations is None:
            return None
        name = ".".join(parts[: index + 1])
        spec = PathFinder.find_spec(name, list(spec.submodule_search_locations))
        if spec is None:
            raise InputError(f"no module named {name!r}")
    return Path(spec.origin) if spec.origin and spec.origin.endswith(".py") else None


def parse_python(path: Path) -> ast.Module:
    """The syntax tree of a Python file, without running it. Only a regular file of at most
    :data:`~lossaudit.io.textfiles.MAX_TEXT_BYTES` is opened (a FIFO would block, a device never end).

    Raises:
        InputError: the file cannot be read or parsed.
    """
    status = require_regular_file(path, "Python source")
    if status.st_size > MAX_TEXT_BYTES:
        raise InputError(f"{path}: {status.st_size:,} bytes is not a Python source lossaudit reads (at most {MAX_TEXT_BYTES:,})")
    try:
        return ast.parse(read_source(path), filename=str(path))
    except SyntaxError as error:
        raise InputError(f"{path}:{error.lineno}: cannot be parsed: {error.msg}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"{path}: cannot be read ({error})") from None


def read_source(path: Path | str) -> str:
    """A Python file's text, decoded as Python decodes it: by its PEP 263 coding line (``# -*-
    coding: latin-1 -*-``) or BOM, else UTF-8.

    Raises:
        OSError, UnicodeDecodeError, SyntaxError: the file cannot be read or its coding is unknown.
    """
    import tokenize

    with tokenize.open(path) as handle:
        return handle.read()


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


def definition_line(path: Path, name: str) -> int | None:
    """The line of the top-level ``def``/``class`` named ``name`` in ``path`` (None: not found).

    Raises:
        InputError: the file cannot be read or parsed.
    """
    kinds = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
    return next((node.lineno for node in parse_python(path).body if isinstance(node, kinds) and node.name == name), None)


def parse_init(items: list[str] | None, option: str = "--init") -> dict:
    """``["alpha=0.25", "reduction=sum"]`` -> ``{"alpha": 0.25, "reduction": "sum"}``.

    Values are Python literals; a bare word is taken as a string. ``option`` names the option in
    the error messages.
    """
    parsed: dict = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise InputError(f"{option} {item!r}: expected KEY=VALUE with KEY a Python identifier")
        try:
            parsed[key] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            if not value.strip().isidentifier():
                raise InputError(f"{option} {item!r}: {value!r} is not a Python literal") from None
            parsed[key] = value.strip()
    return parsed


def import_symbol(spec: TargetSpec, run: Callable[[Callable], object] = lambda load: load()) -> object:
    """Import ``spec``'s module (a file, with its folder on ``sys.path``, or a module importable
    from the user's folder or ``sys.path``) and return the symbol. ``run`` wraps the import, e.g.
    in a time limit.

    Raises:
        InputError: the file or module cannot be imported (the message as :data:`IMPORT_FAILURE`
            reads it), or lacks the symbol.
    """
    if str(user_folder()) not in sys.path:
        sys.path.insert(0, str(user_folder()))
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
            run(lambda: module_spec.loader.exec_module(module))  # type: ignore[union-attr]  # checked above
        else:
            module = cast(ModuleType, run(lambda: importlib.import_module(cast(str, spec.module))))  # a spec names a file or a module
    except (ImportError, SyntaxError) as error:
        site = _failing_import(error)
        where = f" (at {relative_to_cwd(site[0])}:{site[1]})" if site else ""
        exception = " ".join(f"{type(error).__name__}: {error}".split())
        raise InputError(f"{spec.text!r} cannot be imported: {exception}{where}") from None
    obj = module
    for part in spec.symbol.split("."):
        if not hasattr(obj, part):
            raise InputError(f"{spec.text!r}: {getattr(module, '__name__', spec.text)} has no attribute {part!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise InputError(f"{spec.text!r}: {spec.symbol} is not a class or function")
    return obj


def import_quietly(load: Callable[[], object], what: str) -> object:
    """Run ``load`` (a user module's import, for ``--arch``) so that the module cannot act as if
    it were the program: ``sys.argv`` holds no lossaudit options, what it prints is captured, and
    ``sys.exit``, ``KeyboardInterrupt`` or any exception at import becomes an
    :class:`~lossaudit.errors.InputError` naming ``what`` (with the last line it printed).
    ImportError and SyntaxError pass through for :func:`import_symbol` to locate."""
    import contextlib
    import io

    captured = io.StringIO()
    saved_argv = sys.argv
    sys.argv = [what]
    try:
        with contextlib.redirect_stdout(captured), contextlib.redirect_stderr(captured):
            return load()
    except (ImportError, SyntaxError):
        raise
    except (Exception, SystemExit, KeyboardInterrupt) as error:
        printed = [line for line in captured.getvalue().splitlines() if line.strip()]
        said = f"; it printed: {printed[-1].strip()}" if printed else ""
        detail = f": {error}" if str(error) else ""
        happened = f"called sys.exit({error.code!r})" if isinstance(error, SystemExit) else f"raised {type(error).__name__}{detail}"
        raise InputError(f"{what}: importing it {happened}{said}") from None
    finally:
        sys.argv = saved_argv


def _failing_import(error: ImportError | SyntaxError) -> tuple[str, int] | None:
    """Where an import failed: a SyntaxError's own location, else the deepest frame of the user's
    code in the traceback (None when the module itself was not found)."""
    if isinstance(error, SyntaxError) and error.filename and error.lineno:
        return error.filename, error.lineno
    frames = traceback.extract_tb(error.__traceback__)
    last_own = max((i for i, frame in enumerate(frames) if frame.filename == __file__), default=-1)
    machinery = os.path.dirname(importlib.__file__)
    user = [f for f in frames[last_own + 1 :] if not f.filename.startswith("<") and not f.filename.startswith(machinery)]
    return (user[-1].filename, cast(int, user[-1].lineno)) if user else None


def parse_import_failure(message: str) -> tuple[str, str | None, int | None]:
    """``(exception, path, line)`` from a message of :func:`import_symbol`; the whole message and no
    location when it is not an import failure (a missing attribute, say)."""
    match = IMPORT_FAILURE.search(message)
    if match is None:
        return message, None, None
    return match["exception"], match["path"], int(match["line"]) if match["line"] else None
