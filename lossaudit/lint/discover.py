"""Find candidate losses in files and folders by reading their AST, without importing anything.

A candidate is a public top-level class or function (see :data:`LOOKED_FOR`):

- whose name names a loss lint has a kind for (:func:`_named_loss`): it contains 'focal' (any
  case: varifocal and quality focal included), or 'asymmetric' and 'loss' (ASL), or 'label
  smoothing' (label-smoothing CE), or has the word ASL, QFL or VFL (``ASLLoss``, ``qfl_loss``);
- a function that takes ``gamma`` after its first two parameters (it is called as
  ``fn(inputs, targets, **init)``, so a ``gamma`` among those two is not a loss's) and either
  raises something to the power ``gamma`` or calls a focal reference (so a command-line
  function that merely passes a ``gamma`` option on is not one);
- a class deriving from a torch loss or ``nn.Module`` whose ``__init__`` takes ``gamma``;
- a class whose ``forward`` or ``__call__`` calls a focal reference (a call whose name contains
  'focal': ``sigmoid_focal_loss(...)``, ``F.focal_loss(...)``, ``kornia.losses.focal_loss(...)``).

pytest code is not a candidate: ``test_*`` functions, ``Test*`` classes, ``conftest.py`` and the
folders named ``tests``/``test`` below the path given. Exclusion globs are matched against each
file's and folder's path relative to the path given, and against its name.
"""

from __future__ import annotations

import ast
import os
import re
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path

from lossaudit.errors import InputError
from lossaudit.io.symbols import parse_python
from lossaudit.lint.kinds import FAMILY_WORDS, FOCAL_CALL, NAME_SIGNS

SKIPPED_FOLDERS = {".git", ".hg", ".venv", "venv", "env", "__pycache__", "build", "dist", "node_modules", "site-packages", ".tox", ".nox", ".eggs", "tests", "test"}
SKIPPED_FILES = {"conftest.py"}
LOSS_BASES = ("Module", "_Loss", "_WeightedLoss")
CALL_METHODS = ("forward", "__call__")
LOOKED_FOR = (
    "public top-level classes and functions named *focal*, *asymmetric*loss*, *label*smoothing* or with the word "
    "ASL, QFL or VFL, functions taking gamma after (inputs, targets) that raise to "
    "its power or call a focal loss, loss classes whose __init__ takes gamma, and classes whose forward calls a focal loss "
    "(skipping test_*, Test*, conftest.py, tests/, test/, hidden, virtual-environment and build folders, and exclude globs)"
)


@dataclass(frozen=True)
class Candidate:
    path: Path
    symbol: str
    line: int
    reason: str

    @property
    def target(self) -> str:
        return f"{self.path}:{self.symbol}"


@dataclass
class Discovery:
    """What one path yielded: the candidates, and one line per file that could not be parsed
    (skipped, so one broken file does not stop the run)."""

    candidates: list[Candidate] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)


def _base_names(node: ast.ClassDef) -> list[str]:
    names = []
    for base in node.bases:
        while isinstance(base, ast.Attribute):
            names.append(base.attr)
            base = base.value
        if isinstance(base, ast.Name):
            names.append(base.id)
    return names


def _method(node: ast.ClassDef, name: str) -> ast.FunctionDef | None:
    return next((item for item in node.body if isinstance(item, ast.FunctionDef) and item.name == name), None)


def _takes_gamma(function: ast.FunctionDef, skip: int = 0) -> bool:
    """Whether ``function`` has a ``gamma`` parameter after its first ``skip`` positional ones."""
    arguments = function.args
    positional = arguments.posonlyargs + arguments.args
    return any(arg.arg == "gamma" for arg in positional[skip:] + arguments.kwonlyargs)


def _mentions_gamma(node: ast.AST) -> bool:
    return any(isinstance(n, ast.Name) and n.id == "gamma" or isinstance(n, ast.Attribute) and n.attr == "gamma" for n in ast.walk(node))


def _gamma_exponent(function: ast.FunctionDef) -> bool:
    """Whether ``function`` raises something to a power built from ``gamma`` (``** gamma``,
    ``.pow(gamma)``, ``torch.pow(x, gamma)``)."""
    for node in ast.walk(function):
        if isinstance(node, (ast.BinOp, ast.AugAssign)) and isinstance(node.op, ast.Pow) and _mentions_gamma(node.right if isinstance(node, ast.BinOp) else node.value):
            return True
        if isinstance(node, ast.Call) and _callee(node) in ("pow", "pow_", "float_power") and any(map(_mentions_gamma, node.args)):
            return True
    return False


def _callee(call: ast.Call) -> str:
    """The last name of what ``call`` calls: ``F.focal_loss(...)`` -> ``focal_loss``."""
    func = call.func
    return func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""


def _focal_call(function: ast.FunctionDef) -> str | None:
    """What ``function`` calls first whose name contains 'focal' (``F.focal_loss``), if anything."""
    calls = [item for item in ast.walk(function) if isinstance(item, ast.Call)]
    focal = next((call for call in calls if fnmatchcase(_callee(call).lower(), FOCAL_CALL)), None)
    return ast.unparse(focal.func) if focal is not None else None


def _named_loss(name: str) -> str | None:
    """The reason ``name`` names a focal-family loss, or None: it matches a
    :data:`~lossaudit.lint.kinds.NAME_SIGNS` entry (contains 'focal', 'asymmetric' with 'loss', or
    'label smoothing' with words joined, any case), or has a word of
    :data:`~lossaudit.lint.kinds.FAMILY_WORDS` (words split at underscores and at case changes:
    ``ASLLoss`` is ASL, Loss)."""
    words = {word.lower() for word in re.findall(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+", name)}
    sign = next((sign for sign in NAME_SIGNS if sign.matches(name)), None)
    if sign is not None:
        return sign.reason
    word = next((word for word in sorted(words & FAMILY_WORDS)), None)
    return f"name has the word {word.upper()}" if word else None


def _function_reason(node: ast.FunctionDef) -> str | None:
    if node.name.startswith("test_"):
        return None
    named = _named_loss(node.name)
    if named:
        return named
    if not _takes_gamma(node, skip=2):
        return None
    if _gamma_exponent(node):
        return "a function raising to the power gamma"
    callee = _focal_call(node)
    return f"a function taking gamma that calls {callee}" if callee else None


def _class_reason(node: ast.ClassDef) -> str | None:
    if node.name.startswith("Test"):
        return None
    named = _named_loss(node.name)
    if named:
        return named
    init = _method(node, "__init__")
    bases = _base_names(node)
    if init is not None and _takes_gamma(init) and any(base in LOSS_BASES or base.endswith("Loss") for base in bases):
        return f"a {bases[0]} whose __init__ takes gamma"
    for name in CALL_METHODS:
        method = _method(node, name)
        callee = _focal_call(method) if method else None
        if callee:
            return f"its {name} calls {callee}"
    return None


def candidates_in_file(path: Path) -> list[Candidate]:
    """The candidates defined at the top level of one file.

    Raises:
        InputError: the file cannot be read or parsed.
    """
    found = []
    for node in parse_python(path).body:
        if isinstance(node, ast.FunctionDef) and not node.name.startswith("_"):
            reason = _function_reason(node)
        elif isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
            reason = _class_reason(node)
        else:
            continue
        if reason:
            found.append(Candidate(path, node.name, node.lineno, reason))
    return found


def excluded(relative: str, patterns: tuple[str, ...]) -> bool:
    """Whether a glob matches ``relative`` (a path below the discovery root, '/'-separated) or its
    last part; a pattern's trailing '/' is ignored."""
    name = relative.rpartition("/")[2]
    return any(fnmatchcase(text, pattern.rstrip("/")) for pattern in patterns for text in (relative, name))


def python_files(folder: Path, exclude: tuple[str, ...] = ()) -> list[Path]:
    """The ``.py`` files below ``folder``, sorted, without descending into skipped or excluded
    folders (virtual environments, build output, hidden folders, tests)."""
    files = []
    for current, folders, names in os.walk(folder):
        base = Path(current).relative_to(folder).as_posix()
        prefix = "" if base == "." else f"{base}/"
        folders[:] = [
            name for name in folders
            if name not in SKIPPED_FOLDERS and not name.startswith(".") and not excluded(prefix + name, exclude)
        ]
        files += [
            Path(current, name) for name in names
            if name.endswith(".py") and name not in SKIPPED_FILES and not excluded(prefix + name, exclude)
        ]
    return sorted(files)


def discover(path: Path, exclude: tuple[str, ...] = ()) -> Discovery:
    """Candidates in a file, or in every ``.py`` file below a folder, in path order.

    The skips and ``exclude`` apply to what is found below a folder; a file named explicitly is
    read whatever its name (its ``test_*``/``Test*`` definitions are still skipped).
    """
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    discovery = Discovery()
    for file in [path] if path.is_file() else python_files(path, exclude):
        try:
            discovery.candidates += candidates_in_file(file)
        except InputError as error:
            discovery.unreadable.append(f"{error}; skipped")
    return discovery
