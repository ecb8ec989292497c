"""Class weights: a weight folded into the CE before p_t is recovered from it (FL023), and a weight
applied twice (FL024)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from lossaudit.lint.anchors import calls, product_mentioning
from lossaudit.lint.kinds import POS_WEIGHT_KINDS, SIGMOID, SOFTMAX, WEIGHTED_KINDS
from lossaudit.lint.probing import (
    FACTOR_POINTS,
    RATIO_TOLERANCE,
    Inconclusive,
    close,
    factor_ratios,
    isolation,
    require_quiet,
    side_text,
    skip_after,
    softmax_isolation,
)
from lossaudit.lint.registry import Rule, RuleGroup

if TYPE_CHECKING:
    import torch

    from lossaudit.lint.battery import Context

group = RuleGroup("weights")

group.rule(
    Rule(
        "FL023",
        "weighted-p_t",
        "error",
        "with class weights the modulating factor becomes (1 - p_t**w)**gamma: p_t recovered as exp(-CE) after the weights were folded into CE",
        "exp(-CE) recovers p_t only from an unweighted CE. Once a class weight w is inside the CE "
        "(F.cross_entropy(..., weight=w), BCE's weight= or pos_weight=), exp(-CE) is p_t**w, so the "
        "modulating factor is (1 - p_t**w)**gamma: a class weighted above 1 is focused as if it were "
        "misclassified, one below 1 as if it were easy, and the weights no longer just multiply the loss "
        "(fastai's FocalLoss and many ports).",
        "take p_t from the unweighted loss (or from the probabilities), then multiply by the class weight once",
        "ce = F.cross_entropy(logits, target, weight=self.weight, reduction='none')\np_t = torch.exp(-ce)   # p_t ** weight[target]\nloss = (1 - p_t) ** gamma * ce",
        "ce = F.cross_entropy(logits, target, reduction='none')\np_t = torch.exp(-ce)\nloss = self.weight[target] * (1 - p_t) ** gamma * ce",
        fixes=(
            (SIGMOID, "take p_t from the probabilities (p_t = p * y + (1 - p) * (1 - y)) or from the unweighted BCE, then multiply by the class weight once"),
        ),
    ),
    anchor=(calls("exp"),),
)
group.rule(
    Rule(
        "FL024",
        "double-weighting",
        "error",
        "a class weight reaches the loss twice: scaling one class's weight by k scales its loss by k**2",
        "A class weight passed to the loss (weight=, class_weight=, pos_weight=) is meant to multiply that "
        "class's loss once. Passing it into the CE/BCE and multiplying the result by it again, or adding a "
        "per-class alpha built from it on top of BCE's pos_weight, squares it: the classes it was tuned to "
        "balance are over-corrected.",
        "apply each class weight once: either inside the CE/BCE (weight=/pos_weight=) or as a multiplier afterwards, not both",
        "ce = F.cross_entropy(logits, target, weight=self.weight, reduction='none')\nloss = self.weight[target] * (1 - p_t) ** gamma * ce",
        "ce = F.cross_entropy(logits, target, reduction='none')\nloss = self.weight[target] * (1 - p_t) ** gamma * ce",
        fixes=((SIGMOID, "apply each class weight once: BCE's weight=/pos_weight= or a multiplier afterwards, not both"),),
    ),
    anchor=(product_mentioning("weight"), calls("where")),
)

WEIGHT_PARAMETERS = ("weight", "class_weight", "pos_weight")
"""Names of per-class weight vectors: ``weight`` (F.cross_entropy, kornia, MONAI), ``class_weight``
(mmdet), ``pos_weight`` (BCE's weight of the positive term, sigmoid losses only)."""
WEIGHT_FACTOR = 3.0
"""The weight a probe gives one class, every other class keeping weight 1."""


def _weight_parameter(ctx: Context) -> str:
    """The name of the target's per-class weight parameter; Inconclusive without one."""
    from lossaudit.lint.calibrate import error_text

    if ctx.kind not in WEIGHTED_KINDS:
        raise Inconclusive(f"class weights are probed on sigmoid and softmax focal losses, not on a {ctx.kind} loss")
    parameters = ctx.subject.signature.parameters if ctx.subject.signature is not None and not ctx.subject.is_instance else {}
    names = [name for name in WEIGHT_PARAMETERS if name in parameters and (name != "pos_weight" or ctx.kind in POS_WEIGHT_KINDS)]
    if not names:
        raise Inconclusive(f"the target has no per-class weight parameter ({', '.join(WEIGHT_PARAMETERS)})")
    if ctx.params.skip_class_0:
        raise Inconclusive("class 0 is not counted (include_background=False), so its weight cannot be probed")
    try:
        ctx.total(ctx.batch(), **{names[0]: _class_weights(ctx, None)})
    except (Exception, SystemExit) as error:
        raise Inconclusive(f"the target does not take a (C,) float tensor as {names[0]}: {error_text(error)}") from None
    return names[0]


def _class_weights(ctx: Context, heavy_class: int | None) -> torch.Tensor:
    """A ``(C,)`` weight vector of ones, ``heavy_class`` weighted :data:`WEIGHT_FACTOR`."""
    import torch

    weight = torch.ones(ctx.subject.num_classes)
    if heavy_class is not None:
        weight[heavy_class] = WEIGHT_FACTOR
    return weight


def _active_class(ctx: Context) -> int:
    """The class of the active element of the isolation batches: column 0 (sigmoid), the target of
    row 0 (softmax, whose targets are shifted by one)."""
    return 1 % ctx.subject.num_classes if ctx.kind == SOFTMAX else 0


@group.probe(80, "FL023")
def probe_weighted_p_t(ctx: Context) -> None:
    """FL023: a class weight must multiply the loss, not reshape its factor. The ratios of
    :func:`~lossaudit.lint.rules.focusing.probe_modulating_factor` (one active element at two
    probabilities; alpha and the normaliser cancel) are taken with uniform weights and with the
    active element's class weighted 3: a weight that multiplies leaves them unchanged; p_t
    recovered as exp(-CE) from a weighted CE is p_t**w, and the factor becomes (1 - p_t**w)**gamma.
    Skipped once the factor is wrong without weights (FL004)."""
    skip_after(ctx, "FL008", "FL003", "FL005", "FL004", "FL026")
    name = _weight_parameter(ctx)
    uniform = factor_ratios(ctx, **{name: _class_weights(ctx, None)})
    weighted = factor_ratios(ctx, **{name: _class_weights(ctx, _active_class(ctx))})
    checks = {side: (weighted[side][0], uniform[side][0]) for side in uniform}
    wrong = {side: values for side, values in checks.items() if not close(*values)}
    if not wrong:
        return
    side, (observed, expected) = next(iter(wrong.items()))
    ctx.fire(
        "FL023",
        f"the class weight changes the modulating factor: with {name}[{_active_class(ctx)}] = {WEIGHT_FACTOR:g} the loss ratio at {FACTOR_POINTS[side]} on {side_text(side)} is {observed:.4f}, "
        f"{expected:.4f} with uniform weights (p_t taken from a weighted loss is p_t**w)",
        {
            "weight_parameter": name,
            "class_weight": WEIGHT_FACTOR,
            "observed_ratio": {k: v[0] for k, v in checks.items()},
            "uniform_weight_ratio": {k: v[1] for k, v in checks.items()},
            "tolerance": RATIO_TOLERANCE,
        },
    )


@group.probe(90, "FL024")
def probe_double_weighting(ctx: Context) -> None:
    """FL024: weighting one class by k must scale that class's loss by k, not k**2. Two isolation
    batches with the same targets differ only in which row is active (a positive of class 0 or of
    class 1; softmax rows of target classes 1 and 2, equally wrong); the ratio of their losses is
    taken with uniform weights and with the first class weighted 3: it must grow 3-fold (9-fold
    when the weight is applied twice). Skipped once the weight changes the factor (FL023)."""
    skip_after(ctx, "FL008", "FL003", "FL023", "FL026")
    name = _weight_parameter(ctx)
    classes = ctx.subject.num_classes
    if classes < 3 and ctx.kind == SOFTMAX or classes < 2:
        raise Inconclusive("too few classes for two rows of different weighted classes")
    if ctx.kind == SOFTMAX:
        batches = [softmax_isolation(ctx, row, predicted_logit=2.0) for row in (0, 1)]
        quiet = softmax_isolation(ctx, None)
    else:
        batches = [isolation(ctx, "none", 0.0) for _ in range(2)]
        batches[0].x[0, 0] = batches[1].x[1, 1] = 0.0  # positives of classes 0 and 1
        quiet = isolation(ctx, "none", 0.0)
    ratios = []
    for weight in (_class_weights(ctx, None), _class_weights(ctx, _active_class(ctx))):
        totals = [ctx.total(batch, **{name: weight}) for batch in batches]
        require_quiet(ctx, totals[1], quiet, **{name: weight})
        ratios.append(totals[0] / totals[1])
    growth = ratios[1] / ratios[0] if ratios[0] else math.inf
    if close(growth, WEIGHT_FACTOR):
        return
    shape = f" = {WEIGHT_FACTOR:g}**2: the weight is applied twice" if close(growth, WEIGHT_FACTOR**2) else ""
    ctx.fire(
        "FL024",
        f"weighting class {_active_class(ctx)} by {WEIGHT_FACTOR:g} ({name}) scales its loss by {growth:.4f}, expected {WEIGHT_FACTOR:g}{shape}",
        {"weight_parameter": name, "class_weight": WEIGHT_FACTOR, "loss_growth": growth, "expected_growth": WEIGHT_FACTOR, "tolerance": RATIO_TOLERANCE},
    )
