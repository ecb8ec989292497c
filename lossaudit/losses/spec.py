"""What a loss family declares, once: its losses, their hyper-parameters with defaults and
constraints, and the lint kinds it gives reference behaviour for.

Everything that lists losses or their parameters (``compare --losses`` and its options, the Python
API's keywords, the configuration keys, ``lint --kind``, ``lossaudit losses``, the README's tables)
is derived from these declarations by :mod:`lossaudit.losses.registry`. Nothing here imports torch.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from lossaudit.errors import InputError

SIGMOID, SOFTMAX = "sigmoid", "softmax"
"""The two families of loss ``compare`` tells apart: per element (one binary problem per class,
background rows expressible) and per row (one distribution over the classes)."""


@dataclass(frozen=True)
class Bounds:
    """The values a number may take: ``low``/``high`` (None: unbounded), ``high_open`` excludes
    ``high``, ``off`` is one more value allowed outside the range (alpha's -1: weighting off).
    Infinite and NaN values are refused unless they are ``off``."""

    low: float | None = None
    high: float | None = None
    high_open: bool = False
    off: float | None = None

    def allows(self, value: float) -> bool:
        if self.off is not None and value == self.off:
            return True
        if not math.isfinite(value):
            return False
        above = self.low is None or value >= self.low
        below = self.high is None or (value < self.high if self.high_open else value <= self.high)
        return above and below

    def expected(self, integer: bool = False) -> str:
        """The allowed values in words: ``a value in [0, 1), ``at least 1``, ..."""
        if self.low is not None and self.high is not None:
            text = f"a value in [{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"
        elif self.low is not None:
            text = f"at least {self.low:g}" if integer else f"a finite value ≥ {self.low:g}"
        elif self.high is not None:
            text = f"a finite value ≤ {self.high:g}"
        else:
            text = "a finite value"
        return text + (f", or {self.off:g} to disable it" if self.off is not None else "")


class _Named:
    """The names of a hyper-parameter called ``name`` on each entry path."""

    name: str

    @property
    def option(self) -> str:
        """The command line's option: ``--qfl-beta`` for ``qfl_beta``."""
        return "--" + self.name.replace("_", "-")

    @property
    def key(self) -> str:
        """The configuration file's key: ``qfl-beta``."""
        return self.name.replace("_", "-")


@dataclass(frozen=True)
class Param(_Named):
    """A hyper-parameter: the ``compare`` option ``--NAME`` (``_`` as ``-``), the configuration key
    ``NAME`` and the API keyword ``name``, with one default and one constraint for all three."""

    name: str
    default: float
    help: str
    metavar: str = "X"
    bounds: Bounds = Bounds()
    integer: bool = False

    @property
    def expected(self) -> str:
        return self.bounds.expected(self.integer)

    def check(self, value: object) -> None:
        """Raise :class:`InputError` unless ``value`` is a number the constraint allows."""
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not number or (self.integer and not float(cast(float, value)).is_integer()) or not self.bounds.allows(float(cast(float, value))):
            raise InputError(f"{self.option} {value}: expected {self.expected}")


@dataclass(frozen=True)
class PerClassParam(_Named):
    """A hyper-parameter with one value per class (``--alpha-per-class``): a comma list of numbers
    or a file of them (one per line, a YAML list or a mapping ``{index: value}``), a sequence in the
    API, a list or a path in the configuration file. Each value must satisfy ``bounds``; their
    number must be the number of classes, checked once the data is read."""

    name: str
    help: str
    metavar: str = "A,...|FILE"
    bounds: Bounds = Bounds()
    default: None = None
    integer: bool = False

    def check(self, values: Sequence[float]) -> None:
        bad = [value for value in values if not self.bounds.allows(value)]
        if bad or not values:
            shown = ",".join(f"{value:g}" for value in values) or "(none)"
            raise InputError(f"{self.option} {shown}: expected one number per class, each {self.bounds.expected()}" + (f"; got {bad[0]:g}" if bad else ""))

    def parse(self, value: str | os.PathLike | Sequence[float]) -> tuple[float, ...]:
        """The values as every entry path takes them: a comma list of numbers, a file of them (one
        per line, a YAML list or a mapping ``{index: value}``), or a sequence (the API, a
        configuration list), each checked against ``bounds``.

        Raises:
            InputError: a value that is no number or breaks the constraint, naming the file when
                the values came from one.
        """
        if not isinstance(value, (str, os.PathLike)):
            return self._checked([self._number(item) for item in value])
        text = os.fspath(value)
        try:
            return self._checked([float(part) for part in text.split(",")])
        except ValueError:
            pass
        from lossaudit.io.dataset import read_class_names

        try:
            return self._checked([self._number(item) for item in read_class_names(Path(text))])
        except InputError as error:
            raise InputError(f"{text}: {error}") from None

    def _number(self, item: Any) -> float:
        try:
            return float(item)
        except (TypeError, ValueError):
            raise InputError(f"{self.option}: expected numbers, one per class; got {item!r}") from None

    def _checked(self, values: list[float]) -> tuple[float, ...]:
        self.check(values)
        return tuple(values)

    def check_classes(self, values: Sequence[float], num_classes: int) -> None:
        if len(values) != num_classes:
            raise InputError(f"{self.option}: {len(values)} values; the data has {num_classes} classes")


@dataclass(frozen=True)
class LossSpec:
    """One loss ``compare`` computes.

    Attributes:
        id: its name on the command line, in reports and in the JSON document.
        family: :data:`SIGMOID` (element terms ``(N, C)``) or :data:`SOFTMAX` (target terms of the
            rows with a target).
        summary: one line for ``lossaudit losses`` and the README.
        params: the names of the :class:`Param` s it reads (declared by any family).
        arguments: settings -> its hyper-parameters, as reported and as keyword arguments of
            ``terms``.
        terms: the torch reference of its terms, used by the full-tensor oracle and, when the
            streaming engine has no numpy terms for it, per chunk by the engine's generic path
            (:mod:`lossaudit.compare.engine.generic`; the terms must then be separable over rows):
            sigmoid ``terms(x, y, valid, positive, **arguments) -> (N, C)`` element losses, softmax
            ``terms(x, y, class_counts, **arguments) -> (N, C)`` terms at the targets, with
            ``class_counts`` the ``(C,)`` target sums of the data.
        normaliser: sigmoid losses: ``(valid, y, positive) -> (count, unit)``, what the mean divides
            by, a count that adds up over rows (the streaming engine adds it chunk by chunk);
            softmax losses divide by the rows with a target.
        empty_name: when set, the mean divides by at least 1, and a count of 0 is named so.
        default_when: ``DataInfo -> bool``: the data for which it is a default of ``compare``.
        default_on: that data in words, for the help (empty: on any data).
        needs_class_counts: it reads the data's class counts (taken before the pass).
        lint_kind: the ``lint --kind`` whose reference behaviour it is, if any.
    """

    id: str
    family: str
    summary: str
    params: tuple[str, ...] = ()
    arguments: Callable[[Any], dict[str, Any]] = field(default=lambda settings: {})
    terms: Callable | None = None
    normaliser: Callable | None = None
    empty_name: str | None = None
    default_when: Callable[[Any], bool] | None = None
    default_on: str = ""
    needs_class_counts: bool = False
    lint_kind: str | None = None


def normalise(spec: LossSpec, count: float, unit: str) -> tuple[float, str]:
    """What ``spec``'s mean divides by, and its name, from the count its normaliser gave for the
    whole data."""
    if spec.empty_name is None:
        return float(count), unit
    return (float(count), unit) if count >= 1 else (1.0, spec.empty_name)


@dataclass(frozen=True)
class LintKind:
    """A ``lint --kind``: the semantics a user's loss is audited against.

    Attributes:
        name: the ``--kind`` value.
        summary: one line for the help and ``lossaudit losses``.
        base: the focal kind whose probe batches, layouts and rules it shares (itself for a focal
            kind): per-class sigmoid, softmax over rows, binary, or CenterNet's heatmaps.
        reference: a family kind's reference, a function of its module called
            ``reference(logits, targets, reduction="none", **parameters)`` (None for the focal
            kinds, whose references lint composes from its alpha and gamma readings).
        parameters: the reference's keyword arguments it is audited with: keyword -> the names a
            target may give it, first its own (their defaults are the reference's).
        focusing: the name of its focusing exponent (None: it has none to vary).
        normalisations: what its 'mean' may divide by without a note (lint FL018's words: 'none',
            'sum', 'sum per positive', 'mean over rows', 'mean over elements', ...).
        usual_normalisation: how FL018 names the usual one.
        factor: how an FL004 finding reads its modulating factor (empty: focal's ``(1 - p_t)^gamma``).
        no_alpha: the fix of an alpha rule when the kind takes no balancing weight (empty: it takes one).
        hint: what reads a target as this kind in auto mode: ``(where, words, reason, decisive)``
            with ``where`` 'name' or 'parameters' (None: nothing does).
    """

    name: str
    summary: str
    base: str
    reference: Callable | None = None
    parameters: dict[str, tuple[str, ...]] = field(default_factory=dict)
    focusing: str | None = "gamma"
    normalisations: tuple[str, ...] = ("none", "sum")
    usual_normalisation: str = "the sum"
    factor: str = ""
    no_alpha: str = ""
    hint: tuple[str, tuple[str, ...], str, bool] | None = None


def valid_elements(valid, y, positive) -> tuple[float, str]:
    """The usual normaliser of a sigmoid loss: the valid elements."""
    return float(valid.sum()), "valid elements"


def always(info) -> bool:
    return True


def except_heatmaps(info) -> bool:
    """A default on any data but heatmaps (Gaussian targets, ``encoding == 'heatmap'``): the softmax
    losses, which would read a Gaussian map as soft labels of one class per cell."""
    return info.encoding != "heatmap"


BASE_DEFAULTS = (always, except_heatmaps)
"""The ``default_when`` of the losses computed on (nearly) any data: the base set."""
