"""What ``compare`` computes and what it adds up: :class:`LossSettings` (the losses and their
hyper-parameters) and :class:`Tally` (the sums every report is built from), shared by the streaming
engine (:mod:`lossaudit.compare.engine`) and the full-tensor oracle (:mod:`lossaudit.compare.oracle`).

Every number ``compare`` prints is a sum over elements grouped by class, by positive/negative,
by difficulty bin and by difficulty level, so each loss is reduced to a small table
``(C, 2, bins, LEVELS)`` of float64 sums.

Difficulty is the GHM gradient norm ``g = |p - y|`` for the sigmoid losses and ``1 - q_target``
for the softmax losses (``ce``, ``softmax-focal``), whose loss sits on the target classes only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from lossaudit.errors import InputError

LOSS_IDS = ("ce", "bce", "focal", "softmax-focal", "ghm", "centernet", "ohem", "qfl", "vfl", "asl", "cb-ce", "logit-adjusted-ce")
"""The losses ``compare`` computes, in the order reports list them: :data:`lossaudit.losses.LOSS_IDS`
and the later families of :data:`lossaudit.losses.FAMILY_IDS` (``cb-ce`` is ``cb`` over CE), each
with a reference function there, named here so that reading the options needs no torch."""
SOFTMAX_LOSSES = ("ce", "softmax-focal")
SOFTMAX_FAMILIES = ("cb-ce", "logit-adjusted-ce")
"""The later softmax families (:mod:`lossaudit.compare.engine.families` tallies them)."""
LEVELS = ("easy", "medium", "hard", "very_hard")
LEVEL_EDGES = (0.1, 0.5, 0.9)
"""easy g < 0.1 ≤ medium < 0.5 ≤ hard < 0.9 ≤ very hard."""


@dataclass(frozen=True)
class LossSettings:
    """Which losses to compute and their hyper-parameters (the ``compare`` options)."""

    losses: tuple[str, ...] = ("ce", "bce", "focal", "softmax-focal", "ghm")
    alpha: float = 0.25
    gamma: float = 2.0
    alpha_per_class: tuple[float, ...] | None = None
    ghm_bins: int = 10
    ghm_momentum: float = 0.0
    ohem_ratio: float = 3.0
    bins: int = 10
    qfl_beta: float = 2.0
    asl_gamma_pos: float = 1.0
    asl_gamma_neg: float = 4.0
    asl_clip: float = 0.05
    cb_beta: float = 0.9999
    la_tau: float = 1.0

    def __post_init__(self) -> None:
        checks = [
            (0 <= self.alpha <= 1 or self.alpha == -1, f"--alpha {self.alpha}: expected a value in [0, 1], or -1 to disable it"),
            (self.gamma >= 0, f"--gamma {self.gamma}: expected a value ≥ 0"),
            (self.ghm_bins >= 1, f"--ghm-bins {self.ghm_bins}: expected at least 1"),
            (0 <= self.ghm_momentum < 1, f"--ghm-momentum {self.ghm_momentum}: expected a value in [0, 1)"),
            (self.ohem_ratio >= 0, f"--ohem-ratio {self.ohem_ratio}: expected a value ≥ 0"),
            (self.bins >= 1, f"--bins {self.bins}: expected at least 1"),
            (self.qfl_beta >= 0, f"--qfl-beta {self.qfl_beta}: expected a value ≥ 0"),
            (self.asl_gamma_pos >= 0, f"--asl-gamma-pos {self.asl_gamma_pos}: expected a value ≥ 0"),
            (self.asl_gamma_neg >= 0, f"--asl-gamma-neg {self.asl_gamma_neg}: expected a value ≥ 0"),
            (0 <= self.asl_clip < 1, f"--asl-clip {self.asl_clip}: expected a value in [0, 1)"),
            (0 <= self.cb_beta < 1, f"--cb-beta {self.cb_beta}: expected a value in [0, 1)"),
            (math.isfinite(self.la_tau), f"--la-tau {self.la_tau}: expected a finite value"),
        ]
        for ok, message in checks:
            if not ok:
                raise InputError(message)

    def params(self, loss: str) -> dict[str, object]:
        """The hyper-parameters that ``loss`` uses, as reported."""
        from lossaudit.compare.engine.families import FAMILY_LOSSES, family_params

        if loss in FAMILY_LOSSES:
            return family_params(self, loss)
        per_class = list(self.alpha_per_class) if self.alpha_per_class is not None else None
        return {
            "ce": {},
            "bce": {},
            "focal": {"alpha": per_class if per_class is not None else self.alpha, "gamma": self.gamma},
            "softmax-focal": {"alpha": per_class, "gamma": self.gamma},
            "ghm": {"bins": self.ghm_bins, "momentum": self.ghm_momentum},
            "centernet": {"alpha": 2.0, "beta": 4.0},
            "ohem": {"neg_pos_ratio": self.ohem_ratio},
        }[loss]


@dataclass
class Tally:
    """Sums over (class, is_positive, difficulty bin, difficulty level), plus per-class counts.

    Attributes:
        loss_sums: loss id -> ``(C, 2, bins, 4)`` float64 sums of element losses.
        gradient_sums: loss id -> ``(C, 2, bins, 4)`` float64 sums of the gradient magnitude
            ``|∂ Σ loss / ∂x|`` at each logit (before the normaliser). A softmax row's magnitude,
            summed over its logits, is binned with its target terms, shared in proportion to
            their targets (a one-hot row: all of it at the target class).
        element_counts: ``(C, 2, bins, 4)`` valid elements, binned by the sigmoid ``g``.
        normalisers: loss id -> what that loss's mean divides by.
        sum_p_positive: ``(C,)`` Σ sigmoid(x) over positives.
        sum_q_positive: ``(C,)`` Σ softmax(x) over positives in rows a softmax loss uses.
        softmax_positives: ``(C,)`` positives in those rows.
        ignored: ``(C,)`` elements dropped by the ignore index or the mask.
        nonfinite: ``(C,)`` elements with a NaN or infinite logit (not ignored).
        rows, background_rows: rows in total, and valid rows without any target (softmax cannot
            express them).
        softmax_counts: ``(C, 2, bins, 4)`` softmax terms (a row with a target, at each class whose
            target is non-zero), binned by ``1 - q_target``; zero when no softmax loss is requested.
        multi_hot_rows: valid rows with more than one positive class.
        file_counts: per dump file (``(F,)`` each, files in input order): ``nonfinite`` elements,
            ``background_rows``, ``multi_hot_rows`` and ``out_of_range_rows`` (rows with a label out
            of range, not masked, with at least one finite, unmasked element).
    """

    loss_sums: dict[str, np.ndarray]
    gradient_sums: dict[str, np.ndarray]
    element_counts: np.ndarray
    normalisers: dict[str, float]
    sum_p_positive: np.ndarray
    sum_q_positive: np.ndarray
    softmax_positives: np.ndarray
    ignored: np.ndarray
    nonfinite: np.ndarray
    rows: int
    background_rows: int
    softmax_counts: np.ndarray
    multi_hot_rows: int
    file_counts: dict[str, np.ndarray]
    normaliser_names: dict[str, str] = field(default_factory=dict)


FILE_COUNTS = ("nonfinite", "background_rows", "multi_hot_rows", "out_of_range_rows")
