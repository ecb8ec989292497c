"""The ignore index: ignored targets that change the loss or crash it (FL011), and inf or NaN logits
at ignored positions that leak into the loss or the gradient (FL022)."""

from __future__ import annotations

import ast
import math
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
        operands = (node.left, node.right)
    elif isinstance(node, ast.AugAssign) and isinstance(node.op, ast.Mult):
        operands = (node.value,)
    else:
        return False
    return any(mentions(operand, word) for operand in operands for word in MASK_WORDS)


group.rule(
    Rule(
        "FL011", "ignore-index", "error",
        "ignored targets change the loss or crash it",
        "Elements labelled with the ignore index must not contribute to the loss (nor to its normaliser, "
        "beyond a documented choice), and must not crash one_hot or gather.",
        "mask ignored rows before one_hot/gather and drop them from the sum",
        "onehot = F.one_hot(targets, C)        # crashes on -100",
        "keep = targets != ignore_index\nloss = loss_fn(logits[keep], targets[keep])",
    ),
    anchor=(calls("one_hot", "gather", "scatter", "scatter_"),),
)
group.rule(
    Rule(
        "FL022", "ignored-non-finite", "error",
        "inf or NaN logits at ignored positions leak into the loss or into the gradient of the other positions",
        "Positions labelled with the ignore index carry whatever the network produced there (padding, "
        "void pixels), sometimes inf or NaN. Multiplying the loss by a 0/1 mask (loss * keep) does not drop "
        "them: inf * 0 and NaN * 0 are NaN, so one ignored position turns the whole loss and every "
        "gradient into NaN. Selecting the kept positions, or torch.where, does drop them.",
        "select the kept positions before reducing (loss[keep], or logits[keep] and targets[keep]) or use torch.where(keep, loss, 0); never multiply by the mask",
        "keep = (targets != ignore_index)\nloss = (loss * keep).sum() / keep.sum()   # NaN * 0 = NaN",
        "keep = targets != ignore_index\nloss = loss[keep].sum() / keep.sum()",
    ),
    anchor=(mask_product,),
)

IGNORED_ROWS = 3
"""Probes of the ignore index label the first rows of a batch with it."""


def _ignored_batch(ctx: Context) -> tuple[int, torch.Tensor, torch.Tensor]:
    """(ignore index, inputs, targets) of a moderate batch whose first :data:`IGNORED_ROWS` rows
    are labelled with the ignore index; Inconclusive when the target has no ignore label."""
    ignore = ctx.subject.ignore_index
    if ignore is None:
        raise Inconclusive("no ignore index (pass --ignore-index, or give the target an ignore_index parameter)")
    if ctx.convention.targets != "index":
        raise Inconclusive("the target takes one-hot targets, which have no ignore label")
    inputs, targets = ctx.subject.to_call(ctx.convention, ctx.batch())
    targets = targets.clone()
    targets[:IGNORED_ROWS] = ignore
    return ignore, inputs, targets


@group.probe(130, "FL011")
def probe_ignore_index(ctx: Context) -> None:
    """FL011: rows labelled with the ignore index must neither change the loss nor crash it. Two
    batches differ only in the ignored rows' logits."""
    import torch

    from lossaudit.lint.calibrate import error_text
    from lossaudit.lint.subject import output_tensor

    ignore, inputs, targets = _ignored_batch(ctx)
    loss = ctx.subject.build()
    results = []
    for value in (-3.0, 3.0):
        varied = inputs.detach().clone()
        varied[:IGNORED_ROWS] = value if ctx.convention.inputs == "logits" else torch.sigmoid(torch.tensor(value))
        try:
            out = ctx.subject.guarded(lambda varied=varied: output_tensor(loss(*ctx.convention.arrange(varied, targets))))
        except (Exception, SystemExit) as error:
            ctx.fire("FL011", f"ignored targets ({ignore}) crash the loss: {error_text(error)}", {"ignore_index": ignore}, anchor="FL011")
            return
        results.append(float(out.detach().double().sum()))
    if not math.isfinite(results[0]) or abs(results[0] - results[1]) > 1e-6 * max(abs(results[0]), 1e-12):
        ctx.fire("FL011", f"ignored rows change the loss: {results[0]:.6g} versus {results[1]:.6g} when only their logits differ", {"ignore_index": ignore, "losses": results})


@group.probe(160, "FL022")
def probe_ignored_non_finite(ctx: Context) -> None:
    """FL022: NaN, +inf and -inf logits in the rows labelled with the ignore index (NaN
    probabilities for a target that takes probabilities) must leave the loss finite and equal
    (1e-6 relative) to the loss with the batch's finite logits there, and the gradient of the
    other rows finite. Skipped once FL011 found that ignored rows reach the loss at all, or FL013
    that two calls differ anyway."""
    import torch

    skip_after(ctx, "FL011", "FL013")
    _, inputs, targets = _ignored_batch(ctx)
    finite, _ = _ignored_call(ctx, inputs, targets)
    if not math.isfinite(finite):
        raise Inconclusive(f"the loss is not finite even with finite logits at the ignored rows ({finite})")
    poisoned = inputs.detach().clone()
    poisoned[:IGNORED_ROWS] = torch.tensor([math.nan, math.inf, -math.inf]).reshape(-1, *([1] * (poisoned.dim() - 1))) if ctx.convention.inputs == "logits" else math.nan
    value, grad = _ignored_call(ctx, poisoned, targets)
    grad_finite = grad is None or bool(torch.isfinite(grad[IGNORED_ROWS:]).all())
    equal = math.isfinite(value) and abs(value - finite) <= 1e-6 * max(abs(finite), 1e-12)
    if equal and grad_finite:
        return
    shown = "NaN probabilities" if ctx.convention.inputs != "logits" else "NaN and ±inf logits"
    what = f"the loss becomes {value:.6g} (with finite logits there: {finite:.6g})" if not equal else "the gradient of the other rows is not finite"
    ctx.fire("FL022", f"{shown} at ignored rows leak: {what}", {"ignore_index": ctx.subject.ignore_index, "loss_finite_ignored": finite, "loss_non_finite_ignored": value, "gradient_of_kept_rows_finite": grad_finite})


def _ignored_call(ctx: Context, inputs: torch.Tensor, targets: torch.Tensor) -> tuple[float, torch.Tensor | None]:
    """The summed output of a freshly built target on ``inputs`` (a new grad leaf, passed as a
    clone, as :meth:`~lossaudit.lint.subject.Subject.call` does) and the gradient it gives the
    leaf (None without one)."""
    import torch

    from lossaudit.lint.subject import output_tensor

    loss = ctx.subject.build()
    leaf = inputs.detach().clone().requires_grad_(True)
    out = ctx.subject.guarded(lambda: output_tensor(loss(*ctx.convention.arrange(leaf.clone(), targets.clone()))))
    value = float(out.detach().double().sum())
    if not out.requires_grad:
        return value, None
    (grad,) = torch.autograd.grad(out.sum(), leaf, allow_unused=True)
    return value, grad
