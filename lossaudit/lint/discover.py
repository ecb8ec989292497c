"""Find candidate losses in files and folders by reading their AST, without importing anything.

A candidate is a public top-level class or function whose name contains 'focal' (any case), or a
public class deriving from a torch loss or ``nn.Module`` whose ``__init__`` takes ``gamma``.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

from lossaudit.errors import InputError
from lossaudit.symbols import parse_python

SKIPPED_FOLDERS = {".git", ".hg", ".venv", "venv", "env", "__pycache__", "build", "dist", "node_modules", "site-packages", ".tox", ".nox", ".eggs"}
LOSS_BASES = ("Module", "_Loss", "_WeightedLoss")


@dataclass(frozen=True)
class Candidate:
    path: Path
    symbol: str
    line: int
    reason: str

    @property
    def target(self) -> str:
        return f"{self.path}:{self.symbol}"


def _base_names(node: ast.ClassDef) -> list[str]:
    names = []
    for base in node.bases:
        while isinstance(base, ast.Attribute):
            names.append(base.attr)
            base = base.value
        if isinstance(base, ast.Name):
            names.append(base.id)
    return names


def _takes_gamma(node: ast.ClassDef) -> bool:
    init = next((item for item in node.body if isinstance(item, ast.FunctionDef) and item.name == "__init__"), None)
    if init is None:
        return False
    arguments = init.args
    return any(arg.arg == "gamma" for arg in arguments.args + arguments.kwonlyargs)


def candidates_in_file(path: Path) -> list[Candidate]:
    tree = parse_python(path)
    found = []
    for node in tree.body:
        if not isinstance(node, (ast.ClassDef, ast.FunctionDef)) or node.name.startswith("_"):
            continue
        if "focal" in node.name.lower():
            found.append(Candidate(path, node.name, node.lineno, "name contains 'focal'"))
        elif isinstance(node, ast.ClassDef) and _takes_gamma(node):
            bases = _base_names(node)
            if any(base in LOSS_BASES or base.endswith("Loss") for base in bases):
                found.append(Candidate(path, node.name, node.lineno, f"a {bases[0]} whose __init__ takes gamma"))
    return found


def discover(path: Path) -> list[Candidate]:
    """Candidates in a file, or in every ``.py`` file below a folder (skipping virtual
    environments, build output and hidden folders), in path order."""
    if path.is_file():
        return candidates_in_file(path)
    if not path.is_dir():
        raise InputError(f"{path}: no such file or folder")
    found = []
    for file in sorted(path.rglob("*.py")):
        relative = file.relative_to(path).parts[:-1]
        if any(part in SKIPPED_FOLDERS or part.startswith(".") for part in relative):
            continue
        found.extend(candidates_in_file(file))
    return found
