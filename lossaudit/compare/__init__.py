"""``lossaudit compare``: how cross-entropy, focal, GHM and related losses weigh saved predictions.

The package is also callable: ``lossaudit.compare(...)`` is :func:`lossaudit.api.compare` (see
:mod:`lossaudit._callable`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, cast

from lossaudit.errors import InputError
from lossaudit.losses.registry import PARAMS, defaults_for, parse_losses

if TYPE_CHECKING:
    import numpy as np

    from lossaudit.io.readers import ArrayFile
    from lossaudit.losses.spec import PerClassParam
    from lossaudit.model.inference import RunOptions

__all__ = ["ModelSource", "default_losses", "parse_losses", "run"]


def default_losses(info) -> tuple[str, ...]:
    """The losses compared when ``--losses`` is not given, by the data (a
    :class:`~lossaudit.io.dataset.DataInfo`): each registry entry's ``default_when``
    (:func:`lossaudit.losses.registry.defaults_for`): ``ce, bce, focal, softmax-focal, ghm`` on any
    data, plus ``centernet`` for heatmap targets, ``qfl`` and ``vfl`` for soft (IoU-quality)
    targets, ``asl`` for multi-label one-hot or soft targets (a row with two targets ≥ 0.5)."""
    return defaults_for(info)


@dataclass(frozen=True)
class ModelSource:
    """``compare --model``: a checkpoint to run on ``--data`` instead of reading dumps."""

    checkpoint: Path
    run: RunOptions
    arch: str | None = None
    init: dict = field(default_factory=dict)
    trust: bool = False
    save_logits: Path | None = None


def _model_batch(source: ModelSource, timeout: float | None = None, memory_limit_mb: int | None = None) -> tuple[ArrayFile, dict]:
    """Run the checkpoint's model; returns the batch of logits and targets and what to report.
    The ``--arch`` module's import, its constructor and each batch's forward pass run under
    ``timeout`` seconds and ``memory_limit_mb`` MiB (:func:`lossaudit.model.inference.model_limits`)."""
    from lossaudit.io.dump import save
    from lossaudit.model.checkpoint import load_model
    from lossaudit.model.inference import check_device, model_limits, run_model

    device = check_device(source.run.device)
    limits = model_limits(timeout, memory_limit_mb, device)
    loaded = load_model(source.checkpoint, source.arch, source.init, source.trust, device, limits)
    batch, fixed = run_model(loaded.model, source.run, label=str(source.checkpoint), input_shape=loaded.input_shape, limits=limits, arch=source.arch)
    info = {
        "checkpoint": str(source.checkpoint),
        "kind": loaded.kind,
        "detail": loaded.detail
        + (
            f"; exported with a static batch of {fixed}: run at that size, the last batch padded and the padding's outputs dropped"
            if fixed and fixed != source.run.batch_size
            else ""
        ),
        "arch": source.arch,
        "data": str(source.run.data),
        "device": device,
        "batch_size": fixed or source.run.batch_size,
        "saved_logits": None,
    }
    if source.save_logits is not None:
        arrays = batch.arrays
        try:
            written = save(
                source.save_logits,
                logits=arrays["logits"],
                targets=arrays["targets"],
                class_names=cast("list[str] | None", arrays.get("class_names")),
                mask=arrays.get("mask"),
            )
        except FileExistsError:
            raise InputError(f"--save-logits {source.save_logits}: the file exists; lossaudit never overwrites it") from None
        except (ValueError, TypeError) as error:
            raise InputError(f"--save-logits {error}") from None
        info["saved_logits"] = str(written)
    return batch, info


def _recoverable(losses: tuple[str, ...], settings, info, explicit: bool) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(the losses that can be computed, those that cannot): from softmax probabilities
    (``info.inputs`` ``softmax-probs``) the logits are known only up to a per-row constant, which
    the softmax losses do not see and the sigmoid losses do, so the sigmoid losses are dropped.

    Raises:
        InputError: every loss asked for is a sigmoid loss, or a user loss's family is not declared.
    """
    if info.inputs != "softmax-probs":
        return losses, ()
    undeclared = [loss for loss in losses if settings.family(loss) is None]
    if undeclared:
        raise InputError(
            f"--inputs softmax-probs: declare the family of {', '.join(undeclared)} (name it ending @softmax): a sigmoid loss cannot "
            "be computed from softmax probabilities, so lossaudit does not infer it from them"
        )
    kept = tuple(loss for loss in losses if settings.family(loss) == "softmax")
    skipped = tuple(loss for loss in losses if loss not in kept)
    if not kept:
        asked = "--losses " + ",".join(losses) if explicit else "the default losses"
        raise InputError(
            f"--inputs softmax-probs: {asked} are sigmoid losses, which softmax probabilities cannot give (the logits are known "
            "only up to a per-row constant); ask for a softmax loss (ce, softmax-focal, cb-ce, logit-adjusted-ce) or dump the logits"
        )
    return kept, skipped


def _imbalance_advice(plan, settings) -> tuple[np.ndarray | None, tuple[str, ...]]:
    """``(the class counts, the losses to compute besides settings.losses)`` for the imbalance
    advice (:func:`lossaudit.compare.report.diagnosis.advice`): when the dump's class counts
    (``plan.class_target_sums()``, one more read of the targets, not of the logits) have rare
    classes (:func:`lossaudit.compare.report.build.rare_classes`), the advice losses that were not
    asked for (logit-adjusted-ce only when every class has a target; no sigmoid loss from softmax
    probabilities). ``(None, ())`` for heatmaps and balanced data."""
    from lossaudit.compare.report.build import rare_classes
    from lossaudit.compare.report.diagnosis import ADVICE_LOSSES
    from lossaudit.losses.balanced import LOGIT_ADJUSTED_CE

    info = plan.info
    if info.encoding == "heatmap" or info.num_classes < 2:
        return None, ()
    counts = plan.class_target_sums()
    if not rare_classes(counts)[0].any():
        return counts, ()
    wanted = ADVICE_LOSSES["softmax"] + (() if info.inputs == "softmax-probs" else ADVICE_LOSSES["sigmoid"])
    usable = [loss for loss in wanted if loss != LOGIT_ADJUSTED_CE or (counts > 0).all()]
    return counts, tuple(loss for loss in usable if loss not in settings.losses)


def run(
    paths: list[Path],
    load_options,
    settings,
    losses: tuple[str, ...] | None,
    model: ModelSource | None = None,
    arrays: dict | None = None,
    timeout: float = 10.0,
    memory_limit_mb: int | None = None,
) -> dict:
    """Read the dumps (or run the model, or take ``arrays``: ``{"logits", "targets"[, "mask",
    "class_names"]}`` numpy arrays) in one streaming pass, and return the report (see
    :mod:`lossaudit.compare.report.build`). ``losses`` None means the defaults of :func:`default_losses`
    (then ``softmax-background`` and ``softmax-multi-hot`` do not gate ``--strict``). The full-tensor engine (:func:`lossaudit.compare.oracle.tally`) computes the
    same numbers and is the tests' oracle. ``settings.user_losses`` (the user's own losses, named in
    ``losses``) are computed in a child process, each call under ``timeout`` seconds and the
    process under ``memory_limit_mb`` (:mod:`lossaudit.compare.engine.user`)."""
    from lossaudit.compare.engine.stream import stream_tally
    from lossaudit.compare.report.build import build_report
    from lossaudit.io.dataset import plan
    from lossaudit.io.readers import ArrayFile, expand_paths, read_batches
    from lossaudit.render.progress import reading_status, tally_progress

    if sum(map(bool, (paths, model, arrays))) > 1:
        raise InputError("pass prediction dumps, --model with --data, or arrays (logits=, targets=), not both")
    if not (paths or model or arrays):
        raise InputError("nothing to compare: pass prediction dumps, or --model CHECKPOINT --data INPUTS")
    model_info = None
    if model is not None:
        batch, model_info = _model_batch(model, timeout, memory_limit_mb)
        data = plan([batch], load_options)
    elif arrays:
        data = plan([ArrayFile(source="arrays", arrays=dict(arrays))], load_options)
    else:
        with reading_status(sum(file.stat().st_size for file in expand_paths(paths))):
            data = plan(read_batches(paths), load_options)
    explicit = losses is not None
    if losses is None:
        losses = default_losses(data.info)
    losses, skipped = _recoverable(losses, settings, data.info, explicit)
    settings = replace(settings, losses=losses)
    if settings.alpha_per_class is not None:
        cast("PerClassParam", PARAMS["alpha_per_class"]).check_classes(settings.alpha_per_class, data.info.num_classes)
    registry = replace(settings, losses=tuple(loss for loss in losses if settings.user(loss) is None), user_losses=())
    counts, advice = _imbalance_advice(data, registry)
    with tally_progress(data.info.num_rows, data.info.num_classes) as progress:
        tally = stream_tally(data, replace(registry, losses=registry.losses + advice), progress=progress, class_counts=counts)
    if settings.user_losses:
        from lossaudit.compare.engine.user import merge, user_tally

        tables, users = user_tally(data, settings, timeout, memory_limit_mb)
        merge(tally, tables)
        settings = replace(settings, user_losses=users)
    report = build_report(data.info, settings, tally, explicit, skipped=skipped)
    if model_info is not None:
        report["input"]["model"] = model_info
    return report
