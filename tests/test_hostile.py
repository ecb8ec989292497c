"""A corpus of hostile and broken inputs, each run as a user would run it: the real command in a
child process, in a fresh folder, with a time limit.

Every case asserts the exit code; for exit 2, one line on stderr that starts with
``lossaudit: error:`` and names the file (and key); never a traceback; every file the case made
left byte for byte as it was (SHA-256) and no stray file created. Inputs are generated here by
code, nothing binary is committed.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import resource
import stat
import subprocess
import sys
import time
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
LIMIT_S = 60.0
"""A case that runs longer than this hangs; the slowest legitimate one (a lint audit) takes ~3 s."""


@dataclass(frozen=True)
class Case:
    """``make(folder)`` writes the inputs into ``folder`` and returns the command's arguments."""

    make: Callable[[Path], list[str]]
    exit_code: int = 2
    says: tuple[str, ...] = ()
    stdout_says: tuple[str, ...] = ()
    env: dict = field(default_factory=dict)
    open_files: int | None = None
    """A lower open-file limit (RLIMIT_NOFILE) for the command."""


def _write(folder: Path, name: str, content: str | bytes) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def _fifo(folder: Path, name: str) -> Path:
    path = folder / name
    os.mkfifo(path)
    return path


def _alias_bomb() -> str:
    lines = ["lint:", "  select: &a0 [FL001, FL002, FL003, FL004, FL005, FL006, FL007, FL008, FL009]"]
    lines += [f"  ignore{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    return "\n".join(lines) + "\n"


FOCAL_FUNCTION = """import torch.nn.functional as F


def focal(inputs, targets, alpha=0.25, gamma=2.0):
    p = inputs.sigmoid()
    ce = F.binary_cross_entropy_with_logits(inputs, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    return (alpha * targets + (1 - alpha) * (1 - targets)) * (1 - p_t) ** gamma * ce
"""


def _copy(folder: Path, name: str, example: str = "detection.npz") -> str:
    """An example dump copied to ``folder/name``; returns ``name``."""
    _write(folder, name, (EXAMPLES / example).read_bytes())
    return name


def _discovery_folder(folder: Path) -> str:
    """A folder of sources where one is a FIFO and one a link to /dev/zero: both skipped."""
    _write(folder, "src/losses.py", FOCAL_FUNCTION)
    _fifo(folder, "src/pipe.py")
    (folder / "src" / "zero.py").symlink_to("/dev/zero")
    return "src"


def _config(text: str, name: str = "lossaudit.yaml") -> Callable[[Path], list[str]]:
    def make(folder: Path) -> list[str]:
        _write(folder, name, text)
        _write(folder, "losses.py", FOCAL_FUNCTION)
        return ["lint", "losses.py:focal", "--config", name]

    return make


def _arch(source: str) -> Callable[[Path], list[str]]:
    def make(folder: Path) -> list[str]:
        _write(folder, "net.py", source)
        return ["compare", "--model", str(EXAMPLES / "model" / "classifier.pt"), "--data", str(EXAMPLES / "model" / "val.npz"), "--arch", "net.py:Net"]

    return make


CONFIGURATION = {
    "yaml alias bomb": Case(_config(_alias_bomb()), says=("lossaudit.yaml", "aliases")),
    "yaml nested 5000 deep": Case(_config("lint: " + "[" * 5000 + "]" * 5000 + "\n"), says=("lossaudit.yaml", "nested")),
    "toml nested 5000 deep": Case(_config("[tool.lossaudit]\nlint = " + "[" * 5000 + "]" * 5000 + "\n", "pyproject.toml"), says=("pyproject.toml", "nested")),
    "yaml not utf-8": Case(_config("lint:\n  select: [FL001]  # caf\xe9\n".encode("latin-1")), says=("lossaudit.yaml", "UTF-8")),  # type: ignore[arg-type]
    "yaml not a mapping": Case(_config("- lint\n- compare\n"), says=("lossaudit.yaml", "mapping")),
    "yaml unknown section": Case(_config("lnit: {}\n"), says=("lossaudit.yaml", "lnit")),
    "yaml unknown key": Case(_config("lint:\n  selct: [FL001]\n"), says=("lossaudit.yaml", "selct")),
    "yaml wrong type": Case(_config("lint:\n  timeout: soon\n"), says=("lossaudit.yaml", "timeout", "a number")),
    "yaml unknown rule code": Case(_config("lint:\n  select: [FL999]\n"), says=("lossaudit.yaml", "FL999")),
    "toml syntax error": Case(_config("[tool.lossaudit.lint\nselect = 1\n", "pyproject.toml"), says=("pyproject.toml", "TOML")),
    "config is a fifo": Case(lambda folder: [*_config("")(folder)[:2], "--config", str(_fifo(folder, "fifo.yaml"))], says=("fifo.yaml", "FIFO")),
    "config is /dev/zero": Case(lambda folder: [*_config("")(folder)[:2], "--config", "/dev/zero"], says=("/dev/zero", "regular file")),
    "config is a folder": Case(lambda folder: [*_config("")(folder)[:2], "--config", str(folder)], says=("regular file", "a folder")),
    "config of 17 MB": Case(lambda folder: [*_config("")(folder)[:2], "--config", str(_sparse(folder / "big.yaml", 17 << 20))], says=("big.yaml", "bytes")),
    "config does not exist": Case(lambda folder: [*_config("")(folder)[:2], "--config", "missing.yaml"], says=("missing.yaml", "no such file")),
}


def _sparse(path: Path, size: int) -> Path:
    with open(path, "wb") as handle:
        handle.truncate(size)
    return path


ARCH = {
    "--arch calls sys.exit(0) at import": Case(_arch("import sys\nsys.exit(0)\nclass Net: pass\n"), says=("net.py:Net", "sys.exit(0)")),
    "--arch parses sys.argv at import": Case(
        _arch(
            "import argparse\nparser = argparse.ArgumentParser(prog='train.py')\nparser.add_argument('--epochs', required=True)\nparser.parse_args()\nclass Net: pass\n"
        ),
        says=("net.py:Net", "sys.exit(2)", "--epochs"),
    ),
    "--arch hangs at import": Case(
        lambda folder: [*_arch("import time\ntime.sleep(600)\nclass Net: pass\n")(folder), "--timeout", "2"],
        says=("net.py:Net", "importing it hung", "2 s", "--timeout"),
    ),
    "--arch hangs in its constructor": Case(
        lambda folder: [*_arch("import time\nclass Net:\n    def __init__(self):\n        time.sleep(600)\n")(folder), "--timeout", "2"],
        says=("net.py:Net", "building it hung", "--timeout"),
    ),
    "--arch raises at import": Case(_arch("raise RuntimeError('needs a GPU')\nclass Net: pass\n"), says=("net.py:Net", "RuntimeError", "needs a GPU")),
    "--arch raises KeyboardInterrupt at import": Case(_arch("raise KeyboardInterrupt\nclass Net: pass\n"), says=("net.py:Net", "KeyboardInterrupt")),
    "--arch has a syntax error": Case(_arch("class Net(:\n    pass\n"), says=("net.py", "parsed")),
    "--arch names a missing class": Case(_arch("class Other: pass\n"), says=("net.py", "Net")),
}

LINT_TARGETS = {
    "target with a PEP 263 latin-1 coding line": Case(
        lambda folder: [
            "lint",
            _write(folder, "latin.py", ("# -*- coding: latin-1 -*-\n# Jos\xe9's loss\n" + FOCAL_FUNCTION).encode("latin-1")).name + ":focal",
        ],
        exit_code=0,
        stdout_says=("Found 0 errors, 0 warnings",),
    ),
    "discovery folder holding a FIFO and /dev/zero": Case(lambda folder: ["lint", _discovery_folder(folder)], exit_code=0, stdout_says=("Found 0 errors",)),
    "target file is a FIFO": Case(lambda folder: ["lint", f"{_fifo(folder, 'pipe.py').name}:focal"], says=("pipe.py", "FIFO")),
    "target file is not utf-8 and declares nothing": Case(
        lambda folder: ["lint", _write(folder, "bad.py", b"# caf\xe9\n" + FOCAL_FUNCTION.encode()).name + ":focal"], says=("bad.py",)
    ),
}

OUTPUT = {
    "compare --output is the dump": Case(
        lambda folder: ["compare", _copy(folder, "detection.npz"), "--output", "detection.npz"], says=("--output detection.npz", "overwrite")
    ),
    "compare --output is a dump in the dump folder": Case(
        lambda folder: ["compare", _copy(folder, "runs/detection.npz").rpartition("/")[0], "--output", "runs/detection.npz"],
        says=("runs/detection.npz", "overwrite"),
    ),
    "compare --output is the configuration": Case(
        lambda folder: ["compare", _copy(folder, "detection.npz"), "--output", _write(folder, "lossaudit.yaml", "compare:\n  bins: 10\n").name],
        says=("lossaudit.yaml", "overwrite"),
    ),
    "lint --output is the target": Case(
        lambda folder: ["lint", f"{_write(folder, 'losses.py', FOCAL_FUNCTION).name}:focal", "--output", "losses.py"], says=("losses.py", "overwrite")
    ),
    "lint --output is a discovered source": Case(
        lambda folder: ["lint", _discovery_folder(folder), "--output", "src/losses.py"], says=("src/losses.py", "overwrite")
    ),
}


def _npz(folder: Path, name: str, **arrays: np.ndarray) -> str:
    np.savez(folder / name, **arrays)
    return name


def _dump(folder: Path, name: str = "d.npz", rows: int = 6, classes: int = 3, **overrides: np.ndarray) -> str:
    rng = np.random.default_rng(0)
    arrays = {"logits": rng.normal(size=(rows, classes)).astype(np.float32), "targets": np.arange(rows) % (classes + 1), **overrides}
    return _npz(folder, name, **arrays)


def _raw_npz(folder: Path, name: str, members: list[tuple[str, bytes]], compression: int = zipfile.ZIP_STORED) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate name this may write on purpose
        with zipfile.ZipFile(folder / name, "w", compression=compression) as archive:
            for member, data in members:
                archive.writestr(member, data)
    return name


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def _declared_only(shape: tuple[int, ...]) -> bytes:
    """An .npy header declaring ``shape`` of float32, followed by 64 bytes."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": "<f4", "fortran_order": False, "shape": shape})
    return buffer.getvalue() + b"\0" * 64


def _torch_dump(folder: Path, name: str, logits) -> str:
    import torch

    torch.save({"logits": logits, "targets": torch.zeros(4, dtype=torch.long)}, folder / name)
    return name


def _many_batches(folder: Path, count: int = 2000) -> str:
    rng = np.random.default_rng(0)
    (folder / "many").mkdir()
    for index in range(count):
        np.savez(folder / "many" / f"b{index:05d}.npz", logits=rng.normal(size=(4, 3)).astype(np.float32), targets=rng.integers(0, 4, size=4))
    return "many"


def _sparse_tensor(folder: Path) -> str:
    import torch

    return _torch_dump(folder, "sparse.pt", torch.zeros(4, 3).to_sparse())


def _meta_tensor(folder: Path) -> str:
    import torch

    return _torch_dump(folder, "meta.pt", torch.zeros(4, 3, device="meta"))


DATA = {
    "dump is a FIFO": Case(lambda folder: ["compare", _fifo(folder, "preds.npz").name], says=("preds.npz", "FIFO")),
    "dump with no rows": Case(lambda folder: ["compare", _dump(folder, rows=0)], says=("d.npz", "no rows")),
    "dump with zero classes": Case(
        lambda folder: ["compare", _dump(folder, classes=0, targets=np.zeros(6, np.int64))], says=("d.npz", "'logits'", "0 classes")
    ),
    "uint64 label 2**64 - 1": Case(
        lambda folder: ["compare", _dump(folder, targets=np.array([0, 1, 2, 0, 1, 2**64 - 1], np.uint64))], says=("d.npz", "'targets'", "int64")
    ),
    "two members of one name": Case(
        lambda folder: [
            "compare",
            _raw_npz(
                folder,
                "dup.npz",
                [
                    ("logits.npy", _npy_bytes(np.zeros((4, 3), np.float32))),
                    ("logits.npy", _npy_bytes(np.ones((4, 3), np.float32))),
                    ("targets.npy", _npy_bytes(np.zeros(4, np.int64))),
                ],
            ),
        ],
        says=("dup.npz", "logits.npy", "more than one member"),
    ),
    "member declaring 16 TB": Case(
        lambda folder: [
            "compare",
            _raw_npz(
                folder, "bomb.npz", [("logits.npy", _declared_only((10**12, 4))), ("targets.npy", _npy_bytes(np.zeros(4, np.int64)))], zipfile.ZIP_DEFLATED
            ),
        ],
        says=("bomb.npz", "'logits'", "declares shape"),
    ),
    "not a zip archive": Case(lambda folder: ["compare", _write(folder, "text.npz", "logits,targets\n1,0\n").name], says=("text.npz", "not a readable .npz")),
    "truncated archive": Case(lambda folder: ["compare", _write(folder, "cut.npz", (EXAMPLES / "detection.npz").read_bytes()[:5000]).name], says=("cut.npz",)),
    "sparse tensor in .pt": Case(lambda folder: ["compare", _sparse_tensor(folder)], says=("sparse.pt", "'logits'", "sparse")),
    "meta tensor in .pt": Case(lambda folder: ["compare", _meta_tensor(folder)], says=("meta.pt", "'logits'", "meta tensor")),
    "missing logits key": Case(
        lambda folder: ["compare", _npz(folder, "k.npz", scores_x=np.zeros((4, 3), np.float32), targets=np.zeros(4, np.int64))], says=("k.npz", "logits")
    ),
    "targets of the wrong shape": Case(lambda folder: ["compare", _dump(folder, targets=np.zeros((6, 2), np.int64))], says=("d.npz", "'targets'", "shape")),
    "integer logits": Case(lambda folder: ["compare", _dump(folder, logits=np.zeros((6, 3), np.int64))], says=("d.npz", "'logits'", "dtype")),
    "non-integer class ids": Case(lambda folder: ["compare", _dump(folder, targets=np.array([0, 1.5, 2, 0, 1, 2]))], says=("d.npz", "whole numbers")),
    "pickled object array": Case(
        lambda folder: ["compare", _dump(folder, targets=np.array([0, 1, 2, 0, 1, {"a": 1}], dtype=object))], says=("d.npz", "'targets'", "pickled")
    ),
    "unsupported suffix": Case(lambda folder: ["compare", _write(folder, "preds.csv", "0,1\n").name], says=("preds.csv", "unsupported")),
    "folder without dumps": Case(lambda folder: ["compare", str((folder / "empty").mkdir() or "empty")], says=("empty", "no .npz")),
    "class names are a FIFO": Case(lambda folder: ["compare", _dump(folder), "--class-names", _fifo(folder, "names.txt").name], says=("names.txt", "FIFO")),
    "class names are /dev/zero": Case(lambda folder: ["compare", _dump(folder), "--class-names", "/dev/zero"], says=("/dev/zero", "regular file")),
    "class names do not match": Case(
        lambda folder: ["compare", _dump(folder), "--class-names", _write(folder, "n.txt", "a\nb\n").name], says=("--class-names", "2 names")
    ),
    "NaN in --alpha-per-class": Case(
        lambda folder: ["compare", _dump(folder), "--alpha-per-class", _write(folder, "a.txt", "0.25\nnan\n0.5\n").name], says=("a.txt", "nan")
    ),
    "float64 logits beyond float32": Case(
        lambda folder: ["compare", _dump(folder, logits=np.full((6, 3), 1.5e308)), "--format", "json"], exit_code=0, stdout_says=('"non-finite"',)
    ),
    "2000 batch files under a 256 open-file limit": Case(
        lambda folder: ["compare", _many_batches(folder), "--format", "json"], exit_code=0, open_files=256, stdout_says=('"rows": 8000',)
    ),
}

OPTIONS = {
    "unknown option": Case(lambda folder: ["compare", "--nope"], says=("--nope",)),
    "bad choice": Case(lambda folder: ["compare", _dump(folder), "--format", "xml"], says=("--format xml: expected one of text, json",)),
    "value out of range": Case(lambda folder: ["lint", "x.py:F", "--jobs", "0"], says=("--jobs 0: expected at least 1",)),
    "missing value": Case(lambda folder: ["compare", _dump(folder), "--alpha"], says=("'--alpha' requires an argument",)),
    "not a number": Case(lambda folder: ["compare", _dump(folder), "--gamma", "two"], says=("--gamma two: expected a number",)),
    "unknown loss": Case(lambda folder: ["compare", _dump(folder), "--losses", "ce,fcoal"], says=("fcoal",)),
    "--data without --model": Case(lambda folder: ["compare", _dump(folder), "--data", "x.npz"], says=("--data",)),
    "malformed --init": Case(lambda folder: ["lint", f"{_write(folder, 'l.py', FOCAL_FUNCTION).name}:focal", "--init", "alpha"], says=("--init", "KEY=VALUE")),
    "unknown rule code": Case(lambda folder: ["lint", f"{_write(folder, 'l.py', FOCAL_FUNCTION).name}:focal", "--select", "FL999"], says=("FL999",)),
}

USER_LOSSES_SOURCE = """import os
import sys
import time

import torch
import torch.nn.functional as F


def bce(logits, targets):
    return F.binary_cross_entropy_with_logits(logits, targets, reduction="none")


def raises(logits, targets):
    raise ValueError("targets must be class indices")


def hangs(logits, targets):
    time.sleep(600)


def exits(logits, targets):
    sys.exit(3)


def hard_exit(logits, targets):
    os._exit(7)


def nan(logits, targets):
    return bce(logits, targets) * float("nan")


def scalar(logits, targets):
    return bce(logits, targets).mean()


def wrong_shape(logits, targets):
    return bce(logits, targets)[:, :1]


def greedy(logits, targets):
    hoard = []
    while True:
        hoard.append(torch.empty(1 << 28))  # 1 GiB of address space at a time, never freed
"""
"""The user's own losses of ``compare --losses path.py:fn``, each failing in one way."""


def _user_loss(name: str, *options: str) -> Callable[[Path], list[str]]:
    def make(folder: Path) -> list[str]:
        _write(folder, "losses.py", USER_LOSSES_SOURCE)
        return ["compare", _copy(folder, "d.npz"), "--losses", f"focal,losses.py:{name}@sigmoid", "--timeout", "2", *options]

    return make


def _user_loss_config(text: str) -> Callable[[Path], list[str]]:
    def make(folder: Path) -> list[str]:
        _write(folder, "losses.py", USER_LOSSES_SOURCE)
        _write(folder, "lossaudit.yaml", text)
        return ["compare", _copy(folder, "d.npz"), "--config", "lossaudit.yaml"]

    return make


def _greedy(folder: Path) -> list[str]:
    """``greedy`` under a memory limit 1.5 GiB above what this (test) process maps."""
    mapped = int(next(line.split()[1] for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("VmSize:"))) // 1024
    return [*_user_loss("greedy")(folder), "--memory-limit", str(mapped + 1536)]


USER_LOSSES = {
    "user loss raises": Case(_user_loss("raises"), says=("losses.py:raises", "ValueError", "class indices")),
    "user loss hangs": Case(_user_loss("hangs"), says=("losses.py:hangs", "2 s")),
    "user loss calls sys.exit": Case(_user_loss("exits"), says=("losses.py:exits", "sys.exit(3)")),
    "user loss calls os._exit": Case(_user_loss("hard_exit"), says=("losses.py:hard_exit", "exited with code 7")),
    "user loss returns NaN": Case(_user_loss("nan"), says=("losses.py:nan", "NaN")),
    "user loss returns a scalar": Case(_user_loss("scalar"), says=("losses.py:scalar", "scalar", 'reduction="none"')),
    "user loss returns the wrong shape": Case(_user_loss("wrong_shape"), says=("losses.py:wrong_shape", "shape")),
    "user loss allocates without limit": Case(_greedy, says=("losses.py:greedy", "memory")),
    "user loss file missing": Case(lambda folder: ["compare", _copy(folder, "d.npz"), "--losses", "focal,nope.py:fn"], says=("nope.py",)),
    "user loss named in the configuration raises": Case(
        _user_loss_config("compare:\n  losses: [focal, 'losses.py:raises@sigmoid']\n"), says=("losses.py:raises", "ValueError")
    ),
    "user loss family unknown in the configuration": Case(
        _user_loss_config("compare:\n  losses: [focal, 'losses.py:bce@cosine']\n"), says=("lossaudit.yaml", "cosine")
    ),
    "user loss-init not a mapping in the configuration": Case(
        _user_loss_config("compare:\n  losses: [focal, 'losses.py:bce@sigmoid']\n  loss-init: 3\n"), says=("lossaudit.yaml", "loss-init")
    ),
}

CORPUS = {**CONFIGURATION, **ARCH, **LINT_TARGETS, **OUTPUT, **DATA, **OPTIONS, **USER_LOSSES}

HOG = """import torch
import torch.nn.functional as F


def focal(inputs, targets, alpha=0.25, gamma=2.0):
    torch.empty(4 * 2**30, dtype=torch.uint8).fill_(1)  # 4 GiB
    return F.binary_cross_entropy_with_logits(inputs, targets)
"""
FORKER = FOCAL_FUNCTION.replace(
    "def focal(inputs, targets, alpha=0.25, gamma=2.0):\n",
    """def focal(inputs, targets, alpha=0.25, gamma=2.0):
    import os, time
    child = os.fork()
    if child == 0:
        time.sleep(600)
        os._exit(0)
    with open(os.path.join(os.path.dirname(__file__), "children.txt"), "a") as handle:  # lint's child runs in a folder of its own
        handle.write(f"{child}\\n")
""",
)


def _snapshot(folder: Path) -> dict[str, str]:
    """SHA-256 of every regular file below ``folder`` (FIFOs and devices are listed, not read)."""
    hashes = {}
    for path in sorted(folder.rglob("*")):
        mode = path.lstat().st_mode
        if stat.S_ISREG(mode):
            hashes[str(path.relative_to(folder))] = hashlib.sha256(path.read_bytes()).hexdigest()
        elif not stat.S_ISDIR(mode):
            hashes[str(path.relative_to(folder))] = "special"
    return hashes


def run_case(case: Case, folder: Path) -> subprocess.CompletedProcess:
    """Run the case's command in ``folder`` and check the promises every case shares."""
    arguments = case.make(folder)
    before = _snapshot(folder)
    env = {key: value for key, value in os.environ.items() if key not in ("COLUMNS", "LINES")} | case.env
    started = time.monotonic()

    def limit_files() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (case.open_files, case.open_files))

    result = subprocess.run(
        [sys.executable, "-m", "lossaudit", *arguments],
        cwd=folder,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=LIMIT_S,
        preexec_fn=limit_files if case.open_files else None,
    )
    elapsed = time.monotonic() - started
    assert result.returncode == case.exit_code, (result.returncode, result.stderr[-2000:], result.stdout[-2000:])
    assert "Traceback" not in result.stderr + result.stdout
    if case.exit_code == 2:
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("lossaudit: error: "), result.stderr
        for text in case.says:
            assert text in lines[0], (text, lines[0])
    for text in case.stdout_says:
        assert text in result.stdout, (text, result.stdout[-2000:])
    assert _snapshot(folder) == before, "an input changed or a stray file was left"
    assert elapsed < LIMIT_S
    return result


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_hostile_input(name, tmp_path):
    run_case(CORPUS[name], tmp_path)


def test_lint_enforces_its_memory_limit(tmp_path):
    result = run_case(Case(lambda folder: ["lint", _write(folder, "hog.py", HOG).name + ":focal", "--memory-limit", "1500"], exit_code=1), tmp_path)
    assert "FL015" in result.stdout and "memory limit (1,500 MiB" in result.stdout


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, killed and waiting to be reaped, does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def test_lint_leaves_no_process_behind(tmp_path):
    """The target forks a sleeping child on every call; none may outlive lossaudit."""
    target = _write(tmp_path, "forker.py", FORKER)
    subprocess.run(
        [sys.executable, "-m", "lossaudit", "lint", f"{target.name}:focal"], cwd=tmp_path, stdin=subprocess.DEVNULL, capture_output=True, timeout=LIMIT_S
    )
    children = [int(line) for line in (tmp_path / "children.txt").read_text().split()]
    assert children
    deadline = time.monotonic() + 5
    while any(_alive(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in children if _alive(pid)]


class _Payload:
    """Unpickling this creates ``marker``: if the marker exists, a payload ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def _pickled_npz(folder: Path, marker: Path) -> list[str]:
    np.savez(folder / "evil.npz", logits=np.zeros((2, 3), np.float32), targets=np.array([_Payload(marker), 1], dtype=object))
    return ["compare", "evil.npz"]


def _pickled_npy(folder: Path, marker: Path) -> list[str]:
    (folder / "run").mkdir()
    np.save(folder / "run" / "logits.npy", np.zeros((2, 3), np.float32))
    np.save(folder / "run" / "targets.npy", np.array([_Payload(marker), 1], dtype=object), allow_pickle=True)
    return ["compare", "run"]


def _pickled_pt(folder: Path, marker: Path) -> list[str]:
    import torch

    torch.save({"logits": torch.zeros(2, 3), "targets": torch.zeros(2, dtype=torch.long), "extra": _Payload(marker)}, folder / "evil.pt")
    return ["compare", "evil.pt"]


def _pickled_checkpoint(folder: Path, marker: Path) -> list[str]:
    import torch

    torch.save({"state_dict": {"head.weight": torch.zeros(4, 16)}, "callback": _Payload(marker)}, folder / "evil.ckpt")
    return ["compare", "--model", "evil.ckpt", "--data", str(EXAMPLES / "model" / "val.npz"), "--arch", f"{EXAMPLES / 'model' / 'classifier.py'}:Classifier"]


def _python_tag_yaml(folder: Path, marker: Path) -> list[str]:
    _write(folder, "names.yaml", f"- !!python/object/apply:builtins.open ['{marker}', 'w']\n- b\n- c\n")
    _dump(folder)
    return ["compare", "d.npz", "--class-names", "names.yaml"]


@pytest.mark.parametrize("make", [_pickled_npz, _pickled_npy, _pickled_pt, _pickled_checkpoint, _python_tag_yaml], ids=lambda make: make.__name__.lstrip("_"))
def test_a_pickle_payload_never_runs(make, tmp_path):
    marker = tmp_path / "pwned"
    arguments = make(tmp_path, marker)
    result = subprocess.run(
        [sys.executable, "-m", "lossaudit", *arguments], cwd=tmp_path, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=LIMIT_S
    )
    assert not marker.exists(), result.stderr
    assert "Traceback" not in result.stderr


def test_huge_finite_logits_give_a_strict_json_report(tmp_path):
    """Finite float32 logits of ±3·10^38 in one row (issue 23): the report comes out as strict JSON
    (no NaN or Infinity), numpy's overflow warnings never reach stderr, and bce's sum is the
    float64 BCE of the same logits, ``log(1 + e^x) - x·y`` summed."""
    import json

    rng = np.random.default_rng(0)
    logits = rng.normal(size=(64, 5)).astype(np.float32)
    labels = np.arange(64) % 5
    logits[3, 1], logits[3, 3], logits[7, 0] = 3e38, -3e38, np.finfo(np.float32).max  # row 3's own class at -3e38: -log q = 6e38

    def make(folder: Path) -> list[str]:
        np.savez(folder / "huge.npz", logits=logits, targets=labels)
        return ["compare", "huge.npz", "--format", "json", "--losses", "bce,focal,ce"]

    result = run_case(Case(make, exit_code=0), tmp_path)
    assert result.stderr == ""

    def refuse(constant: str) -> None:
        raise AssertionError(f"{constant} in the JSON report")

    report = json.loads(result.stdout, parse_constant=refuse)
    x = logits.astype(np.float64)
    y = np.eye(5)[labels]
    assert report["losses"]["bce"]["sum"] == pytest.approx((np.logaddexp(0, x) - x * y).sum(), rel=1e-6)
    # sweep too: its softmax-focal histogram bins a row's -log q of 6e38, past float32's range
    for loss in ("softmax-focal", "focal"):
        swept = run_case(Case(lambda folder, loss=loss: ["sweep", "huge.npz", "--loss", loss, "--format", "json"], exit_code=0), tmp_path)
        assert swept.stderr == ""
        assert json.loads(swept.stdout, parse_constant=refuse)["settings"]


SECRET_READER = """import os

import torch.nn.functional as F


def focal(inputs, targets, alpha=0.25, gamma=2.0):
    with open("/proc/self/environ", "rb") as handle:
        seen = b"SOME_TOKEN=" in handle.read()
    if seen or "SOME_TOKEN" in os.environ:
        raise RuntimeError("saw SOME_TOKEN")
    p = inputs.sigmoid()
    ce = F.binary_cross_entropy_with_logits(inputs, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    return (alpha * targets + (1 - alpha) * (1 - targets)) * (1 - p_t) ** gamma * ce
"""


def test_lint_child_does_not_see_the_users_secrets(tmp_path):
    """A lint target reading $SOME_TOKEN from os.environ and /proc/self/environ finds neither (issue
    23 point 3): the child gets only what Python and torch need; --pass-env SOME_TOKEN gives it."""

    def make(*extra: str) -> Callable[[Path], list[str]]:
        def build(folder: Path) -> list[str]:
            _write(folder, "losses.py", SECRET_READER)
            return ["lint", "losses.py:focal", "--isolated", *extra]

        return build

    hidden = run_case(Case(make(), exit_code=0, env={"SOME_TOKEN": "hunter2"}), tmp_path)
    assert "saw SOME_TOKEN" not in hidden.stdout
    passed = run_case(Case(make("--pass-env", "SOME_TOKEN"), exit_code=1, env={"SOME_TOKEN": "hunter2"}), tmp_path)
    assert "FL015" in passed.stdout and "saw SOME_TOKEN" in passed.stdout


MODEL_SOURCE = '''import sys
import time

import torch
from torch import nn

HOARD = []


class Net(nn.Module):
    """examples/model/classifier.pt's layers (16 features, 5 classes), with a forward of its own."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Dropout(0.2), nn.Linear(32, 5))

    def forward(self, x):
{body}
'''


def _hoarding(indent: str) -> str:
    """A loop that maps 256 MiB at a time (a float32 tensor of 2^26 elements, every page written)
    and never frees it, indented by ``indent``."""
    return f"{indent}while True:\n{indent}    HOARD.append(torch.empty(1 << 26).fill_(1.0))\n"


def _forward(body: str, *options: str) -> Callable[[Path], list[str]]:
    """``compare --model classifier.pt --arch net.py:Net`` where Net's forward runs ``body``."""
    return lambda folder: [*_arch(MODEL_SOURCE.format(body=body))(folder), *options]


MODEL_CALL = {
    "--arch forward hangs": Case(
        _forward("        while True:\n            time.sleep(1)\n", "--timeout", "2"),
        says=("classifier.pt (--arch net.py:Net)", "ran past 2 s", "(256, 16)", "--timeout"),
    ),
    "--arch forward allocates without limit": Case(
        _forward(_hoarding(" " * 8), "--memory-limit", "512"), says=("classifier.pt (--arch net.py:Net)", "more than 512 MiB", "(256, 16)", "--memory-limit")
    ),
    "--arch forward calls sys.exit(0)": Case(_forward("        sys.exit(0)\n"), says=("classifier.pt (--arch net.py:Net)", "sys.exit(0)", "(256, 16)")),
    "--arch forward raises KeyboardInterrupt": Case(
        _forward("        raise KeyboardInterrupt\n"), says=("classifier.pt (--arch net.py:Net)", "KeyboardInterrupt", "(256, 16)")
    ),
    "--arch forward raises": Case(
        _forward("        raise ValueError('expects images')\n"), says=("classifier.pt (--arch net.py:Net)", "(256, 16)", "ValueError: expects images")
    ),
    "--arch allocates without limit at import": Case(
        lambda folder: [*_arch(f"import torch\nHOARD = []\n{_hoarding('')}class Net: pass\n")(folder), "--memory-limit", "512"],
        says=("--arch net.py:Net", "importing it used more than 512 MiB", "--memory-limit"),
    ),
    "--arch allocates without limit in its constructor": Case(
        lambda folder: [*_arch(f"import torch\nHOARD = []\nclass Net:\n    def __init__(self):\n{_hoarding(' ' * 8)}")(folder), "--memory-limit", "512"],
        says=("--arch net.py:Net", "building it used more than 512 MiB", "--memory-limit"),
    ),
}
"""The model's code run by ``compare --model`` (issue 23 point 1): its forward passes under
``--timeout`` (per batch) and ``--memory-limit`` (MiB beyond what lossaudit maps), like its import
and its constructor; every failure one line naming the checkpoint, the --arch class and the shape."""


@pytest.mark.parametrize("name", sorted(MODEL_CALL))
def test_hostile_model_code(name, tmp_path):
    started = time.monotonic()
    run_case(MODEL_CALL[name], tmp_path)
    if "hangs" in name:  # stopped at its 2 s limit: what remains is starting Python and torch
        assert time.monotonic() - started < 20


def test_what_the_model_prints_leaves_the_json_report_whole(tmp_path):
    """A forward that prints (a debug line, a progress message) writes to stderr, not into the report."""
    args = _forward("        print('shapes', x.shape)\n        return self.net(x)\n")(tmp_path)
    result = subprocess.run([sys.executable, "-m", "lossaudit", *args, "--format", "json"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["input"]["model"]
    assert "shapes torch.Size([256, 16])" in result.stderr


def _vm_size() -> int:
    """This process's address-space size in bytes, from /proc/self/status's VmSize (kB)."""
    return int(next(line.split()[1] for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("VmSize:"))) * 1024


def test_memory_limit_holds_in_its_block_and_is_lifted_after_it():
    """The soft RLIMIT_AS is what the process maps on entry plus the limit (up to the pages the
    entry itself maps), an allocation past it leaves as MemoryLimitExceeded, and the limit before
    it comes back: 512 MiB can be allocated again."""
    import torch

    from lossaudit._limits import MemoryLimitExceeded, memory_limit

    before = resource.getrlimit(resource.RLIMIT_AS)
    mapped = _vm_size()
    with pytest.raises(MemoryLimitExceeded, match="more than 256 MiB"):
        with memory_limit(256):
            inside = resource.getrlimit(resource.RLIMIT_AS)[0]
            torch.empty(2**27).fill_(1.0)  # 512 MiB of float32
    assert 0 <= inside - (mapped + 256 * 2**20) < 16 * 2**20
    assert resource.getrlimit(resource.RLIMIT_AS) == before
    assert float(torch.empty(2**27).fill_(1.0)[-1]) == 1.0


def test_limits_apply_only_on_the_main_thread():
    """Off the main thread neither a signal nor a process-wide limit can be set for one block:
    the code runs without them."""
    import threading

    from lossaudit._limits import Limits

    seen = []

    def run() -> None:
        with Limits(timeout=0.01, memory_mb=256).applied():
            time.sleep(0.05)
            seen.append(resource.getrlimit(resource.RLIMIT_AS))

    before = resource.getrlimit(resource.RLIMIT_AS)
    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    assert seen == [before]


# --- Weighted dumps (issue 24, engine): hostile sampling weights and padding; one line, exit 2. ---
def _weighted(**overrides: np.ndarray) -> Callable[[Path], list[str]]:
    """A 6-row, 3-class dump with the given weighted-sample keys."""
    return lambda folder: ["compare", _dump(folder, "w.npz", **overrides)]


_ROWS_W = np.array([1.0, 2, 3, 1, 1, 5])
WEIGHTS = {
    "weights negative": Case(_weighted(weights=np.array([1.0, -2, 3, 1, 1, 5])), says=("w.npz", "'weights'", "below 1", "-2", "row 1", ">= 1")),
    "weights NaN": Case(_weighted(weights=np.array([1.0, 2, np.nan, 1, 1, 5])), says=("w.npz", "'weights'", "NaN", "row 2", ">= 1")),
    "weights infinite": Case(_weighted(weights=np.full((6, 3), np.inf)), says=("w.npz", "'weights'", "18 infinite values", "row 0, class 0")),
    "weights zero": Case(_weighted(weights=np.array([1, 0, 3, 1, 1, 5])), says=("w.npz", "'weights'", "1 value below 1", "the first 0 at row 1")),
    "weights in (0, 1)": Case(_weighted(weights=np.full(6, 0.25, dtype=np.float16)), says=("w.npz", "'weights'", "6 values below 1", "0.25", "1/probability")),
    "weights of the wrong shape": Case(_weighted(weights=np.ones((6, 2))), says=("w.npz", "'weights'", "(6, 2)", "expected (6,)", "(6, 3)")),
    "weights of strings": Case(_weighted(weights=np.array(["1"] * 6)), says=("w.npz", "'weights'", "<U1", "real numbers")),
    "weights of bools": Case(_weighted(weights=np.ones(6, dtype=bool)), says=("w.npz", "'weights'", "bool", "real numbers")),
    "padding without weights": Case(_weighted(padding=np.zeros((6, 3), dtype=bool)), says=("w.npz", "'padding'", "without 'weights'")),
    "padding of the wrong shape": Case(_weighted(weights=_ROWS_W, padding=np.zeros(6, dtype=bool)), says=("w.npz", "'padding'", "(6,)", "expected (6, 3)")),
    "padding not 0/1": Case(_weighted(weights=_ROWS_W, padding=np.full((6, 3), 2, dtype=np.int8)), says=("w.npz", "'padding'", "other than 0 and 1")),
    "population_rows not a scalar": Case(_weighted(weights=_ROWS_W, population_rows=np.array([5, 6])), says=("w.npz", "'population_rows'", "one number")),
    "sample_rate above 1": Case(_weighted(weights=_ROWS_W, sample_rate=np.array(3.0)), says=("w.npz", "'sample_rate'", "(0, 1]")),
    "recorded ignored of the wrong shape": Case(_weighted(weights=_ROWS_W, ignored=np.array([1, 2])), says=("w.npz", "'ignored'", "(3,)")),
}


# Compact negatives (the Recorder's negatives_* keys, read as padded pseudo-rows): one line, exit 2.
def _negatives(**overrides: np.ndarray) -> Callable[[Path], list[str]]:
    """The 6-row, 3-class dump as a weighted sample (one-hot targets, weights) with 4 negatives (2, 0, 2)."""
    keys = {
        "targets": np.eye(3, dtype=np.uint8)[np.arange(6) % 3],
        "weights": np.ones((6, 3), dtype=np.float16),
        "negatives_logits": np.array([-3.0, -1, -4, -2], dtype=np.float32),
        "negatives_weights": np.array([1.0, 50, 1, 50], dtype=np.float16),
        "negatives_per_class": np.array([2, 0, 2]),
    }
    keys.update(overrides)
    return _weighted(**{key: value for key, value in keys.items() if value is not None})


WEIGHTS.update(
    {
        "negatives counts negative": Case(
            _negatives(negatives_per_class=np.array([3, -1, 2])), says=("w.npz", "'negatives_per_class'", "-1 at class 1", ">= 0")
        ),
        "negatives counts wrapping around": Case(
            _negatives(negatives_per_class=np.array([2**63 - 1, 2**63 - 1, 6])), says=("w.npz", "'negatives_logits'", "expected (18446744073709551620,)")
        ),
        "negatives counts not summing to K": Case(
            _negatives(negatives_per_class=np.array([1, 1, 1])), says=("w.npz", "'negatives_logits'", "(4,)", "expected (3,)", "sums to 3")
        ),
        "negatives counts of floats": Case(
            _negatives(negatives_per_class=np.array([2.0, 0, 2])), says=("w.npz", "'negatives_per_class'", "float64", "(3,) integer counts")
        ),
        "negatives counts of the wrong shape": Case(
            _negatives(negatives_per_class=np.array([2, 2])), says=("w.npz", "'negatives_per_class'", "(2,)", "expected (3,)")
        ),
        "negatives logits of integers": Case(
            _negatives(negatives_logits=np.array([-3, -1, -4, -2])), says=("w.npz", "'negatives_logits'", "int64", "floating-point")
        ),
        "negatives weights of bools": Case(_negatives(negatives_weights=np.ones(4, dtype=bool)), says=("w.npz", "'negatives_weights'", "bool", "real numbers")),
        "negatives weights of the wrong shape": Case(
            _negatives(negatives_weights=np.ones((4, 1))), says=("w.npz", "'negatives_weights'", "(4, 1)", "expected (4,)")
        ),
        "negatives weights NaN": Case(
            _negatives(negatives_weights=np.array([1.0, np.nan, 1, 2])), says=("w.npz", "'negatives_weights'", "1 NaN value", "element 1", ">= 1")
        ),
        "negatives weights zero": Case(
            _negatives(negatives_weights=np.array([1, 1, 0, 2])), says=("w.npz", "'negatives_weights'", "1 value below 1", "the first 0 at element 2")
        ),
        "negatives weights below 1": Case(
            _negatives(negatives_weights=np.array([0.5, 1, 1, 0.25])), says=("w.npz", "'negatives_weights'", "2 values below 1", "0.5", "1/probability")
        ),
        "negatives weights infinite": Case(
            _negatives(negatives_weights=np.array([1, np.inf, 1, 1])), says=("w.npz", "'negatives_weights'", "1 infinite value")
        ),
        "negatives logits without the others": Case(
            _negatives(negatives_weights=None, negatives_per_class=None), says=("w.npz", "'negatives_logits' without 'negatives_weights'")
        ),
        "negatives counts without the others": Case(_negatives(negatives_logits=None), says=("w.npz", "'negatives_weights' without 'negatives_logits'")),
        "negatives without weights": Case(_negatives(weights=None), says=("w.npz", "'negatives_logits' without 'weights'")),
        "negatives beside class ids": Case(_negatives(targets=np.arange(6) % 4), says=("w.npz", "'negatives_logits'", "per-class targets")),
    }
)


@pytest.mark.parametrize("name", sorted(WEIGHTS))
def test_hostile_weights(name, tmp_path):
    run_case(WEIGHTS[name], tmp_path)
