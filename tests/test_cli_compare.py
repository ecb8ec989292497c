"""``lossaudit compare`` through the real CLI: numbers against independent computations, every
output format, and every bad input (one line on stderr, exit 2)."""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from fvcore.nn import sigmoid_focal_loss as fvcore_focal

from tests.conftest import write_npz
from tests.test_losses import _centernet_numpy, _ghm_closed_form, _softmax_focal_numpy

C, BACKGROUND = 4, 4


@pytest.fixture
def detection(tmp_path):
    """120 anchors × 4 classes, index targets with background (4) and ignored (-1) rows."""
    rng = np.random.default_rng(42)
    logits = rng.normal(-2, 2.5, size=(3, 40, C)).astype(np.float32)
    labels = rng.choice([0, 1, 2, 3, BACKGROUND, -1], p=[0.15, 0.1, 0.05, 0.05, 0.6, 0.05], size=(3, 40))
    path = write_npz(tmp_path / "det.npz", logits=logits, targets=labels)
    flat_labels = labels.reshape(-1)
    onehot = np.zeros((120, C), np.float32)
    foreground = flat_labels[(flat_labels >= 0) & (flat_labels < C)]
    onehot[np.nonzero((flat_labels >= 0) & (flat_labels < C))[0], foreground] = 1
    valid_rows = flat_labels != -1
    return path, logits.reshape(120, C), onehot, valid_rows, flat_labels


def test_focal_agrees_with_fvcore(compare_json, detection):
    path, logits, onehot, valid_rows, _ = detection
    report = compare_json(path, "--losses", "focal,bce")
    element = fvcore_focal(torch.from_numpy(logits[valid_rows]), torch.from_numpy(onehot[valid_rows]), alpha=0.25, gamma=2, reduction="none").double()
    focal = report["losses"]["focal"]
    assert focal["sum"] == pytest.approx(element.sum().item(), rel=1e-5)
    assert focal["mean"] == pytest.approx(element.mean().item(), rel=1e-5)
    assert focal["per_positive"] == pytest.approx(element.sum().item() / onehot[valid_rows].sum(), rel=1e-5)
    assert focal["positive_share"] == pytest.approx(element[torch.from_numpy(onehot[valid_rows]) == 1].sum().item() / element.sum().item(), rel=1e-5)
    for c in range(C):
        assert report["per_class"][c]["share"]["focal"] == pytest.approx(element[:, c].sum().item() / element.sum().item(), rel=1e-5)
        assert report["per_class"][c]["positives"] == int(onehot[valid_rows, c].sum())


def test_focal_hyperparameters_reach_the_loss(compare_json, detection):
    path, logits, onehot, valid_rows, _ = detection
    report = compare_json(path, "--losses", "focal", "--alpha", "-1", "--gamma", "1.5")
    expected = fvcore_focal(torch.from_numpy(logits[valid_rows]), torch.from_numpy(onehot[valid_rows]), alpha=-1, gamma=1.5, reduction="sum")
    assert report["losses"]["focal"]["sum"] == pytest.approx(expected.item(), rel=1e-5)
    assert report["losses"]["focal"]["params"] == {"alpha": -1.0, "gamma": 1.5}


@pytest.mark.parametrize("bins", ["10", "30"])
def test_ghm_agrees_with_closed_form(compare_json, detection, bins):
    path, logits, onehot, valid_rows, _ = detection
    report = compare_json(path, "--losses", "ghm", "--ghm-bins", bins)
    expected = _ghm_closed_form(logits[valid_rows].astype(np.float64), onehot[valid_rows].astype(np.float64), int(bins))
    assert report["losses"]["ghm"]["mean"] == pytest.approx(expected, rel=1e-5)


def test_softmax_focal_agrees_with_formula(compare_json, detection, tmp_path):
    path, logits, _, _, labels = detection
    alpha = [0.1, 0.4, 0.7, 0.9]
    (tmp_path / "alpha.txt").write_text("\n".join(map(str, alpha)))
    report = compare_json(path, "--losses", "softmax-focal,ce", "--alpha-per-class", tmp_path / "alpha.txt")
    rows = (labels >= 0) & (labels < C)  # background and ignored rows cannot enter a softmax
    expected = _softmax_focal_numpy(logits[rows].astype(np.float64), labels[rows], 2.0, alpha)
    assert report["losses"]["softmax-focal"]["sum"] == pytest.approx(expected.sum(), rel=1e-5)
    assert report["losses"]["softmax-focal"]["mean"] == pytest.approx(expected.mean(), rel=1e-5)
    ce = _softmax_focal_numpy(logits[rows].astype(np.float64), labels[rows], 0.0)
    assert report["losses"]["ce"]["mean"] == pytest.approx(ce.mean(), rel=1e-5)
    background = int((labels == BACKGROUND).sum())
    assert [f["count"] for f in report["findings"] if f["code"] == "softmax-background"] == [background]


def test_ohem_and_centernet_agree_with_hand_computations(compare_json, tmp_path):
    rng = np.random.default_rng(5)
    heatmap = (rng.random((2, 3, 6, 6)) * 0.9).astype(np.float32)
    heatmap[0, 0, 1, 1] = heatmap[1, 2, 4, 4] = heatmap[1, 1, 0, 5] = 1.0
    logits = rng.normal(-1, 2, size=heatmap.shape).astype(np.float32)
    report = compare_json(write_npz(tmp_path / "h.npz", logits=logits, targets=heatmap), "--losses", "centernet,ohem", "--ohem-ratio", "2")
    probs = np.clip(1 / (1 + np.exp(-logits.astype(np.float64))), 1e-4, 1 - 1e-4)
    assert report["losses"]["centernet"]["mean"] == pytest.approx(_centernet_numpy(probs, heatmap), rel=1e-5)
    x = np.moveaxis(logits, 1, -1).reshape(-1, 3).astype(np.float64)
    y = np.moveaxis(heatmap, 1, -1).reshape(-1, 3).astype(np.float64)
    row = (np.maximum(x, 0) - x * y + np.log1p(np.exp(-np.abs(x)))).sum(axis=1)
    positive = (y == 1).any(axis=1)  # heatmap positives are the peaks
    kept = row[positive].sum() + np.sort(row[~positive])[-2 * positive.sum() :].sum()
    assert report["losses"]["ohem"]["mean"] == pytest.approx(kept / positive.sum(), rel=1e-5)


@pytest.mark.parametrize(
    "probability,label,ce,focal",
    [
        # positive anchor at p = 0.9: -ln 0.9; 0.25 * 0.1^2 * -ln 0.9
        (0.9, 0, 0.1053605, 0.25 * 0.01 * 0.1053605),
        # negative anchor with background probability 0.8: -ln 0.8; 0.75 * 0.2^2 * -ln 0.8
        (0.2, 1, 0.2231436, 0.75 * 0.04 * 0.2231436),
    ],
)
def test_worked_examples(compare_json, tmp_path, probability, label, ce, focal):
    logit = np.log(probability / (1 - probability))
    path = write_npz(tmp_path / "one.npz", logits=np.array([[logit]], np.float32), targets=np.array([label]))
    report = compare_json(path, "--losses", "bce,focal")
    assert report["losses"]["bce"]["sum"] == pytest.approx(ce, rel=1e-5)
    assert report["losses"]["focal"]["sum"] == pytest.approx(focal, rel=1e-5)
    assert report["per_class"][0]["focal_ce_ratio"] == pytest.approx(focal / ce, rel=1e-5)


def test_per_difficulty_counts_and_ghm_weights(compare_json, detection):
    path, logits, onehot, valid_rows, _ = detection
    report = compare_json(path, "--bins", "5")
    g = np.abs(1 / (1 + np.exp(-logits[valid_rows].astype(np.float64))) - onehot[valid_rows])
    which = np.minimum(np.floor(g * 5).astype(int), 4).ravel()
    counts = np.bincount(which, minlength=5)
    nonempty = (counts > 0).sum()
    assert [d["elements"] for d in report["per_difficulty"]] == counts.tolist()
    for d, count in zip(report["per_difficulty"], counts):
        assert d["ghm_weight"] == pytest.approx(g.size / count / nonempty if count else 0.0, rel=1e-9)
    for loss in report["losses"]:
        assert sum(d["share"][loss] for d in report["per_difficulty"]) == pytest.approx(1.0, abs=1e-9)


def test_quadrants_split_classes_by_the_rare_rule(compare_json, tmp_path):
    """Class 0 has 8 positives, class 1 has 1: median 4.5, and 1 < 4.5 / 4 with a spread of 8× (≥ 5×),
    so class 1 is rare. Element g values are chosen by hand: bce loss -ln(1 - g) for every element."""
    g = np.array([[0.05, 0.6], [0.7, 0.2], [0.1, 0.3], [0.2, 0.1], [0.3, 0.05], [0.4, 0.1], [0.1, 0.2], [0.2, 0.3], [0.95, 0.4]])
    labels = np.array([0] * 8 + [1])
    onehot = np.eye(2)[labels]
    p = np.where(onehot == 1, 1 - g, g)
    path = write_npz(tmp_path / "q.npz", logits=np.log(p / (1 - p)).astype(np.float32), targets=labels)
    report = compare_json(path, "--losses", "bce")
    bce = -np.log(1 - g)
    total = bce.sum()
    quadrants = report["quadrants"]
    assert quadrants["median_positives"] == 4.5 and quadrants["class_spread"] == 8.0
    assert quadrants["rare_classes"] == ["1"] and quadrants["common_classes"] == ["0"]
    cells = quadrants["cells"]
    hard = g >= 0.5  # class 1 (rare): (0, 1) only; class 0 (common): (1, 0) and (8, 0)
    assert cells["rare_hard"]["share"]["bce"] == pytest.approx(bce[hard[:, 1], 1].sum() / total, rel=1e-5)
    assert cells["rare_easy"]["share"]["bce"] == pytest.approx(bce[~hard[:, 1], 1].sum() / total, rel=1e-5)
    assert cells["common_hard"]["share"]["bce"] == pytest.approx(bce[hard[:, 0], 0].sum() / total, rel=1e-5)
    assert cells["common_easy"]["elements"] == int((~hard[:, 0]).sum())


def test_balanced_classes_have_no_rare_class(compare_json, tmp_path):
    """3 against 1 positives: below the median (the old rule) but a spread of 3× (< 5×): no rare class."""
    g = np.array([[0.05, 0.6], [0.7, 0.2], [0.1, 0.3], [0.95, 0.4]])
    labels = np.array([0, 0, 0, 1])
    p = np.where(np.eye(2)[labels] == 1, 1 - g, g)
    report = compare_json(write_npz(tmp_path / "b.npz", logits=np.log(p / (1 - p)).astype(np.float32), targets=labels), "--losses", "bce")
    assert report["quadrants"]["rare_classes"] == [] and report["quadrants"]["class_spread"] == 3.0


def test_input_section_states_conventions(compare_json, detection):
    path, _, onehot, valid_rows, labels = detection
    report = compare_json(path)
    inp = report["input"]
    assert inp["target_encoding"] == "index" and inp["background_index"] == BACKGROUND and inp["ignore_index"] == -1
    assert inp["positives"] == int(onehot[valid_rows].sum())
    assert inp["ignored_elements"] == int((labels == -1).sum()) * C
    assert inp["shapes"] == [{"file": str(path), "logits": [3, 40, C], "targets": [3, 40]}]
    # background rows make it detection data: the sigmoid losses, which fit it, come first
    assert report["input"]["data_kind"] == "detection"
    assert list(report["losses"]) == ["bce", "focal", "ghm", "ce", "softmax-focal"]


def test_heatmap_defaults_add_centernet(compare_json, tmp_path):
    heatmap = np.zeros((1, 2, 4, 4), np.float32)
    heatmap[0, 0, 1, 1], heatmap[0, 0, 1, 2] = 1.0, 0.5
    report = compare_json(write_npz(tmp_path / "h.npz", logits=np.zeros_like(heatmap), targets=heatmap))
    assert report["input"]["target_encoding"] == "heatmap"
    assert "centernet" in report["losses"]


def test_nan_logits_are_excluded_counted_and_fail_strict(run_cli, tmp_path):
    logits = np.array([[0.5, np.nan], [np.inf, -1.0], [2.0, 0.0]], np.float32)
    path = write_npz(tmp_path / "n.npz", logits=logits, targets=np.array([0, 1, 2]), class_names=np.array(["cat", "dog"]))
    result = run_cli("compare", path, "--format", "json", "--losses", "bce")
    assert result.exit_code == 0
    report = json.loads(result.stdout)
    finding = next(f for f in report["findings"] if f["code"] == "non-finite")
    assert finding["count"] == 2 and finding["per_class"] == {"cat": 1, "dog": 1}
    finite = torch.tensor([0.5, -1.0, 2.0, 0.0])
    targets = torch.tensor([1.0, 1.0, 0.0, 0.0])
    expected = torch.nn.functional.binary_cross_entropy_with_logits(finite, targets, reduction="sum")
    assert report["losses"]["bce"]["sum"] == pytest.approx(expected.item(), rel=1e-5)
    strict = run_cli("compare", path, "--strict")
    assert strict.exit_code == 1
    assert "non-finite" in strict.stdout


def test_labels_out_of_range_are_excluded_counted_and_fail_strict(run_cli, tmp_path):
    logits = np.array([[2.0, -1.0], [0.5, 0.5], [-3.0, 1.0], [1.0, 1.0]], np.float32)
    path = write_npz(tmp_path / "r.npz", logits=logits, targets=np.array([0, 255, 1, 255]))
    result = run_cli("compare", path, "--format", "json", "--losses", "bce")
    assert result.exit_code == 0
    report = json.loads(result.stdout)
    finding = next(f for f in report["findings"] if f["code"] == "labels-out-of-range")
    assert finding["count"] == 2 and finding["labels"] == {"255": 2}
    assert "--ignore-index" in finding["message"]
    kept = torch.tensor([[2.0, -1.0], [-3.0, 1.0]])
    expected = torch.nn.functional.binary_cross_entropy_with_logits(kept, torch.tensor([[1.0, 0.0], [0.0, 1.0]]), reduction="sum")
    assert report["losses"]["bce"]["sum"] == pytest.approx(expected.item(), rel=1e-5)
    assert run_cli("compare", path, "--strict").exit_code == 1
    assert run_cli("compare", path, "--strict", "--ignore-index", "255").exit_code == 0


def test_strict_ignores_classes_without_positives(run_cli, tmp_path):
    path = write_npz(tmp_path / "c.npz", logits=np.array([[2.0, -1.0], [1.0, -2.0]], np.float32), targets=np.array([0, 0]))
    result = run_cli("compare", path, "--strict", "--losses", "bce")
    assert result.exit_code == 0 and "class-without-positives" in result.stdout


def test_probabilities_finding_and_conversion(run_cli, tmp_path):
    probs = np.array([[0.9, 0.1], [0.3, 0.8]], np.float32)
    path = write_npz(tmp_path / "p.npz", logits=probs, targets=np.array([0, 1]))
    report = json.loads(run_cli("compare", path, "--format", "json").stdout)
    assert [f["code"] for f in report["findings"]] == ["probabilities-as-logits"]
    converted = json.loads(run_cli("compare", path, "--format", "json", "--inputs", "probs", "--losses", "bce").stdout)
    assert converted["findings"] == []
    assert converted["losses"]["bce"]["sum"] == pytest.approx(-np.log([0.9, 0.9, 0.7, 0.8]).sum(), rel=1e-5)


def test_text_report_has_every_section(run_cli):
    result = run_cli("compare", Path(__file__).parent.parent / "examples" / "detection.npz", "--top", "3")
    assert result.exit_code == 0
    for heading in ("Loaded", "Losses", "Per class", "Per difficulty", "Attention quadrants", "Data findings", "top 3 of 20"):
        assert heading in result.stdout
    assert "person" in result.stdout or "chair" in result.stdout


def test_markdown_and_output_file(run_cli, detection, tmp_path):
    path = detection[0]
    out = tmp_path / "summary.md"
    result = run_cli("compare", path, "--format", "markdown", "--output", out)
    assert result.exit_code == 0 and result.stdout == ""
    text = out.read_text()
    assert "### Summary" in text and "### Losses" in text and "| loss | sees | params |" in text and "### Attention quadrants" in text
    text_out = tmp_path / "report.txt"
    assert run_cli("compare", path, "--output", text_out).exit_code == 0
    assert "Per difficulty" in text_out.read_text()


def _pickled_object_dump(path: Path) -> Path:
    np.savez(path, logits=np.zeros((2, 2), np.float32), targets=np.array([{"a": 1}, None], dtype=object))
    return path


def _malicious_pt(path: Path, marker: Path) -> Path:
    class Exploit:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    torch.save({"logits": torch.zeros(2, 2), "targets": Exploit()}, path)
    return path


BAD_INPUTS = {
    "missing file": (lambda d: [d / "nope.npz"], "no such file"),
    "unsupported type": (lambda d: [_touch(d / "x.csv")], "unsupported file type"),
    "bad key": (lambda d: [write_npz(d / "k.npz", logits=np.zeros((2, 2), np.float32), targets=np.array([0, 1])), "--logits-key", "out"], "no key 'out'"),
    "no targets key": (lambda d: [write_npz(d / "k.npz", logits=np.zeros((2, 2), np.float32), cls=np.array([0, 1]))], "no targets key"),
    "wrong shape": (lambda d: [write_npz(d / "s.npz", logits=np.zeros((4, 3), np.float32), targets=np.zeros((4, 2)))], "expected (4,) class indices"),
    "integer logits": (lambda d: [write_npz(d / "i.npz", logits=np.zeros((2, 2), np.int64), targets=np.array([0, 1]))], "expected floating-point logits"),
    "string targets": (lambda d: [write_npz(d / "t.npz", logits=np.zeros((2, 2), np.float32), targets=np.array(["a", "b"]))], "expected a numeric array"),
    "non-integer class ids": (
        lambda d: [write_npz(d / "r.npz", logits=np.zeros((3, 2), np.float32), targets=np.array([0.0, 1.5, 1.0]))],
        "index targets must be whole numbers",
    ),
    "soft targets above 1": (
        lambda d: [write_npz(d / "o.npz", logits=np.zeros((2, 2), np.float32), targets=np.array([[0.5, 2.0], [0, 1]]))],
        "values outside [0, 1]",
    ),
    "pickled object array": (lambda d: [_pickled_object_dump(d / "obj.npz")], "pickled Python objects"),
    "corrupt archive": (lambda d: [_write_bytes(d / "c.npz", b"PK\x03\x04 not really a zip")], "not a readable .npz"),
    "truncated torch file": (lambda d: [_write_bytes(d / "c.pt", b"\x80\x02garbage")], "d.pt" if False else "c.pt"),
    "class count mismatch": (
        lambda d: [
            write_npz(d / "a.npz", logits=np.zeros((2, 2), np.float32), targets=np.array([0, 1])),
            write_npz(d / "b.npz", logits=np.zeros((2, 3), np.float32), targets=np.array([0, 1])),
        ],
        "the dumps mix class counts: 2 classes in",
    ),
    "probabilities requested on logits": (
        lambda d: [write_npz(d / "l.npz", logits=np.array([[3.0, -1.0]], np.float32), targets=np.array([0])), "--inputs", "probs"],
        "needs probabilities",
    ),
    "bad alpha": (lambda d: [write_npz(d / "a.npz", logits=np.zeros((2, 2), np.float32), targets=np.array([0, 1])), "--alpha", "1.5"], "--alpha 1.5"),
    "unknown loss": (
        lambda d: [write_npz(d / "a.npz", logits=np.zeros((2, 2), np.float32), targets=np.array([0, 1])), "--losses", "ce,dice"],
        "unknown loss dice",
    ),
    "class names mismatch": (
        lambda d: [
            write_npz(d / "a.npz", logits=np.zeros((2, 2), np.float32), targets=np.array([0, 1])),
            "--class-names",
            _write_bytes(d / "n.txt", b"a\nb\nc\n"),
        ],
        "3 names; the data has 2 classes",
    ),
}


def _touch(path: Path) -> Path:
    path.write_text("x")
    return path


def _write_bytes(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    return path


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_one_line_exit_2(run_cli, tmp_path, case):
    build, expected = BAD_INPUTS[case]
    result = run_cli("compare", *build(tmp_path))
    assert result.exit_code == 2, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lossaudit: error:"), result.stderr
    assert expected in lines[0]
    assert "Traceback" not in result.stderr


def test_malicious_pickle_is_refused_and_runs_nothing(run_cli, tmp_path):
    marker = tmp_path / "pwned"
    path = _malicious_pt(tmp_path / "evil.pt", marker)
    result = run_cli("compare", path)
    assert result.exit_code == 2
    assert "refused to unpickle" in result.stderr and str(path) in result.stderr
    assert not marker.exists()


def test_verbose_shows_the_traceback(run_cli, tmp_path):
    result = run_cli("compare", tmp_path / "nope.npz", "-v")
    assert result.exit_code == 2 and "InputError" in result.stderr


def test_user_files_are_not_modified(run_cli, detection):
    path = detection[0]
    before = path.read_bytes()
    assert run_cli("compare", path, "--inputs", "logits").exit_code == 0
    assert path.read_bytes() == before


def test_help_and_version_do_not_import_torch():
    code = (
        "import sys\n"
        "from lossaudit.cli import app\n"
        "for args in (['--help'], ['--version'], ['compare', '--help'], ['lint', '--help'], ['rules'], ['rules', 'FL001']):\n"
        "    try:\n"
        "        app(args)\n"
        "    except SystemExit as exit:\n"
        "        assert exit.code == 0, exit.code\n"
        "print('torch' in sys.modules, 'numpy' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip().splitlines()[-1] == "False False"


def test_module_entry_point_prints_the_versions_a_bug_report_needs():
    import platform

    import numpy
    import torch

    result = subprocess.run([sys.executable, "-m", "lossaudit", "--version"], capture_output=True, text=True, check=True)
    from lossaudit import __version__

    lines = result.stdout.strip().splitlines()
    assert lines[0] == f"lossaudit {__version__}"
    assert lines[1].startswith(f"Python {platform.python_version()} (CPython, ")
    assert lines[2:] == [f"numpy {numpy.__version__}", f"torch {torch.__version__}"]


EXAMPLES = Path(__file__).parent.parent / "examples"


def _single_label(tmp_path, rows=200, classes=4, seed=3):
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 2, size=(rows, classes)).astype(np.float32)
    labels = rng.integers(0, classes, rows)
    return write_npz(tmp_path / "cls.npz", logits=logits, targets=labels), logits.astype(np.float64), labels


def test_losses_that_fit_the_data_come_first_and_say_what_they_see(compare_json, detection, tmp_path):
    path, _, _, valid_rows, labels = detection
    report = compare_json(path)
    foreground = int(((labels >= 0) & (labels < C)).sum())
    assert report["losses"]["ce"]["covers"] == {"unit": "rows", "count": foreground}
    assert report["losses"]["bce"]["covers"] == {"unit": "elements", "count": int(valid_rows.sum()) * C}
    assert [d["fits_data"] for d in report["losses"].values()] == [True, True, True, False, False]
    single, _, _ = _single_label(tmp_path)
    report = compare_json(single)
    assert report["input"]["data_kind"] == "single-label"
    assert list(report["losses"]) == ["ce", "softmax-focal", "bce", "focal", "ghm"]


def test_softmax_background_gates_strict_only_when_a_softmax_loss_is_asked_for(run_cli, tmp_path, monkeypatch):
    detection = EXAMPLES / "detection.npz"
    assert run_cli("compare", detection, "--strict", "--isolated").exit_code == 0
    explicit = run_cli("compare", detection, "--losses", "ce,focal", "--strict", "--isolated")
    assert explicit.exit_code == 1 and "softmax-background" in explicit.stderr
    (tmp_path / "pyproject.toml").write_text('[tool.lossaudit.compare]\nlosses = ["ce", "bce"]\nstrict = true\n')
    monkeypatch.chdir(tmp_path)
    assert run_cli("compare", detection).exit_code == 1  # asked for in the configuration
    report = json.loads(run_cli("compare", detection, "--format", "json", "--isolated").stdout)
    [note] = report["findings"]
    assert (note["code"], note["level"], note["gates_strict"]) == ("softmax-background", "info", False)


def test_the_action_gate_passes_on_every_example_dump(run_cli):
    """action.yml runs `lossaudit compare $COMPARE $COMPARE_ARGS --strict --format github`."""
    for dump in sorted(EXAMPLES.glob("*.npz")):
        result = run_cli("compare", dump, "--strict", "--format", "github", "--isolated")
        assert result.exit_code == 0, (dump, result.stdout, result.stderr)
        assert "::error" not in result.stdout


def test_multi_hot_rows_under_a_softmax_loss_are_a_finding(run_cli, tmp_path):
    rng = np.random.default_rng(0)
    targets = (rng.random((30, 3)) < 0.4).astype(np.float32)
    targets[:3] = [[1, 1, 0], [1, 0, 0], [0, 0, 0]]
    path = write_npz(tmp_path / "m.npz", logits=rng.normal(size=(30, 3)).astype(np.float32), targets=targets)
    multi_hot = int((targets.sum(axis=1) > 1).sum())
    report = json.loads(run_cli("compare", path, "--format", "json").stdout)
    finding = next(f for f in report["findings"] if f["code"] == "softmax-multi-hot")
    assert finding["count"] == multi_hot and not finding["gates_strict"]
    assert report["input"]["multi_hot_rows"] == multi_hot and report["input"]["data_kind"] == "detection"
    strict = run_cli("compare", path, "--losses", "ce", "--strict")
    assert strict.exit_code == 1 and "softmax-multi-hot" in strict.stderr


def test_softmax_losses_count_rows_where_they_bin_rows(compare_json, tmp_path):
    path, logits, labels = _single_label(tmp_path)
    report = compare_json(path, "--bins", "4")
    q = np.exp(logits - logits.max(axis=1, keepdims=True))
    q /= q.sum(axis=1, keepdims=True)
    g_rows = 1 - q[np.arange(len(labels)), labels]
    g_elements = np.abs(1 / (1 + np.exp(-logits)) - np.eye(4)[labels])
    assert [d["rows"] for d in report["per_difficulty"]] == np.bincount(np.minimum((g_rows * 4).astype(int), 3), minlength=4).tolist()
    assert [d["elements"] for d in report["per_difficulty"]] == np.bincount(np.minimum((g_elements * 4).astype(int), 3).ravel(), minlength=4).tolist()
    hard_rows = int((g_rows >= 0.5).sum())
    cells = report["quadrants"]["cells"]
    assert cells["rare_hard"]["rows"] + cells["common_hard"]["rows"] == hard_rows
    assert cells["rare_hard"]["elements"] + cells["common_hard"]["elements"] == int((g_elements >= 0.5).sum())


def test_top_ranks_by_one_stated_loss(run_cli, detection):
    path, logits, onehot, valid_rows, _ = detection
    report = json.loads(run_cli("compare", path, "--format", "json").stdout)
    first_fitting = next(loss for loss, d in report["losses"].items() if d["fits_data"])  # not the largest total
    result = run_cli("compare", path, "--top", "2")
    assert f"top 2 of {C} classes by {first_fitting} loss" in result.stdout
    p = 1 / (1 + np.exp(-logits[valid_rows].astype(np.float64)))
    y = onehot[valid_rows]
    bce = -(y * np.log(p) + (1 - y) * np.log(1 - p)).sum(axis=0)
    names = [str(c) for c in np.argsort(-bce)]
    by_bce = run_cli("compare", path, "--top", "2", "--top-by", "bce", "--format", "markdown").stdout
    table = by_bce.split("### Per class")[1].split("###")[0]
    shown = [line.split("|")[1].strip() for line in table.splitlines() if line.startswith("| ")][2:-1]  # headers, rule, total
    assert shown == names[:2]
    bad = run_cli("compare", path, "--top-by", "dice")
    assert bad.exit_code == 2 and bad.stderr.startswith("lossaudit: error: --top-by dice")


def test_github_annotates_every_dump_file_with_a_finding(run_cli, tmp_path):
    clean = np.array([[2.0, -1.0], [-1.0, 2.0]], np.float32)
    a = write_npz(tmp_path / "a.npz", logits=np.array([[np.nan, 0.0], [1.0, 0.0]], np.float32), targets=np.array([0, 1]))
    b = write_npz(tmp_path / "b.npz", logits=clean, targets=np.array([0, 1]))
    c = write_npz(tmp_path / "c.npz", logits=np.array([[np.inf, np.nan], [1.0, 0.0]], np.float32), targets=np.array([0, 1]))
    lines = run_cli("compare", a, b, c, "--format", "github", "--strict", "--losses", "bce").stdout.splitlines()
    assert len(lines) == 2
    assert "a.npz" in lines[0] and "(1 in this file)" in lines[0] and lines[0].startswith("::error")
    assert "c.npz" in lines[1] and "(2 in this file)" in lines[1]


@pytest.mark.parametrize("fork", [True, False], ids=["processes", "threads"])
def test_the_progress_hook_counts_every_row_once_across_workers(detection, monkeypatch, fork):
    """``stream_tally(progress=...)`` is called in this process with the rows tallied since its
    last call: once per chunk with threads, in batches with forked workers; the calls add up to the
    rows of the data."""
    from dataclasses import replace

    from lossaudit.compare.engine import parallel
    from lossaudit.compare.engine.stream import stream_tally
    from lossaudit.compare.settings import LossSettings
    from lossaudit.io.dataset import plan
    from lossaudit.io.readers import read_batches

    monkeypatch.setattr(parallel, "FORK", fork and parallel.FORK)
    data = plan(read_batches([detection[0]]))
    calls = []
    stream_tally(data, replace(LossSettings(), losses=("bce",)), chunk_rows=7, workers=3, progress=calls.append)
    assert sum(calls) == data.info.num_rows == 120 and all(rows > 0 for rows in calls)
    assert len(calls) == len(data.ranges(7)) == 18 if not parallel.FORK else 6 <= len(calls) <= 18


def _big_dump(folder: Path) -> int:
    """Just over the bar's ~100 MB of float32 logits, as memory-mapped ``.npy`` files."""
    from lossaudit.render.progress import SHOW_FROM_BYTES

    classes = 20
    rows = SHOW_FROM_BYTES // (4 * classes) + 1
    rng = np.random.default_rng(0)
    folder.mkdir()
    np.save(folder / "logits.npy", rng.standard_normal((rows, classes), dtype=np.float32))
    np.save(folder / "targets.npy", rng.integers(0, classes + 1, rows))
    return rows


def test_a_large_dump_shows_a_transient_spinner_and_bar_on_a_terminal_and_nothing_in_a_pipe(tmp_path, run_cli, monkeypatch):
    dump = tmp_path / "big"
    rows = _big_dump(dump)
    command = [sys.executable, "-m", "lossaudit", "compare", str(dump), "--losses", "bce", "--format", "json"]
    terminal, child_side = pty.openpty()
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=child_side, env={**os.environ, "COLUMNS": "100"})
    os.close(child_side)
    shown = b""
    while True:  # read as it runs, so the child never blocks on a full terminal
        try:
            data = os.read(terminal, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        shown += data
    os.close(terminal)
    report = json.loads(child.stdout.read())
    assert child.wait(timeout=120) == 0 and report["input"]["rows"] == rows
    text = shown.decode()
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)
    assert "reading 115 MB of dumps" in plain and "tallying" in plain and f"{rows}/{rows} rows" in plain
    assert text.endswith("\x1b[1A\x1b[2K"), repr(text[-80:])  # transient: the cursor goes up and erases the bar
    monkeypatch.setenv("FORCE_COLOR", "1")  # colours in a CI log, still no bar
    piped = run_cli(*command[3:])
    assert piped.exit_code == 0 and piped.stderr == "" and json.loads(piped.stdout)["input"]["rows"] == rows
