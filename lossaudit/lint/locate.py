"""Point a finding at a line of the user's source: the offending operation found in the AST of the
target (its ``forward``/``__call__`` first, then its other methods and the module-level helpers it
calls), else the ``def``/``class`` line. What marks the offending operation of each rule is its
anchor, declared beside the rule (:data:`lossaudit.lint.rules.ANCHORS`)."""

from __future__ import annotations

import ast
import inspect
import os
import traceback
from pathlib import Path
from typing import Any

from lossaudit.io.symbols import read_source, user_folder
from lossaudit.lint.anchors import name_of
from lossaudit.lint.registry import InitLine
from lossaudit.lint.rules import ANCHORS


class Locator:
    """Finds source lines for findings on one target object."""

    def __init__(self, obj: Any):
        self.path: str | None = None
        self.def_line: int | None = None
        self.init_line: int | None = None
        self.functions: list[ast.AST] = []
        self.absolute: str | None = None
        try:
            source_file = inspect.getsourcefile(obj)
            lines, start = inspect.getsourcelines(obj)
        except (TypeError, OSError):
            return
        assert source_file is not None  # getsourcelines found the source
        self.absolute = os.path.realpath(source_file)
        self.path = _relative(source_file)
        self.def_line = start
        try:
            module_tree = ast.parse(read_source(source_file))
        except (OSError, SyntaxError, UnicodeDecodeError):
            return
        node = next(
            (
                n
                for n in ast.walk(module_tree)
                if isinstance(n, (ast.FunctionDef, ast.ClassDef))
                and n.lineno <= start <= getattr(n, "end_lineno", n.lineno)
                and n.name == getattr(obj, "__name__", None)
            ),
            None,
        )
        if node is None:
            return
        self.def_line = node.lineno
        if isinstance(node, ast.ClassDef):
            methods = [m for m in node.body if isinstance(m, ast.FunctionDef)]
            methods.sort(key=lambda m: m.name not in ("forward", "__call__"))
            init = next((m for m in methods if m.name == "__init__"), None)
            self.init_line = init.lineno if init else None
            self.functions = [m for m in methods if m.name != "__init__"]
        else:
            self.functions = [node]
        helpers = {n.name: n for n in module_tree.body if isinstance(n, ast.FunctionDef)}
        called = {name_of(c) for f in self.functions for c in ast.walk(f) if isinstance(c, ast.Call)}
        self.functions += [helpers[name] for name in sorted(called) if name in helpers and helpers[name] is not node]

    def find(self, code: str) -> tuple[str | None, int | None]:
        """(path, line) of the operation behind ``code`` (a rule code, or ``rule:kind`` where a
        kind's defect sits elsewhere), else the def/class line."""
        anchor = ANCHORS.get(code, ())
        if isinstance(anchor, InitLine):
            return self.path, self.init_line or self.def_line
        for predicate in anchor:
            for function in self.functions:
                hits = sorted((n.lineno for n in ast.walk(function) if hasattr(n, "lineno") and predicate(n)))
                if hits:
                    return self.path, hits[0]
        return self.path, self.def_line

    def rearranges_inputs(self) -> bool | None:
        """Whether the target's code changes the layout of its input (the first parameter of a
        function, the one after ``self`` of a method): reshapes, flattens, permutes or transposes
        it, or asks its number of dimensions. None when there is no source to read."""
        if not self.functions:
            return None
        for function in self.functions:
            parameters = [a.arg for a in function.args.args if a.arg not in ("self", "cls")] if isinstance(function, ast.FunctionDef) else []
            if parameters and any(_rearranges(node, parameters[0]) for node in ast.walk(function)):
                return True
        return False

    def from_traceback(self, tb) -> tuple[str | None, int | None]:
        """The deepest frame of a traceback that lies in the target's file, else the def line."""
        if self.absolute is not None:
            for frame in reversed(traceback.extract_tb(tb)):
                if os.path.realpath(frame.filename) == self.absolute:
                    return self.path, frame.lineno
        return self.path, self.def_line


LAYOUT_CALLS = ("view", "reshape", "flatten", "permute", "movedim", "moveaxis", "transpose", "rearrange", "dim", "ndimension")
"""Calls on (or of) an input that show the code handles more than one layout."""


def _rearranges(node: ast.AST, name: str) -> bool:
    """``name.view(...)``, ``torch.flatten(name, ...)``, ``rearrange(name, ...)``, ``name.dim()`` or ``name.ndim``."""

    def is_input(expression: ast.AST | None) -> bool:
        return isinstance(expression, ast.Name) and expression.id == name

    if isinstance(node, ast.Attribute) and node.attr == "ndim":
        return is_input(node.value)
    if not (isinstance(node, ast.Call) and name_of(node) in LAYOUT_CALLS):
        return False
    receiver = node.func.value if isinstance(node.func, ast.Attribute) else None
    return is_input(receiver) or bool(node.args) and is_input(node.args[0])


def _relative(path: str) -> str:
    try:
        return str(Path(path).resolve().relative_to(user_folder().resolve()))
    except ValueError:
        return path
