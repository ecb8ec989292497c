"""Render a comparison report as one self-contained HTML page (``compare --format html``).

The page holds what the text report holds — the summary, the Loaded lines, every table of
:func:`lossaudit.render.compare.sections`, the data findings and the changes since a baseline —
and, when matplotlib is installed, the plots of :func:`lossaudit.render.plots.compare_panels` as inline
SVG. Everything is inside the file: CSS in a ``<style>`` element, no script, no external URL, so it
reads offline, on a phone (tables scroll sideways in their own box, the plots shrink to the
screen) and on paper (``@media print``). Every text from the report is escaped.
"""

from __future__ import annotations

from html import escape

from lossaudit.render.compare import _finding_line, _loaded, sections
from lossaudit.render.layout import Section

STYLE = """
:root { color-scheme: light; --rule: #d0d7de; --muted: #57606a; --warn: #9a6700; }
* { box-sizing: border-box; }
body { margin: 0 auto; padding: 1rem; max-width: 72rem; font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1f2328; background: #fff; }
h1 { font-size: 1.4rem; margin: 0 0 .5rem; }
h2 { font-size: 1.15rem; margin: 1.6rem 0 .5rem; border-bottom: 1px solid var(--rule); padding-bottom: .2rem; }
ul { padding-left: 1.2rem; }
li { margin: .25rem 0; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: .15rem 1rem; margin: 0; }
dt { color: var(--muted); }
dd { margin: 0; overflow-wrap: anywhere; }
.table { overflow-x: auto; max-width: 100%; }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; font-size: .9rem; }
th, td { padding: .2rem .6rem; text-align: right; white-space: nowrap; border-bottom: 1px solid var(--rule); }
th:first-child, td:first-child { text-align: left; }
thead th { border-bottom: 2px solid #8c959f; }
tfoot td { font-weight: 600; border-top: 2px solid #8c959f; }
.note, .muted { color: var(--muted); font-size: .85rem; }
.warning { color: var(--warn); }
figure { margin: 1rem 0; }
figure svg { width: 100%; max-width: 50rem; height: auto; display: block; }
figcaption { color: var(--muted); font-size: .85rem; }
pre { overflow-x: auto; font-size: .85rem; background: #f6f8fa; padding: .5rem; }
@media (max-width: 40rem) { body { padding: .6rem; font-size: 14px; } dl { grid-template-columns: 1fr; } dt { margin-top: .3rem; } }
@media print {
  body { max-width: none; padding: 0; font-size: 10pt; }
  .table { overflow: visible; }
  table, figure, pre { break-inside: avoid; }
  h2 { break-after: avoid; }
  pre { white-space: pre-wrap; background: none; }
}
"""

PLOTS_NEED_THE_EXTRA = "The plots need matplotlib: pip install 'lossaudit[plot]', then run the command again."


def _table(section: Section) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in section.headers)
    body = "".join("<tr>" + "".join(f"<td>{escape(cell)}</td>" for cell in row) + "</tr>\n" for row in section.rows)
    foot = f"<tfoot><tr>{''.join(f'<td>{escape(cell)}</td>' for cell in section.total)}</tr></tfoot>" if section.total else ""
    note = f'<p class="note">{escape(section.note)}</p>' if section.note else ""
    return (
        f'<section><h2>{escape(section.title)}</h2>\n<div class="table"><table><thead><tr>{head}</tr></thead>'
        f"<tbody>\n{body}</tbody>{foot}</table></div>{note}</section>\n"
    )


def _plots(report: dict) -> str:
    """The inline SVG figures, or a note saying how to get them."""
    from lossaudit.render import plots

    if not plots.available():
        return f'<section><h2>Plots</h2><p class="note">{escape(PLOTS_NEED_THE_EXTRA)}</p></section>\n'
    figures = "".join(
        f"<figure>{plots.inline_svg(figure)}<figcaption>{escape(caption)}</figcaption></figure>\n" for caption, figure in plots.compare_panels(report)
    )
    return f"<section><h2>Plots</h2>\n{figures}</section>\n"


def render_html(report: dict, top: int | None = None, top_by: str | None = None, changes: str = "") -> str:
    """The report as an HTML document; ``top``/``top_by`` as for the text report, ``changes`` the
    text of :func:`lossaudit.compare.report.baseline.render_changes` (shown preformatted) or ""."""
    files = ", ".join(report["input"]["files"])
    head = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>lossaudit compare {escape(files)}</title>",
        f"<style>{STYLE}</style></head><body>",
    ]
    return "\n".join([*head, html_body(report, top, top_by, changes), "</body></html>"]) + "\n"


def html_fragment(body: str) -> str:
    """``body`` (the inside of a report page's ``<body>``) as one ``<div>`` that carries the page's
    style scoped to it: what a notebook shows (``_repr_html_``) without restyling the notebook."""
    return f'<div class="{FRAGMENT_CLASS}"><style>{scoped_style(STYLE, "." + FRAGMENT_CLASS)}</style>\n{body}</div>'


FRAGMENT_CLASS = "lossaudit-report"


def markdown_fragment(markdown: str) -> str:
    """A markdown report (``lint`` and ``sweep`` have no HTML format) as an :func:`html_fragment`:
    rendered by markdown-it (rich's own markdown parser, so no new dependency), tables on, raw HTML
    in the text escaped."""
    from markdown_it import MarkdownIt

    return html_fragment(MarkdownIt("commonmark", {"html": False}).enable("table").render(markdown))


def scoped_style(style: str, scope: str) -> str:
    """``style`` with every rule's selectors under ``scope`` (``body`` and ``:root`` become the scope itself)."""
    import re

    def scoped(match: re.Match) -> str:
        selectors = [selector.strip() for selector in match.group(1).split(",")]
        inside = [scope if selector in ("body", ":root") else f"{scope} {selector}" for selector in selectors]
        lead = match.group(1)[: len(match.group(1)) - len(match.group(1).lstrip())]
        return f"{lead}{', '.join(inside)} {{{match.group(2)}}}"

    return re.sub(r"([^{}@;]+?)\s*\{([^{}]*)\}", scoped, style)


def html_body(report: dict, top: int | None = None, top_by: str | None = None, changes: str = "") -> str:
    """The inside of the report page's ``<body>`` (see :func:`render_html`)."""
    files = ", ".join(report["input"]["files"])
    out = [f'<h1>lossaudit compare</h1><p class="muted">{escape(files)} · lossaudit {escape(report["lossaudit_version"])}</p>']
    if report["summary"]:
        items = "".join(f"<li>{escape(sentence['text'])}</li>\n" for sentence in report["summary"])
        out.append(f"<section><h2>Summary</h2><ul>\n{items}</ul></section>")
    loaded = "".join(f"<dt>{escape(label)}</dt><dd>{escape(text)}</dd>\n" for label, text in _loaded(report))
    out.append(f"<section><h2>Loaded</h2><dl>\n{loaded}</dl></section>")
    out.append(_plots(report))
    out += [_table(section) for section in sections(report, top, top_by)]
    if report["findings"]:
        items = "".join(f'<li class="{"warning" if f["level"] == "warning" else "info"}">{escape(_finding_line(f))}</li>\n' for f in report["findings"])
        out.append(f"<section><h2>Data findings</h2><ul>\n{items}</ul></section>")
    if changes:
        out.append(f"<section><h2>Since the baseline</h2><pre>{escape(changes)}</pre></section>")
    return "\n".join(out)
