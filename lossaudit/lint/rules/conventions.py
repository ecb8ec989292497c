"""Conventions a target states rather than defects: the normalisation it divides by (FL018) and its
constructor defaults (FL019)."""

from __future__ import annotations

import ast
from typing import TYPE_CHECKING

from lossaudit.lint.kinds import (
    ASL,
    BINARY,
    CENTERNET,
    CONVENTIONAL,
    FAMILY_BASES,
    FAMILY_PARAMETERS,
    GHM,
    LS_CE,
    QFL,
    SCALAR_ALPHA_KINDS,
    SOFTMAX,
    UNSET_DEFAULT_KINDS,
    USUAL_NORMALISATION,
    VFL,
)
from lossaudit.lint.registry import AT_INIT, Rule, RuleGroup

if TYPE_CHECKING:
    from lossaudit.lint.battery import Context

group = RuleGroup("conventions")


def returns(node: ast.AST) -> bool:
    return isinstance(node, ast.Return)


group.rule(
    Rule(
        "FL018",
        "normalisation",
        "info",
        "states the normalisation found (e.g. mean over N·C elements rather than per positive anchor)",
        "Detectors normalise the summed focal loss by the number of positive anchors; a mean over all "
        "N·C elements makes the loss (and the gradient) shrink with the number of anchors and classes.",
        "divide the summed loss by max(number of positives, 1) for detection",
        "return loss.mean()",
        "return loss.sum() / max(num_positives, 1)",
        fixes=(
            (SOFTMAX, "divide the summed row losses by the number of rows, as F.cross_entropy's mean does"),
            (BINARY, "take the mean or the sum of the element losses"),
            (CENTERNET, "divide the summed loss by the number of peaks (gt == 1), at least 1"),
            (ASL, "sum the element losses, as timm's AsymmetricLossMultiLabel does"),
            (GHM, "divide the weighted sum by the number of valid elements, as mmdet's GHMC does"),
        ),
    ),
    anchor=(returns,),
)
group.rule(
    Rule(
        "FL019",
        "default-mismatch",
        "info",
        "constructor defaults differ from the chosen reference (alpha, gamma, reduction)",
        "Defaults differ between libraries (alpha 0.25 in torchvision, -1 in fvcore; gamma 2 in most, 1.5 "
        "in YOLOv5). A user who relies on the defaults gets a different loss than the paper's.",
        "state alpha and gamma explicitly, or align the defaults with torchvision's (alpha=0.25, gamma=2)",
        "def __init__(self, alpha=1.0, gamma=1.5): ...",
        "def __init__(self, alpha=0.25, gamma=2.0): ...",
        fixes=(
            (SOFTMAX, "state gamma explicitly (reference gamma=2) and pass alpha as a per-class vector or None"),
            (CENTERNET, "CenterNet's heatmap loss takes no alpha or gamma: its exponents are 2 and 4"),
            (QFL, "state beta explicitly (GFL: beta=2)"),
            (VFL, "state alpha and gamma explicitly (VarifocalNet: alpha=0.75, gamma=2)"),
            (ASL, "state gamma_pos, gamma_neg and clip explicitly (timm: 1, 4 and 0.05)"),
            (LS_CE, "state the smoothing explicitly (PyTorch's default is 0, timm's 0.1)"),
            (GHM, "state bins and momentum explicitly (mmdet: bins=10, momentum=0; the authors' detectors: 30 and 0.75)"),
        ),
    ),
    anchor=AT_INIT,
)


@group.probe(190, "FL018")
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
        ctx.fire(
            "FL018", f"the loss is normalised by the {found}{as_in}; the usual choice for a {named} is {usual}", {"normalisation": found, "follows": libraries}
        )


@group.probe(200, "FL019")
def report_defaults(ctx: Context) -> None:
    """FL019 (info): constructor/function defaults that differ from the reference's."""
    import torch

    from lossaudit.lint.subject import DEFAULT_ALPHA, DEFAULT_GAMMA

    if ctx.kind in UNSET_DEFAULT_KINDS:
        return  # CenterNet's exponents are fixed; PyTorch (0) and timm (0.1) differ on label smoothing's default
    if ctx.kind in FAMILY_BASES:
        expected = {names[0]: default for default, names in FAMILY_PARAMETERS[ctx.kind].values() if not isinstance(default, bool) and names[0] != "eps"}
    else:
        expected = {"alpha": DEFAULT_ALPHA if ctx.kind in SCALAR_ALPHA_KINDS else None, "gamma": DEFAULT_GAMMA}
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
