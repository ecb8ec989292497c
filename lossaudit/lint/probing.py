"""What the probes of every rule group share: the tolerances, the 'inconclusive' outcome, the
isolation batches and the ratio helpers.

Design rules that keep a probe from firing on another rule's defect:

- Ratio probes compare two calls with the *same targets*, so any normaliser that depends on the
  targets cancels.
- Element probes use 'isolation' batches: one active element, every other element 'quiet'
  (|logit| = 14 on its correct side, reference loss < 1e-6); they first check that the quiet
  batch is quiet for this target, and report nothing when it is not.
- Gradient probes compare ratios of gradients within one call, so the normaliser cancels too.
- Probes that reason per element are skipped once the loss is found to be batch-coupled (FL008)
  or a softmax (FL003); the note says why (``-v``).

torch is imported inside the functions, so the rule groups that import this module (and the rule
texts beside their probes) import no torch.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from lossaudit.lint.kinds import BINARY, SOFT_TARGET_KINDS, SOFTMAX

if TYPE_CHECKING:
    from lossaudit.lint.battery import Context
    from lossaudit.lint.subject import Batch

RATIO_TOLERANCE = 0.03
COUPLING_TOLERANCE = 1e-5
GRADIENT_TOLERANCE = 1e-3


class Inconclusive(Exception):
    """A probe's precondition does not hold for this target; the reason becomes a note."""


SKIP_REASONS = {
    "FL003": "classes are coupled like a softmax (FL003): per-element ratios are not defined",
    "FL004": "the modulating factor is wrong without class weights already (FL004)",
    "FL005": "gamma does not reach the loss (FL005)",
    "FL008": "the loss is batch-coupled (FL008): per-element ratios are not defined",
    "FL011": "ignored rows already reach the loss (FL011)",
    "FL013": "repeated calls differ (FL013): two calls cannot be compared",
    "FL023": "the class weight changes the modulating factor (FL023)",
    "FL026": "the class weight has no effect (FL026)",
}


def skip_after(ctx: Context, *codes: str) -> None:
    """Stop a probe whose premise an earlier finding broke; the reason is listed under -v."""
    for code in codes:
        if ctx.fired(code):
            raise Inconclusive(f"skipped: {SKIP_REASONS[code]}")


def close(observed: float, expected: float, tolerance: float = RATIO_TOLERANCE) -> bool:
    return math.isfinite(observed) and abs(observed - expected) <= tolerance * abs(expected)


def isolation(ctx: Context, active: str, value: float) -> Batch:
    """Sigmoid/binary batch with every element quiet but one: a positive (row 0, class 0) or a
    negative (row 5, class 0: a background row, or a row of class 1 when the convention has no
    background label) at logit ``value``; ``active='none'`` leaves all quiet."""
    import torch

    from lossaudit.lint.subject import QUIET, Batch

    if ctx.kind == BINARY:
        y = torch.tensor([1.0, 1.0, 0.0, 0.0, 1.0, 0.0])
        x = torch.where(y == 1, torch.tensor(QUIET), torch.tensor(-QUIET))
        if active == "positive":
            x[0] = value
        elif active == "negative":
            x[2] = value
        return Batch(x, y)
    classes = ctx.subject.num_classes
    y = torch.zeros(6, classes)
    for row in range(4):
        y[row, row % classes] = 1.0
    if not ctx.convention.has_background:
        y[4:, 1 % classes] = 1.0  # every row needs a class; column 0 of row 5 stays a negative
    x = torch.where(y == 1, torch.tensor(QUIET), torch.tensor(-QUIET))
    if active == "positive":
        x[0, 0] = value
    elif active == "negative":
        x[5, 0] = value
    return Batch(x, y)


def softmax_isolation(ctx: Context, active_row: int | None, target_probability: float = 0.5, predicted_logit: float | None = None) -> Batch:
    """Softmax rows with targets shifted by one (row i -> class i+1), all quiet (target logit 14)
    but ``active_row``, whose target gets probability ``target_probability`` or, with
    ``predicted_logit``, a logit 0 against another class at ``predicted_logit``."""
    import torch

    from lossaudit.lint.subject import QUIET, Batch

    classes = ctx.subject.num_classes
    rows = classes
    labels = (torch.arange(rows) + 1) % classes
    x = torch.zeros(rows, classes)
    x[torch.arange(rows), labels] = QUIET
    if active_row is not None:
        x[active_row] = 0.0
        target = int(labels[active_row])
        if predicted_logit is not None:
            x[active_row, (target + 1) % classes] = predicted_logit
        else:
            x[active_row, target] = math.log(target_probability * (classes - 1) / (1 - target_probability))
    return Batch(x, torch.nn.functional.one_hot(labels, classes).float())


def require_quiet(ctx: Context, active_total: float, quiet_batch: Batch, **overrides: object) -> None:
    quiet = ctx.total(quiet_batch, **overrides)
    if not (math.isfinite(active_total) and math.isfinite(quiet)) or abs(quiet) > 1e-3 * abs(active_total) or active_total == 0:
        raise Inconclusive(f"quiet elements are not quiet for this target (quiet {quiet:.3g} vs active {active_total:.3g})")


def reference_alpha_override(ctx: Context) -> dict:
    """alpha=0.25 for probes that are not about alpha, so a user's alpha of 0 or 1 (which zeroes a
    side on purpose) does not look like another defect."""
    from lossaudit.lint.subject import DEFAULT_ALPHA

    declared = ctx.subject.value("alpha", None)
    if ctx.subject.accepts("alpha") and isinstance(declared, (int, float)) and declared >= 0:
        return {"alpha": DEFAULT_ALPHA}
    return {}


def reference_total(ctx: Context, batch: Batch) -> float:
    """The reference's summed loss on ``batch``, under the calibrated reading of the target."""
    import torch

    from lossaudit.lint.subject import canonical_to_reference_input, reference_elements

    inputs, _ = ctx.subject.to_call(ctx.convention, batch, dtype=torch.float64, grad=False)
    return float(reference_elements(ctx.kind, canonical_to_reference_input(ctx.convention, inputs), batch.y.double(), ctx.params).sum())


SOFT_QUALITY = 0.6
"""The target of the active positive in factor probes of soft-target kinds (QFL, VFL)."""
FACTOR_POINTS = {"positive": "p = 0.8 and 0.3", "target class": "p = 0.8 and 0.3", "negative": "p = 0.2 and 0.6"}
"""The probabilities of the active element in the two batches of :func:`factor_ratios`."""


def side_text(side: str) -> str:
    return "the target class" if side == "target class" else side + "s"


def factor_ratios(ctx: Context, **overrides: object) -> dict[str, tuple[float, tuple[Batch, Batch]]]:
    """Per side ('positive' and 'negative', or the softmax 'target class'): the target's loss ratio
    between two isolation batches whose active element sits at the two probabilities of
    :data:`FACTOR_POINTS`, and the two batches (a QFL/VFL positive of quality
    :data:`SOFT_QUALITY`). Inconclusive when quiet elements are not quiet."""
    if ctx.kind == SOFTMAX:
        sides = {"target class": [softmax_isolation(ctx, 0, p) for p in (0.8, 0.3)]}
        quiet = softmax_isolation(ctx, None)
    else:
        sides = {
            side: [isolation(ctx, side, math.log(p / (1 - p))) for p in (p_a, p_b)] for side, (p_a, p_b) in (("positive", (0.8, 0.3)), ("negative", (0.2, 0.6)))
        }
        quiet = isolation(ctx, "none", 0.0)
        if ctx.kind in SOFT_TARGET_KINDS:
            for batch in sides["positive"]:
                batch.y[0, 0] = SOFT_QUALITY
    ratios = {}
    for side, batches in sides.items():
        totals = [ctx.total(batch, **overrides) for batch in batches]
        require_quiet(ctx, totals[1], quiet, **overrides)
        ratios[side] = (totals[0] / totals[1] if totals[1] else math.inf, (batches[0], batches[1]))
    return ratios
