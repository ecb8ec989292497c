"""``lossaudit.save``: shapes checked when it is called, .npz names only, never overwrites (and
says which file exists), files get the user's umask, and what it writes round-trips exactly."""

from __future__ import annotations

import os
import re
import stat
import threading
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import lossaudit
from lossaudit.io.dump import RUN_ID

pytestmark = pytest.mark.torch_free  # also run without torch, on every Python (.ci/run)


@pytest.mark.parametrize(
    "logits, targets, mask, names, says",
    [
        (np.zeros((8, 4)), np.zeros((8, 3)), None, None, "targets has shape (8, 3) but logits has shape (8, 4); expected (8,) class indices or (8, 4)"),
        (np.zeros((2, 4, 5, 5)), np.zeros((2, 5, 4)), None, None, "expected (2, 5, 5) class indices"),
        (np.zeros(8), np.zeros(8), None, None, "logits has shape (8,)"),
        (np.zeros((0, 4)), np.zeros(0), None, None, "every size at least 1"),
        (np.zeros((8, 4)), np.zeros(8), np.ones(7), None, "mask has shape (7,)"),
        (np.zeros((8, 4)), np.zeros(8), None, ["a", "b"], "class_names has 2 names; logits has 4 classes"),
    ],
)
def test_shapes_are_checked_when_saving(tmp_path, logits, targets, mask, names, says):
    with pytest.raises(ValueError) as error:
        lossaudit.save(tmp_path / "b.npz", logits, targets, class_names=names, mask=mask)
    assert says in str(error.value)
    assert list(tmp_path.iterdir()) == []


def test_a_name_that_is_not_npz_is_refused_not_made_a_folder(tmp_path):
    with pytest.raises(ValueError, match=r"preds\.npy: lossaudit\.save writes \.npz files"):
        lossaudit.save(tmp_path / "preds.npy", np.zeros((2, 3)), np.zeros(2, dtype=np.int64))
    assert list(tmp_path.iterdir()) == []


def test_an_existing_file_is_named_and_kept(tmp_path):
    target = tmp_path / "b.npz"
    target.write_bytes(b"mine")
    with pytest.raises(FileExistsError) as error:
        lossaudit.save(target, np.zeros((2, 3)), np.zeros(2, dtype=np.int64))
    assert error.value.filename == str(target) and str(target) in str(error.value)
    assert target.read_bytes() == b"mine" and sorted(p.name for p in tmp_path.iterdir()) == ["b.npz"]


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_files_get_the_users_umask(tmp_path, umask):
    previous = os.umask(umask)
    try:
        written = lossaudit.save(tmp_path, np.zeros((2, 3)), np.zeros(2, dtype=np.int64))
    finally:
        os.umask(previous)
    assert stat.S_IMODE(written.stat().st_mode) == 0o666 & ~umask


def test_the_report_file_gets_the_users_umask(tmp_path, run_cli):
    previous = os.umask(0o022)
    try:
        result = run_cli("compare", "examples/detection.npz", "--format", "json", "--output", tmp_path / "r.json")
    finally:
        os.umask(previous)
    assert result.exit_code == 0
    assert stat.S_IMODE((tmp_path / "r.json").stat().st_mode) == 0o644


def test_run_id_and_shape_are_recorded(tmp_path):
    written = lossaudit.save(tmp_path, np.zeros((5, 3), dtype=np.float32), np.arange(5) % 3)
    with np.load(written, allow_pickle=False) as data:
        assert str(data["run_id"]) == RUN_ID and data["logits_shape"].tolist() == [5, 3]
    other = lossaudit.save(tmp_path, np.zeros((5, 3), dtype=np.float32), np.arange(5) % 3, run_id="nightly-7")
    with np.load(other, allow_pickle=False) as data:
        assert str(data["run_id"]) == "nightly-7"


@settings(max_examples=40, deadline=None, derandomize=True, database=None)
@given(
    logits=arrays(
        st.sampled_from([np.float16, np.float32, np.float64]), st.tuples(st.integers(1, 9), st.integers(1, 6)), elements=st.floats(-1e4, 1e4, width=16)
    ),
    seed=st.integers(0, 2**16),
    with_mask=st.booleans(),
)
def test_what_is_saved_round_trips_exactly(tmp_path_factory, logits, seed, with_mask):
    rng = np.random.default_rng(seed)
    targets = rng.integers(0, logits.shape[1], size=logits.shape[0])
    mask = (rng.random(logits.shape[0]) > 0.3).astype(np.uint8) if with_mask else None
    names = [f"class {c}" for c in range(logits.shape[1])]
    written = lossaudit.save(tmp_path_factory.mktemp("rt"), logits, targets, class_names=names, mask=mask)
    with np.load(written, allow_pickle=False) as data:
        assert data["logits"].dtype == logits.dtype and np.array_equal(data["logits"], logits)
        assert np.array_equal(data["targets"], targets) and data["class_names"].tolist() == names
        assert (mask is None) == ("mask" not in data) and (mask is None or np.array_equal(data["mask"], mask))


def test_a_folder_mixing_runs_is_a_finding_naming_the_files(tmp_path, compare_json, run_cli):
    rng = np.random.default_rng(0)
    first = [lossaudit.save(tmp_path, rng.normal(size=(6, 3)).astype(np.float32), np.arange(6) % 3) for _ in range(2)]
    second = lossaudit.save(tmp_path, rng.normal(size=(6, 3)).astype(np.float32), np.arange(6) % 3, run_id="rerun")
    report = compare_json(tmp_path, "--losses", "bce")
    (finding,) = [f for f in report["findings"] if f["code"] == "mixed-runs"]
    assert finding["runs"] == {RUN_ID: [str(p) for p in first], "rerun": [str(second)]}
    assert set(finding["files"]) == {str(p) for p in [*first, second]} and finding["gates_strict"]
    assert run_cli("compare", tmp_path, "--losses", "bce", "--strict").exit_code == 1


def test_one_run_is_no_finding(tmp_path, compare_json):
    for _ in range(3):
        lossaudit.save(tmp_path, np.zeros((4, 2), dtype=np.float32), np.array([0, 1, 0, 1]))
    assert "mixed-runs" not in [f["code"] for f in compare_json(tmp_path, "--losses", "bce")["findings"]]


def test_the_bar_and_the_spinner_need_a_terminal_and_a_large_dump():
    """~100 MB of logits and a real terminal: a Rich console forced to act as one (``FORCE_COLOR``
    on a pipe or a CI log) gets nothing."""
    import io
    import pty

    from rich.console import Console

    from lossaudit.render.progress import reading_status, tally_progress

    reader, writer = pty.openpty()  # the terminal's two ends
    received: list[bytes] = []

    def drain() -> None:
        """Read the terminal until its other end closes: one ``os.read`` returns only what has
        arrived so far, and a full pty buffer would block the writer."""
        while True:
            try:
                chunk = os.read(reader, 65536)
            except OSError:  # EIO: the writing end is closed and everything was read
                return
            if not chunk:
                return
            received.append(chunk)

    draining = threading.Thread(target=drain)
    draining.start()
    try:
        with os.fdopen(writer, "w") as terminal:
            console = Console(file=terminal)
            with reading_status(150 * 10**6, console=console):
                pass
            with tally_progress(rows=1_000_000, classes=80, console=console) as advance:
                assert advance is not None
                advance(1_000_000)
            with tally_progress(rows=1_000, classes=80, console=console) as advance, reading_status(10**6, console=console):
                assert advance is None
        draining.join(timeout=30)
        shown = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", b"".join(received).decode())
    finally:
        os.close(reader)
    assert "reading 150 MB of dumps" in shown and "tallying" in shown and "1000000/1000000" in shown
    assert "reading 1 MB" not in shown
    forced = Console(file=io.StringIO(), force_terminal=True)
    with tally_progress(rows=1_000_000, classes=80, console=forced) as advance, reading_status(10**9, console=forced):
        assert advance is None
    assert forced.file.getvalue() == ""


def test_the_process_umask_is_never_changed(tmp_path, monkeypatch):
    """``os.umask`` is process-wide: setting it to read it would race with the user's threads, so
    the files are created with mode 0666 and the kernel applies the umask."""
    from lossaudit.render.formats import write_report

    previous = os.umask(0o027)
    try:
        monkeypatch.setattr(os, "umask", lambda mask: pytest.fail("os.umask called"))
        written = lossaudit.save(tmp_path, np.zeros((2, 3)), np.zeros(2, dtype=np.int64))
        write_report("{}\n", tmp_path / "r.json")
    finally:
        monkeypatch.undo()
        os.umask(previous)
    assert stat.S_IMODE(written.stat().st_mode) == stat.S_IMODE((tmp_path / "r.json").stat().st_mode) == 0o640


def test_a_failed_write_leaves_no_temporary_file(tmp_path, monkeypatch):
    from lossaudit.errors import InputError
    from lossaudit.render.formats import write_report

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez", full_disk)
    with pytest.raises(OSError, match="No space left"):
        lossaudit.save(tmp_path, np.zeros((2, 3)), np.zeros(2, dtype=np.int64))
    monkeypatch.setattr(os, "replace", full_disk)
    with pytest.raises(InputError, match="r.json: cannot write"):
        write_report("{}\n", tmp_path / "r.json")
    assert list(tmp_path.iterdir()) == []


def test_the_mixed_runs_message_names_each_runs_files(tmp_path, compare_json):
    batch = np.zeros((4, 2), dtype=np.float32), np.array([0, 1, 0, 1])
    for _ in range(5):
        lossaudit.save(tmp_path, *batch, run_id="first")
    lossaudit.save(tmp_path, *batch, run_id="rerun")
    (finding,) = [f for f in compare_json(tmp_path, "--losses", "bce")["findings"] if f["code"] == "mixed-runs"]
    assert f"run first: {tmp_path}/batch-000000.npz … {tmp_path}/batch-000004.npz (5 files); run rerun: {tmp_path}/batch-000005.npz;" in finding["message"]


def test_a_folder_mixing_class_counts_is_an_error_listing_each_counts_files_and_runs(tmp_path, run_cli):
    three = [lossaudit.save(tmp_path, np.zeros((4, 3), dtype=np.float32), np.arange(4) % 3, run_id="old") for _ in range(2)]
    four = lossaudit.save(tmp_path, np.zeros((4, 4), dtype=np.float32), np.arange(4), run_id="new")
    result = run_cli("compare", tmp_path)
    assert result.exit_code == 2 and len(result.stderr.splitlines()) == 1
    assert result.stderr.startswith(
        f"lossaudit: error: the dumps mix class counts: 3 classes in {three[0]}, {three[1]} (run old); 4 classes in {four} (run new)"
    )


@pytest.mark.parametrize(
    "logits, targets, says",
    [
        (np.zeros((2, 3), dtype=np.int64), np.zeros(2, dtype=np.int64), "logits has dtype int64; expected floating-point values"),
        (np.zeros((2, 3), dtype=np.complex64), np.zeros(2, dtype=np.int64), "logits has dtype complex64"),
        (np.zeros((2, 3)), np.array(["cat", "dog"]), "targets has dtype <U3; expected numeric values"),
        (np.zeros((2, 3)), np.array([0, {"a": 1}], dtype=object), "targets has dtype object"),
    ],
)
def test_dtypes_compare_cannot_read_are_refused_when_saving(tmp_path, logits, targets, says):
    with pytest.raises(TypeError) as error:
        lossaudit.save(tmp_path, logits, targets)
    assert says in str(error.value) and list(tmp_path.iterdir()) == []


def test_tensors_are_saved_as_arrays(tmp_path):
    torch = pytest.importorskip("torch")
    logits = torch.randn(4, 3, dtype=torch.bfloat16, requires_grad=True)
    written = lossaudit.save(tmp_path, logits, torch.tensor([0, 1, 2, 0]))
    with np.load(written, allow_pickle=False) as data:
        assert data["logits"].dtype == np.float32 and np.array_equal(data["logits"], logits.detach().float().numpy())
        assert data["targets"].tolist() == [0, 1, 2, 0]


def test_save_logits_refuses_what_save_refuses_in_one_line(tmp_path, run_cli):
    """``compare --model ... --save-logits``: targets of a dtype ``save`` refuses are an input
    error naming the option and the array, not an internal error, and nothing is written."""
    torch = pytest.importorskip("torch")
    from tests.fixtures.mlp import MLP

    torch.save(MLP().state_dict(), tmp_path / "raw.pt")
    np.savez(tmp_path / "data.npz", inputs=np.zeros((4, 8), np.float32), targets=np.array(["a", "b", "c", "d"]))
    arch = str(Path(__file__).parent / "fixtures" / "mlp.py") + ":MLP"
    result = run_cli("compare", "--model", tmp_path / "raw.pt", "--arch", arch, "--data", tmp_path / "data.npz", "--save-logits", tmp_path / "out.npz")
    assert result.exit_code == 2 and result.stderr.splitlines() == ["lossaudit: error: --save-logits targets has dtype <U1; expected numeric values"]
    assert not (tmp_path / "out.npz").exists()


@pytest.mark.parametrize(
    "given, written", [("run.v2/", "run.v2/batch-000000.npz"), ("dumps", "dumps/batch-000000.npz"), ("old.npz/", "old.npz/batch-000000.npz")]
)
def test_folders_are_named_by_a_slash_or_no_suffix(tmp_path, monkeypatch, given, written):
    monkeypatch.chdir(tmp_path)
    assert lossaudit.save(given, np.zeros((2, 3)), np.zeros(2, dtype=np.int64)) == Path(written)
    assert (tmp_path / written).is_file()


def test_an_existing_folder_with_a_suffix_is_appended_to(tmp_path):
    (tmp_path / "epoch.3").mkdir()
    assert lossaudit.save(tmp_path / "epoch.3", np.zeros((2, 3)), np.zeros(2, dtype=np.int64)).name == "batch-000000.npz"
