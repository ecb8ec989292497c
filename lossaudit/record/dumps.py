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
from lossaudit.io.dataset.options import WEIGHTS_KEY
from lossaudit.io.readers import read_batches
from lossaudit.record.recorder import RunWriter
from lossaudit.record.sampler import EASY_EDGE, pack, select
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


def sample_dumps(paths: list[Path], output: Path, rate: float = 0.01, target_size: int | None = None, easy_edge: float = EASY_EDGE,
                 seed: int | None = None, options: LoadOptions = LoadOptions()) -> Written:
    """Write a weighted sample of the dumps ``paths`` into the new run folder ``output``.

    Each batch of the dump is read in chunks of :data:`CHUNK_ROWS` rows; with ``target_size`` (per
    batch), a chunk's share of it is proportional to its rows. Class names the dump holds are kept.

    Raises:
        InputError: what ``compare`` would refuse, a weighted dump (sampling a sample again is not
            supported), heatmap targets (a sample is 2-D and would be read as soft targets), class
            ids out of range, or an ``output`` that exists and is not empty.
    """
    batches = read_batches(paths)
    for batch in batches:
        if WEIGHTS_KEY in batch.keys():
            raise InputError(f"{batch.source}: key '{WEIGHTS_KEY}': the dump is already a weighted sample; lossaudit sample reads unweighted dumps "
                             "(sampling a sample again is not supported: sample the original dump)")
    data = plan(batches, options)
    info = data.info
    if info.encoding == "heatmap":
        raise InputError(f"{info.files[0]}: heatmap targets (positives == 1): a sample's rows are no longer maps and would be read as soft "
                         "targets (positives >= 0.5); pass --targets soft to sample them as soft targets")
    created = not output.exists()
    try:
        writer = RunWriter(output)
    except OSError as error:
        raise InputError(f"--output {error}") from None
    written: list[Path] = []
    try:
        population, sampled = _sample(data, writer, written, rate, target_size, easy_edge, seed, CLASS_NAMES_KEY in batches[0].keys())
    except BaseException:
        for path in written:  # no half-written run: what this call wrote goes, and the folder if it made it
            path.unlink(missing_ok=True)
        if created and not any(output.iterdir()):
            output.rmdir()
        raise
    return Written(writer.folder, writer.run_id, writer.next, population, sampled)


def _sample(data, writer: RunWriter, written: list[Path], rate: float, target_size: int | None, easy_edge: float, seed: int | None,
            with_names: bool) -> tuple[int, int]:
    """Sample every batch of ``data`` (a :class:`~lossaudit.io.dataset.DataPlan`) into ``writer``'s
    run, appending each file to ``written``; returns (population elements, sampled elements)."""
    info = data.info
    generator = None if seed is None else torch.Generator().manual_seed(seed)
    names = np.asarray(info.class_names) if with_names else None
    population = sampled = 0
    buffer = np.empty((min(CHUNK_ROWS, max(info.num_rows, 1)), info.num_classes), dtype=np.float32)
    with data.reader() as reader:
        for index, spans in groupby(data.ranges(CHUNK_ROWS), key=lambda span: span[0]):
            selections = []
            for span in spans:
                chunk = reader.decode(span, out=buffer)
                if chunk.out_of_range.any():
                    labels = ", ".join(map(str, sorted(info.out_of_range_labels)))
                    raise InputError(f"{info.files[index]}: {plural(int(chunk.out_of_range.sum()), 'row')} with a class id that is no class, background or ignore label "
                                     f"({labels}); fix --background-index, --ignore-index or --label-base")
                part = None if target_size is None else max(1, round(target_size * len(chunk.logits) / data.sources[index].rows))
                selections.append(select(chunk.logits, chunk.targets, rate, part, easy_edge, ~chunk.ignored, generator))
            batch = pack(selections)
            if names is not None:
                batch["class_names"] = names
            written.append(writer.write(batch))
            population += int(batch["population_elements"])
            sampled += int(np.count_nonzero(~batch["padding"]))
    data.finish_pass()
    return population, sampled
