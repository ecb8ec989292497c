"""Child process of ``lossaudit lint``: import one target, calibrate, probe, write the result.

    python -m lossaudit.lint.worker REQUEST.json RESULT.json

or :func:`run` in a child forked by :mod:`lossaudit.lint.forkserver`. The child's current folder
is not the user's (:mod:`lossaudit.lint.runner`): the request's ``user_folder`` is, and a file
target's path is relative to it.

The result file holds ``{"status": "ok", "result": {...}}`` or ``{"status": "import-error",
"message": ...}`` (the parent exits 2). Import-time hangs, ``sys.exit`` and exceptions other than
import errors are findings (FL015).
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path
from typing import Any, cast

from lossaudit.errors import InputError
from lossaudit.io.symbols import TargetSpec, import_symbol, set_user_folder, user_folder
from lossaudit.lint import reference
from lossaudit.lint.findings import Finding, TargetResult
from lossaudit.lint.kinds import CENTERNET, FAMILY_REFERENCES, REFERENCE_NAMES, SIGMOID

SETTINGS_BUDGET = 1.5
"""The canonical settings (:mod:`lossaudit.lint.canonical`) start only within this many per-call
timeouts of the audit's start: the parent stops the child after 30 s + 4 timeouts."""
THREADS = 1
"""torch's intra-op threads in the child: the probes' tensors are small and :func:`lossaudit.lint.runner.default_jobs`
children run side by side, so one thread each keeps the cores busy without threads spinning against
each other's (and a forked child starts its pool afresh)."""
CONFIGURE_FIX = "pass the arguments it needs with --init KEY=VALUE, or init = { ... } in the target's configuration entry"


def _signature_error(error: BaseException | None) -> bool:
    """Whether ``error`` says the call's arguments do not fit the signature (a required argument
    lint cannot supply), rather than a failure inside the loss."""
    return isinstance(error, TypeError) and any(
        text in str(error) for text in ("required positional argument", "required keyword-only argument", "unexpected keyword argument")
    )


def _num_classes(options: dict, init: dict) -> int:
    if options["num_classes"] is not None:
        return options["num_classes"]
    alpha = init.get("alpha")
    if isinstance(alpha, (list, tuple)) and len(alpha) > 1:
        return len(alpha) + (init.get("include_background") is False)  # MONAI's alpha omits class 0 then
    return 5


def audit(request: dict) -> TargetResult:
    """Import the target and run the battery; every failure of the target is a finding.

    This is the lint child's entry point: here, and only here, a target that fails for a
    hard-coded CUDA device is audited further with CUDA calls run on the CPU
    (:func:`lossaudit.lint.crashes.cuda_on_cpu`)."""
    from lossaudit.lint.calibrate import error_text
    from lossaudit.lint.crashes import cuda_on_cpu, diagnose
    from lossaudit.lint.subject import CallTimeout, run_with_timeout

    target, options = request["target"], request["options"]
    spec = TargetSpec(text=target["text"], symbol=target["symbol"], file=user_folder() / target["file"] if target["file"] else None, module=target["module"])
    try:
        obj = import_symbol(spec, run=lambda load: run_with_timeout(load, options["timeout"]))
    except (Exception, SystemExit, CallTimeout) as error:
        if isinstance(error, InputError):
            raise
        failure = Finding("FL015", f"importing the target failed: {error_text(error)}", path=target["file"], evidence={"phase": "import"})
        module_locator = _file_locator(target["file"])
        cause = diagnose(error, module_locator) if module_locator is not None else None
        if cause is not None and cause.source:
            failure.message += f"; cause: {cause.words}" if cause.words else f" at line {cause.line} (`{cause.source}`)"
            failure.line, failure.evidence = cause.line, {**failure.evidence, "cause": cause.kind, "source_line": cause.source}
        if cause is None or cause.kind != "device":
            return TargetResult(target=target["text"], findings=[failure])
        with cuda_on_cpu():
            try:
                obj = import_symbol(spec, run=lambda load: run_with_timeout(load, options["timeout"]))
            except (Exception, SystemExit, CallTimeout):
                return TargetResult(target=target["text"], findings=[failure])
            result = audit_object(obj, target["text"], dict(target["init"]), options, allow_cuda_patch=True)
        words = "CUDA calls (.cuda(), .to('cuda'), device='cuda') run on the CPU"
        failure.message += f"; the rest of the audit ran with {words}"
        failure.evidence["workaround"] = words
        result.findings.insert(0, failure)
        result.notes.insert(0, f"importing failed on a hard-coded CUDA device; audited with {words}")
        return result
    return audit_object(obj, target["text"], dict(target["init"]), options, allow_cuda_patch=True)


def _file_locator(file: str | None):
    """A locator for a module file (its whole source), for import-time failures."""
    from lossaudit.lint.locate import Locator

    if not file:
        return None
    locator = Locator(None)
    locator.absolute = os.path.realpath(user_folder() / file)
    locator.path = file
    return locator


def audit_object(obj: object, text: str, init: dict, options: Any, allow_cuda_patch: bool = False) -> TargetResult:
    """Run the battery on ``obj`` (a class, a function, or a callable instance) in this process.

    ``options`` is the request's options dict or an :class:`~lossaudit.lint.runner.AuditOptions`.
    A target that fails under every calling convention is reported (FL015, with the convention that
    got furthest and the cause) and, where a workaround lets it run
    (:func:`lossaudit.lint.crashes.work_around`; CUDA on the CPU only with ``allow_cuda_patch``, in
    lint's child), audited further under that workaround. Then the canonical settings are probed
    (:mod:`lossaudit.lint.canonical`).
    """
    import contextlib
    import dataclasses
    import inspect
    import time

    import torch

    from lossaudit.lint.battery import Context, run_probes, still_unchecked
    from lossaudit.lint.calibrate import calibrate, error_text
    from lossaudit.lint.canonical import audit_settings
    from lossaudit.lint.crashes import cuda_on_cpu, work_around
    from lossaudit.lint.locate import Locator
    from lossaudit.lint.subject import BACKGROUND_LABELS, CallTimeout, Subject

    if dataclasses.is_dataclass(options):
        options = dataclasses.asdict(cast(Any, options))
    started = time.monotonic()
    result = TargetResult(target=text)
    torch.manual_seed(options["seed"])
    locator = Locator(obj if inspect.isclass(obj) or inspect.isroutine(obj) else type(obj))  # an instance: its class's source
    result.location = {"path": locator.path, "line": locator.def_line}
    subject = Subject(obj, init, options["timeout"], _num_classes(options, init), options["ignore_index"])
    try:
        calibration = calibrate(subject, options["kind"], options["inputs"], options["targets"], options["seed"])
    except (Exception, SystemExit, CallTimeout) as error:  # the constructor itself failed
        path, line = locator.from_traceback(error.__traceback__)
        result.findings.append(
            Finding(
                "FL015",
                f"cannot be instantiated with --init {init}: {error_text(error)}",
                path=path,
                line=line,
                evidence={"phase": "instantiate", "exception": type(error).__name__},
                fix=CONFIGURE_FIX,
            )
        )
        result.unchecked = [_nothing_ran("the target cannot be instantiated")]
        return result
    workaround = None
    if calibration.convention is None:
        crash = _calibration_crash(calibration, locator, subject)
        result.findings.append(crash)
        try:
            workaround = work_around(subject, calibration, locator, options, allow_cuda_patch)
        except Exception as error:  # noqa: BLE001 - looking for a workaround must not lose the crash finding
            result.notes.append(f"no workaround tried: {type(error).__name__}: {error}")
            workaround = None
        if workaround is None:
            result.detected = {"kind": options["kind"], "inputs": None, "targets": None, "reference": None, "normalisation": None, "max_rel_error": None}
            result.unchecked = [
                _nothing_ran(f"the target fails under every calling convention ({crash.evidence['conventions_tried']} tried) and no workaround runs it")
            ]
            return result
        crash.message += f"; the rest of the audit ran with {workaround.text}"
        crash.evidence["workaround"] = workaround.text
        subject, calibration = workaround.subject, workaround.calibration
    with cuda_on_cpu() if workaround is not None and workaround.cuda_on_cpu else contextlib.nullcontext():
        ctx = Context(subject, calibration, locator, options["seed"], findings=list(result.findings))
        run_probes(ctx)
        try:
            audit_settings(ctx, deadline=started + SETTINGS_BUDGET * options["timeout"])
        except Exception as error:  # noqa: BLE001 - the findings at the target's own settings stand
            ctx.notes.append(f"the canonical settings could not be probed: {type(error).__name__}: {error}")
    if workaround is not None:
        for finding in ctx.findings:
            finding.evidence.setdefault("workaround", workaround.text)
    convention = calibration.convention
    assert convention is not None  # calibrated, or a workaround found one
    result.detected = {
        "kind": convention.kind,
        "kind_reason": calibration.kind_reason if options["kind"] == "auto" else "given",
        "inputs": convention.inputs,
        "targets": convention.targets,
        "background": BACKGROUND_LABELS[convention.background] if convention.targets == "index" and convention.kind == SIGMOID else None,
        "layout": convention.layout,
        "reference": _reference_name(convention.kind, calibration.params),
        "alpha_scheme": calibration.params.scheme,
        "normalisation": calibration.match.normalisation,
        "matched": calibration.matched or calibration.confusion is not None,
        "follows": ctx.follows(),
        "max_rel_error": calibration.match.error if calibration.match.error != float("inf") else None,
        "num_classes": subject.num_classes,
        "ignore_index": subject.ignore_index,
    }
    result.findings = ctx.findings
    supplied = [f"{name} has no default; probed with {name}={value!r}" for name, value in subject.supplied.items()]
    worked_around = [f"the target fails as configured; audited with {workaround.text}"] if workaround is not None else []
    result.notes = worked_around + supplied + ctx.notes
    result.unchecked = still_unchecked(ctx)
    return result


def _nothing_ran(reason: str) -> dict:
    """The unchecked item of a target on which no probe could run."""
    from lossaudit.lint.rules import PROBES

    codes = sorted({code for probe in PROBES for code in probe.codes} - {"FL015"})
    return {"codes": codes, "reason": reason, "probe": "calibration"}


def _calibration_crash(calibration, locator, subject) -> Finding:
    """FL015 for a target that fails under every calling convention: the convention that got
    furthest, the user's line and the cause in words (:mod:`lossaudit.lint.crashes`)."""
    from lossaudit.lint.crashes import all_alike, describe, diagnose, furthest

    attempts = calibration.attempts
    first = furthest(attempts, locator) or (
        attempts[0] if attempts else {"error": "no calling convention fits the options", "exception": None, "convention": None}
    )
    error = first["exception"]
    path, line = locator.from_traceback(error.__traceback__) if error is not None else (locator.path, locator.def_line)
    errors = list(dict.fromkeys(attempt["error"] for attempt in attempts if attempt.get("error")))
    tried = len(attempts)
    cause = diagnose(error, locator, subject) if error is not None else None
    text = describe(error, locator, subject) if error is not None else first["error"]
    alike = all_alike(attempts, locator)
    furthest_text = f"; furthest: {first['convention']}" if tried > 1 and first.get("convention") and not alike else ""
    evidence = {
        "phase": "call",
        "conventions_tried": tried,
        "errors": errors[:3],
        "exception": type(error).__name__ if error is not None else None,
        "furthest_convention": None if alike else first.get("convention"),
        "cause": cause.kind if cause else None,
        **({"source_line": cause.source} if cause and cause.source else {}),
    }
    return Finding(
        "FL015",
        f"fails on valid input under {'every calling convention' if tried > 1 else 'the first call'} ({tried} tried){furthest_text}: {text}",
        path=path,
        line=line,
        evidence=evidence,
        fix=CONFIGURE_FIX if _signature_error(error) else "",
    )


def _reference_name(kind: str, params) -> str:
    """How the ``detected`` section names the reference the target was compared with."""
    if kind == CENTERNET:
        return REFERENCE_NAMES[kind]
    if params.family:
        arguments = ", ".join(f"{name}={value:g}" if isinstance(value, float) else f"{name}={value}" for name, value in params.family.items())
        return f"{reference.public_name(FAMILY_REFERENCES[kind])}({arguments})"
    alpha = params.alpha
    alpha_text = "off" if alpha is None or (isinstance(alpha, (int, float)) and alpha < 0) else alpha if not hasattr(alpha, "tolist") else alpha.tolist()
    if params.scheme in ("class-0", "positives"):
        alpha_text = f"{alpha_text} read {params.scheme}"
    return f"{REFERENCE_NAMES[kind]}(alpha={alpha_text}, gamma={params.gamma:g})"


def limit_memory(megabytes: int) -> None:
    """Cap this process's address space (and its descendants') before the target is imported."""
    import resource

    limit = megabytes * 2**20
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (limit if hard == resource.RLIM_INFINITY else min(limit, hard), hard))


def run(request_path: str, result_path: str) -> None:
    """Audit the request's target in this process (lint's child, spawned or forked) and write the
    result file; the memory limit is set first, the user's folder is the request's."""
    request = json.loads(Path(request_path).read_text())
    set_user_folder(request["user_folder"])
    limit_memory(request["options"]["memory_limit_mb"])
    import torch

    torch.set_num_threads(THREADS)
    try:
        outcome = {"status": "ok", "result": audit(request).to_dict()}
    except InputError as error:
        outcome = {"status": "import-error", "message": f"target {error}"}
    except BaseException as error:  # noqa: BLE001 - a crash of the audit itself must still report
        outcome = {
            "status": "ok",
            "result": TargetResult(
                target=request["target"]["text"],
                findings=[
                    Finding(
                        "FL015",
                        f"the audit stopped: {type(error).__name__}: {error}",
                        path=request["target"]["file"],
                        evidence={"traceback": traceback.format_exc().splitlines()[-4:]},
                    )
                ],
            ).to_dict(),
        }
    temporary = Path(result_path + ".tmp")
    temporary.write_text(json.dumps(outcome, default=str))
    temporary.replace(result_path)


def main() -> None:
    run(sys.argv[1], sys.argv[2])
    sys.stdout.flush()
    os._exit(0)  # skip the target's atexit handlers and non-daemon threads


if __name__ == "__main__":
    main()
