"""Building blocks of the source anchors: predicates over the AST of a target that a rule group
combines into the anchors of its rules (:class:`~lossaudit.lint.registry.RuleGroup`), and
:class:`~lossaudit.lint.locate.Locator` tries in order to point a finding at a line."""

from __future__ import annotations

import ast

from lossaudit.lint.registry import Predicate


def name_of(node: ast.AST) -> str:
    """The last name of a call's function or an expression: ``torch.nn.functional.softmax`` -> ``softmax``."""
    if isinstance(node, ast.Call):
        node = node.func
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Name):
        return node.id
    return ""


def mentions(node: ast.AST, word: str) -> bool:
    """Whether a name or attribute below ``node`` contains ``word`` (lower case)."""
    return any(word in name_of(child).lower() for child in ast.walk(node) if isinstance(child, (ast.Name, ast.Attribute)))


def calls(*names: str) -> Predicate:
    """A call of a function or method whose last name is one of ``names``."""
    return lambda node: isinstance(node, ast.Call) and name_of(node) in names


def product_mentioning(word: str) -> Predicate:
    """A multiplication with an operand that mentions ``word``: ``alpha * loss``, ``loss * self.weight``."""
    return lambda node: isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mult) and (mentions(node.left, word) or mentions(node.right, word))


def power(node: ast.AST) -> bool:
    """``a ** b`` or a ``pow`` call."""
    return isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow) or calls("pow")(node)
