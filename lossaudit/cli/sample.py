"""``lossaudit sample``: a weighted sample of an existing dump, written as a run that ``compare`` reads."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from lossaudit.cli.app import (
    BackgroundIndexOption,
    ClassDimOption,
    Command,
    IgnoreIndexOption,
    LabelBaseOption,
    LogitsKeyOption,
    TargetEncoding,
    TargetsKeyOption,
    TargetsOption,
    VerboseOption,
    app,
    fail,
    fail_internal,
)
from lossaudit.errors import InputError
from lossaudit.render.formatting import plural


@app.command(cls=Command)
def sample(
    paths: Annotated[
        list[Path],
        typer.Argument(
            help="Dumps: .npz, .npy, .pt/.pth files, or folders of them (one batch per file); a weighted sample is sampled again (its weights multiply).",
            show_default=False,
            metavar="DUMP",
        ),
    ],
    output: Annotated[
        Path,
        typer.Option(
            "--output",
            help="The run folder to write (rank000-000000.npz, ...: one file per batch of the dump); new or empty, never overwritten.",
            metavar="DIR",
            show_default=False,
            rich_help_panel="Sample",
        ),
    ],
    rate: Annotated[
        float,
        typer.Option(
            "--rate",
            help="Inclusion probability of the easy negatives, in (0, 1]: each is kept independently with it and weighs its inverse; every row with a target and every element that is not easy is kept with weight 1.",
            metavar="R",
            rich_help_panel="Sample",
        ),
    ] = 0.01,
    target_size: Annotated[
        Optional[int],
        typer.Option(
            "--target-size",
            help="Instead of --rate: about N easy negatives per batch, N/C per class (a class with fewer keeps them all).",
            metavar="N",
            show_default=False,
            rich_help_panel="Sample",
        ),
    ] = None,
    easy_edge: Annotated[
        float,
        typer.Option("--easy-edge", help="A negative with p below E is easy (compare's first difficulty edge).", metavar="E", rich_help_panel="Sample"),
    ] = 0.1,
    seed: Annotated[
        Optional[int],
        typer.Option(
            "--seed",
            help="Seed of the sampling, for a reproducible sample [default: a fresh one].",
            metavar="S",
            show_default=False,
            rich_help_panel="Sample",
        ),
    ] = None,
    logits_key: LogitsKeyOption = None,
    targets_key: TargetsKeyOption = None,
    targets: TargetsOption = TargetEncoding.auto,
    background_index: BackgroundIndexOption = None,
    ignore_index: IgnoreIndexOption = -1,
    class_dim: ClassDimOption = None,
    label_base: LabelBaseOption = 0,
    verbose: VerboseOption = False,
) -> None:
    """Write a weighted sample of a dump: every row with a target and every element that is not easy, and the easy negatives at --rate per class, as a run that compare reads (estimates with standard errors)."""
    try:
        from lossaudit.io.dataset import LoadOptions
        from lossaudit.record.dumps import sample_dumps

        if target_size is None and not 0 < rate <= 1:
            raise InputError(f"--rate {rate:g}: expected an inclusion probability in (0, 1]")
        if target_size is not None and target_size < 1:
            raise InputError(f"--target-size {target_size}: expected a number of elements, at least 1")
        if not 0 < easy_edge < 1:
            raise InputError(f"--easy-edge {easy_edge:g}: expected a probability in (0, 1)")
        options = LoadOptions(
            logits_key=logits_key,
            targets_key=targets_key,
            targets=TargetEncoding(targets).value,
            background_index=background_index,
            ignore_index=ignore_index,
            class_dim=class_dim,
            label_base=label_base,
        )
        written = sample_dumps(paths, output, rate, target_size, easy_edge, seed, options)
    except InputError as error:
        fail(str(error), verbose)
    except Exception as error:  # an internal error must not exit 1 by accident
        fail_internal(error, verbose)
    share = written.sampled_elements / max(written.population_elements, 1)
    print(
        f"{written.folder}: {plural(written.batches, 'file')} of run {written.run_id}: {written.sampled_elements:,} of "
        f"{written.population_elements:,} elements kept ({share:.2%}); read it with: lossaudit compare {written.folder}"
    )
