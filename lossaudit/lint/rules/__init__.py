"""The lint rules, one module per group of rules: each holds its rules' text (code, name,
severity, summary, explanation, fix, a wrong and a right example), the probes that detect them and
the anchors that point a finding at the offending line, declared on its
:class:`~lossaudit.lint.registry.RuleGroup`. This package gathers the groups into the code tables.

Codes and names are a public interface: never renumber or rename. Importing this package imports
no torch (the probes import it when they run), so ``lossaudit rules`` stays fast.

Adding a rule touches its group's module only; adding a group, that module and :data:`GROUPS`.
"""

from __future__ import annotations

from lossaudit.lint.kinds import FAMILY_BASES, KINDS, NO_ALPHA, VFL_ALPHA
from lossaudit.lint.registry import SEVERITIES, Probe, Rule, build
from lossaudit.lint.rules import (
    alpha,
    arguments,
    conventions,
    focusing,
    gradient,
    hygiene,
    ignore,
    matching,
    shapes,
    structure,
    weights,
)

__all__ = [
    "ANCHORS",
    "FAMILY_BASES",
    "FINAL_CHECKS",
    "GROUPS",
    "KINDS",
    "NO_ALPHA",
    "PROBES",
    "RULES",
    "RULES_BY_CODE",
    "SECONDARY_PROBES",
    "SEVERITIES",
    "VFL_ALPHA",
    "Rule",
    "parse_codes",
]

GROUPS = (
    alpha.group,
    arguments.group,
    focusing.group,
    structure.group,
    weights.group,
    gradient.group,
    ignore.group,
    hygiene.group,
    conventions.group,
    matching.group,
    shapes.group,
)
"""Every rule group; the order does not matter (rules sort by code, probes by step)."""

_TABLES = build(GROUPS)
RULES: tuple[Rule, ...] = _TABLES.rules
"""Every rule, in code order."""
RULES_BY_CODE = _TABLES.by_code
ANCHORS = _TABLES.anchors
"""Per rule (or ``rule:kind`` where a kind's defect sits elsewhere), the predicates tried in order
over the target's functions (the first hit gives the line), or the ``__init__`` line."""
PROBES: tuple[Probe, ...] = tuple(probe for probe in _TABLES.probes if not probe.final)
"""The battery in order: batch shapes first (a crash there explains later crashes), then coupling,
since per-element probes are skipped for coupled losses."""
SECONDARY_PROBES: tuple[Probe, ...] = tuple(probe for probe in PROBES if probe.as_softmax)
"""The formula probes re-run on a sigmoid target found to be a softmax (FL003), read as a softmax
loss, so its other defects are reported too."""
FINAL_CHECKS: tuple[Probe, ...] = tuple(probe for probe in _TABLES.probes if probe.final)
"""What runs after the battery, from what calibration found and what the findings explain."""


def parse_codes(text: str | None, option: str) -> frozenset[str]:
    """``"FL001,FL019"`` -> the codes; a prefix like ``FL01`` selects FL010..FL019."""
    if not text:
        return frozenset()
    from lossaudit.errors import InputError

    codes: set[str] = set()
    for item in (part.strip().upper() for part in text.split(",")):
        if not item:
            continue
        matched = {code for code in RULES_BY_CODE if code.startswith(item)}
        if not matched:
            raise InputError(f"{option}: unknown rule code {item}; `lossaudit rules` lists them")
        codes |= matched
    return frozenset(codes)
