"""``sweep`` concludes (issue 22, point 8): its summary says, with numbers, how the swept loss's share
on the rare classes, on easy negatives (sigmoid focal) and on very hard elements (rows) moves across
the grid, naming the settings at either end; on single-label data it sweeps ``softmax-focal``
(gamma, and ``--alpha-per-class`` as ``compare`` takes it), whose numbers are ``compare``'s; it
reads dumps as ``compare`` does (``--label-base``, ``--inputs``).

Data: scikit-learn's bundled digits scans with a seeded multinomial logistic regression trained
here (balanced, and long-tailed: three digits cut to 3-6 rows, as ``tests/test_conclusions_real.py``),
and a synthetic detection dump (background rows, one class twenty times rarer than the others,
which the model misses). Every expected number is recomputed here with numpy from the logits."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lossaudit import api
from lossaudit.render.formatting import pct
from tests.conftest import DIGITS_TAIL as TAIL  # the digits and long_tailed fixtures are conftest's
from tests.conftest import write_npz

sklearn = pytest.importorskip("sklearn")

GAMMAS = (0.0, 0.5, 2.0, 5.0)
DETECTION_COUNTS = (600, 500, 450, 400, 20)
"""Positives per class of the synthetic detection dump: class 4 is rare (below 1/4 of the median 450, spread 30×)."""


@pytest.fixture(scope="module")
def detection():
    """(logits (4000, 5), index labels with background 5): each class's positives a logit around
    1.5, the rare class 4's around -1 (the model misses it), every other element around -4."""
    rng = np.random.default_rng(7)
    labels = np.concatenate([np.full(n, c) for c, n in enumerate(DETECTION_COUNTS)] + [np.full(4000 - sum(DETECTION_COUNTS), 5)])
    rng.shuffle(labels)
    logits = rng.normal(-4, 1.5, (4000, 5))
    rows = np.flatnonzero(labels < 5)
    logits[rows, labels[rows]] = np.where(labels[rows] == 4, rng.normal(-1, 2, len(rows)), rng.normal(1.5, 2, len(rows)))
    return logits.astype(np.float32), labels.astype(np.int64)


def _sweep(run_cli, path, *options) -> dict:
    result = run_cli("sweep", path, *options, "--format", "json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def _sentence(document: dict, rule: str) -> dict:
    found = [s for s in document["summary"] if s["rule"] == rule]
    assert len(found) == 1, [s["rule"] for s in document["summary"]]
    return found[0]


def _softmax_parts(logits: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(q_target, log q_target) per row, in float64."""
    z = logits.astype(np.float64)
    z -= z.max(axis=1, keepdims=True)
    log_q = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    at = log_q[np.arange(len(labels)), labels]
    return np.exp(at), at


def _softmax_focal(q: np.ndarray, log_q: np.ndarray, gamma: float, weight: np.ndarray | float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Per row: the softmax focal loss -w (1 - q)^gamma log q and its gradient magnitude Σ_j |∂L/∂z_j|.
    With a = q ∂L/∂q = -w (1 - q)^gamma (1 - gamma q log q / (1 - q)), ∂L/∂z_j = a (δ_jy - q_j), so
    the magnitude is |a| ((1 - q) + Σ_{j≠y} q_j) = 2 |a| (1 - q)."""
    loss = -weight * (1 - q) ** gamma * log_q
    a = -weight * (1 - q) ** gamma * (1 - gamma * q * log_q / (1 - q))
    return loss, 2 * np.abs(a) * (1 - q)


def _sigmoid_focal(logits: np.ndarray, targets: np.ndarray, alpha: float, gamma: float) -> np.ndarray:
    """torchvision's sigmoid focal loss per element."""
    x = logits.astype(np.float64)
    p = 1 / (1 + np.exp(-x))
    bce = np.logaddexp(0, x) - x * targets
    p_t = p * targets + (1 - p) * (1 - targets)
    alpha_t = 1.0 if alpha == -1 else alpha * targets + (1 - alpha) * (1 - targets)
    return alpha_t * (1 - p_t) ** gamma * bce


def _rare(labels: np.ndarray, classes: int) -> list[str]:
    """The documented rule (README "Rare classes"): below 1/4 of the median class, spread ≥ 5×."""
    counts = np.bincount(labels[labels < classes], minlength=classes)
    spread = counts.max() / max(counts.min(), 1)
    return [str(c) for c in range(classes) if spread >= 5 and counts[c] < 0.25 * np.median(counts)]


# --- single-label data: softmax-focal, its sentences and compare's numbers -----------------------


def test_long_tailed_digits_sweep_softmax_focal_and_say_how_the_rare_share_moves(long_tailed, run_cli, tmp_path):
    logits, labels = long_tailed
    path = write_npz(tmp_path / "long.npz", logits=logits, targets=labels)
    document = _sweep(run_cli, path, "--gamma", ",".join(f"{g:g}" for g in GAMMAS))
    assert document["schema_version"] == 4
    assert document["loss"] == "softmax-focal" and document["loss_choice"]["asked"] == "auto" and document["loss_choice"]["fits_data"]
    assert [s["label"] for s in document["settings"]] == [f"γ {g:g}" for g in GAMMAS]
    assert [s["rule"] for s in document["summary"]] == ["loss", "rare-classes", "very-hard"]  # no easy negatives: softmax
    assert "single-label" in _sentence(document, "loss")["text"]

    q, log_q = _softmax_parts(logits, labels)
    rare = np.isin(labels, list(TAIL))
    assert _rare(labels, 10) == ["3", "5", "8"] == document["rare_classes"]
    shares, gradient_shares = [], []
    for gamma in GAMMAS:
        loss, gradient = _softmax_focal(q, log_q, gamma)
        shares.append(loss[rare].sum() / loss.sum())
        gradient_shares.append(gradient[rare].sum() / gradient.sum())
    sentence = _sentence(document, "rare-classes")
    text = sentence["text"]
    assert text.startswith("On these predictions, as gamma goes 0 → 5 (no alpha), softmax-focal's share of its loss on the rows of the rare classes")
    assert f"(3, 5, 8: {int(rare.sum())} of {len(labels)} rows)" in text
    # on this model the rare digits are the hard rows: focusing moves the loss onto them
    assert shares[-1] > shares[0] and f"rises from {pct(shares[0])} to {pct(shares[-1])}" in text
    assert f"(of its gradient: {pct(gradient_shares[0])} → {pct(gradient_shares[-1])})" in text
    numbers = sentence["numbers"]
    assert numbers["axis"] == "gamma" and numbers["classes"] == ["3", "5", "8"]
    assert numbers["from"]["share"] == pytest.approx(shares[0], rel=1e-5) and numbers["to"]["share"] == pytest.approx(shares[-1], rel=1e-5)
    assert numbers["to"]["gradient_share"] == pytest.approx(gradient_shares[-1], rel=1e-5)

    very_hard = q <= 0.1
    loss0, loss5 = (_softmax_focal(q, log_q, g)[0] for g in (GAMMAS[0], GAMMAS[-1]))
    text = _sentence(document, "very-hard")["text"]
    assert f"very hard rows (q_target ≤ 0.1: {int(very_hard.sum())} of {len(labels)} rows)" in text
    assert f"from {pct(loss0[very_hard].sum() / loss0.sum())} to {pct(loss5[very_hard].sum() / loss5.sum())}" in text


def test_balanced_digits_have_no_rare_class_sentence(digits, run_cli, tmp_path):
    logits, labels = digits
    document = _sweep(run_cli, write_npz(tmp_path / "balanced.npz", logits=logits, targets=labels), "--gamma", "0,2")
    assert _rare(labels, 10) == [] and document["rare_classes"] == []
    assert document["loss"] == "softmax-focal"
    assert "rare-classes" not in [s["rule"] for s in document["summary"]]
    assert all("rare" not in s["text"] for s in document["summary"])
    text = run_cli("sweep", tmp_path / "balanced.npz", "--gamma", "0,2").stdout
    assert text.startswith("Summary\n") and "these predictions" in text


def _inverse_frequency(labels: np.ndarray, classes: int) -> list[float]:
    counts = np.bincount(labels, minlength=classes).astype(float)
    weights = (1 / counts) / (1 / counts).max()
    return [round(float(w), 4) for w in weights]


def test_softmax_focal_sweep_equals_compare(long_tailed, run_cli, tmp_path):
    """Each setting (every gamma; no alpha, then an inverse-frequency --alpha-per-class) holds the
    numbers ``compare --losses softmax-focal --gamma G [--alpha-per-class V]`` gives."""
    logits, labels = long_tailed
    path = write_npz(tmp_path / "long.npz", logits=logits, targets=labels)
    vector = _inverse_frequency(labels, 10)
    document = _sweep(run_cli, path, "--loss", "softmax-focal", "--gamma", "0,0.5,2,5", "--alpha-per-class", ",".join(map(str, vector)))
    assert document["alpha_per_class"] == [vector]
    assert [s["label"] for s in document["settings"]] == [label for g in GAMMAS for label in (f"γ {g:g}", f"γ {g:g}, α #1")]
    q, log_q = _softmax_parts(logits, labels)
    for row in document["settings"]:
        weighted = row["alpha_per_class"] is not None
        assert row["alpha"] is None and (row["alpha_per_class"] == vector if weighted else True)
        report = api.compare(path, losses=["softmax-focal"], gamma=row["gamma"], alpha_per_class=vector if weighted else None).to_dict()
        loss, cells = report["losses"]["softmax-focal"], report["quadrants"]["cells"]
        for key in (
            "sum",
            "mean",
            "positive_share",
            "easy_negative_share",
            "very_hard_share",
            "gradient_mean",
            "gradient_positive_share",
            "gradient_easy_negative_share",
            "gradient_very_hard_share",
        ):
            assert row[key] == pytest.approx(loss[key], rel=1e-9, abs=1e-12), (row["label"], key)
        for key in ("share", "gradient_share"):
            rare = cells["rare_easy"][key]["softmax-focal"] + cells["rare_hard"][key]["softmax-focal"]
            assert row[("" if key == "share" else "gradient_") + "rare_share"] == pytest.approx(rare, rel=1e-9)
            np.testing.assert_allclose([c[key] for c in row["per_class"]], [c[key]["softmax-focal"] for c in report["per_class"]], rtol=1e-9)
            np.testing.assert_allclose([d[key] for d in row["per_difficulty"]], [d[key]["softmax-focal"] for d in report["per_difficulty"]], rtol=1e-9)
        # and the mean from the logits
        weight = np.asarray(vector)[labels] if weighted else 1.0
        assert row["mean"] == pytest.approx(_softmax_focal(q, log_q, row["gamma"], weight)[0].mean(), rel=1e-5)
    # the cumulative loss of the rows: the median row's share, from a direct sort (within 1/256)
    for item in document["cumulative"]:
        assert set(item) == {"gamma", "fractions", "rows"} and item["rows"]["elements"] == len(labels)
        ordered = np.sort(_softmax_focal(q, log_q, item["gamma"])[0])
        half = item["fractions"].index(0.5)
        exact = ordered[: len(ordered) // 2].sum() / ordered.sum() + 0.5 * (len(ordered) % 2) * ordered[len(ordered) // 2] / ordered.sum()
        assert exact - 1e-6 <= item["rows"]["share"][half] <= exact + item["rows"]["error_bound"][half] + 1e-6


def test_scalar_alpha_is_refused_for_softmax_focal_and_ignored_by_auto(long_tailed, run_cli, tmp_path):
    logits, labels = long_tailed
    path = write_npz(tmp_path / "long.npz", logits=logits, targets=labels)
    refused = run_cli("sweep", path, "--loss", "softmax-focal", "--alpha", "0.5")
    assert refused.exit_code == 2 and "only rescales" in refused.stderr and "--alpha-per-class" in refused.stderr
    document = _sweep(run_cli, path, "--gamma", "2", "--alpha", "0.5")
    assert document["loss"] == "softmax-focal" and document["loss_choice"]["ignored"] == ["--alpha"]
    assert "--alpha ignored" in _sentence(document, "loss")["text"]
    wrong = run_cli("sweep", path, "--alpha-per-class", "0.5,0.5")
    assert wrong.exit_code == 2 and "2 values; the data has 10 classes" in wrong.stderr


def test_focal_on_single_label_data_says_it_does_not_fit(long_tailed, run_cli, tmp_path):
    logits, labels = long_tailed
    document = _sweep(run_cli, write_npz(tmp_path / "long.npz", logits=logits, targets=labels), "--loss", "focal", "--gamma", "0,2", "--alpha", "0.25")
    assert document["loss"] == "focal" and not document["loss_choice"]["fits_data"]
    assert "a sigmoid loss, on single-label" in _sentence(document, "loss")["text"]
    assert {"rare-classes", "easy-negatives"} <= {s["rule"] for s in document["summary"]}


def test_auto_follows_the_valid_rows_not_the_stored_labels(long_tailed, run_cli, tmp_path):
    """Background labels only on masked rows: the targets suggest detection data, the pass finds
    single-label data (no valid background row), and auto sweeps softmax-focal (a second pass)."""
    logits, labels = long_tailed
    plain = _sweep(run_cli, write_npz(tmp_path / "plain.npz", logits=logits, targets=labels), "--gamma", "0,2")
    extra = np.full(5, 10)
    masked = write_npz(
        tmp_path / "masked.npz",
        logits=np.concatenate([logits, logits[:5]]),
        targets=np.concatenate([labels, extra]),
        mask=np.concatenate([np.ones(len(labels), np.uint8), np.zeros(5, np.uint8)]),
    )
    document = _sweep(run_cli, masked, "--gamma", "0,2")
    assert document["loss"] == "softmax-focal" and document["input"]["data_kind"] == "single-label"
    _same_settings(plain, document, rel=1e-12)


# --- detection data: the sigmoid focal loss ------------------------------------------------------


def test_detection_sweep_says_how_the_shares_move(detection, run_cli, tmp_path):
    logits, labels = detection
    path = write_npz(tmp_path / "det.npz", logits=logits, targets=labels)
    document = _sweep(run_cli, path, "--gamma", "0,2,5", "--alpha", "0.25,-1")
    assert document["loss"] == "focal" and document["input"]["data_kind"] == "detection"
    assert [s["rule"] for s in document["summary"]] == ["loss", "rare-classes", "easy-negatives", "very-hard"]
    assert "detection-style" in _sentence(document, "loss")["text"]
    targets = np.eye(6)[labels][:, :5]
    p = 1 / (1 + np.exp(-logits.astype(np.float64)))
    g = np.abs(p - targets)
    grid = [(gamma, alpha) for gamma in (0.0, 2.0, 5.0) for alpha in (0.25, -1.0)]
    losses = {setting: _sigmoid_focal(logits, targets, setting[1], setting[0]) for setting in grid}
    labels_of = {setting: f"γ {setting[0]:g}, α {'off' if setting[1] == -1 else '0.25'}" for setting in grid}

    def check(rule: str, where: np.ndarray, what: str) -> None:
        shares = {setting: loss[where].sum() / loss.sum() for setting, loss in losses.items()}
        a, b = shares[0.0, 0.25], shares[5.0, 0.25]
        low, high = min(shares, key=shares.get), max(shares, key=shares.get)
        text = _sentence(document, rule)["text"]
        assert text.startswith("On these predictions, as gamma goes 0 → 5 (alpha 0.25), focal's share of its loss on " + what), text
        assert f"{'rises' if b > a else 'falls'} from {pct(a)} to {pct(b)}" in text, text
        assert f"over the 6 settings it lies between {pct(shares[low])} ({labels_of[low]}) and {pct(shares[high])} ({labels_of[high]})" in text, text

    assert _rare(labels, 5) == ["4"] == document["rare_classes"]
    rare = np.zeros_like(targets, dtype=bool)
    rare[:, 4] = True
    check("rare-classes", rare, f"the rare classes (4: {DETECTION_COUNTS[4]} of {sum(DETECTION_COUNTS):,} positives)")
    easy = (targets == 0) & (g < 0.1)
    check("easy-negatives", easy, f"easy negatives (g < 0.1: {int(easy.sum()):,} of {targets.size:,} elements)")
    very_hard = g >= 0.9
    check("very-hard", very_hard, f"very hard elements (g ≥ 0.9: {int(very_hard.sum()):,} of {targets.size:,} elements)")


def test_focal_alpha_per_class_equals_compare(detection, run_cli, tmp_path):
    logits, labels = detection
    path = write_npz(tmp_path / "det.npz", logits=logits, targets=labels)
    vector = [0.25, 0.25, 0.25, 0.25, 0.75]
    document = _sweep(run_cli, path, "--gamma", "2", "--alpha", "0.25", "--alpha-per-class", ",".join(map(str, vector)))
    assert [s["label"] for s in document["settings"]] == ["γ 2, α 0.25", "γ 2, α #1"]
    row = document["settings"][1]
    report = api.compare(path, losses=["focal"], gamma=2.0, alpha_per_class=vector).to_dict()
    for key in ("mean", "positive_share", "easy_negative_share", "very_hard_share", "gradient_very_hard_share"):
        assert row[key] == pytest.approx(report["losses"]["focal"][key], rel=1e-6), key
    targets = np.eye(6)[labels][:, :5]
    alpha = np.asarray(vector)[None, :]
    loss = (alpha * targets + (1 - alpha) * (1 - targets)) * _sigmoid_focal(logits, targets, -1, 2.0)
    assert row["mean"] == pytest.approx(loss.mean(), rel=1e-5)


# --- reading dumps as compare does ---------------------------------------------------------------


def _same_settings(a: dict, b: dict, rel: float) -> None:
    for x, y in zip(a["settings"], b["settings"], strict=True):
        for key, value in x.items():
            if isinstance(value, float):
                assert y[key] == pytest.approx(value, rel=rel, abs=1e-9), (x["label"], key)


def test_label_base_one(long_tailed, run_cli, tmp_path):
    logits, labels = long_tailed
    zero = _sweep(run_cli, write_npz(tmp_path / "zero.npz", logits=logits, targets=labels), "--gamma", "0,2")
    one_path = write_npz(tmp_path / "one.npz", logits=logits, targets=labels + 1)
    one = _sweep(run_cli, one_path, "--gamma", "0,2", "--label-base", "1")
    assert one["loss"] == "softmax-focal" and one["summary"][1:] == zero["summary"][1:]
    _same_settings(zero, one, rel=1e-12)
    # read as counted from 0, the report says it looks misread, and concludes nothing else
    misread = _sweep(run_cli, one_path, "--gamma", "0,2")
    assert [s["rule"] for s in misread["summary"]] == ["misread"] and "--label-base 1" in misread["summary"][0]["text"]


def test_inputs_probabilities(long_tailed, detection, run_cli, tmp_path):
    logits, labels = long_tailed
    z = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    probs = (np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)).astype(np.float32)
    from_logits = _sweep(run_cli, write_npz(tmp_path / "logits.npz", logits=logits, targets=labels), "--gamma", "0,2")
    path = write_npz(tmp_path / "probs.npz", logits=probs, targets=labels)
    for inputs in ("softmax-probs", "probs"):
        read = _sweep(run_cli, path, "--gamma", "0,2", "--inputs", inputs)
        assert read["loss"] == "softmax-focal" and read["input"]["inputs"] == "softmax-probs"
        _same_settings(from_logits, read, rel=1e-4)
    refused = run_cli("sweep", path, "--inputs", "softmax-probs", "--loss", "focal")
    assert refused.exit_code == 2 and "cannot give" in refused.stderr

    logits, labels = detection
    from_logits = _sweep(run_cli, write_npz(tmp_path / "det.npz", logits=logits, targets=labels), "--gamma", "0,2", "--alpha", "0.25")
    sigmoid = (1 / (1 + np.exp(-logits.astype(np.float64)))).astype(np.float32)
    read = _sweep(
        run_cli, write_npz(tmp_path / "det_probs.npz", logits=sigmoid, targets=labels), "--gamma", "0,2", "--alpha", "0.25", "--inputs", "sigmoid-probs"
    )
    assert read["loss"] == "focal" and read["input"]["inputs"] == "sigmoid-probs"
    _same_settings(from_logits, read, rel=1e-4)


def test_markdown_and_plot(long_tailed, run_cli, tmp_path):
    logits, labels = long_tailed
    path = write_npz(tmp_path / "long.npz", logits=logits, targets=labels)
    markdown = run_cli("sweep", path, "--gamma", "0,2", "--format", "markdown")
    assert markdown.exit_code == 0, markdown.stderr
    assert markdown.stdout.startswith("## lossaudit sweep\n\n### Summary\n\n- Swept softmax-focal")
    assert "### Softmax focal loss per setting" in markdown.stdout and "| γ 2 |" in markdown.stdout
    pytest.importorskip("matplotlib")
    figure = tmp_path / "sweep.svg"
    result = run_cli("sweep", path, "--gamma", "0,2", "--alpha-per-class", ",".join(["0.5"] * 10), "--plot", figure, "--output", tmp_path / "s.txt")
    assert result.exit_code == 0, result.stderr
    assert figure.stat().st_size > 0
