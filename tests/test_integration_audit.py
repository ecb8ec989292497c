"""lossaudit.integrations.audit, the framework-free part the callbacks drive (and a plain loop can):
epochs recorded, audited in a thread, each compared with the last; and the import rule: neither
``import lossaudit`` nor the core imports a training framework."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading

import pytest
import torch

import lossaudit
from lossaudit.integrations.audit import EpochAudits, headline, moved_reason


def test_importing_lossaudit_and_the_core_imports_no_framework():
    code = (
        "import sys, lossaudit, lossaudit.integrations, lossaudit.integrations.audit\n"
        "lossaudit.compare, lossaudit.Recorder\n"
        "print(sorted(m for m in ('lightning', 'pytorch_lightning', 'transformers', 'tensorboard', 'accelerate', 'torch') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def epoch_batches(epoch: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Two batches of 3-class logits whose margin for the target class grows with the epoch."""
    generator = torch.Generator().manual_seed(epoch)
    batches = []
    for _ in range(2):
        targets = torch.randint(0, 3, (40,), generator=generator)
        logits = torch.randn(40, 3, generator=generator) + 2.0 * epoch * torch.nn.functional.one_hot(targets, 3)
        batches.append((logits, targets))
    return batches


def test_epochs_are_audited_in_a_thread_and_compared_with_the_last(tmp_path):
    audits = EpochAudits(tmp_path, rate=1.0, fail_if_share_moves=0.0)
    threads = []
    for epoch in range(2):
        audits.start(epoch, step=10 * epoch)
        for logits, targets in epoch_batches(epoch):
            audits.add(logits.requires_grad_(), targets)  # detached before recording
        assert audits.finish()
        threads.append(audits._thread)
    done = audits.join()
    assert [audit.epoch for audit in done] == [0, 1] and [audit.step for audit in done] == [0, 10]
    assert all(thread is not None and thread is not threading.current_thread() for thread in threads)
    first, second = done
    assert first.folder == tmp_path / "epoch000-step0000000" and first.report_path.is_file()
    assert "baseline" not in first.report.extra and first.moved is None
    assert second.report.extra["baseline"]["source"] == str(first.report_path)
    for audit, epoch in zip(done, range(2)):
        batches = epoch_batches(epoch)
        logits, targets = torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])
        cross_entropy = torch.nn.functional.cross_entropy(logits, targets).item()
        assert audit.scalars["lossaudit/ce/mean"] == pytest.approx(cross_entropy, rel=1e-6)
        assert audit.scalars == headline(lossaudit.compare(audit.folder / "run", baseline=None if epoch == 0 else first.report_path))
    points = second.report.extra["baseline"]["largest_move"]["points"]
    assert second.scalars["lossaudit/largest_move_points"] == pytest.approx(points)
    assert second.moved is not None and f"moved {points:+.1f} points since {first.report_path}" in second.moved and not second.stop


def test_a_failing_audit_is_logged_and_the_next_one_runs(tmp_path, caplog):
    """Two class names for three classes: compare refuses the run; the epoch's Audit carries the
    one-line error, and the next epoch (a baseline of None: the last report failed) is audited."""
    audits = EpochAudits(tmp_path, rate=1.0, background=False, compare_options={"class_names": ["a", "b"]})
    with caplog.at_level(logging.ERROR, logger="lossaudit"):
        audits.start(0, 0)
        audits.add(*epoch_batches(0)[0])
        audits.finish()
    (failed,) = audits.collect()
    assert failed.report is None and failed.scalars == {} and "class" in failed.error and "\n" not in failed.error
    assert caplog.records and "the audit of epoch 0 failed" in caplog.records[0].getMessage()
    audits.compare_options = {}
    audits.start(1, 1)
    audits.add(*epoch_batches(1)[0])
    audits.finish()
    (audit,) = audits.collect()
    assert audit.error is None and "baseline" not in audit.report.extra


def test_an_epoch_without_batches_is_not_audited(tmp_path):
    audits = EpochAudits(tmp_path)
    audits.start(0, 0)
    assert not audits.finish() and audits.join() == []
    with pytest.raises(ValueError, match="before start"):
        audits.add(torch.zeros(1, 2), torch.zeros(1, dtype=torch.long))


def test_the_move_reason_is_the_gates_test():
    section = {"largest_move": {"points": -12.34, "section": "per_class", "row": "cat", "loss": "focal"}, "source": "early.json", "compared": "2 of 2 classes"}
    assert moved_reason(section, 12.34) == "fail_if_share_moves 12.34: focal's share of class cat moved -12.3 points since early.json (compared 2 of 2 classes)"
    assert moved_reason(section, 12.35) is None and moved_reason(section, None) is None
    assert moved_reason({**section, "largest_move": None}, 0.0) is None


def test_the_figure_is_written_beside_the_report(tmp_path):
    pytest.importorskip("matplotlib", reason="the plot extra")
    audits = EpochAudits(tmp_path, rate=1.0, background=False, plot=True)
    audits.start(0, 0)
    audits.add(*epoch_batches(0)[0])
    audits.finish()
    (audit,) = audits.collect()
    assert audit.error is None
    assert (audit.folder / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_every_epoch_is_compared_with_a_baseline_report(tmp_path):
    import json

    logits, targets = (torch.cat(parts) for parts in zip(*epoch_batches(0)))
    baseline = tmp_path / "early.json"
    baseline.write_text(json.dumps(lossaudit.compare(logits=logits, targets=targets).to_dict()))
    audits = EpochAudits(tmp_path / "audits", rate=1.0, baseline=baseline, fail_if_share_moves=100.1)
    for epoch in (1, 2):
        audits.start(epoch, epoch)
        for batch in epoch_batches(epoch):
            audits.add(*batch)
        audits.finish()
    done = audits.join()
    assert [audit.report.extra["baseline"]["source"] for audit in done] == [str(baseline)] * 2
    assert [audit.moved for audit in done] == [None, None]  # a share moves 100 points at most
