"""Safe readers for prediction dumps: ``.npz``, ``.npy`` and ``.pt``/``.pth``.

Nothing here executes code from a file: numpy loads with ``allow_pickle=False`` and torch with
``weights_only=True`` (with numpy's array reconstruction allowed, and nothing else).
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lossaudit.errors import InputError

SUFFIXES = (".npz", ".npy", ".pt", ".pth")


@dataclass
class ArrayFile:
    """One batch: named arrays read from one ``.npz``/``.pt`` file or a folder's ``.npy`` files.

    ``source`` is what error messages name; ``paths`` maps each key to the file holding it.
    """

    source: str
    arrays: dict[str, object] = field(default_factory=dict)
    paths: dict[str, Path] = field(default_factory=dict)
    dtypes: dict[str, str] = field(default_factory=dict)

    def keys(self) -> list[str]:
        return list(self.arrays)

    def get(self, key: str) -> np.ndarray:
        """The array under ``key``, read on first access; pickled objects are refused.

        Numeric ``.npy`` files and uncompressed ``.npz`` members come back memory-mapped (read
        only), so a chunked reader touches one chunk at a time; compressed members are read whole.
        """
        value = self.arrays[key]
        try:
            if isinstance(value, np.lib.npyio.NpzFile):
                mapped = _npz_member_map(self.paths[key], key)
                value = mapped if mapped is not None else value[key]
            elif isinstance(value, Path):
                value = np.load(value, allow_pickle=False, mmap_mode="r")
        except ValueError as error:
            if "allow_pickle" in str(error):
                raise InputError(
                    f"{self.source}: key '{key}' holds pickled Python objects; lossaudit reads numeric "
                    "arrays (and str arrays for class_names) without unpickling"
                ) from None
            raise InputError(f"{self.source}: key '{key}' could not be read: {error}") from None
        except (OSError, zipfile.BadZipFile, EOFError) as error:
            raise InputError(f"{self.source}: key '{key}' is corrupt or truncated: {error}") from None
        self.arrays[key] = value
        return value


def _npz_member_map(path: Path, key: str) -> np.ndarray | None:
    """A read-only memory map of an uncompressed ``.npz`` member, or None if it cannot be mapped
    (compressed, object dtype, or an unusual header)."""
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(f"{key}.npy")
        if info.compress_type != zipfile.ZIP_STORED:
            return None
    with open(path, "rb") as handle:
        handle.seek(info.header_offset)
        local_header = handle.read(30)
        if local_header[:4] != b"PK\x03\x04":
            return None
        name_length = int.from_bytes(local_header[26:28], "little")
        extra_length = int.from_bytes(local_header[28:30], "little")
        handle.seek(info.header_offset + 30 + name_length + extra_length)
        version = np.lib.format.read_magic(handle)
        reader = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}.get(version)
        if reader is None:
            return None
        shape, fortran_order, dtype = reader(handle)
        offset = handle.tell()
    if dtype.hasobject:
        return None
    if int(np.prod(shape)) == 0:
        return np.zeros(shape, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape, order="F" if fortran_order else "C")


def expand_paths(paths: Iterable[Path]) -> list[Path]:
    """Files named directly, plus the supported files of named folders (sorted by name)."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = sorted(
                p for p in path.iterdir() if p.suffix in SUFFIXES and p.is_file() and not p.name.startswith(".")
            )
            if not found:
                raise InputError(f"{path}: folder holds no {', '.join(SUFFIXES)} files")
            files.extend(found)
        elif path.exists():
            if path.suffix not in SUFFIXES:
                raise InputError(f"{path}: unsupported file type '{path.suffix}'; expected one of {', '.join(SUFFIXES)}")
            files.append(path)
        else:
            raise InputError(f"{path}: no such file or folder")
    return files


def read_batches(paths: Iterable[Path]) -> list[ArrayFile]:
    """One :class:`ArrayFile` per batch, in order. ``.npy`` files of one folder form one batch,
    each array named by its file's stem (``logits.npy``, ``targets.npy``)."""
    batches: list[ArrayFile] = []
    npy_batches: dict[Path, ArrayFile] = {}
    for path in expand_paths(paths):
        if path.suffix == ".npy":
            batch = npy_batches.get(path.parent)
            if batch is None:
                batch = npy_batches[path.parent] = ArrayFile(source=f"{path.parent}/*.npy")
                batches.append(batch)
            batch.arrays[path.stem] = path
            batch.paths[path.stem] = path
        elif path.suffix == ".npz":
            batches.append(_read_npz(path))
        else:
            batches.append(_read_torch(path))
    return batches


def _read_npz(path: Path) -> ArrayFile:
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as error:
        raise InputError(f"{path}: not a readable .npz archive ({error})") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise InputError(f"{path}: holds a single array, not a .npz archive of named arrays")
    return ArrayFile(source=str(path), arrays={key: archive for key in archive.files}, paths={key: path for key in archive.files})


def _numpy_safe_globals() -> list:
    """What unpickling a plain numpy array needs, and nothing that runs other code."""
    multiarray = getattr(np, "_core", None) or np.core
    dtype_classes = [type(np.dtype(t)) for t in "?bBhHiIlLqQefdgFD"] + [type(np.dtype("U1"))]
    return [multiarray.multiarray._reconstruct, np.ndarray, np.dtype, *dtype_classes]


def _read_torch(path: Path) -> ArrayFile:
    import pickle

    import torch

    try:
        with torch.serialization.safe_globals(_numpy_safe_globals()):
            try:
                content = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError as error:  # a legacy (non-zip) file cannot be memory-mapped
                if "mmap" not in str(error):
                    raise
                content = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        first = str(error).strip().splitlines()[-1] if str(error).strip() else "unsupported object"
        raise InputError(
            f"{path}: refused to unpickle: the file holds objects other than tensors and arrays "
            f"(weights_only=True: {first.strip()[:200]})"
        ) from None
    except (RuntimeError, OSError, EOFError, ValueError, zipfile.BadZipFile) as error:
        raise InputError(f"{path}: not a readable torch file ({str(error).splitlines()[0][:200]})") from None
    if isinstance(content, (tuple, list)) and len(content) == 2:
        content = {"logits": content[0], "targets": content[1]}
    if not isinstance(content, dict):
        raise InputError(f"{path}: expected a dict of tensors or a (logits, targets) tuple; got {type(content).__name__}")
    arrays = {str(key): _to_numpy(value) for key, value in content.items()}
    dtypes = {str(key): str(value.dtype).removeprefix("torch.") for key, value in content.items() if isinstance(value, torch.Tensor)}
    return ArrayFile(source=str(path), arrays=arrays, paths={key: path for key in arrays}, dtypes=dtypes)


def _to_numpy(value: object) -> object:
    import torch

    if isinstance(value, torch.Tensor):
        tensor = value.detach().cpu()
        if tensor.dtype == torch.bfloat16:
            tensor = tensor.float()
        return tensor.numpy()
    if isinstance(value, (list, tuple)) and all(isinstance(item, str) for item in value):
        return np.asarray(value, dtype=str)
    return value
