"""Point a finding at a line of the user's source: the offending operation found in the AST of the
target (its ``forward``/``__call__`` first, then its other methods and the module-level helpers it
calls), else the ``def``/``class`` line."""

from __future__ import annotations

import ast
import inspect
import os
import traceback
from pathlib import Path
from typing import Callable

from lossaudit.io.symbols import read_source

Predicate = Callable[[ast.AST], bool]


def _name(node: ast.AST) -> str:
    """The last name of a call's function or an expression: ``torch.nn.functional.softmax`` -> ``softmax``."""
    if isinstance(node, ast.Call):
        node = node.func
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Name):
        return node.id
    return ""


def _mentions(node: ast.AST, word: str) -> bool:
    return any(word in _name(child).lower() for child in ast.walk(node) if isinstance(child, (ast.Name, ast.Attribute)))


def _calls(*names: str) -> Predicate:
    return lambda node: isinstance(node, ast.Call) and _name(node) in names


def _alpha_product(node: ast.AST) -> bool:
    return isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mult) and (_mentions(node.left, "alpha") or _mentions(node.right, "alpha"))


def _alpha_index(node: ast.AST) -> bool:
    return isinstance(node, ast.Subscript) and _mentions(node.value, "alpha") or _alpha_product(node)


def _alpha_assignment(node: ast.AST) -> bool:
    return isinstance(node, ast.Assign) and any(_mentions(target, "alpha") for target in node.targets)


def _power(node: ast.AST) -> bool:
    return isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow) or _calls("pow")(node)


def _literal_power(node: ast.AST) -> bool:
    return isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow) and isinstance(node.right, ast.Constant)


def _log_of_squash(node: ast.AST) -> bool:
    return _calls("log")(node) and any(_calls("sigmoid", "softmax")(arg) or any(_calls("sigmoid", "softmax")(n) for n in ast.walk(arg)) for arg in node.args)


def _detached(node: ast.AST) -> bool:
    return _calls("detach", "no_grad")(node) or isinstance(node, ast.Attribute) and node.attr == "data"


def _in_place(node: ast.AST) -> bool:
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        return node.func.attr.endswith("_") and not node.func.attr.startswith("_")
    if isinstance(node, (ast.Assign, ast.AugAssign)):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        return any(isinstance(t, ast.Subscript) for t in targets) or isinstance(node, ast.AugAssign) and isinstance(node.target, ast.Name)
    return False


def _self_assignment(node: ast.AST) -> bool:
    if isinstance(node, (ast.Assign, ast.AugAssign)):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        return any(isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and t.value.id == "self" for t in targets)
    return False


def _tiny_or_huge_constant(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and isinstance(node.value, float) and node.value != 0 and (abs(node.value) < 1e-7 or abs(node.value) > 6e4)


GRAD_SWITCHES = ("set_grad_enabled", "_set_grad_enabled", "no_grad", "enable_grad", "inference_mode")
MASK_WORDS = ("keep", "mask", "valid", "ignore")


def _bare_grad_switch(node: ast.AST) -> bool:
    """A grad-mode switch that no ``with`` restores: ``torch.set_grad_enabled(True)`` as a
    statement, or ``torch.no_grad().__enter__()``."""
    if not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Call)):
        return False
    call = node.value
    if _name(call) in ("set_grad_enabled", "_set_grad_enabled"):
        return True
    return _name(call) == "__enter__" and isinstance(call.func, ast.Attribute) and _calls(*GRAD_SWITCHES)(call.func.value)


def _mask_product(node: ast.AST) -> bool:
    """A multiplication by a mask: ``loss * keep``, ``loss * mask.float()`` (``*=`` too)."""
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mult):
        operands = (node.left, node.right)
    elif isinstance(node, ast.AugAssign) and isinstance(node.op, ast.Mult):
        operands = (node.value,)
    else:
        return False
    return any(_mentions(operand, word) for operand in operands for word in MASK_WORDS)


def _clip_assignment(node: ast.AST) -> bool:
    """An assignment whose value uses ASL's probability shift: ``xs_neg = (xs_neg + self.clip)...``."""
    return isinstance(node, ast.Assign) and _mentions(node.value, "clip")


def _weight_product(node: ast.AST) -> bool:
    """A multiplication by a class weight: ``weight[target] * loss``, ``loss * self.class_weight``."""
    return isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mult) and (_mentions(node.left, "weight") or _mentions(node.right, "weight"))


LOCATORS: dict[str, tuple[Predicate, ...]] = {
    "FL001": (_alpha_product,),
    "FL002": (_alpha_product,),
    "FL003": (_calls("softmax", "log_softmax", "cross_entropy", "CrossEntropyLoss", "nll_loss"),),
    "FL004": (_power,),
    "FL004:asl": (_clip_assignment, _power),
    "FL005": (_literal_power, _power),
    "FL006": (_calls("clamp", "clip", "clamp_", "clamp_min", "clamp_max", "clip_"),),
    "FL007": (_log_of_squash, _calls("log")),
    "FL008": (_calls("exp"), _calls("mean")),
    "FL009": (_detached,),
    "FL010": (_alpha_index,),
    "FL020": (_alpha_assignment, _alpha_index),
    "FL011": (_calls("one_hot", "gather", "scatter", "scatter_"),),
    "FL012": (_in_place,),
    "FL013": (_self_assignment,),
    "FL016": (_calls("sigmoid", "softmax", "binary_cross_entropy_with_logits"),),
    "FL017": (_tiny_or_huge_constant,),
    "FL018": (lambda node: isinstance(node, ast.Return),),
    "FL021": (_bare_grad_switch, _calls(*GRAD_SWITCHES)),
    "FL022": (_mask_product,),
    "FL023": (_calls("exp"),),
    "FL024": (_weight_product, _calls("where")),
}
"""Per rule (or ``rule:kind`` where a kind's defect sits elsewhere), predicates tried in order over
the target's functions; the first hit gives the line."""


class Locator:
    """Finds source lines for findings on one target object."""

    def __init__(self, obj: object):
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
        self.absolute = os.path.realpath(source_file)
        self.path = _relative(source_file)
        self.def_line = start
        try:
            module_tree = ast.parse(read_source(source_file))
        except (OSError, SyntaxError, UnicodeDecodeError):
            return
        node = next((n for n in ast.walk(module_tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and n.lineno <= start <= getattr(n, "end_lineno", n.lineno) and n.name == getattr(obj, "__name__", None)), None)
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
        called = {_name(c) for f in self.functions for c in ast.walk(f) if isinstance(c, ast.Call)}
        self.functions += [helpers[name] for name in sorted(called) if name in helpers and helpers[name] is not node]

    def find(self, code: str) -> tuple[str | None, int | None]:
        """(path, line) of the operation behind ``code``, else the def/class line."""
        if code == "FL019":
            return self.path, self.init_line or self.def_line
        for predicate in LOCATORS.get(code, ()):
            for function in self.functions:
                hits = sorted((n.lineno for n in ast.walk(function) if hasattr(n, "lineno") and predicate(n)))
                if hits:
                    return self.path, hits[0]
        return self.path, self.def_line

    def from_traceback(self, tb) -> tuple[str | None, int | None]:
        """The deepest frame of a traceback that lies in the target's file, else the def line."""
        if self.absolute is not None:
            for frame in reversed(traceback.extract_tb(tb)):
                if os.path.realpath(frame.filename) == self.absolute:
                    return self.path, frame.lineno
        return self.path, self.def_line


def _relative(path: str) -> str:
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return path
