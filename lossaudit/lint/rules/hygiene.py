"""How the loss behaves as a function: inputs modified in place (FL012), state kept across calls
(FL013), a crash on valid input (FL015), and the caller's grad mode switched (FL021)."""

from __future__ import annotations

import ast
import copy
import math
from typing import TYPE_CHECKING, Any

from lossaudit.lint.anchors import calls, name_of
from lossaudit.lint.kinds import CENTERNET, GHM
from lossaudit.lint.probing import Inconclusive
from lossaudit.lint.registry import Rule, RuleGroup

if TYPE_CHECKING:
    import torch

    from lossaudit.lint.battery import Context
    from lossaudit.lint.subject import Batch

group = RuleGroup("hygiene")

GRAD_SWITCHES = ("set_grad_enabled", "_set_grad_enabled", "no_grad", "enable_grad", "inference_mode")


def in_place(node: ast.AST) -> bool:
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        return node.func.attr.endswith("_") and not node.func.attr.startswith("_")
    if isinstance(node, (ast.Assign, ast.AugAssign)):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        return any(isinstance(t, ast.Subscript) for t in targets) or isinstance(node, ast.AugAssign) and isinstance(node.target, ast.Name)
    return False


def self_assignment(node: ast.AST) -> bool:
    if isinstance(node, (ast.Assign, ast.AugAssign)):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        return any(isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and t.value.id == "self" for t in targets)
    return False


def bare_grad_switch(node: ast.AST) -> bool:
    """A grad-mode switch that no ``with`` restores: ``torch.set_grad_enabled(True)`` as a
    statement, or ``torch.no_grad().__enter__()``."""
    if not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Call)):
        return False
    call = node.value
    if name_of(call) in ("set_grad_enabled", "_set_grad_enabled"):
        return True
    return name_of(call) == "__enter__" and isinstance(call.func, ast.Attribute) and calls(*GRAD_SWITCHES)(call.func.value)


group.rule(
    Rule(
        "FL012",
        "input-mutation",
        "error",
        "the caller's logits or targets are modified in place",
        "An in-place op on the inputs (sigmoid_, clamp_, targets[...] = ...) silently changes tensors the training loop still uses, and can break autograd.",
        "use out-of-place ops (torch.sigmoid(x), x.clamp(...), targets.clone())",
        "logits.sigmoid_()",
        "p = torch.sigmoid(logits)",
    ),
    anchor=(in_place,),
)
group.rule(
    Rule(
        "FL013",
        "stateful",
        "error",
        "repeated calls on the same input differ, or forward changes the module's own attributes",
        "A loss that keeps state across calls (a counter, a running normaliser) gives different values for "
        "the same batch and makes runs depend on call order. Where the reference keeps state by design "
        "(--kind ghm with momentum: GHM-C's moving average of bin counts), two calls must instead follow the "
        "reference's state from call to call.",
        "keep forward pure; hold real state (GHM's moving average) in an explicit object",
        "self.num_calls += 1\nreturn loss / self.num_calls",
        "return loss / num_positives",
        fixes=(
            (
                GHM,
                "keep the moving average per instance, as mmdet's GHMC does: acc = momentum * acc + (1 - momentum) * count for the non-empty bins, starting at 0",
            ),
        ),
    ),
    anchor=(self_assignment,),
)
group.rule(
    Rule(
        "FL015",
        "crash",
        "error",
        "raises, hangs or exits on valid input (hard-coded .cuda(), shape assumptions, Python 2 names)",
        "The loss could not be computed on a valid batch: it raised, ran past the time limit, called sys.exit, or killed its process.",
        "make the loss device- and shape-agnostic: use logits.device, avoid fixed batch sizes and squeeze()",
        "targets = targets.cuda()",
        "targets = targets.to(logits.device)",
    ),
)
group.rule(
    Rule(
        "FL021",
        "grad-mode-leak",
        "error",
        "calling the loss changes torch.is_grad_enabled() for the caller (e.g. a bare torch.set_grad_enabled(True) inside the loss)",
        "Grad mode is global to the thread. A loss that switches it with a bare torch.set_grad_enabled(...) "
        "call (timm's AsymmetricLoss did) leaves it switched for the caller: a validation loop run under "
        "torch.no_grad() starts building graphs and holding activations after the first loss call, or a "
        "training step runs on without gradients. Context managers restore the mode on exit.",
        "switch grad mode only with a context manager (with torch.no_grad(): / with torch.enable_grad():), which restores it, or detach the tensor instead",
        "torch.set_grad_enabled(False)\nnum_pos = targets.sum().clamp(min=1)\ntorch.set_grad_enabled(True)   # now on for the caller too, even under no_grad",
        "with torch.no_grad():\n    num_pos = targets.sum().clamp(min=1)   # the mode is restored on exit",
    ),
    anchor=(bare_grad_switch, calls(*GRAD_SWITCHES)),
)


@group.probe(10, "FL015")
def probe_batch_shapes(ctx: Context) -> None:
    """FL015: the loss must run on batches of 1 and 3 rows, not only on the calibration size."""
    from lossaudit.lint.calibrate import error_text
    from lossaudit.lint.subject import CallTimeout

    if ctx.kind == CENTERNET:
        return
    for rows in (1, 3):
        batch = ctx.batch(rows=rows)
        try:
            ctx.subject.call(ctx.convention, batch)
        except (Exception, SystemExit, CallTimeout) as error:
            ctx.fire_at_failure("FL015", f"raises on a batch of {rows} row{'s' if rows > 1 else ''}: {error_text(error)}", error, {"rows": rows})
            return


@group.probe(140, "FL012")
def probe_input_mutation(ctx: Context) -> None:
    """FL012: the inputs and targets must be unchanged by the call."""
    import torch

    batch = ctx.batch()
    inputs, targets = (tensor.clone() for tensor in ctx.convention.arrange(*ctx.subject.to_call(ctx.convention, batch, grad=False)))
    saved_inputs, saved_targets = inputs.clone(), targets.clone()
    loss = ctx.subject.build()
    ctx.subject.guarded(lambda: loss(inputs, targets))
    changed = [name for name, now, before in (("inputs", inputs, saved_inputs), ("targets", targets, saved_targets)) if not torch.equal(now, before)]
    if changed:
        ctx.fire("FL012", f"the call modifies its {' and '.join(changed)} in place", {"modified": changed})


def _state(obj: object) -> dict:
    import torch

    state = {}
    for key, value in vars(obj).items() if hasattr(obj, "__dict__") else []:
        if key.startswith("_") and key not in ("_buffers", "_parameters"):
            continue
        if key in ("_buffers", "_parameters"):
            for name, tensor in value.items():
                state[f"{key[1:-1]}:{name}"] = None if tensor is None else tensor.detach().clone()
        elif isinstance(value, torch.Tensor):
            state[key] = value.detach().clone()
        else:
            try:
                state[key] = copy.deepcopy(value)
            except Exception:  # an attribute that cannot be copied is not compared
                continue
    return state


def _same(a: Any, b: Any, depth: int = 0) -> bool:
    """Whether an attribute is unchanged. Values that compare by identity (a ``functools.partial``,
    a plain object) are compared by their contents, since ``_state`` holds deep copies."""
    import functools

    import torch

    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, functools.partial) and isinstance(b, functools.partial):
        return a.func is b.func and _same(list(a.args), list(b.args), depth + 1) and _same(a.keywords, b.keywords, depth + 1)
    if depth < 4 and type(a) is type(b):
        if isinstance(a, dict):
            return a.keys() == b.keys() and all(_same(a[key], b[key], depth + 1) for key in a)
        if isinstance(a, (list, tuple)):
            return len(a) == len(b) and all(_same(x, y, depth + 1) for x, y in zip(a, b))
        if type(a).__eq__ is object.__eq__ and hasattr(a, "__dict__"):
            return _same(vars(a), vars(b), depth + 1)
    try:
        return bool(a == b)
    except Exception:
        return False


BATCH_SIZE_STATE = "FL030"
"""The shapes group's rule for a batch size that breaks the next call (where it runs, FL013 leaves
that crash to it)."""

STATE_TOLERANCE = 1e-6
"""FL013: two results that should be equal may differ by this much (relative) before the loss is
said to depend on earlier calls; float32 reductions repeat exactly on the CPU, so any real state
shows far above it."""


def _value(out: torch.Tensor) -> float:
    return float(out.detach().double().sum())


def _differ(a: float, b: float) -> bool:
    if math.isnan(a) and math.isnan(b):
        return False
    return not (math.isfinite(a) and math.isfinite(b)) or abs(a - b) > STATE_TOLERANCE * max(abs(a), abs(b), 1e-12)


@group.probe(150, "FL013")
def probe_stateful(ctx: Context) -> None:
    """FL013, judged by behaviour only: does a call's result depend on earlier calls?

    One instance is called on a batch A, then on a batch B of another size and other class
    counts, then on A again; a fresh instance is called on B. The loss keeps state when the second
    call on A differs from the first, or when B after A differs from B on a fresh instance (an
    alpha built from the first batch, a running mean, a counter), or raises where the fresh one does
    not (a tensor sized by the first batch). Attributes that forward changes are named, but never
    fire the rule alone: a ``functools.partial`` built in ``__init__`` and a counter that no result
    uses are not state. Where the reference keeps state by design (GHM-C with momentum), each call
    must match the reference with its state carried over instead."""
    from lossaudit.lint.calibrate import error_text
    from lossaudit.lint.subject import expects_state, make_batch

    batch = ctx.batch()
    if expects_state(ctx.kind, ctx.params):
        loss = ctx.subject.build()
        first_out, inputs = ctx.subject.call(ctx.convention, batch, loss=loss)
        second, _ = ctx.subject.call(ctx.convention, batch, loss=loss)
        _state_by_design(ctx, batch, inputs, [first_out, second])
        return
    other = make_batch(ctx.kind, ctx.subject.num_classes, torch_generator(ctx.generator_seed + 1), rows=12, background=ctx.convention.has_background)
    fresh_other = None if ctx.subject.is_instance else _value(ctx.subject.call(ctx.convention, other)[0])
    loss = ctx.subject.build()
    before = _state(loss)
    first = _value(ctx.subject.call(ctx.convention, batch, loss=loss)[0])
    try:
        after_first = _value(ctx.subject.call(ctx.convention, other, loss=loss)[0])
    except Exception as error:
        if fresh_other is None:
            raise
        if ctx.fired(BATCH_SIZE_STATE):
            return  # the shapes group reported this crash after an earlier call already
        ctx.fire(
            "FL013",
            f"after a call on a batch of {batch.x.shape[0]} rows, a call on {other.x.shape[0]} rows raises, though a fresh instance computes it ({fresh_other:.6g}): "
            f"state kept from the first call breaks the next: {error_text(error)}",
            {"values": [first, None], "fresh": fresh_other},
            anchor="FL013",
        )
        return
    again = _value(ctx.subject.call(ctx.convention, batch, loss=loss)[0])
    changed = sorted(key for key in set(before) | set(_state(loss)) if not _same(before.get(key), _state(loss).get(key)))
    named = f"; forward changes {', '.join(changed)}" if changed else ""
    evidence = {"values": [first, again], "changed_attributes": changed, "tolerance": STATE_TOLERANCE}
    if _differ(first, again):
        ctx.fire(
            "FL013", f"two calls on the same batch give {first:.6g} and {again:.6g} (a call on another batch between them){named}", evidence, anchor="FL013"
        )
    elif fresh_other is not None and _differ(after_first, fresh_other):
        ctx.fire(
            "FL013",
            f"a batch gives {after_first:.6g} after a call on another batch and {fresh_other:.6g} on a fresh instance: the result depends on earlier calls{named}",
            {**evidence, "after_another_call": after_first, "fresh": fresh_other},
            anchor="FL013",
        )


def torch_generator(seed: int) -> torch.Generator:
    import torch

    return torch.Generator().manual_seed(seed)


def _state_by_design(ctx: Context, batch: Batch, inputs: torch.Tensor, outputs: list[torch.Tensor]) -> None:
    """FL013 for a stateful reference: two successive calls must match the reference's two calls
    with its state carried from one to the next (:func:`~lossaudit.lint.subject.reference_calls`)."""
    from lossaudit.lint.subject import (
        MATCH_TOLERANCE,
        canonical_to_reference_input,
        match_output,
        reference_calls,
    )

    if not ctx.calibration.matched:
        raise Inconclusive("the output matches no reference, so its state cannot be followed against the reference's")
    ref_input = canonical_to_reference_input(ctx.convention, inputs.detach().double())
    references = reference_calls(ctx.kind, ref_input, batch.y.double(), ctx.params, len(outputs))
    errors = [match_output(ctx.kind, out, ref, batch.y, ctx.params).error for out, ref in zip(outputs, references)]
    if errors[0] <= MATCH_TOLERANCE and errors[1] > MATCH_TOLERANCE:
        expected = float(references[1].sum() / references[0].sum()) if float(references[0].sum()) else math.nan
        observed = float(outputs[1].detach().double().sum() / outputs[0].detach().double().sum()) if float(outputs[0].detach().sum()) else math.nan
        ctx.fire(
            "FL013",
            f"the state does not evolve as the reference's moving average (momentum {ctx.params.family['momentum']:g}): the second call on the same batch gives "
            f"{observed:.4f} times the first, expected {expected:.4f}",
            {"second_to_first": observed, "expected_second_to_first": expected, "rel_errors": errors},
            anchor="FL013",
        )
    elif errors[0] > MATCH_TOLERANCE:
        ctx.fire(
            "FL013",
            f"the first call of a new instance differs from the reference (relative error {errors[0]:.3g}) though calibration's instances matched it: state carries over between instances",
            {"rel_errors": errors},
            anchor="FL013",
        )
    else:
        ctx.notes.append(f"FL013: the state evolves as the reference's moving average over two calls (momentum {ctx.params.family['momentum']:g})")


@group.probe(170, "FL021")
def probe_grad_mode(ctx: Context) -> None:
    """FL021: a call must leave torch.is_grad_enabled() as it found it — called under
    torch.no_grad(), grad stays off; called with grad on, it stays on. The mode is read right
    after the target returns, inside :meth:`~lossaudit.lint.subject.Subject.guarded`, which then
    restores it."""
    from lossaudit.lint.calibrate import error_text

    batch = ctx.batch()
    leaked = {}
    for enabled in (False, True):
        try:
            after = _grad_mode_after_call(ctx, batch, enabled)
        except Exception as error:
            if enabled:
                raise
            raise Inconclusive(f"the loss raises under torch.no_grad(): {error_text(error)}") from None
        if after != enabled:
            leaked["torch.no_grad()" if not enabled else "grad enabled"] = after
    if leaked:
        described = "; ".join(f"called under {mode}, it leaves grad {'enabled' if after else 'disabled'} afterwards" for mode, after in leaked.items())
        ctx.fire("FL021", f"the loss changes the caller's grad mode: {described}", {"grad_enabled_after": leaked})


def _grad_mode_after_call(ctx: Context, batch: Batch, enabled: bool) -> bool:
    """torch.is_grad_enabled() right after one call of the target made with grad mode ``enabled``."""
    import torch

    leaf, targets = ctx.subject.to_call(ctx.convention, batch)
    loss = ctx.subject.build()

    def call() -> bool:
        loss(*ctx.convention.arrange(leaf.clone(), targets.clone()))
        return torch.is_grad_enabled()

    with torch.set_grad_enabled(enabled):
        return ctx.subject.guarded(call)
