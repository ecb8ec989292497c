"""``lossaudit.Recorder``: weighted samples of a loop's batches, written as one run that
``lossaudit compare RUN/`` reads; :class:`RunWriter` is its file side (also ``lossaudit sample``'s).

A run is a folder of ``rank{r:03d}-{k:06d}.npz`` files (rank r's k-th batch), all with one run id.
Under ``torch.distributed`` every rank writes its own files into the one run: rank 0 checks the
folder, creates it and picks the run id, and the other ranks receive it (a broadcast, which also
waits for the folder to exist).
"""

from __future__ import annotations

import os
import re
import uuid
import zipfile
from pathlib import Path

import numpy as np

from lossaudit._lazy import torch
from lossaudit.io.dump import RUN_ID_KEY, save_sample
from lossaudit.record.sampler import EASY_EDGE, _check_settings, kept_elements, sample_batch
from lossaudit.render.formatting import plural

FILE_PATTERN = re.compile(r"rank(\d{3,})-(\d{6,})\.npz")


_Decision = tuple[str | None, tuple[type[BaseException], str] | None]
"""What rank 0 decided about the run folder: ``(run_id, None)``, or ``(None, (error type, message))``."""


def _distributed() -> tuple[int, bool]:
    """(this process's rank, whether ``torch.distributed`` is initialised)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), True
    return 0, False


class RunWriter:
    """Writes the batches of one run into ``folder``, never over a file.

    Args:
        folder: the run's folder. It must not exist or be empty, unless ``resume``: then the files
            keep its run id and each rank's numbering goes on after its last file.
        resume: add to an existing run.
        hint: ends the error of a folder that is not empty (how to resume, where one can).

    Raises:
        FileExistsError: ``folder`` holds files and ``resume`` is False (on every rank).
        NotADirectoryError: ``folder`` is a file.
    """

    def __init__(self, folder: str | os.PathLike[str], resume: bool = False, hint: str = ""):
        self.folder = Path(folder)
        self.rank, distributed = _distributed()
        decision: _Decision | None = _open_run(self.folder, resume, hint) if self.rank == 0 else None
        if distributed:
            import torch.distributed as dist

            message = [decision]
            dist.broadcast_object_list(message, src=0)
            decision = message[0]
        assert decision is not None  # rank 0's, broadcast to the others
        run_id, error = decision
        if error is not None:
            raise error[0](error[1])
        assert run_id is not None  # _open_run gives a run id or an error
        self.run_id: str = run_id
        self.next = _next_index(self.folder, self.rank) if resume else 0

    def write(self, batch: dict[str, np.ndarray]) -> Path:
        """Write one weighted batch as this rank's next file; returns its path."""
        written = save_sample(self.folder / f"rank{self.rank:03d}-{self.next:06d}.npz", batch, self.run_id)
        self.next += 1
        return written


def _open_run(folder: Path, resume: bool, hint: str) -> _Decision:
    """Rank 0's checks: ``(run id, None)`` with the folder created, or ``(None, (error type, message))``
    (``hint`` ends the message of a folder that is not empty). Never raises: under DDP the other
    ranks wait for its answer."""
    try:
        if folder.exists() and not folder.is_dir():
            return None, (NotADirectoryError, f"{folder}: is a file; a run is written into a folder")
        present = sorted(folder.iterdir()) if folder.exists() else []
        if present and not resume:
            return None, (
                FileExistsError,
                f"{folder}: exists and holds {plural(len(present), 'item')}; a run is never written over another: choose a new folder{hint}",
            )
        run_id = _existing_run_id(present) or uuid.uuid4().hex[:12]
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        return None, (type(error), str(error))
    return run_id, None


def _existing_run_id(present: list[Path]) -> str | None:
    """The run id of the first run file among ``present``, or None.

    Raises:
        OSError: that file cannot be read as an ``.npz`` (the message names it).
    """
    for path in present:
        if FILE_PATTERN.fullmatch(path.name):
            try:
                with np.load(path, allow_pickle=False) as data:
                    return str(data[RUN_ID_KEY]) if RUN_ID_KEY in data.files else None
            except (OSError, ValueError, zipfile.BadZipFile) as error:
                raise OSError(f"{path}: cannot read the run id of the run to resume: {error}") from None
    return None


def _next_index(folder: Path, rank: int) -> int:
    """One more than the last batch number of ``rank``'s files in ``folder`` (0 without any)."""
    numbers = [int(match[2]) for path in folder.iterdir() if (match := FILE_PATTERN.fullmatch(path.name)) and int(match[1]) == rank]
    return max(numbers, default=-1) + 1


class Recorder:
    """Record weighted samples of batches into a run folder that ``lossaudit compare`` reads.

    Each :meth:`add` samples the batch on its own device (:func:`~lossaudit.record.sample_batch`:
    every row with a target and every element that is not easy kept, the easy negatives sampled at
    ``rate`` per class) and writes one file; only counters stay in memory between batches.

    Args:
        path: the run's folder: new or empty (else ``FileExistsError``), unless ``resume``.
        rate: the easy negatives' inclusion probability, in (0, 1].
        target_size: instead of ``rate``: about this many easy negatives per batch, ``target_size / C``
            per class.
        easy_edge: a negative with ``sigmoid(logit) < easy_edge`` is easy (default 0.1, ``compare``'s
            first difficulty edge).
        resume: add to the run already in ``path`` (its run id; each rank's numbering goes on).
        seed: seeds the sampling (each rank draws with ``seed + rank``); None draws from torch's
            default generator.

    Attributes:
        batches, population_elements, sampled_elements: counts so far (this rank).

    Example:
        >>> with lossaudit.Recorder("runs/val-sample/", rate=0.01) as recorder:  # doctest: +SKIP
        ...     for images, targets in loader:
        ...         recorder.add(model(images), targets)
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        rate: float = 0.01,
        target_size: int | None = None,
        easy_edge: float = EASY_EDGE,
        resume: bool = False,
        seed: int | None = None,
    ):
        _check_settings(rate, target_size, easy_edge)
        self.rate, self.target_size, self.easy_edge, self.seed = rate, target_size, easy_edge, seed
        self.writer = RunWriter(path, resume, hint=", or add to this run with Recorder(..., resume=True)")
        self.path = self.writer.folder
        self.batches = self.population_elements = self.sampled_elements = 0
        self._generators: dict[str, torch.Generator] = {}
        self._closed = False

    def add(self, logits: object, targets: object, mask: object = None) -> Path:
        """Sample one batch and write it; returns the file written.

        Args:
            logits: ``(N, C)``, ``(B, A, C)`` or ``(B, C, H, W)`` float32, float16 or bfloat16 logits.
            targets: class ids shaped like the rows (background = C, ignore = -1), or one-hot / soft
                targets shaped like the logits.
            mask: optional, 0 where a row or element is ignored; shaped like the rows or the logits.

        Raises:
            ValueError: shapes that do not fit, unknown class ids, or a closed recorder.
        """
        if self._closed:
            raise ValueError(f"this Recorder of {self.path} is closed")
        batch = sample_batch(logits, targets, self.rate, self.target_size, self.easy_edge, mask, self._generator(logits))
        written = self.writer.write(batch)
        self.batches += 1
        self.population_elements += int(batch["population_elements"])
        self.sampled_elements += kept_elements(batch)
        return written

    def _generator(self, logits: object) -> torch.Generator | None:
        """The seeded generator of the logits' device, or None without a seed."""
        if self.seed is None:
            return None
        device = logits.device if isinstance(logits, torch.Tensor) else torch.device("cpu")
        key = str(device)
        if key not in self._generators:
            self._generators[key] = torch.Generator(device=device).manual_seed(self.seed + self.writer.rank)
        return self._generators[key]

    def close(self) -> None:
        """End the recording (the files are complete as each :meth:`add` returns)."""
        self._closed = True

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Recorder({str(self.path)!r}, batches={self.batches}, sampled {self.sampled_elements} of {self.population_elements} elements)"
