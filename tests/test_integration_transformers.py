"""lossaudit.integrations.transformers: a real ``transformers.Trainer`` trains a tiny BERT built
from a config (nothing downloaded) with the callback; the numbers its TensorBoard logger received are
read back from the event files and checked against ``lossaudit.compare`` on the recorded runs and
against the Trainer's own evaluation loss."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
transformers = pytest.importorskip("transformers", reason="the transformers extra")
pytest.importorskip("accelerate", reason="transformers' Trainer needs accelerate")
pytest.importorskip("tensorboard", reason="the test reads TensorBoard's event files")

import lossaudit  # noqa: E402
from lossaudit.integrations.transformers import LossAuditCallback  # noqa: E402
from tests.test_integration_lightning import scalars  # noqa: E402

SAMPLES, LENGTH, VOCAB, CLASSES = 96, 8, 32, 3
STEPS_PER_EPOCH = SAMPLES // 16


def trainer_for(tmp_path: Path, epochs: int, **options) -> transformers.Trainer:
    """A 1-layer BERT classifier of 3 classes whose label is the first token modulo 3."""
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=VOCAB, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, max_position_embeddings=LENGTH, num_labels=CLASSES
    )
    ids = torch.randint(0, VOCAB, (SAMPLES, LENGTH), generator=torch.Generator().manual_seed(0))
    data = [{"input_ids": row, "attention_mask": torch.ones(LENGTH, dtype=torch.long), "labels": row[0] % CLASSES} for row in ids]
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path),
        num_train_epochs=epochs,
        per_device_train_batch_size=16,
        per_device_eval_batch_size=32,
        eval_strategy="epoch",
        logging_strategy="epoch",
        save_strategy="no",
        report_to=["tensorboard"],
        learning_rate=1e-2,
        use_cpu=True,
        disable_tqdm=True,
        **options,
    )
    return transformers.Trainer(model=transformers.BertForSequenceClassification(config), args=args, train_dataset=data, eval_dataset=data)


def test_two_epochs_log_what_compare_finds_in_the_recordings(tmp_path):
    """Each evaluation recorded through preprocess_logits_for_metrics (rate 1), audited in the
    background, logged through the Trainer's TensorBoard logger at the evaluation's step, under
    eval/; the ce mean of each is the Trainer's own eval_loss (the model's mean cross-entropy)."""
    trainer = trainer_for(tmp_path, epochs=2)
    callback = LossAuditCallback(rate=1.0).attach(trainer)
    trainer.train()
    (log_dir,) = (tmp_path / "runs").iterdir()
    logged = scalars(log_dir)
    runs = sorted((tmp_path / "lossaudit").glob("epoch*/run"))
    assert [run.parent.name for run in runs] == [f"epoch001-step{STEPS_PER_EPOCH:07d}", f"epoch002-step{2 * STEPS_PER_EPOCH:07d}"]
    for run in runs:
        step = int(run.parent.name.rsplit("step", 1)[1])
        report = lossaudit.compare(run)
        assert report.input["rows"] == SAMPLES
        for name, loss in report.losses.items():
            for key in ("mean", "positive_share", "easy_negative_share", "very_hard_share"):
                if getattr(loss, key) is not None:
                    assert dict(logged[f"eval/lossaudit/{name}/{key}"])[step] == pytest.approx(getattr(loss, key), rel=1e-6, abs=1e-7), (step, name, key)
        assert dict(logged["eval/lossaudit/focal_ce_ratio"])[step] == pytest.approx(report.focal_ce_ratio, rel=1e-6)
        assert dict(logged["eval/loss"])[step] == pytest.approx(report.losses["ce"].mean, rel=1e-5)
    assert [step for step, _ in logged["eval/lossaudit/largest_move_points"]] == [2 * STEPS_PER_EPOCH]
    assert [audit.error for audit in callback.logged] == [None, None]


def test_a_share_that_moves_stops_training_and_says_why(tmp_path):
    trainer = trainer_for(tmp_path, epochs=4)
    callback = LossAuditCallback(rate=1.0, fail_if_share_moves=0.0, on_move="stop", background=False).attach(trainer)
    trainer.train()
    assert trainer.state.epoch == 2  # epoch 2's audit is the first with a baseline, and any move reaches 0 points
    (said,) = [entry["eval_lossaudit/moved"] for entry in trainer.state.log_history if "eval_lossaudit/moved" in entry]
    move = callback.logged[1].report.extra["baseline"]["largest_move"]
    assert said.startswith("fail_if_share_moves 0: ") and f"moved {move['points']:+.1f} points since " in said


def test_ignored_labels_and_token_logits(tmp_path):
    """(B, T, C) token logits with -100 labels: the padded positions are ignored, not recorded as a class."""
    trainer = trainer_for(tmp_path, epochs=1)
    callback = LossAuditCallback(rate=1.0, background=False).attach(trainer)
    callback.audits.start(0, 0)
    logits = torch.randn(2, 5, CLASSES)
    labels = torch.tensor([[0, 1, 2, -100, -100], [2, 2, -100, -100, -100]])
    assert callback.preprocess_logits_for_metrics((logits, "hidden states"), labels).shape == (1,)
    callback.audits.finish()
    (audit,) = callback.audits.join()
    assert audit.report.input["rows"] == 5 and audit.report.input["ignored_elements"] == 5 * CLASSES


def test_evaluate_alone_is_audited_before_it_returns(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # outside train(), the TensorBoard callback writes to ./runs/
    trainer = trainer_for(tmp_path, epochs=1)
    callback = LossAuditCallback(rate=1.0).attach(trainer)
    metrics = trainer.evaluate()
    (audit,) = callback.logged
    assert audit.step == 0 and audit.scalars["eval_lossaudit/ce/mean"] == pytest.approx(metrics["eval_loss"], rel=1e-5)
    with pytest.raises(ValueError, match="attached to a trainer already"):
        callback.attach(trainer)
