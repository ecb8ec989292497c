"""Each epoch's validation outputs recorded, audited in the background and compared with the last.

:class:`EpochAudits` is what the Lightning and Hugging Face callbacks drive, and what a plain loop
can drive itself (docs/training.md). Per epoch:

1. :meth:`EpochAudits.start` opens a :class:`lossaudit.Recorder` on ``FOLDER/epochEEE-stepSSSSSSS/run/``
   (under ``torch.distributed`` every rank calls it: the Recorder's constructor is a collective);
2. :meth:`EpochAudits.add` records a batch (logits and targets as the Recorder takes them, on
   their device, float32, float16 or bfloat16);
3. :meth:`EpochAudits.finish` closes the recording and, on the process that audits (rank zero),
   starts :func:`lossaudit.compare` on it in a thread (or runs it at once without ``background``),
   after joining the previous epoch's audit, whose report is this one's baseline;
4. :meth:`EpochAudits.collect` (without waiting) and :meth:`EpochAudits.join` hand the finished
   :class:`Audit` s out: the report, written as ``report.json`` beside the run (and ``report.png``
   with ``plot``), the :func:`headline` scalars to log, and, when ``fail_if_share_moves`` is set
   and a loss's share of a class or difficulty bin moved at least that many percentage points
   since the baseline, the reason (``compare --baseline ... --fail-if-share-moves``'s test:
   :func:`lossaudit.compare.report.baseline.moved_too_far`).

Nothing here imports a training framework.
"""

from __future__ import annotations

import inspect
import logging
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from lossaudit.errors import InputError

if TYPE_CHECKING:
    from lossaudit.compare.report.types import Report
    from lossaudit.record.recorder import Recorder

LOG = logging.getLogger("lossaudit")
"""Where the integrations say what moved, that training stops, and an audit that failed."""

OnMove = Literal["warn", "stop"]

HEADLINE_SHARES = ("positive_share", "easy_negative_share", "very_hard_share")
"""Each loss's shares logged as scalars (fractions of the loss, as in the JSON report)."""


@dataclass(frozen=True)
class Audit:
    """One epoch's audit.

    Attributes:
        epoch, step: the epoch and the global step at which its outputs were recorded.
        folder: the epoch's folder: ``run/`` (the recording), ``report.json`` (and ``report.png``).
        report: ``lossaudit.compare``'s report of ``run/``; None when the audit failed.
        scalars: :func:`headline`'s numbers, named with the prefix.
        moved: why the shares moved too far since the baseline (``fail_if_share_moves``), or None.
        stop: whether training should stop (``moved`` and ``on_move="stop"``).
        error: the one-line error of an audit that failed, or None.
    """

    epoch: int
    step: int
    folder: Path
    report: Report | None
    scalars: dict[str, float]
    moved: str | None = None
    stop: bool = False
    error: str | None = None

    @property
    def report_path(self) -> Path:
        return self.folder / "report.json"


def headline(report: Report, prefix: str = "lossaudit/") -> dict[str, float]:
    """The numbers logged for one audit, as ``{prefix}NAME: value``:

    - ``{loss}/mean`` and ``{loss}/positive_share``, ``easy_negative_share``, ``very_hard_share``
      for each loss of the report (shares as fractions, as in the JSON report);
    - ``focal_ce_ratio`` (the focal loss's sum over bce's);
    - ``largest_move_points`` (signed percentage points) when the report has a baseline.

    Values that are None in the report (a loss without positives has no positive share) are left out.
    """
    scalars: dict[str, float | None] = {}
    for name, loss in report.losses.items():
        scalars[f"{name}/mean"] = loss.mean
        for share in HEADLINE_SHARES:
            scalars[f"{name}/{share}"] = getattr(loss, share)
    scalars["focal_ce_ratio"] = report.focal_ce_ratio
    move = report.extra.get("baseline", {}).get("largest_move")
    if move is not None:
        scalars["largest_move_points"] = move["points"]
    return {f"{prefix}{name}": float(value) for name, value in scalars.items() if value is not None}


def moved_reason(section: Mapping[str, Any], threshold: float | None) -> str | None:
    """Why the shares moved too far (``--fail-if-share-moves``'s test on a report's ``baseline``
    section), in the gate's words, or None."""
    from lossaudit.compare.report.baseline import move_sentence

    moved = move_sentence(dict(section), threshold, since=True)
    return None if moved is None else f"fail_if_share_moves {threshold:g}: {moved}"


class EpochAudits:
    """Record, audit and compare one run of outputs per epoch (see the module docstring).

    Args:
        folder: where each epoch's folder is written (created; a run folder is never overwritten).
        rate: the :class:`lossaudit.Recorder`'s sampling rate of the easy negatives.
        target_size: instead of ``rate``: about this many easy negatives kept per batch (the Recorder's).
        seed: the Recorder's random seed.
        baseline: ``"previous"`` (each audit compared with the last one that succeeded), a
            ``compare --format json`` report's path (every audit compared with it), or None.
        fail_if_share_moves: percentage points; a loss's share of a class or difficulty bin that moves
            at least this far since the baseline sets :attr:`Audit.moved`.
        on_move: ``"warn"`` (log the reason) or ``"stop"`` (log it and set :attr:`Audit.stop`).
        background: audit in a thread (True) or in :meth:`finish` itself.
        plot: also write ``report.png`` (the ``plot`` extra, matplotlib).
        prefix: the scalars' name prefix.
        compare_options: keyword arguments of :func:`lossaudit.compare` (``class_names``, ``losses``,
            ``gamma``, ...), checked here.

    Raises:
        InputError: a setting out of range, an unknown compare option, an unreadable baseline report
            or ``plot`` without matplotlib (one line).
    """

    def __init__(
        self,
        folder: str | os.PathLike[str],
        *,
        rate: float = 0.01,
        target_size: int | None = None,
        seed: int | None = None,
        baseline: str | os.PathLike[str] | None = "previous",
        fail_if_share_moves: float | None = None,
        on_move: OnMove = "warn",
        background: bool = True,
        plot: bool = False,
        prefix: str = "lossaudit/",
        compare_options: Mapping[str, Any] | None = None,
    ):
        self.folder = Path(folder)
        self.rate, self.target_size, self.seed = rate, target_size, seed
        self.baseline = baseline
        self.fail_if_share_moves, self.on_move, self.background, self.plot, self.prefix = fail_if_share_moves, on_move, background, plot, prefix
        self.compare_options = dict(compare_options or {})
        _check(self)
        self.recorder: Recorder | None = None
        self._epoch = (0, 0, self.folder)
        self._names: set[str] = set()
        self._thread: threading.Thread | None = None
        self._done: list[Audit] = []
        self._lock = threading.Lock()  # _done is appended to by the audit's thread
        self._last_report: Path | None = None

    def start(self, epoch: int, step: int) -> Recorder:
        """Open this epoch's recording (on every rank under DDP: a collective); returns its Recorder."""
        from lossaudit.record.recorder import Recorder

        if self.recorder is not None:
            self.recorder.close()
        base = name = f"epoch{epoch:03d}-step{step:07d}"
        while name in self._names:  # validated twice at one step (trainer.validate after fit)
            name = f"{base}-{len(self._names)}"
        self._names.add(name)
        self._epoch = (epoch, step, self.folder / name)
        self.recorder = Recorder(self.folder / name / "run", rate=self.rate, target_size=self.target_size, seed=self.seed)
        return self.recorder

    def add(self, logits: object, targets: object, mask: object = None) -> None:
        """Record one batch (detached from autograd; see :meth:`lossaudit.Recorder.add`)."""
        if self.recorder is None:
            raise ValueError("EpochAudits.add before start: no epoch is being recorded")
        self.recorder.add(*(_detached(value) for value in (logits, targets, mask)))

    def finish(self, audit: bool = True) -> bool:
        """Close this epoch's recording and, where ``audit`` (rank zero), join the previous audit and
        start this one's (in a thread with ``background``). Returns whether an audit started: not
        without a recording or when it holds no batch."""
        recorder, self.recorder = self.recorder, None
        if recorder is None:
            return False
        recorder.close()
        if not audit or recorder.batches == 0:
            return False
        self._wait()
        epoch, step, folder = self._epoch
        baseline = self._last_report if self.baseline == "previous" else self.baseline
        if not self.background:
            self._run(epoch, step, folder, baseline)
            return True
        self._thread = threading.Thread(target=self._run, args=(epoch, step, folder, baseline), name=f"lossaudit-epoch{epoch}")
        self._thread.start()
        return True

    def collect(self) -> list[Audit]:
        """The audits finished since the last call, without waiting."""
        if self._thread is not None and not self._thread.is_alive():
            self._wait()
        with self._lock:
            done, self._done = self._done, []
        return done

    def join(self) -> list[Audit]:
        """Wait for the audit running, then :meth:`collect`."""
        self._wait()
        return self.collect()

    def __getstate__(self) -> dict[str, Any]:
        """What a copy sent to another process gets (Lightning's ``ddp_spawn`` pickles the callbacks):
        everything but the audit running and its lock."""
        return {**self.__dict__, "_thread": None, "_lock": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, _lock=threading.Lock())

    def _wait(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _run(self, epoch: int, step: int, folder: Path, baseline: str | os.PathLike[str] | None) -> None:
        """Audit ``folder/run`` into ``folder/report.json``; the result goes to :meth:`collect`."""
        try:
            audit = self._audit(epoch, step, folder, baseline)
        except Exception as error:  # an audit that fails must not end the training it observes
            audit = Audit(epoch, step, folder, None, {}, error=f"{type(error).__name__}: {error}" if not isinstance(error, InputError) else str(error))
            LOG.error("lossaudit: the audit of epoch %d failed: %s", epoch, audit.error)
        with self._lock:
            self._done.append(audit)

    def _audit(self, epoch: int, step: int, folder: Path, baseline: str | os.PathLike[str] | None) -> Audit:
        from lossaudit.api import compare
        from lossaudit.render.compare import render_json

        report = compare(folder / "run", baseline=baseline, **self.compare_options)
        document = report.to_dict()
        (folder / "report.json").write_text(render_json(document), encoding="utf-8")
        if self.plot:
            from lossaudit.render.plots import plot_report

            plot_report(document, folder / "report.png")
        self._last_report = folder / "report.json"
        moved = moved_reason(document["baseline"], self.fail_if_share_moves) if "baseline" in document else None
        stop = moved is not None and self.on_move == "stop"
        if moved is not None:
            LOG.warning("lossaudit: epoch %d: %s%s", epoch, moved, "; stopping training" if stop else "")
        return Audit(epoch, step, folder, report, headline(report, self.prefix), moved, stop)


def _detached(value: object) -> object:
    """A tensor without its autograd graph (the Recorder only reads it); anything else as is."""
    detach = getattr(value, "detach", None)
    return detach() if callable(detach) else value


def _check(audits: EpochAudits) -> None:
    """Refuse settings that would only fail at the first audit, epochs later."""
    from lossaudit.api import compare
    from lossaudit.record.sampler import EASY_EDGE, _check_settings

    if audits.on_move not in ("warn", "stop"):
        raise InputError(f"on_move is {audits.on_move!r}; expected 'warn' or 'stop'")
    if audits.fail_if_share_moves is not None and not audits.fail_if_share_moves >= 0:
        raise InputError(f"fail_if_share_moves is {audits.fail_if_share_moves}; expected percentage points >= 0")
    try:
        _check_settings(audits.rate, audits.target_size, EASY_EDGE)
    except ValueError as error:
        raise InputError(str(error)) from None
    unknown = sorted(set(audits.compare_options) - set(inspect.signature(compare).parameters) - {"paths", "baseline"})
    reserved = sorted({"paths", "logits", "targets", "mask", "weights", "model", "data", "baseline"} & set(audits.compare_options))
    if reserved:
        raise InputError(f"compare_options: {', '.join(reserved)} are set by the audit itself (baseline: the audit's own argument)")
    if unknown:
        from lossaudit.losses.registry import PARAMS

        unknown = [name for name in unknown if name not in PARAMS]
        if unknown:
            raise InputError(f"compare_options: {', '.join(unknown)} are not options of lossaudit.compare")
    if audits.baseline not in (None, "previous"):
        from lossaudit.compare.report.baseline import read_report

        read_report(Path(audits.baseline))
    if audits.plot:
        import importlib.util

        from lossaudit.render.plots import MISSING_EXTRA

        if importlib.util.find_spec("matplotlib") is None:
            raise InputError(MISSING_EXTRA.replace("--plot", "plot=True"))
