"""Record weighted samples of huge batches where they live (issue 24): :func:`sample_batch` samples
one batch, :class:`Recorder` writes a run of them that ``lossaudit compare`` reads as a dump.

Importing this package does not import torch; sampling does."""

from lossaudit.record.recorder import Recorder, RunWriter
from lossaudit.record.sampler import EASY_EDGE, pack, sample_batch, select

__all__ = ["EASY_EDGE", "Recorder", "RunWriter", "pack", "sample_batch", "select"]
