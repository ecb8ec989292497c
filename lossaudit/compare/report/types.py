"""What ``lossaudit.compare`` returns: the comparison as a tree of frozen dataclasses.

:class:`Report` mirrors the ``compare --format json`` document (schema in README "JSON"):
``Report.from_dict(document).to_dict() == document``. Rows of the tables are typed
(:class:`LossResult`, :class:`ClassRow`, :class:`DifficultyBin`, :class:`DataFinding`,
:class:`Sentence`); sections whose keys are loss names or quadrant names stay mappings.
:meth:`Report.to_frame` gives a table as a pandas DataFrame when pandas is installed.

Nothing here imports torch or numpy.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, TypeVar, cast

from lossaudit.render.formatting import plural


def _plain(value: object) -> Any:
    """A dataclass tree back to JSON-like dicts, lists and scalars."""
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


_R = TypeVar("_R", bound="_Row")


class _Row:
    """A typed row read from and written back to one JSON object with the same keys."""

    @classmethod
    def from_dict(cls: type[_R], data: Mapping[str, Any]) -> _R:
        names = [field.name for field in fields(cast(Any, cls))]
        optional = {field.name for field in fields(cast(Any, cls)) if field.default is not MISSING}
        missing = [name for name in names if name not in data and name != "details" and name not in optional]
        if missing:
            raise ValueError(f"{cls.__name__}: the report lacks {', '.join(missing)} (schema changed?)")
        values = {name: data[name] for name in names if name != "details" and name in data}
        if "details" in names:
            values["details"] = {key: value for key, value in data.items() if key not in values}
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for item in fields(cast(Any, self)):
            value = getattr(self, item.name)
            if item.name == "details":
                out.update(_plain(value))
            else:
                out[item.name] = _plain(value)
        return out


@dataclass(frozen=True)
class Sentence(_Row):
    """One summary sentence: the rule that wrote it, the text, and the numbers it rests on."""

    rule: str
    text: str
    numbers: Mapping[str, Any]


@dataclass(frozen=True)
class LossResult(_Row):
    """One loss over the whole data. ``covers`` says which units it sees (``{"unit": "rows" |
    "elements", "count"}``); shares are fractions of this loss's total, ``gradient_*`` shares
    fractions of its gradient magnitude Σ |∂L/∂x| (``gradient_mean``: that sum for the mean loss).
    ``details``: further keys, such as a user loss's ``source`` (``{"kind": "user", "from",
    "target", "targets"}``) and, from a weighted dump (schema 7), the standard errors ``sum_se``
    and ``<share>_se`` of each share."""

    family: str
    fits_data: bool
    covers: Mapping[str, Any]
    params: Mapping[str, Any]
    sum: float
    mean: float | None
    mean_divides_by: str
    normaliser: float
    per_positive: float | None
    positive_share: float | None
    easy_negative_share: float | None
    very_hard_share: float | None
    gradient_mean: float | None
    gradient_positive_share: float | None
    gradient_easy_negative_share: float | None
    gradient_very_hard_share: float | None
    details: Mapping[str, Any]


@dataclass(frozen=True)
class ClassRow(_Row):
    """One class: counts, mean probabilities, and each loss's sum, share and gradient share (keyed
    by loss name)."""

    index: int
    name: str
    positives: int
    negatives: int
    ignored: int
    nonfinite: int
    mean_p: float | None
    mean_p_softmax: float | None
    sum: Mapping[str, float]
    share: Mapping[str, float | None]
    gradient_share: Mapping[str, float | None]
    focal_ce_ratio: float | None
    recall: float | None = None
    """Positives got right: argmax at the class (single-label data), else p > 0.5 (schema 6)."""
    details: Mapping[str, Any] = field(default_factory=dict)
    """From a weighted dump (schema 7): ``sum_se``, ``share_se`` and ``gradient_share_se`` (keyed by loss)."""


@dataclass(frozen=True)
class DifficultyBin(_Row):
    """One bin of g = |p - y|: elements (sigmoid losses) and rows (softmax losses), each loss's
    share and gradient share, and GHM's weight for the bin."""

    bin: int
    g_low: float
    g_high: float
    elements: int
    element_share: float | None
    positives: int
    rows: int
    row_share: float | None
    share: Mapping[str, float | None]
    gradient_share: Mapping[str, float | None]
    ghm_weight: float | None
    details: Mapping[str, Any] = field(default_factory=dict)
    """From a weighted dump (schema 7): ``share_se`` and ``gradient_share_se`` (keyed by loss)."""


@dataclass(frozen=True)
class DataFinding(_Row):
    """A data finding (``non-finite``, ``labels-out-of-range``, ``mixed-runs``, ...); ``details``
    holds its own extra keys (``files``, ``per_class``, ``labels``, ``runs``, ...)."""

    code: str
    level: str
    gates_strict: bool
    count: int
    message: str
    details: Mapping[str, Any]


SECTIONS = ("per_class", "per_difficulty", "losses", "findings", "summary", "levels")
"""The tables :meth:`Report.to_frame` turns into DataFrames."""


@dataclass(frozen=True, repr=False)
class Report:
    """The comparison of every requested loss on one data set (``compare --format json``).

    In a script or a notebook: ``print(report)`` (or ``report.text(width=...)``) gives the text
    report ``lossaudit compare`` prints, a notebook shows the HTML report (``_repr_html_``), and
    ``repr(report)`` is one line."""

    schema_version: int
    lossaudit_version: str
    summary: tuple[Sentence, ...]
    loss_selection: str
    input: Mapping[str, Any]
    losses: Mapping[str, LossResult]
    per_class: tuple[ClassRow, ...]
    per_difficulty: tuple[DifficultyBin, ...]
    levels: tuple[Mapping[str, Any], ...]
    quadrants: Mapping[str, Any]
    findings: tuple[DataFinding, ...]
    focal_ce_ratio: float | None
    mistakes: Mapping[str, Any] | None
    """The confidently wrong units by cause (schema 6; None before, and from the oracle)."""
    imbalance: Mapping[str, Any] | None
    """The rare classes and the losses made for imbalance on them (schema 6; None without rare classes)."""
    extra: Mapping[str, Any]
    """Sections added by options, e.g. ``baseline`` with ``--baseline``, and ``estimate`` from a
    weighted dump (schema 7: the sample, the population, the plug-in quantities)."""

    @classmethod
    def from_dict(cls, document: Mapping[str, Any]) -> Report:
        known = {field.name for field in fields(cls)} - {"extra"}
        return cls(
            schema_version=document["schema_version"],
            lossaudit_version=document["lossaudit_version"],
            summary=tuple(Sentence.from_dict(item) for item in document["summary"]),
            loss_selection=document["loss_selection"],
            input=dict(document["input"]),
            losses={name: LossResult.from_dict(item) for name, item in document["losses"].items()},
            per_class=tuple(ClassRow.from_dict(item) for item in document["per_class"]),
            per_difficulty=tuple(DifficultyBin.from_dict(item) for item in document["per_difficulty"]),
            levels=tuple(dict(item) for item in document["levels"]),
            quadrants=dict(document["quadrants"]),
            findings=tuple(DataFinding.from_dict(item) for item in document["findings"]),
            focal_ce_ratio=document["focal_ce_ratio"],
            mistakes=document.get("mistakes"),
            imbalance=document.get("imbalance"),
            extra={key: value for key, value in document.items() if key not in known},
        )

    @property
    def estimate(self) -> Mapping[str, Any] | None:
        """A weighted dump's ``estimate`` section (schema 7: sampled elements, the population,
        the plug-in quantities), else None; the shares' standard errors are the ``…_se`` keys of
        :class:`LossResult` and the rows' ``details``."""
        return self.extra.get("estimate")

    def to_dict(self) -> dict[str, Any]:
        """The ``compare --format json`` document."""
        out = {field.name: _plain(getattr(self, field.name)) for field in fields(self) if field.name != "extra"}
        out.update(_plain(self.extra))
        return out

    def text(self, width: int | None = None, top: int | None = None, top_by: str | None = None) -> str:
        """The text report, ``width`` cells wide (None: as wide as its widest table), ``top`` and
        ``top_by`` as ``compare --top/--top-by``."""
        from lossaudit.render.compare import render_text

        return render_text(self.to_dict(), width, top, top_by)

    def __str__(self) -> str:
        return self.text()

    def __repr__(self) -> str:
        losses = ", ".join(self.losses)
        estimate = ", an estimate" if self.extra.get("estimate") else ""
        return (
            f"<lossaudit Report: {self.input.get('rows', 0):,} rows × {self.input.get('classes')} classes of "
            f"{', '.join(self.input.get('files', []))}{estimate}; losses {losses}; {plural(len(self.summary), 'summary sentence')}>"
        )

    def _repr_html_(self) -> str:
        """The HTML report's body, its style scoped to it (what a notebook shows)."""
        from lossaudit.render.html import html_body, html_fragment

        return html_fragment(html_body(self.to_dict()))

    def to_frame(self, section: str = "per_class") -> Any:
        """One table as a ``pandas.DataFrame``: ``per_class`` and ``per_difficulty`` with a column
        per loss share (``share.focal``...), ``losses`` indexed by loss, ``findings``,
        ``summary``, ``levels``.

        Raises:
            ImportError: pandas is not installed (``pip install pandas``).
            ValueError: an unknown section.
        """
        if section not in SECTIONS:
            raise ValueError(f"unknown section {section!r}; expected one of {', '.join(SECTIONS)}")
        try:
            import pandas
        except ImportError:
            raise ImportError("Report.to_frame needs pandas: pip install pandas") from None
        document = self.to_dict()
        if section == "losses":
            return pandas.json_normalize([{"loss": name, **values} for name, values in document["losses"].items()]).set_index("loss")
        return pandas.json_normalize(document[section])
