"""Load a model from a checkpoint for ``compare --model``, safely by default.

Kinds, detected from the file:

- a state dict (raw, or nested under ``state_dict`` / ``model`` / ``module`` as Lightning,
  detectron2 and mmdet save them), read with ``torch.load(weights_only=True)`` and loaded into
  the ``--arch`` class built with ``--init``; ``module.`` and ``model.`` prefixes are stripped
  when the keys need it;
- a ``.safetensors`` state dict (the optional ``safetensors`` package), with ``--arch`` likewise;
- a TorchScript archive (``torch.jit.load``) or a ``torch.export`` program (``.pt2``): both
  deserialise code, so they load only with ``--trust-model``.
"""

from __future__ import annotations

import pickle
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lossaudit._limits import CallTimeout, Limits, MemoryLimitExceeded
from lossaudit.errors import InputError
from lossaudit.io.symbols import import_quietly, import_symbol, parse_target

NESTING_KEYS = ("state_dict", "model", "module")
PREFIXES = ("module.", "model.")
LISTED = 5


@dataclass
class LoadedModel:
    """A model ready to run, and how it was obtained (stated in the report)."""

    model: object
    kind: str
    detail: str
    input_shape: tuple[int | None, ...] | None = None
    """A ``torch.export`` program's input shape as exported: an int per static axis, None per
    dynamic one (the batch axis first); None for other models."""


def detect_kind(path: Path) -> str:
    """'safetensors', 'export', 'torchscript' or 'state dict', from the suffix and the archive."""
    if path.suffix == ".safetensors":
        return "safetensors"
    if path.suffix == ".pt2":
        return "export"
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
        if any("/code/" in name for name in names):
            return "torchscript"
        if any("/data/weights/" in name or name.endswith("archive_format") for name in names):
            return "export"
    return "state dict"


def _refuse(path: Path, kind: str) -> InputError:
    what = {"torchscript": "a TorchScript archive", "export": "a torch.export program (.pt2)"}[kind]
    return InputError(
        f"{path}: {what} holds code that runs when it is loaded; lossaudit loads it only with --trust-model. "
        "Pass --trust-model if you trust this file, or save model.state_dict() and pass --arch"
    )


def _read_state_dict(path: Path) -> tuple[dict, str]:
    """The tensors of a state-dict file and where in the file they were."""
    import torch

    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        last = str(error).strip().splitlines()[-1][:200] if str(error).strip() else ""
        raise InputError(
            f"{path}: refused to unpickle: the checkpoint holds objects other than tensors (weights_only=True: {last}); "
            "save model.state_dict(), or a TorchScript/torch.export file and pass --trust-model"
        ) from None
    except (RuntimeError, OSError, EOFError, ValueError, zipfile.BadZipFile) as error:
        raise InputError(f"{path}: not a readable checkpoint ({str(error).splitlines()[0][:200]})") from None
    if not isinstance(content, dict):
        raise InputError(f"{path}: expected a state dict (a dict of tensors); got {type(content).__name__}")
    for key in NESTING_KEYS:
        nested = content.get(key)
        if isinstance(nested, dict) and nested and all(isinstance(v, torch.Tensor) for v in nested.values()):
            return nested, f"nested under '{key}'"
    tensors = {k: v for k, v in content.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise InputError(
            f"{path}: no tensors found; keys present: {', '.join(map(str, list(content)[:10]))} (expected a state dict, possibly under {', '.join(NESTING_KEYS)})"
        )
    return content, "raw"


def _strip(state: dict, prefixes: tuple[str, ...]) -> dict:
    out = {}
    for key, value in state.items():
        for prefix in prefixes:
            if key.startswith(prefix):
                key = key[len(prefix) :]
        out[key] = value
    return out


def match_keys(state: dict, expected: dict, path: Path) -> tuple[dict, str]:
    """The state dict with ``module.``/``model.`` prefixes stripped when that makes the keys of
    ``expected`` (the model's own state dict) match.

    Raises:
        InputError: keys still missing or unexpected, or tensors of another shape (the first few
            of each are listed).
    """
    candidates = [(state, "")]
    for prefixes in (("module.",), ("model.",), ("model.", "module."), ("module.", "model.")):
        candidates.append((_strip(state, prefixes), f"prefixes stripped: {', '.join(prefixes)}"))
    best, note = max(candidates, key=lambda c: len(expected.keys() & set(c[0])))
    missing, unexpected = sorted(expected.keys() - set(best)), sorted(set(best) - expected.keys())
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing ({', '.join(missing[:LISTED])}{', …' if len(missing) > LISTED else ''})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected ({', '.join(unexpected[:LISTED])}{', …' if len(unexpected) > LISTED else ''})")
        raise InputError(f"{path}: state-dict keys do not match the --arch model: {'; '.join(parts)}")
    resized = [
        f"{key} {tuple(best[key].shape)} vs {tuple(expected[key].shape)}" for key in sorted(expected) if tuple(best[key].shape) != tuple(expected[key].shape)
    ]
    if resized:
        raise InputError(f"{path}: {len(resized)} tensors have another shape than in the --arch model (checkpoint vs model): {', '.join(resized[:LISTED])}")
    return best, note


def load_model(path: Path, arch: str | None, init: dict, trust: bool, device: str, limits: Limits = Limits()) -> LoadedModel:
    """Build and load the model described by the checkpoint at ``path`` on ``device``; the
    ``--arch`` module's import and its constructor run under ``limits`` each (default: none)."""
    if not path.is_file():
        raise InputError(f"--model {path}: no such file")
    kind = detect_kind(path)
    if kind in ("torchscript", "export"):
        if not trust:
            raise _refuse(path, kind)
        return _load_program(path, kind, device)
    state, where = _read_safetensors(path) if kind == "safetensors" else _read_state_dict(path)
    if arch is None:
        raise InputError(f"{path}: a state dict holds weights only; name the model class with --arch package.module:Class (and --init KEY=VALUE)")
    model = _build(arch, init, limits)
    matched, note = match_keys(state, model.state_dict(), path)
    model.load_state_dict(matched)
    detail = ", ".join(filter(None, [where, note]))
    return LoadedModel(model.to(device), "state dict" if kind == "state dict" else ".safetensors state dict", detail)


def _load_program(path: Path, kind: str, device: str) -> LoadedModel:
    """A TorchScript archive or a ``torch.export`` program (``kind``), which deserialise code: only
    with ``--trust-model``."""
    import torch

    try:
        if kind == "torchscript":
            with warnings.catch_warnings():  # torch 2.13 deprecates TorchScript, which users still ship
                warnings.filterwarnings("ignore", message=r".*torch\.jit\.load.* is deprecated", category=DeprecationWarning)
                scripted = torch.jit.load(str(path), map_location=device)
            return LoadedModel(scripted, "TorchScript", "loaded with --trust-model")
        program = torch.export.load(str(path))
        return LoadedModel(
            program.module().to(device),
            "torch.export program",
            "loaded with --trust-model; runs in the mode it was exported in",
            input_shape=_exported_input_shape(program),
        )
    except (RuntimeError, OSError, ValueError) as error:
        raise InputError(f"{path}: cannot be loaded as {kind} ({str(error).splitlines()[0][:200]})") from None


def _exported_input_shape(program) -> tuple[int | None, ...] | None:
    """The first user input's shape of a ``torch.export`` program (an int per static axis, None
    per dynamic one), or None when it has no tensor input."""
    names = set(program.graph_signature.user_inputs)
    for node in program.graph.nodes:
        if node.op == "placeholder" and node.name in names:
            shape = getattr(node.meta.get("val"), "shape", None)
            return None if shape is None else tuple(dim if isinstance(dim, int) else None for dim in shape)
    return None


def _read_safetensors(path: Path) -> tuple[dict, str]:
    """The tensors of a ``.safetensors`` file (the optional ``safetensors`` package), and where
    they were (as :func:`_read_state_dict` says it)."""
    try:
        from safetensors.torch import load_file
    except ModuleNotFoundError:
        raise InputError(f"{path}: reading .safetensors needs the safetensors package: pip install 'lossaudit[safetensors]'") from None
    try:
        return load_file(str(path)), "safetensors"
    except Exception as error:  # safetensors raises its own error types
        raise InputError(f"{path}: not a readable .safetensors file ({error})") from None


def _build(arch: str, init: dict, limits: Limits) -> Any:
    """An instance of the ``--arch`` class (``package.module:Class``) built with ``--init``, its
    import and its constructor each under ``limits`` (:meth:`~lossaudit._limits.Limits.applied`:
    on the main thread; elsewhere without them)."""
    try:
        cls: Any = import_symbol(parse_target(arch), run=lambda load: import_quietly(lambda: _guarded(load, limits, f"{arch}: importing it"), arch))
    except (InputError, _Stopped) as error:
        raise InputError(f"--arch {error}") from None
    try:
        return _guarded(lambda: cls(**init), limits, f"{arch}: building it")
    except _Stopped as error:
        raise InputError(f"--arch {error}") from None
    except Exception as error:  # the user's constructor
        raise InputError(f"--arch {arch}: cannot be built with --init {init}: {type(error).__name__}: {error}") from None


class _Stopped(BaseException):
    """User code stopped by its limits; the message names what ran (a BaseException, so that
    :func:`~lossaudit.io.symbols.import_quietly` lets it through)."""


def _guarded(run: Callable[[], object], limits: Limits, what: str) -> object:
    """``run()`` under ``limits``; a hang or too much memory is :class:`_Stopped` saying ``what`` did."""
    try:
        with limits.applied():
            return run()
    except CallTimeout:
        raise _Stopped(f"{what} hung: it ran past {limits.timeout:g} s (--timeout)") from None
    except MemoryLimitExceeded as error:
        raise _Stopped(f"{what} used more than {error.megabytes} MiB of memory (--memory-limit)") from None
