"""Alpha, the balancing weight: a constant alpha (FL001), an inverted one (FL002), a per-class
alpha taken by the wrong index (FL010), and a library's documented reading of alpha (FL020)."""

from __future__ import annotations

import ast
import math
from typing import TYPE_CHECKING, Any

from lossaudit.lint.anchors import mentions, product_mentioning
from lossaudit.lint.kinds import (
    BINARY,
    CENTERNET,
    NEGATIVE_ALPHA_KINDS,
    NO_ALPHA,
    SCALAR_ALPHA_KINDS,
    SIGMOID,
    SOFTMAX,
    VFL,
    VFL_ALPHA,
)
from lossaudit.lint.peers import DEPARTURES
from lossaudit.lint.probing import (
    RATIO_TOLERANCE,
    Inconclusive,
    close,
    isolation,
    require_quiet,
    skip_after,
    softmax_isolation,
)
from lossaudit.lint.registry import Rule, RuleGroup

if TYPE_CHECKING:
    from lossaudit.lint.battery import Context
    from lossaudit.lint.subject import Batch

group = RuleGroup("alpha")

alpha_product = product_mentioning("alpha")


def alpha_index(node: ast.AST) -> bool:
    return isinstance(node, ast.Subscript) and mentions(node.value, "alpha") or alpha_product(node)


def alpha_assignment(node: ast.AST) -> bool:
    return isinstance(node, ast.Assign) and any(mentions(target, "alpha") for target in node.targets)


group.rule(
    Rule(
        "FL001",
        "constant-alpha",
        "error",
        "alpha does not balance: it multiplies positives and negatives (or every class) alike, or its default removes one side entirely",
        "Focal loss balances positives against negatives with alpha_t = alpha*y + (1 - alpha)*(1 - y). "
        "A scalar alpha that multiplies every element changes the loss scale (and the effective learning "
        "rate), not the balance: an error on a sigmoid loss. On a softmax loss a scalar alpha that multiplies "
        "every class alike is a warning: it rescales without balancing, and mmcv's softmax_focal_loss behaves "
        "the same (balancing a softmax needs a per-class alpha vector indexed by the target class). A two-level "
        "scalar alpha on a softmax (class 0, the background, weighted 1 - alpha and every other class alpha, as "
        "kornia and MONAI do) balances background against foreground: info, naming the convention. A default "
        "alpha that removes one side entirely (alpha=1 zeroes every negative, alpha=0 every positive; on a "
        "two-level softmax, class 0 or the rest) is a warning: whoever relies on the default trains on half the "
        "loss. An alpha the caller passes (--init alpha=1) is taken as meant.",
        "weight positives by alpha and negatives by 1 - alpha: alpha_t = alpha * y + (1 - alpha) * (1 - y), with a default alpha strictly between 0 and 1 (torchvision: 0.25)",
        "loss = alpha * (1 - p_t) ** gamma * ce",
        "alpha_t = alpha * targets + (1 - alpha) * (1 - targets)\nloss = alpha_t * (1 - p_t) ** gamma * ce",
        fixes=(
            (SOFTMAX, "pass a per-class alpha vector and weight each row by alpha[target], or drop alpha"),
            (CENTERNET, "CenterNet's heatmap loss takes no balancing weight: remove it (peaks are weighted by (1 - p)^2, the rest by p^2 (1 - gt)^4)"),
            *NO_ALPHA,
            VFL_ALPHA,
        ),
    ),
    anchor=(alpha_product,),
)
group.rule(
    Rule(
        "FL002",
        "alpha-inverted",
        "error",
        "negatives weighted by alpha or positives by 1 - alpha, alpha applied twice, or one side left unweighted",
        "With alpha = 0.25 the reference weights positives 0.25 and negatives 0.75 (the paper's setting). "
        "Swapping the sides, applying alpha twice (alpha**2) or weighting only one side changes the "
        "balance the hyper-parameters were tuned for.",
        "use alpha_t = alpha * y + (1 - alpha) * (1 - y), applied once",
        "alpha_t = alpha * (1 - targets) + (1 - alpha) * targets",
        "alpha_t = alpha * targets + (1 - alpha) * (1 - targets)",
        fixes=(
            (SOFTMAX, "weight each row once by alpha[target] of a per-class alpha vector"),
            (CENTERNET, "CenterNet's heatmap loss takes no balancing weight: remove it (peaks are weighted by (1 - p)^2, the rest by p^2 (1 - gt)^4)"),
            *NO_ALPHA,
            VFL_ALPHA,
        ),
    ),
    anchor=(alpha_product,),
)
group.rule(
    Rule(
        "FL010",
        "alpha-misindexed",
        "error",
        "per-class alpha taken by the wrong index (prediction instead of target), cast to an integer type, or broadcast wrongly",
        "A per-class alpha balances classes only when each example is weighted by the alpha of its true "
        "class. Indexing by the predicted class, casting alpha to long (all zeros), or broadcasting a (C,) "
        "vector over the batch axis weights the wrong examples.",
        "weight each row by alpha[target]: alpha = alpha.to(logits.dtype)[targets]",
        "at = self.alpha[logits.argmax(dim=1)]",
        "at = self.alpha.to(logits.dtype)[targets]",
        fixes=(
            (SIGMOID, "index a per-class alpha by class column: alpha_t = alpha[c] * y + (1 - alpha[c]) * (1 - y), with alpha cast to the logits' dtype"),
            (BINARY, "use one scalar alpha for the positive term and 1 - alpha for the negative term"),
            (CENTERNET, "CenterNet's heatmap loss takes no per-class weights: remove them"),
            *NO_ALPHA,
            (VFL, "Varifocal's alpha is one scalar for the negatives: alpha * p ** gamma"),
        ),
    ),
    anchor=(alpha_index,),
)
group.rule(
    Rule(
        "FL020",
        "peer-convention",
        "info",
        "follows a library's documented convention that departs from the focal-loss paper (kornia/MONAI class-0 alpha, MONAI positives-only alpha)",
        "Some libraries document a convention that differs from the paper: kornia and MONAI weight softmax "
        "class 0 by 1 - alpha and every other class by alpha (class 0 is the background), and MONAI's "
        "per-class alpha on a sigmoid loss weights positives only. The target follows that library, so this "
        "is not a defect; the finding names the library and the difference.",
        "keep the convention knowingly, or pass a per-class alpha vector to balance classes as the paper does",
        "FL = -alpha_t (1 - q_y)^gamma log q_y, alpha_t = 1 - alpha if y == 0 else alpha   # class 0 is background",
        "FL = -alpha[y] (1 - q_y)^gamma log q_y   # a per-class alpha vector",
        fixes=(
            (SOFTMAX, "keep it if class 0 is your background; to balance classes as the paper does, pass a per-class alpha vector taken at the target class"),
            (SIGMOID, "keep it knowingly, or pass a scalar alpha for torchvision's alpha_t = alpha * y + (1 - alpha) * (1 - y)"),
            *NO_ALPHA,
            (VFL, "keep it knowingly, or weight positives by q and negatives by alpha * p ** gamma as VarifocalNet does"),
        ),
    ),
    anchor=(alpha_assignment, alpha_index),
)


@group.probe(50, "FL001", "FL002")
def probe_alpha_balance(ctx: Context) -> None:
    """FL001 / FL002 (sigmoid, binary): alpha must weight positives by alpha, negatives by 1 - alpha.

    Two isolation batches, one active positive and one active negative at p = 0.5, each called with
    alpha 0.25 and 0.75: the reference ratios loss(0.25) / loss(0.75) are 1/3 and 3. Varifocal's
    alpha weights negatives only: ratios 1 and 1/3.
    """
    import torch

    if ctx.kind not in SCALAR_ALPHA_KINDS + NEGATIVE_ALPHA_KINDS:
        return
    skip_after(ctx, "FL003")
    if not ctx.subject.accepts("alpha"):
        raise Inconclusive("the target has no alpha parameter")
    if isinstance(ctx.subject.value("alpha", None), (list, tuple, torch.Tensor)):
        raise Inconclusive("alpha is per class")
    ratios = _side_ratios(ctx)
    expected = {"positive": 1.0, "negative": 0.25 / 0.75} if ctx.kind in NEGATIVE_ALPHA_KINDS else {"positive": 0.25 / 0.75, "negative": 0.75 / 0.25}
    if all(close(ratios[side], expected[side]) for side in ratios):
        if ctx.kind in SCALAR_ALPHA_KINDS:
            _default_removing_a_side(ctx, {"positive": isolation(ctx, "positive", 0.0), "negative": isolation(ctx, "negative", 0.0)})
        return
    evidence = {"loss(alpha=0.25)/loss(alpha=0.75)": ratios, "expected": expected, "tolerance": RATIO_TOLERANCE}
    if ctx.kind in NEGATIVE_ALPHA_KINDS:
        shape = " (alpha applied twice: alpha**2)" if close(ratios["negative"], 1 / 9) else ""
        ctx.fire(
            "FL002",
            f"Varifocal's alpha must weight negatives only{shape}: loss(alpha=0.25)/loss(alpha=0.75) = {ratios['positive']:.4f} on a positive (expected 1.0000), "
            f"{ratios['negative']:.4f} on a negative (expected 0.3333)",
            {**evidence, "alpha_reading": None},
        )
        return
    if close(ratios["positive"], 1 / 3) and close(ratios["negative"], 1 / 3):
        ctx.fire(
            "FL001",
            f"alpha rescales positives and negatives alike: loss(alpha=0.25)/loss(alpha=0.75) = {ratios['negative']:.4f} on a negative (expected 3.0000)",
            {**evidence, "alpha_reading": "constant"},
        )
        return
    _fire_alpha_shape(ctx, ratios, evidence)


def _side_ratios(ctx: Context) -> dict[str, float]:
    """loss(alpha=0.25) / loss(alpha=0.75) of an isolation batch with one active positive, and of
    one with an active negative; FL001 on a whole batch where isolation is impossible."""
    ratios = {}
    for side in ("positive", "negative"):
        batch = isolation(ctx, side, 0.0)
        low, high = ctx.total(batch, alpha=0.25), ctx.total(batch, alpha=0.75)
        try:
            require_quiet(ctx, low, isolation(ctx, "none", 0.0), alpha=0.25)
        except Inconclusive:
            _constant_alpha_on_a_batch(ctx)
            raise
        if high == 0:
            raise Inconclusive(f"the {side} element has zero loss at alpha 0.75")
        ratios[side] = low / high
    return ratios


ALPHA_SHAPES = {
    (3.0, 1 / 3): ("positives are weighted by 1 - alpha and negatives by alpha (inverted)", "inverted"),
    (1 / 9, 9.0): ("alpha is applied twice (alpha**2)", None),
    (1.0, 1.0): ("alpha has no effect on either side", None),
}
"""FL002's description and alpha reading of the (positive, negative) ratios it recognises."""


def _fire_alpha_shape(ctx: Context, ratios: dict[str, float], evidence: dict) -> None:
    """FL002, describing the ratios by the shape of :data:`ALPHA_SHAPES` they fit, if any."""
    description, reading = next(
        (shape for (pos, neg), shape in ALPHA_SHAPES.items() if close(ratios["positive"], pos) and close(ratios["negative"], neg)), (None, None)
    )
    if description is None:
        sides = [side for side in ratios if close(ratios[side], 1.0)]
        description = f"the {sides[0]}s are left unweighted" if sides else "alpha weights the sides wrongly"
    ctx.fire(
        "FL002",
        f"{description}: loss(alpha=0.25)/loss(alpha=0.75) = {ratios['positive']:.4f} on a positive (expected 0.3333), {ratios['negative']:.4f} on a negative (expected 3.0000)",
        {**evidence, "alpha_reading": reading},
    )


def _constant_alpha_on_a_batch(ctx: Context) -> None:
    """FL001 when isolation is impossible (e.g. a clamp keeps quiet elements loud): on a batch with
    positives and negatives, loss(alpha=0.25) / loss(alpha=0.75) is 1/3 only if alpha multiplies
    every element alike (alpha_t gives (0.25 P + 0.75 N) / (0.75 P + 0.25 N), P, N > 0)."""
    batch = ctx.batch()
    low, high = ctx.total(batch, alpha=0.25), ctx.total(batch, alpha=0.75)
    if high and close(low / high, 1 / 3, 1e-4):
        ctx.fire(
            "FL001",
            f"alpha rescales every element alike: loss(alpha=0.25)/loss(alpha=0.75) = {low / high:.4f} on a batch of positives and negatives "
            "(alpha_t would give a ratio between 1/3 and 3 that depends on the mix)",
            {"loss(alpha=0.25)/loss(alpha=0.75)": low / high, "alpha_reading": "constant", "isolation": "impossible: quiet elements are not quiet"},
        )


REMOVED = 1e-6
"""A side is removed when its isolated loss at the default alpha is at most this share of its loss
at alpha 0.25 (the quiet elements around it contribute ~1e-17)."""


def _default_removing_a_side(ctx: Context, sides: dict[str, Batch], scheme: str = "alpha_t", reading: str = "") -> bool:
    """FL001 (warning): the target's *default* alpha zeroes one side's loss (alpha=1 every negative,
    alpha=0 every positive; on a two-level softmax, class 0 or the other classes). Judged by
    behaviour: a side's isolation batch has a loss at alpha 0.25 and none at the default (at most
    :data:`REMOVED` of it: the quiet elements' own loss). An alpha passed with --init is taken as
    meant. Returns whether it fired."""
    default = ctx.subject.value("alpha", None)
    if "alpha" in ctx.subject.init or isinstance(default, bool) or not isinstance(default, (int, float)):
        return False
    for side, batch in sides.items():
        at_default, at_reference = ctx.total(batch), ctx.total(batch, alpha=0.25)
        if math.isfinite(at_reference) and at_reference > 0 and abs(at_default) <= REMOVED * at_reference:
            removed = {"positive": "every positive", "negative": "every negative"}.get(side, side)
            ctx.fire(
                "FL001",
                f"the default alpha={default:g}{reading} removes {removed} from the loss: isolated, its loss is {at_default:.3g} at the default and {at_reference:.4g} at alpha=0.25; "
                "whoever relies on the default trains on one side only",
                {"default_alpha": default, "removed": side, "loss_at_default": at_default, "loss(alpha=0.25)": at_reference, "alpha_reading": scheme},
                severity="warning",
            )
            return True
    return False


TWO_LEVEL = "kornia's and MONAI's two-level alpha: class 0 (the background) weighted by 1 - alpha, every other class by alpha"
"""The softmax reading of a scalar alpha that balances background against foreground."""


@group.probe(60, "FL001", "FL002", "FL010", as_softmax=True)
def probe_softmax_alpha(ctx: Context) -> None:
    """FL001 / FL002 / FL010 (softmax): how a scalar alpha weights the classes, and whether a
    per-class alpha is taken at the target class.

    A scalar alpha, called at 0.25 and 0.75: on a batch with rows of every class, a ratio
    loss(0.25)/loss(0.75) of 1/3 means alpha multiplies every class alike: it only rescales (FL001
    warning; mmcv's softmax_focal_loss does the same); a ratio of 1 means alpha has no effect (FL002
    warning). Otherwise a row of class 0 and a row of class 1 are isolated: ratios 3 and 1/3 are the
    two-level alpha of kornia and MONAI (1 - alpha on class 0), which balances background against
    foreground (FL001 info naming it, unless FL020 already names the library), and its default is
    checked for removing class 0 or the rest (FL001 warning)."""
    import torch

    if ctx.kind != SOFTMAX or not ctx.subject.accepts("alpha"):
        return
    declared = ctx.subject.value("alpha", None)
    if isinstance(declared, (list, tuple, torch.Tensor)):
        _per_class_alpha(ctx, declared)
        return
    if not isinstance(declared, (int, float)) or declared < 0:
        raise Inconclusive("the target's alpha is not set to a scalar")
    batch = ctx.batch()
    low, high = ctx.total(batch, alpha=0.25), ctx.total(batch, alpha=0.75)
    ratio = low / high if high else math.inf
    evidence = {"loss(alpha=0.25)/loss(alpha=0.75)": ratio, "tolerance": 1e-4}
    if close(ratio, 1 / 3, 1e-4):
        ctx.fire(
            "FL001",
            f"a scalar alpha multiplies every class alike: loss(alpha=0.25)/loss(alpha=0.75) = {ratio:.4f} on a batch with rows of every class; "
            "it rescales the loss (and the effective learning rate) without balancing classes. mmcv's softmax_focal_loss behaves the same",
            {**evidence, "alpha_reading": "target"},
            severity="warning",
        )
        return
    if close(ratio, 1.0, 1e-4):
        ctx.fire(
            "FL002",
            f"alpha has no effect: loss(alpha=0.25)/loss(alpha=0.75) = {ratio:.4f} on a batch with rows of every class",
            {**evidence, "alpha_reading": None},
            severity="warning",
        )
        return
    _two_level_alpha(ctx)


def _two_level_alpha(ctx: Context) -> None:
    """FL001 (info) for kornia's and MONAI's two-level alpha, read from a row of class 0 and a row of
    class 1 (loss(0.25)/loss(0.75): 3 and 1/3), then its default checked for removing a side."""
    classes = ctx.subject.num_classes
    rows = {"class 0": classes - 1, "the other classes": 0}  # softmax_isolation: row i has target (i + 1) % C
    batches = {side: softmax_isolation(ctx, row, predicted_logit=2.0) for side, row in rows.items()}
    ratios = {}
    for side, batch in batches.items():
        low, high = ctx.total(batch, alpha=0.25), ctx.total(batch, alpha=0.75)
        require_quiet(ctx, low, softmax_isolation(ctx, None), alpha=0.25)
        ratios[side] = low / high if high else math.inf
    if not (close(ratios["class 0"], 3.0) and close(ratios["the other classes"], 1 / 3)):
        return
    if _default_removing_a_side(ctx, batches, "class-0", f" ({TWO_LEVEL})"):
        return
    if not (ctx.calibration.matched and ctx.params.scheme in DEPARTURES):
        ctx.fire(
            "FL001",
            f"alpha is {TWO_LEVEL}: loss(alpha=0.25)/loss(alpha=0.75) = {ratios['class 0']:.4f} on a row of class 0 and {ratios['the other classes']:.4f} on a row of class 1; "
            "it balances background against foreground, not class against class",
            {"loss(alpha=0.25)/loss(alpha=0.75)": ratios, "alpha_reading": "class-0", "tolerance": RATIO_TOLERANCE},
            severity="info",
        )


def _per_class_alpha(ctx: Context, declared: Any) -> None:
    """FL001 / FL010 for a per-class alpha vector: two active rows of different target classes."""
    import torch

    classes = ctx.subject.num_classes
    offset = classes - len(declared)  # 1 when the vector omits class 0 (MONAI without background)
    vector = [round(0.1 + 0.8 * c / max(classes - 1, 1), 4) for c in range(offset, classes)]
    probe_alpha = torch.tensor(vector) if isinstance(declared, torch.Tensor) else type(declared)(vector)
    totals = [ctx.total(softmax_isolation(ctx, row, predicted_logit=2.0), alpha=probe_alpha) for row in (0, 1)]
    targets = [(row + 1) % classes for row in (0, 1)]
    if totals == [0.0, 0.0]:
        ctx.fire("FL010", f"with alpha {vector} the loss is 0 for every row: alpha becomes 0 (an integer cast?)", {"alpha": vector, "losses": totals})
        return
    require_quiet(ctx, totals[0], softmax_isolation(ctx, None), alpha=probe_alpha)

    def at(target: int) -> float:
        return vector[target - offset]

    expected = at(targets[0]) / at(targets[1])
    observed = totals[0] / totals[1] if totals[1] else math.inf
    evidence = {"alpha": vector, "target_classes": targets, "observed_ratio": observed, "expected_ratio": expected, "tolerance": RATIO_TOLERANCE}
    if close(observed, expected):
        return
    if close(observed, 1.0):
        ctx.fire(
            "FL001",
            f"the per-class alpha weights every class alike: rows of classes {targets[0]} and {targets[1]} have loss ratio {observed:.4f} (expected alpha ratio {expected:.4f})",
            evidence,
        )
        return
    predicted = [(t + 1) % classes for t in targets]
    if close(observed, at(predicted[0]) / at(predicted[1])):
        cause = "alpha is indexed by the predicted class, not the target"
    elif close(observed, vector[0] / vector[1]):
        cause = "alpha is broadcast by row position, not by target class"
    else:
        cause = "alpha is not taken at the target class"
    ctx.fire(
        "FL010",
        f"{cause}: loss ratio of rows with targets {targets[0]} and {targets[1]} is {observed:.4f}, expected alpha[{targets[0]}]/alpha[{targets[1]}] = {expected:.4f}",
        evidence,
    )


@group.probe(210, "FL020")
def report_peer_departure(ctx: Context) -> None:
    """FL020 (info): the target reads alpha as a library documents it, not as the paper does."""
    if ctx.calibration.matched and ctx.params.scheme in DEPARTURES:
        ctx.fire("FL020", DEPARTURES[ctx.params.scheme], {"alpha_scheme": ctx.params.scheme, "alpha": ctx.params.alpha, "follows": ctx.follows()})
