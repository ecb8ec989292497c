"""What :func:`lossaudit.sweep` returns: the ``sweep --format json`` document, with the text report
for scripts and the HTML one for notebooks."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lossaudit.render.formatting import plural


@dataclass(frozen=True, repr=False)
class SweepReport:
    """A focal loss under every setting of a grid (``lossaudit sweep``): ``to_dict()`` is the
    ``--format json`` document (keys ``summary``, ``loss``, ``settings``, ``cumulative``, ...);
    ``print(report)`` or ``report.text(width=...)`` the text report; a notebook shows the markdown
    report as HTML."""

    document: Mapping[str, Any]

    @property
    def settings(self) -> list[dict[str, Any]]:
        """One dict per (gamma, alpha) setting: ``gamma``, ``alpha``, ``label`` and its shares."""
        return list(self.document["settings"])

    @property
    def summary(self) -> list[dict[str, Any]]:
        """The summary's sentences (``rule``, ``text``, ``numbers``)."""
        return list(self.document["summary"])

    def to_dict(self) -> dict[str, Any]:
        """The ``sweep --format json`` document."""
        return dict(self.document)

    def text(self, width: int | None = None) -> str:
        """The text report, ``width`` cells wide (None: as wide as its widest table)."""
        from lossaudit.sweep.render import render_text

        return render_text(dict(self.document), width)

    def __str__(self) -> str:
        return self.text()

    def __repr__(self) -> str:
        gammas = sorted({setting["gamma"] for setting in self.document["settings"]})
        return (
            f"<lossaudit SweepReport: {self.document['loss']}, {len(self.document['settings'])} settings "
            f"(gamma {', '.join(f'{gamma:g}' for gamma in gammas)}); {plural(len(self.document['summary']), 'summary sentence')}>"
        )

    def _repr_html_(self) -> str:
        """The markdown report as HTML (what a notebook shows)."""
        from lossaudit.render.html import markdown_fragment
        from lossaudit.sweep.render import render_markdown

        return markdown_fragment(render_markdown(dict(self.document)))
