"""Shapes and sequences of calls: a batch size that breaks the next call of the same loss (FL030),
and a layout the loss accepts but computes wrongly (FL031): the same rows as ``(N, C)``,
``(B, A, C)``, ``(B, C, H, W)`` or ``(B, C, D, H, W)`` must give the same loss. A layout the
loss refuses with an error is not a defect (a note says so)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import product
from typing import TYPE_CHECKING, cast

from lossaudit.lint.anchors import calls
from lossaudit.lint.kinds import CENTERNET, SIGMOID, SOFTMAX
from lossaudit.lint.probing import Inconclusive
from lossaudit.lint.registry import Rule, RuleGroup

if TYPE_CHECKING:
    import torch

    from lossaudit.lint.battery import Context
    from lossaudit.lint.subject import Batch

group = RuleGroup("shapes")

group.rule(
    Rule(
        "FL030",
        "batch-size-state",
        "error",
        "a call on a batch of one size breaks the next call of the same loss on another size",
        "Training feeds one loss object batches of different sizes (the last batch of an epoch, a "
        "validation loader). A loss that builds a tensor sized by the first batch it sees (an alpha or "
        "weight vector of N rows) and keeps it crashes, or broadcasts wrongly, on the next batch of "
        "another size, although every fresh instance runs at any size.",
        "size what the loss keeps by the number of classes, or rebuild per-batch tensors on every call",
        "if self.weights is None:\n    self.weights = torch.ones(logits.shape[0], 1)  # the first batch's N",
        "weights = torch.ones(logits.shape[0], 1, device=logits.device)  # every call",
    ),
    anchor=(calls("ones", "zeros", "full", "ones_like", "zeros_like", "tensor", "Tensor"),),
)
group.rule(
    Rule(
        "FL031",
        "layout-mismatch",
        "error",
        "the loss accepts a layout such as (B, C, H, W) but computes a different loss there than on the same elements as (N, C) rows",
        "A segmentation map (B, C, H, W), a volume (B, C, D, H, W) or a detector's anchors (B, A, C) hold "
        "one row of C values per pixel or anchor. Flattening a channels-first map with view(-1, C) or "
        "reshape(-1, C) reads its memory as rows of C neighbouring pixels of one channel, so every "
        "'row' mixes pixels while the targets stay per pixel: the loss runs and is wrong. The same "
        "elements must give the same loss whatever the layout. An error where the loss's code reshapes, "
        "permutes or reads the dimensions of its input (it means to take other layouts); an info where "
        "it never does (a loss written for (N, C) rows that broadcasting lets maps through).",
        "move the class axis last before flattening: logits.movedim(1, -1).reshape(-1, C) (targets.reshape(-1) for indices)",
        "logits = logits.view(-1, logits.shape[1])       # (B, C, H, W): mixes pixels",
        "logits = logits.movedim(1, -1).reshape(-1, logits.shape[1])  # one row per pixel",
    ),
    anchor=(calls("view", "reshape", "flatten"),),
)

SIZES = (16, 12, 20)
"""Row counts of the batches one instance is called with in turn (FL030)."""
LAYOUT_TOLERANCE = 1e-4
"""Relative difference between two layouts' totals above which FL031 fires."""


@group.probe(13, "FL030")
def probe_batch_size_sequence(ctx: Context) -> None:
    """FL030: one instance called with batches of 16, 12 and 20 rows in turn must run each time
    when a fresh instance runs on each size (a fresh instance failing is FL015's)."""
    from lossaudit.lint.calibrate import error_text
    from lossaudit.lint.subject import CallTimeout

    if ctx.kind == CENTERNET:
        return
    loss = ctx.subject.build()
    previous = None
    for rows in SIZES:
        batch = ctx.batch(rows=rows)
        try:
            ctx.subject.call(ctx.convention, batch, loss=loss)
        except (Exception, SystemExit) as error:
            if previous is None:
                raise Inconclusive(f"the first call, on {rows} rows, fails") from error
            try:
                ctx.subject.call(ctx.convention, batch)
            except (Exception, SystemExit, CallTimeout):
                raise Inconclusive(f"a fresh instance fails on {rows} rows too (FL015)") from error
            ctx.fire_at_failure(
                "FL030",
                f"after a call on a batch of {previous} rows, the same loss raises on a batch of {rows} rows "
                f"(a fresh instance runs on {rows}): {error_text(error)}",
                error,
                {"first_rows": previous, "second_rows": rows, "sizes": list(SIZES)},
            )
            return
        previous = rows


@dataclass(frozen=True)
class Layout:
    """The rows of a batch as ``images`` images (or sequences) of ``extents`` positions: the
    class axis second (``channels_first``, PyTorch's convention for maps and (B, C, L)) or last
    ((B, A, C), a detector's anchors)."""

    name: str
    images: int
    extents: tuple[int, ...]
    channels_first: bool

    def shape(self, classes: int) -> tuple[int, ...]:
        if self.channels_first:
            return (self.images, classes, *self.extents)
        return (self.images, *self.extents, classes)

    def arrange(self, inputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Canonical ``(N, C)`` inputs and ``(N,)`` or ``(N, C)`` targets in this layout, rows in
        image-major, then position order."""

        def place(rows: torch.Tensor) -> torch.Tensor:
            laid = rows.reshape(self.images, *self.extents, rows.shape[1])
            return laid.movedim(-1, 1) if self.channels_first else laid

        return place(inputs), (place(targets) if targets.dim() == 2 else targets.reshape(self.images, *self.extents))

    def other_reading(self) -> Layout:
        """The same extents with the class axis at the other end: (B, C, L) for (B, A, C), (B, H, W, C) for (B, C, H, W)."""
        names = {2: ("(B, C, L)", "(B, A, C)"), 3: ("(B, C, H, W)", "(B, H, W, C)"), 4: ("(B, C, D, H, W)", "(B, D, H, W, C)")}[len(self.extents) + 1]
        return Layout(names[0] if not self.channels_first else names[1], self.images, self.extents, not self.channels_first)


def _layouts(rows: int, classes: int) -> list[Layout]:
    """The layouts the probe tries for ``rows`` rows of ``classes`` values: two images or
    sequences, no extent equal to C (a loss must not be able to mistake one for the class axis)."""
    per_image = rows // 2
    layouts = [Layout("(N, C)", rows, (), False)]
    if per_image != classes:
        layouts.append(Layout("(B, A, C)", 2, (per_image,), False))
    for name, count in (("(B, C, H, W)", 2), ("(B, C, D, H, W)", 3)):
        extents = next((e for e in product(range(2, per_image + 1), repeat=count) if math.prod(e) == per_image and classes not in e), None)
        if extents is not None:
            layouts.append(Layout(name, 2, extents, True))
    return layouts


LAYOUT_ROWS = 24
"""Rows of the layout probe's batch (two images of 12 positions: 12 anchors, 2 × 6, 2 × 2 × 3
pixels for 5 classes)."""
CALIBRATED_LAYOUTS = {"rows": "(N, C)", "spatial": "(B, C, 1, W)", "sequence": "(B, C, L)"}
"""How the finding names the layout calibration called the target with."""


def _total(ctx: Context, inputs: torch.Tensor, targets: torch.Tensor) -> float:
    """The summed output of a fresh instance on ``inputs`` and ``targets``."""
    from lossaudit.lint.subject import output_tensor

    loss = ctx.subject.build()
    out = ctx.subject.guarded(lambda: output_tensor(loss(inputs.clone(), targets.clone())))
    return float(out.detach().double().sum())


@group.probe(17, "FL031")
def probe_layouts(ctx: Context) -> None:
    """FL031 (the sigmoid and softmax focal kinds): the same 24 rows as (N, C), (B, A, C),
    (B, C, H, W) and (B, C, D, H, W) must give the loss of the calibrated layout, up to a ratio of
    counts that a per-image normaliser explains. A layout also counts as accepted when the loss
    matches with the class axis at the other end (PyTorch's channels-first (B, C, L), a
    channels-last map); one it refuses with an error is noted, not reported."""
    from lossaudit.lint.calibrate import error_text
    from lossaudit.lint.subject import CallTimeout

    if ctx.kind not in (SIGMOID, SOFTMAX):
        return  # the families keep their own layouts (timm's ASL and LS-CE take (N, C) only), GHM-C its state
    batch = ctx.batch(rows=LAYOUT_ROWS)
    leaf, targets = ctx.subject.to_call(ctx.convention, batch)
    try:
        expected = _total(ctx, *ctx.convention.arrange(leaf, targets))
    except (Exception, SystemExit, CallTimeout) as error:
        raise Inconclusive(f"the calibrated layout fails on {LAYOUT_ROWS} rows: {error_text(error)}") from error
    if not math.isfinite(expected):
        raise Inconclusive(f"the calibrated layout gives a non-finite loss on {LAYOUT_ROWS} rows")
    calibrated = CALIBRATED_LAYOUTS.get(ctx.convention.layout, ctx.convention.layout)
    classes = ctx.subject.num_classes
    wrong, refused = [], []
    for layout in _layouts(LAYOUT_ROWS, classes):
        if layout.name == calibrated:
            continue
        readings = [layout] if not layout.extents else [layout, layout.other_reading()]
        values = [_value_or_error(ctx, reading, leaf, targets) for reading in readings]
        if any(isinstance(v, float) and _same_up_to_a_count(v, expected, reading, classes) for v, reading in zip(values, readings, strict=True)):
            continue
        ran = [(reading, v) for reading, v in zip(readings, values, strict=True) if isinstance(v, float)]
        if ran:
            reading, value = ran[0]
            wrong.append(
                {"layout": reading.name, "shape": list(reading.shape(classes)), "loss": value, "other_reading": readings[-1].name if len(ran) > 1 else None}
            )
        else:
            refused.append(f"{layout.name} {error_text(cast(BaseException, values[0]))[:120]}")
    if refused:
        ctx.notes.append(f"{ctx.prefix}FL031: layouts the loss refuses (not a defect): " + "; ".join(refused))
    if wrong:
        _report_layouts(ctx, wrong, calibrated, expected, _reference_total(ctx, batch))


def _value_or_error(ctx: Context, layout: Layout, leaf: torch.Tensor, targets: torch.Tensor) -> float | BaseException:
    try:
        return _total(ctx, *layout.arrange(leaf, targets))
    except (Exception, SystemExit) as error:
        return error


def _report_layouts(ctx: Context, wrong: list[dict], calibrated: str, expected: float, reference: float | None) -> None:
    """FL031 naming each layout whose loss differs from the calibrated layout's on the same rows:
    an error where the loss's code rearranges its input (it means to take those layouts and
    does it wrong), an info where it never does (written for one layout, which broadcasting
    lets other shapes through; harmless until someone passes one)."""

    def described(entry: dict) -> str:
        also = f" (read as {entry['other_reading']} it differs too)" if entry["other_reading"] else ""
        return f"{entry['loss']:.6g} on {entry['layout']} inputs of shape {tuple(entry['shape'])}{also}"

    against = f" (the reference: {reference:.6g})" if reference is not None else ""
    first = wrong[0]
    difference = abs(first["loss"] - expected) / max(abs(expected), 1e-12) if math.isfinite(first["loss"]) else math.inf
    names = ", ".join(entry["layout"] for entry in wrong)
    same = f"the same elements give {expected:.6g} in the {calibrated} layout{against} but {'; '.join(described(e) for e in wrong)}"
    evidence = {
        "layouts": wrong,
        "calibrated_layout": calibrated,
        "calibrated_loss": expected,
        "reference_loss": reference,
        "relative_difference": difference,
        "tolerance": LAYOUT_TOLERANCE,
    }
    if ctx.locator.rearranges_inputs() is False:
        ctx.fire(
            "FL031",
            f"{same}: the loss is written for {calibrated} inputs only (it never reshapes its input or reads its "
            f"number of dimensions), and takes {names} without an error although it computes over the wrong axes there; "
            f"harmless while it only sees {calibrated} inputs, but reject other shapes (or move the class axis) before "
            "someone passes maps",
            {**evidence, "handles_layouts": False},
            severity="info",
            fix="refuse other shapes (if logits.dim() != 2: raise ValueError(...)), or move the class axis last and flatten: "
            "logits.movedim(1, -1).reshape(-1, C)",
        )
        return
    ctx.fire("FL031", f"{same}: the loss flattens or reduces {names} over the wrong axes", evidence)


def _same_up_to_a_count(value: float, expected: float, layout: Layout, classes: int) -> bool:
    """Whether ``value`` is ``expected`` times a ratio of the layout's counts (images, positions
    per image, classes, rows): the same loss normalised otherwise (a mean per image, a mean over
    dim 1 of a (B, A, C) tensor)."""
    if not math.isfinite(value):
        return False
    positions = math.prod(layout.extents)
    counts = {1, layout.images, positions, layout.images * positions, classes, layout.images * positions * classes}
    return any(abs(value - expected * a / b) <= LAYOUT_TOLERANCE * max(abs(expected * a / b), 1e-12) for a in counts for b in counts)


def _reference_total(ctx: Context, batch: Batch) -> float | None:
    """The reference's total on ``batch`` under the calibrated normalisation, when calibration
    matched (else None)."""
    from lossaudit.lint.subject import canonical_to_reference_input, normalisers, reference_elements

    if not ctx.calibration.matched or ctx.calibration.confusion:
        return None
    inputs, _ = ctx.subject.to_call(ctx.convention, batch, grad=False)
    elements = reference_elements(ctx.kind, canonical_to_reference_input(ctx.convention, inputs.double()), batch.y.double(), ctx.params)
    name = ctx.calibration.match.normalisation
    divisor = 1.0 if name == "none" else normalisers(ctx.kind, batch.y, ctx.params).get(name)
    return None if divisor is None else float(elements.sum()) / divisor
