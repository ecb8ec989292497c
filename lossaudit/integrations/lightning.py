"""A PyTorch Lightning callback that audits the validation outputs every epoch (docs/training.md).

``pip install 'lossaudit[lightning]'``; this module imports ``lightning``, and nothing else of
lossaudit imports this module.

The module exposes each batch's logits and targets in one of two ways:

- ``validation_step`` (``training_step`` with ``train=True``) returns a dict with the keys
  ``"logits"`` and ``"targets"`` (and optionally ``"mask"``; the names are the callback's
  ``logits_key``, ``targets_key`` and ``mask_key``), or
- the LightningModule defines ``lossaudit_outputs(self, outputs, batch)`` returning
  ``(logits, targets)`` or ``(logits, targets, mask)``.

Logits are ``(N, C)``, ``(B, A, C)`` or ``(B, C, H, W)`` in float32, float16 or bfloat16 (mixed
precision's as they come); targets are class ids shaped like the rows (background = C, ignore = -1)
or one-hot / soft targets shaped like the logits (see :class:`lossaudit.Recorder`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.loggers import Logger, MLFlowLogger, TensorBoardLogger, WandbLogger

from lossaudit.integrations.audit import Audit, EpochAudits, OnMove

HOOK = "lossaudit_outputs"
"""The LightningModule method that gives a batch's ``(logits, targets[, mask])``."""


class LossAuditCallback(pl.Callback):
    """Record the validation logits and targets of each epoch, audit them with
    :func:`lossaudit.compare` in the background, and log the headline numbers through every logger
    of the trainer.

    At each validation epoch's end (the sanity check's excepted) the epoch's recording closes, the
    previous epoch's audit is joined and logged, and this epoch's starts in a thread; an audit that
    finishes earlier is logged at the next training batch's end. Logged: the
    :func:`~lossaudit.integrations.audit.headline` scalars at the step of the validation they
    audit, through ``trainer.loggers`` (TensorBoard, MLflow, W&B, CSV alike); the JSON report is
    written to ``FOLDER/epochEEE-stepSSSSSSS/report.json`` (beside its recording, ``run/``) and sent
    through the artifact API of MLflow and W&B loggers. Under DDP every rank records its own
    batches into the one run and rank zero audits and logs; a stop is decided on rank zero and
    applied on every rank at the next validation's end (at once on one process).

    Args:
        folder: where the epochs' recordings and reports go; default ``{trainer.log_dir}/lossaudit``
            (the trainer's ``default_root_dir`` without a logger).
        train: also record and audit the training batches (``training_step``'s outputs), each
            training epoch, logged with the prefix ``{prefix}train/``.
        logits_key: the logits' key in the step's output dict.
        targets_key: the targets' key in it.
        mask_key: the (optional) mask's key in it.
        rate: the Recorder's sampling rate of the easy negatives (``rate=1`` keeps all).
        target_size: instead of ``rate``: about this many easy negatives kept per batch (the Recorder's).
        seed: the Recorder's random seed.
        baseline: ``"previous"`` (each epoch compared with the last), a ``compare --format json``
            report's path, or None.
        fail_if_share_moves: percentage points, as ``compare --fail-if-share-moves``.
        on_move: ``"warn"`` or ``"stop"`` training when the shares move that far (the reason is logged
            to the ``lossaudit`` logger either way, and as the text ``{prefix}moved`` to TensorBoard).
        background: audit in a thread (False: at the validation's end, before training goes on).
        plot: also write the report's figure, ``report.png`` (the ``plot`` extra).
        prefix: the scalars' name prefix.
        compare_options: keyword arguments of :func:`lossaudit.compare` (``class_names``, ``losses``, ...).
    """

    def __init__(
        self,
        folder: str | os.PathLike[str] | None = None,
        *,
        train: bool = False,
        logits_key: str = "logits",
        targets_key: str = "targets",
        mask_key: str = "mask",
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
        self.folder = None if folder is None else Path(folder)
        self.keys = (logits_key, targets_key, mask_key)
        settings: dict[str, Any] = dict(
            rate=rate,
            target_size=target_size,
            seed=seed,
            baseline=baseline,
            fail_if_share_moves=fail_if_share_moves,
            on_move=on_move,
            background=background,
            plot=plot,
            compare_options=compare_options,
        )
        self.audits: dict[str, EpochAudits] = {"val": EpochAudits(".", prefix=prefix, **settings)}
        if train:
            self.audits["train"] = EpochAudits(".", prefix=f"{prefix}train/", **settings)
        self.logged: list[Audit] = []
        """Every audit logged so far (rank zero)."""
        self._stop_asked = False

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        root = self.folder if self.folder is not None else Path(trainer.log_dir or trainer.default_root_dir) / "lossaudit"  # log_dir: a collective
        for part, audits in self.audits.items():
            audits.folder = root / part

    # --- recording -------------------------------------------------------------------------

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self.audits["val"].start(trainer.current_epoch, trainer.global_step)

    def on_validation_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        if not trainer.sanity_checking:
            self.audits["val"].add(*self._outputs(pl_module, outputs, batch, "validation_step"))

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if "train" in self.audits:
            self.audits["train"].start(trainer.current_epoch, trainer.global_step)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        if "train" in self.audits:
            self.audits["train"].add(*self._outputs(pl_module, outputs, batch, "training_step"))
        if trainer.is_global_zero:
            self._log(trainer, [audit for audits in self.audits.values() for audit in audits.collect()])
            if self._stop_asked and trainer.world_size == 1:
                trainer.should_stop = True

    def _outputs(self, pl_module: pl.LightningModule, outputs: Any, batch: Any, step: str) -> tuple[Any, ...]:
        """``(logits, targets, mask)`` of a batch, from the module's hook or the step's output dict."""
        hook = getattr(pl_module, HOOK, None)
        if callable(hook):
            given = tuple(hook(outputs, batch))
            if len(given) not in (2, 3):
                raise ValueError(f"{type(pl_module).__name__}.{HOOK} returned {len(given)} values; expected (logits, targets) or (logits, targets, mask)")
            return given if len(given) == 3 else (*given, None)
        logits, targets, mask = self.keys
        if not isinstance(outputs, Mapping) or logits not in outputs or targets not in outputs:
            got = f"a dict with keys {', '.join(map(repr, outputs))}" if isinstance(outputs, Mapping) else type(outputs).__name__
            raise ValueError(
                f"LossAuditCallback: {type(pl_module).__name__}.{step} returned {got}; expected a dict with {logits!r} and {targets!r} "
                f"(and optionally {mask!r}), or define {HOOK}(self, outputs, batch) -> (logits, targets)"
            )
        return outputs[logits], outputs[targets], outputs.get(mask)

    # --- auditing --------------------------------------------------------------------------

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._finish(trainer, "val")

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if "train" in self.audits:
            self._finish(trainer, "train")

    def _finish(self, trainer: pl.Trainer, part: str) -> None:
        """Every rank's files written, rank zero joins the last audit, starts this one and logs what
        is done; then every rank learns whether to stop (a collective)."""
        trainer.strategy.barrier("lossaudit")
        audits = self.audits[part]
        audits.finish(audit=trainer.is_global_zero)
        if trainer.is_global_zero:
            self._log(trainer, audits.collect())
        if trainer.strategy.reduce_boolean_decision(self._stop_asked, all=False):
            trainer.should_stop = True

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.state.fn != "fit":  # trainer.validate(): nothing comes after to join it
            self._join(trainer)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._join(trainer)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        for audits in self.audits.values():
            audits.join()

    def _join(self, trainer: pl.Trainer) -> None:
        if trainer.is_global_zero:
            self._log(trainer, [audit for audits in self.audits.values() for audit in audits.join()])

    def _log(self, trainer: pl.Trainer, done: list[Audit]) -> None:
        """Log each audit's scalars at its own step through every logger, and its report as an artifact."""
        for audit in done:
            self.logged.append(audit)
            self._stop_asked |= audit.stop
            if audit.report is None:
                continue
            for logger in trainer.loggers:
                logger.log_metrics(audit.scalars, step=audit.step)
                if audit.moved is not None and isinstance(logger, TensorBoardLogger):
                    logger.experiment.add_text(f"{self.audits[audit.folder.parent.name].prefix}moved", audit.moved, audit.step)
                _artifact(logger, audit)
                logger.save()


def _artifact(logger: Logger, audit: Audit) -> None:
    """The report through the logger's artifact API, where it has one (MLflow, W&B); other loggers
    (TensorBoard, CSV) find it as a file in the log folder."""
    files = [path for path in (audit.report_path, audit.folder / "report.png") if path.is_file()]
    where = f"lossaudit/{audit.folder.parent.name}/{audit.folder.name}"
    if isinstance(logger, MLFlowLogger):
        for path in files:
            logger.experiment.log_artifact(logger.run_id, str(path), artifact_path=where)
    elif isinstance(logger, WandbLogger):
        for path in files:
            logger.experiment.save(str(path), base_path=str(audit.folder.parent.parent), policy="now")
