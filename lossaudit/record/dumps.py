"""``lossaudit sample``'s work: the weighted sample of an existing dump, written as a run
(:func:`sample_dumps`). The dump is read the way ``compare`` reads it (:func:`~lossaudit.io.dataset.plan`,
in row chunks), each chunk sampled by :func:`~lossaudit.record.sampler.select`, and each batch of the
dump becomes one batch of the run."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import groupby
from pathlib import Path

import numpy as np

from lossaudit._lazy import torch
from lossaudit.errors import InputError
from lossaudit.io.dataset import CLASS_NAMES_KEY, LoadOptions, plan
from lossaudit.io.readers import read_batches
from lossaudit.record.recorder import RunWriter
from lossaudit.record.sampler import EASY_EDGE, kept_elements, pack, select
from lossaudit.render.formatting import plural

CHUNK_ROWS = 1 << 16
"""Rows decoded and sampled at a time."""


@dataclass
class Written:
    """What :func:`sample_dumps` wrote."""

    folder: Path
    run_id: str
    batches: int
    population_elements: int
    sampled_elements: int


def sample_dumps(
    paths: list[Path],
    output: Path,
    rate: float = 0.01,
    target_size: int | None = None,
    easy_edge: float = EASY_EDGE,
    seed: int | None = None,
    options: LoadOptions = LoadOptions(),
) -> Written:
    """Write a weighted sample of the dumps ``paths`` into the new run folder ``output``.

    Each batch of the dump is read in chunks of :data:`CHUNK_ROWS` rows; with ``target_size`` (per
    batch), a chunk's share of it is proportional to its rows. Class names the dump holds are kept.
    A weighted dump is sampled again (two-phase sampling: the weights multiply; see
    :func:`~lossaudit.record.sampler.select`), keeping its population (:func:`_carry_population`).

    Raises:
        InputError: what ``compare`` would refuse, heatmap targets (a sample is 2-D and would be
            read as soft targets), class ids out of range, a weighted dump with ignored or masked
            elements, or an ``output`` that exists and is not empty.
    """
    data = plan(read_batches(paths), options)
    info = data.info
    if info.encoding == "heatmap":
        raise InputError(
            f"{info.files[0]}: heatmap targets (positives == 1): a sample's rows are no longer maps and would be read as soft "
            "targets (positives >= 0.5); pass --targets soft to sample them as soft targets"
        )
    created = not output.exists()
    try:
        writer = RunWriter(output)
    except OSError as error:
        raise InputError(f"--output {error}") from None
    written: list[Path] = []
    try:
        population, sampled = _sample(data, writer, written, rate, target_size, easy_edge, seed, CLASS_NAMES_KEY in data.sources[0].batch.keys())
    except BaseException:
        for path in written:  # no half-written run: what this call wrote goes, and the folder if it made it
            path.unlink(missing_ok=True)
        if created and not any(output.iterdir()):
            output.rmdir()
        raise
    return Written(writer.folder, writer.run_id, writer.next, population, sampled)


def _carry_population(batch: dict[str, np.ndarray], weighting, estimated_rows: float) -> None:
    """A weighted batch sampled again: its population is the original batch's (the recorded
    ``population_rows`` and ``population_elements``, else the Horvitz-Thompson estimates of the
    sample read), its ``ignored`` counts carry over, and its rate is the product of the two phases'
    (-1 when either came from a target size)."""
    recorded = weighting.scalars
    rows = recorded.get("population_rows", round(estimated_rows))
    batch["population_rows"] = np.asarray(round(rows), dtype=np.int64)
    classes = batch["logits"].shape[1]
    batch["population_elements"] = np.asarray(round(recorded.get("population_elements", rows * classes)), dtype=np.int64)
    earlier = recorded.get("sample_rate", -1.0)
    now = float(batch["sample_rate"])
    batch["sample_rate"] = np.asarray(earlier * now if earlier > 0 and now > 0 else -1.0)
    if weighting.ignored is not None:
        batch["ignored"] = batch.get("ignored", 0) + np.asarray(weighting.ignored, dtype=np.int64)


def _sample(
    data, writer: RunWriter, written: list[Path], rate: float, target_size: int | None, easy_edge: float, seed: int | None, with_names: bool
) -> tuple[int, int]:
    """Sample every batch of ``data`` (a :class:`~lossaudit.io.dataset.DataPlan`) into ``writer``'s
    run, appending each file to ``written``; returns (population elements, sampled elements)."""
    info = data.info
    generator = None if seed is None else torch.Generator().manual_seed(seed)
    names = np.asarray(info.class_names) if with_names else None
    population = sampled = 0
    buffer = np.empty((min(CHUNK_ROWS, max(info.num_rows, 1)), info.num_classes), dtype=np.float32)
    with data.reader() as reader:
        for index, spans in groupby(data.ranges(CHUNK_ROWS), key=lambda span: span[0]):
            selections, population_rows = [], 0.0
            for span in spans:
                chunk = reader.decode(span, out=buffer)
                if chunk.out_of_range.any():
                    labels = ", ".join(map(str, sorted(info.out_of_range_labels)))
                    raise InputError(
                        f"{info.files[index]}: {plural(int(chunk.out_of_range.sum()), 'row')} with a class id that is no class, background or ignore label "
                        f"({labels}); fix --background-index, --ignore-index or --label-base"
                    )
                part = None if target_size is None else max(1, round(target_size * len(chunk.logits) / data.sources[index].rows))
                try:
                    selections.append(select(chunk.logits, chunk.targets, rate, part, easy_edge, ~chunk.ignored, generator, chunk.weights, chunk.padding))
                except ValueError as error:  # a weighted batch that cannot be sampled again
                    raise InputError(f"{info.files[index]}: {error}") from None
                population_rows += float(chunk.row_weights.sum()) if chunk.weights is not None else 0
            batch = pack(selections)
            if data.sources[index].weighting is not None:
                _carry_population(batch, data.sources[index].weighting, population_rows)
            if names is not None:
                batch["class_names"] = names
            written.append(writer.write(batch))
            population += int(batch["population_elements"])
            sampled += kept_elements(batch)
    data.finish_pass()
    return population, sampled
