"""The loss registry: every loss ``compare`` computes, every hyper-parameter it takes and every
``lint --kind``, collected from the family modules.

A family module (``lossaudit/losses/<family>.py``) declares, beside its torch reference functions:

- ``LOSSES``: its :class:`~lossaudit.losses.spec.LossSpec` entries (what ``compare`` computes);
- ``PARAMS``: the hyper-parameters it owns (:class:`~lossaudit.losses.spec.Param`), each with its
  default, constraint and help, from which the ``compare`` options, the API keywords, the
  configuration keys and :class:`~lossaudit.compare.settings.LossSettings` are derived;
- ``LINT_KINDS``: the ``lint --kind`` values it gives reference behaviour for.

Adding a family is one module and one entry in :data:`FAMILIES` (``docs/extending.md``). Reading
the registry imports no torch.
"""

from __future__ import annotations

from lossaudit.errors import InputError
from lossaudit.losses import (
    asymmetric,
    balanced,
    cross_entropy,
    density,
    focusing,
    heatmap,
    mining,
    quality,
    smoothing,
)
from lossaudit.losses.spec import (
    BASE_DEFAULTS,
    SIGMOID,
    SOFTMAX,
    LintKind,
    LossSpec,
    Param,
    PerClassParam,
)

FAMILIES = (cross_entropy, focusing, density, heatmap, mining, quality, asymmetric, balanced, smoothing)
"""The family modules, in the order reports list their losses."""


def _collect(attribute: str) -> tuple:
    return tuple(item for module in FAMILIES for item in getattr(module, attribute, ()))


def _unique(items: tuple, name: str) -> dict:
    table = {}
    for item in items:
        key = getattr(item, name)
        if key in table:
            raise ValueError(f"two loss families declare {key!r}")
        table[key] = item
    return table


LOSSES: dict[str, LossSpec] = _unique(_collect("LOSSES"), "id")
"""Loss id -> its entry, in report order."""
PARAMS: dict[str, Param | PerClassParam] = _unique(_collect("PARAMS"), "name")
"""Hyper-parameter name -> its declaration, in family order."""
LINT_KINDS: dict[str, LintKind] = _unique(_collect("LINT_KINDS"), "name")
"""``lint --kind`` value -> its declaration."""
LOSS_IDS: tuple[str, ...] = tuple(LOSSES)
BASE_LOSSES: tuple[str, ...] = tuple(loss for loss, spec in LOSSES.items() if spec.default_when in BASE_DEFAULTS)
"""The losses ``compare`` computes on any data when ``--losses`` is not given (the softmax ones
except on heatmaps: :func:`~lossaudit.losses.spec.except_heatmaps`)."""

for _spec in LOSSES.values():
    _unknown = [name for name in _spec.params if name not in PARAMS]
    if _unknown or _spec.family not in (SIGMOID, SOFTMAX):
        raise ValueError(f"loss {_spec.id!r}: unknown parameter {_unknown} or family {_spec.family!r}")


def defaults_for(info) -> tuple[str, ...]:
    """The losses ``compare`` computes on data described by ``info`` (a
    :class:`~lossaudit.io.dataset.DataInfo`) when ``--losses`` is not given."""
    return tuple(loss for loss, spec in LOSSES.items() if spec.default_when is not None and spec.default_when(info))


def parse_losses(text: str | None) -> tuple[str, ...] | None:
    """``"ce,focal"`` -> ``("ce", "focal")``; None keeps the defaults.

    Raises:
        InputError: an unknown loss, or none.
    """
    if text is None:
        return None
    names = tuple(dict.fromkeys(name.strip() for name in text.split(",") if name.strip()))
    unknown = [name for name in names if name not in LOSSES]
    if unknown or not names:
        raise InputError(f"--losses: unknown loss {', '.join(unknown) or '(none)'}; expected a comma list of {', '.join(LOSS_IDS)}")
    return names
