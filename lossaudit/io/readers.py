"""Safe readers for prediction dumps: ``.npz``, ``.npy`` and ``.pt``/``.pth``.

Nothing here executes code from a file: numpy loads with ``allow_pickle=False`` and torch with
``weights_only=True`` (with numpy's array reconstruction allowed, and nothing else).
"""

from __future__ import annotations

import mmap
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np

from lossaudit.errors import InputError
from lossaudit.io.textfiles import require_regular_file

SUFFIXES = (".npz", ".npy", ".pt", ".pth")


@dataclass(frozen=True)
class _OnDisk:
    """An array still in its file: a ``.npy`` file, or the member ``key`` of a ``.npz`` archive."""

    path: Path
    member: str | None = None


@dataclass
class ArrayFile:
    """One batch: named arrays read from one ``.npz``/``.pt`` file or a folder's ``.npy`` files.

    ``source`` is what error messages name; ``paths`` maps each key to the file holding it. No
    file stays open between reads: a folder of thousands of batches stays far below the
    open-file limit.
    """

    source: str
    arrays: dict[str, object] = field(default_factory=dict)
    paths: dict[str, Path] = field(default_factory=dict)
    dtypes: dict[str, str] = field(default_factory=dict)

    def keys(self) -> list[str]:
        return list(self.arrays)

    def get(self, key: str) -> np.ndarray:
        """The array under ``key``; pickled objects are refused.

        Numeric ``.npy`` files and uncompressed ``.npz`` members come back memory-mapped (read
        only), mapped anew on each call and never kept here, so a chunked reader holds one map
        only while it reads a chunk; compressed members are read whole, once, and kept.
        """
        value = self.arrays[key]
        if not isinstance(value, _OnDisk):
            return cast(np.ndarray, value)
        try:
            if value.member is None:
                return np.load(value.path, allow_pickle=False, mmap_mode="r")
            mapped = _npz_member_map(value.path, value.member)
            if mapped is not None:
                return mapped
            with np.load(value.path, allow_pickle=False) as archive:
                loaded = archive[value.member]
        except ValueError as error:
            if "allow_pickle" in str(error):
                raise InputError(
                    f"{self.source}: key '{key}' holds pickled Python objects; lossaudit reads numeric "
                    "arrays (and str arrays for class_names) without unpickling"
                ) from None
            raise InputError(f"{self.source}: key '{key}' could not be read: {error}") from None
        except (OSError, zipfile.BadZipFile, EOFError) as error:
            raise InputError(f"{self.source}: key '{key}' is corrupt or truncated: {error}") from None
        self.arrays[key] = loaded
        return loaded


def release_pages(view: np.ndarray) -> None:
    """Give back the pages a view of a memory-mapped file (:meth:`ArrayFile.get`) spans: this
    process stops counting them as resident, they stay in the page cache, and reading the view
    again maps them again. Pages are read only, so nothing is lost; any other array: nothing done.
    A pass over a dump calls it for each chunk it has read, so its resident memory stays a chunk's
    and not the whole mapped file's."""
    mapped: Any = view
    while mapped is not None and not isinstance(getattr(mapped, "_mmap", None), mmap.mmap):
        mapped = mapped.base if isinstance(mapped, np.ndarray) else None
    advice = getattr(mmap, "MADV_DONTNEED", None)
    if mapped is None or advice is None or not view.size:
        return
    memory = mapped._mmap
    if memory.closed:
        return
    start_address = np.frombuffer(memory, dtype=np.uint8).ctypes.data
    low, high = getattr(np.lib, "array_utils", np).byte_bounds(view)  # (numpy 1.x: np.byte_bounds)
    start = (low - start_address) // mmap.PAGESIZE * mmap.PAGESIZE
    stop = min(-(-(high - start_address) // mmap.PAGESIZE) * mmap.PAGESIZE, len(memory))
    memory.madvise(advice, start, stop - start)


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
            found = sorted(p for p in path.iterdir() if p.suffix in SUFFIXES and p.is_file() and not p.name.startswith("."))
            if not found:
                raise InputError(f"{path}: folder holds no {', '.join(SUFFIXES)} files")
            files.extend(found)
        elif path.exists():
            if path.suffix not in SUFFIXES:
                raise InputError(f"{path}: unsupported file type '{path.suffix}'; expected one of {', '.join(SUFFIXES)}")
            require_regular_file(path, "a dump")
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
            batch.arrays[path.stem] = _OnDisk(path)
            batch.paths[path.stem] = path
        elif path.suffix == ".npz":
            batches.append(_read_npz(path))
        else:
            batches.append(_read_torch(path))
    return batches


MAX_INFLATED_BYTES = 8 * 2**30
"""A compressed member is read whole; one that would inflate past this is refused (memory maps of
uncompressed members have no such limit)."""


def _check_npz_members(path: Path) -> list[str]:
    """The keys of a ``.npz`` archive, after refusing one numpy would read ambiguously or without
    bound: two members of one name (which wins is undefined), a member whose header declares more
    data than it holds, or a compressed member that would inflate past :data:`MAX_INFLATED_BYTES`."""
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
            names = [info.filename for info in infos]
            repeated = sorted({name for name in names if names.count(name) > 1})
            if repeated:
                raise InputError(f"{path}: holds more than one member named {repeated[0]!r}; which one numpy reads is undefined")
            for info in infos:
                if not info.filename.endswith(".npy"):
                    continue
                key = info.filename[:-4]
                with archive.open(info) as member:
                    version = np.lib.format.read_magic(member)
                    reader = {
                        (1, 0): np.lib.format.read_array_header_1_0,
                        (2, 0): np.lib.format.read_array_header_2_0,
                        (3, 0): np.lib.format.read_array_header_2_0,
                    }.get(version)
                    if reader is None:
                        continue
                    shape, _, dtype = reader(member)
                declared = int(np.prod(shape, dtype=object)) * dtype.itemsize
                if declared > info.file_size:
                    raise InputError(f"{path}: key '{key}' declares shape {shape} ({declared:,} bytes) but its member holds {info.file_size:,} bytes")
                if info.compress_type != zipfile.ZIP_STORED and declared > MAX_INFLATED_BYTES:
                    raise InputError(
                        f"{path}: key '{key}' is compressed and would need {declared / 2**30:,.1f} GiB in memory; save it uncompressed (np.savez) so lossaudit can map it"
                    )
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as error:
        raise InputError(f"{path}: not a readable .npz archive ({error})") from None
    return [name[:-4] for name in names if name.endswith(".npy")]


def _read_npz(path: Path) -> ArrayFile:
    keys = _check_npz_members(path)
    return ArrayFile(source=str(path), arrays={key: _OnDisk(path, key) for key in keys}, paths={key: path for key in keys})


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
            f"{path}: refused to unpickle: the file holds objects other than tensors and arrays (weights_only=True: {first.strip()[:200]})"
        ) from None
    except (RuntimeError, OSError, EOFError, ValueError, zipfile.BadZipFile) as error:
        raise InputError(f"{path}: not a readable torch file ({str(error).splitlines()[0][:200]})") from None
    if isinstance(content, (tuple, list)) and len(content) == 2:
        content = {"logits": content[0], "targets": content[1]}
    if not isinstance(content, dict):
        raise InputError(f"{path}: expected a dict of tensors or a (logits, targets) tuple; got {type(content).__name__}")
    arrays = {str(key): _to_numpy(value, path, str(key)) for key, value in content.items()}
    dtypes = {str(key): str(value.dtype).removeprefix("torch.") for key, value in content.items() if isinstance(value, torch.Tensor)}
    return ArrayFile(source=str(path), arrays=arrays, paths={key: path for key in arrays}, dtypes=dtypes)


def _to_numpy(value: object, path: Path, key: str) -> object:
    import torch

    if isinstance(value, torch.Tensor):
        if value.layout != torch.strided:
            raise InputError(f"{path}: key '{key}' is a {str(value.layout).removeprefix('torch.')} tensor; save a dense one (tensor.to_dense())")
        if value.is_meta:
            raise InputError(f"{path}: key '{key}' is a meta tensor, which holds no values")
        tensor = value.detach().cpu()
        if tensor.dtype == torch.bfloat16:
            tensor = tensor.float()
        return tensor.numpy()
    if isinstance(value, (list, tuple)) and all(isinstance(item, str) for item in value):
        return np.asarray(value, dtype=str)
    return value
