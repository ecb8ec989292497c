"""lossaudit.integrations.lightning: a real ``lightning`` Trainer fits a tiny classifier with the
callback; the numbers TensorBoard received are read back from its event files and checked against
``lossaudit.compare`` on the recorded runs and against the model's own cross-entropy."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

pl = pytest.importorskip("lightning.pytorch", reason="the lightning extra")
pytest.importorskip("tensorboard", reason="the test reads TensorBoard's event files")

import lossaudit  # noqa: E402
from lossaudit.errors import InputError  # noqa: E402
from lossaudit.integrations.lightning import LossAuditCallback  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:.*LeafSpec.* is deprecated")  # lightning's own use of torch's pytree

CLASSES, FEATURES, SAMPLES, BATCH = 4, 8, 256, 64
STEPS_PER_EPOCH = SAMPLES // BATCH


class Classifier(pl.LightningModule):
    """A linear classifier whose steps return their logits and targets for the callback."""

    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Linear(FEATURES, CLASSES)

    def training_step(self, batch, batch_idx):
        x, y = batch
        logits = self.net(x)
        return {"loss": torch.nn.functional.cross_entropy(logits, y), "logits": logits, "targets": y}

    def validation_step(self, batch, batch_idx):
        x, y = batch
        return {"logits": self.net(x), "targets": y}

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.5)


def data() -> tuple[torch.Tensor, torch.Tensor, torch.utils.data.DataLoader]:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(SAMPLES, FEATURES, generator=generator)
    y = x[:, :CLASSES].argmax(1)
    return x, y, torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=BATCH)


def fit(
    tmp_path: Path, callback: LossAuditCallback, epochs: int, module: pl.LightningModule | None = None, with_csv: bool = False, **trainer_options
) -> tuple[pl.Trainer, pl.LightningModule]:
    """Fit ``module`` (a :class:`Classifier`) on the 256 rows, validated on the same rows, logging to
    TensorBoard (``tmp_path/tb``; and to a CSV file, ``tmp_path/csv``, with ``with_csv``)."""
    torch.manual_seed(0)
    module = module or Classifier()
    _, _, loader = data()
    trainer = pl.Trainer(
        max_epochs=epochs,
        logger=[pl.loggers.TensorBoardLogger(tmp_path, name="tb"), *([pl.loggers.CSVLogger(tmp_path, name="csv")] if with_csv else [])],
        callbacks=[callback],
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        num_sanity_val_steps=1,
        log_every_n_steps=1,
        **trainer_options,
    )
    trainer.fit(module, loader, loader)
    return trainer, module


def scalars(log_dir: str | Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar TensorBoard's event files in ``log_dir`` hold: tag -> [(step, value)]."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(log_dir))
    events.Reload()
    return {tag: [(event.step, event.value) for event in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def texts(log_dir: Path) -> dict[str, list[tuple[int, str]]]:
    """Every text TensorBoard's event files in ``log_dir`` hold: tag -> [(step, text)]."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(log_dir), size_guidance={"tensors": 0})
    events.Reload()
    return {tag: [(event.step, event.tensor_proto.string_val[0].decode()) for event in events.Tensors(tag)] for tag in events.Tags()["tensors"]}


def expected(run: Path, prefix: str) -> dict[str, float]:
    """What the callback should have logged for one recorded run: compare's numbers, read here."""
    report = lossaudit.compare(run)
    out = {}
    for name, loss in report.losses.items():
        for key in ("mean", "positive_share", "easy_negative_share", "very_hard_share"):
            if getattr(loss, key) is not None:
                out[f"{prefix}{name}/{key}"] = getattr(loss, key)
    out[f"{prefix}focal_ce_ratio"] = report.focal_ce_ratio
    return out


class WhenLogged(LossAuditCallback):
    """Notes the global step at which each audit is logged."""

    def _log(self, trainer, done):
        self.when = getattr(self, "when", []) + [(audit.folder.parent.name, audit.step, trainer.global_step) for audit in done]
        super()._log(trainer, done)


def test_two_epochs_log_what_compare_finds_in_the_recordings(tmp_path):
    """Validation and training recorded (rate 1: every element kept), audited in the background,
    logged at the step of each validation (4 steps of 64 per epoch); epoch 1 is compared with
    epoch 0; the last epoch's ce mean is the model's own cross-entropy on the validation data."""
    callback = WhenLogged(train=True, rate=1.0)
    trainer, module = fit(tmp_path, callback, epochs=2, with_csv=True)
    first_validation = next(when for when in callback.when if when[:2] == ("val", STEPS_PER_EPOCH))
    assert STEPS_PER_EPOCH < first_validation[2] <= 2 * STEPS_PER_EPOCH  # logged while epoch 1 trained: in the background
    log_dir = Path(trainer.log_dir)
    logged = scalars(log_dir)
    for part, prefix in (("val", "lossaudit/"), ("train", "lossaudit/train/")):
        runs = sorted((log_dir / "lossaudit" / part).glob("epoch*/run"))
        assert [run.parent.name for run in runs] == [
            f"epoch000-step{STEPS_PER_EPOCH * (part == 'val'):07d}",
            f"epoch001-step{STEPS_PER_EPOCH * (1 + (part == 'val')):07d}",
        ]
        for epoch, run in enumerate(runs):
            step = int(run.parent.name.rsplit("step", 1)[1])
            assert (run.parent / "report.json").is_file()
            for tag, value in expected(run, prefix).items():
                at = dict(logged[tag])
                assert at[step] == pytest.approx(value, rel=1e-6, abs=1e-7), (part, epoch, tag)
        assert [step for step, _ in logged[f"{prefix}largest_move_points"]] == [int(runs[1].parent.name.rsplit("step", 1)[1])]
    x, y, _ = data()
    with torch.no_grad():
        cross_entropy = torch.nn.functional.cross_entropy(module.net(x), y).item()
    assert logged["lossaudit/ce/mean"][-1] == (2 * STEPS_PER_EPOCH, pytest.approx(cross_entropy, rel=1e-5))
    assert [audit.epoch for audit in callback.logged if audit.folder.parent.name == "val"] == [0, 1]
    with open(tmp_path / "csv" / "version_0" / "metrics.csv", newline="") as file:  # the CSV logger got the same numbers
        rows = [row for row in csv.DictReader(file) if row["lossaudit/ce/mean"]]
    assert [(int(row["step"]), float(row["lossaudit/ce/mean"])) for row in rows] == [
        (step, pytest.approx(value, rel=1e-6)) for step, value in logged["lossaudit/ce/mean"]
    ]
    assert all(audit.error is None for audit in callback.logged)


@pytest.mark.parametrize(
    "threshold, on_move, epochs_run, says",
    [
        (0.0, "stop", 2, True),  # any move reaches 0 points: stop after epoch 1's audit (the first with a baseline)
        (0.0, "warn", 3, True),
        (100.1, "stop", 3, False),  # a share moves 100 points at most
    ],
)
def test_a_share_that_moves_stops_or_warns(tmp_path, caplog, threshold, on_move, epochs_run, says):
    callback = LossAuditCallback(rate=1.0, fail_if_share_moves=threshold, on_move=on_move, background=False)
    with caplog.at_level(logging.WARNING, logger="lossaudit"):
        trainer, _ = fit(tmp_path, callback, epochs=3)
    assert trainer.current_epoch == epochs_run
    reasons = [record.getMessage() for record in caplog.records if record.name == "lossaudit"]
    assert bool(reasons) == says
    if says:
        assert f"fail_if_share_moves {threshold:g}: " in reasons[0] and " points since " in reasons[0]
        assert reasons[0].endswith("; stopping training") == (on_move == "stop")
        move = callback.logged[1].report.extra["baseline"]["largest_move"]
        assert f"moved {move['points']:+.1f} points" in reasons[0]
        assert texts(Path(trainer.log_dir))["lossaudit/moved/text_summary"][0] == (STEPS_PER_EPOCH * 2, callback.logged[1].moved)


class HookedBf16(Classifier):
    """Exposes its outputs through the hook (the step returns only the logits)."""

    def validation_step(self, batch, batch_idx):
        return self.net(batch[0])

    def lossaudit_outputs(self, outputs, batch):
        return outputs, batch[1]


def test_bf16_mixed_precision_logits_through_the_hook(tmp_path):
    """Under bf16 autocast the linear layer's logits are bfloat16; the run stores them as float32,
    value for value."""
    callback = LossAuditCallback(rate=1.0, background=False)
    trainer, module = fit(tmp_path, callback, epochs=1, module=HookedBf16(), precision="bf16-mixed")
    x, y, _ = data()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        logits = module.net(x[:BATCH])
    assert logits.dtype == torch.bfloat16
    (run,) = (Path(trainer.log_dir) / "lossaudit" / "val").glob("epoch*/run")
    with np.load(run / "rank000-000000.npz") as batch:
        assert batch["logits"].dtype == np.float32
        np.testing.assert_array_equal(batch["logits"], logits.float().numpy())
    assert callback.logged[0].scalars["lossaudit/ce/mean"] == pytest.approx(lossaudit.compare(run).losses["ce"].mean)


def test_a_step_without_the_outputs_says_what_it_expects(tmp_path):
    class Silent(Classifier):
        def validation_step(self, batch, batch_idx):
            return None

    with pytest.raises(ValueError, match=r"Silent.validation_step returned NoneType; expected a dict with 'logits' and 'targets'"):
        fit(tmp_path, LossAuditCallback(), epochs=1, module=Silent())


@pytest.mark.parametrize(
    "options, message",
    [
        ({"on_move": "halt"}, "on_move is 'halt'; expected 'warn' or 'stop'"),
        ({"fail_if_share_moves": -1.0}, "fail_if_share_moves is -1.0; expected percentage points >= 0"),
        ({"rate": 0.0}, "rate 0.0: expected an inclusion probability in (0, 1]"),
        ({"compare_options": {"gama": 2}}, "compare_options: gama are not options of lossaudit.compare"),
        ({"compare_options": {"logits": 1}}, "compare_options: logits are set by the audit itself"),
        ({"baseline": "missing.json"}, "missing.json"),
    ],
)
def test_bad_settings_fail_at_construction(options, message):
    with pytest.raises(InputError, match=None) as error:
        LossAuditCallback(**options)
    assert message in str(error.value) and "\n" not in str(error.value)


@pytest.fixture
def resource_tracker_stopped():
    """ddp_spawn starts multiprocessing's resource tracker, a child of this process that lives as
    long as it does; stop it after the test, since other tests (test_parallel) check that their
    code leaves no child behind."""
    yield
    from multiprocessing import resource_tracker

    resource_tracker._resource_tracker._stop()


@pytest.mark.usefixtures("resource_tracker_stopped")
def test_ddp_ranks_record_one_run_and_rank_zero_audits_and_stops_them_all(tmp_path):
    """Two CPU processes (gloo): each validates half of the 256 rows into the epoch's one run, rank
    zero audits all 256 and logs alone; epoch 1's move (any, at 0 points) is found in the background
    and, under DDP, applied on both ranks at epoch 2's validation end: no epoch 3 is validated."""
    callback = LossAuditCallback(rate=1.0, fail_if_share_moves=0.0, on_move="stop")
    trainer, _ = fit(tmp_path, callback, epochs=5, accelerator="cpu", devices=2, strategy="ddp_spawn")
    log_dir = tmp_path / "tb" / "version_0"
    runs = sorted((log_dir / "lossaudit" / "val").glob("epoch*/run"))
    half = STEPS_PER_EPOCH // 2  # steps per epoch on each of the two ranks
    assert [run.parent.name for run in runs] == [f"epoch{epoch:03d}-step{half * (epoch + 1):07d}" for epoch in range(3)]
    logged = scalars(log_dir)
    for run in runs:
        assert sorted(path.name[:7] for path in run.glob("*.npz")) == ["rank000"] * 2 + ["rank001"] * 2
        report = lossaudit.compare(run)
        assert report.input["rows"] == SAMPLES
        step = int(run.parent.name.rsplit("step", 1)[1])
        assert [value for at, value in logged["lossaudit/ce/mean"] if at == step] == [pytest.approx(report.losses["ce"].mean, rel=1e-6)]


def test_validate_alone_is_audited_before_it_returns(tmp_path):
    callback, module = LossAuditCallback(rate=1.0), Classifier()
    x, y, loader = data()
    trainer = pl.Trainer(logger=pl.loggers.TensorBoardLogger(tmp_path, name="tb"), callbacks=[callback], enable_progress_bar=False, enable_model_summary=False)
    trainer.validate(module, loader)
    (audit,) = callback.logged
    with torch.no_grad():
        cross_entropy = torch.nn.functional.cross_entropy(module.net(x), y).item()
    assert audit.folder.name == "epoch000-step0000000" and audit.scalars["lossaudit/ce/mean"] == pytest.approx(cross_entropy, rel=1e-5)
