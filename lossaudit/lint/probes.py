"""The probe battery: each probe isolates one defect and emits its rule.

Design rules that keep a probe from firing on another rule's defect:

- Ratio probes compare two calls with the *same targets*, so any normaliser that depends on the
  targets cancels.
- Element probes use 'isolation' batches: one active element, every other element 'quiet'
  (|logit| = 14 on its correct side, reference loss < 1e-6); they first check that the quiet
  batch is quiet for this target, and report nothing when it is not.
- Gradient probes compare ratios of gradients within one call, so the normaliser cancels too.
- Probes that reason per element are skipped once the loss is found to be batch-coupled (FL008)
  or a softmax (FL003); the note says why (``-v``). What a finding does not explain is checked
  after the battery (:func:`run_probes`).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field, replace
from typing import Callable

import torch

from lossaudit.lint.calibrate import error_text
from lossaudit.lint.findings import Finding
from lossaudit.lint.locate import Locator
from lossaudit.lint.peers import DEPARTURES, followed
from lossaudit.lint.rules import RULES_BY_CODE
from lossaudit.lint.subject import (
    CONVENTIONAL,
    DEFAULT_ALPHA,
    DEFAULT_GAMMA,
    FAMILY_BASES,
    FAMILY_PARAMETERS,
    FOCUSING,
    MATCH_TOLERANCE,
    QUIET,
    SOFT_TARGET_KINDS,
    Batch,
    Calibration,
    CallTimeout,
    Convention,
    Params,
    Subject,
    canonical_to_reference_input,
    expects_state,
    make_batch,
    match_output,
    normalisers,
    output_tensor,
    reference_calls,
    reference_elements,
)

RATIO_TOLERANCE = 0.03
COUPLING_TOLERANCE = 1e-5
GRADIENT_TOLERANCE = 1e-3
VALUE_RULES = frozenset({"FL001", "FL002", "FL003", "FL004", "FL005", "FL006", "FL008", "FL010", "FL013", "FL016", "FL023", "FL024"})
"""Rules that explain a value mismatch; FL014 fires only when none of them did."""


class Inconclusive(Exception):
    """A probe's precondition does not hold for this target; the reason becomes a note."""


@dataclass
class Context:
    """What every probe needs: the subject, what calibration found, and where findings go."""

    subject: Subject
    calibration: Calibration
    locator: Locator
    generator_seed: int
    findings: list[Finding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    current_probe: str = "calibration"
    prefix: str = ""
    """Put before every message: how the target was read (e.g. as a softmax loss after FL003)."""

    @property
    def convention(self) -> Convention:
        return self.calibration.convention

    @property
    def kind(self) -> str:
        return self.convention.kind

    @property
    def base(self) -> str:
        """The focal kind whose batches this kind shares (:data:`~lossaudit.lint.subject.FAMILY_BASES`)."""
        return self.convention.base

    @property
    def params(self) -> Params:
        return self.calibration.params

    def fire(self, code: str, message: str, evidence: dict, severity: str = "", anchor: str | None = None) -> None:
        path, line = self.locator.find(anchor or code)
        evidence = {"probe": self.current_probe, **_rounded(evidence)}
        fix = RULES_BY_CODE[code].fix_for(self.kind)
        self.findings.append(Finding(code, self.prefix + message, path=path, line=line, evidence=evidence, severity=severity, fix=fix))

    def fired(self, *codes: str) -> bool:
        return any(finding.code in codes for finding in self.findings)

    def generator(self) -> torch.Generator:
        return torch.Generator().manual_seed(self.generator_seed)

    def follows(self) -> list[str]:
        """The libraries whose documented convention the calibrated target follows."""
        if not self.calibration.matched:
            return []
        return followed(self.kind, self.params.scheme, self.convention.encoding, self.calibration.match.normalisation)

    def batch(self, rows: int = 16) -> Batch:
        """A moderate batch of this kind that the calling convention can express."""
        return make_batch(self.kind, self.subject.num_classes, self.generator(), rows=rows, background=self.convention.has_background)

    def total(self, batch: Batch, **overrides: object) -> float:
        """The target's output on ``batch`` as one number (summed when it is not a scalar)."""
        out, _ = self.subject.call(self.convention, batch, **overrides)
        return float(out.detach().double().sum())

    def gradient(self, batch: Batch, **overrides: object) -> torch.Tensor:
        return self.output_and_gradient(batch, **overrides)[1]

    def output_and_gradient(self, batch: Batch, **overrides: object) -> tuple[torch.Tensor, torch.Tensor]:
        """One call's output and the gradient it gives the inputs."""
        out, inputs = self.subject.call(self.convention, batch, **overrides)
        if not out.requires_grad:
            raise Inconclusive("the output carries no gradient to the inputs")
        (grad,) = torch.autograd.grad(out.sum(), inputs, allow_unused=True)
        if grad is None:
            raise Inconclusive("the output does not depend on the inputs through autograd")
        return out.detach(), grad.detach().double()

    def reference_gradient(self, batch: Batch) -> torch.Tensor:
        inputs, _ = self.subject.to_call(self.convention, batch, dtype=torch.float64)
        ref = reference_elements(self.kind, canonical_to_reference_input(self.convention, inputs), batch.y.double(), self.params)
        (grad,) = torch.autograd.grad(ref.sum(), inputs)
        return grad


def _rounded(evidence: dict) -> dict:
    def clean(value: object) -> object:
        if isinstance(value, float):
            return None if not math.isfinite(value) else float(f"{value:.6g}")
        if isinstance(value, dict):
            return {key: clean(item) for key, item in value.items()}
        if isinstance(value, (list, tuple)):
            return [clean(item) for item in value]
        return value

    return clean(evidence)


SKIP_REASONS = {
    "FL003": "classes are coupled like a softmax (FL003): per-element ratios are not defined",
    "FL004": "the modulating factor is wrong without class weights already (FL004)",
    "FL005": "gamma does not reach the loss (FL005)",
    "FL008": "the loss is batch-coupled (FL008): per-element ratios are not defined",
    "FL011": "ignored rows already reach the loss (FL011)",
    "FL013": "repeated calls differ (FL013): two calls cannot be compared",
    "FL023": "the class weight changes the modulating factor (FL023)",
}


def _skip_after(ctx: Context, *codes: str) -> None:
    """Stop a probe whose premise an earlier finding broke; the reason is listed under -v."""
    for code in codes:
        if ctx.fired(code):
            raise Inconclusive(f"skipped: {SKIP_REASONS[code]}")


def _close(observed: float, expected: float, tolerance: float = RATIO_TOLERANCE) -> bool:
    return math.isfinite(observed) and abs(observed - expected) <= tolerance * abs(expected)


# --------------------------------------------------------------------------------------------
# Probes
# --------------------------------------------------------------------------------------------


def _isolation(ctx: Context, active: str, value: float) -> Batch:
    """Sigmoid/binary batch with every element quiet but one: a positive (row 0, class 0) or a
    negative (row 5, class 0: a background row, or a row of class 1 when the convention has no
    background label) at logit ``value``; ``active='none'`` leaves all quiet."""
    if ctx.kind == "binary":
        y = torch.tensor([1.0, 1.0, 0.0, 0.0, 1.0, 0.0])
        x = torch.where(y == 1, torch.tensor(QUIET), torch.tensor(-QUIET))
        if active == "positive":
            x[0] = value
        elif active == "negative":
            x[2] = value
        return Batch(x, y)
    classes = ctx.subject.num_classes
    y = torch.zeros(6, classes)
    for row in range(4):
        y[row, row % classes] = 1.0
    if not ctx.convention.has_background:
        y[4:, 1 % classes] = 1.0  # every row needs a class; column 0 of row 5 stays a negative
    x = torch.where(y == 1, torch.tensor(QUIET), torch.tensor(-QUIET))
    if active == "positive":
        x[0, 0] = value
    elif active == "negative":
        x[5, 0] = value
    return Batch(x, y)


def _softmax_isolation(ctx: Context, active_row: int | None, target_probability: float = 0.5, predicted_logit: float | None = None) -> Batch:
    """Softmax rows with targets shifted by one (row i -> class i+1), all quiet (target logit 14)
    but ``active_row``, whose target gets probability ``target_probability`` or, with
    ``predicted_logit``, a logit 0 against another class at ``predicted_logit``."""
    classes = ctx.subject.num_classes
    rows = classes
    labels = (torch.arange(rows) + 1) % classes
    x = torch.zeros(rows, classes)
    x[torch.arange(rows), labels] = QUIET
    if active_row is not None:
        x[active_row] = 0.0
        target = int(labels[active_row])
        if predicted_logit is not None:
            x[active_row, (target + 1) % classes] = predicted_logit
        else:
            x[active_row, target] = math.log(target_probability * (classes - 1) / (1 - target_probability))
    return Batch(x, torch.nn.functional.one_hot(labels, classes).float())


def _require_quiet(ctx: Context, active_total: float, quiet_batch: Batch, **overrides: object) -> None:
    quiet = ctx.total(quiet_batch, **overrides)
    if not (math.isfinite(active_total) and math.isfinite(quiet)) or abs(quiet) > 1e-3 * abs(active_total) or active_total == 0:
        raise Inconclusive(f"quiet elements are not quiet for this target (quiet {quiet:.3g} vs active {active_total:.3g})")


def probe_alpha_balance(ctx: Context) -> None:
    """FL001 / FL002 (sigmoid, binary): alpha must weight positives by alpha, negatives by 1 - alpha.

    Two isolation batches, one active positive and one active negative at p = 0.5, each called with
    alpha 0.25 and 0.75: the reference ratios loss(0.25) / loss(0.75) are 1/3 and 3. Varifocal's
    alpha weights negatives only: ratios 1 and 1/3.
    """
    if ctx.kind not in ("sigmoid", "binary", "vfl"):
        return
    _skip_after(ctx, "FL003")
    if not ctx.subject.accepts("alpha"):
        raise Inconclusive("the target has no alpha parameter")
    if isinstance(ctx.subject.value("alpha", None), (list, tuple, torch.Tensor)):
        raise Inconclusive("alpha is per class")
    ratios = {}
    for side in ("positive", "negative"):
        batch = _isolation(ctx, side, 0.0)
        low, high = ctx.total(batch, alpha=0.25), ctx.total(batch, alpha=0.75)
        try:
            _require_quiet(ctx, low, _isolation(ctx, "none", 0.0), alpha=0.25)
        except Inconclusive:
            _constant_alpha_on_a_batch(ctx)
            raise
        if high == 0:
            raise Inconclusive(f"the {side} element has zero loss at alpha 0.75")
        ratios[side] = low / high
    expected = {"positive": 1.0, "negative": 0.25 / 0.75} if ctx.kind == "vfl" else {"positive": 0.25 / 0.75, "negative": 0.75 / 0.25}
    if all(_close(ratios[side], expected[side]) for side in ratios):
        return
    evidence = {"loss(alpha=0.25)/loss(alpha=0.75)": ratios, "expected": expected, "tolerance": RATIO_TOLERANCE}
    if ctx.kind == "vfl":
        shape = " (alpha applied twice: alpha**2)" if _close(ratios["negative"], 1 / 9) else ""
        ctx.fire("FL002", f"Varifocal's alpha must weight negatives only{shape}: loss(alpha=0.25)/loss(alpha=0.75) = {ratios['positive']:.4f} on a positive (expected 1.0000), "
                 f"{ratios['negative']:.4f} on a negative (expected 0.3333)", {**evidence, "alpha_reading": None})
        return
    if _close(ratios["positive"], 1 / 3) and _close(ratios["negative"], 1 / 3):
        ctx.fire("FL001", f"alpha rescales positives and negatives alike: loss(alpha=0.25)/loss(alpha=0.75) = {ratios['negative']:.4f} on a negative (expected 3.0000)", {**evidence, "alpha_reading": "constant"})
        return
    shapes = {(3.0, 1 / 3): ("positives are weighted by 1 - alpha and negatives by alpha (inverted)", "inverted"), (1 / 9, 9.0): ("alpha is applied twice (alpha**2)", None),
              (1.0, 1.0): ("alpha has no effect on either side", None)}
    description, reading = next((shape for (pos, neg), shape in shapes.items() if _close(ratios["positive"], pos) and _close(ratios["negative"], neg)), (None, None))
    if description is None:
        sides = [side for side in ratios if _close(ratios[side], 1.0)]
        description = f"the {sides[0]}s are left unweighted" if sides else "alpha weights the sides wrongly"
    ctx.fire("FL002", f"{description}: loss(alpha=0.25)/loss(alpha=0.75) = {ratios['positive']:.4f} on a positive (expected 0.3333), {ratios['negative']:.4f} on a negative (expected 3.0000)",
             {**evidence, "alpha_reading": reading})


def _constant_alpha_on_a_batch(ctx: Context) -> None:
    """FL001 when isolation is impossible (e.g. a clamp keeps quiet elements loud): on a batch with
    positives and negatives, loss(alpha=0.25) / loss(alpha=0.75) is 1/3 only if alpha multiplies
    every element alike (alpha_t gives (0.25 P + 0.75 N) / (0.75 P + 0.25 N), P, N > 0)."""
    batch = ctx.batch()
    low, high = ctx.total(batch, alpha=0.25), ctx.total(batch, alpha=0.75)
    if high and _close(low / high, 1 / 3, 1e-4):
        ctx.fire("FL001", f"alpha rescales every element alike: loss(alpha=0.25)/loss(alpha=0.75) = {low / high:.4f} on a batch of positives and negatives "
                 "(alpha_t would give a ratio between 1/3 and 3 that depends on the mix)",
                 {"loss(alpha=0.25)/loss(alpha=0.75)": low / high, "alpha_reading": "constant", "isolation": "impossible: quiet elements are not quiet"})


def probe_softmax_alpha(ctx: Context) -> None:
    """FL001 (info) / FL010 (softmax): a scalar alpha only rescales; a per-class alpha must be
    taken at the target class. Rows' unweighted losses are equal by construction, so the ratio of
    two active rows' losses must be alpha[target_a] / alpha[target_b]."""
    if ctx.kind != "softmax" or not ctx.subject.accepts("alpha"):
        return
    declared = ctx.subject.value("alpha", None)
    if isinstance(declared, (list, tuple, torch.Tensor)):
        classes = ctx.subject.num_classes
        offset = classes - len(declared)  # 1 when the vector omits class 0 (MONAI without background)
        vector = [round(0.1 + 0.8 * c / max(classes - 1, 1), 4) for c in range(offset, classes)]
        probe_alpha = torch.tensor(vector) if isinstance(declared, torch.Tensor) else type(declared)(vector)
        totals = [ctx.total(_softmax_isolation(ctx, row, predicted_logit=2.0), alpha=probe_alpha) for row in (0, 1)]
        targets = [(row + 1) % classes for row in (0, 1)]
        if totals == [0.0, 0.0]:
            ctx.fire("FL010", f"with alpha {vector} the loss is 0 for every row: alpha becomes 0 (an integer cast?)", {"alpha": vector, "losses": totals})
            return
        _require_quiet(ctx, totals[0], _softmax_isolation(ctx, None), alpha=probe_alpha)
        def at(target: int) -> float:
            return vector[target - offset]

        expected = at(targets[0]) / at(targets[1])
        observed = totals[0] / totals[1] if totals[1] else math.inf
        evidence = {"alpha": vector, "target_classes": targets, "observed_ratio": observed, "expected_ratio": expected, "tolerance": RATIO_TOLERANCE}
        if _close(observed, expected):
            return
        if _close(observed, 1.0):
            ctx.fire("FL001", f"the per-class alpha weights every class alike: rows of classes {targets[0]} and {targets[1]} have loss ratio {observed:.4f} (expected alpha ratio {expected:.4f})", evidence)
            return
        predicted = [(t + 1) % classes for t in targets]
        if _close(observed, at(predicted[0]) / at(predicted[1])):
            cause = "alpha is indexed by the predicted class, not the target"
        elif _close(observed, vector[0] / vector[1]):
            cause = "alpha is broadcast by row position, not by target class"
        else:
            cause = "alpha is not taken at the target class"
        ctx.fire("FL010", f"{cause}: loss ratio of rows with targets {targets[0]} and {targets[1]} is {observed:.4f}, expected alpha[{targets[0]}]/alpha[{targets[1]}] = {expected:.4f}", evidence)
        return
    if not isinstance(declared, (int, float)) or declared < 0:
        raise Inconclusive("the target's alpha is not set to a scalar")
    batch = ctx.batch()
    low, high = ctx.total(batch, alpha=0.25), ctx.total(batch, alpha=0.75)
    if high and _close(low / high, 1 / 3, 1e-4):
        ctx.fire(
            "FL001",
            f"a scalar alpha multiplies every class alike (mmcv softmax_focal_loss's convention): loss(alpha=0.25)/loss(alpha=0.75) = {low / high:.4f}; "
            "it rescales the loss, it does not balance classes",
            {"loss(alpha=0.25)/loss(alpha=0.75)": low / high},
            severity="info",
        )


def probe_coupling(ctx: Context) -> None:
    """FL008 (all kinds) and FL003 (sigmoid): changing one logit must not change the gradient of
    any other element of the reference (a diagonal Hessian), except within a row for softmax.
    GHM-C is batch-coupled by design: its weights come from the batch's histogram of g."""
    if ctx.kind == "ghm":
        raise Inconclusive("GHM-C's weights depend on the whole batch by design")
    batch = ctx.batch()
    before = ctx.gradient(batch)
    changed = batch.clone()
    if ctx.kind == "centernet":
        changed.x[0, 0, 0, 0] = 0.5 if changed.x[0, 0, 0, 0] < 0.5 else 0.2
        other = torch.ones_like(before, dtype=torch.bool)
        other[0, 0, 0, 0] = False
        same_row = torch.zeros_like(other)
    elif ctx.kind == "binary":
        changed.x[0] += 1.5
        other = torch.ones_like(before, dtype=torch.bool)
        other[0] = False
        same_row = torch.zeros_like(other)
    else:
        changed.x[0, 1] += 1.5
        other = torch.ones_like(before, dtype=torch.bool)
        other[0, 1] = False
        same_row = torch.zeros_like(other)
        same_row[0] = True
        same_row[0, 1] = False
    after = ctx.gradient(changed)
    scale = float(before.abs().max()) or 1.0
    cross = float(((after - before).abs() * (other & ~same_row)).max()) / scale
    within = float(((after - before).abs() * same_row).max()) / scale if same_row.any() else 0.0
    evidence = {"max_relative_gradient_change_other_rows": cross, "max_relative_gradient_change_same_row": within, "tolerance": COUPLING_TOLERANCE}
    if cross > COUPLING_TOLERANCE:
        ctx.fire("FL008", f"changing one logit changes the gradient of other examples by up to {cross:.3g} (relative): each example's loss depends on the rest of the batch", evidence)
    elif ctx.base == "sigmoid" and within > COUPLING_TOLERANCE:
        ctx.fire("FL003", f"changing one class's logit changes the gradient of the other classes of its row by up to {within:.3g} (relative): classes are coupled like a softmax", evidence, anchor="FL003")


def probe_background_rows(ctx: Context) -> None:
    """FL003 (sigmoid): background rows (all-zero targets) must contribute loss. Two batches with
    the same targets differ only in the background rows' logits (-3 versus +3)."""
    if ctx.base != "sigmoid":
        return
    if not ctx.convention.has_background:
        raise Inconclusive(f"the target is called with {ctx.convention.describe()}, which has no background rows")
    batch = ctx.batch()
    background = batch.y.sum(dim=1) == 0
    confident, wrong = batch.clone(), batch.clone()
    confident.x[background] = -3.0
    wrong.x[background] = 3.0
    overrides = _reference_alpha_override(ctx)
    low, high = ctx.total(confident, **overrides), ctx.total(wrong, **overrides)
    if math.isfinite(low) and abs(high - low) <= 1e-9 * max(abs(low), 1e-12):
        ctx.fire("FL003", f"background rows (all-zero targets) contribute nothing: raising their logits from -3 to +3 leaves the loss at {low:.6g}", {"loss_confident_background": low, "loss_wrong_background": high})


def _reference_alpha_override(ctx: Context) -> dict:
    """alpha=0.25 for probes that are not about alpha, so a user's alpha of 0 or 1 (which zeroes a
    side on purpose) does not look like another defect."""
    declared = ctx.subject.value("alpha", None)
    if ctx.subject.accepts("alpha") and isinstance(declared, (int, float)) and declared >= 0:
        return {"alpha": DEFAULT_ALPHA}
    return {}


def probe_gamma(ctx: Context) -> None:
    """FL005: changing the focusing exponent (gamma; QFL's beta, ASL's gamma_neg) from 2 to 0.5
    must change the loss."""
    if ctx.kind in ("centernet", "ls-ce", "ghm"):
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


def _reference_total(ctx: Context, batch: Batch) -> float:
    """The reference's summed loss on ``batch``, under the calibrated reading of the target."""
    inputs, _ = ctx.subject.to_call(ctx.convention, batch, dtype=torch.float64, grad=False)
    return float(reference_elements(ctx.kind, canonical_to_reference_input(ctx.convention, inputs), batch.y.double(), ctx.params).sum())


def probe_modulating_factor(ctx: Context) -> None:
    """FL004: the factor must be (1 - p_t)^gamma. Isolation batches put one active element at two
    probabilities; the ratio of the two losses is fixed by the reference (alpha and the normaliser
    cancel; for a positive, (0.2^g ln 0.8) / (0.7^g ln 0.3)): positives at p = 0.8 and 0.3,
    negatives at p = 0.2 and 0.6."""
    if ctx.kind in ("centernet", "ls-ce", "ghm"):
        return
    _skip_after(ctx, "FL008", "FL003", "FL005")
    gamma = ctx.params.gamma
    checks = {side: (observed, _reference_total(ctx, batches[0]) / _reference_total(ctx, batches[1])) for side, (observed, batches) in _factor_ratios(ctx).items()}
    wrong = {side: values for side, values in checks.items() if not _close(*values)}
    if wrong:
        side, (observed, expected) = next(iter(wrong.items()))
        factor = FAMILY_FACTORS.get(ctx.kind, f"(1 - p_t)^{gamma:g}")
        ctx.fire(
            "FL004",
            f"the modulating factor is not {factor} on {_side_text(side)}: loss ratio at {FACTOR_POINTS[side]} is {observed:.4f}, expected {expected:.4f}",
            {"observed_ratio": {k: v[0] for k, v in checks.items()}, "expected_ratio": {k: v[1] for k, v in checks.items()}, "gamma": gamma, "tolerance": RATIO_TOLERANCE},
            anchor="FL004:asl" if ctx.kind == "asl" else None,  # ASL's factor goes wrong where the shift is taken
        )


FAMILY_FACTORS = {
    "qfl": "QFL's |y - p|^beta (y the IoU quality)",
    "vfl": "Varifocal's (q on positives, alpha p^gamma on negatives)",
    "asl": "ASL's ((1 - p)^gamma_pos on positives, p_m^gamma_neg on negatives with p_m = max(p - clip, 0))",
}
"""How the modulating factor of each family kind reads in an FL004 finding."""
SOFT_QUALITY = 0.6
"""The target of the active positive in factor probes of soft-target kinds (QFL, VFL)."""
FACTOR_POINTS = {"positive": "p = 0.8 and 0.3", "target class": "p = 0.8 and 0.3", "negative": "p = 0.2 and 0.6"}
"""The probabilities of the active element in the two batches of :func:`_factor_ratios`."""


def _side_text(side: str) -> str:
    return "the target class" if side == "target class" else side + "s"


def _factor_ratios(ctx: Context, **overrides: object) -> dict[str, tuple[float, tuple[Batch, Batch]]]:
    """Per side ('positive' and 'negative', or the softmax 'target class'): the target's loss ratio
    between two isolation batches whose active element sits at the two probabilities of
    :data:`FACTOR_POINTS`, and the two batches (a QFL/VFL positive of quality
    :data:`SOFT_QUALITY`). Inconclusive when quiet elements are not quiet."""
    if ctx.kind == "softmax":
        sides = {"target class": [_softmax_isolation(ctx, 0, p) for p in (0.8, 0.3)]}
        quiet = _softmax_isolation(ctx, None)
    else:
        sides = {side: [_isolation(ctx, side, math.log(p / (1 - p))) for p in (p_a, p_b)] for side, (p_a, p_b) in (("positive", (0.8, 0.3)), ("negative", (0.2, 0.6)))}
        quiet = _isolation(ctx, "none", 0.0)
        if ctx.kind in SOFT_TARGET_KINDS:
            for batch in sides["positive"]:
                batch.y[0, 0] = SOFT_QUALITY
    ratios = {}
    for side, batches in sides.items():
        totals = [ctx.total(batch, **overrides) for batch in batches]
        _require_quiet(ctx, totals[1], quiet, **overrides)
        ratios[side] = (totals[0] / totals[1] if totals[1] else math.inf, (batches[0], batches[1]))
    return ratios


WEIGHT_PARAMETERS = ("weight", "class_weight", "pos_weight")
"""Names of per-class weight vectors: ``weight`` (F.cross_entropy, kornia, MONAI), ``class_weight``
(mmdet), ``pos_weight`` (BCE's weight of the positive term, sigmoid losses only)."""
WEIGHT_FACTOR = 3.0
"""The weight a probe gives one class, every other class keeping weight 1."""


def _weight_parameter(ctx: Context) -> str:
    """The name of the target's per-class weight parameter; Inconclusive without one."""
    if ctx.kind not in ("sigmoid", "softmax"):
        raise Inconclusive(f"class weights are probed on sigmoid and softmax focal losses, not on a {ctx.kind} loss")
    parameters = ctx.subject.signature.parameters if ctx.subject.signature is not None and not ctx.subject.is_instance else {}
    names = [name for name in WEIGHT_PARAMETERS if name in parameters and (name != "pos_weight" or ctx.kind == "sigmoid")]
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
    weight = torch.ones(ctx.subject.num_classes)
    if heavy_class is not None:
        weight[heavy_class] = WEIGHT_FACTOR
    return weight


def _active_class(ctx: Context) -> int:
    """The class of the active element of the isolation batches: column 0 (sigmoid), the target of
    row 0 (softmax, whose targets are shifted by one)."""
    return 1 % ctx.subject.num_classes if ctx.kind == "softmax" else 0


def probe_weighted_p_t(ctx: Context) -> None:
    """FL023: a class weight must multiply the loss, not reshape its factor. The ratios of
    :func:`probe_modulating_factor` (one active element at two probabilities; alpha and the
    normaliser cancel) are taken with uniform weights and with the active element's class weighted
    3: a weight that multiplies leaves them unchanged; p_t recovered as exp(-CE) from a weighted
    CE is p_t**w, and the factor becomes (1 - p_t**w)**gamma. Skipped once the factor is wrong
    without weights (FL004)."""
    _skip_after(ctx, "FL008", "FL003", "FL005", "FL004")
    name = _weight_parameter(ctx)
    uniform = _factor_ratios(ctx, **{name: _class_weights(ctx, None)})
    weighted = _factor_ratios(ctx, **{name: _class_weights(ctx, _active_class(ctx))})
    checks = {side: (weighted[side][0], uniform[side][0]) for side in uniform}
    wrong = {side: values for side, values in checks.items() if not _close(*values)}
    if not wrong:
        return
    side, (observed, expected) = next(iter(wrong.items()))
    ctx.fire(
        "FL023",
        f"the class weight changes the modulating factor: with {name}[{_active_class(ctx)}] = {WEIGHT_FACTOR:g} the loss ratio at {FACTOR_POINTS[side]} on {_side_text(side)} is {observed:.4f}, "
        f"{expected:.4f} with uniform weights (p_t taken from a weighted loss is p_t**w)",
        {"weight_parameter": name, "class_weight": WEIGHT_FACTOR, "observed_ratio": {k: v[0] for k, v in checks.items()}, "uniform_weight_ratio": {k: v[1] for k, v in checks.items()}, "tolerance": RATIO_TOLERANCE},
    )


def probe_double_weighting(ctx: Context) -> None:
    """FL024: weighting one class by k must scale that class's loss by k, not k**2. Two isolation
    batches with the same targets differ only in which row is active (a positive of class 0 or of
    class 1; softmax rows of target classes 1 and 2, equally wrong); the ratio of their losses is
    taken with uniform weights and with the first class weighted 3: it must grow 3-fold (9-fold
    when the weight is applied twice). Skipped once the weight changes the factor (FL023)."""
    _skip_after(ctx, "FL008", "FL003", "FL023")
    name = _weight_parameter(ctx)
    classes = ctx.subject.num_classes
    if classes < 3 and ctx.kind == "softmax" or classes < 2:
        raise Inconclusive("too few classes for two rows of different weighted classes")
    if ctx.kind == "softmax":
        batches = [_softmax_isolation(ctx, row, predicted_logit=2.0) for row in (0, 1)]
        quiet = _softmax_isolation(ctx, None)
    else:
        batches = [_isolation(ctx, "none", 0.0) for _ in range(2)]
        batches[0].x[0, 0] = batches[1].x[1, 1] = 0.0  # positives of classes 0 and 1
        quiet = _isolation(ctx, "none", 0.0)
    ratios = []
    for weight in (_class_weights(ctx, None), _class_weights(ctx, _active_class(ctx))):
        totals = [ctx.total(batch, **{name: weight}) for batch in batches]
        _require_quiet(ctx, totals[1], quiet, **{name: weight})
        ratios.append(totals[0] / totals[1])
    growth = ratios[1] / ratios[0] if ratios[0] else math.inf
    if _close(growth, WEIGHT_FACTOR):
        return
    shape = f" = {WEIGHT_FACTOR:g}**2: the weight is applied twice" if _close(growth, WEIGHT_FACTOR**2) else ""
    ctx.fire(
        "FL024",
        f"weighting class {_active_class(ctx)} by {WEIGHT_FACTOR:g} ({name}) scales its loss by {growth:.4f}, expected {WEIGHT_FACTOR:g}{shape}",
        {"weight_parameter": name, "class_weight": WEIGHT_FACTOR, "loss_growth": growth, "expected_growth": WEIGHT_FACTOR, "tolerance": RATIO_TOLERANCE},
    )


def _wrong_and_inrange(ctx: Context) -> tuple[Batch, torch.Tensor, torch.Tensor]:
    """A batch with confidently wrong elements (|logit| 6 on the wrong side) and in-range ones
    (logits in [0.3, 0.6], untouched even by a clamp to [0, 1]); returns the masks of both."""
    if ctx.kind == "centernet":
        batch = ctx.batch()
        batch.x.fill_(0.4)
        peaks = batch.y.eq(1)
        wrong = peaks.clone()
        batch.x[peaks] = 1e-3
        inrange = ~peaks & (batch.y < 0.5)
        return batch, wrong, inrange
    if ctx.base == "softmax":
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
    batch = _isolation(ctx, "none", 0.0)
    batch.x.fill_(0.45)
    wrong = torch.zeros_like(batch.y, dtype=torch.bool)
    inrange = torch.zeros_like(wrong)
    if ctx.kind == "binary":
        batch.x[0], batch.x[2] = -6.0, 6.0
        wrong[0] = wrong[2] = True
        batch.x[1], batch.x[3] = 0.6, 0.3
        inrange[1] = inrange[3] = True
    else:
        batch.x[0, 0], batch.x[5, 0] = -6.0, 6.0
        wrong[0, 0] = wrong[5, 0] = True
        batch.x[1, 1], batch.x[4, 0] = 0.6, 0.3
        inrange[1, 1] = inrange[4, 0] = True
    return batch, wrong, inrange


def probe_saturated_gradient(ctx: Context) -> None:
    """FL006: confidently wrong elements must keep a gradient. The ratio of their gradient to that
    of in-range elements (same call, so the normaliser cancels) must not collapse to zero."""
    _skip_after(ctx, "FL008", "FL003")
    batch, wrong, inrange = _wrong_and_inrange(ctx)
    grad = ctx.gradient(batch)
    reference = ctx.reference_gradient(batch)
    observed = float(grad[wrong].abs().min()) / max(float(grad[inrange].abs().max()), 1e-30)
    expected = float(reference[wrong].abs().min()) / float(reference[inrange].abs().max())
    if float(grad[inrange].abs().max()) == 0 and float(grad.abs().max()) == 0:
        raise Inconclusive("the gradient is zero everywhere")
    if observed < 1e-3 * expected:
        ctx.fire(
            "FL006",
            f"the gradient of confidently wrong examples is {float(grad[wrong].abs().min()):.3g}: a clamp zeroes it "
            f"(relative to in-range examples {observed:.3g}, reference {expected:.3g})",
            {"wrong_to_inrange_gradient_ratio": observed, "reference_ratio": expected},
        )


def probe_non_finite(ctx: Context) -> None:
    """FL007: logits up to ±100 in float32 (centernet: probabilities at its clamp, 1e-4 and
    1 - 1e-4) must give a finite loss and a finite gradient."""
    batch = ctx.batch()
    if ctx.kind == "centernet":
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


def probe_gradient_match(ctx: Context) -> None:
    """FL009: when the values match the reference, the gradients must match too."""
    if not ctx.calibration.matched or ctx.calibration.confusion:
        return
    batch = ctx.batch()
    try:
        out, grad = ctx.output_and_gradient(batch)
    except Inconclusive as reason:
        ctx.fire("FL009", f"the values match the reference but no gradient reaches the inputs ({reason})", {})
        return
    inputs, _ = ctx.subject.to_call(ctx.convention, batch, dtype=torch.float64, grad=False)
    value = match_output(ctx.kind, out, reference_elements(ctx.kind, canonical_to_reference_input(ctx.convention, inputs), batch.y.double(), ctx.params), batch.y, ctx.params)
    if value.error > MATCH_TOLERANCE:
        raise Inconclusive(f"this call's values differ from the reference (relative error {value.error:.3g}) though calibration's matched: state carries over between calls")
    reference = ctx.reference_gradient(batch)
    divisor = _divisor(ctx, batch)
    reference = reference / divisor
    error = float((grad - reference).abs().max() / reference.abs().max())
    if error > GRADIENT_TOLERANCE:
        ctx.fire("FL009", f"the values match the reference but the gradient differs by {error:.3g} (relative, max over elements; tolerance {GRADIENT_TOLERANCE:g})", {"max_rel_gradient_error": error})


def _divisor(ctx: Context, batch: Batch) -> float:
    name = ctx.calibration.match.normalisation
    return 1.0 if name == "none" else normalisers(ctx.kind, batch.y, ctx.params)[name]


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


def probe_ignore_index(ctx: Context) -> None:
    """FL011: rows labelled with the ignore index must neither change the loss nor crash it. Two
    batches differ only in the ignored rows' logits."""
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


def probe_ignored_non_finite(ctx: Context) -> None:
    """FL022: NaN, +inf and -inf logits in the rows labelled with the ignore index (NaN
    probabilities for a target that takes probabilities) must leave the loss finite and equal
    (1e-6 relative) to the loss with the batch's finite logits there, and the gradient of the
    other rows finite. Skipped once FL011 found that ignored rows reach the loss at all, or FL013
    that two calls differ anyway."""
    _skip_after(ctx, "FL011", "FL013")
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
    clone, as :meth:`Subject.call` does) and the gradient it gives the leaf (None without one)."""
    loss = ctx.subject.build()
    leaf = inputs.detach().clone().requires_grad_(True)
    out = ctx.subject.guarded(lambda: output_tensor(loss(*ctx.convention.arrange(leaf.clone(), targets.clone()))))
    value = float(out.detach().double().sum())
    if not out.requires_grad:
        return value, None
    (grad,) = torch.autograd.grad(out.sum(), leaf, allow_unused=True)
    return value, grad


def probe_grad_mode(ctx: Context) -> None:
    """FL021: a call must leave torch.is_grad_enabled() as it found it — called under
    torch.no_grad(), grad stays off; called with grad on, it stays on. The mode is read right
    after the target returns, inside :meth:`Subject.guarded`, which then restores it."""
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
    leaf, targets = ctx.subject.to_call(ctx.convention, batch)
    loss = ctx.subject.build()

    def call() -> bool:
        loss(*ctx.convention.arrange(leaf.clone(), targets.clone()))
        return torch.is_grad_enabled()

    with torch.set_grad_enabled(enabled):
        return ctx.subject.guarded(call)


def probe_input_mutation(ctx: Context) -> None:
    """FL012: the inputs and targets must be unchanged by the call."""
    batch = ctx.batch()
    inputs, targets = (tensor.clone() for tensor in ctx.convention.arrange(*ctx.subject.to_call(ctx.convention, batch, grad=False)))
    saved_inputs, saved_targets = inputs.clone(), targets.clone()
    loss = ctx.subject.build()
    ctx.subject.guarded(lambda: loss(inputs, targets))
    changed = [name for name, now, before in (("inputs", inputs, saved_inputs), ("targets", targets, saved_targets)) if not torch.equal(now, before)]
    if changed:
        ctx.fire("FL012", f"the call modifies its {' and '.join(changed)} in place", {"modified": changed})


def _state(obj: object) -> dict:
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


def _same(a: object, b: object) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape and torch.equal(a, b)
    try:
        return bool(a == b)
    except Exception:
        return False


def probe_stateful(ctx: Context) -> None:
    """FL013: two calls of one instance on the same batch must agree, and leave its attributes as
    they were — unless the reference keeps state by design (GHM-C with momentum): then each call
    must match the reference with its state carried over, and attributes may change."""
    batch = ctx.batch()
    loss = ctx.subject.build()
    before = _state(loss)
    first, inputs = ctx.subject.call(ctx.convention, batch, loss=loss)
    second, _ = ctx.subject.call(ctx.convention, batch, loss=loss)
    after = _state(loss)
    if expects_state(ctx.kind, ctx.params):
        _state_by_design(ctx, batch, inputs, [first, second])
        return
    changed = sorted(key for key in set(before) | set(after) if not _same(before.get(key), after.get(key)))
    values = [float(first.detach().double().sum()), float(second.detach().double().sum())]
    if changed or values[0] != values[1] and not (math.isnan(values[0]) and math.isnan(values[1])):
        detail = f"forward changes {', '.join(changed)}" if changed else f"two calls on the same batch give {values[0]:.6g} and {values[1]:.6g}"
        ctx.fire("FL013", detail, {"changed_attributes": changed, "values": values}, anchor="FL013")


def _state_by_design(ctx: Context, batch: Batch, inputs: torch.Tensor, outputs: list[torch.Tensor]) -> None:
    """FL013 for a stateful reference: two successive calls must match the reference's two calls
    with its state carried from one to the next (:func:`~lossaudit.lint.subject.reference_calls`)."""
    if not ctx.calibration.matched:
        raise Inconclusive("the output matches no reference, so its state cannot be followed against the reference's")
    ref_input = canonical_to_reference_input(ctx.convention, inputs.detach().double())
    references = reference_calls(ref_input, batch.y.double(), ctx.params, len(outputs))
    errors = [match_output(ctx.kind, out, ref, batch.y, ctx.params).error for out, ref in zip(outputs, references)]
    if errors[0] <= MATCH_TOLERANCE and errors[1] > MATCH_TOLERANCE:
        expected = float(references[1].sum() / references[0].sum()) if float(references[0].sum()) else math.nan
        observed = float(outputs[1].detach().double().sum() / outputs[0].detach().double().sum()) if float(outputs[0].detach().sum()) else math.nan
        ctx.fire("FL013", f"the state does not evolve as the reference's moving average (momentum {ctx.params.family['momentum']:g}): the second call on the same batch gives "
                 f"{observed:.4f} times the first, expected {expected:.4f}", {"second_to_first": observed, "expected_second_to_first": expected, "rel_errors": errors}, anchor="FL013")
    elif errors[0] > MATCH_TOLERANCE:
        ctx.fire("FL013", f"the first call of a new instance differs from the reference (relative error {errors[0]:.3g}) though calibration's instances matched it: state carries over between instances",
                 {"rel_errors": errors}, anchor="FL013")
    else:
        ctx.notes.append(f"FL013: the state evolves as the reference's moving average over two calls (momentum {ctx.params.family['momentum']:g})")


def probe_batch_shapes(ctx: Context) -> None:
    """FL015: the loss must run on batches of 1 and 3 rows, not only on the calibration size."""
    if ctx.kind == "centernet":
        return
    for rows in (1, 3):
        batch = ctx.batch(rows=rows)
        try:
            ctx.subject.call(ctx.convention, batch)
        except (Exception, SystemExit, CallTimeout) as error:
            path, line = ctx.locator.from_traceback(error.__traceback__)
            ctx.findings.append(Finding("FL015", f"raises on a batch of {rows} row{'s' if rows > 1 else ''}: {error_text(error)}", path=path, line=line, evidence={"probe": ctx.current_probe, "rows": rows}))
            return


def probe_low_precision(ctx: Context) -> None:
    """FL017: float16 and bfloat16 inputs must run and stay within a dtype-scaled tolerance of
    float32 on the same (rounded) values: max(50 eps, 5 × the reference's own deviation)."""
    batch = ctx.batch()
    if ctx.kind != "centernet":
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
            path, line = ctx.locator.from_traceback(error.__traceback__)
            ctx.findings.append(Finding("FL017", f"{name} inputs fail: {error_text(error)}", path=path, line=line, evidence={"probe": ctx.current_probe, "dtype": name}))
            return
        tolerance = _precision_tolerance(ctx, rounded, dtype)
        deviation = abs(low_value - full_value) / max(abs(full_value), 1e-12) if math.isfinite(low_value) else math.inf
        if deviation > tolerance:
            name = str(dtype).removeprefix("torch.")
            ctx.fire("FL017", f"{name} inputs give {low_value:.6g} against {full_value:.6g} in float32 (relative deviation {deviation:.3g}, tolerance {tolerance:.3g})",
                     {"dtype": name, "deviation": deviation, "tolerance": tolerance})
            return


def _precision_tolerance(ctx: Context, batch: Batch, dtype: torch.dtype) -> float:
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


def report_normalisation(ctx: Context) -> None:
    """FL018 (info): the normalisation found, when it is not the usual one for the kind."""
    if not ctx.calibration.matched:
        return
    found = ctx.calibration.match.normalisation
    if found not in CONVENTIONAL[ctx.kind]:
        usual = USUAL_NORMALISATION[ctx.kind]
        libraries = ctx.follows()
        as_in = f" (as in {'; '.join(libraries)})" if libraries else ""
        named = f"{ctx.kind} focal loss" if ctx.kind not in FAMILY_BASES else f"{ctx.kind} loss"
        ctx.fire("FL018", f"the loss is normalised by the {found}{as_in}; the usual choice for a {named} is {usual}", {"normalisation": found, "follows": libraries})


USUAL_NORMALISATION = {
    "sigmoid": "the sum per positive anchor (detectors) or no reduction", "softmax": "the mean over rows", "centernet": "the sum per peak", "binary": "the mean or the sum",
    "qfl": "the sum per positive anchor (GFL's head) or the mean over anchors", "vfl": "the sum per positive anchor (VFNet's head) or the mean over elements",
    "asl": "the sum (timm)", "ls-ce": "the mean over rows", "ghm": "the mean over valid elements (mmdet)",
}
"""What FL018 names as the usual normalisation of each kind (:data:`CONVENTIONAL`)."""


def report_peer_departure(ctx: Context) -> None:
    """FL020 (info): the target reads alpha as a library documents it, not as the paper does."""
    if ctx.calibration.matched and ctx.params.scheme in DEPARTURES:
        ctx.fire("FL020", DEPARTURES[ctx.params.scheme], {"alpha_scheme": ctx.params.scheme, "alpha": ctx.params.alpha, "follows": ctx.follows()})


def report_defaults(ctx: Context) -> None:
    """FL019 (info): constructor/function defaults that differ from the reference's."""
    if ctx.kind in ("centernet", "ls-ce"):
        return  # CenterNet's exponents are fixed; PyTorch (0) and timm (0.1) differ on label smoothing's default
    if ctx.kind in FAMILY_BASES:
        expected = {names[0]: default for default, names in FAMILY_PARAMETERS[ctx.kind].values() if not isinstance(default, bool) and names[0] != "eps"}
    else:
        expected = {"alpha": DEFAULT_ALPHA if ctx.kind in ("sigmoid", "binary") else None, "gamma": DEFAULT_GAMMA}
    differing = {}
    for name, value in expected.items():
        if name in ctx.subject.supplied:
            continue  # no default at all: lint supplied one, and the caller must choose
        if ctx.subject.accepts(name) and ctx.subject.signature is not None and name in ctx.subject.signature.parameters:
            default = ctx.subject.default(name)
            if default is None and ctx.subject.signature.parameters[name].default is not None:
                continue  # no default: the caller must choose
            if isinstance(default, (list, tuple, torch.Tensor)) or default != value and not (value is None and default in (None, -1)):
                differing[name] = {"default": default if not isinstance(default, torch.Tensor) else default.tolist(), "reference": value}
    if differing:
        def reference(value: object) -> str:
            return "no alpha" if value is None else repr(value)

        listed = ", ".join(f"{name}={d['default']!r} (reference {reference(d['reference'])})" for name, d in differing.items())
        ctx.fire("FL019", f"defaults differ from the {ctx.kind} reference: {listed}", differing, anchor="FL019")


PROBES: tuple[tuple[tuple[str, ...], Callable[[Context], None]], ...] = (
    (("FL015",), probe_batch_shapes),
    (("FL008", "FL003"), probe_coupling),
    (("FL003",), probe_background_rows),
    (("FL005",), probe_gamma),
    (("FL001", "FL002"), probe_alpha_balance),
    (("FL001", "FL010"), probe_softmax_alpha),
    (("FL004",), probe_modulating_factor),
    (("FL023",), probe_weighted_p_t),
    (("FL024",), probe_double_weighting),
    (("FL006",), probe_saturated_gradient),
    (("FL007",), probe_non_finite),
    (("FL009",), probe_gradient_match),
    (("FL011",), probe_ignore_index),
    (("FL012",), probe_input_mutation),
    (("FL013",), probe_stateful),
    (("FL022",), probe_ignored_non_finite),
    (("FL021",), probe_grad_mode),
    (("FL017",), probe_low_precision),
    (("FL018",), report_normalisation),
    (("FL019",), report_defaults),
    (("FL020",), report_peer_departure),
)
"""The battery in order: batch shapes first (a crash there explains later crashes), then coupling,
since per-element probes are skipped for coupled losses."""


SECONDARY_PROBES: tuple[tuple[tuple[str, ...], Callable[[Context], None]], ...] = tuple(
    (codes, probe) for codes, probe in PROBES if probe in (probe_gamma, probe_softmax_alpha, probe_modulating_factor, probe_saturated_gradient)
)
"""The formula probes re-run on a sigmoid target found to be a softmax (FL003), read as a softmax
loss, so its other defects are reported too."""


def run_probes(ctx: Context) -> None:
    """Run the battery, then what the findings do not explain: a softmax found where sigmoid was
    meant is probed again as a softmax loss, and an output that matches no reference is checked
    against the reading of alpha the alpha findings describe (else FL014)."""
    _run(ctx, PROBES)
    if ctx.kind == "sigmoid" and ctx.fired("FL003"):
        _probe_as_softmax(ctx)
    ctx.current_probe = "calibration"
    if ctx.calibration.confusion:
        ctx.fire("FL016", f"the output matches the reference only once {ctx.calibration.confusion}", {"confusion": ctx.calibration.confusion, "rel_error": ctx.calibration.match.error})
    _report_unexplained(ctx)
    first_of_each = {}
    for finding in ctx.findings:
        first_of_each.setdefault(finding.code, finding)
    ctx.findings = list(first_of_each.values())


def _run(ctx: Context, probes) -> None:
    """Run ``probes``; an unexpected exception in a probe is a crash of the target on valid input."""
    for codes, probe in probes:
        ctx.current_probe = probe.__name__
        try:
            probe(ctx)
        except Inconclusive as reason:
            ctx.notes.append(f"{ctx.prefix}{'/'.join(codes)} not checked: {reason}")
        except (Exception, SystemExit, CallTimeout) as error:
            if ctx.fired("FL015"):
                continue
            path, line = ctx.locator.from_traceback(error.__traceback__)
            ctx.findings.append(Finding("FL015", f"{ctx.prefix}raises on valid input during the {probe.__name__.removeprefix('probe_').replace('_', ' ')} probe: {error_text(error)}", path=path, line=line, evidence={"probe": probe.__name__}))


def _probe_as_softmax(ctx: Context) -> None:
    """After FL003: calibrate the target as a softmax loss and run the formula probes on it."""
    from lossaudit.lint.calibrate import calibrate

    convention = ctx.convention
    calibration = calibrate(ctx.subject, "softmax", convention.inputs, "auto", ctx.generator_seed)
    if calibration.convention is None:
        ctx.notes.append("the formula probes could not run on the target read as a softmax loss: no convention runs")
        return
    secondary = Context(ctx.subject, calibration, ctx.locator, ctx.generator_seed, prefix="read as a softmax loss: ")
    _run(secondary, SECONDARY_PROBES)
    ctx.findings += [finding for finding in secondary.findings if not ctx.fired(finding.code)]
    ctx.notes += secondary.notes


def _smoothing_over_the_others(params: Params, classes: int) -> Params:
    """Label smoothing epsilon spread over the C - 1 other classes: PyTorch's convention with
    epsilon * C / (C - 1) (:func:`lossaudit.losses.ls_ce`)."""
    return replace(params, family={**params.family, "epsilon": params.family["epsilon"] * classes / (classes - 1)})


ALTERNATIVE_READINGS: dict[str, tuple[str, Callable[[Params, int], Params]]] = {
    "ls-ce": ("epsilon spread over the C - 1 other classes (fairseq's convention), where PyTorch's label_smoothing spreads it over all C classes", _smoothing_over_the_others),
}
"""Per kind, a documented convention a target may follow while its parameter names promise the
reference's: what the FL014 finding says when the output matches it."""


def _alternative_reading(ctx: Context) -> tuple[str, Params, object] | None:
    """(description, parameters, match) of the kind's alternative reading when the output matches it."""
    if ctx.kind not in ALTERNATIVE_READINGS or ctx.subject.num_classes < 2:
        return None
    description, change = ALTERNATIVE_READINGS[ctx.kind]
    params = change(ctx.params, ctx.subject.num_classes)
    batch = ctx.batch()
    out, inputs = ctx.subject.call(ctx.convention, batch)
    reference = reference_elements(ctx.kind, canonical_to_reference_input(ctx.convention, inputs.detach().double()), batch.y.double(), params)
    residual = match_output(ctx.kind, out, reference, batch.y, params)
    return (description, params, residual) if residual.error <= MATCH_TOLERANCE else None


def _report_unexplained(ctx: Context) -> None:
    """FL014 when the output matches no reference and the findings do not account for it: no
    value rule fired, or only alpha rules whose reading of alpha (evidence 'alpha_reading') still
    leaves a mismatch."""
    if ctx.calibration.matched or ctx.calibration.confusion:
        return
    explaining = [f for f in ctx.findings if f.code in VALUE_RULES and f.severity != "info"]
    match = ctx.calibration.match
    if not explaining:
        reading = _alternative_reading(ctx)
        if reading is not None:
            description, params, residual = reading
            ctx.fire("FL014", f"the output matches no {ctx.kind} reference; it matches one with {description} ({residual.normalisation}, relative error {residual.error:.3g})",
                     {"closest_normalisation": match.normalisation, "rel_error": match.error, "tolerance": MATCH_TOLERANCE, "matches_with": params.family})
            return
        named = f"{ctx.kind} focal loss" if ctx.kind not in FAMILY_BASES else f"the {ctx.kind} reference"
        ctx.fire("FL014", f"the output matches no reference: closest is {named} with {match.normalisation} (relative error {match.error:.3g}, tolerance {MATCH_TOLERANCE:g})",
                 {"closest_normalisation": match.normalisation, "rel_error": match.error, "tolerance": MATCH_TOLERANCE})
        return
    readings = {f.code: f.evidence.get("alpha_reading") for f in explaining}
    if len(readings) != 1 or None in readings.values():
        return  # a defect without a model of its own (the factor, a clamp, coupling) explains it
    (code, scheme), = readings.items()
    params = replace(ctx.params, alpha_scheme=scheme)
    batch = ctx.batch()
    out, inputs = ctx.subject.call(ctx.convention, batch)
    reference = reference_elements(ctx.kind, canonical_to_reference_input(ctx.convention, inputs.detach().double()), batch.y.double(), params)
    residual = match_output(ctx.kind, out, reference, batch.y, params)
    if residual.error > MATCH_TOLERANCE:
        ctx.fire("FL014", f"beyond {code}, the output matches no reference: with alpha read as the loss applies it ({scheme}), closest is {residual.normalisation} "
                 f"(relative error {residual.error:.3g}, tolerance {MATCH_TOLERANCE:g})",
                 {"after": code, "alpha_reading": scheme, "closest_normalisation": residual.normalisation, "rel_error": residual.error, "tolerance": MATCH_TOLERANCE})
