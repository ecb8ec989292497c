"""``compare``'s conclusions on a real classifier (issue 22, points 1, 3, 9 and 11): scikit-learn's
bundled digits scans, a multinomial logistic regression trained in the test (seeded, about a
second), on the balanced data and on a long-tailed variant (three digits cut to 3-6 rows each),
also with its labels stored as one-hot and as smoothed soft targets.
Rare means rare (the data's own counts), sentences compare like with like, ``--top`` ranks by the
first loss that fits the data, a baseline from other data is warned about, and small percentages
print as ``<0.01%``. Every expected value is derived here from the labels and logits."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from tests.conftest import DIGITS_TAIL, write_npz

sklearn = pytest.importorskip("sklearn")


SOFTMAX = ("ce", "softmax-focal")
SIGMOID = ("bce", "focal", "ghm")
ALL = ",".join(SIGMOID + SOFTMAX)  # sigmoid listed first: the report still puts the fitting softmax first
TAIL = DIGITS_TAIL
"""The long-tailed variant keeps this many validation rows of these digits (all of the others):
the ``long_tailed`` fixture's (tests/conftest.py)."""
RARE_FRACTION, RARE_SPREAD = 0.25, 5.0
"""The documented rule (README "Rare classes"), restated here to derive the expected classes."""


def _expected_rare(labels: np.ndarray) -> list[str]:
    counts = np.bincount(labels, minlength=10)
    median = float(np.median(counts))
    spread = counts.max() / max(counts.min(), 1)
    return [str(c) for c in range(10) if spread >= RARE_SPREAD and counts[c] < RARE_FRACTION * median]


def _report(compare_json, tmp_path, logits, labels, *options) -> dict:
    return compare_json(write_npz(tmp_path / "d.npz", logits=logits, targets=labels), "--losses", ALL, *options)


def test_balanced_digits_have_no_rare_class(digits, compare_json, tmp_path):
    logits, labels = digits
    counts = np.bincount(labels, minlength=10)
    assert counts.min() >= 0.85 * counts.max()  # balanced: 55 to 62 rows per digit
    assert _expected_rare(labels) == []
    report = _report(compare_json, tmp_path, logits, labels)
    quadrants = report["quadrants"]
    assert quadrants["rare_classes"] == [] and quadrants["common_classes"] == [str(c) for c in range(10)]
    assert quadrants["class_spread"] == pytest.approx(counts.max() / counts.min())
    assert all("rare" not in s["text"] for s in report["summary"])
    assert "rare-hard" not in [s["rule"] for s in report["summary"]]
    assert quadrants["cells"]["rare_easy"]["rows"] == quadrants["cells"]["rare_hard"]["rows"] == 0


def test_long_tailed_digits_name_exactly_the_tail(long_tailed, compare_json, tmp_path):
    logits, labels = long_tailed
    counts = np.bincount(labels, minlength=10)
    # hand check: the tail digits keep 3, 4 and 6 rows, the others 55 to 62: median 58.5, rare below 14.6
    assert {d: int(counts[d]) for d in TAIL} == TAIL
    assert all(55 <= counts[d] <= 62 for d in range(10) if d not in TAIL)
    assert _expected_rare(labels) == ["3", "5", "8"]
    report = _report(compare_json, tmp_path, logits, labels)
    quadrants = report["quadrants"]
    assert quadrants["rare_classes"] == ["3", "5", "8"]
    assert quadrants["median_positives"] == float(np.median(counts))
    assert quadrants["rare_below"] == pytest.approx(RARE_FRACTION * np.median(counts))
    rare_rows = int(counts[list(TAIL)].sum())
    cells = quadrants["cells"]
    assert cells["rare_easy"]["rows"] + cells["rare_hard"]["rows"] == rare_rows
    # the rare-hard quadrant's shares, from the logits: rows of a rare digit whose q_target < 0.5
    z = logits.astype(np.float64)
    log_q = z - z.max(axis=1, keepdims=True)
    log_q -= np.log(np.exp(log_q).sum(axis=1, keepdims=True))
    ce = -log_q[np.arange(len(labels)), labels]
    hard = np.isin(labels, list(TAIL)) & (np.exp(-ce) <= 0.5)
    assert cells["rare_hard"]["rows"] == int(hard.sum())
    assert cells["rare_hard"]["share"]["ce"] == pytest.approx(ce[hard].sum() / ce.sum(), rel=1e-5, abs=1e-9)


@pytest.mark.parametrize("which", ["digits", "long_tailed"])
def test_sentences_compare_like_with_like(which, request, compare_json, tmp_path):
    """Single-label data: no sentence ranks a sigmoid loss against a softmax one, unless it says it
    is a cross-family comparison; the rare-hard sentence (when there is one) ranks softmax losses."""
    logits, labels = request.getfixturevalue(which)
    report = _report(compare_json, tmp_path, logits, labels)
    assert report["input"]["data_kind"] == "single-label"
    assert [loss for loss, d in report["losses"].items() if d["fits_data"]] == list(SOFTMAX)
    for sentence in report["summary"]:
        if sentence["rule"] == "fit":  # says which family fits: not a comparison of shares
            continue
        named = {loss for loss in SOFTMAX + SIGMOID if re.search(rf"(?<![\w-]){re.escape(loss)}(?![\w-])", sentence["text"])}
        families = {report["losses"][loss]["family"] for loss in named}
        assert len(families) <= 1 or "cross-family" in sentence["text"], sentence["text"]
        if named and families == {"sigmoid"}:  # sigmoid losses only, on single-label data: it says they do not fit
            assert "(sigmoid losses, which do not fit single-label data)" in sentence["text"], sentence["text"]
        numbers = sentence["numbers"]
        if "loss" in numbers and "least" in numbers:
            assert report["losses"][numbers["loss"]]["family"] == report["losses"][numbers["least"]]["family"]


def test_rare_hard_ranks_the_softmax_losses_on_the_long_tail(long_tailed, compare_json, tmp_path):
    logits, labels = long_tailed
    report = _report(compare_json, tmp_path, logits, labels)
    cell = report["quadrants"]["cells"]["rare_hard"]
    shares = {loss: cell["share"][loss] for loss in SOFTMAX}
    sentence = next((s for s in report["summary"] if s["rule"] == "rare-hard"), None)
    if max(shares.values()) - min(shares.values()) < 0.05:
        assert sentence is None
        return
    top, low = max(shares, key=shares.get), min(shares, key=shares.get)
    assert sentence is not None and (sentence["numbers"]["loss"], sentence["numbers"]["least"]) == (top, low)
    assert "rare classes 3, 5, 8" in sentence["text"]


@pytest.mark.parametrize("which", ["digits", "long_tailed"])
def test_top_ranks_by_the_first_softmax_loss_listed(which, request, run_cli, tmp_path):
    logits, labels = request.getfixturevalue(which)
    path = write_npz(tmp_path / "d.npz", logits=logits, targets=labels)
    # softmax-focal listed before ce (and after every sigmoid loss): it ranks
    text = run_cli("compare", path, "--losses", "bce,focal,ghm,softmax-focal,ce", "--top", "3", "--format", "markdown").stdout
    assert "top 3 of 10 classes by softmax-focal loss (the first listed loss that fits the data" in text
    z = logits.astype(np.float64)
    log_q = z - z.max(axis=1, keepdims=True)
    log_q -= np.log(np.exp(log_q).sum(axis=1, keepdims=True))
    ce = -log_q[np.arange(len(labels)), labels]
    focal = (1 - np.exp(-ce)) ** 2 * ce  # softmax focal, gamma 2, no alpha
    per_class = np.bincount(labels, weights=focal, minlength=10)
    table = text.split("### Per class")[1].split("###")[0]
    shown = [line.split("|")[1].strip() for line in table.splitlines() if line.startswith("| ")][2:-1]
    assert shown == [str(c) for c in np.argsort(-per_class, kind="stable")[:3]]


def test_a_baseline_from_other_data_is_warned_about(digits, compare_json, run_cli, tmp_path):
    logits, labels = digits
    names = np.array([f"class-{c}" for c in range(10)])  # the same data, other class names: no class in common
    other = write_npz(tmp_path / "other.npz", logits=logits, targets=labels, class_names=names)
    (tmp_path / "other.json").write_text(json.dumps(compare_json(other, "--losses", ALL)))
    path = write_npz(tmp_path / "d.npz", logits=logits, targets=labels)
    report = compare_json(path, "--losses", ALL, "--baseline", tmp_path / "other.json")
    section = report["baseline"]
    assert section["classes_in_common"] == 0 and section["classes_new"] == section["classes_old"] == 10
    assert section["per_class"] == [] and len(section["warnings"]) == 1
    assert "shares no class" in section["warnings"][0]
    result = run_cli("compare", path, "--losses", ALL, "--baseline", tmp_path / "other.json", "--fail-if-share-moves", "0")
    assert "warning: the baseline shares no class with this report" in result.stdout
    assert "--fail-if-share-moves 0: warning: the baseline shares no class" in result.stderr
    assert f"compared 0 of 10 classes (the baseline has 10) and {section['bins_compared']} difficulty bins" in result.stderr
    (tmp_path / "self.json").write_text(json.dumps(report))
    itself = compare_json(path, "--losses", ALL, "--baseline", tmp_path / "self.json")["baseline"]
    assert itself["classes_in_common"] == 10 and itself["warnings"] == []


def test_tiny_percentages_print_as_less_than_a_hundredth():
    from lossaudit.render.formatting import pct

    tiny = 9.8e-43  # sweep once printed 0.000…098%
    assert pct(tiny) == "<0.01%" and pct(-tiny) == "-<0.01%"
    assert pct(0.99e-4) == "<0.01%"
    assert pct(1e-4) == "0.010%" and pct(0.00046) == "0.046%" and pct(0.0) == "0.0%" and pct(0.123) == "12.3%"


def test_the_per_class_ratio_column_names_what_it_divides(digits, run_cli, tmp_path):
    logits, labels = digits
    path = write_npz(tmp_path / "d.npz", logits=logits, targets=labels)
    text = run_cli("compare", path, "--losses", "bce,focal", "--format", "markdown").stdout
    table = text.split("### Per class")[1].split("###")[0]
    assert "focal÷bce" in table and "focal/CE" not in table
    assert "### Per class (share of each loss's total)" not in text
    text = run_cli("compare", path, "--losses", "ce,softmax-focal", "--format", "markdown").stdout
    assert "softmax-focal÷ce" in text.split("### Per class")[1].split("###")[0]


@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.uint8, np.bool_], ids=lambda d: np.dtype(d).name)
def test_long_tailed_digits_as_one_hot_targets_read_as_their_labels(long_tailed, compare_json, tmp_path, dtype):
    """The long-tailed digits' labels stored as one-hot targets (torchvision's focal loss takes
    them so), in the dtypes dumps hold: found one-hot, the same rare digits, and every section of
    the report, the imbalance advice's numbers included, as the class ids give it (the per-class
    counts come from the check that reads the targets before the pass, not from the labels)."""
    logits, labels = long_tailed
    by_labels = compare_json(write_npz(tmp_path / "ids.npz", logits=logits, targets=labels))
    one_hot = compare_json(write_npz(tmp_path / "onehot.npz", logits=logits, targets=np.eye(10, dtype=dtype)[labels]))
    assert one_hot["input"]["target_encoding"] == "onehot" and one_hot["input"]["multi_hot_rows"] == 0
    assert list(one_hot["imbalance"]["rare_classes"]) == _expected_rare(labels) == ["3", "5", "8"]
    assert {key: value for key, value in one_hot.items() if key != "input"} == {key: value for key, value in by_labels.items() if key != "input"}


def test_long_tailed_digits_with_smoothed_labels_advise_from_their_soft_counts(long_tailed, compare_json, tmp_path):
    """Label smoothing (0.9 on the label, 0.01 on every class): soft targets, every element a
    target of its row. The advice's prior is each class's summed targets, and its
    ``logit-adjusted-ce`` rare share is that of ``-Σ y_j log softmax(x + log prior)_j`` over the
    rare digits' columns, computed here in float64 (as is ``ce``'s)."""
    logits, labels = long_tailed
    targets = 0.9 * np.eye(10)[labels] + 0.01
    report = compare_json(write_npz(tmp_path / "smoothed.npz", logits=logits, targets=targets.astype(np.float32)))
    assert report["input"]["target_encoding"] == "soft" and list(report["imbalance"]["rare_classes"]) == ["3", "5", "8"]
    y = targets.astype(np.float32).astype(np.float64)
    rare = [3, 5, 8]

    def rare_share(z: np.ndarray) -> float:
        log_q = z - z.max(axis=1, keepdims=True)
        log_q -= np.log(np.exp(log_q).sum(axis=1, keepdims=True))
        terms = -y * log_q
        return float(terms[:, rare].sum() / terms.sum())

    prior = y.sum(axis=0) / y.sum()
    advice = {entry["label"]: entry for entry in report["imbalance"]["losses"]}
    assert advice["ce"]["rare_share"] == pytest.approx(rare_share(logits.astype(np.float64)), rel=1e-6)
    assert advice["logit-adjusted-ce (tau 1)"]["rare_share"] == pytest.approx(rare_share(logits + np.log(prior)), rel=1e-6)
