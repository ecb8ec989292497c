"""``lossaudit compare``: how cross-entropy, focal, GHM and related losses weigh saved predictions."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from lossaudit.errors import InputError

DEFAULT_LOSSES = ("ce", "bce", "focal", "softmax-focal", "ghm")


def parse_losses(text: str | None) -> tuple[str, ...] | None:
    """``"ce,focal"`` -> ``("ce", "focal")``; None keeps the defaults."""
    from lossaudit.losses import LOSS_IDS

    if text is None:
        return None
    names = tuple(dict.fromkeys(name.strip() for name in text.split(",") if name.strip()))
    unknown = [name for name in names if name not in LOSS_IDS]
    if unknown or not names:
        raise InputError(f"--losses: unknown loss {', '.join(unknown) or '(none)'}; expected a comma list of {', '.join(LOSS_IDS)}")
    return names


def read_alpha_per_class(path: Path) -> tuple[float, ...]:
    """Per-class alpha from a file: one number per line, a YAML list, or a mapping {index: alpha}."""
    from lossaudit.dataset import read_class_names

    values = read_class_names(path)
    try:
        return tuple(float(value) for value in values)
    except ValueError:
        raise InputError(f"{path}: --alpha-per-class needs numbers, one per class") from None


def run(paths: list[Path], load_options, settings, losses: tuple[str, ...] | None) -> dict:
    """Load the dumps, compute the losses and return the report (see :mod:`lossaudit.compare.report`).

    ``losses`` None means the defaults, plus ``centernet`` for heatmap targets.
    """
    from lossaudit.compare.engine import tally
    from lossaudit.compare.report import build_report
    from lossaudit.dataset import load

    data = load(paths, load_options)
    if losses is None:
        losses = DEFAULT_LOSSES + (("centernet",) if data.encoding == "heatmap" else ())
    settings = replace(settings, losses=losses)
    if settings.alpha_per_class is not None and len(settings.alpha_per_class) != data.num_classes:
        raise InputError(f"--alpha-per-class: {len(settings.alpha_per_class)} values; the data has {data.num_classes} classes")
    return build_report(data, settings, tally(data, settings))
