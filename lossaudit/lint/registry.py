"""How a rule group declares its rules: the :class:`Rule` text, the probes that detect them and the
source anchors that point at the offending line, gathered by one :class:`RuleGroup` per module of
:mod:`lossaudit.lint.rules`, from which :func:`build` derives the code tables.

This module imports no torch and no rule group.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from lossaudit.lint.kinds import FAMILY_BASES

if TYPE_CHECKING:
    import ast

    from lossaudit.lint.battery import Context

SEVERITIES = ("error", "warning", "info")


@dataclass(frozen=True)
class Rule:
    """A lint rule. ``fix`` is the general advice; ``fixes`` overrides it for the kinds of loss
    (:data:`~lossaudit.lint.kinds.KINDS`) whose reference calls for a different one."""

    code: str
    name: str
    severity: str
    summary: str
    explanation: str
    fix: str
    wrong: str
    right: str
    fixes: tuple[tuple[str, str], ...] = ()

    def fix_for(self, kind: str | None) -> str:
        """The fix that fits a loss of ``kind``: its own, else its base kind's
        (:data:`~lossaudit.lint.kinds.FAMILY_BASES`), else the general one."""
        fixes = dict(self.fixes)
        return fixes.get(kind) or fixes.get(FAMILY_BASES.get(kind)) or self.fix  # type: ignore[arg-type]  # None: no base kind


Predicate = Callable[["ast.AST"], bool]
ProbeFunction = Callable[["Context"], None]


class InitLine:
    """An anchor that points at the target's ``__init__`` line (else its ``def``/``class`` line)."""

    def __repr__(self) -> str:
        return "AT_INIT"


AT_INIT = InitLine()
Anchor = tuple[Predicate, ...] | InitLine


@dataclass(frozen=True)
class Probe:
    """A probe of the battery: ``step`` orders it among all groups' probes, ``codes`` are the rules
    it may fire (the note of an inconclusive probe names them), ``as_softmax`` re-runs it on a
    sigmoid target read as a softmax loss after FL003, and a ``final`` check runs after the battery,
    outside its crash handling, in the order of its step."""

    step: int
    codes: tuple[str, ...]
    run: ProbeFunction
    as_softmax: bool = False
    final: bool = False


@dataclass
class RuleGroup:
    """The rules of one module, with their probes and anchors.

    ``group.rule(Rule(...), anchor=(predicate, ...))`` declares a rule and the predicates tried in
    order over the target's functions (the first hit gives a finding's line; :data:`AT_INIT` for
    the ``__init__`` line); ``group.anchor("FL004:asl", ...)`` adds the anchor a probe names for
    one kind; ``@group.probe(step, code, ...)`` registers a probe.
    """

    name: str
    rules: list[Rule] = field(default_factory=list)
    anchors: dict[str, Anchor] = field(default_factory=dict)
    probes: list[Probe] = field(default_factory=list)

    def rule(self, rule: Rule, anchor: Anchor = ()) -> Rule:
        self.rules.append(rule)
        if anchor:
            self.anchor(rule.code, anchor)
        return rule

    def anchor(self, key: str, anchor: Anchor) -> None:
        self.anchors[key] = anchor

    def probe(self, step: int, *codes: str, as_softmax: bool = False, final: bool = False) -> Callable[[ProbeFunction], ProbeFunction]:
        def register(function: ProbeFunction) -> ProbeFunction:
            self.probes.append(Probe(step, codes, function, as_softmax=as_softmax, final=final))
            return function

        return register


@dataclass(frozen=True)
class Tables:
    """The code tables derived from every group (:func:`build`)."""

    rules: tuple[Rule, ...]
    probes: tuple[Probe, ...]
    anchors: dict[str, Anchor]

    @property
    def by_code(self) -> dict[str, Rule]:
        return {rule.code: rule for rule in self.rules}


def build(groups: tuple[RuleGroup, ...]) -> Tables:
    """The rules in code order, the probes in step order and the anchors by key; raises
    ValueError on a code or step declared twice, and on a probe or anchor of an unknown rule."""
    rules = sorted((rule for group in groups for rule in group.rules), key=lambda rule: rule.code)
    codes = [rule.code for rule in rules]
    probes = sorted((probe for group in groups for probe in group.probes), key=lambda probe: probe.step)
    steps = [probe.step for probe in probes]
    anchors = {key: anchor for group in groups for key, anchor in group.anchors.items()}
    repeated = {code for code in codes if codes.count(code) > 1} | {f"step {step}" for step in steps if steps.count(step) > 1}
    if sum(len(group.anchors) for group in groups) != len(anchors):
        repeated.add("an anchor")
    if repeated:
        raise ValueError(f"declared twice: {', '.join(sorted(repeated))}")
    unknown = {code for probe in probes for code in probe.codes if code not in codes} | {key for key in anchors if key.partition(":")[0] not in codes}
    if unknown:
        raise ValueError(f"probes or anchors of unknown rules: {', '.join(sorted(unknown))}")
    return Tables(tuple(rules), tuple(probes), anchors)
