"""The probe battery: :class:`Context`, what every probe sees, and :func:`run_probes`, which runs
the probes of every rule group (:mod:`lossaudit.lint.rules`) in their order.

What a finding does not explain is checked after the battery: a sigmoid target found to be a
softmax (FL003) is probed again as a softmax loss, then the final checks run (FL016, FL014).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from lossaudit.lint.calibrate import calibrate, error_text
from lossaudit.lint.crashes import describe, diagnose
from lossaudit.lint.findings import Finding
from lossaudit.lint.kinds import SIGMOID, SOFTMAX
from lossaudit.lint.locate import Locator
from lossaudit.lint.peers import followed
from lossaudit.lint.probing import Inconclusive
from lossaudit.lint.registry import Probe
from lossaudit.lint.rules import FINAL_CHECKS, PROBES, RULES_BY_CODE, SECONDARY_PROBES
from lossaudit.lint.subject import (
    Batch,
    Calibration,
    CallTimeout,
    Convention,
    Params,
    Subject,
    canonical_to_reference_input,
    make_batch,
    reference_elements,
)


@dataclass
class Context:
    """What every probe needs: the subject, what calibration found, and where findings go."""

    subject: Subject
    calibration: Calibration
    locator: Locator
    generator_seed: int
    findings: list[Finding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    unchecked: list[dict] = field(default_factory=list)
    """The checks that could not run, as data: ``{"codes", "reason", "probe"}`` per probe
    (:attr:`~lossaudit.lint.findings.TargetResult.unchecked`), each with its note in ``notes``."""
    checked: set[str] = field(default_factory=set)
    """The probes that ran to a conclusion (here or at a canonical setting, :mod:`lossaudit.lint.canonical`)."""
    current_probe: str = "calibration"
    prefix: str = ""
    """Put before every message: how the target was read (e.g. as a softmax loss after FL003)."""

    @property
    def convention(self) -> Convention:
        assert self.calibration.convention is not None  # a context is made for a calibrated target
        return self.calibration.convention

    @property
    def kind(self) -> str:
        return self.convention.kind

    @property
    def base(self) -> str:
        """The focal kind whose batches this kind shares (:data:`~lossaudit.lint.kinds.FAMILY_BASES`)."""
        return self.convention.base

    @property
    def params(self) -> Params:
        return self.calibration.params

    def fire(self, code: str, message: str, evidence: dict, severity: str = "", anchor: str | None = None, fix: str = "") -> None:
        """Report ``code``: located by its anchor (or ``anchor``), with ``fix`` or else the rule's
        fix for this kind, the evidence rounded and tagged with the probe."""
        path, line = self.locator.find(anchor or code)
        evidence = {"probe": self.current_probe, **_rounded(evidence)}
        fix = fix or RULES_BY_CODE[code].fix_for(self.kind)
        self.findings.append(Finding(code, self.prefix + message, path=path, line=line, evidence=evidence, severity=severity, fix=fix))

    def fire_at_failure(self, code: str, message: str, error: BaseException, evidence: dict) -> None:
        """Report ``code`` for a call that failed, at the deepest line of the target in the
        traceback, with the rule's general fix and the cause in words where it is known
        (:func:`lossaudit.lint.crashes.diagnose`)."""
        path, line = self.locator.from_traceback(error.__traceback__)
        cause = diagnose(error, self.locator, self.subject)
        if cause.words and cause.kind != "other":
            message += f"; cause: {cause.words}"
            evidence = {**evidence, "cause": cause.kind, **({"source_line": cause.source} if cause.source else {})}
        self.findings.append(Finding(code, message, path=path, line=line, evidence={"probe": self.current_probe, **evidence}))

    def fired(self, *codes: str) -> bool:
        return any(finding.code in codes for finding in self.findings)

    def generator(self) -> torch.Generator:
        return torch.Generator().manual_seed(self.generator_seed)

    def follows(self) -> list[str]:
        """The libraries whose documented convention the calibrated target follows."""
        if not self.calibration.matched:
            return []
        return followed(self.kind, self.params.scheme, self.convention.encoding, self.calibration.match.normalisation)

    def batch(self, rows: int = 16) -> Batch:
        """A moderate batch of this kind that the calling convention can express."""
        return make_batch(self.kind, self.subject.num_classes, self.generator(), rows=rows, background=self.convention.has_background)

    def total(self, batch: Batch, **overrides: Any) -> float:
        """The target's output on ``batch`` as one number (summed when it is not a scalar)."""
        out, _ = self.subject.call(self.convention, batch, **overrides)
        return float(out.detach().double().sum())

    def gradient(self, batch: Batch, **overrides: Any) -> torch.Tensor:
        return self.output_and_gradient(batch, **overrides)[1]

    def output_and_gradient(self, batch: Batch, **overrides: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """One call's output and the gradient it gives the inputs."""
        out, inputs = self.subject.call(self.convention, batch, **overrides)
        if not out.requires_grad:
            raise Inconclusive("the output carries no gradient to the inputs")
        (grad,) = torch.autograd.grad(out.sum(), inputs, allow_unused=True)
        if grad is None:
            raise Inconclusive("the output does not depend on the inputs through autograd")
        return out.detach(), grad.detach().double()

    def reference_gradient(self, batch: Batch) -> torch.Tensor:
        inputs, _ = self.subject.to_call(self.convention, batch, dtype=torch.float64)
        ref = reference_elements(self.kind, canonical_to_reference_input(self.convention, inputs), batch.y.double(), self.params)
        (grad,) = torch.autograd.grad(ref.sum(), inputs)
        return grad


def _rounded(evidence: dict) -> dict:
    def clean(value: object) -> Any:
        if isinstance(value, float):
            return None if not math.isfinite(value) else float(f"{value:.6g}")
        if isinstance(value, dict):
            return {key: clean(item) for key, item in value.items()}
        if isinstance(value, (list, tuple)):
            return [clean(item) for item in value]
        return value

    return clean(evidence)


def run_probes(ctx: Context) -> None:
    """Run the battery, then what the findings do not explain: a softmax found where sigmoid was
    meant is probed again as a softmax loss, and the final checks run (an output that matches a
    reference only once inputs are read otherwise, FL016; one that matches no reference, checked
    against the reading of alpha the alpha findings describe, else FL014)."""
    _run(ctx, PROBES)
    if ctx.kind == SIGMOID and ctx.fired("FL003"):
        _probe_as_softmax(ctx)
    ctx.current_probe = "calibration"
    for check in FINAL_CHECKS:
        check.run(ctx)
    first_of_each: dict[str, Finding] = {}
    for finding in ctx.findings:
        first_of_each.setdefault(finding.code, finding)
    ctx.findings = list(first_of_each.values())


def _run(ctx: Context, probes: tuple[Probe, ...]) -> None:
    """Run ``probes``; an unexpected exception in a probe is a crash of the target on valid input."""
    for probe in probes:
        name = probe.run.__name__
        ctx.current_probe = name
        try:
            probe.run(ctx)
        except Inconclusive as reason:
            not_checked(ctx, probe, str(reason))
        except (Exception, SystemExit, CallTimeout) as error:
            not_checked(ctx, probe, f"the target raised during the probe: {error_text(error)}", note=False)
            if ctx.fired("FL015"):
                continue
            path, line = ctx.locator.from_traceback(error.__traceback__)
            cause = diagnose(error, ctx.locator, ctx.subject)
            ctx.findings.append(
                Finding(
                    "FL015",
                    f"{ctx.prefix}raises on valid input during the {name.removeprefix('probe_').replace('_', ' ')} probe: {describe(error, ctx.locator, ctx.subject)}",
                    path=path,
                    line=line,
                    evidence={"probe": name, "cause": cause.kind, **({"source_line": cause.source} if cause.source else {})},
                )
            )
        else:
            ctx.checked.add(name)


def not_checked(ctx: Context, probe: Probe, reason: str, note: bool = True) -> None:
    """Record that ``probe`` could not run: a note (``-v``) and an item of ``ctx.unchecked``."""
    if note:
        ctx.notes.append(f"{ctx.prefix}{'/'.join(probe.codes)} not checked: {reason}")
    ctx.unchecked.append({"codes": list(probe.codes), "reason": f"{ctx.prefix}{reason}", "probe": probe.run.__name__})


def still_unchecked(ctx: Context) -> list[dict]:
    """The items of ``ctx.unchecked`` whose probe ran at no setting (:mod:`lossaudit.lint.canonical`)
    and whose codes did not fire; one item per probe."""
    items: dict[str, dict] = {}
    for item in ctx.unchecked:
        if item["probe"] in ctx.checked or all(ctx.fired(code) for code in item["codes"]):
            continue
        items.setdefault(item["probe"], item)
    return list(items.values())


def _probe_as_softmax(ctx: Context) -> None:
    """After FL003: calibrate the target as a softmax loss and run the formula probes on it."""
    convention = ctx.convention
    calibration = calibrate(ctx.subject, SOFTMAX, convention.inputs, "auto", ctx.generator_seed)
    if calibration.convention is None:
        ctx.notes.append("the formula probes could not run on the target read as a softmax loss: no convention runs")
        return
    secondary = Context(ctx.subject, calibration, ctx.locator, ctx.generator_seed, prefix="read as a softmax loss: ")
    _run(secondary, SECONDARY_PROBES)
    ctx.findings += [finding for finding in secondary.findings if not ctx.fired(finding.code)]
    ctx.notes += secondary.notes
    ctx.unchecked += [item for item in secondary.unchecked if item["probe"] not in ctx.checked]
