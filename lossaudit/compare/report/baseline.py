"""Reports compared across runs: what moved between a baseline report and a new one.

``compare NEW --baseline OLD.json`` adds the changes to the report (section ``baseline``);
``lossaudit diff OLD.json NEW.json`` computes the same from two reports. A change is a share's move
in percentage points: each loss's share per class (matched by class name) and per difficulty bin
(matched by bin, when both reports have the same bins), and the findings that appeared or
disappeared. The section says what it compared (``compared``, ``classes_in_common``) and warns when
the baseline shares no class with the new report (``warnings``: probably other data).
``--fail-if-share-moves PCT`` gates on the largest move and says what it compared.

No torch, no numpy: reports are JSON documents.
"""

from __future__ import annotations

import json
from pathlib import Path

from lossaudit.errors import InputError
from lossaudit.io.textfiles import read_text

READABLE_SCHEMAS = (2, 3, 4, 5, 6, 7)
"""Report schema versions a baseline may have: 2 (rows and elements apart), 3 (``baseline``
section), 4 (gradient shares), 5 (rare classes by the data's own counts), 6 (recall, mistakes,
imbalance) and 7 (this one: a weighted dump's estimates and standard errors); the comparison reads
none of what changed."""


def read_report(path: Path) -> dict:
    """A ``compare --format json`` report to compare against.

    Raises:
        InputError: not JSON, not a compare report, or a schema version that lacks what the
            comparison needs (the message says how to get one).
    """
    try:
        document = json.loads(read_text(path, "a report"))
    except json.JSONDecodeError as error:
        raise InputError(f"{path}: not a JSON report ({error.msg} at line {error.lineno})") from None
    if not isinstance(document, dict) or "per_class" not in document or "schema_version" not in document:
        raise InputError(f"{path}: not a `lossaudit compare --format json` report (no schema_version/per_class)")
    version = document["schema_version"]
    if version not in READABLE_SCHEMAS:
        raise InputError(
            f"{path}: report schema_version {version}; this lossaudit reads {' and '.join(map(str, READABLE_SCHEMAS))} "
            "(re-run `lossaudit compare --format json` on the baseline's data)"
        )
    return document


def _moves(old_rows: list[dict], new_rows: list[dict], key: str) -> list[dict]:
    """Per row matched on ``key`` (present in both), each loss's share move (new - old)."""
    old_by_key = {row[key]: row for row in old_rows}
    moves = []
    for row in new_rows:
        old = old_by_key.get(row[key])
        if old is None:
            continue
        share = {
            loss: row["share"][loss] - old["share"][loss]
            for loss in row["share"]
            if loss in old["share"] and row["share"][loss] is not None and old["share"][loss] is not None
        }
        moves.append({key: row[key], "share": share})
    return moves


def changes(new: dict, old: dict, source: str) -> dict:
    """The ``baseline`` section: share moves per class and per difficulty bin, findings that
    appeared or disappeared, and the largest move (``{"points", "section", "row", "loss"}``)."""
    same_bins = [(b["g_low"], b["g_high"]) for b in new["per_difficulty"]] == [(b["g_low"], b["g_high"]) for b in old["per_difficulty"]]
    section = {
        "source": source,
        "schema_version": old["schema_version"],
        "per_class": _moves(old["per_class"], new["per_class"], "name"),
        "per_difficulty": _moves(old["per_difficulty"], new["per_difficulty"], "bin") if same_bins else [],
        "bins_match": same_bins,
        "findings": {
            "appeared": sorted({f["code"] for f in new["findings"]} - {f["code"] for f in old["findings"]}),
            "disappeared": sorted({f["code"] for f in old["findings"]} - {f["code"] for f in new["findings"]}),
        },
    }
    section.update(_coverage(new, old, section))
    section["largest_move"] = largest_move(section)
    return section


def _coverage(new: dict, old: dict, section: dict) -> dict:
    """What the comparison covers: ``classes_in_common`` (of ``classes_new``, ``classes_old``),
    ``bins_compared``, ``compared`` (in words, for the gate's message) and ``warnings`` (a baseline
    that shares no class with the new report is probably from other data)."""
    new_names, old_names = [c["name"] for c in new["per_class"]], {c["name"] for c in old["per_class"]}
    common = sum(name in old_names for name in new_names)
    bins = len(section["per_difficulty"])
    warnings = []
    if new_names and old_names and not common:
        warnings.append(
            f"the baseline shares no class with this report ({len(old_names)} classes there, {len(new_names)} here): "
            "it is probably from other data; per-class shares not compared"
        )
    compared = f"{common} of {len(new_names)} classes (the baseline has {len(old_names)}) and {bins} difficulty bin{'' if bins == 1 else 's'}" + (
        "" if section["bins_match"] else " (the bins differ)"
    )
    return {
        "classes_in_common": common,
        "classes_new": len(new_names),
        "classes_old": len(old_names),
        "bins_compared": bins,
        "compared": compared,
        "warnings": warnings,
    }


def largest_move(section: dict) -> dict | None:
    """The largest share move in absolute percentage points, and where it is."""
    best = None
    for name, key in (("per_class", "name"), ("per_difficulty", "bin")):
        for row in section[name]:
            for loss, move in row["share"].items():
                if best is None or abs(100 * move) > abs(best["points"]):
                    best = {"points": 100 * move, "section": name, "row": row[key], "loss": loss}
    return best


def describe_move(move: dict) -> str:
    """``"focal's share of difficulty bin 9"``."""
    where = {"per_class": "class", "per_difficulty": "difficulty bin"}[move["section"]]
    return f"{move['loss']}'s share of {where} {move['row']}"


def moved_too_far(section: dict, threshold_points: float | None) -> bool:
    """Whether the largest move reaches ``threshold_points`` (``--fail-if-share-moves``)."""
    move = section["largest_move"]
    return threshold_points is not None and move is not None and abs(move["points"]) >= threshold_points


def move_sentence(section: dict, threshold_points: float | None, since: bool = False) -> str | None:
    """The largest move when it reaches ``threshold_points`` (:func:`moved_too_far`), else None:
    ``"focal's share of class cat moved -12.3 points (compared 2 of 2 classes)"``; with ``since``,
    the baseline's source before the parenthesis (``"... points since early.json (compared ...)"``)."""
    if not moved_too_far(section, threshold_points):
        return None
    move = section["largest_move"]
    source = f" since {section['source']}" if since else ""
    compared = f" (compared {section['compared']})" if "compared" in section else ""
    return f"{describe_move(move)} moved {move['points']:+.1f} points{source}{compared}"


def render_changes(section: dict) -> str:
    """The changes as text tables in signed percentage points (the default five losses fit 80 columns)."""
    lines = [f"Since the baseline {section['source']} (loss shares, percentage points)"]
    lines += [f"  warning: {warning}" for warning in section.get("warnings", [])]
    if "compared" in section:
        lines.append(f"  compared: {section['compared']}")
    for name, key, label in (("per_class", "name", "class"), ("per_difficulty", "bin", "g bin")):
        rows = section[name]
        if not rows:
            if name == "per_difficulty" and not section["bins_match"]:
                lines.append("  per difficulty: the reports' bins differ (--bins); not compared")
            continue
        losses = list(rows[0]["share"])
        width = max(len(label), *(len(str(row[key])) for row in rows))
        columns = [max(len(loss), 6) for loss in losses]
        lines.append("  " + f"{label:<{width}}  " + "  ".join(f"{loss:>{c}}" for loss, c in zip(losses, columns)))
        for row in rows:
            cells = (f"{100 * row['share'][loss]:>+{c}.1f}" if loss in row["share"] else f"{'—':>{c}}" for loss, c in zip(losses, columns))
            lines.append("  " + f"{str(row[key]):<{width}}  " + "  ".join(cells))
    found = section["findings"]
    lines.append(f"  findings appeared: {', '.join(found['appeared']) or 'none'}; disappeared: {', '.join(found['disappeared']) or 'none'}")
    move = section["largest_move"]
    if move is not None:
        lines.append(f"  largest move: {move['points']:+.1f} points, {describe_move(move)}")
    return "\n".join(lines) + "\n"
