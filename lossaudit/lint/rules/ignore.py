"""The ignore index: ignored targets that change the loss, stay in its denominator or crash it
(FL011), and inf or NaN logits at ignored positions that leak into the loss or the gradient (FL022).

The ignore label is the one the target is configured with (``--ignore-index``, or an integer
default of its ``ignore_index``/``ignore_label``/``ignore_idx`` parameter); a target that declares
such a parameter with a default of None is probed with it set to :data:`PROBED_IGNORE`, since it
says it supports one. With one-hot targets an ignored row holds the ignore label in every element
(the elementwise ``target == ignore_index`` mask of pytorch-toolbelt and smp)."""

from __future__ import annotations

import ast
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from lossaudit.lint.anchors import calls, mentions
from lossaudit.lint.probing import Inconclusive, skip_after
from lossaudit.lint.registry import Rule, RuleGroup

if TYPE_CHECKING:
    import torch

    from lossaudit.lint.battery import Context

group = RuleGroup("ignore")

MASK_WORDS = ("keep", "mask", "valid", "ignore")


def mask_product(node: ast.AST) -> bool:
    """A multiplication by a mask: ``loss * keep``, ``loss * mask.float()`` (``*=`` too)."""
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mult):
        operands: tuple[ast.expr, ...] = (node.left, node.right)
    elif isinstance(node, ast.AugAssign) and isinstance(node.op, ast.Mult):
        operands = (node.value,)
    else:
        return False
    return any(mentions(operand, word) for operand in operands for word in MASK_WORDS)


group.rule(
    Rule(
        "FL011",
        "ignore-index",
        "error",
        "ignored targets change the loss, stay in its denominator or crash it",
        "Elements labelled with the ignore index must not contribute to the loss, must not crash one_hot or "
        "gather, and must leave the normaliser too: a mean that zeroes the ignored rows' terms but still divides "
        "by every row shrinks as ignored rows are added (with a quarter of the rows ignored the loss is 3/4 of "
        "the kept rows' mean), so the loss's scale follows the share of void pixels instead of the data. Adding "
        "ignored rows to a batch must leave the loss of the kept rows as it was. kornia's focal_loss documents "
        "that ignored pixels stay in its 'mean' denominator: kornia's own losses get an info (a loss of yours that does the same gets the error).",
        "mask ignored rows before one_hot/gather and drop them from the sum and from the count: loss[keep].mean(), or loss.sum() / keep.sum()",
        "ce = F.cross_entropy(logits, targets, ignore_index=-100, reduction='none')\nloss = ((1 - torch.exp(-ce)) ** gamma * ce).mean()   # ignored rows count in the mean",
        "keep = targets != ignore_index\nloss = loss_fn(logits[keep], targets[keep])",
    ),
    anchor=(calls("one_hot", "gather", "scatter", "scatter_"),),
)
group.anchor("FL011:denominator", (calls("mean"), calls("div", "true_divide")))
group.rule(
    Rule(
        "FL022",
        "ignored-non-finite",
        "warning",
        "inf or NaN logits at ignored positions leak into the loss or into the gradient of the other positions",
        "Positions labelled with the ignore index carry whatever the network produced there (padding, "
        "void pixels), sometimes inf or NaN. Multiplying the loss by a 0/1 mask (loss * keep) does not drop "
        "them: inf * 0 and NaN * 0 are NaN, so one ignored position turns the whole loss and every "
        "gradient into NaN. Selecting the kept positions, or torch.where, does drop them. A warning: the "
        "loss is right on finite inputs (kornia's current focal loss lets NaN logits at ignored pixels "
        "spread), and a loss that rejects non-finite inputs with its own check is not reported.",
        "select the kept positions before reducing (loss[keep], or logits[keep] and targets[keep]) or use torch.where(keep, loss, 0); never multiply by the mask",
        "keep = (targets != ignore_index)\nloss = (loss * keep).sum() / keep.sum()   # NaN * 0 = NaN",
        "keep = targets != ignore_index\nloss = loss[keep].sum() / keep.sum()",
    ),
    anchor=(mask_product,),
)

IGNORED_ROWS = 3
"""Probes of the ignore index label the first rows of a batch with it."""
DENOMINATOR_ROWS, DENOMINATOR_IGNORED = 16, 4
"""The denominator probe's batch: its first rows ignored, the rest kept (an even count of each, so a
segmentation layout keeps two images)."""
DENOMINATOR_TOLERANCE = 1e-5
"""Relative difference between the loss with ignored rows added and the kept rows' loss alone above
which FL011 fires (float32 sums over 16 and 12 rows agree to about 1e-7)."""
IGNORE_PARAMETERS = ("ignore_index", "ignore_label", "ignore_idx")
"""Names of an ignore-label parameter."""
PROBED_IGNORE = -100
"""The ignore label given to a target whose ignore parameter defaults to None (torch's default)."""
KORNIA = ("kornia focal_loss / FocalLoss", "kornia binary_focal_loss_with_logits")
"""The conventions (:mod:`~lossaudit.lint.peers`) whose library, kornia, documents that ignored
entries stay in the 'mean' denominator: kornia's own losses get an info (a user's loss computing
the same values gets the error)."""


@dataclass(frozen=True)
class IgnoreSetting:
    """The ignore label the probes use, and the keywords that set it (``{name: -100}`` when the
    target declares the parameter with a default of None)."""

    label: int
    overrides: dict = field(default_factory=dict)

    @property
    def probed(self) -> bool:
        return bool(self.overrides)

    def evidence(self) -> dict:
        return {"ignore_index": self.label, **({"set_by_lint": dict(self.overrides)} if self.probed else {})}

    def describe(self) -> str:
        if not self.probed:
            return f"ignored targets ({self.label})"
        name, value = next(iter(self.overrides.items()))
        return f"with {name}={value} (its default is None) ignored targets"


def ignore_setting(ctx: Context) -> IgnoreSetting:
    """The ignore label to probe with: ``--ignore-index`` or the target's own integer default, else
    :data:`PROBED_IGNORE` set through an ignore parameter that defaults to None; Inconclusive
    when the target has none."""
    subject = ctx.subject
    if subject.ignore_index is not None:
        return IgnoreSetting(subject.ignore_index)
    declared = set(subject.signature.parameters) if subject.signature is not None and not subject.is_instance else set()
    for name in IGNORE_PARAMETERS:
        if name in declared or name in subject.init:
            value = subject.value(name, None)
            if isinstance(value, int) and not isinstance(value, bool):
                return IgnoreSetting(value)
            if value is None and not subject.is_instance:
                return IgnoreSetting(PROBED_IGNORE, {name: PROBED_IGNORE})
    raise Inconclusive("no ignore index (pass --ignore-index, or give the target an ignore_index parameter)")


def _ignored_batch(ctx: Context, setting: IgnoreSetting, rows: int = 16, ignored: int = IGNORED_ROWS) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, targets) of a moderate batch of ``rows`` whose first ``ignored`` rows are labelled
    with the ignore label: class indices set to it, or, for one-hot targets, every element of the
    row set to it."""
    if ctx.convention.targets not in ("index", "onehot"):
        raise Inconclusive(f"the target takes {ctx.convention.targets} targets, which have no ignore label")
    inputs, targets = ctx.subject.to_call(ctx.convention, ctx.batch(rows=rows))
    targets = targets.clone()
    targets[:ignored] = setting.label
    return inputs, targets


def _total(ctx: Context, setting: IgnoreSetting, inputs: torch.Tensor, targets: torch.Tensor) -> float:
    """The summed output of a freshly built target (with the ignore setting) on copies of the tensors."""
    from lossaudit.lint.subject import output_tensor

    loss = ctx.subject.build(**setting.overrides)
    out = ctx.subject.guarded(lambda: output_tensor(loss(*ctx.convention.arrange(inputs.detach().clone(), targets.clone()))))
    return float(out.detach().double().sum())


@group.probe(130, "FL011")
def probe_ignore_index(ctx: Context) -> None:
    """FL011: rows labelled with the ignore index must neither change the loss nor crash it (two
    batches differ only in the ignored rows' logits), and must leave the normaliser: the loss of a
    batch whose first :data:`DENOMINATOR_IGNORED` of :data:`DENOMINATOR_ROWS` rows are ignored must
    equal the loss of its kept rows alone. A mean that still counts the ignored rows gives kept/all
    (12/16) of it; that is an info for kornia's own losses, which document it."""
    import torch

    from lossaudit.lint.calibrate import error_text

    setting = ignore_setting(ctx)
    inputs, targets = _ignored_batch(ctx, setting)
    results = []
    for value in (-3.0, 3.0):
        varied = inputs.detach().clone()
        varied[:IGNORED_ROWS] = value if ctx.convention.inputs == "logits" else torch.sigmoid(torch.tensor(value))
        try:
            results.append(_total(ctx, setting, varied, targets))
        except (Exception, SystemExit) as error:
            if ctx.convention.targets == "onehot":
                raise Inconclusive(f"one-hot rows holding the ignore label {setting.label} make the loss raise: {error_text(error)}") from None
            ctx.fire("FL011", f"{setting.describe()} crash the loss: {error_text(error)}", setting.evidence(), anchor="FL011")
            return
    if not math.isfinite(results[0]) or abs(results[0] - results[1]) > 1e-6 * max(abs(results[0]), 1e-12):
        ctx.fire(
            "FL011",
            f"{setting.describe()} change the loss: {results[0]:.6g} versus {results[1]:.6g} when only their logits differ",
            {**setting.evidence(), "losses": results},
        )
        return
    _ignored_denominator(ctx, setting)


def _ignored_denominator(ctx: Context, setting: IgnoreSetting) -> None:
    """FL011's second half: ignored rows added to a batch must leave the loss of its kept rows."""
    inputs, targets = _ignored_batch(ctx, setting, rows=DENOMINATOR_ROWS, ignored=DENOMINATOR_IGNORED)
    with_ignored = _total(ctx, setting, inputs, targets)
    kept_only = _total(ctx, setting, inputs[DENOMINATOR_IGNORED:], targets[DENOMINATOR_IGNORED:])
    if not (math.isfinite(with_ignored) and math.isfinite(kept_only)) or abs(with_ignored - kept_only) <= DENOMINATOR_TOLERANCE * max(abs(kept_only), 1e-12):
        return
    kept = DENOMINATOR_ROWS - DENOMINATOR_IGNORED
    ratio = with_ignored / kept_only if kept_only else math.inf
    counted = abs(ratio - kept / DENOMINATOR_ROWS) <= 1e-4 * kept / DENOMINATOR_ROWS
    how = (
        f"ratio {ratio:.4f} = {kept}/{DENOMINATOR_ROWS}: the mean divides by every row, ignored ones included"
        if counted
        else f"ratio {ratio:.4f}: the ignored rows still reach the normaliser"
    )
    from lossaudit.lint.rules.arguments import is_library

    follows_kornia = next((library for library in KORNIA if library in ctx.follows()), None) if is_library(ctx, "kornia") else None
    documented = f"; {follows_kornia} documents that ignored entries stay in its 'mean' denominator" if follows_kornia else ""
    ctx.fire(
        "FL011",
        f"{setting.describe()} stay in the loss's denominator: with {DENOMINATOR_IGNORED} of {DENOMINATOR_ROWS} rows ignored the loss is {with_ignored:.6g}, "
        f"the {kept} kept rows alone give {kept_only:.6g} ({how}){documented}",
        {
            **setting.evidence(),
            "rows": DENOMINATOR_ROWS,
            "ignored_rows": DENOMINATOR_IGNORED,
            "loss_with_ignored_rows": with_ignored,
            "loss_of_kept_rows": kept_only,
            "ratio": ratio,
            "ratio_if_ignored_rows_are_counted": kept / DENOMINATOR_ROWS,
            "tolerance": DENOMINATOR_TOLERANCE,
        },
        severity="info" if follows_kornia else "",
        anchor="FL011:denominator",
    )


OWN_CHECKS = (AssertionError, ValueError)
"""What a loss raises when it rejects non-finite inputs on purpose (``assert torch.isfinite(x).all()``)."""


@group.probe(160, "FL022")
def probe_ignored_non_finite(ctx: Context) -> None:
    """FL022: NaN, +inf and -inf logits in the rows labelled with the ignore index (NaN
    probabilities for a target that takes probabilities) must leave the loss finite and equal
    (1e-6 relative) to the loss with the batch's finite logits there, and the gradient of the
    other rows finite. A loss that raises on them (its own assert or ValueError, or any error:
    NaN is not valid input) is not reported: the note says so. Skipped once FL011 found that
    ignored rows reach the loss at all, or FL013 that two calls differ anyway; run on index targets
    with the ignore label the target is configured with (not on one lint set, nor on one-hot rows)."""
    import torch

    from lossaudit.lint.calibrate import error_text

    skip_after(ctx, "FL011", "FL013")
    setting = ignore_setting(ctx)
    if setting.probed:
        raise Inconclusive(
            f"the target has no ignore index set ({next(iter(setting.overrides))} defaults to None): non-finite logits at ignored rows matter only once it is set"
        )
    if ctx.convention.targets != "index":
        raise Inconclusive("the target takes one-hot targets, which have no ignore label for this probe (it runs on class-index targets)")
    inputs, targets = _ignored_batch(ctx, setting)
    finite, _ = _ignored_call(ctx, setting, inputs, targets)
    if not math.isfinite(finite):
        raise Inconclusive(f"the loss is not finite even with finite logits at the ignored rows ({finite})")
    poisoned = inputs.detach().clone()
    poisoned[:IGNORED_ROWS] = (
        torch.tensor([math.nan, math.inf, -math.inf]).reshape(-1, *([1] * (poisoned.dim() - 1))) if ctx.convention.inputs == "logits" else math.nan
    )
    try:
        value, grad = _ignored_call(ctx, setting, poisoned, targets)
    except (Exception, SystemExit) as error:
        own = "with its own check, which is correct" if isinstance(error, OWN_CHECKS) else "(non-finite inputs are not valid input, so this is no crash)"
        ctx.notes.append(f"FL022: the loss rejects non-finite inputs at ignored rows {own}: {error_text(error)}")
        return
    grad_finite = grad is None or bool(torch.isfinite(grad[IGNORED_ROWS:]).all())
    equal = math.isfinite(value) and abs(value - finite) <= 1e-6 * max(abs(finite), 1e-12)
    if equal and grad_finite:
        return
    shown = "NaN probabilities" if ctx.convention.inputs != "logits" else "NaN and ±inf logits"
    what = f"the loss becomes {value:.6g} (with finite logits there: {finite:.6g})" if not equal else "the gradient of the other rows is not finite"
    ctx.fire(
        "FL022",
        f"{shown} at ignored rows leak: {what}",
        {**setting.evidence(), "loss_finite_ignored": finite, "loss_non_finite_ignored": value, "gradient_of_kept_rows_finite": grad_finite},
    )


def _ignored_call(ctx: Context, setting: IgnoreSetting, inputs: torch.Tensor, targets: torch.Tensor) -> tuple[float, torch.Tensor | None]:
    """The summed output of a freshly built target on ``inputs`` (a new grad leaf, passed as a
    clone, as :meth:`~lossaudit.lint.subject.Subject.call` does) and the gradient it gives the
    leaf (None without one)."""
    import torch

    from lossaudit.lint.subject import output_tensor

    loss = ctx.subject.build(**setting.overrides)
    leaf = inputs.detach().clone().requires_grad_(True)
    out = ctx.subject.guarded(lambda: output_tensor(loss(*ctx.convention.arrange(leaf.clone(), targets.clone()))))
    value = float(out.detach().double().sum())
    if not out.requires_grad:
        return value, None
    (grad,) = torch.autograd.grad(out.sum(), leaf, allow_unused=True)
    return value, grad
