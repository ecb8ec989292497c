"""Whether the output matches a reference at all: only once the inputs are read as the other of
logits and probabilities (FL016), or under no normalisation and no reading of alpha tested (FL014).
Both are checked after the battery, from what calibration found and what the findings explain."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, cast

from lossaudit.lint.anchors import calls
from lossaudit.lint.kinds import ALTERNATIVE_READINGS, BINARY, CENTERNET, FAMILY_BASES
from lossaudit.lint.registry import Rule, RuleGroup

if TYPE_CHECKING:
    from lossaudit.lint.battery import Context
    from lossaudit.lint.subject import Match, Params

group = RuleGroup("matching")

group.rule(
    Rule(
        "FL014",
        "no-reference-match",
        "error",
        "the output matches no reference under any normalisation tested",
        "lossaudit computed the reference losses (torchvision sigmoid focal, softmax focal, CenterNet) under "
        "every normalisation it knows (none, sum, mean over elements, mean over rows, sum per positive) and "
        "none matched, and no more specific rule explains the difference.",
        "compare the formula with the reference in lossaudit.losses; check --kind, --inputs and --init",
        "loss = alpha_t * (1 - p_t) ** gamma * ce / math.log(2)",
        "loss = alpha_t * (1 - p_t) ** gamma * ce",
    ),
)
group.rule(
    Rule(
        "FL016",
        "probability-logit-confusion",
        "error",
        "a sigmoid or softmax applied to probabilities, or a logit formula fed probabilities",
        "The function applies sigmoid/softmax to values that already are probabilities (or a logits formula "
        "like binary_cross_entropy_with_logits to probabilities), so the loss sees squashed inputs in "
        "[0.5, 0.73] and barely changes with the prediction.",
        "decide whether the function takes logits or probabilities, and apply sigmoid/softmax exactly once",
        "p = torch.sigmoid(probs)",
        "p = probs.clamp(eps, 1 - eps)",
        fixes=(
            (BINARY, "decide whether the function takes logits or probabilities, and apply sigmoid exactly once"),
            (CENTERNET, "CenterNet's loss takes probabilities: apply sigmoid once, in the model, and clamp to [1e-4, 1 - 1e-4]"),
        ),
    ),
    anchor=(calls("sigmoid", "softmax", "binary_cross_entropy_with_logits"),),
)

VALUE_RULES = frozenset({"FL001", "FL002", "FL003", "FL004", "FL005", "FL006", "FL008", "FL010", "FL013", "FL016", "FL023", "FL024"})
"""Rules that explain a value mismatch; FL014 fires only when none of them did."""


@group.probe(220, "FL016", final=True)
def report_confusion(ctx: Context) -> None:
    """FL016: the output matches the reference only once inputs are read as calibration found
    (a sigmoid applied to probabilities, a logit formula fed probabilities)."""
    if ctx.calibration.confusion:
        ctx.fire(
            "FL016",
            f"the output matches the reference only once {ctx.calibration.confusion}",
            {"confusion": ctx.calibration.confusion, "rel_error": ctx.calibration.match.error},
        )


@group.probe(230, "FL014", final=True)
def report_unexplained(ctx: Context) -> None:
    """FL014 when the output matches no reference and the findings do not account for it: no
    value rule fired, or only alpha rules whose reading of alpha (evidence 'alpha_reading') still
    leaves a mismatch."""
    from lossaudit.lint.subject import MATCH_TOLERANCE

    if ctx.calibration.matched or ctx.calibration.confusion:
        return
    explaining = [f for f in ctx.findings if f.code in VALUE_RULES and f.severity != "info"]
    if not explaining:
        _unexplained(ctx)
        return
    readings = {f.code: f.evidence.get("alpha_reading") for f in explaining}
    if len(readings) != 1 or None in readings.values():
        return  # a defect without a model of its own (the factor, a clamp, coupling) explains it
    ((code, scheme),) = readings.items()
    residual = _residual(ctx, replace(ctx.params, alpha_scheme=cast(str, scheme)))
    if residual.error > MATCH_TOLERANCE:
        ctx.fire(
            "FL014",
            f"beyond {code}, the output matches no reference: with alpha read as the loss applies it ({scheme}), closest is {residual.normalisation} "
            f"(relative error {residual.error:.3g}, tolerance {MATCH_TOLERANCE:g})",
            {
                "after": code,
                "alpha_reading": scheme,
                "closest_normalisation": residual.normalisation,
                "rel_error": residual.error,
                "tolerance": MATCH_TOLERANCE,
            },
        )


def _unexplained(ctx: Context) -> None:
    """FL014 when no value rule fired: naming the kind's alternative reading when it matches."""
    from lossaudit.lint.subject import MATCH_TOLERANCE

    match = ctx.calibration.match
    reading = _alternative_reading(ctx)
    if reading is not None:
        description, params, residual = reading
        ctx.fire(
            "FL014",
            f"the output matches no {ctx.kind} reference; it matches one with {description} ({residual.normalisation}, relative error {residual.error:.3g})",
            {"closest_normalisation": match.normalisation, "rel_error": match.error, "tolerance": MATCH_TOLERANCE, "matches_with": params.family},
        )
        return
    named = f"{ctx.kind} focal loss" if ctx.kind not in FAMILY_BASES else f"the {ctx.kind} reference"
    ctx.fire(
        "FL014",
        f"the output matches no reference: closest is {named} with {match.normalisation} (relative error {match.error:.3g}, tolerance {MATCH_TOLERANCE:g})",
        {"closest_normalisation": match.normalisation, "rel_error": match.error, "tolerance": MATCH_TOLERANCE},
    )


def _residual(ctx: Context, params: Params) -> Match:
    """How well a fresh call's output matches the reference read with ``params``."""
    from lossaudit.lint.subject import (
        canonical_to_reference_input,
        match_output,
        reference_elements,
    )

    batch = ctx.batch()
    out, inputs = ctx.subject.call(ctx.convention, batch)
    reference = reference_elements(ctx.kind, canonical_to_reference_input(ctx.convention, inputs.detach().double()), batch.y.double(), params)
    return match_output(ctx.kind, out, reference, batch.y, params)


def _alternative_reading(ctx: Context) -> tuple[str, Params, Match] | None:
    """(description, parameters, match) of the kind's alternative reading
    (:data:`~lossaudit.lint.kinds.ALTERNATIVE_READINGS`) when the output matches it."""
    from lossaudit.lint.subject import MATCH_TOLERANCE

    if ctx.kind not in ALTERNATIVE_READINGS or ctx.subject.num_classes < 2:
        return None
    description, change = ALTERNATIVE_READINGS[ctx.kind]
    params = change(ctx.params, ctx.subject.num_classes)
    residual = _residual(ctx, params)
    return (description, params, residual) if residual.error <= MATCH_TOLERANCE else None
