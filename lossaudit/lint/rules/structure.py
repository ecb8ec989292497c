"""The structure of the loss: classes coupled by a softmax or background rows that add nothing
(FL003), and one example's loss depending on the rest of the batch (FL008)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from lossaudit.lint.anchors import calls
from lossaudit.lint.kinds import BINARY, CENTERNET, GHM, SIGMOID, SOFTMAX
from lossaudit.lint.probing import (
    COUPLING_TOLERANCE,
    Inconclusive,
    reference_alpha_override,
)
from lossaudit.lint.registry import Rule, RuleGroup

if TYPE_CHECKING:
    from lossaudit.lint.battery import Context

group = RuleGroup("structure")

group.rule(
    Rule(
        "FL003",
        "softmax-misuse",
        "error",
        "a softmax couples classes where per-class sigmoid is intended, or background (all-zero) rows contribute nothing",
        "A detection classifier is C independent binary problems: each class's loss depends on its own "
        "logit only, and a background anchor (an all-zero target row) is a negative for every class. A "
        "softmax makes classes compete and cannot express background, so background anchors add no loss.",
        "use sigmoid per class (binary_cross_entropy_with_logits), not softmax / cross_entropy",
        "p = torch.softmax(logits, dim=1)\nce = F.cross_entropy(logits, labels, reduction='none')",
        "p = torch.sigmoid(logits)\nce = F.binary_cross_entropy_with_logits(logits, targets, reduction='none')",
        fixes=(
            (SOFTMAX, "keep the softmax for single-label classification only (--kind softmax): every row needs one target class"),
            (BINARY, "compute each element's loss from its own logit: binary_cross_entropy_with_logits"),
            (CENTERNET, "compute each heatmap element's loss from its own probability"),
        ),
    ),
    anchor=(calls("softmax", "log_softmax", "cross_entropy", "CrossEntropyLoss", "nll_loss"),),
)
group.rule(
    Rule(
        "FL008",
        "batch-coupled",
        "error",
        "one example's loss depends on the others beyond a normaliser (e.g. p_t taken from an already averaged loss)",
        "p_t = exp(-BCE) computed from a loss that was already reduced over the batch gives every element "
        "the same modulating factor, taken from the batch average: focal loss no longer focuses.",
        "compute the element-wise loss with reduction='none', derive p_t per element, reduce last",
        "ce = F.binary_cross_entropy_with_logits(x, y)          # reduced: a batch mean\np_t = torch.exp(-ce)",
        "ce = F.binary_cross_entropy_with_logits(x, y, reduction='none')\np_t = torch.exp(-ce)  # exact for hard labels",
        fixes=(
            (SOFTMAX, "compute each row's loss with reduction='none', derive q_y per row, reduce last"),
            (CENTERNET, "compute each heatmap element's loss on its own, then sum and divide by the number of peaks"),
        ),
    ),
    anchor=(calls("exp"), calls("mean")),
)


@group.probe(20, "FL008", "FL003")
def probe_coupling(ctx: Context) -> None:
    """FL008 (all kinds) and FL003 (sigmoid): changing one logit must not change the gradient of
    any other element of the reference (a diagonal Hessian), except within a row for softmax.
    GHM-C is batch-coupled by design: its weights come from the batch's histogram of g."""
    import torch

    if ctx.kind == GHM:
        raise Inconclusive("GHM-C's weights depend on the whole batch by design")
    batch = ctx.batch()
    before = ctx.gradient(batch)
    changed = batch.clone()
    if ctx.kind == CENTERNET:
        changed.x[0, 0, 0, 0] = 0.5 if changed.x[0, 0, 0, 0] < 0.5 else 0.2
        other = torch.ones_like(before, dtype=torch.bool)
        other[0, 0, 0, 0] = False
        same_row = torch.zeros_like(other)
    elif ctx.kind == BINARY:
        changed.x[0] += 1.5
        other = torch.ones_like(before, dtype=torch.bool)
        other[0] = False
        same_row = torch.zeros_like(other)
    else:
        changed.x[0, 1] += 1.5
        other = torch.ones_like(before, dtype=torch.bool)
        other[0, 1] = False
        same_row = torch.zeros_like(other)
        same_row[0] = True
        same_row[0, 1] = False
    after = ctx.gradient(changed)
    scale = float(before.abs().max()) or 1.0
    cross = float(((after - before).abs() * (other & ~same_row)).max()) / scale
    within = float(((after - before).abs() * same_row).max()) / scale if same_row.any() else 0.0
    evidence = {"max_relative_gradient_change_other_rows": cross, "max_relative_gradient_change_same_row": within, "tolerance": COUPLING_TOLERANCE}
    if cross > COUPLING_TOLERANCE:
        ctx.fire(
            "FL008",
            f"changing one logit changes the gradient of other examples by up to {cross:.3g} (relative): each example's loss depends on the rest of the batch",
            evidence,
        )
    elif ctx.base == SIGMOID and within > COUPLING_TOLERANCE:
        ctx.fire(
            "FL003",
            f"changing one class's logit changes the gradient of the other classes of its row by up to {within:.3g} (relative): classes are coupled like a softmax",
            evidence,
            anchor="FL003",
        )


@group.probe(30, "FL003")
def probe_background_rows(ctx: Context) -> None:
    """FL003 (sigmoid): background rows (all-zero targets) must contribute loss. Two batches with
    the same targets differ only in the background rows' logits (-3 versus +3). Not checked when
    the kind is ambiguous: no reference matched and the loss is batch-coupled (FL008), the finding
    that holds whether it is read as sigmoid or softmax."""
    if ctx.base != SIGMOID:
        return
    if not ctx.convention.has_background:
        raise Inconclusive(f"the target is called with {ctx.convention.describe()}, which has no background rows")
    if ctx.fired("FL008") and not ctx.calibration.matched and not ctx.calibration.confusion:
        raise Inconclusive(
            "the kind is ambiguous (no reference matches and each row's loss depends on the batch, FL008): "
            "background rows exist only under the sigmoid reading, so FL008 is what holds under either"
        )
    batch = ctx.batch()
    background = batch.y.sum(dim=1) == 0
    confident, wrong = batch.clone(), batch.clone()
    confident.x[background] = -3.0
    wrong.x[background] = 3.0
    overrides = reference_alpha_override(ctx)
    low, high = ctx.total(confident, **overrides), ctx.total(wrong, **overrides)
    if math.isfinite(low) and abs(high - low) <= 1e-9 * max(abs(low), 1e-12):
        ctx.fire(
            "FL003",
            f"background rows (all-zero targets) contribute nothing: raising their logits from -3 to +3 leaves the loss at {low:.6g}",
            {"loss_confident_background": low, "loss_wrong_background": high},
        )
