"""Arguments that claim an effect: a ``reduction`` (or the legacy ``size_average``/``reduce``) that
does not reduce as it says (FL025), a per-class weight that changes nothing (FL026), and a
background or class-0 parameter that changes nothing (FL027).

Each probe calls the target with the argument set to each value it accepts and compares the
outputs with each other and, when calibration matched a reference, with the reference: ``sum``
must be the reference's summed loss (``mean`` times the count the calibrated normalisation names:
elements, rows or positives), ``none`` one loss per element (per row for softmax kinds), ``mean``
the summed loss over one of those counts. A value the target rejects on purpose (ValueError,
NotImplementedError, KeyError or an assert) is not accepted and is only noted.
"""

from __future__ import annotations

import ast
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from lossaudit.lint.anchors import calls, mentions
from lossaudit.lint.kinds import POS_WEIGHT_KINDS, SIGMOID, SOFTMAX, WEIGHTED_KINDS, base_kind
from lossaudit.lint.probing import Inconclusive
from lossaudit.lint.registry import Rule, RuleGroup

if TYPE_CHECKING:
    import torch

    from lossaudit.lint.battery import Context
    from lossaudit.lint.subject import Batch

group = RuleGroup("arguments")

REDUCTION_WORDS = ("reduction", "reduce", "size_average")


def reduction_branch(node: ast.AST) -> bool:
    """An ``if``/conditional expression on the reduction (``if self.reduction == 'mean'``,
    ``x.mean() if self.reduce else x``)."""
    return isinstance(node, (ast.If, ast.IfExp)) and any(mentions(node.test, word) for word in REDUCTION_WORDS)


def reduction_keyword(node: ast.AST) -> bool:
    """A call that passes the reduction on (``F.cross_entropy(..., reduction=self.reduction)``)."""
    return isinstance(node, ast.Call) and any(keyword.arg in REDUCTION_WORDS for keyword in node.keywords)


def weight_use(node: ast.AST) -> bool:
    """A call or product that takes a class weight (``F.cross_entropy(..., weight=w)``, ``loss * w``)."""
    if isinstance(node, ast.Call):
        return any(keyword.arg in WEIGHT_PARAMETERS for keyword in node.keywords)
    return isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mult) and (mentions(node.left, "weight") or mentions(node.right, "weight"))


group.rule(
    Rule(
        "FL025",
        "reduction-ignored",
        "error",
        "a reduction the loss accepts does not do what it says: 'sum' is not the summed loss (mean × count), 'none' is not one loss per element, or the legacy size_average/reduce flags change nothing",
        "A loss that takes reduction='mean' | 'sum' | 'none' promises three views of one set of per-element "
        "losses: 'none' returns them (one per element, or one per row for a softmax loss), 'sum' their sum, "
        "'mean' their sum over a count (the elements, the rows or the positives). Passing the reduction on to "
        "the CE before p_t = exp(-CE) is taken, reducing with .mean() whatever was asked, or falling off the end "
        "of forward for 'none' (returning None) breaks that: per-sample losses for hard-example mining come back "
        "as a scalar, a 'sum' meant to be divided by a positive count is already a mean. The legacy "
        "size_average=False (sum) and reduce=False (per element) flags are held to the same. lint calls the loss "
        "with each value and compares the outputs with each other and with the reference.",
        "compute the per-element loss with reduction='none' everywhere, then reduce it once at the end as the argument says, returning the unreduced tensor for 'none'",
        "ce = F.cross_entropy(logits, target, reduction=self.reduction)\np_t = torch.exp(-ce)\nreturn ((1 - p_t) ** self.gamma * ce).mean()",
        "ce = F.cross_entropy(logits, target, reduction='none')\nloss = (1 - torch.exp(-ce)) ** self.gamma * ce\nif self.reduction == 'mean':\n    return loss.mean()\nif self.reduction == 'sum':\n    return loss.sum()\nreturn loss",
    ),
    anchor=(reduction_keyword, reduction_branch, calls("mean")),
)
group.rule(
    Rule(
        "FL026",
        "class-weight-ignored",
        "error",
        "a per-class weight the loss accepts (weight, class_weight, pos_weight) changes nothing: weighting one class by 3 leaves the loss as it was",
        "A weight=, class_weight= or pos_weight= argument says that the loss of some classes counts more. "
        "When it is stored and never used, or used on a term that does not reach the result (a CE whose output "
        "is discarded, a branch that never runs), the classes the user meant to balance are not balanced and "
        "nothing says so. lint gives one class (a class present in the batch; for pos_weight, a class with "
        "positives) a weight of 3, every other class 1, and compares with uniform weights.",
        "apply the weight, once, to the loss that is returned",
        "def __init__(self, gamma=2, weight=None):\n    self.weight = weight           # stored ...\ndef forward(self, logits, target):\n    ce = F.cross_entropy(logits, target, reduction='none')   # ... never used",
        "ce = F.cross_entropy(logits, target, reduction='none')\nloss = (1 - torch.exp(-ce)) ** self.gamma * ce\nif self.weight is not None:\n    loss = loss * self.weight[target]",
        fixes=(
            (SOFTMAX, "multiply each row's loss by weight[target] once, in the loss that is returned"),
            (SIGMOID, "multiply column c by weight[c], or the positive term by pos_weight[c], once, in the loss that is returned"),
        ),
    ),
    anchor=(weight_use,),
)
group.rule(
    Rule(
        "FL027",
        "background-parameter-ignored",
        "error",
        "a background or class-0 parameter the loss accepts (include_background, a background weight or label) changes nothing",
        "include_background=False is meant to drop the background channel from the loss, a background weight "
        "to scale the background's share, a background label to say which class is background. A parameter "
        "that is stored and never read leaves the background in, weighted 1, whatever the user configured, and "
        "the imbalance it was set to correct stays. lint flips a boolean, doubles a weight (2.0 for a default "
        "of None or 0) or moves a label to another class, and compares the loss on a batch holding background "
        "rows and class 0.",
        "read the parameter in forward: drop channel 0 when include_background is False, multiply the background rows by the background weight",
        "def __init__(self, gamma=2, include_background=True):\n    self.include_background = include_background   # never read\n...\nreturn loss.mean()",
        "if not self.include_background:\n    loss = loss[:, 1:]\nreturn loss.mean()",
    ),
    anchor=(calls("mean", "sum"),),
)

REDUCTIONS = ("mean", "sum", "none")
REDUCTION_TOLERANCE = 1e-4
"""Relative error within which two reductions agree (sum = mean × count, sum = none summed), or one
agrees with the reference (as calibration's match)."""
REDUCTION_DEPARTURES: dict[str, tuple[str, tuple[str, ...], str]] = {
    "MONAI FocalLoss": (
        "monai",
        ("sum",),
        "MONAI's FocalLoss sums the per-channel means over the spatial dimensions, and on (N, C) input without a "
        "spatial dimension torch's mean over an empty list of dimensions averages everything, so its 'sum' is the mean there",
    ),
    "segmentation_models_pytorch FocalLoss": (
        "segmentation_models_pytorch",
        ("sum", "none"),
        "smp's FocalLoss reduces each class column on its own and then combines the classes, so its 'sum' and 'none' are per-class reductions",
    ),
}
"""Libraries whose own reductions depart from sum = mean × count and none = per element, by the
start of the convention's name (:mod:`~lossaudit.lint.peers`), with the library's package: the
library's own loss (:func:`is_library`) gets an info naming it when every problem found concerns
those reductions. A user's loss that merely computes the same values gets the error."""


def is_library(ctx: Context, package: str) -> bool:
    """Whether the target is ``package``'s own loss: defined in it, or a restatement whose
    docstring starts with the package's name (tests/fixtures/peer_losses.py)."""
    obj = ctx.subject.obj if not ctx.subject.is_instance else type(ctx.subject.obj)
    if (getattr(obj, "__module__", "") or "").partition(".")[0] == package:
        return True
    return (getattr(obj, "__doc__", "") or "").lstrip().startswith(package)


REJECTIONS = (ValueError, NotImplementedError, KeyError, AssertionError)
"""What a target raises when it does not accept a value on purpose."""
WEIGHT_PARAMETERS = ("weight", "class_weight", "class_weights", "pos_weight")
WEIGHT_FACTOR = 3.0
"""The weight the weight probe gives one class, every other class keeping 1."""
EFFECT_TOLERANCE = 1e-6
"""Relative change of the loss under which an argument is said to change nothing (float32 sums of
16 rows agree to about 1e-7)."""
BACKGROUND_FLAGS = ("include_background", "ignore_background", "use_background", "with_background")
BACKGROUND_WEIGHTS = ("background_weight", "bg_weight", "background_alpha", "bg_alpha", "weight_background")
BACKGROUND_LABELS = ("background", "background_label", "bg_label", "background_index", "bg_index", "background_class", "bg_class", "background_id", "bg_id")


def _declared(ctx: Context) -> set[str]:
    """The parameters lint can set on the target (none on a built instance)."""
    subject = ctx.subject
    if subject.is_instance or subject.signature is None:
        return set()
    return set(subject.signature.parameters) | set(subject.init)


@dataclass
class Outcome:
    """One call with an argument set: the output as rows (float64), or why there is none."""

    label: str
    out: torch.Tensor | None = None
    problem: str = ""
    rejected: str = ""

    @property
    def value(self) -> float:
        return float(self.out.sum()) if self.out is not None else math.nan

    def shown(self) -> object:
        """The value for the evidence: a scalar, or the shape and sum of a tensor."""
        if self.out is None:
            return self.problem or self.rejected
        if self.out.numel() == 1:
            return float(self.out.reshape(()))
        return {"shape": list(self.out.shape), "sum": float(self.out.sum())}


def _call(ctx: Context, batch: Batch, label: str, overrides: dict) -> Outcome:
    """Call a freshly built target with ``overrides`` on ``batch``."""
    from lossaudit.lint.calibrate import error_text
    from lossaudit.lint.subject import output_tensor

    leaf, targets = ctx.subject.to_call(ctx.convention, batch)
    try:
        loss = ctx.subject.build(**overrides)
        raw = ctx.subject.guarded(lambda: loss(*ctx.convention.arrange(leaf.clone(), targets.clone())))
    except REJECTIONS as error:
        return Outcome(label, rejected=error_text(error))
    except (Exception, SystemExit) as error:
        return Outcome(label, problem=f"raises {error_text(error)}")
    if raw is None:
        return Outcome(label, problem="returns None")
    try:
        out = output_tensor(raw)
    except TypeError as error:
        return Outcome(label, problem=str(error).replace("the loss returned", "returns"))
    return Outcome(label, out=ctx.convention.canonical_output(out).detach().double())


def _close(a: float, b: float) -> bool:
    return math.isfinite(a) and math.isfinite(b) and abs(a - b) <= REDUCTION_TOLERANCE * max(abs(b), 1e-12)


class _Reductions:
    """The counts and the reference a reduction is judged against, on one batch."""

    def __init__(self, ctx: Context, batch: Batch):
        import torch

        from lossaudit.lint.subject import canonical_to_reference_input, normalisers, reference_elements

        self.ctx = ctx
        self.batch = batch
        self.counts = {
            name.removeprefix("mean over ").removeprefix("sum per "): count
            for name, count in normalisers(ctx.kind, batch.y, ctx.params).items()
            if name != "sum"
        }
        self.reference = None
        if ctx.calibration.matched and not ctx.calibration.confusion:
            inputs, _ = ctx.subject.to_call(ctx.convention, batch, dtype=torch.float64, grad=False)
            self.reference = reference_elements(ctx.kind, canonical_to_reference_input(ctx.convention, inputs), batch.y.double(), ctx.params)
        self.unit = "row" if base_kind(ctx.kind) == SOFTMAX else "element"

    @property
    def reference_sum(self) -> float | None:
        return float(self.reference.sum()) if self.reference is not None else None

    def count_of(self, ratio: float) -> str | None:
        """The count (``16 rows``) that ``ratio`` equals, if any."""
        for name, count in self.counts.items():
            if _close(ratio, count):
                return f"{count:g} {name}"
        return None

    def counts_text(self) -> str:
        return ", ".join(f"{count:g} {name}" for name, count in self.counts.items())

    def check(self, roles: dict[str, Outcome]) -> list[str]:
        """What is wrong with the outputs of the roles 'mean', 'sum' and 'none' present."""
        problems = []
        valid = {}
        for role, outcome in roles.items():
            if outcome.problem:
                problems.append(f"{outcome.label} {outcome.problem}")
            elif outcome.out is not None:
                valid[role] = outcome
        for role in ("mean", "sum"):
            if role in valid and cast("torch.Tensor", valid[role].out).numel() != 1:
                problems.append(f"{valid[role].label} returns shape {tuple(cast('torch.Tensor', valid[role].out).shape)}, not a scalar")
                del valid[role]
        if "none" in valid:
            problems += self._check_none(valid["none"], valid)
        if "sum" in valid:
            problems += self._check_sum(valid["sum"], valid.get("mean"))
        if "mean" in valid and self.reference is not None:
            problems += self._check_mean(valid["mean"])
        return problems

    def _check_none(self, none: Outcome, valid: dict[str, Outcome]) -> list[str]:
        from lossaudit.lint.subject import match_output

        assert none.out is not None  # a valid outcome has an output

        if none.out.numel() == 1:
            return [f"{none.label} returns a scalar ({none.value:.6g}) instead of one loss per {self.unit}"]
        if self.reference is not None:
            reference = self.reference
            if self.ctx.params.skip_class_0 and reference.dim() == 2 and none.out.numel() == reference.numel() - reference.shape[0]:
                reference = reference[:, 1:]  # MONAI's include_background=False drops channel 0 from the output
            match = match_output(self.ctx.kind, none.out, reference, self.batch.y, self.ctx.params)
            if match.normalisation != "none" or match.error > REDUCTION_TOLERANCE:
                return [f"{none.label} returns {tuple(none.out.shape)} values that are not the per-{self.unit} losses (relative error {match.error:.3g})"]
            return []
        if "sum" in valid and not _close(none.value, valid["sum"].value):
            return [f"{none.label} sums to {none.value:.6g}, {valid['sum'].label} returns {valid['sum'].value:.6g}"]
        if "sum" not in valid and "mean" in valid and self.count_of(none.value / valid["mean"].value if valid["mean"].value else math.inf) is None:
            return [f"{none.label} sums to {none.value:.6g}, which is {valid['mean'].label} ({valid['mean'].value:.6g}) times no count ({self.counts_text()})"]
        return []

    def _check_sum(self, total: Outcome, mean: Outcome | None) -> list[str]:
        same = mean is not None and _close(total.value, mean.value)
        if self.reference is not None:
            expected = cast(float, self.reference_sum)  # there is a reference
            if _close(total.value, expected):
                return []
            relation = ""
            if mean is not None and mean.value:
                count = self.count_of(expected / mean.value)
                relation = f" = {mean.label} {mean.value:.6g} × {count}" if count else ""
            what = f", the same as {cast(Outcome, mean).label}" if same else ""
            return [f"{total.label} returns {total.value:.6g}{what}; the summed loss is {expected:.6g}{relation}"]
        if mean is None:
            return []
        if same:
            return [f"{total.label} returns {total.value:.6g}, the same as {mean.label}, not the mean times a count ({self.counts_text()})"]
        ratio = total.value / mean.value if mean.value else math.inf
        if self.count_of(ratio) is None:
            return [
                f"{total.label} returns {total.value:.6g} = {mean.label} {mean.value:.6g} × {ratio:.4g}, and {ratio:.4g} is no count of this batch ({self.counts_text()})"
            ]
        return []

    def _check_mean(self, mean: Outcome) -> list[str]:
        expected = cast(float, self.reference_sum)  # called with a reference
        if mean.value and self.count_of(expected / mean.value) is not None:
            return []
        return [f"{mean.label} returns {mean.value:.6g}, which is the summed loss {expected:.6g} over no count ({self.counts_text()})"]


@group.probe(131, "FL025")
def probe_reductions(ctx: Context) -> None:
    """FL025: call the target with reduction 'mean', 'sum' and 'none' (and size_average True and
    False, reduce True and False, where it takes them) on one batch; the outputs must agree with
    each other and, when calibration matched, with the reference (:class:`_Reductions`)."""
    declared = _declared(ctx)
    arguments = [name for name in ("reduction", "size_average", "reduce") if name in declared]
    if not arguments:
        raise Inconclusive("the target takes no reduction, size_average or reduce argument")
    batch = ctx.batch()
    judge = _Reductions(ctx, batch)
    problems, values, rejected, concerned = [], {}, [], set()
    for name in arguments:
        roles = _roles(ctx, batch, name)
        for outcome in roles.values():
            values[outcome.label] = outcome.shown()
            if outcome.rejected:
                rejected.append(f"{outcome.label} is rejected ({outcome.rejected})")
        found = judge.check({role: outcome for role, outcome in roles.items() if not outcome.rejected})
        problems += found
        concerned |= {role for role, outcome in roles.items() for problem in found if problem.startswith(outcome.label)} | (
            {"legacy"} if found and name != "reduction" else set()
        )
    if rejected:
        ctx.notes.append(f"FL025: {'; '.join(rejected)}: not an accepted value, so not checked")
    if not problems:
        return
    evidence = {"values": values, "counts": judge.counts}
    if judge.reference is not None:
        evidence["reference_sum"] = judge.reference_sum
    departure = next(
        (
            text
            for library in ctx.follows()
            for start, (package, reductions, text) in REDUCTION_DEPARTURES.items()
            if library.startswith(start) and is_library(ctx, package) and concerned <= set(reductions)
        ),
        None,
    )
    message = "the reduction is not honoured: " + "; ".join(problems)
    ctx.fire("FL025", message + (f" ({departure})" if departure else ""), evidence, severity="info" if departure else "")


def _roles(ctx: Context, batch: Batch, name: str) -> dict[str, Outcome]:
    """The calls that play 'mean', 'sum' and 'none' for argument ``name``: each reduction; the
    legacy size_average=True (mean) and False (sum); reduce=False (none) beside reduce=True (mean,
    or sum when size_average defaults to False)."""
    if name == "reduction":
        return {role: _call(ctx, batch, f"reduction={role!r}", {name: role}) for role in REDUCTIONS}
    if name == "size_average":
        return {"mean": _call(ctx, batch, "size_average=True", {name: True}), "sum": _call(ctx, batch, "size_average=False", {name: False})}
    reduced = "sum" if ctx.subject.value("size_average", True) is False else "mean"
    return {reduced: _call(ctx, batch, "reduce=True", {name: True}), "none": _call(ctx, batch, "reduce=False", {name: False})}


def _class_weights(classes: int, heavy: int | None) -> torch.Tensor:
    import torch

    weight = torch.ones(classes)
    if heavy is not None:
        weight[heavy] = WEIGHT_FACTOR
    return weight


@group.probe(77, "FL026")
def probe_class_weight_effect(ctx: Context) -> None:
    """FL026: each per-class weight parameter the target takes (:data:`WEIGHT_PARAMETERS`; pos_weight
    on sigmoid losses) must change the loss when one class present in the batch (class 0: a
    positive of column 0, a target of row 0) is weighted 3 and the others 1, against all 1. A
    parameter that does not take a ``(C,)`` float tensor is not a per-class weight: noted."""
    from lossaudit.lint.calibrate import error_text

    if ctx.kind not in WEIGHTED_KINDS:
        raise Inconclusive(f"class weights are probed on sigmoid and softmax focal losses, not on a {ctx.kind} loss")
    declared = _declared(ctx)
    names = [name for name in WEIGHT_PARAMETERS if name in declared and (name != "pos_weight" or ctx.kind in POS_WEIGHT_KINDS)]
    if not names:
        raise Inconclusive(f"the target has no per-class weight parameter ({', '.join(WEIGHT_PARAMETERS)})")
    if ctx.params.skip_class_0:
        raise Inconclusive("class 0 is not counted (include_background=False), so its weight cannot be probed")
    batch = ctx.batch()
    classes = ctx.subject.num_classes
    unused, skipped = [], []
    for name in names:
        try:
            uniform = ctx.total(batch, **{name: _class_weights(classes, None)})
            heavy = ctx.total(batch, **{name: _class_weights(classes, 0)})
        except (Exception, SystemExit) as error:
            skipped.append(f"{name} does not take a (C,) float tensor: {error_text(error)}")
            continue
        if math.isfinite(uniform) and abs(heavy - uniform) <= EFFECT_TOLERANCE * max(abs(uniform), 1e-12):
            unused.append((name, uniform, heavy))
    if skipped:
        ctx.notes.append(f"FL026: {'; '.join(skipped)}")
    if not unused:
        if skipped and len(skipped) == len(names):
            raise Inconclusive("no weight parameter takes a (C,) float tensor")
        return
    name, uniform, heavy = unused[0]
    what = "the positives of class 0" if name == "pos_weight" else "class 0"
    ctx.fire(
        "FL026",
        f"{name} has no effect: weighting {what} by {WEIGHT_FACTOR:g} (every other class 1) leaves the loss at {heavy:.6g}, {uniform:.6g} with uniform weights"
        + (f"; {', '.join(n for n, _, _ in unused[1:])} neither" if len(unused) > 1 else ""),
        {
            "parameters": [n for n, _, _ in unused],
            "weighted_class": 0,
            "class_weight": WEIGHT_FACTOR,
            "loss_uniform_weights": uniform,
            "loss_weighted": heavy,
            "tolerance": EFFECT_TOLERANCE,
        },
    )


def _background_change(name: str, value: Any, classes: int) -> object | None:
    """The other value a background parameter is probed with, None when lint cannot pick one."""
    if isinstance(value, bool):
        return not value
    if name in BACKGROUND_FLAGS:
        return None if value is not None else False
    if name in BACKGROUND_WEIGHTS:
        return 2.0 if value is None or value == 0 else float(value) * 2.0
    if isinstance(value, int):
        return (value + 1) % max(classes, 2) if value < classes else 0
    return None


@group.probe(137, "FL027")
def probe_background_parameter(ctx: Context) -> None:
    """FL027: a background parameter (:data:`BACKGROUND_FLAGS`, :data:`BACKGROUND_WEIGHTS`,
    :data:`BACKGROUND_LABELS`) must change the loss when it changes: a flag flipped, a weight
    doubled, a label moved to another class, on a batch holding class 0 (and background rows for a
    sigmoid loss with a background label)."""
    from lossaudit.lint.calibrate import error_text

    declared = _declared(ctx)
    names = [name for name in (*BACKGROUND_FLAGS, *BACKGROUND_WEIGHTS, *BACKGROUND_LABELS) if name in declared]
    if not names:
        raise Inconclusive("the target has no background parameter")
    batch = ctx.batch()
    unused, skipped = [], []
    for name in names:
        value = ctx.subject.value(name, None)
        changed = _background_change(name, value, ctx.subject.num_classes)
        if changed is None:
            skipped.append(f"{name}={value!r}: no other value to try")
            continue
        try:
            before = ctx.total(batch)
            after = ctx.total(batch, **{name: changed})
        except (Exception, SystemExit) as error:
            skipped.append(f"{name}={changed!r} raises {error_text(error)}")
            continue
        if math.isfinite(before) and abs(after - before) <= EFFECT_TOLERANCE * max(abs(before), 1e-12):
            unused.append((name, value, changed, before, after))
    if skipped:
        ctx.notes.append(f"FL027: {'; '.join(skipped)}")
    if not unused:
        if len(skipped) == len(names):
            raise Inconclusive("no background parameter could be varied")
        return
    name, value, changed, before, after = unused[0]
    held = "class 0" + (" and background rows" if ctx.convention.has_background and ctx.kind == SIGMOID else "")
    ctx.fire(
        "FL027",
        f"{name} has no effect: the loss is {before:.6g} with {name}={value!r} and {after:.6g} with {name}={changed!r} on a batch holding {held}",
        {"parameter": name, "default": value, "changed_to": changed, "loss_default": before, "loss_changed": after, "tolerance": EFFECT_TOLERANCE},
    )
