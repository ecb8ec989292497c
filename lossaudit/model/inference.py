"""Run a model over saved inputs for ``compare --model``: ``model.eval()``, ``torch.inference_mode()``,
batches of ``--batch-size`` on ``--device``, a transient progress bar on stderr when it is a
terminal. The result is a batch of arrays that :func:`lossaudit.io.dataset.load_batches` checks like
any dump."""

from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lossaudit._limits import CallTimeout, Limits, MemoryLimitExceeded
from lossaudit.errors import InputError
from lossaudit.io.dataset import CLASS_NAMES_KEY, MASK_KEY, TARGETS_KEYS, find_key
from lossaudit.io.readers import ArrayFile, read_batches

INPUT_KEYS = ("inputs", "x", "images")


@dataclass(frozen=True)
class RunOptions:
    data: Path
    inputs_key: str | None = None
    targets_key: str | None = None
    output_key: str | None = None
    batch_size: int = 256
    device: str = "cpu"


def check_device(device: str) -> str:
    """``cpu`` or ``cuda`` (``cuda:N``), the latter only when CUDA is available."""
    import torch

    if device == "cpu":
        return device
    if device.split(":")[0] != "cuda":
        raise InputError(f"--device {device}: expected cpu or cuda")
    if not torch.cuda.is_available():
        raise InputError(f"--device {device}: CUDA is not available here (torch.cuda.is_available() is False); use --device cpu")
    return device


def model_limits(timeout: float | None, memory_limit_mb: int | None, device: str) -> Limits:
    """The limits the ``--arch`` module's import, its constructor and each forward pass run under:
    ``timeout`` seconds, and ``memory_limit_mb`` MiB of address space beyond what this process maps
    when each starts (None: :func:`~lossaudit.lint.runner.default_memory_limit_mb`, as lint's). On a
    CUDA device no memory limit: CUDA maps the GPU's memory into the address space."""
    from lossaudit.lint.runner import default_memory_limit_mb

    memory = None if device != "cpu" else memory_limit_mb or default_memory_limit_mb()
    return Limits(timeout, memory)


def _select_output(output: object, key: str | None, source: str):
    import torch

    if isinstance(output, torch.Tensor):
        if key is not None:
            raise InputError(f"{source}: the model returns a tensor; --output-key {key} does not apply")
        return output
    if isinstance(output, dict):
        chosen = key if key is not None else ("logits" if "logits" in output else None)
        if chosen not in output:
            raise InputError(f"{source}: the model returns a dict with keys {', '.join(map(str, output))}; pick the logits with --output-key")
        return output[chosen]
    if isinstance(output, (tuple, list)):
        shapes = ", ".join(f"{i}: {tuple(o.shape) if hasattr(o, 'shape') else type(o).__name__}" for i, o in enumerate(output))
        if key is None or not key.lstrip("-").isdigit() or not -len(output) <= int(key) < len(output):
            raise InputError(f"{source}: the model returns a {type(output).__name__} ({shapes}); pick the logits with --output-key INDEX")
        return output[int(key)]
    raise InputError(f"{source}: the model returned {type(output).__name__}; expected a tensor, a tuple or a dict")


def static_batch(input_shape: tuple[int | None, ...] | None, inputs: np.ndarray, source: str) -> int | None:
    """The batch size a ``torch.export`` program was exported with when its batch axis is static
    (``input_shape``: :attr:`~lossaudit.model.checkpoint.LoadedModel.input_shape`), else None.

    Raises:
        InputError: another static axis does not fit the data's inputs (rank or size).
    """
    if input_shape is None:
        return None
    if len(input_shape) != inputs.ndim or any(want is not None and want != have for want, have in zip(input_shape[1:], inputs.shape[1:])):
        shown = "(" + ", ".join("·" if dim is None else str(dim) for dim in input_shape) + ")"
        raise InputError(
            f"{source}: the program was exported for inputs of shape {shown}; the data's are {tuple(inputs.shape)}: "
            "re-export it with these shapes (or dynamic_shapes for them)"
        )
    return input_shape[0]


def _forward(model, batch, limits: Limits, source: str):
    """``model(batch)`` under ``limits``, what it prints sent to stderr (stdout holds the report:
    ``--format json`` must parse); any failure of the model's code is an InputError naming
    ``source`` and the batch's shape."""
    shape = tuple(batch.shape)
    try:
        with limits.applied(), contextlib.redirect_stdout(sys.stderr):
            return model(batch)
    except CallTimeout:
        raise InputError(
            f"{source}: the model ran past {limits.timeout:g} s on inputs of shape {shape} (--timeout; raise it for a slow model, or lower --batch-size)"
        ) from None
    except MemoryLimitExceeded as error:
        raise InputError(
            f"{source}: the model used more than {error.megabytes} MiB of memory on inputs of shape {shape} "
            "(--memory-limit; raise it for a large model, or lower --batch-size)"
        ) from None
    except SystemExit as error:
        raise InputError(f"{source}: the model called sys.exit({error.code!r}) on inputs of shape {shape}") from None
    except (Exception, KeyboardInterrupt) as error:  # the user's model
        detail = str(error).splitlines()[0][:200] if str(error).strip() else ""
        raise InputError(f"{source}: the model failed on inputs of shape {shape}: {type(error).__name__}{': ' + detail if detail else ''}") from None


def _start_threads() -> None:
    """Start torch's intra-op threads before the first forward pass, outside its limits: each
    thread maps a stack and a malloc arena (about 72 MiB of address space with glibc), which the
    first batch's ``--memory-limit`` would otherwise count (a gigabyte on 16 cores)."""
    import torch

    torch.zeros(torch.get_num_threads() * 2**16).add_(1)  # two grains (32768 elements) per thread: every thread gets work


def run_model(
    model, options: RunOptions, label: str, input_shape: tuple[int | None, ...] | None = None, limits: Limits = Limits(), arch: str | None = None
) -> tuple[ArrayFile, int | None]:
    """The model's logits on the inputs of ``options.data``, with the data's targets (and mask and
    class names), as one batch named ``label``; and the batch size it ran at when a
    ``torch.export`` program (``input_shape``) has a static batch axis: it then runs at that size,
    its last batch padded with copies of its last row whose outputs are dropped (else None).

    Each forward pass (one batch) runs under ``limits`` (:meth:`~lossaudit._limits.Limits.applied`:
    ``--timeout`` seconds and ``--memory-limit`` MiB beyond what this process maps before the
    batch; on the main thread only). A failure of the model's code — an exception, ``sys.exit``,
    ``KeyboardInterrupt``, a hang, too much memory — is one :class:`~lossaudit.errors.InputError`
    naming the checkpoint (and ``arch``, the ``--arch`` class), the data and the batch's shape."""
    import torch
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    if options.data.suffix not in (".npz", ".pt", ".pth"):
        raise InputError(f"--data {options.data}: expected a .npz or .pt file holding inputs and targets")
    (data,) = read_batches([options.data])
    inputs_key = find_key(data, options.inputs_key, INPUT_KEYS, "model input", "--inputs-key")
    targets_key = find_key(data, options.targets_key, TARGETS_KEYS, "targets", "--targets-key")
    inputs = data.get(inputs_key)
    if not isinstance(inputs, np.ndarray) or inputs.dtype.kind not in "biuf" or inputs.ndim == 0:
        raise InputError(f"{data.source}: key '{inputs_key}' must be a numeric array with a sample axis")
    if options.batch_size < 1:
        raise InputError(f"--batch-size {options.batch_size}: expected at least 1")
    source = f"{label} on {data.source}"
    failing = f"{label}{f' (--arch {arch})' if arch else ''} on {data.source}"
    fixed = static_batch(input_shape, inputs, source)
    batch_size = fixed or options.batch_size
    try:
        model.eval()
    except NotImplementedError:  # a torch.export module keeps the mode it was exported in
        pass
    _start_threads()
    outputs = []
    steps = range(0, len(inputs), batch_size)
    stderr = Console(stderr=True)
    with Progress(
        TextColumn("running the model"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=stderr,
        transient=True,
        disable=not sys.stderr.isatty(),
    ) as progress:
        task = progress.add_task("batches", total=len(steps))
        with torch.inference_mode():
            for start in steps:
                rows = np.array(inputs[start : start + batch_size])
                if fixed and len(rows) < fixed:  # pad to the exported batch size; the copies' outputs are dropped below
                    rows = np.concatenate([rows, np.repeat(rows[-1:], fixed - len(rows), axis=0)])
                batch = torch.from_numpy(rows).to(options.device)
                output = _forward(model, batch, limits, failing)
                outputs.append(_select_output(output, options.output_key, source).detach().float().cpu().numpy()[: len(inputs) - start])
                progress.advance(task)
    result = ArrayFile(source=source)
    result.arrays = {"logits": np.concatenate(outputs), "targets": data.get(targets_key)}
    for key in (MASK_KEY, CLASS_NAMES_KEY):
        if key in data.keys():
            result.arrays[key] = data.get(key)
    return result, fixed
