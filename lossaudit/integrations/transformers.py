"""A Hugging Face ``transformers.Trainer`` callback that audits the evaluation logits (docs/training.md).

``pip install 'lossaudit[transformers]'``; this module imports ``transformers``, and nothing else
of lossaudit imports this module.

The Trainer hands its callbacks metrics, not logits, so :meth:`LossAuditCallback.attach` also wraps
the trainer's ``preprocess_logits_for_metrics``: it sees each evaluation batch's logits and labels
on the device, before they are gathered, and records them there. Labels equal to ``ignore_index``
(-100, the Trainer's padding and the models' ignore label) are ignored elements.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from transformers import Trainer, TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from lossaudit.integrations.audit import Audit, EpochAudits, OnMove

Preprocess = Callable[[Any, Any], Any]


class LossAuditCallback(TrainerCallback):
    """Record each evaluation's logits and labels, audit them with :func:`lossaudit.compare` in the
    background, and log the headline numbers through the Trainer's ``report_to`` loggers.

    Use: ``LossAuditCallback(...).attach(trainer)`` (which returns the callback) before ``trainer.train()``.

    At each evaluation's end (``on_evaluate``) the recording closes, the previous evaluation's audit
    is joined and logged, and this one's starts in a thread; an audit that finishes earlier is
    logged at the next step's end. Logged: the :func:`~lossaudit.integrations.audit.headline`
    scalars, at the step of the evaluation they audit, through the Trainer's logging callbacks
    (TensorBoard, MLflow, W&B, ...: ``report_to``), with the stop reason as text when there is one;
    the JSON report is written to ``FOLDER/epochEEE-stepSSSSSSS/report.json`` beside its recording
    (``run/``), and sent as an artifact to MLflow's and W&B's active runs when ``report_to`` names
    them. Under DDP each process records its own batches into the one run (every process must see
    at least one evaluation batch: the Recorder's constructor is a collective) and the main process
    audits; a stop is applied on every process at the next evaluation (at once on one process).

    Args:
        folder: where the recordings and reports go; default ``{args.output_dir}/lossaudit``.
        ignore_index: the label of ignored positions.
        prefix: the scalars' name prefix; ``eval_`` as the Trainer's evaluation metrics, which its
            TensorBoard and W&B loggers show under ``eval/``.
        rate: the Recorder's sampling rate of the easy negatives (as in :class:`lossaudit.integrations.audit.EpochAudits`).
        target_size: instead of ``rate``: about this many easy negatives kept per batch (the Recorder's).
        seed: the Recorder's random seed.
        baseline: ``"previous"``, a ``compare --format json`` report's path, or None.
        fail_if_share_moves: percentage points, as ``compare --fail-if-share-moves``.
        on_move: ``"warn"`` or ``"stop"`` training when the shares move that far.
        background: audit in a thread.
        plot: also write the report's figure (the ``plot`` extra).
        compare_options: keyword arguments of :func:`lossaudit.compare`.
    """

    def __init__(
        self,
        folder: str | os.PathLike[str] | None = None,
        *,
        ignore_index: int = -100,
        rate: float = 0.01,
        target_size: int | None = None,
        seed: int | None = None,
        baseline: str | os.PathLike[str] | None = "previous",
        fail_if_share_moves: float | None = None,
        on_move: OnMove = "warn",
        background: bool = True,
        plot: bool = False,
        prefix: str = "eval_lossaudit/",
        compare_options: Mapping[str, Any] | None = None,
    ):
        self.folder = None if folder is None else Path(folder)
        self.ignore_index = ignore_index
        self.audits = EpochAudits(
            ".",
            rate=rate,
            target_size=target_size,
            seed=seed,
            baseline=baseline,
            fail_if_share_moves=fail_if_share_moves,
            on_move=on_move,
            background=background,
            plot=plot,
            prefix=prefix,
            compare_options=compare_options,
        )
        self.logged: list[Audit] = []
        """Every audit logged so far (main process)."""
        self.trainer: Trainer | None = None
        self._user_preprocess: Preprocess | None = None
        self._stop_asked = False

    def attach(self, trainer: Trainer) -> LossAuditCallback:
        """Hook into ``trainer``: its ``preprocess_logits_for_metrics`` records (then calls the one it
        had, if any), its ``compute_metrics``, if it had none, becomes one that returns no metric (the
        Trainer computes the logits only for one), and this callback runs before its loggers'."""
        if self.trainer is not None:
            raise ValueError("LossAuditCallback.attach: this callback is attached to a trainer already; make one per trainer")
        self.trainer = trainer
        self.audits.folder = self.folder if self.folder is not None else Path(trainer.args.output_dir or ".") / "lossaudit"
        self._user_preprocess = trainer.preprocess_logits_for_metrics
        trainer.preprocess_logits_for_metrics = self.preprocess_logits_for_metrics
        if trainer.compute_metrics is None:
            trainer.compute_metrics = _no_metrics
        trainer.callback_handler.callbacks.insert(0, self)
        return self

    def preprocess_logits_for_metrics(self, logits: Any, labels: Any) -> Any:
        """Record one evaluation batch; returns what the Trainer gathers for ``compute_metrics``:
        the user's own preprocessing's output, the logits when the user has a ``compute_metrics`` of
        their own, else one number per batch (nothing else is gathered)."""
        trainer = self._attached()
        scores = logits[0] if isinstance(logits, (tuple, list)) else logits  # a model's further outputs follow its logits
        if labels is None:
            raise ValueError("LossAuditCallback: the evaluation batches have no labels (the dataset's 'labels' column, or TrainingArguments(label_names=...))")
        if self.audits.recorder is None:
            self.audits.start(int(trainer.state.epoch or 0), trainer.state.global_step)
        self.audits.add(scores, labels.masked_fill(labels == self.ignore_index, -1))
        if self._user_preprocess is not None:
            return self._user_preprocess(logits, labels)
        return logits if trainer.compute_metrics is not _no_metrics else scores.new_zeros(1)

    def on_evaluate(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> TrainerControl:
        import torch.distributed as dist

        distributed = dist.is_available() and dist.is_initialized()
        if distributed:
            dist.barrier()  # every process's files are written
        self.audits.finish(audit=state.is_world_process_zero)
        if state.is_world_process_zero:
            self._log(self.audits.collect() if self._attached().is_in_train else self.audits.join())  # trainer.evaluate(): nothing comes after
        stop = [self._stop_asked]
        if distributed:
            dist.broadcast_object_list(stop, src=0)
        control.should_training_stop |= bool(stop[0])
        return control

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> TrainerControl:
        if state.is_world_process_zero:
            self._log(self.audits.collect())
            if self._stop_asked and args.world_size == 1:
                control.should_training_stop = True
        return control

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        if state.is_world_process_zero:
            self._log(self.audits.join())

    def _attached(self) -> Trainer:
        if self.trainer is None:
            raise ValueError("LossAuditCallback: call .attach(trainer) (it records through the trainer's preprocess_logits_for_metrics)")
        return self.trainer

    def _log(self, done: list[Audit]) -> None:
        """Each audit's scalars (and stop reason) through the Trainer's logging callbacks, at the
        step of its evaluation; its report to MLflow and W&B."""
        trainer = self._attached()
        for audit in done:
            self.logged.append(audit)
            self._stop_asked |= audit.stop
            if audit.report is None:
                continue
            logs: dict[str, Any] = dict(audit.scalars)
            if audit.moved is not None:
                logs[f"{self.audits.prefix}moved"] = audit.moved
            trainer.state.log_history.append({**logs, "step": audit.step})
            at_audit = dataclasses.replace(trainer.state, global_step=audit.step)
            for callback in trainer.callback_handler.callbacks:
                if callback is not self:
                    callback.on_log(trainer.args, at_audit, trainer.control, logs=dict(logs))
            _artifacts(trainer.args.report_to, audit)


def _no_metrics(prediction: Any) -> dict[str, float]:
    """``compute_metrics`` for a Trainer that had none: no metric (lossaudit's come from the audit)."""
    return {}


def _artifacts(report_to: Any, audit: Audit) -> None:
    """The report as an artifact of the active MLflow / W&B run, when ``report_to`` names them (and
    they are installed); other loggers find it as a file under the output folder."""
    import importlib
    import importlib.util

    targets = {report_to} if isinstance(report_to, str) else set(report_to or ())
    files = [str(path) for path in (audit.report_path, audit.folder / "report.png") if path.is_file()]
    if "mlflow" in targets and importlib.util.find_spec("mlflow") is not None:
        mlflow = importlib.import_module("mlflow")
        if mlflow.active_run() is not None:
            for path in files:
                mlflow.log_artifact(path, artifact_path=f"lossaudit/{audit.folder.name}")
    if "wandb" in targets and importlib.util.find_spec("wandb") is not None:
        wandb = importlib.import_module("wandb")
        if wandb.run is not None:
            for path in files:
                wandb.save(path, base_path=str(audit.folder.parent), policy="now")
