"""``compare`` reads the dumps users really produce (issue 22, points 4-6), on real classifiers:
scikit-learn's bundled digits scans and wine analyses, a multinomial logistic regression trained in
the test on each (seeded, about a second), its validation logits saved as they come and in the
variants users save —
labels counted from 1, softmax or sigmoid probabilities instead of logits, an ``(N, 1)`` label
column, a channels-last segmentation map. Each variant's report must equal the logits' report, and
the expected numbers are computed here with numpy, not by lossaudit."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.conftest import write_npz

sklearn = pytest.importorskip("sklearn")

from sklearn.datasets import load_wine  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402

SOFTMAX_LOSSES = ("ce", "softmax-focal", "cb-ce", "logit-adjusted-ce")
SIGMOID_LOSSES = ("bce", "focal", "ghm")
ALL = ",".join(SOFTMAX_LOSSES + SIGMOID_LOSSES)
COMPARED = ("losses", "per_class", "per_difficulty", "levels", "quadrants", "focal_ce_ratio")
"""The report's sections that depend on the numbers (``input`` names the files and conventions)."""


@pytest.fixture(scope="module", params=["digits", "wine"])
def classifier(request, digits):
    """(validation logits ``(N, C)`` float32, labels 0..C-1) of digits (597 × 10, tests/conftest.py) or wine
    (78 × 3: a seeded logistic regression on 100 shuffled, standardised analyses)."""
    if request.param == "digits":
        return digits
    x, y = load_wine(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(y))
    train, valid = order[:100], order[100:]
    scale = x[train].std(axis=0)
    logits = LogisticRegression(C=0.05, max_iter=500, random_state=0).fit(x[train] / scale, y[train]).decision_function(x[valid] / scale).astype(np.float32)
    assert (logits.argmax(axis=1) == y[valid]).mean() > 0.85
    return logits, y[valid].astype(np.int64)


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z.astype(np.float64)
    shifted = z - z.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def _same(a: object, b: object, where: str = "", rel: float = 0.0) -> None:
    """``a`` and ``b`` (report sections) are equal; floats to ``rel`` (relative, and absolute below 1)."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for key in a:
            _same(a[key], b[key], f"{where}.{key}", rel)
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _same(x, y, f"{where}[{i}]", rel)
    elif isinstance(a, float) and isinstance(b, float):
        assert b == pytest.approx(a, rel=rel, abs=rel), where
    else:
        assert a == b, where


def _report(compare_json, path, *options) -> dict:
    return compare_json(path, "--losses", ALL, *options)


def test_one_based_labels_are_found_and_read(classifier, compare_json, run_cli, tmp_path):
    """Labels 1..C with C logits (as SVHN stores digit 0 as 10): label C would be read as
    background. The finding leads, with the counts; ``--strict`` exits 1; ``--label-base 1``
    gives the 0-based report exactly."""
    logits, labels = classifier
    c = logits.shape[1]
    zero_based = _report(compare_json, write_npz(tmp_path / "zero.npz", logits=logits, targets=labels))
    one_based_path = write_npz(tmp_path / "one.npz", logits=logits, targets=labels + 1)
    misread = compare_json(one_based_path)  # cb-ce refuses a class without rows: the default losses
    counts = np.bincount(labels, minlength=c)  # label k + 1 counts the rows of class k
    first = misread["findings"][0]
    assert first["code"] == "labels-one-based" and first["gates_strict"] and first["level"] == "warning"
    assert first["count"] == counts[-1] and first["class_rows"] == [int(counts[:-1].min()), int(counts[:-1].max())]
    assert f"label {c}, read as background, labels {counts[-1]} rows" in first["message"]
    assert f"1..{c - 1}: {counts[:-1].min()} to {counts[:-1].max()} rows each" in first["message"]
    assert "--label-base 1" in first["message"] and "labels - 1" in first["message"]
    assert misread["summary"][0]["rule"] == "misread" and "--label-base 1" in misread["summary"][0]["text"]
    assert [s["rule"] for s in misread["summary"]] == ["misread", "findings"]  # no conclusion from the misread labels
    strict = run_cli("compare", one_based_path, "--strict")
    assert strict.exit_code == 1 and "labels-one-based" in strict.stderr

    read = _report(compare_json, one_based_path, "--label-base", "1")
    assert read["input"]["background_index"] == 0 and read["findings"] == zero_based["findings"]
    for section in COMPARED + ("summary",):
        _same(zero_based[section], read[section], section)
    expected_ce = -_log_softmax(logits)[np.arange(len(labels)), labels].mean()
    assert read["losses"]["ce"]["mean"] == pytest.approx(expected_ce, rel=1e-5)
    assert run_cli("compare", one_based_path, "--strict", "--label-base", "1").exit_code == 0
    refused = run_cli("compare", one_based_path, "--losses", "cb-ce")  # cb-ce needs every class's count: label 0 has none
    assert refused.exit_code == 2 and "pass --label-base 1" in refused.stderr


def test_one_based_options_through_the_api_and_the_configuration(digits, compare_json, tmp_path):
    import lossaudit

    logits, labels = digits
    api = lossaudit.compare(logits=logits, targets=labels + 1, losses=["ce"], label_base=1)
    assert api.losses["ce"].mean == pytest.approx(-_log_softmax(logits)[np.arange(len(labels)), labels].mean(), rel=1e-5)
    (tmp_path / "lossaudit.yaml").write_text("compare:\n  label-base: 1\n")
    path = write_npz(tmp_path / "one.npz", logits=logits, targets=labels + 1)
    configured = compare_json(path, "--losses", "ce", "--config", tmp_path / "lossaudit.yaml")
    assert configured["findings"] == [] and configured["input"]["background_index"] == 0
    (tmp_path / "bad.yaml").write_text("compare:\n  label-base: 2\n")
    with pytest.raises(lossaudit.InputError, match="--label-base 2"):
        lossaudit.compare(logits=logits, targets=labels, label_base=2)


def test_background_stays_background_where_most_rows_carry_it(digits, compare_json, tmp_path):
    """A detection-style dump: label 0 unused, label 10 (the background) on most rows: no finding."""
    logits, labels = digits
    targets = np.where(np.arange(len(labels)) % 4 == 0, labels + 1, 10)  # three rows in four are background
    report = compare_json(write_npz(tmp_path / "det.npz", logits=logits, targets=targets))
    assert "labels-one-based" not in [f["code"] for f in report["findings"]]
    # one rare 1-based class (label 10 at 5 rows): still read as a class
    rare = np.concatenate([labels[labels != 9] + 1, np.full(5, 10)])
    rows = np.concatenate([logits[labels != 9], logits[labels == 9][:5]])
    assert compare_json(write_npz(tmp_path / "rare.npz", logits=rows, targets=rare))["findings"][0]["code"] == "labels-one-based"


def test_softmax_probabilities(classifier, compare_json, run_cli, tmp_path):
    """Softmax probabilities saved instead of logits: read as they are, the report says so first
    and concludes nothing; with --inputs softmax-probs (or probs, by the row sums) the softmax
    losses equal the logits' report and the sigmoid losses are absent, with the reason."""
    logits, labels = classifier
    log_q = _log_softmax(logits)
    probs = np.exp(log_q).astype(np.float32)
    from_logits = _report(compare_json, write_npz(tmp_path / "logits.npz", logits=logits, targets=labels))
    path = write_npz(tmp_path / "probs.npz", logits=probs, targets=labels)

    as_read = compare_json(path)
    first = as_read["findings"][0]
    assert first["code"] == "probabilities-as-logits" and first["inputs"] == "softmax-probs"
    assert "every row sums to 1" in first["message"] and "--inputs softmax-probs" in first["message"]
    assert as_read["summary"][0]["rule"] == "misread" and "--inputs softmax-probs" in as_read["summary"][0]["text"]
    assert [s["rule"] for s in as_read["summary"]] == ["misread"]  # the finding is stated there; nothing concluded
    text = run_cli("compare", path).stdout
    assert text.index("The input looks misread") < text.index("Loaded")

    expected_ce = -log_q[np.arange(len(labels)), labels].mean()
    for inputs in ("softmax-probs", "probs"):
        read = _report(compare_json, path, "--inputs", inputs)
        assert read["input"]["inputs"] == "softmax-probs"
        assert list(read["losses"]) == list(SOFTMAX_LOSSES)
        skipped = read["findings"][0]
        assert skipped["code"] == "sigmoid-losses-skipped" and skipped["skipped"] == list(SIGMOID_LOSSES) and not skipped["gates_strict"]
        assert "per-row constant" in skipped["message"]
        assert read["losses"]["ce"]["mean"] == pytest.approx(expected_ce, rel=1e-5)
        for loss in SOFTMAX_LOSSES:
            for key, value in from_logits["losses"][loss].items():
                if isinstance(value, float):
                    assert read["losses"][loss][key] == pytest.approx(value, rel=1e-5, abs=1e-5), (loss, key)
        for row, expected in zip(read["per_class"], from_logits["per_class"]):
            for loss in SOFTMAX_LOSSES:
                assert row["share"][loss] == pytest.approx(expected["share"][loss], rel=1e-5, abs=1e-5)
    defaults = compare_json(path, "--inputs", "softmax-probs")
    assert all(loss["family"] == "softmax" for loss in defaults["losses"].values())
    only_sigmoid = run_cli("compare", path, "--inputs", "softmax-probs", "--losses", "bce,focal")
    assert only_sigmoid.exit_code == 2 and "cannot give" in only_sigmoid.stderr
    assert run_cli("sweep", path, "--inputs", "probs", "--loss", "focal").exit_code == 2  # sigmoid focal cannot come from softmax probabilities


def test_sigmoid_probabilities_give_the_logits_report(classifier, compare_json, tmp_path):
    logits, labels = classifier
    probs = (1 / (1 + np.exp(-logits.astype(np.float64)))).astype(np.float32)
    from_logits = _report(compare_json, write_npz(tmp_path / "logits.npz", logits=logits, targets=labels))
    path = write_npz(tmp_path / "probs.npz", logits=probs, targets=labels)
    first = compare_json(path)["findings"][0]
    assert first["code"] == "probabilities-as-logits" and first["inputs"] == "sigmoid-probs"
    for inputs in ("sigmoid-probs", "probs"):
        read = _report(compare_json, path, "--inputs", inputs)
        assert read["input"]["inputs"] == "sigmoid-probs" and read["findings"] == from_logits["findings"]
        for section in COMPARED:
            _same(from_logits[section], read[section], section, rel=1e-5)
        onehot = np.eye(logits.shape[1])[labels]
        p = probs.astype(np.float64)
        expected_bce = -(onehot * np.log(p) + (1 - onehot) * np.log1p(-p)).sum()
        assert read["losses"]["bce"]["sum"] == pytest.approx(expected_bce, rel=1e-5)


def test_label_column_is_squeezed(classifier, compare_json, tmp_path):
    logits, labels = classifier
    flat = _report(compare_json, write_npz(tmp_path / "flat.npz", logits=logits, targets=labels))
    column = _report(compare_json, write_npz(tmp_path / "column.npz", logits=logits, targets=labels[:, None]))
    for section in COMPARED + ("summary", "findings"):
        _same(flat[section], column[section], section)
    assert column["input"]["shapes"][0]["targets"] == [len(labels), 1]


def test_channels_last_map_names_the_class_dim(digits, compare_json, run_cli, tmp_path):
    """A (B, H, W, C) segmentation dump with (B, H, W) labels: one line naming --class-dim 3; with
    it, the numbers of the (B*H*W, C) rows, and the summary of the same maps channels first (its
    rows named cells, as the flat dump's are rows)."""
    logits, labels = digits
    rows = 576  # 36 maps of 4 x 4 pixels
    maps = logits[:rows].reshape(36, 4, 4, 10)
    path = write_npz(tmp_path / "seg.npz", logits=maps, targets=labels[:rows].reshape(36, 4, 4))
    refused = run_cli("compare", path)
    assert refused.exit_code == 2
    assert len(refused.stderr.strip().splitlines()) == 1 and "pass --class-dim 3" in refused.stderr
    assert "class axis 3 (10 classes)" in refused.stderr
    flat = _report(compare_json, write_npz(tmp_path / "flat.npz", logits=logits[:rows], targets=labels[:rows]))
    read = _report(compare_json, path, "--class-dim", "3")
    for section in COMPARED + ("findings",):
        _same(flat[section], read[section], section)
    first = _report(
        compare_json, write_npz(tmp_path / "first.npz", logits=np.ascontiguousarray(maps.transpose(0, 3, 1, 2)), targets=labels[:rows].reshape(36, 4, 4))
    )
    _same(first["summary"], read["summary"], "summary")
    assert read["input"]["row_noun"] == "cells" and flat["input"]["row_noun"] == "rows"
    # a (C, H, W) map with (H, W) labels
    single = write_npz(tmp_path / "chw.npz", logits=np.ascontiguousarray(maps[0].transpose(2, 0, 1)), targets=labels[:16].reshape(4, 4))
    assert "pass --class-dim 0" in run_cli("compare", single).stderr
    assert json.loads(run_cli("compare", single, "--class-dim", "0", "--format", "json").stdout)["input"]["rows"] == 16
