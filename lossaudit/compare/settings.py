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

from dataclasses import dataclass, field, make_dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from lossaudit.losses.registry import BASE_LOSSES, LOSS_IDS, LOSSES, PARAMS
from lossaudit.losses.spec import Bounds, Param

__all__ = ["BASE_LOSSES", "BINS", "FILE_COUNTS", "LEVELS", "LEVEL_EDGES", "LOSS_IDS", "LossSettings", "Tally"]

LEVELS = ("easy", "medium", "hard", "very_hard")
LEVEL_EDGES = (0.1, 0.5, 0.9)
"""easy g < 0.1 ≤ medium < 0.5 ≤ hard < 0.9 ≤ very hard."""
BINS = Param("bins", 10, "Difficulty bins of g for the per-difficulty table.", metavar="N", bounds=Bounds(1), integer=True)
"""The difficulty bins of the per-difficulty table: a ``compare`` option, not a loss's."""


def _check(self) -> None:
    """Every hyper-parameter against its declared constraint (the same check on every path:
    API, command line, configuration file)."""
    BINS.check(self.bins)
    for name, param in PARAMS.items():
        value = getattr(self, name)
        if isinstance(param, Param):
            param.check(value)
        elif value is not None:
            values = tuple(float(item) for item in value)
            param.check(values)
            object.__setattr__(self, name, values)


def _user(self, loss: str):
    """The :class:`~lossaudit.losses.user.UserLoss` of id ``loss``, or None (a registry loss)."""
    return next((user for user in self.user_losses if user.id == loss), None)


def _params(self, loss: str) -> dict[str, object]:
    """The hyper-parameters that ``loss`` uses, as reported (its registry entry's ``arguments``;
    a user loss's ``--loss-init`` keywords)."""
    user = _user(self, loss)
    return dict(user.init) if user is not None else LOSSES[loss].arguments(self)


def _family(self, loss: str) -> str | None:
    """``sigmoid`` or ``softmax``: the registry entry's, or the user loss's (None until declared
    or inferred)."""
    user = _user(self, loss)
    return user.family if user is not None else LOSSES[loss].family


if TYPE_CHECKING:  # the fields are made from the registry at run time: what the type checker sees

    @dataclass(frozen=True)
    class LossSettings:
        losses: tuple[str, ...]
        bins: int
        user_losses: tuple[Any, ...]

        def __init__(self, **fields: Any) -> None: ...
        def __getattr__(self, name: str) -> Any: ...
        def params(self, loss: str) -> dict[str, Any]: ...
        def family(self, loss: str) -> str | None: ...
        def user(self, loss: str) -> Any: ...

else:
    LossSettings = make_dataclass(
        "LossSettings",
        [("losses", tuple, field(default=BASE_LOSSES)), ("bins", int, field(default=BINS.default))]
        + [(name, object, field(default=param.default)) for name, param in PARAMS.items()]
        + [("user_losses", tuple, field(default=()))],
        frozen=True,
        namespace={"__post_init__": _check, "params": _params, "family": _family, "user": _user, "__module__": __name__},
    )
LossSettings.__doc__ = """Which losses to compute and their hyper-parameters (the ``compare`` options): ``losses``,
``bins`` and one field per hyper-parameter of the loss registry (:data:`lossaudit.losses.registry.PARAMS`),
each checked against its declared constraint; ``user_losses``: the user's own losses among ``losses``
(:class:`~lossaudit.losses.user.UserLoss`, not in the registry)."""


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
        mistakes: where the model goes wrong (:class:`~lossaudit.compare.engine.mistakes.Mistakes`:
            the confidently wrong units by cause, the softmax rows' argmax outcomes); None from the
            full-tensor oracle.
        focal_parts: ``(4, C)`` per class, focal's sums before alpha: loss at the non-positive
            elements (weighted by ``1 - alpha``), at the positives (by ``alpha``), and the same
            two of its gradient magnitude; None without focal. Focal under another alpha is
            these reweighted.
        second_moments: None for an unweighted dump. For a weighted dump (sampling weights
            ``w``: :mod:`lossaudit.io.dataset.weights`, every sum and count above a
            Horvitz–Thompson sum of ``w × value``, floats then, the row totals by
            :attr:`~lossaudit.io.dataset.Chunk.row_weights` and a recorded ``population_rows``): loss id -> ``(C, 2, bins, 4)`` float64 tables of ``Σ w (w - 1) v²`` over
            the elements (softmax losses: target terms) of each cell of ``loss_sums``, ``v`` the
            element's loss, and ``"gradient:" + loss`` the same for ``gradient_sums``: the
            variance estimate of each cell's sum under Poisson sampling (0 for elements kept with
            certainty). Focal's alpha_t and GHM-C's bin weights enter squared; OHEM's are over
            the rows it keeps (a plug-in selection).
        sample: None for an unweighted dump; else
            :attr:`~lossaudit.io.dataset.info.DataInfo.sample` with ``estimated_elements`` (the
            weights of the valid elements summed) and ``population_source`` (``recorded`` when every
            batch recorded ``population_elements``, else ``sum of weights``).
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
    rows: float
    background_rows: float
    softmax_counts: np.ndarray
    multi_hot_rows: float
    file_counts: dict[str, np.ndarray]
    normaliser_names: dict[str, str] = field(default_factory=dict)
    mistakes: Any = None  # lossaudit.compare.engine.mistakes.Mistakes
    focal_parts: np.ndarray | None = None
    second_moments: dict[str, np.ndarray] | None = None
    sample: dict | None = None


FILE_COUNTS = ("nonfinite", "background_rows", "multi_hot_rows", "out_of_range_rows")
