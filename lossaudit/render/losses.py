"""``lossaudit losses``: every loss of the registry with its family, defaults and parameters, as
text, a markdown table (the README's, checked by the tests) or JSON. Imports neither torch nor
numpy."""

from __future__ import annotations

import json

from lossaudit.losses.registry import LINT_KINDS, LOSSES, PARAMS
from lossaudit.losses.spec import Param, PerClassParam, except_heatmaps


def _default(param: Param | PerClassParam) -> str:
    return "none" if param.default is None else f"{param.default:g}"


def _used_by(name: str) -> list[str]:
    return [loss for loss, spec in LOSSES.items() if name in spec.params]


def _cell(text: str) -> str:
    """Text for a markdown table cell: ``|`` escaped."""
    return text.replace("|", "\\|")


def _when(spec) -> str:
    if spec.default_when is None:
        return "when asked for"
    if spec.default_when is except_heatmaps:
        return "except on heatmaps"
    return f"on {spec.default_on}" if spec.default_on else "always"


def installed() -> list[dict]:
    """The losses installed packages offer through the ``lossaudit.losses`` entry points, read
    from their metadata (none is imported): name, target, distribution."""
    from lossaudit.losses.user import entry_points

    return [
        {"name": name, "target": point.value, "package": getattr(getattr(point, "dist", None), "name", None)} for name, point in sorted(entry_points().items())
    ]


def document() -> dict:
    """The listing as plain data (``--format json``)."""
    return {
        "installed": installed(),
        "losses": [
            {"id": loss, "family": spec.family, "default": _when(spec), "parameters": list(spec.params), "lint_kind": spec.lint_kind, "summary": spec.summary}
            for loss, spec in LOSSES.items()
        ],
        "parameters": [
            {
                "option": param.option,
                "key": param.key,
                "keyword": name,
                "default": param.default,
                "allowed": param.bounds.expected(param.integer),
                "per_class": isinstance(param, PerClassParam),
                "losses": _used_by(name),
                "help": param.help,
            }
            for name, param in PARAMS.items()
        ],
        "lint_kinds": [{"kind": kind.name, "base": kind.base, "summary": kind.summary} for kind in LINT_KINDS.values()],
    }


def render_markdown() -> str:
    """Three tables: the losses, their parameters, the lint kinds."""
    lines = ["| loss | family | computed by default | parameters | what it is |", "| --- | --- | --- | --- | --- |"]
    for loss, spec in LOSSES.items():
        options = ", ".join(f"`{PARAMS[name].option}`" for name in spec.params) or "—"
        lines.append(f"| `{loss}` | {spec.family} | {_when(spec)} | {options} | {_cell(spec.summary)} |")
    lines += ["", "| option (configuration key) | default | allowed | losses | meaning |", "| --- | --- | --- | --- | --- |"]
    for name, param in PARAMS.items():
        allowed = param.bounds.expected(param.integer) + (", one per class: a comma list or a file" if isinstance(param, PerClassParam) else "")
        losses = ", ".join(f"`{loss}`" for loss in _used_by(name))
        lines.append(f"| `{param.option} {_cell(param.metavar)}` (`{param.key}`) | {_default(param)} | {allowed} | {losses} | {_cell(param.help)} |")
    lines += ["", "| `lint --kind` | probes shared with | what it audits |", "| --- | --- | --- |"]
    lines += [f"| `{kind.name}` | `{kind.base}` | {_cell(kind.summary)} |" for kind in LINT_KINDS.values()]
    return "\n".join(lines) + "\n"


def render_text() -> str:
    """The listing for a terminal: one block per loss, then the lint kinds."""
    out = []
    for loss, spec in LOSSES.items():
        out.append(f"{loss} ({spec.family}, {_when(spec)}): {spec.summary}")
        for name in spec.params:
            param = PARAMS[name]
            out.append(f"    {param.option} {param.metavar}  default {_default(param)}; {param.bounds.expected(param.integer)}")
    offered = installed()
    if offered:
        out.append("")
        out.append("installed (entry points lossaudit.losses; compare --losses NAME):")
        out += [f"    {item['name']} = {item['target']}" + (f"  (from {item['package']})" if item["package"] else "") for item in offered]
    out.append("")
    out.append("lint kinds: " + ", ".join(f"{kind.name} ({kind.summary})" for kind in LINT_KINDS.values()))
    return "\n".join(out) + "\n"


def render(format: str) -> str:
    if format == "json":
        return json.dumps(document(), indent=2) + "\n"
    return render_markdown() if format == "markdown" else render_text()
