"""Calibration: which calling convention, which reference and which normalisation the target
matches (the ``detected`` section of a lint result, and the ground for FL014 and FL016)."""

from __future__ import annotations

import math
from typing import Callable

import torch

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
    return f"{type(error).__name__}: {error}"




def _param_grid(subject: Subject, kind: str) -> list[Params]:
    if kind == "centernet":
        return [Params(alpha=None, gamma=DEFAULT_GAMMA)]
    if subject.accepts("alpha"):
        alphas = [subject.value("alpha", None)]
    else:
        alphas = [None, DEFAULT_ALPHA] if kind in ("sigmoid", "binary") else [None]
    gammas = [float(subject.value("gamma", DEFAULT_GAMMA))] if subject.accepts("gamma") else [DEFAULT_GAMMA]
    return [Params(alpha=alpha, gamma=gamma) for alpha in alphas for gamma in gammas]


CONFUSIONS: dict[str, Callable[[Convention, torch.Tensor], torch.Tensor]] = {
    "sigmoid applied to probabilities": lambda c, inputs: torch.sigmoid(inputs) if c.kind != "softmax" else torch.softmax(inputs, dim=1),
    "a logit formula fed probabilities": lambda c, inputs: inputs,
}
"""What the reference reads when the target squashes twice (called with logits) or treats
probabilities as logits (called with probabilities)."""


def calibrate(subject: Subject, kind: str, inputs: str, targets: str, seed: int) -> Calibration:
    """Call the target under each convention and find the reference it matches best."""
    kinds = ["centernet", "sigmoid", "softmax", "binary"] if kind == "auto" else [kind]
    attempts: list[dict] = []
    best: Calibration | None = None
    fallback: Calibration | None = None
    for candidate_kind in kinds:
        batch = make_batch(candidate_kind, subject.num_classes, torch.Generator().manual_seed(seed))
        for convention in conventions(candidate_kind, inputs, targets):
            try:
                out, call_inputs = subject.call(convention, batch)
            except (Exception, SystemExit, CallTimeout) as error:
                attempts.append({"convention": convention.describe(), "error": error_text(error), "exception": error})
                if isinstance(error, CallTimeout):  # a hang does not depend on the convention
                    return Calibration(None, Params(), Match("unknown", math.inf), attempts=attempts)
                continue
            for params in _param_grid(subject, candidate_kind):
                ref_input = canonical_to_reference_input(convention, call_inputs.detach().double())
                match = match_output(candidate_kind, out, reference_elements(candidate_kind, ref_input, batch.y.double(), params), batch.y, params)
                found = Calibration(convention, params, match, kind_reason="matches the reference")
                if not found.matched:
                    confusion = _confused_match(convention, call_inputs, out, batch, params, declared_inputs=inputs)
                    if confusion is not None:
                        found = Calibration(convention, params, confusion[1], confusion=confusion[0], kind_reason=f"matches the reference once {confusion[0]}")
                attempts.append({"convention": convention.describe(), "error": None, "match": match.normalisation, "rel_error": match.error})
                if found.matched or found.confusion:
                    if best is None:
                        best = found
                elif candidate_kind != "centernet" or kind == "centernet":
                    if fallback is None or _prefer(found, fallback):
                        fallback = found
    chosen = best or fallback
    if chosen is None:
        return Calibration(None, Params(), Match("unknown", math.inf), attempts=attempts)
    chosen.attempts = attempts
    if best is None:
        chosen.kind_reason = "closest reference; no convention matched" if kind == "auto" else "as given"
    return chosen


def _prefer(candidate: Calibration, current: Calibration) -> bool:
    """Without a match: a target taking one-hot float targets is meant per-class (sigmoid), and a
    target is assumed to take logits (the common case); then the smaller error wins."""

    def intent(calibration: Calibration) -> tuple[int, int]:
        convention = calibration.convention
        return int(convention.kind == "sigmoid" and convention.targets == "onehot"), int(convention.inputs == "logits")

    if intent(candidate) != intent(current):
        return intent(candidate) > intent(current)
    return candidate.match.error < current.match.error


def _confused_match(convention: Convention, call_inputs: torch.Tensor, out: torch.Tensor, batch: Batch, params: Params, declared_inputs: str) -> tuple[str, Match] | None:
    """A squash applied twice (called with logits), or, when the user declared that the loss takes
    probabilities, a logit formula applied to them (in auto mode that is just a logits loss)."""
    if convention.kind == "centernet":
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
