"""A user's own losses in ``compare`` (:mod:`lossaudit.losses.user`), computed in one child process.

The child is forked from this process (so it sees the data plan, and a callable given to the
API, as they are here), puts itself in a process group of its own under ``--memory-limit``
(``RLIMIT_AS``, as ``lint``'s children), sends its output to /dev/null and its errors to a file,
then, for each user loss:

1. imports it (only now: user code runs only when named), constructs a class with its
   ``--loss-init`` keywords, and settles its family (declared, or inferred by ``lint``'s
   calibration, :func:`lossaudit.lint.calibrate.calibrate`) and whether it takes class indices;
2. checks that it is separable over rows: the first rows of the data, called as one chunk and as
   two, must give the same loss per row;
3. streams the data through a :class:`~lossaudit.compare.engine.generic.GenericTally` (the engine
   path of the registry losses without numpy terms: float64 autograd gradients, binned as the
   built-in losses of the family), calling the loss once per chunk of rows as
   ``fn(logits, targets)``, each call under ``--timeout`` seconds.

The tables come back pickled through a file and are merged into the
:class:`~lossaudit.compare.settings.Tally`. Any failure of the user's code (a raise, a hang, an
exit, NaN output, a wrong shape, a scalar, memory) is one :class:`~lossaudit.errors.InputError`
naming the loss: ``compare`` exits 2. The parent kills the child's group after a wall-clock limit
in case a call cannot be interrupted.
"""

from __future__ import annotations

import functools
import inspect
import os
import pickle
import signal
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from lossaudit.compare.engine.mistakes import Mistakes
from lossaudit.compare.engine.stream import CHUNK_ELEMENTS
from lossaudit.compare.settings import LossSettings, Tally
from lossaudit.errors import InputError
from lossaudit.io.dataset import Chunk, DataPlan
from lossaudit.lint.runner import STARTUP_ALLOWANCE_S, default_memory_limit_mb
from lossaudit.losses.spec import SIGMOID, SOFTMAX, LossSpec, valid_elements
from lossaudit.losses.user import FAMILIES, UserLoss

PROBE_ROWS = 64
"""Rows of the separability check (the first of the data that the loss sees)."""
SEPARABLE_TOLERANCE = 1e-4
"""Largest difference of a row's loss between two chunkings, relative to the largest row loss."""
PROBE_CALLS = 12
"""Calls besides one per chunk that the wall-clock limit allows for (import, calibration, checks)."""
REDUCTION_FIX = 'pass reduction="none" (--loss-init NAME.reduction=none) so that it returns the loss per element (n, C) or per row (n,)'


class UserLossError(Exception):
    """A user loss failed; the message is the one line ``compare`` prints (naming the loss)."""


def user_tally(plan: DataPlan, settings: LossSettings, timeout: float, memory_limit_mb: int | None) -> tuple[dict, tuple[UserLoss, ...]]:
    """The tables of ``settings.user_losses`` over ``plan``, computed in a forked child (see the
    module docstring), and the user losses with their family and target encoding settled.

    Raises:
        InputError: a user loss failed, hung or its process died (one line naming the loss).
    """
    users = settings.user_losses
    memory = memory_limit_mb or default_memory_limit_mb()
    rows = max(CHUNK_ELEMENTS // max(plan.info.num_classes, 1), 1)
    calls = (plan.info.num_rows // rows + len(plan.info.files) + PROBE_CALLS) * len(users)
    limit = STARTUP_ALLOWANCE_S + timeout * calls
    with tempfile.TemporaryDirectory(prefix="lossaudit-user-") as folder:
        paths = SimpleNamespace(result=Path(folder, "result.pickle"), current=Path(folder, "current"), stderr=Path(folder, "stderr"))
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child leaves with os._exit
            _child(plan, settings, rows, timeout, memory, paths)
        status = _wait(pid, limit)
        current = paths.current.read_text() if paths.current.exists() else ", ".join(user.id for user in users)
        if status is None:
            raise InputError(f"{current}: ran past {limit:.0f} s in all (--timeout {timeout:g} s a call) and was stopped: it hangs")
        if not paths.result.exists():
            said = [line for line in paths.stderr.read_text(errors="replace").splitlines() if line.strip()] if paths.stderr.exists() else []
            last = f"; it printed: {said[-1].strip()[:200]}" if said else ""
            raise InputError(
                f"{current}: the process running it exited with code {os.waitstatus_to_exitcode(status)} without a result "
                f"(os._exit, a signal, or memory past --memory-limit {memory} MiB){last}"
            )
        outcome = pickle.loads(paths.result.read_bytes())
    if not outcome["ok"]:
        raise InputError(outcome["message"])
    settled = tuple(replace(user, family=outcome["families"][user.id], targets=outcome["targets"][user.id]) for user in users)
    return outcome["tables"], settled


def _wait(pid: int, limit: float) -> int | None:
    """The child's wait status, or None when it ran past ``limit`` seconds (then its group is
    killed). Its group is killed in any case: what the loss started goes with it."""
    deadline = time.monotonic() + limit
    status = None
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.02)
        status = None
    _kill_group(pid)
    if status is None:
        os.waitpid(pid, 0)
    return status


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def merge(tally: Tally, tables: dict) -> None:
    """Put the user losses' tables into ``tally`` (and the softmax counts with the softmax rows'
    argmax outcomes, when only a user loss is a softmax loss and the pass counted none)."""
    for name in ("loss_sums", "gradient_sums", "normalisers", "normaliser_names"):
        getattr(tally, name).update(tables[name])
    if tables.get("second_moments") is not None:
        assert tally.second_moments is not None  # a weighted dump's tally
        tally.second_moments.update(tables["second_moments"])
    counts = tables.get("softmax_counts")
    if counts is not None and not tally.softmax_counts.any():
        tally.softmax_counts, tally.sum_q_positive, tally.softmax_positives = counts, tables["sum_q_positive"], tables["softmax_positives"]
        tally.mistakes.merge(tables["mistakes"])


def _child(plan: DataPlan, settings: LossSettings, rows: int, timeout: float, memory: int, paths: SimpleNamespace) -> None:  # pragma: no cover
    """The forked child: compute, write the outcome, leave without the parent's cleanup."""
    try:
        os.setpgid(0, 0)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(os.open(paths.stderr, os.O_WRONLY | os.O_CREAT, 0o600), 2)
        import torch

        torch.set_num_threads(1)  # the parent's thread pools do not survive the fork
        from lossaudit.lint.worker import limit_memory

        limit_memory(memory)
        outcome = {"ok": True, **_compute(plan, settings, rows, timeout, paths.current)}
    except UserLossError as error:
        outcome = {"ok": False, "message": str(error)}
    except BaseException as error:  # noqa: BLE001 - the parent must hear of any failure
        outcome = {"ok": False, "message": f"internal error computing the user losses: {type(error).__name__}: {error}"}
    try:
        temporary = Path(str(paths.result) + ".tmp")
        temporary.write_bytes(pickle.dumps(outcome))
        temporary.replace(paths.result)
    finally:
        os._exit(0)


def _compute(plan: DataPlan, settings: LossSettings, rows: int, timeout: float, current: Path) -> dict:
    """Load, settle and check every user loss, then one pass over the data."""
    from lossaudit.compare.engine.families import FamilySetup, FamilyTally
    from lossaudit.compare.engine.generic import GenericTally

    spans = plan.ranges(rows)
    with plan.reader() as reader:
        first = reader.decode(spans[0]) if spans else None
    classes = plan.info.num_classes
    specs, families, targets = {}, {}, {}
    for user in settings.user_losses:
        current.write_text(user.id)
        caller = _Caller(user, timeout, classes)
        families[user.id], targets[user.id] = caller.family, caller.targets
        specs[user.id] = caller.spec()
        if first is not None:
            caller.check_separable(first)
    ids = tuple(specs)
    current.write_text(", ".join(ids))
    weighted = plan.info.weighted
    tally = GenericTally(settings, ids, classes, None, specs, weighted=weighted)
    counts = FamilyTally(settings, FamilySetup({}, None, None), classes, True, weighted) if SOFTMAX in families.values() else None
    with plan.reader() as reader:
        for span in spans:
            chunk = reader.decode(span)
            tally.add(chunk)
            if counts is not None:
                counts.add(chunk)
    sink: Any = SimpleNamespace(
        loss_sums={},
        gradient_sums={},
        normalisers={},
        normaliser_names={},
        softmax_counts=None,
        sum_q_positive=None,
        softmax_positives=None,
        mistakes=Mistakes(classes),
        second_moments={} if weighted else None,
    )
    tally.finish(sink)
    if counts is not None:
        counts.finish(sink)
    return {"tables": vars(sink), "families": families, "targets": targets}


def _failure(error: BaseException) -> str:
    """How a failure of the user's code reads (lint's words)."""
    from lossaudit.lint.calibrate import error_text

    return error_text(error)


class _Caller:
    """One user loss, loaded in the child: ``fn(logits, targets)`` with its family and target
    encoding, every call checked."""

    def __init__(self, user: UserLoss, timeout: float, num_classes: int):
        from lossaudit.lint.subject import CallTimeout, run_with_timeout

        self.user, self.timeout, self.num_classes = user, timeout, num_classes
        self.run = run_with_timeout
        failures = self.failures = (Exception, SystemExit, KeyboardInterrupt, CallTimeout)
        obj: Any = user.obj
        if obj is None:
            from lossaudit.io.symbols import import_quietly, import_symbol

            try:
                assert user.target is not None  # a user loss without its object names its target
                obj = import_symbol(user.target, run=lambda load: run_with_timeout(lambda: import_quietly(load, user.id), timeout))
            except InputError as error:
                raise UserLossError(str(error) if str(error).startswith(user.id) else f"{user.id}: {error}") from None
            except failures as error:
                raise UserLossError(f"{user.id}: importing it failed: {_failure(error)}") from None
        self.obj = obj
        self.family = user.family or getattr(obj, "lossaudit_family", None)
        self.targets = getattr(obj, "lossaudit_targets", None)
        if self.family is not None and self.family not in FAMILIES:
            raise UserLossError(f"{user.id}: lossaudit_family = {self.family!r}; expected 'sigmoid' or 'softmax'")
        try:
            self.fn: Any = (
                run_with_timeout(lambda: obj(**user.init), timeout) if inspect.isclass(obj) else functools.partial(obj, **user.init) if user.init else obj
            )
        except failures as error:
            raise UserLossError(f"{user.id}: cannot be constructed with --loss-init {user.init}: {_failure(error)}") from None
        if self.family is None:
            self._infer()
        if self.targets is None:
            self.targets = "onehot"

    def _infer(self) -> None:
        """The family (and target encoding) as ``lint`` infers a kind: calibrated against the
        reference losses on its probe batches."""
        from lossaudit.lint.calibrate import calibrate
        from lossaudit.lint.kinds import base_kind
        from lossaudit.lint.subject import CallTimeout, Subject

        subject = Subject(self.obj, self.user.init, self.timeout, 5, None)
        try:
            calibration = calibrate(subject, "auto", "logits", self.targets or "auto", 0)
        except (Exception, SystemExit, CallTimeout) as error:
            raise UserLossError(f"{self.user.id}: calling it to infer its family failed: {_failure(error)}") from None
        convention = calibration.convention
        if convention is None:
            first = next((attempt["error"] for attempt in calibration.attempts if attempt.get("error")), "no calling convention fits")
            raise UserLossError(
                f"{self.user.id}: {first}, under every calling convention lint tries to infer its family "
                f"(declare it, {self.user.id}@sigmoid or @softmax, to call it only as compare does)"
            )
        self.family = SOFTMAX if base_kind(convention.kind) == SOFTMAX else SIGMOID
        self.targets = self.targets or ("index" if convention.targets == "index" else "onehot")

    def spec(self) -> LossSpec:
        """The entry :class:`~lossaudit.compare.engine.generic.GenericTally` computes it from."""
        if self.family == SIGMOID:
            return LossSpec(self.user.id, SIGMOID, "", terms=self._sigmoid_terms, normaliser=valid_elements)
        return LossSpec(self.user.id, SOFTMAX, "", terms=self._softmax_terms)

    def _sigmoid_terms(self, x, y, valid, positive, **arguments):
        rows = valid.any(dim=1).nonzero()[:, 0]
        out = x.new_zeros(x.shape)
        if len(rows):
            out[rows] = self.call(x[rows], y[rows], per_row=False)
        return out

    def _softmax_terms(self, x, y, class_counts, **arguments):
        row = self.call(x, y, per_row=True)
        return row[:, None] * y / y.sum(dim=1, keepdim=True)

    def _encode(self, y):
        """The targets as the loss takes them: float32 ``(n, C)``, or int64 indices ``(n,)``
        (background rows labelled C for a sigmoid loss)."""
        import torch

        if self.targets != "index":
            return y.float()
        if bool(((y > 0).sum(dim=1) > 1).any()) or bool(((y > 0) & (y < 1)).any()):
            raise UserLossError(f"{self.user.id}: takes class indices, but the data has soft or multi-hot targets, which indices cannot express")
        labels = y.argmax(dim=1)
        if self.family == SIGMOID:
            labels = torch.where(y.sum(dim=1) > 0, labels, torch.full_like(labels, self.num_classes))
        return labels

    def call(self, x, y, per_row: bool):
        """``fn(logits, targets)`` on float64 rows ``x``/``y``: the loss per element ``(n, C)``
        (``per_row`` False) or per row ``(n,)``, float64, its gradient flowing back to ``x``."""
        import torch

        logits, targets = x.float(), self._encode(y)
        try:
            out = self.run(lambda: self.fn(logits, targets), self.timeout)
        except self.failures as error:
            raise UserLossError(f"{self.user.id}: {_failure(error)}") from None
        n, classes = x.shape
        out = self._checked(out, n, classes, torch)
        if out.dim() == 2:
            return out.sum(dim=1) if per_row else out
        if not per_row:
            raise UserLossError(
                f"{self.user.id}: returned the loss per row, shape ({n},); a sigmoid loss must return it per element, shape ({n}, {classes}) (declare {self.user.id}@softmax if it is a softmax loss)"
            )
        return out

    def _checked(self, out, n: int, classes: int, torch):
        """``out`` as float64 ``(n, C)`` or ``(n,)``, or a :class:`UserLossError` saying what was expected."""
        name, expected = self.user.id, f"expected the loss per element ({n}, {classes}) or per row ({n},)"
        if not isinstance(out, torch.Tensor):
            raise UserLossError(f"{name}: returned {type(out).__name__}, not a tensor; {expected}")
        if out.dim() == 0:
            raise UserLossError(f"{name}: returned a scalar; {REDUCTION_FIX}")
        if out.dim() == 2 and out.shape[1] == 1 and classes != 1:
            out = out[:, 0]
        if tuple(out.shape) not in ((n, classes), (n,)):
            raise UserLossError(f"{name}: returned shape {tuple(out.shape)} for {n} rows of {classes} classes; {expected}")
        if not out.is_floating_point():
            raise UserLossError(f"{name}: returned {out.dtype} values; {expected}, floating point")
        bad = int((~torch.isfinite(out)).sum())
        if bad:
            raise UserLossError(f"{name}: returned NaN or infinite values for {bad} of {out.numel()} outputs on finite logits; expected finite losses")
        if not out.requires_grad:
            raise UserLossError(
                f"{name}: returned a tensor without a gradient (computed outside autograd: .detach(), numpy, .item()?); compare needs autograd for the gradient shares"
            )
        return out.double()

    def check_separable(self, chunk: Chunk) -> None:
        """The first rows the loss sees, called as one chunk and as two: each row's loss must be
        the same (it may not depend on the other rows of its chunk)."""
        import torch

        rows = np.flatnonzero(chunk.valid_rows & chunk.has_target if self.family == SOFTMAX else chunk.valid.any(axis=1))[:PROBE_ROWS]
        if len(rows) < 3:
            return
        x = torch.from_numpy(np.where(chunk.valid[rows], chunk.logits[rows], 0).astype(np.float64)).requires_grad_()
        y = torch.from_numpy(chunk.targets[rows].astype(np.float64))
        cut = len(rows) // 3
        whole = self._rows(x, y)
        parts = torch.cat([self._rows(x[:cut], y[:cut]), self._rows(x[cut:], y[cut:])])
        difference = (whole - parts).abs()
        scale = float(whole.abs().max())
        worst = int(difference.argmax())
        if float(difference[worst]) > SEPARABLE_TOLERANCE * max(scale, 1e-12):
            size = cut if worst < cut else len(rows) - cut
            raise UserLossError(
                f"{self.user.id}: is not separable over rows: row {int(rows[worst])}'s loss is {float(whole[worst]):.6g} in a chunk of {len(rows)} rows "
                f"and {float(parts[worst]):.6g} in a chunk of {size}; compare calls it on chunks of rows, so a row's loss must depend on that row alone "
                f"(no batch mean, batch statistic or normaliser inside the loss)"
            )

    def _rows(self, x, y):
        """The loss per row of ``x`` (summed over its classes)."""
        out = self.call(x, y, per_row=True)
        return out.detach()
