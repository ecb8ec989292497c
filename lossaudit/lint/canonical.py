"""Audit beyond the configured point (issue 21 point 1): probe at the canonical settings a focal
loss accepts, not only at its own.

A target whose own gamma is 0 (or None) cannot show a wrong modulating factor, a detached p_t or
a batch-level p_t: its factor is 1. One whose alpha is None cannot show a constant, inverted or
misindexed alpha. :func:`audit_settings` runs the probes whose outcome depends on these settings
again at gamma 2 and 0.5, and at a scalar alpha (0.25) and a per-class alpha, each calibrated
afresh; a defect seen only there is reported with the setting that shows it ("at gamma=2: ...",
and ``evidence["setting"]``, so JSON and SARIF carry it), and a check counts as not run only when
no accepted setting could run it.

A setting the target does not accept — it fails under every calling convention there — is a note,
except where the failure is a defect: a crash at gamma 2 or 0.5, or at a scalar alpha with this
many classes when the same alpha runs with two (an ``[alpha, 1 - alpha]`` table indexed by the
class label).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import torch

from lossaudit.lint.battery import Context, _run
from lossaudit.lint.calibrate import calibrate
from lossaudit.lint.crashes import describe, diagnose, furthest
from lossaudit.lint.findings import Finding
from lossaudit.lint.kinds import FOCAL_KINDS, SOFTMAX
from lossaudit.lint.rules import FINAL_CHECKS, PROBES
from lossaudit.lint.subject import settle_layout

if TYPE_CHECKING:
    from lossaudit.lint.subject import Calibration, Subject

SETTING_CODES = frozenset({"FL001", "FL002", "FL003", "FL004", "FL006", "FL007", "FL008", "FL009", "FL010", "FL015", "FL023", "FL024"})
"""The rules whose probes run again at a canonical setting: those whose outcome depends on alpha or
gamma (and the batch-shape crash probe). FL007 runs at gamma >= 1 only: below 1 the factor's own
derivative, -gamma (1 - p_t)^(gamma - 1), is infinite at p_t = 1, in the reference too."""
NOT_AT_SCALAR_SOFTMAX_ALPHA = frozenset({"FL001"})
"""What a softmax loss's scalar alpha setting does not report: a scalar alpha that multiplies every
class alike is mmcv's convention (FL001 when the user sets it); probed only because the target
accepts one, it shows crashes and other rules, not that convention."""
CANONICAL_GAMMAS = (2.0, 0.5)
SCALAR_ALPHA = 0.25


def per_class_alpha(classes: int) -> list[float]:
    """The per-class alpha of the canonical settings: 0.25 to 0.75, evenly spaced."""
    return [round(0.25 + 0.5 * c / max(classes - 1, 1), 4) for c in range(classes)]


def settings_for(subject: Subject, kind: str) -> list[dict]:
    """The canonical settings to probe ``subject`` at, beyond its own: gamma 2 and 0.5 when its
    gamma is 0 or None; a scalar and a per-class alpha (at gamma 2 when its own gamma is off) when
    it declares alpha and its alpha is None. None for a built instance (its settings are fixed) and
    for the focal families' kinds."""
    if kind not in FOCAL_KINDS or subject.is_instance or subject.signature is None:
        return []
    declared = subject.signature.parameters
    settings: list[dict] = []
    gamma = subject.value("gamma", None)
    gamma_off = (
        "gamma" in declared
        and "gamma" not in subject.supplied
        and (gamma is None or isinstance(gamma, (int, float)) and not isinstance(gamma, bool) and gamma == 0)
    )
    if gamma_off:
        settings += [{"gamma": gamma} for gamma in CANONICAL_GAMMAS]
    if "alpha" in declared and "alpha" not in subject.supplied and subject.value("alpha", None) is None:
        at = {"gamma": 2.0} if gamma_off else {}
        settings += [{**at, "alpha": SCALAR_ALPHA}, {**at, "alpha": per_class_alpha(subject.num_classes)}]
    return settings


def label(setting: dict) -> str:
    """'gamma=2', 'alpha=0.25', 'gamma=2, alpha=[0.25, ..., 0.75] (per class)'."""

    def text(value: object) -> str:
        if isinstance(value, torch.Tensor):
            value = value.tolist()
        if isinstance(value, list):
            return f"[{', '.join(f'{v:g}' for v in value)}] (per class)"
        return f"{value:g}" if isinstance(value, float) else repr(value)

    return ", ".join(f"{name}={text(value)}" for name, value in setting.items())


def as_data(setting: dict) -> dict:
    return {name: value.tolist() if isinstance(value, torch.Tensor) else value for name, value in setting.items()}


def audit_settings(ctx: Context, deadline: float | None = None) -> None:
    """Probe ``ctx``'s target at each canonical setting (:func:`settings_for`) and merge what they
    show into ``ctx``: new error and warning findings (one per code), what was checked there, and a
    note per setting. A setting not started by ``deadline`` (``time.monotonic()``) is skipped with a
    note, so a slow target's audit still ends within the parent's time limit."""
    for setting in settings_for(ctx.subject, ctx.kind):
        if deadline is not None and time.monotonic() > deadline:
            ctx.notes.append(f"not probed at {label(setting)}: the audit's time for canonical settings is spent (a slow target; raise --timeout)")
            continue
        _audit_setting(ctx, setting)
    resolved = {item["probe"] for item in ctx.unchecked if item["probe"] in ctx.checked}
    if resolved:
        ctx.notes = [note for note in ctx.notes if not _note_of(note, ctx.unchecked, resolved)]


def _note_of(note: str, items: list[dict], probes: set[str]) -> bool:
    return any(item["probe"] in probes and note == f"{'/'.join(item['codes'])} not checked: {item['reason']}" for item in items)


def _calibrate_at(ctx: Context, setting: dict) -> tuple[Subject, Calibration, dict]:
    """The target at ``setting``, calibrated in its convention (kind, inputs and targets as found);
    a per-class alpha is tried as a list, then as a tensor."""
    convention = ctx.convention
    variants = [setting]
    if isinstance(setting.get("alpha"), list):
        variants.append({**setting, "alpha": torch.tensor(setting["alpha"])})
    for values in variants:
        subject = ctx.subject.variant(**values)
        calibration = settle_layout(subject, calibrate(subject, ctx.kind, convention.inputs, convention.targets, ctx.generator_seed))
        if calibration.convention is not None:
            return subject, calibration, values
    return subject, calibration, setting


def _audit_setting(ctx: Context, setting: dict) -> None:
    subject, calibration, setting = _calibrate_at(ctx, setting)
    name = label(setting)
    if calibration.convention is None:
        _not_accepted(ctx, subject, calibration, setting, name)
        return
    base = list(ctx.findings)
    at = Context(subject, calibration, ctx.locator, ctx.generator_seed, findings=list(base))
    gamma = float(setting.get("gamma", ctx.params.gamma))
    probes = tuple(
        probe
        for probe in PROBES
        if set(probe.codes) & SETTING_CODES and not all(ctx.fired(code) for code in probe.codes) and not (probe.codes == ("FL007",) and gamma < 1)
    )
    _run(at, probes)
    at.current_probe = "calibration"
    for check in FINAL_CHECKS:
        try:
            check.run(at)
        except Exception as error:  # noqa: BLE001 - a final check that cannot run at a setting reports nothing there
            ctx.notes.append(f"at {name}: the {check.run.__name__} check could not run: {type(error).__name__}: {error}")
    shown = []
    for finding in at.findings[len(base) :]:
        if finding.severity not in ("error", "warning") or ctx.fired(finding.code):
            continue
        if ctx.kind == SOFTMAX and isinstance(setting.get("alpha"), float) and finding.code in NOT_AT_SCALAR_SOFTMAX_ALPHA:
            continue
        finding.message = f"at {name}: {finding.message}"
        finding.evidence = {**finding.evidence, "setting": as_data(setting)}
        ctx.findings.append(finding)
        shown.append(finding.code)
    ctx.checked |= at.checked
    ran = sorted({code for probe in probes if probe.run.__name__ in at.checked for code in probe.codes})
    ctx.notes.append(f"probed at {name} as well" + (f" (checks run: {', '.join(ran)})" if ran else "") + (f"; shows {', '.join(shown)}" if shown else ""))


def _not_accepted(ctx: Context, subject: Subject, calibration: Calibration, setting: dict, name: str) -> None:
    """A setting under which every call fails: FL015 where that is a defect (a crash at a canonical
    gamma, or a scalar alpha that runs with two classes only), else a note."""
    attempt = furthest(calibration.attempts, ctx.locator) or (calibration.attempts[0] if calibration.attempts else None)
    if attempt is None or attempt.get("exception") is None:
        ctx.notes.append(f"not probed at {name}: no calling convention runs there")
        return
    error = attempt["exception"]
    text = describe(error, ctx.locator, subject)
    scalar_alpha = isinstance(setting.get("alpha"), float)
    defect = "alpha" not in setting
    two = ""
    if scalar_alpha and subject.num_classes > 2:
        small = subject.with_classes(2)
        if calibrate(small, ctx.kind, ctx.convention.inputs, ctx.convention.targets, ctx.generator_seed).convention is not None:
            defect, two = True, f" with {subject.num_classes} classes (it runs with 2: alpha is used as a per-class table)"
    if ctx.fired("FL015") or not defect:
        ctx.notes.append(f"not probed at {name}: the target does not run there ({text})")
        return
    path, line = ctx.locator.from_traceback(error.__traceback__)
    cause = diagnose(error, ctx.locator, subject)
    ctx.findings.append(
        Finding(
            "FL015",
            f"at {name}: fails on valid input{two}: {text}",
            path=path,
            line=line,
            evidence={
                "probe": "calibration",
                "setting": as_data(setting),
                "convention": attempt["convention"],
                "cause": cause.kind,
                **({"source_line": cause.source} if cause.source else {}),
            },
        )
    )
