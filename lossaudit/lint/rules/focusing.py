"""The focusing term: a modulating factor that is not (1 - p_t)^gamma (FL004), and a gamma that
does not reach the loss (FL005)."""

from __future__ import annotations

import ast
import math
from typing import TYPE_CHECKING

from lossaudit.lint.anchors import mentions, power
from lossaudit.lint.kinds import (
    ASL,
    CENTERNET,
    FAMILY_FACTORS,
    FOCUSING,
    GHM,
    LS_CE,
    QFL,
    SHIFTED_FACTOR_KINDS,
    SOFTMAX,
    UNFOCUSED_KINDS,
    VFL,
)
from lossaudit.lint.probing import (
    FACTOR_POINTS,
    RATIO_TOLERANCE,
    Inconclusive,
    close,
    factor_ratios,
    reference_total,
    side_text,
    skip_after,
)
from lossaudit.lint.registry import Rule, RuleGroup

if TYPE_CHECKING:
    from lossaudit.lint.battery import Context

group = RuleGroup("focusing")


def literal_power(node: ast.AST) -> bool:
    return isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow) and isinstance(node.right, ast.Constant)


def clip_assignment(node: ast.AST) -> bool:
    """An assignment whose value uses ASL's probability shift: ``xs_neg = (xs_neg + self.clip)...``."""
    return isinstance(node, ast.Assign) and mentions(node.value, "clip")


group.rule(
    Rule(
        "FL004",
        "modulating-factor",
        "error",
        "the factor is not (1 - p_t)^gamma: p instead of p_t, p_t^gamma, log-probabilities inside p_t, the wrong term on negatives",
        "The modulating factor must shrink the loss of well-classified examples: (1 - p_t)**gamma with "
        "p_t = p*y + (1 - p)*(1 - y) the probability of the true label. Using p for negatives, p_t**gamma, "
        "or building p_t from log-probabilities makes the factor grow where it should shrink.",
        "compute p_t = p * y + (1 - p) * (1 - y) from probabilities and use (1 - p_t) ** gamma",
        "loss = (1 - p) ** gamma * ce            # p, not p_t: negatives are not down-weighted",
        "p_t = p * targets + (1 - p) * (1 - targets)\nloss = (1 - p_t) ** gamma * ce",
        fixes=(
            (SOFTMAX, "take q_y = softmax(logits)[target] (a probability, not a log-probability) and use (1 - q_y) ** gamma"),
            (CENTERNET, "use -log(p) (1 - p)^2 at peaks (gt == 1) and -log(1 - p) p^2 (1 - gt)^4 elsewhere"),
            (QFL, "weight BCE(logits, y) by |y - p| ** beta, y the IoU quality at the positive's class column and 0 elsewhere, p = sigmoid(logits)"),
            (VFL, "take BCE(logits, q) against the quality q and weight positives by q, negatives by alpha * p ** gamma"),
            (
                ASL,
                "weight positives by (1 - p) ** gamma_pos and negatives by p_m ** gamma_neg with p_m = max(p - clip, 0): the shift lowers the negatives' probability and leaves the positives alone",
            ),
            (LS_CE, "label-smoothing cross-entropy has no modulating factor: use F.cross_entropy(logits, target, label_smoothing=epsilon)"),
            (GHM, "weight each element by N_valid / (the count of its bin of g = |sigmoid(logits).detach() - y|), divided by the number of non-empty bins"),
        ),
    ),
    anchor=(power,),
)
group.anchor(f"FL004:{ASL}", (clip_assignment, power))  # ASL's factor goes wrong where the shift is taken
group.rule(
    Rule(
        "FL005",
        "gamma-ignored",
        "error",
        "changing gamma does not change the loss",
        "The gamma argument does not reach the computation (a hard-coded exponent, a misspelt attribute, a shadowed name), so tuning it does nothing.",
        "use the gamma argument in the exponent",
        "self.gamma = gamma\n...\nloss = (1 - p_t) ** 2 * ce",
        "loss = (1 - p_t) ** self.gamma * ce",
        fixes=(
            (CENTERNET, "CenterNet's exponents are fixed at 2 and 4; a gamma argument must reach the exponent it names"),
            (QFL, "use the beta argument in the exponent: |y - p| ** beta"),
            (ASL, "use gamma_pos and gamma_neg in the exponents of the positives' and the negatives' weights"),
            (LS_CE, "use the smoothing argument where the smoothed targets are built"),
        ),
    ),
    anchor=(literal_power, power),
)


@group.probe(40, "FL005", as_softmax=True)
def probe_gamma(ctx: Context) -> None:
    """FL005: changing the focusing exponent (gamma; QFL's beta, ASL's gamma_neg) from 2 to 0.5
    must change the loss."""
    if ctx.kind in UNFOCUSED_KINDS:
        return
    name = FOCUSING.get(ctx.kind, "gamma")
    if not ctx.subject.accepts(name):
        raise Inconclusive(f"the target has no {name} parameter")
    batch = ctx.batch()
    at_two, at_half = ctx.total(batch, **{name: 2.0}), ctx.total(batch, **{name: 0.5})
    if at_two == 0 and at_half == 0:
        raise Inconclusive(f"the loss is 0 at both values of {name}")
    if math.isfinite(at_two) and abs(at_two - at_half) <= 1e-7 * max(abs(at_two), 1e-12):
        ctx.fire("FL005", f"changing {name} from 2 to 0.5 leaves the loss at {at_two:.6g}", {f"loss({name}=2)": at_two, f"loss({name}=0.5)": at_half})


@group.probe(70, "FL004", as_softmax=True)
def probe_modulating_factor(ctx: Context) -> None:
    """FL004: the factor must be (1 - p_t)^gamma. Isolation batches put one active element at two
    probabilities; the ratio of the two losses is fixed by the reference (alpha and the normaliser
    cancel; for a positive, (0.2^g ln 0.8) / (0.7^g ln 0.3)): positives at p = 0.8 and 0.3,
    negatives at p = 0.2 and 0.6."""
    if ctx.kind in UNFOCUSED_KINDS:
        return
    skip_after(ctx, "FL008", "FL003", "FL005")
    gamma = ctx.params.gamma
    checks = {side: (observed, reference_total(ctx, batches[0]) / reference_total(ctx, batches[1])) for side, (observed, batches) in factor_ratios(ctx).items()}
    wrong = {side: values for side, values in checks.items() if not close(*values)}
    if wrong:
        side, (observed, expected) = next(iter(wrong.items()))
        factor = FAMILY_FACTORS.get(ctx.kind, f"(1 - p_t)^{gamma:g}")
        ctx.fire(
            "FL004",
            f"the modulating factor is not {factor} on {side_text(side)}: loss ratio at {FACTOR_POINTS[side]} is {observed:.4f}, expected {expected:.4f}",
            {
                "observed_ratio": {k: v[0] for k, v in checks.items()},
                "expected_ratio": {k: v[1] for k, v in checks.items()},
                "gamma": gamma,
                "tolerance": RATIO_TOLERANCE,
            },
            anchor=f"FL004:{ctx.kind}" if ctx.kind in SHIFTED_FACTOR_KINDS else None,
        )
