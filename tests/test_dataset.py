"""Loading: file formats, key discovery, shape conventions, target encodings, masks, class names."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import lossaudit
from lossaudit.errors import InputError
from lossaudit.io.dataset import LoadOptions, load, read_class_names
from tests.conftest import write_npz


def _index_dump(tmp_path: Path, name: str = "d.npz", n: int = 6, c: int = 3, **extra) -> Path:
    rng = np.random.default_rng(0)
    return write_npz(tmp_path / name, logits=rng.normal(size=(n, c)).astype(np.float32), targets=np.arange(n) % (c + 1), **extra)


def test_index_targets_become_onehot_with_background_rows(tmp_path):
    data = load([_index_dump(tmp_path)])
    assert data.encoding == "index" and data.encoding_detected
    assert data.background_index == 3 and data.ignore_index == -1
    expected = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0, 0], [1, 0, 0], [0, 1, 0]], dtype=np.float32)
    np.testing.assert_array_equal(data.targets.numpy(), expected)
    assert int(data.positive.sum()) == 5


def test_ignore_index_drops_whole_rows(tmp_path):
    path = write_npz(tmp_path / "d.npz", logits=np.zeros((3, 2), np.float32), targets=np.array([0, 255, 1]))
    data = load([path], LoadOptions(ignore_index=255))
    np.testing.assert_array_equal(data.valid.numpy(), [[True, True], [False, False], [True, True]])
    assert int(data.ignored.sum()) == 2


def test_custom_background_index(tmp_path):
    path = write_npz(tmp_path / "d.npz", logits=np.zeros((2, 2), np.float32), targets=np.array([7, 1]))
    data = load([path], LoadOptions(background_index=7))
    np.testing.assert_array_equal(data.targets.numpy(), [[0, 0], [0, 1]])


def test_background_index_inside_class_range_is_refused(tmp_path):
    with pytest.raises(InputError, match="collides with class 0"):
        load([_index_dump(tmp_path)], LoadOptions(background_index=0))


@pytest.mark.parametrize(
    "targets,encoding",
    [
        (np.array([[1, 0], [1, 1], [0, 0]], np.float32), "onehot"),
        (np.array([[0.7, 0], [0.2, 0.9], [0, 0]], np.float32), "soft"),
    ],
)
def test_per_class_targets_are_detected(tmp_path, targets, encoding):
    path = write_npz(tmp_path / "d.npz", logits=np.zeros((3, 2), np.float32), targets=targets)
    data = load([path])
    assert data.encoding == encoding
    np.testing.assert_array_equal(data.targets.numpy(), targets)
    np.testing.assert_array_equal(data.positive.numpy(), targets >= 0.5)


def test_heatmap_targets_are_detected_and_positives_are_peaks(tmp_path):
    heatmap = np.zeros((1, 2, 4, 4), np.float32)
    heatmap[0, 1, 1, 1], heatmap[0, 1, 1, 2], heatmap[0, 0, 3, 3] = 1.0, 0.6, 1.0
    path = write_npz(tmp_path / "h.npz", logits=np.zeros_like(heatmap), targets=heatmap)
    data = load([path])
    assert data.encoding == "heatmap" and data.class_dim == 1
    assert data.num_rows == 16 and data.num_classes == 2
    assert int(data.positive.sum()) == 2  # 0.6 is not a peak


def test_forced_encoding_is_checked(tmp_path):
    path = write_npz(tmp_path / "d.npz", logits=np.zeros((2, 2), np.float32), targets=np.array([[0.5, 0.0], [0.0, 1.0]], np.float32))
    with pytest.raises(InputError, match="use --targets soft"):
        load([path], LoadOptions(targets="onehot"))
    with pytest.raises(InputError, match="cannot be read as --targets index"):
        load([path], LoadOptions(targets="index"))


def test_anchor_shape_is_flattened(tmp_path):
    logits = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    path = write_npz(tmp_path / "a.npz", logits=logits, targets=np.zeros((2, 3), np.int64))
    data = load([path])
    assert data.class_dim == 2
    np.testing.assert_array_equal(data.logits.numpy(), logits.reshape(6, 4))


def test_map_shape_moves_class_axis_last(tmp_path):
    logits = np.random.default_rng(1).normal(size=(2, 3, 4, 5)).astype(np.float32)
    labels = np.random.default_rng(2).integers(0, 3, size=(2, 4, 5))
    data = load([write_npz(tmp_path / "m.npz", logits=logits, targets=labels)])
    assert data.num_rows == 40 and data.num_classes == 3
    np.testing.assert_array_equal(data.logits.numpy()[7], logits[0, :, 1, 2])  # row 7 = (b 0, h 1, w 2)
    assert data.targets.numpy()[7, labels[0, 1, 2]] == 1


def test_class_dim_override(tmp_path):
    logits = np.random.default_rng(1).normal(size=(4, 3, 5)).astype(np.float32)  # (N, C, L)
    path = write_npz(tmp_path / "m.npz", logits=logits, targets=np.zeros((4, 5), np.int64))
    data = load([path], LoadOptions(class_dim=1))
    assert data.num_classes == 3 and data.num_rows == 20


def test_several_files_concatenate_along_samples(tmp_path):
    first, second = _index_dump(tmp_path, "a.npz", n=4), _index_dump(tmp_path, "b.npz", n=6)
    data = load([first, second])
    assert data.num_rows == 10 and data.files == [str(first), str(second)]


def test_folder_of_batches_written_by_save(tmp_path):
    folder = tmp_path / "dumps"
    for seed in range(3):
        rng = np.random.default_rng(seed)
        written = lossaudit.save(folder, logits=torch.from_numpy(rng.normal(size=(5, 2)).astype(np.float32)), targets=torch.tensor([0, 1, 2, 0, 1]))
        assert written.name == f"batch-{seed:06d}.npz"
    data = load([folder])
    assert data.num_rows == 15 and len(data.files) == 3


def test_save_never_overwrites(tmp_path):
    path = lossaudit.save(tmp_path / "one.npz", logits=np.zeros((1, 2), np.float32), targets=np.array([0]))
    with pytest.raises(FileExistsError):
        lossaudit.save(path, logits=np.ones((1, 2), np.float32), targets=np.array([1]))
    assert load([path]).logits.sum() == 0
    assert [p.name for p in tmp_path.iterdir()] == ["one.npz"]  # no temporary file left behind


def test_save_round_trips_bfloat16_mask_and_names(tmp_path):
    logits = torch.randn(4, 3, dtype=torch.bfloat16)
    path = lossaudit.save(tmp_path, logits=logits, targets=torch.tensor([0, 1, 2, 3]), class_names=["a", "b", "c"], mask=torch.tensor([1, 0, 1, 1]))
    data = load([path])
    assert data.class_names == ["a", "b", "c"]
    torch.testing.assert_close(data.logits, logits.float())
    assert int(data.ignored.any(dim=1).sum()) == 1


def test_npy_files_of_a_folder_form_one_batch(tmp_path):
    np.save(tmp_path / "preds.npy", np.zeros((3, 2), np.float32))
    np.save(tmp_path / "labels.npy", np.array([0, 1, 2]))
    data = load([tmp_path / "preds.npy", tmp_path / "labels.npy"])
    assert (data.logits_key, data.targets_key, data.num_rows) == ("preds", "labels", 3)


@pytest.mark.parametrize("as_tuple", [False, True])
def test_torch_files_with_tensors_or_numpy_arrays(tmp_path, as_tuple):
    logits, labels = torch.randn(4, 3), np.array([0, 1, 2, 3])
    content = (logits, labels) if as_tuple else {"scores": logits.numpy(), "gt": torch.from_numpy(labels), "class_names": ["x", "y", "z"]}
    torch.save(content, tmp_path / "d.pt")
    data = load([tmp_path / "d.pt"])
    torch.testing.assert_close(data.logits, logits)
    assert data.class_names == (["0", "1", "2"] if as_tuple else ["x", "y", "z"])


def test_element_mask_and_row_mask(tmp_path):
    logits = np.zeros((2, 2), np.float32)
    row_mask = load([write_npz(tmp_path / "r.npz", logits=logits, targets=np.array([0, 1]), mask=np.array([1, 0]))])
    np.testing.assert_array_equal(row_mask.valid.numpy(), [[True, True], [False, False]])
    element_mask = load([write_npz(tmp_path / "e.npz", logits=logits, targets=np.array([0, 1]), mask=np.array([[1, 0], [1, 1]]))])
    np.testing.assert_array_equal(element_mask.valid.numpy(), [[True, False], [True, True]])


def test_nonfinite_logits_are_invalid_not_ignored(tmp_path):
    logits = np.array([[np.nan, 0.0], [np.inf, 1.0]], np.float32)
    data = load([write_npz(tmp_path / "n.npz", logits=logits, targets=np.array([0, 1]))])
    np.testing.assert_array_equal(data.valid.numpy(), [[False, True], [False, True]])
    assert int(data.ignored.sum()) == 0


def test_probabilities_are_flagged_and_converted(tmp_path):
    probs = np.array([[0.9, 0.2], [0.0, 1.0]], np.float32)
    path = write_npz(tmp_path / "p.npz", logits=probs, targets=np.array([0, 1]))
    assert load([path]).inputs_look_like_probabilities
    converted = load([path], LoadOptions(inputs="probs"))
    assert not converted.inputs_look_like_probabilities
    np.testing.assert_allclose(torch.sigmoid(converted.logits).numpy(), np.clip(probs, 1e-6, 1 - 1e-6), rtol=1e-5)


def test_class_names_files(tmp_path):
    (tmp_path / "lines.txt").write_text("cat\ndog\n\n")
    (tmp_path / "list.yaml").write_text("- cat\n- dog\n")
    (tmp_path / "map.yaml").write_text("1: dog\n0: cat\n")
    for name in ("lines.txt", "list.yaml", "map.yaml"):
        assert read_class_names(tmp_path / name) == ["cat", "dog"]
    (tmp_path / "gap.yaml").write_text("0: cat\n2: dog\n")
    with pytest.raises(InputError, match="keys must be 0..1"):
        read_class_names(tmp_path / "gap.yaml")
