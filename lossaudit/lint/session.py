"""One ``lossaudit lint`` run: which targets, with which options, and what counts as failing.

Targets come from the command line (``file.py:Symbol``, ``package.module:Symbol``, or a file or
folder to discover candidates in) or, with no argument, from the configuration's
``lint.targets``. Each result is then filtered by ``--select``/``--ignore`` (and the entry's own
``ignore``) and by the suppression comment on the target's definition line.

A target's ``status`` says whether it was audited:

- ``audited``: its findings are the audit's;
- ``uncallable``: a discovered candidate whose signature lossaudit cannot satisfy (a constructor or
  function that needs arguments); ``hint`` says how to configure it. Any other failure of a
  discovered candidate on valid input (a crash, a hang, ``sys.exit``) is FL015, as for a named one;
- ``error``: a target that cannot be imported (or, named on the command line, not found);
  ``hint`` is the exception in one line, ``message`` the line printed on stderr and ``location``
  the failing import. It fails the run: exit 1 for a discovered candidate, exit 2 for a named
  target (:func:`stopping_errors`), in either case after every other target was audited and the
  report, with this result in it, was written.
- ``skipped``: suppressed entirely by a bare ``# lossaudit: ignore`` in its definition's header, or a
  discovered candidate whose signature does not fit a loss (``skipped: not a loss signature: ...``,
  read from its AST by :func:`lossaudit.lint.discover.not_a_loss`), and so neither imported nor run.

An audited target's ``unchecked`` lists the checks that could not run on it (filled by the battery;
read from its ``not checked`` notes where the battery left it empty). They are shown in every
format; with ``--require-checks`` (``require-checks = true``) each one fails the run (exit 1).
"""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import cast

from lossaudit.errors import InputError, require_torch
from lossaudit.io.symbols import (
    TargetSpec,
    definition_line,
    module_source,
    parse_import_failure,
    parse_target,
    relative_to_cwd,
)
from lossaudit.lint.discover import LOOKED_FOR, Candidate, discover
from lossaudit.lint.findings import Finding, TargetResult, fill_unchecked, filter_unchecked
from lossaudit.lint.forkserver import ForkServers
from lossaudit.lint.rules import SEVERITIES, parse_codes
from lossaudit.lint.runner import AuditOptions, audit, default_jobs
from lossaudit.lint.suppress import apply_suppressions, silenced

UNCALLABLE_PHASES = ("call", "instantiate")
SIGNATURE_ERROR = re.compile(
    r"(?P<function>[\w.]+)\(\) (?:missing \d+ required|got an unexpected keyword argument|got multiple values for argument"
    r"|takes (?:from \d+ to )?\d+ positional arguments? but \d+ (?:was|were) given|takes no arguments)"
)
"""The TypeError Python raises when a call's arguments do not fit the callee's signature."""
ENTRY_POINTS = ("__init__", "__new__", "forward", "__call__")
SILENCED_HINT = "suppressed by '# lossaudit: ignore' in its definition's header; not imported or run"


@dataclass(frozen=True)
class LintSettings:
    """The options of one run after the configuration and the command line are merged.
    ``exclude``: discovery globs; ``jobs``: audits at once (None: one per core)."""

    audit: AuditOptions = AuditOptions()
    init: dict = field(default_factory=dict)
    select: frozenset[str] = frozenset()
    ignore: frozenset[str] = frozenset()
    fail_on: str = "error"
    exclude: tuple[str, ...] = ()
    jobs: int | None = None
    require_checks: bool = False


@dataclass(frozen=True)
class Planned:
    """A target to audit with its own options; ``candidate`` is set when it was discovered;
    ``failure`` is the message of a named target that cannot even be resolved (no such file or
    symbol), which becomes its ``error`` result."""

    spec: TargetSpec
    options: AuditOptions
    ignore: frozenset[str] = frozenset()
    candidate: Candidate | None = None
    failure: str = ""


@dataclass
class Plan:
    """The targets to audit, the candidates discovered on the way, and one-line notices for
    stderr (files discovery could not parse, paths that yielded nothing)."""

    targets: list[Planned] = field(default_factory=list)
    discovered: list[Candidate] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)


def plan(arguments: list[str], entries: list[dict], settings: LintSettings) -> Plan:
    """The targets of the command line, else of the configuration's entries."""
    if not arguments:
        if not entries:
            raise InputError("no targets: pass TARGET (file.py:Symbol, package.module:Symbol, a file or a folder) or configure [tool.lossaudit.lint] targets")
        return Plan(targets=[_configured(entry, settings) for entry in entries])
    result, searched = Plan(), []
    for argument in arguments:
        if ":" not in argument and Path(argument).exists():
            found = discover(Path(argument), settings.exclude)
            searched.append(argument)
            result.discovered += found.found
            result.notices += found.unreadable
            result.targets += [_discovered(c, settings) for c in found.found]
        else:
            result.targets.append(_named(argument, settings))
    if searched and not result.discovered:
        result.notices.append(f"no candidates in {', '.join(searched)}; looked for {LOOKED_FOR}")
    return result


def _discovered(candidate: Candidate, settings: LintSettings) -> Planned:
    """A discovered candidate; one skipped for its signature is not parsed as a target (its
    symbol need not be importable)."""
    if candidate.skip:
        return Planned(TargetSpec(text=candidate.target, symbol=candidate.symbol, file=candidate.path), settings.audit, candidate=candidate)
    return Planned(parse_target(candidate.target, settings.init), settings.audit, candidate=candidate)


def _named(argument: str, settings: LintSettings) -> Planned:
    """A target named on the command line; one that cannot be resolved (no such file, symbol or
    module name) is planned with its ``failure``, so that every format still reports it."""
    try:
        return Planned(parse_target(argument, settings.init), settings.audit)
    except InputError as error:
        return Planned(TargetSpec(text=argument, symbol=argument.rpartition(":")[2]), settings.audit, failure=str(error))


def _configured(entry: dict, settings: LintSettings) -> Planned:
    """A configuration entry with its own options over the run's; a module target resolves from
    the configuration's folder (``root``)."""
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
    return Planned(parse_target(entry["target"], init, root=entry.get("root")), options, ignore)


def _definition(item: Planned) -> tuple[Path, int] | None:
    """Where the target is defined, read without importing (None when that cannot be told)."""
    if item.failure:
        return None
    if item.candidate is not None:
        return item.candidate.path, item.candidate.line
    try:
        path = item.spec.file or module_source(cast(str, item.spec.module), item.spec.root)  # a spec names a file or a module
        line = definition_line(path, item.spec.symbol.split(".")[0]) if path else None
    except InputError:  # left to the import, which says why
        return None
    return (cast(Path, path), line) if line else None


def _signature_mismatch(finding: Finding, symbol: str) -> bool:
    """Whether an FL015 says the target cannot be called with what lossaudit supplies (its own
    constructor or call rejects the arguments) rather than that it failed while running."""
    if finding.code != "FL015" or finding.evidence.get("phase") not in UNCALLABLE_PHASES or finding.evidence.get("exception") != "TypeError":
        return False
    match = SIGNATURE_ERROR.search(finding.message)
    return match is not None and match["function"].rpartition(".")[2] in (*ENTRY_POINTS, symbol.rpartition(".")[2])


def _uncallable(result: TargetResult, item: Planned) -> TargetResult:
    result.status = "uncallable"
    result.hint = (
        f"{result.findings[0].message}; configure it: [tool.lossaudit.lint] targets = "
        f'[{{ target = "{item.spec.text}", init = {{ ... }} }}], or lossaudit lint {item.spec.text} --init KEY=VALUE'
    )
    result.findings = []
    return result


def _finish(result: TargetResult, item: Planned, settings: LintSettings, definition: dict) -> TargetResult:
    """Classify, filter and suppress an audit's result; ``definition`` (``{"path", "line"}``) is
    its location when the child could not report one (it died). The checks that could not run
    are read from the notes when the battery did not list them, and filtered like the findings."""
    result.location = result.location or definition
    if item.candidate is not None and len(result.findings) == 1 and _signature_mismatch(result.findings[0], item.spec.symbol):
        return _uncallable(result, item)
    fill_unchecked(result)
    ignore = settings.ignore | item.ignore
    result.findings = [f for f in result.findings if (not settings.select or f.code in settings.select) and f.code not in ignore]
    filter_unchecked(result, lambda code: (not settings.select or code in settings.select) and code not in ignore)
    apply_suppressions(result)
    return result


def _not_imported(item: Planned, error: InputError, definition: dict) -> TargetResult:
    """The result of a target that cannot be imported, located at the failing import (else at its
    ``definition``); ``message`` is the error's line."""
    exception, path, line = parse_import_failure(str(error))
    for prefix in (f"target {item.spec.text!r}: ", f"{item.spec.text!r}: "):  # the target is named beside it
        exception = exception.removeprefix(prefix)
    location = {"path": path, "line": line} if path else definition
    return TargetResult(target=item.spec.text, status="error", hint=exception, location=location, message=" ".join(str(error).split()))


def _result(item: Planned, settings: LintSettings, servers: ForkServers | None = None) -> TargetResult:
    """One target's result: an error for a named target that cannot be resolved, skipped when
    silenced or not a loss by its signature, else audited in its child process."""
    if item.failure:
        return _not_imported(item, InputError(item.failure), {})
    found = _definition(item)
    definition = {"path": relative_to_cwd(found[0]), "line": found[1]} if found else {}
    if found is not None and silenced(*found):
        return TargetResult(target=item.spec.text, status="skipped", hint=SILENCED_HINT, location=definition)
    if item.candidate is not None and item.candidate.skip:
        return TargetResult(target=item.spec.text, status="skipped", hint=item.candidate.skip + "; not imported or run", location=definition)
    try:
        return _finish(audit(item.spec, item.options, servers), item, settings, definition)
    except InputError as error:
        return _not_imported(item, error, definition)


def stopping_errors(planned: list[Planned], results: list[TargetResult]) -> list[str]:
    """The messages of the named targets (not discovered ones) that could not be imported or
    found: each makes the run exit 2, after its report was written."""
    return [result.message or result.hint for item, result in zip(planned, results) if item.candidate is None and result.status == "error"]


def run(planned: list[Planned], settings: LintSettings) -> list[TargetResult]:
    """Every planned target's result, in the planned order; ``settings.jobs`` audits at a time,
    forked by the run's fork servers. A target that cannot be imported is a result with status
    ``error`` (named ones are in :func:`stopping_errors`).

    Raises:
        InputError: torch is not installed (every audit needs it).
    """
    require_torch()
    with ForkServers() as servers, ThreadPoolExecutor(max_workers=settings.jobs or default_jobs()) as pool:
        futures = [pool.submit(_result, item, settings, servers) for item in planned]
        try:
            return [future.result() for future in futures]
        finally:
            pool.shutdown(cancel_futures=True)


def failed(results: list[TargetResult], fail_on: str, require_checks: bool = False) -> bool:
    """Whether a target could not be imported, any finding is at or above the failing severity,
    or, with ``require_checks``, a check could not run on a target."""
    threshold = SEVERITIES.index(fail_on)
    return (
        any(result.status == "error" for result in results)
        or any(SEVERITIES.index(f.severity) <= threshold for result in results for f in result.findings)
        or (require_checks and any(result.unchecked for result in results))
    )
