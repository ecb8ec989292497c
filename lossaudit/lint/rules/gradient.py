"""Numerics and gradients: a clamp that zeroes the gradient of confidently wrong examples (FL006),
inf or NaN for finite inputs (FL007), gradients that differ from the reference's (FL009), and
float16 / bfloat16 inputs that fail or deviate (FL017)."""

from __future__ import annotations

import ast
import math
from typing import TYPE_CHECKING, cast

from lossaudit.lint.anchors import calls
from lossaudit.lint.kinds import BINARY, CENTERNET, SOFTMAX
from lossaudit.lint.probing import (
    GRADIENT_TOLERANCE,
    Inconclusive,
    isolation,
    skip_after,
)
from lossaudit.lint.registry import Rule, RuleGroup

if TYPE_CHECKING:
    import torch

    from lossaudit.lint.battery import Context
    from lossaudit.lint.subject import Batch

group = RuleGroup("gradient")


def log_of_squash(node: ast.AST) -> bool:
    return calls("log")(node) and any(
        calls("sigmoid", "softmax")(arg) or any(calls("sigmoid", "softmax")(n) for n in ast.walk(arg)) for arg in cast(ast.Call, node).args
    )


def detached(node: ast.AST) -> bool:
    return calls("detach", "no_grad")(node) or isinstance(node, ast.Attribute) and node.attr == "data"


def tiny_or_huge_constant(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and isinstance(node.value, float) and node.value != 0 and (abs(node.value) < 1e-7 or abs(node.value) > 6e4)


group.rule(
    Rule(
        "FL006",
        "saturated-gradient",
        "error",
        "a clamp zeroes the gradient of confidently wrong examples (logits clamped like probabilities, hard probability clamps)",
        "Clamping logits to [eps, 1 - eps] as if they were probabilities, or clamping probabilities to a "
        "wide range like [0.05, 0.95], makes the gradient exactly zero for the examples the model gets "
        "most wrong — the ones focal loss exists to learn from. Their gradient relative to in-range "
        "examples' must stay above 1e-3 of the reference's, probed at p_t near 6e-6 (a softmax row; a "
        "sigmoid logit 6, then 12 on the wrong side where the modulating factor is right): a clamp at 1e-5 "
        "or wider fires, one at 1e-6 or below (an eps, FL009's allowance) does not.",
        "compute from logits with binary_cross_entropy_with_logits / logsigmoid; clamp probabilities only by a tiny eps (torch.finfo(dtype).eps)",
        "logits = logits.clamp(1e-4, 1 - 1e-4)",
        "ce = F.binary_cross_entropy_with_logits(logits, targets, reduction='none')",
        fixes=(
            (SOFTMAX, "compute from logits with log_softmax / cross_entropy; never clamp logits, and clamp probabilities only by torch.finfo(dtype).eps"),
            (CENTERNET, "clamp heatmap probabilities only to CenterNet's [1e-4, 1 - 1e-4]"),
        ),
    ),
    anchor=(calls("clamp", "clip", "clamp_", "clamp_min", "clamp_max", "clip_"),),
)
group.rule(
    Rule(
        "FL007",
        "non-finite",
        "error",
        "inf or NaN in loss or gradient for finite inputs, logits up to ±100 in float32",
        "log(sigmoid(x)) underflows to log(0) = -inf for large |x|; 0 * inf in the backward pass gives NaN. One such element poisons the whole batch.",
        "use the stable forms: F.logsigmoid, F.binary_cross_entropy_with_logits",
        "loss = -targets * torch.log(torch.sigmoid(x)) - (1 - targets) * torch.log(1 - torch.sigmoid(x))",
        "loss = F.binary_cross_entropy_with_logits(x, targets, reduction='none')",
        fixes=(
            (SOFTMAX, "use F.log_softmax / F.cross_entropy instead of log(softmax(x))"),
            (CENTERNET, "clamp the probabilities to [1e-4, 1 - 1e-4] before taking logs, as CenterNet does"),
        ),
    ),
    anchor=(log_of_squash, calls("log")),
)
group.rule(
    Rule(
        "FL009",
        "gradient-mismatch",
        "warning",
        "values match the reference but gradients do not (e.g. a detached modulating factor)",
        "The forward value is right but the backward pass differs from the reference: typically "
        "(1 - p_t).detach() or a factor computed under no_grad, which removes part of focal loss's gradient. "
        "Tolerance: max |gradient - reference| / max |reference| up to 1e-3. What float32 and a small eps "
        "cause stays far below it: the gradient batch keeps every probability in [0.01, 0.99] (a softmax's "
        "at least half of 1/C past 50 classes), so an eps <= 1e-6 added inside a log, or a clamp of "
        "probabilities at 1e-6, moves no gradient by more than 1e-4 relative (eps / p), and float32 "
        "rounding by about 1e-6. A softmax loss that takes probabilities is compared along the simplex "
        "(each row's mean gradient removed): moving every probability of a row alike leaves the simplex, "
        "and a loss may differ there. A clamp that zeroes the gradient of confidently wrong examples is "
        "FL006's.",
        "let gradients flow through the modulating factor, as the reference does",
        "loss = (1 - p_t).detach() ** gamma * ce",
        "loss = (1 - p_t) ** gamma * ce",
    ),
    anchor=(detached,),
)
group.rule(
    Rule(
        "FL017",
        "low-precision",
        "warning",
        "float16 / bfloat16 inputs fail or deviate beyond a dtype-scaled tolerance",
        "Under mixed precision the loss receives float16 or bfloat16 logits. Fixed epsilons below the "
        "dtype's resolution (1e-8 underflows in float16) and probability-space logs fail there.",
        "work from logits with the stable functions, or use torch.finfo(x.dtype).eps for clamps",
        "p = torch.sigmoid(x).clamp(min=1e-8)",
        "eps = torch.finfo(x.dtype).eps\np = torch.sigmoid(x).clamp(eps, 1 - eps)",
    ),
    anchor=(tiny_or_huge_constant,),
)


WRONG_LOGITS = (6.0, 12.0)
"""FL006's confidently wrong sigmoid elements: first at |logit| 6 (p_t = 2.5e-3), then, for a target
whose modulating factor and inputs are read right (no FL004, no FL016 confusion: a wrong factor or a
double sigmoid also starves them there), at |logit| 12 (p_t = 6.1e-6, as deep as the softmax row's
target): a clamp of probabilities at 1e-5 or wider zeroes their gradient and fires, one at 1e-6 or
below (torch.finfo(float32).eps) leaves it."""


def _wrong_and_inrange(ctx: Context, depth: float = WRONG_LOGITS[0]) -> tuple[Batch, torch.Tensor, torch.Tensor]:
    """A batch with confidently wrong elements (a sigmoid logit ``depth`` on the wrong side; a
    softmax row at -6 for the target against 6 for another class, p_t near 6e-6) and in-range ones
    (logits in [0.3, 0.6], untouched even by a clamp to [0, 1]); returns the masks of both."""
    import torch

    from lossaudit.lint.subject import Batch

    if ctx.kind == CENTERNET:
        batch = ctx.batch()
        batch.x.fill_(0.4)
        peaks = batch.y.eq(1)
        wrong = peaks.clone()
        batch.x[peaks] = 1e-3
        inrange = ~peaks & (batch.y < 0.5)
        return batch, wrong, inrange
    if ctx.base == SOFTMAX:
        classes = ctx.subject.num_classes
        labels = torch.arange(4) % classes
        x = torch.full((4, classes), 0.3)
        x[0, labels[0]], x[0, (labels[0] + 1) % classes] = -6.0, 6.0
        x[1, labels[1]] = 0.6
        wrong = torch.zeros_like(x, dtype=torch.bool)
        wrong[0, labels[0]] = True
        inrange = torch.zeros_like(wrong)
        inrange[1, labels[1]] = True
        return Batch(x, torch.nn.functional.one_hot(labels, classes).float()), wrong, inrange
    batch = isolation(ctx, "none", 0.0)
    batch.x.fill_(0.45)
    wrong = torch.zeros_like(batch.y, dtype=torch.bool)
    inrange = torch.zeros_like(wrong)
    if ctx.kind == BINARY:
        batch.x[0], batch.x[2] = -depth, depth
        wrong[0] = wrong[2] = True
        batch.x[1], batch.x[3] = 0.6, 0.3
        inrange[1] = inrange[3] = True
    else:
        batch.x[0, 0], batch.x[5, 0] = -depth, depth
        wrong[0, 0] = wrong[5, 0] = True
        batch.x[1, 1], batch.x[4, 0] = 0.6, 0.3
        inrange[1, 1] = inrange[4, 0] = True
    return batch, wrong, inrange


@group.probe(100, "FL006", as_softmax=True)
def probe_saturated_gradient(ctx: Context) -> None:
    """FL006: confidently wrong elements must keep a gradient. The ratio of their gradient to that
    of in-range elements (same call, so the normaliser cancels) must not collapse to zero: sigmoid
    elements at each depth of :data:`WRONG_LOGITS` (the deeper one only where no wrong factor or
    input confusion starves them too), softmax rows at p_t near 6e-6."""
    skip_after(ctx, "FL008", "FL003")
    depths = WRONG_LOGITS if ctx.base != SOFTMAX and ctx.kind != CENTERNET and not ctx.fired("FL004") and not ctx.calibration.confusion else WRONG_LOGITS[:1]
    for depth in depths:
        batch, wrong, inrange = _wrong_and_inrange(ctx, depth)
        grad = ctx.gradient(batch)
        reference = ctx.reference_gradient(batch)
        observed = float(grad[wrong].abs().min()) / max(float(grad[inrange].abs().max()), 1e-30)
        expected = float(reference[wrong].abs().min()) / float(reference[inrange].abs().max())
        if float(grad[inrange].abs().max()) == 0 and float(grad.abs().max()) == 0:
            raise Inconclusive("the gradient is zero everywhere")
        if observed < 1e-3 * expected:
            sigmoid = ctx.base != SOFTMAX and ctx.kind != CENTERNET
            ctx.fire(
                "FL006",
                f"the gradient of confidently wrong examples is {float(grad[wrong].abs().min()):.3g}: a clamp zeroes it "
                f"(relative to in-range examples {observed:.3g}, reference {expected:.3g})",
                {"wrong_to_inrange_gradient_ratio": observed, "reference_ratio": expected, **({"wrong_logit": depth} if sigmoid else {})},
            )
            return


@group.probe(110, "FL007")
def probe_non_finite(ctx: Context) -> None:
    """FL007: logits up to ±100 in float32 (centernet: probabilities at its clamp, 1e-4 and
    1 - 1e-4) must give a finite loss and a finite gradient."""
    import torch

    batch = ctx.batch()
    if ctx.kind == CENTERNET:
        batch.x = torch.where(batch.y.eq(1), torch.tensor(1e-4), torch.tensor(1 - 1e-4))
        batch.x[0, 0, 0, 0] = 1e-4
    else:
        extremes = torch.tensor([100.0, -100.0, 50.0, -50.0, 0.0])
        batch.x = extremes[torch.arange(batch.x.numel()) % 5].reshape(batch.x.shape)
    out, inputs = ctx.subject.call(ctx.convention, batch)
    value_finite = bool(torch.isfinite(out).all())
    grad_finite = True
    if out.requires_grad:
        (grad,) = torch.autograd.grad(out.sum(), inputs, allow_unused=True)
        grad_finite = grad is None or bool(torch.isfinite(grad).all())
    if not (value_finite and grad_finite):
        what = "the loss" if not value_finite else "the gradient"
        ctx.fire("FL007", f"{what} is not finite for logits of ±100 and ±50 (float32)", {"loss_finite": value_finite, "gradient_finite": grad_finite})


@group.probe(120, "FL009")
def probe_gradient_match(ctx: Context) -> None:
    """FL009: when the values match the reference, the gradients must match too."""
    import torch

    from lossaudit.lint.subject import (
        MATCH_TOLERANCE,
        canonical_to_reference_input,
        match_output,
        reference_elements,
    )

    if not ctx.calibration.matched or ctx.calibration.confusion:
        return
    batch = _moderate(ctx, ctx.batch())
    try:
        out, grad = ctx.output_and_gradient(batch)
    except Inconclusive as reason:
        ctx.fire("FL009", f"the values match the reference but no gradient reaches the inputs ({reason})", {})
        return
    inputs, _ = ctx.subject.to_call(ctx.convention, batch, dtype=torch.float64, grad=False)
    value = match_output(
        ctx.kind, out, reference_elements(ctx.kind, canonical_to_reference_input(ctx.convention, inputs), batch.y.double(), ctx.params), batch.y, ctx.params
    )
    if value.error > MATCH_TOLERANCE:
        raise Inconclusive(
            f"this call's values differ from the reference (relative error {value.error:.3g}) though calibration's matched: state carries over between calls"
        )
    reference = ctx.reference_gradient(batch)
    divisor = _divisor(ctx, batch)
    reference = reference / divisor
    along = ctx.base == SOFTMAX and ctx.convention.inputs == "probs"
    if along:  # probabilities on the simplex: only the gradient within it is defined by the values
        grad, reference = (g - g.mean(dim=1, keepdim=True) for g in (grad, reference))
    error = float((grad - reference).abs().max() / reference.abs().max())
    if error > GRADIENT_TOLERANCE:
        where = " along the simplex" if along else ""
        ctx.fire(
            "FL009",
            f"the values match the reference but the gradient differs{where} by {error:.3g} (relative, max over elements; tolerance {GRADIENT_TOLERANCE:g})",
            {
                "max_rel_gradient_error": error,
                "tolerance": GRADIENT_TOLERANCE,
                "probability_range": _probability_range(ctx, batch),
                **({"compared": "along the simplex"} if along else {}),
            },
        )


PROBABILITY_FLOOR = 0.01
"""FL009's gradient batch keeps every probability in [floor, 1 - floor] (a softmax's floor is at
most half of 1/C): an eps <= 1e-6 added inside a log then moves a gradient by at most eps / floor =
1e-4 relative, a tenth of GRADIENT_TOLERANCE."""


def _probabilities(ctx: Context, x: torch.Tensor) -> torch.Tensor:
    import torch

    return torch.softmax(x, dim=1) if ctx.base == SOFTMAX else torch.sigmoid(x)


def _moderate(ctx: Context, batch: Batch) -> Batch:
    """``batch`` with its logits scaled down (by 0.8 at a time) until every probability lies in
    [floor, 1 - floor], floor = min(PROBABILITY_FLOOR, 0.5 / C) for a softmax (CenterNet's batch holds
    probabilities in [0.05, 0.95] already)."""
    if ctx.kind == CENTERNET:
        return batch
    floor = _floor(ctx)
    for _ in range(60):
        p = _probabilities(ctx, batch.x)
        if float(p.min()) >= floor and float(p.max()) <= 1 - floor:
            break
        batch.x = batch.x * 0.8
    return batch


def _floor(ctx: Context) -> float:
    return min(PROBABILITY_FLOOR, 0.5 / max(ctx.subject.num_classes, 1)) if ctx.base == SOFTMAX else PROBABILITY_FLOOR


def _probability_range(ctx: Context, batch: Batch) -> list[float]:
    if ctx.kind == CENTERNET:
        return [float(batch.x.min()), float(batch.x.max())]
    p = _probabilities(ctx, batch.x)
    return [float(p.min()), float(p.max())]


def _divisor(ctx: Context, batch: Batch) -> float:
    from lossaudit.lint.subject import normalisers

    name = ctx.calibration.match.normalisation
    return 1.0 if name == "none" else normalisers(ctx.kind, batch.y, ctx.params)[name]


@group.probe(180, "FL017")
def probe_low_precision(ctx: Context) -> None:
    """FL017: float16 and bfloat16 inputs must run and stay within a dtype-scaled tolerance of
    float32 on the same (rounded) values: max(50 eps, 5 × the reference's own deviation)."""
    import torch

    from lossaudit.lint.calibrate import error_text
    from lossaudit.lint.subject import Batch

    batch = ctx.batch()
    if ctx.kind != CENTERNET:
        batch.x = (batch.x * 1.5).clamp(-6, 6)
    for dtype in (torch.float16, torch.bfloat16):
        rounded = Batch(batch.x.to(dtype).float(), batch.y)
        full, _ = ctx.subject.call(ctx.convention, rounded)
        full_value = float(full.detach().double().sum())
        try:
            low, _ = ctx.subject.call(ctx.convention, rounded, dtype=dtype)
            low_value = float(low.detach().double().sum())
        except (Exception, SystemExit) as error:
            name = str(dtype).removeprefix("torch.")
            ctx.fire_at_failure("FL017", f"{name} inputs fail: {error_text(error)}", error, {"dtype": name})
            return
        tolerance = _precision_tolerance(ctx, rounded, dtype)
        deviation = abs(low_value - full_value) / max(abs(full_value), 1e-12) if math.isfinite(low_value) else math.inf
        if deviation > tolerance:
            name = str(dtype).removeprefix("torch.")
            ctx.fire(
                "FL017",
                f"{name} inputs give {low_value:.6g} against {full_value:.6g} in float32 (relative deviation {deviation:.3g}, tolerance {tolerance:.3g})",
                {"dtype": name, "deviation": deviation, "tolerance": tolerance},
            )
            return


def _precision_tolerance(ctx: Context, batch: Batch, dtype: torch.dtype) -> float:
    import torch

    from lossaudit.lint.subject import canonical_to_reference_input, reference_elements

    params = ctx.params
    inputs, _ = ctx.subject.to_call(ctx.convention, batch, grad=False)
    full = reference_elements(ctx.kind, canonical_to_reference_input(ctx.convention, inputs.double()), batch.y.double(), params).sum()
    low_input = canonical_to_reference_input(ctx.convention, inputs.to(dtype))
    try:
        low = reference_elements(ctx.kind, low_input, batch.y.to(dtype), params).double().sum()
        own = abs(float(low - full)) / max(abs(float(full)), 1e-12)
    except RuntimeError:
        own = 0.0
    return max(50 * torch.finfo(dtype).eps, 5 * own)
