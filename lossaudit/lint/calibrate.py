"""Calibration: which calling convention, which reference and which normalisation the target
matches (the ``detected`` section of a lint result, and the ground for FL014 and FL016)."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, cast

import torch

from lossaudit._limits import out_of_memory
from lossaudit.lint.kinds import (
    AUTO_KINDS,
    CENTERNET,
    FAMILY_BASES,
    FAMILY_HINTS,
    FAMILY_PARAMETERS,
    FOCAL_KINDS,
    NONE_MEANS,
    REFERENCE_NAMES,
    SCALAR_ALPHA_KINDS,
    SIGMOID,
    SOFTMAX,
    WEIGHTED_KINDS,
)
from lossaudit.lint.subject import (
    DEFAULT_ALPHA,
    DEFAULT_GAMMA,
    MATCH_TOLERANCE,
    Batch,
    Calibration,
    CallTimeout,
    Convention,
    Match,
    Params,
    Subject,
    canonical_to_reference_input,
    conventions,
    make_batch,
    match_output,
    reference_elements,
)


def error_text(error: BaseException) -> str:
    """How a failure of the target reads in a finding."""
    if isinstance(error, SystemExit):
        return f"called sys.exit({error.code!r})"
    if isinstance(error, CallTimeout):
        return f"hung: {error}"
    text = " ".join(f"{type(error).__name__}: {error}".split())
    if out_of_memory(error):
        return f"ran out of memory under the memory limit ({_memory_limit_text()}; --memory-limit): {text[:200]}"
    return text


def _memory_limit_text() -> str:
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    return "none set" if soft == resource.RLIM_INFINITY else f"{soft / 2**20:,.0f} MiB"


def _param_grid(subject: Subject, kind: str) -> list[Params]:
    """The readings of the target's hyper-parameters to try, the paper's first.

    alpha: the target's own value read by each scheme of its kind (a per-class vector, MONAI's
    positives-only vector, kornia's class-0 scalar); a target without alpha against no alpha and
    0.25; ultralytics' alpha 0 means off. ``weight``/``class_weight`` vectors and MONAI's
    ``include_background=False`` are read as the libraries that name them do.
    """
    if kind == CENTERNET:
        return [Params(alpha=None, gamma=DEFAULT_GAMMA)]
    if kind in FAMILY_BASES:
        family = family_values(subject, kind)
        return [] if family is None else [Params(alpha=None, gamma=DEFAULT_GAMMA, family=family)]
    gamma = float(subject.value("gamma", DEFAULT_GAMMA)) if subject.accepts("gamma") or subject.is_instance else DEFAULT_GAMMA
    readings: list[tuple[object, str]]
    if not subject.accepts("alpha") and subject.value("alpha", None) is None:
        readings = [(None, "alpha_t")] + ([(DEFAULT_ALPHA, "alpha_t")] if kind in SCALAR_ALPHA_KINDS else [])
    else:
        alpha = _as_list(subject.value("alpha", None))
        per_class = isinstance(alpha, (list, tuple))
        if kind == SOFTMAX:
            readings = [(alpha, "target")] if per_class or alpha is None else [(alpha, "class-0"), (alpha, "target")]
        else:
            readings = [(alpha, "alpha_t")] + ([(alpha, "positives")] if per_class and kind == SIGMOID else [])
            if alpha == 0:
                readings.append((None, "alpha_t"))
            if not per_class and alpha is not None and not (0 <= alpha <= 1 or alpha == -1):
                readings = [(None, "alpha_t")]  # not a focal alpha (CenterNet's exponent is named alpha)
    weight = next(
        (tuple(_as_list(w)) for w in (subject.value("weight", None), subject.value("class_weight", None)) if _is_vector(w, subject.num_classes)), None
    )
    skip_class_0 = subject.value("include_background", True) is False and kind in WEIGHTED_KINDS
    return [Params(alpha=alpha, gamma=gamma, alpha_scheme=scheme, class_weight=weight, skip_class_0=skip_class_0) for alpha, scheme in readings]


def family_values(subject: Subject, kind: str) -> dict | None:
    """The keyword arguments of a family kind's reference as the target sets them: each from the
    first of its names the target declares (or gets through ``--init``), else the reference's
    default; None when a value is not of the reference's type (a per-class alpha vector: not a
    Varifocal alpha)."""
    declared = set(subject.signature.parameters) if subject.signature is not None else set()
    values = {}
    for argument, (default, names) in FAMILY_PARAMETERS[kind].items():
        name = next((n for n in names if n in subject.init or n in declared or subject.is_instance and hasattr(subject.obj, n)), None)
        value = subject.value(name, default) if name is not None else default
        if not isinstance(value, (bool, int, float, type(None))):
            return None
        values[argument] = cast(Any, type(default))(value) if value is not None else NONE_MEANS.get(argument, default)
    return values


def _as_list(value: object) -> Any:
    return value.tolist() if isinstance(value, torch.Tensor) else value


def _is_vector(value: object, length: int) -> bool:
    value = _as_list(value)
    return isinstance(value, (list, tuple)) and len(value) == length


CONFUSIONS: dict[str, Callable[[Convention, torch.Tensor], torch.Tensor]] = {
    "sigmoid applied to probabilities": lambda c, inputs: torch.sigmoid(inputs) if c.base != SOFTMAX else torch.softmax(inputs, dim=1),
    "a logit formula fed probabilities": lambda c, inputs: inputs,
}
"""What the reference reads when the target squashes twice (called with logits) or treats
probabilities as logits (called with probabilities)."""


def calibrate(subject: Subject, kind: str, inputs: str, targets: str, seed: int) -> Calibration:
    """Call the target under each convention and find the reference it matches best.

    In auto mode the kinds are tried in the order of :data:`~lossaudit.lint.kinds.AUTO_KINDS` and
    the first match wins, except that a family named by the target (:func:`family_hint`) is tried
    first and, when :data:`~lossaudit.lint.kinds.FAMILY_HINTS` calls the sign decisive, is kept
    even if it does not match (a QFL is a focal loss on hard labels: only its name tells it from
    one). A target that matches nothing is read as the hinted family, else as the likeliest focal
    kind (:func:`_prefer`).
    """
    calibration = _calibrate(subject, kind, inputs, targets, seed)
    if calibration.convention is not None and not calibration.matched and not calibration.confusion:
        calibration = _with_given_normaliser(subject, calibration, lambda: _calibrate(subject, kind, inputs, targets, seed))
    return calibration


NOT_NORMALISERS = frozenset(
    {
        "alpha",
        "gamma",
        "beta",
        "eps",
        "epsilon",
        "ignore_index",
        "num_classes",
        "weight",
        "pos_weight",
        "class_weight",
        "smooth",
        "smoothing",
        "label_smoothing",
        "reduction",
    }
)
"""Parameters never read as a normaliser the caller passes (:func:`_with_given_normaliser`)."""


def _with_given_normaliser(subject: Subject, calibration: Calibration, recalibrate: Callable[[], Calibration]) -> Calibration:
    """A target that matches nothing, re-read with the numbers the caller passes that only divide
    its output (DETR's ``num_boxes``, mmdet's ``avg_factor``) set to 1.

    A number divides the output when doubling it halves the output exactly (same batch, same
    convention). Such a divisor is a normalisation the caller chooses, not a defect; lint audits
    the target at 1 (``subject.init``) and says so in ``kind_reason``. If the target still matches
    nothing at 1, the settings are restored and ``calibration`` stands (its FL014 is real).
    """
    divisors = {}
    for name, value in _numeric_arguments(subject).items():
        try:
            ratio = _output_ratio(subject, calibration, name, value)
        except (Exception, SystemExit, CallTimeout):
            continue
        if ratio is not None and abs(ratio - 0.5) <= 1e-5:
            divisors[name] = value
    if not divisors:
        return calibration
    saved = dict(subject.init)
    subject.init.update({name: type(value)(1) for name, value in divisors.items()})
    again = recalibrate()
    if again.convention is None or not again.matched:
        subject.init.clear()
        subject.init.update(saved)
        return calibration
    given = ", ".join(f"{name}={value!r}" for name, value in divisors.items())
    audited = ", ".join(f"{name}=1" for name in divisors)
    again.kind_reason += f"; {given} only divides the output (a normaliser the caller passes: doubling it halves the loss), so it was audited at {audited}"
    return again


def _numeric_arguments(subject: Subject) -> dict[str, float]:
    """The target's positive numeric settings other than 1 (from ``--init``, else declared
    defaults), except the hyper-parameters of :data:`NOT_NORMALISERS`."""
    values = dict(subject.init)
    if subject.signature is not None:
        for name, parameter in subject.signature.parameters.items():
            if name not in values and parameter.default is not inspect.Parameter.empty:
                values[name] = parameter.default
    return {
        name: value
        for name, value in values.items()
        if name not in NOT_NORMALISERS and isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0 and value != 1
    }


def _output_ratio(subject: Subject, calibration: Calibration, name: str, value: float) -> float | None:
    """The target's scalar output with ``name`` doubled over its output at ``value``, on one batch."""
    convention = calibration.convention
    assert convention is not None  # asked of a calibrated target
    batch = make_batch(convention.kind, subject.num_classes, torch.Generator().manual_seed(0), background=convention.has_background)
    outputs = []
    for setting in (value, value * 2):
        out, _ = subject.call(convention, batch, **cast("dict[str, Any]", {name: setting}))
        if out.numel() != 1:
            return None
        outputs.append(float(out.detach().double().reshape(())))
    if not all(math.isfinite(v) for v in outputs) or outputs[0] == 0:
        return None
    return outputs[1] / outputs[0]


def _calibrate(subject: Subject, kind: str, inputs: str, targets: str, seed: int) -> Calibration:
    """One calibration at the subject's current settings (:func:`calibrate`)."""
    hint, decisive = family_hint(subject) if kind == "auto" else (None, False)
    search = _Search(subject, kind, inputs, hint, seed)
    rows, spatial = _candidates(subject, kind, hint, inputs, targets)
    for number, (candidate_kind, convention) in enumerate(rows + spatial):
        if number == len(rows) and (search.best or search.fallback):
            break  # segmentation layouts only for a target that runs on no batch of rows
        if search.best is not None and candidate_kind in FAMILY_BASES:
            continue  # a family counts only as the first match, and there is one already
        batch = make_batch(candidate_kind, subject.num_classes, torch.Generator().manual_seed(seed), background=convention.has_background)
        try:
            out, call_inputs = subject.call(convention, batch)
        except (Exception, SystemExit, CallTimeout) as error:
            search.attempts.append({"convention": convention.describe(), "error": error_text(error), "exception": error})
            if isinstance(error, CallTimeout):  # a hang does not depend on the convention
                return Calibration(None, Params(), Match("unknown", math.inf), attempts=search.attempts)
            continue
        search.consider(candidate_kind, convention, batch, out, call_inputs)
    return search.chosen(decisive)


def _candidates(subject: Subject, kind: str, hint: str | None, inputs: str, targets: str) -> tuple[list[tuple[str, Convention]], list[tuple[str, Convention]]]:
    """The (kind, convention) pairs to call the target with: batches of rows, then the same as
    segmentation batches (not for CenterNet, nor for a family kind unless it was asked for)."""
    kinds = [kind] if kind != "auto" else list(dict.fromkeys(k for k in (hint, *AUTO_KINDS) if k is not None))
    rows = [(k, c) for k in kinds for c in conventions(k, inputs, targets, subject.num_classes)]
    spatial = [(k, replace(c, layout="spatial")) for k, c in rows if k != CENTERNET and (k not in FAMILY_BASES or kind == k)]
    return rows, spatial


@dataclass
class _Search:
    """One calibration under way: the attempts so far, the first match (``best``) and the
    likeliest reading of a target that matches nothing (``fallback``)."""

    subject: Subject
    kind: str
    """The kind asked for, or 'auto'."""
    inputs: str
    """The inputs the user declared ('auto', 'logits' or 'probs')."""
    hint: str | None
    seed: int = 0
    attempts: list[dict] = field(default_factory=list)
    best: Calibration | None = None
    fallback: Calibration | None = None
    coupling: dict[str, bool | None] = field(default_factory=dict)
    """Whether the target couples classes, per target encoding, measured on logits."""
    stand_ins: list[Calibration] = field(default_factory=list)
    """Every reading that matched nothing, in the order tried (for :func:`_row_by_row`)."""
    implausible: set[Convention] = field(default_factory=set)
    """Conventions fed logits whose call behaves like a loss that takes probabilities: a
    non-finite output, or no gradient at any input outside [0, 1] (:func:`_takes_probabilities`)."""

    def consider(self, candidate_kind: str, convention: Convention, batch: Batch, out: torch.Tensor, call_inputs: torch.Tensor) -> None:
        """Compare one call's output with the reference under each reading of the parameters."""
        if convention.inputs == "logits" and self.inputs == "auto" and _takes_probabilities(out, call_inputs):
            self.implausible.add(convention)
        for params in _param_grid(self.subject, candidate_kind):
            ref_input = canonical_to_reference_input(convention, call_inputs.detach().double())
            try:
                match = match_output(candidate_kind, out, reference_elements(candidate_kind, ref_input, batch.y.double(), params), batch.y, params)
            except (ValueError, RuntimeError, IndexError):
                continue  # a reading the reference cannot take (a per-class alpha of another length)
            found = Calibration(convention, params, match, kind_reason="matches the reference")
            if not found.matched:
                confusion = _confused_match(convention, call_inputs, out, batch, params, declared_inputs=self.inputs)
                if confusion is not None:
                    found = Calibration(convention, params, confusion[1], confusion=confusion[0], kind_reason=f"matches the reference once {confusion[0]}")
            self.attempts.append({"convention": convention.describe(), "error": None, "match": match.normalisation, "rel_error": match.error})
            if found.matched or found.confusion:
                self.best = self.best or found
            elif (
                candidate_kind in (*FOCAL_KINDS, self.hint) or self.kind == candidate_kind
            ):  # focal kinds (or the hinted family) stand in for what matched nothing
                self._stand_in(found, batch)

    def _stand_in(self, found: Calibration, batch: Batch) -> None:
        """Keep ``found`` as the fallback if it is the likelier intent (:func:`_prefer`)."""
        convention = found.convention
        assert convention is not None  # a stand-in is a convention that ran
        if convention.inputs == "logits" and convention.encoding not in self.coupling:
            self.coupling[convention.encoding] = _couples_classes(self.subject, convention, batch)
        found.couples_classes = self.coupling.get(convention.encoding)
        self.stand_ins.append(found)
        if self.fallback is None or _prefer(found, self.fallback, self.hint, self.implausible):
            self.fallback = found

    def why_fallback(self, chosen: Calibration) -> str:
        """Why ``chosen`` (the fallback) won over the likeliest reading of another kind or input."""
        others = sorted(self.stand_ins, key=lambda other: other.convention.kind == chosen.convention.kind)  # type: ignore[union-attr]  # another kind first
        for other in others:
            if (other.convention.kind, other.convention.inputs) != (chosen.convention.kind, chosen.convention.inputs):  # type: ignore[union-attr]  # stand-ins, fallbacks and matches have a convention
                reason = _prefer_reason(chosen, other, self.hint, self.implausible)
                if reason is not None and reason[0]:
                    return reason[1]
        return ""

    def chosen(self, decisive: bool) -> Calibration:
        """The first match, or the fallback when there is none or a decisive hint names it; with
        no match, a reading that matches its reference row by row (:func:`_row_by_row`) comes first."""
        hint, best, fallback = self.hint, self.best, self.fallback
        hinted = fallback is not None and fallback.convention.kind == hint  # type: ignore[union-attr]  # stand-ins, fallbacks and matches have a convention
        chosen = fallback if decisive and hinted and (best is None or best.convention.kind != hint) else best or fallback  # type: ignore[union-attr]  # stand-ins, fallbacks and matches have a convention
        if chosen is None:
            return Calibration(None, Params(), Match("unknown", math.inf), attempts=self.attempts)
        chosen.attempts = self.attempts
        if not chosen.matched and not chosen.confusion:
            chosen.kind_reason = "closest reference; no convention matched" if self.kind == "auto" else "as given"
            why = self.why_fallback(chosen) if self.kind == "auto" and chosen is fallback else ""
            if why:
                chosen.kind_reason += f"; read as {chosen.convention.kind} with {chosen.convention.inputs}: {why}"  # type: ignore[union-attr]  # stand-ins, fallbacks and matches have a convention
            if hinted and chosen is fallback:
                chosen.kind_reason = f"no convention matched; read as {hint}, the family its {FAMILY_HINTS[cast(str, hint)][2]} names"
            elif self.kind == "auto":
                chosen = self._row_by_row(chosen)
        return chosen

    def _row_by_row(self, chosen: Calibration) -> Calibration:
        """With no match on the calibration batch, the first reading whose reference the target
        matches on each of a few single rows (else, the first it is proportional to on each, by
        one factor): batch coupling (a p_t taken from the batch-mean loss) cannot fool that, since
        a batch of one row couples nothing, and no kind's loss is another's times a constant over
        rows of different classes. ``chosen`` if none."""
        assert chosen.convention is not None  # the fallback
        readings: list[tuple[Calibration, Any]] = []
        for found in self.stand_ins:
            convention = found.convention
            assert convention is not None  # a stand-in is a convention that ran
            if convention.layout != "rows" or convention.kind == CENTERNET or convention in self.implausible:
                continue
            if any(convention == other.convention and repr(found.params) == repr(other.params) for other, _ in readings):
                continue
            readings.append((found, _single_rows_match(self.subject, convention, found.params, self.seed)))
        exact = [(found, rows) for found, rows in readings if rows is not None and rows[1] is None]
        proportional = [(found, rows) for found, rows in readings if rows is not None and rows[1] is not None]
        for found, (count, factor) in exact + proportional:
            convention = found.convention
            assert convention is not None  # a stand-in is a convention that ran
            found.attempts = self.attempts
            named = REFERENCE_NAMES.get(convention.kind, f"{convention.kind} reference")
            if factor is None:
                found.kind_reason = (
                    f"matches the {named} on each of {count} single rows, but no reference on a batch of {_BATCH_ROWS}: "
                    f"the rest of the batch changes each row's loss; read as {convention.kind} by its per-row behaviour"
                )
            else:
                found.kind_reason = (
                    f"no reference matches, but on each of {count} single rows the loss is the {named} times {factor:.4g}; "
                    f"read as {convention.kind} by its per-row behaviour"
                )
            if chosen.convention.kind != convention.kind:
                found.kind_reason += f" (the whole-batch reading was {chosen.convention.kind})"
            return found
        return chosen


_BATCH_ROWS = 16
"""Rows of a calibration batch (:func:`~lossaudit.lint.subject.make_batch`'s default)."""


def _takes_probabilities(out: torch.Tensor, call_inputs: torch.Tensor) -> bool:
    """Whether a call fed logits behaves like a loss that takes probabilities: its output is not
    finite (a log of a negative "probability"), or no input outside [0, 1] gets any gradient
    while some input inside does (values clamped to [eps, 1 - eps])."""
    if not bool(torch.isfinite(out.detach()).all()):
        return True
    if not out.requires_grad:
        return False
    try:
        (grad,) = torch.autograd.grad(out.sum(), call_inputs, retain_graph=True, allow_unused=True)
    except RuntimeError:
        return False
    if grad is None:
        return False
    values = call_inputs.detach()
    outside = (values < 0) | (values > 1)
    inside = ~outside
    if not bool(outside.any()) or not bool(inside.any()):
        return False
    return bool((grad[outside] == 0).all()) and bool((grad[inside] != 0).any())


SINGLE_ROWS = 4
"""How many single-row batches :func:`_single_rows_match` calls the target on."""


def _single_rows_match(subject: Subject, convention: Convention, params: Params, seed: int) -> tuple[int, float | None] | None:
    """How the target compares with the reference on single rows, called with ``convention`` and
    read with ``params`` (:data:`SINGLE_ROWS` rows, one of each class first, a background row
    where the convention has one): ``(rows, None)`` when it matches on each, ``(rows, factor)``
    when it is the reference's sum times one factor on each, None otherwise or when a call fails.
    A target that refuses a batch of one row is called with a batch of that row repeated: a batch
    mean of identical rows is each row's own value."""
    batch = make_batch(convention.kind, subject.num_classes, torch.Generator().manual_seed(seed), rows=_BATCH_ROWS, background=convention.has_background)
    picks = list(range(min(SINGLE_ROWS, subject.num_classes)))
    if convention.has_background:
        picks[-1] = _BATCH_ROWS - 1  # a background row (make_batch's last rows)
    if len(picks) < 2:
        return None
    matched, ratios = True, []
    for row in picks:
        compared = _compare_row(subject, convention, params, batch, row)
        if compared is None:
            return None
        matched = matched and compared[0]
        ratios.append(compared[1])
    if matched:
        return len(picks), None
    factor = ratios[0]
    if math.isfinite(factor) and factor > 0 and all(abs(r - factor) <= MATCH_TOLERANCE * factor for r in ratios):
        return len(picks), factor
    return None


def _compare_row(subject: Subject, convention: Convention, params: Params, batch: Batch, row: int) -> tuple[bool, float] | None:
    """(whether the target matches the reference on ``row`` alone, its summed output over the
    reference's sum); None when the call fails or the reference cannot read ``params``."""
    for copies in (1, 4):
        single = Batch(batch.x[row : row + 1].repeat(copies, *([1] * (batch.x.dim() - 1))), batch.y[row : row + 1].repeat(copies, *([1] * (batch.y.dim() - 1))))
        try:
            out, call_inputs = subject.call(convention, single)
        except (Exception, SystemExit, CallTimeout):
            continue
        ref_input = canonical_to_reference_input(convention, call_inputs.detach().double())
        try:
            reference = reference_elements(convention.kind, ref_input, single.y.double(), params)
            match = match_output(convention.kind, out, reference, single.y, params)
        except (ValueError, RuntimeError, IndexError):
            return None
        total = float(reference.sum()) / copies
        ratio = float(out.detach().double().sum()) / total if total > 0 else math.inf
        return match.error <= MATCH_TOLERANCE, ratio
    return None


def family_hint(subject: Subject) -> tuple[str | None, bool]:
    """The family kind the target's parameter names or its own name point to (None if none), and
    whether that sign is decisive (:data:`FAMILY_HINTS`)."""
    declared = set(subject.signature.parameters) if subject.signature is not None else set()
    declared |= set(subject.init)
    name = getattr(subject.obj if not subject.is_instance else type(subject.obj), "__name__", "").lower()
    for kind, (where, words, _, decisive) in FAMILY_HINTS.items():
        if (declared & set(words)) if where == "parameters" else any(word in name for word in words):
            return kind, decisive
    return None, False


def _prefer(candidate: Calibration, current: Calibration, hint: str | None = None, implausible: set[Convention] | frozenset = frozenset()) -> bool:
    """Without a match, the likelier intent wins (:func:`_prefer_reason`)."""
    reason = _prefer_reason(candidate, current, hint, implausible)
    return reason[0] if reason is not None else candidate.match.error < current.match.error


def _prefer_reason(
    candidate: Calibration, current: Calibration, hint: str | None = None, implausible: set[Convention] | frozenset = frozenset()
) -> tuple[bool, str] | None:
    """Whether ``candidate`` is likelier than ``current`` and why (the winner's reason), by the
    first of these that tells them apart: a logits reading whose call behaves like a loss taking
    probabilities (``implausible``: :func:`_takes_probabilities`) loses; the family kind the
    target's parameters or name point to (:func:`family_hint`); a target taking one-hot float
    targets is meant per-class (sigmoid); between a sigmoid and a softmax reading, the one that
    agrees with whether the target couples classes within a row; bare class indices (no
    background label) suggest a softmax classifier; a target takes logits (the common case).
    None when none does (then the smaller error wins)."""

    def per_class(calibration: Calibration) -> bool:
        return calibration.convention.kind == SIGMOID and calibration.convention.targets == "onehot"  # type: ignore[union-attr]  # stand-ins, fallbacks and matches have a convention

    def consistent(calibration: Calibration) -> bool | None:
        coupled = calibration.couples_classes
        return None if coupled is None else coupled == (calibration.convention.kind == SOFTMAX)  # type: ignore[union-attr]  # stand-ins, fallbacks and matches have a convention

    def bare_index_sigmoid(calibration: Calibration) -> bool:
        convention = calibration.convention
        assert convention is not None  # compared readings ran
        return convention.kind == SIGMOID and convention.targets == "index" and convention.background == "none"

    def coupling_text(calibration: Calibration) -> str:
        return (
            "its classes compete within a row (changing one logit moves the others' gradients)"
            if calibration.couples_classes
            else "its classes do not compete within a row"
        )

    tests: list[tuple[Callable[[Calibration], bool], Callable[[Calibration], str]]] = [
        (
            lambda c: c.convention not in implausible,
            lambda c: "fed logits it gives a non-finite loss or no gradient outside [0, 1], as a loss taking probabilities does",
        ),
        (
            lambda c: c.convention.kind == hint,  # type: ignore[union-attr]
            lambda c: f"the family its {FAMILY_HINTS[hint][2]} names" if hint in FAMILY_HINTS else "the kind its name points to",
        ),
        (per_class, lambda c: "it takes one-hot float targets, which a per-class sigmoid loss is given"),
    ]
    for test, why in tests:
        if test(candidate) != test(current):
            winner = candidate if test(candidate) else current
            return test(candidate), why(winner)
    if (
        candidate.convention.kind != current.convention.kind  # type: ignore[union-attr]  # compared readings ran
        and None not in (consistent(candidate), consistent(current))
        and consistent(candidate) != consistent(current)
    ):
        winner = candidate if consistent(candidate) else current
        return bool(consistent(candidate)), coupling_text(winner)
    for test, why in (
        (lambda c: not bare_index_sigmoid(c), lambda c: "bare class indices suggest a softmax classifier"),
        (lambda c: c.convention.inputs == "logits", lambda c: "a loss takes logits unless it shows otherwise"),
    ):
        if test(candidate) != test(current):
            return test(candidate), why(candidate if test(candidate) else current)
    return None


def _couples_classes(subject: Subject, convention: Convention, batch: Batch) -> bool | None:
    """Whether changing one class's logit changes the gradient of another class of the same row
    (a softmax), called with logits; None when the output carries no gradient or the target fails."""
    if convention.kind not in (SIGMOID, SOFTMAX) or batch.x.dim() != 2 or batch.x.shape[1] < 2:
        return None
    gradients = []
    for shift in (0.0, 1.5):
        changed = batch.clone()
        changed.x[0, 1] += shift
        try:
            out, inputs = subject.call(convention, changed)
            (grad,) = torch.autograd.grad(out.sum(), inputs, allow_unused=True)
        except (Exception, SystemExit, CallTimeout):
            return None
        if grad is None:
            return None
        gradients.append(grad.detach().double())
    change = (gradients[1][0] - gradients[0][0]).abs()
    change[1] = 0.0
    scale = float(gradients[0].abs().max())
    return None if scale == 0 else float(change.max()) > 1e-5 * scale


def _confused_match(
    convention: Convention, call_inputs: torch.Tensor, out: torch.Tensor, batch: Batch, params: Params, declared_inputs: str
) -> tuple[str, Match] | None:
    """A squash applied twice (called with logits), or, when the user declared that the loss takes
    probabilities, a logit formula applied to them (in auto mode that is just a logits loss)."""
    if convention.kind == CENTERNET:
        return None
    if convention.inputs == "logits":
        applicable = ["sigmoid applied to probabilities"]
    elif declared_inputs == "probs":
        applicable = ["a logit formula fed probabilities"]
    else:
        return None
    for name in applicable:
        ref_input = CONFUSIONS[name](convention, call_inputs.detach().double())
        match = match_output(convention.kind, out, reference_elements(convention.kind, ref_input, batch.y.double(), params), batch.y, params)
        if match.error <= MATCH_TOLERANCE:
            return name, match
    return None
