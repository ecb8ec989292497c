"""Every per-kind table of lint in one place: the kinds of loss lint audits, and what each kind
means to calibration, the probes, the rule texts, discovery and the report.

A kind's id is taken from the loss registry's family module that declares it
(:mod:`lossaudit.losses`, ``LINT_KINDS``); the rest of :mod:`lossaudit.lint` names it through the
constants below. The tables are keyed by kind so that a later step can derive them from the
registry too. This module imports no torch: the reference functions
(:mod:`lossaudit.lint.reference`) import it when called.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING

from lossaudit.lint import reference
from lossaudit.losses.asymmetric import ASL
from lossaudit.losses.density import GHM
from lossaudit.losses.heatmap import CENTERNET
from lossaudit.losses.quality import QFL, VFL
from lossaudit.losses.smoothing import LS_CE
from lossaudit.losses.spec import SIGMOID, SOFTMAX

if TYPE_CHECKING:
    from lossaudit.lint.subject import Params

# --------------------------------------------------------------------------------------------
# The kinds
# --------------------------------------------------------------------------------------------

BINARY = "binary"
"""The focal kinds: per-class sigmoid (:data:`SIGMOID`) on ``(N, C)``, softmax (:data:`SOFTMAX`)
on rows, binary on ``(N,)``, and CenterNet's heatmap loss (:data:`CENTERNET`) on ``(B, C, H, W)``
probabilities; then the families of issue 15 (:data:`QFL`, :data:`VFL`, :data:`ASL`,
:data:`LS_CE`) and GHM-C (:data:`GHM`)."""

KINDS = (SIGMOID, SOFTMAX, BINARY, CENTERNET, QFL, VFL, ASL, LS_CE, GHM)
"""The kinds of loss lint audits: the focal kinds, then the families of issue 15 (quality focal,
Varifocal, asymmetric, label-smoothing cross-entropy) and GHM-C."""
FOCAL_KINDS = (SIGMOID, SOFTMAX, BINARY)
"""The focal kinds that stand in for a target matching no reference (calibration's fallback)."""
FAMILY_BASES = {QFL: SIGMOID, VFL: SIGMOID, ASL: SIGMOID, LS_CE: SOFTMAX, GHM: SIGMOID}
"""The family kinds and the focal kind whose batches, layouts and probes each shares: QFL,
Varifocal and ASL are per-class sigmoid losses on ``(N, C)`` targets (soft IoU qualities for QFL
and VFL, multi-hot labels for ASL); label-smoothing CE is a softmax loss on class indices. A rule
without a fix for a family kind gives the fix for its base kind."""


def base_kind(kind: str) -> str:
    """The focal kind whose batches and layout ``kind`` shares (itself for the focal kinds)."""
    return FAMILY_BASES.get(kind, kind)


SOFT_TARGET_KINDS = (QFL, VFL)
"""Kinds whose positives carry a soft target (an IoU quality in (0, 1])."""
MULTI_LABEL_KINDS = (ASL,)
"""Kinds whose calibration batches give rows of even index a second label."""

# --------------------------------------------------------------------------------------------
# References and their parameters
# --------------------------------------------------------------------------------------------

FAMILY_REFERENCES = {kind: kind.replace("-", "_") for kind in (QFL, VFL, ASL, LS_CE, GHM)}
"""The function of :mod:`lossaudit.losses` that is each family kind's reference (named after the
kind: ``ls-ce`` -> ``ls_ce``)."""
REFERENCE_ELEMENTS = {
    SIGMOID: reference.sigmoid_elements,
    SOFTMAX: reference.softmax_elements,
    BINARY: reference.binary_elements,
    CENTERNET: reference.centernet_elements,
    **{kind: reference.family_elements(function) for kind, function in FAMILY_REFERENCES.items()},
}
"""The reference element losses of each kind (:func:`lossaudit.lint.subject.reference_elements`)."""
REFERENCE_NAMES = {
    SIGMOID: "torchvision sigmoid_focal_loss", BINARY: "binary sigmoid focal loss", SOFTMAX: "softmax focal loss",
    CENTERNET: "CenterNet penalty-reduced focal loss (alpha=2, beta=4)",
}
"""How the ``detected`` section names the reference of a focal kind (the families name their
:data:`FAMILY_REFERENCES` function with its arguments)."""
STATEFUL_REFERENCES = {GHM: reference.ghm_calls}
"""Kinds whose reference keeps state across calls (GHM-C's moving average of bin counts, with
momentum > 0), and its element losses over successive calls of one instance."""

FAMILY_PARAMETERS: dict[str, dict[str, tuple[object, tuple[str, ...]]]] = {
    QFL: {"beta": (2.0, ("beta",))},
    VFL: {"alpha": (0.75, ("alpha",)), "gamma": (2.0, ("gamma",)), "detach_weight": (False, ("detach_weight",))},
    ASL: {"gamma_pos": (1.0, ("gamma_pos",)), "gamma_neg": (4.0, ("gamma_neg",)), "clip": (0.05, ("clip",)), "eps": (1e-8, ("eps",)),
          "detach_weight": (False, ("disable_torch_grad_focal_loss", "detach_weight"))},
    LS_CE: {"epsilon": (0.1, ("label_smoothing", "smoothing", "epsilon"))},
    GHM: {"bins": (10, ("bins",)), "momentum": (0.0, ("momentum",))},
}
"""Per family kind, the keyword arguments of its reference in :mod:`lossaudit.losses`: the
reference's default and the parameter names a target may give it (timm's
``disable_torch_grad_focal_loss`` detaches ASL's focusing weight; PyTorch's ``label_smoothing``,
timm's ``smoothing``)."""
NONE_MEANS = {"clip": 0.0}
"""Family parameters for which a target's None means a value of the reference: timm's ``clip=None``
shifts nothing. Any other None reads as the reference's default."""
FOCUSING = {QFL: "beta", ASL: "gamma_neg"}
"""The focusing exponent of a kind, where it is not called gamma (ls-ce and ghm have none)."""
UNFOCUSED_KINDS = (CENTERNET, LS_CE, GHM)
"""Kinds without a focusing exponent to vary (CenterNet's are fixed at 2 and 4)."""
SCALAR_ALPHA_KINDS = (SIGMOID, BINARY)
"""Kinds whose reference alpha is a scalar for positives against 1 - alpha for negatives
(torchvision's alpha_t, default :data:`~lossaudit.lint.subject.DEFAULT_ALPHA`)."""
WEIGHTED_KINDS = (SIGMOID, SOFTMAX)
"""Kinds whose targets may take per-class weights (``weight``, ``class_weight``, ``pos_weight``)
and MONAI's ``include_background=False``."""
POS_WEIGHT_KINDS = (SIGMOID,)
"""Kinds for which BCE's ``pos_weight`` is a per-class weight."""

# --------------------------------------------------------------------------------------------
# Normalisation
# --------------------------------------------------------------------------------------------

CONVENTIONAL = {
    SIGMOID: {"none", "sum", "sum per positive"},
    BINARY: {"none", "sum", "sum per positive", "mean over elements"},
    SOFTMAX: {"none", "sum", "mean over rows", "mean over target weights"},
    CENTERNET: {"none", "sum", "sum per positive"},
    QFL: {"none", "sum", "sum per positive", "mean over rows"},
    VFL: {"none", "sum", "sum per positive", "mean over elements"},
    ASL: {"none", "sum"},
    LS_CE: {"none", "sum", "mean over rows"},
    GHM: {"none", "sum", "mean over elements"},
}
"""Normalisations that need no FL018 note for each kind: for QFL mmdet's 'mean' (per-anchor sums
over N anchors), for VFL mmdet's (over N·C elements), GFL's and VFNet's heads the sum per positive;
ASL is summed (timm, Alibaba-MIIL); label-smoothing CE averages rows (PyTorch); GHM-C divides by
the valid elements (mmdet)."""
USUAL_NORMALISATION = {
    SIGMOID: "the sum per positive anchor (detectors) or no reduction", SOFTMAX: "the mean over rows", CENTERNET: "the sum per peak", BINARY: "the mean or the sum",
    QFL: "the sum per positive anchor (GFL's head) or the mean over anchors", VFL: "the sum per positive anchor (VFNet's head) or the mean over elements",
    ASL: "the sum (timm)", LS_CE: "the mean over rows", GHM: "the mean over valid elements (mmdet)",
}
"""What FL018 names as the usual normalisation of each kind (:data:`CONVENTIONAL`)."""

# --------------------------------------------------------------------------------------------
# What findings say per kind
# --------------------------------------------------------------------------------------------

FAMILY_FACTORS = {
    QFL: "QFL's |y - p|^beta (y the IoU quality)",
    VFL: "Varifocal's (q on positives, alpha p^gamma on negatives)",
    ASL: "ASL's ((1 - p)^gamma_pos on positives, p_m^gamma_neg on negatives with p_m = max(p - clip, 0))",
}
"""How the modulating factor of each family kind reads in an FL004 finding."""
NEGATIVE_ALPHA_KINDS = (VFL,)
"""Kinds whose alpha weights the negatives only (Varifocal: ``alpha * p**gamma``)."""
SHIFTED_FACTOR_KINDS = (ASL,)
"""Kinds whose FL004 defect sits where the probability shift is taken (the anchor ``FL004:<kind>``)."""
UNSET_DEFAULT_KINDS = (CENTERNET, LS_CE)
"""Kinds FL019 does not check: CenterNet's exponents are fixed; PyTorch (0) and timm (0.1) differ
on label smoothing's default."""

NO_ALPHA = (
    (QFL, "QFL takes no balancing weight: remove it (|y - p|**beta already weights each element)"),
    (ASL, "ASL takes no balancing weight: remove it (gamma_pos, gamma_neg and clip balance the two sides)"),
    (LS_CE, "label-smoothing cross-entropy takes no balancing weight: pass class weights as weight= to F.cross_entropy"),
    (GHM, "GHM-C takes no balancing weight: its gradient-density weights do the balancing"),
)
"""The fix of an alpha rule for the families without alpha."""
VFL_ALPHA = (VFL, "apply alpha once and to the negatives only: weight = q on positives, alpha * p**gamma on negatives")

# --------------------------------------------------------------------------------------------
# Auto mode and discovery
# --------------------------------------------------------------------------------------------

AUTO_KINDS = (CENTERNET, QFL, SIGMOID, SOFTMAX, BINARY, VFL, ASL, LS_CE, GHM)
"""The order auto mode tries kinds in: QFL before sigmoid, since on soft targets only a QFL matches
QFL, while on hard labels a QFL matches the sigmoid focal loss (alpha off, gamma = beta)."""
FAMILY_HINTS: dict[str, tuple[str, tuple[str, ...], str, bool]] = {
    ASL: ("parameters", ("gamma_neg", "gamma_pos", "disable_torch_grad_focal_loss"), "parameters (gamma_neg, gamma_pos)", True),
    VFL: ("name", ("varifocal", VFL), "name (Varifocal)", True),
    QFL: ("name", ("qualityfocal", "quality_focal", QFL), "name (quality focal)", True),
    GHM: ("name", (GHM,), "name (GHM)", True),
    LS_CE: ("parameters", ("label_smoothing", "smoothing"), "parameter (label_smoothing / smoothing)", False),
}
"""What reads a target as a family kind in auto mode: ASL's parameter names and Varifocal's, QFL's
and GHM's names decide (their other parameters, alpha, gamma and beta, are the focal losses' too);
label smoothing's parameter only reads a target that matches nothing (focal losses may smooth too)."""


@dataclass(frozen=True)
class NameSign:
    """Globs that a definition's name (lower-cased; with ``joined``, underscores removed too) must
    all match for discovery to read it as a loss lint has a kind for."""

    patterns: tuple[str, ...]
    reason: str
    joined: bool = False

    def matches(self, name: str) -> bool:
        text = name.lower().replace("_", "") if self.joined else name.lower()
        return all(fnmatchcase(text, pattern) for pattern in self.patterns)


FOCAL_CALL = "*focal*"
"""A call whose (lower-cased) name matches this glob calls a focal reference (``F.focal_loss``)."""
NAME_SIGNS = (
    NameSign((FOCAL_CALL,), "name contains 'focal'"),
    NameSign(("*asymmetric*", "*loss*"), "name contains 'asymmetric' and 'loss'"),
    NameSign(("*labelsmoothing*",), "name contains 'label smoothing'", joined=True),
)
"""Discovery's name patterns, in order: any focal kind (varifocal and quality focal included),
ASL, label-smoothing CE."""
FAMILY_WORDS = frozenset({ASL, QFL, VFL})
"""Abbreviations that, as a word of a name, name a loss family lint has a kind for."""

# --------------------------------------------------------------------------------------------
# Documented conventions a kind's target may follow instead of the reference's
# --------------------------------------------------------------------------------------------


def _smoothing_over_the_others(params: Params, classes: int) -> Params:
    """Label smoothing epsilon spread over the C - 1 other classes: PyTorch's convention with
    epsilon * C / (C - 1) (:func:`lossaudit.losses.ls_ce`)."""
    return replace(params, family={**params.family, "epsilon": params.family["epsilon"] * classes / (classes - 1)})


ALTERNATIVE_READINGS: dict[str, tuple[str, Callable[[Params, int], Params]]] = {
    LS_CE: ("epsilon spread over the C - 1 other classes (fairseq's convention), where PyTorch's label_smoothing spreads it over all C classes", _smoothing_over_the_others),
}
"""Per kind, a documented convention a target may follow while its parameter names promise the
reference's: what the FL014 finding says when the output matches it."""
