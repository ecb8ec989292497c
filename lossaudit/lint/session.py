"""One ``lossaudit lint`` run: which targets, with which options, and what counts as failing.

Targets come from the command line (``file.py:Symbol``, ``package.module:Symbol``, or a file or
folder to discover candidates in) or, with no argument, from the configuration's
``lint.targets``. Each result is then filtered by ``--select``/``--ignore`` (and the entry's own
``ignore``) and by the suppression comment on the target's definition line.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from lossaudit.errors import InputError
from lossaudit.lint.discover import Candidate, discover
from lossaudit.lint.findings import TargetResult
from lossaudit.lint.rules import SEVERITIES, parse_codes
from lossaudit.lint.runner import AuditOptions, audit
from lossaudit.lint.suppress import apply_suppressions
from lossaudit.symbols import TargetSpec, parse_target

UNCALLABLE_PHASES = ("call", "instantiate")


@dataclass(frozen=True)
class LintSettings:
    """The options of one run after the configuration and the command line are merged."""

    audit: AuditOptions = AuditOptions()
    init: dict = field(default_factory=dict)
    select: frozenset[str] = frozenset()
    ignore: frozenset[str] = frozenset()
    fail_on: str = "error"


@dataclass(frozen=True)
class Planned:
    """A target to audit with its own options; ``candidate`` is set when it was discovered."""

    spec: TargetSpec
    options: AuditOptions
    ignore: frozenset[str] = frozenset()
    candidate: Candidate | None = None


def plan(arguments: list[str], entries: list[dict], settings: LintSettings) -> tuple[list[Planned], list[Candidate]]:
    """The targets to audit and the candidates discovered on the way."""
    planned: list[Planned] = []
    discovered: list[Candidate] = []
    if not arguments:
        if not entries:
            raise InputError("no targets: pass TARGET (file.py:Symbol, package.module:Symbol, a file or a folder) or configure [tool.lossaudit.lint] targets")
        for entry in entries:
            options = replace(
                settings.audit,
                kind=entry.get("kind", settings.audit.kind),
                inputs=entry.get("inputs", settings.audit.inputs),
                targets=entry.get("targets", settings.audit.targets),
                num_classes=entry.get("num-classes", settings.audit.num_classes),
                ignore_index=entry.get("ignore-index", settings.audit.ignore_index),
            )
            init = {**settings.init, **entry.get("init", {})}
            ignore = parse_codes(",".join(entry.get("ignore", [])), "ignore")
            planned.append(Planned(parse_target(entry["target"], init), options, ignore))
        return planned, discovered
    for argument in arguments:
        if ":" not in argument and Path(argument).exists():
            found = discover(Path(argument))
            discovered.extend(found)
            planned.extend(Planned(parse_target(c.target, settings.init), settings.audit, candidate=c) for c in found)
        else:
            planned.append(Planned(parse_target(argument, settings.init), settings.audit))
    return planned, discovered


def _finish(result: TargetResult, item: Planned, settings: LintSettings) -> TargetResult:
    ignore = settings.ignore | item.ignore
    result.findings = [f for f in result.findings if (not settings.select or f.code in settings.select) and f.code not in ignore]
    apply_suppressions(result)
    if item.candidate is not None and [f.evidence.get("phase") for f in result.findings] in ([phase] for phase in UNCALLABLE_PHASES):
        result.status = "uncallable"
        result.hint = (
            f"{result.findings[0].message}; configure it: [tool.lossaudit.lint] targets = "
            f'[{{ target = "{item.spec.text}", init = {{ ... }} }}], or lossaudit lint {item.spec.text} --init KEY=VALUE'
        )
        result.findings = []
    return result


def run(planned: list[Planned], settings: LintSettings) -> list[TargetResult]:
    return [_finish(audit(item.spec, item.options), item, settings) for item in planned]


def failed(results: list[TargetResult], fail_on: str) -> bool:
    """Whether any finding is at or above the failing severity."""
    threshold = SEVERITIES.index(fail_on)
    return any(SEVERITIES.index(f.severity) <= threshold for result in results for f in result.findings)
