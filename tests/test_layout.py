"""The package's layout: no import cycle between the modules of ``lossaudit``.

The graph is read from the source (nothing is imported): a module imports another when any of its
statements names it, at module level or inside a function, class or ``try`` block, except under
``if TYPE_CHECKING:``. ``import a.b``, ``from a.b import c`` (an edge to ``a.b.c`` when it is a
module, else to ``a.b``), relative imports, and ``importlib.import_module("lossaudit...")`` with a
string literal all count. The parents of an imported module are not edges of their own: Python
initialises them first whoever imports what, and counting them would tie every package to each of
its submodules. A package's ``__init__`` that imports a submodule which imports names from the
package is a cycle like any other.
"""

from __future__ import annotations

import ast
from collections import deque
from pathlib import Path

import pytest

pytestmark = pytest.mark.torch_free  # also run without torch, on every Python (.ci/run)

PACKAGE = Path(__file__).resolve().parent.parent / "lossaudit"


def module_files(package: Path = PACKAGE) -> dict[str, Path]:
    """Dotted module name -> source file, for every ``.py`` file under ``package`` (a package is
    named by its ``__init__.py``)."""
    modules = {}
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package.parent).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def _known(name: str, modules: dict[str, Path]) -> str | None:
    """``name`` if it is a module of the package, else its longest prefix that is one (None outside)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


class _Imports(ast.NodeVisitor):
    """The modules of the package that one module imports, with the line of each import."""

    def __init__(self, module: str, is_package: bool, modules: dict[str, Path]):
        self.modules = modules
        self.package = module if is_package else module.rpartition(".")[0]
        self.found: dict[str, int] = {}

    def _add(self, name: str | None, line: int) -> None:
        target = _known(name, self.modules) if name else None
        if target is not None:
            self.found.setdefault(target, line)

    def visit_If(self, node: ast.If) -> None:
        test = node.test
        type_checking = (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")
        for child in ([] if type_checking else node.body) + node.orelse:
            self.visit(child)
        self.visit(node.test)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name, node.lineno)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = node.module or ""
        if node.level:
            anchor = self.package.split(".")[: len(self.package.split(".")) - (node.level - 1)]
            base = ".".join(anchor + ([base] if base else []))
        for alias in node.names:
            submodule = f"{base}.{alias.name}"
            self._add(submodule if submodule in self.modules else base, node.lineno)

    def visit_Call(self, node: ast.Call) -> None:
        function = node.func
        name = function.attr if isinstance(function, ast.Attribute) else function.id if isinstance(function, ast.Name) else None
        if name == "import_module" and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
            self._add(node.args[0].value, node.lineno)
        self.generic_visit(node)


def import_graph(package: Path = PACKAGE) -> dict[str, dict[str, int]]:
    """Module -> {imported module of the package: line of the first such import}."""
    modules = module_files(package)
    graph = {}
    for module, path in modules.items():
        visitor = _Imports(module, path.name == "__init__.py", modules)
        visitor.visit(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
        visitor.found.pop(module, None)
        graph[module] = visitor.found
    return graph


def reachable(graph: dict[str, dict[str, int]], start: str) -> set[str]:
    """The modules ``start`` imports, directly or not (itself only when it is on a cycle)."""
    seen: set[str] = set()
    queue = deque(graph[start])
    while queue:
        node = queue.popleft()
        if node not in seen:
            seen.add(node)
            queue.extend(graph[node])
    return seen


def strongly_connected(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components of two or more modules: each module with the modules it
    reaches that reach it back."""
    reach = {module: reachable(graph, module) for module in graph}
    components = {tuple(sorted(other for other in reach[module] if module in reach[other])) for module in graph if module in reach[module]}
    return sorted(list(component) for component in components)


def shortest_cycle(graph: dict[str, dict[str, int]], start: str, within: set[str]) -> list[str]:
    """The shortest cycle from ``start`` back to it through the modules ``within`` (breadth first)."""
    previous: dict[str, str] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for child in sorted(graph[node]):
            if child == start:
                path = [node]
                while path[-1] != start:
                    path.append(previous[path[-1]])
                return [*reversed(path), start]
            if child in within and child not in previous:
                previous[child] = node
                queue.append(child)
    raise AssertionError(f"{start} is on no cycle within {sorted(within)}")


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """One shortest cycle through each module of each strongly connected component, without
    repeats: every module on a cycle appears in one listed."""
    found: list[list[str]] = []
    for component in strongly_connected(graph):
        members, covered = set(component), set()
        for module in component:
            if module not in covered:
                cycle = shortest_cycle(graph, module, members)
                found.append(cycle)
                covered.update(cycle)
    return found


def describe(cycle: list[str], graph: dict[str, dict[str, int]]) -> str:
    """``a -> b -> a``, then where each import is (``a:12``: line 12 of module a imports the next)."""
    where = ", ".join(f"{module}:{graph[module][following]}" for module, following in zip(cycle, cycle[1:]))
    return f"{' -> '.join(cycle)}\n    imports at {where}"


def test_the_graph_reads_every_kind_of_import(tmp_path):
    """Guard on the reader itself, on a package written here: module-level, function-level,
    relative, submodule-from-package and ``import_module`` literals are edges; ``TYPE_CHECKING``
    imports and parent packages are not."""
    root = tmp_path / "lossaudit"
    (root / "sub").mkdir(parents=True)
    sources = {
        "__init__.py": "",
        "a.py": "import lossaudit.b\n",
        "b.py": "def f():\n    from . import c\n",
        "c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from lossaudit import a\nelse:\n    from lossaudit.sub import d\n",
        "sub/__init__.py": "from lossaudit.sub.d import name\n",
        "sub/d.py": "import importlib\nfrom .. import c\nfrom lossaudit.sub import name\nimportlib.import_module('lossaudit.a')\n",
    }
    for name, text in sources.items():
        (root / name).write_text(text)
    graph = {module: set(imports) for module, imports in import_graph(root).items()}
    assert graph == {
        "lossaudit": set(),
        "lossaudit.a": {"lossaudit.b"},
        "lossaudit.b": {"lossaudit.c"},
        "lossaudit.c": {"lossaudit.sub.d"},
        "lossaudit.sub": {"lossaudit.sub.d"},
        "lossaudit.sub.d": {"lossaudit.c", "lossaudit.sub", "lossaudit.a"},
    }
    found = cycles(import_graph(root))
    assert [" -> ".join(cycle) for cycle in found] == [
        "lossaudit.a -> lossaudit.b -> lossaudit.c -> lossaudit.sub.d -> lossaudit.a",
        "lossaudit.sub -> lossaudit.sub.d -> lossaudit.sub",
    ]


def test_no_import_cycles():
    graph = import_graph()
    found = cycles(graph)
    if found:
        pytest.fail(f"{len(found)} import cycles in lossaudit/:\n" + "\n".join(describe(cycle, graph) for cycle in found), pytrace=False)
