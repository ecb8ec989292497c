"""Run lint's audit in-process (the child-process path is tested in test_cli_lint.py), so the
rule and peer tests stay fast."""

from __future__ import annotations

from pathlib import Path

from lossaudit.lint.findings import TargetResult
from lossaudit.lint.runner import AuditOptions
from lossaudit.lint.worker import audit


def run_audit(path: Path | None, symbol: str, init: dict | None = None, module: str | None = None, **options) -> TargetResult:
    """Audit ``path:symbol`` (or ``module:symbol``) with ``init`` and lint ``options``."""
    text = f"{path if path is not None else module}:{symbol}"
    request = {
        "target": {"text": text, "file": str(path) if path is not None else None, "module": module, "symbol": symbol, "init": init or {}},
        "options": {**AuditOptions().__dict__, **options},
    }
    return audit(request)
