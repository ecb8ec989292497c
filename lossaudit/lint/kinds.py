"""Every per-kind table of lint in one place: the kinds of loss lint audits, and what each kind
means to calibration, the probes, the rule texts, discovery and the report.

The kinds are declared by the loss families (``LINT_KINDS`` of each module of
:mod:`lossaudit.losses`, collected in :data:`lossaudit.losses.registry.LINT_KINDS`): name, base
kind, reference, parameters, normalisations and texts. This module derives from them the tables
lint reads, and adds what only lint knows (the focal kinds' references, the groups of kinds some
probes treat alike, discovery's name patterns), naming kinds by the families' constants. It
imports no torch: the reference functions (:mod:`lossaudit.lint.reference`) import it when called.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, replace
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING

from lossaudit.lint import reference
from lossaudit.losses.asymmetric import ASL
from lossaudit.losses.density import GHM
from lossaudit.losses.focusing import BINARY
from lossaudit.losses.heatmap import CENTERNET
from lossaudit.losses.quality import QFL, VFL
from lossaudit.losses.registry import LINT_KINDS
from lossaudit.losses.smoothing import LS_CE
from lossaudit.losses.spec import SIGMOID, SOFTMAX

if TYPE_CHECKING:
    from lossaudit.lint.subject import Params

# --------------------------------------------------------------------------------------------
# The kinds
# --------------------------------------------------------------------------------------------

KINDS = tuple(LINT_KINDS)
"""The kinds of loss lint audits, in the registry's order: the focal kinds (per-class sigmoid on
``(N, C)``, softmax on rows, binary on ``(N,)``, CenterNet's heatmap loss on ``(B, C, H, W)``
probabilities) and the families'."""
FOCAL_KINDS = (SIGMOID, SOFTMAX, BINARY)
"""The focal kinds that stand in for a target matching no reference (calibration's fallback)."""
FAMILY_BASES = {name: kind.base for name, kind in LINT_KINDS.items() if kind.base != name}
"""The family kinds and the focal kind whose batches, layouts and probes each shares (QFL,
Varifocal and ASL are per-class sigmoid losses on ``(N, C)`` targets, label-smoothing CE a softmax
loss on class indices). A rule without a fix for a family kind gives the fix for its base kind."""


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

FAMILY_REFERENCES = {name: kind.reference for name, kind in LINT_KINDS.items() if kind.reference is not None}
"""Each family kind's reference function, as its loss family declares it."""
REFERENCE_ELEMENTS = {
    SIGMOID: reference.sigmoid_elements,
    SOFTMAX: reference.softmax_elements,
    BINARY: reference.binary_elements,
    CENTERNET: reference.centernet_elements,
    **{kind: reference.family_elements(function) for kind, function in FAMILY_REFERENCES.items()},
}
"""The reference element losses of each kind (:func:`lossaudit.lint.subject.reference_elements`)."""
REFERENCE_NAMES = {
    SIGMOID: "torchvision sigmoid_focal_loss",
    BINARY: "binary sigmoid focal loss",
    SOFTMAX: "softmax focal loss",
    CENTERNET: "CenterNet penalty-reduced focal loss (alpha=2, beta=4)",
}
"""How the ``detected`` section names the reference of a focal kind (the families name their
:data:`FAMILY_REFERENCES` function with its arguments)."""
STATEFUL_REFERENCES = {GHM: reference.ghm_calls}
"""Kinds whose reference keeps state across calls (GHM-C's moving average of bin counts, with
momentum > 0), and its element losses over successive calls of one instance."""

FAMILY_PARAMETERS: dict[str, dict[str, tuple[object, tuple[str, ...]]]] = {
    name: {keyword: (inspect.signature(kind.reference).parameters[keyword].default, names) for keyword, names in kind.parameters.items()}
    for name, kind in LINT_KINDS.items()
    if kind.reference is not None
}
"""Per family kind, the keyword arguments of its reference: the reference's default and the
parameter names a target may give it (timm's ``disable_torch_grad_focal_loss`` detaches ASL's
focusing weight; PyTorch's ``label_smoothing``, timm's ``smoothing``)."""
NONE_MEANS = {"clip": 0.0}
"""Family parameters for which a target's None means a value of the reference: timm's ``clip=None``
shifts nothing. Any other None reads as the reference's default."""
FOCUSING = {name: kind.focusing for name, kind in LINT_KINDS.items() if kind.focusing not in (None, "gamma")}
"""The focusing exponent of a kind, where it is not called gamma."""
UNFOCUSED_KINDS = tuple(name for name, kind in LINT_KINDS.items() if kind.focusing is None)
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

CONVENTIONAL = {name: set(kind.normalisations) for name, kind in LINT_KINDS.items()}
"""Normalisations that need no FL018 note for each kind: for QFL mmdet's 'mean' (per-anchor sums
over N anchors), for VFL mmdet's (over N·C elements), GFL's and VFNet's heads the sum per positive;
ASL is summed (timm, Alibaba-MIIL); label-smoothing CE averages rows (PyTorch); GHM-C divides by
the valid elements (mmdet)."""
USUAL_NORMALISATION = {name: kind.usual_normalisation for name, kind in LINT_KINDS.items()}
"""What FL018 names as the usual normalisation of each kind (:data:`CONVENTIONAL`)."""

# --------------------------------------------------------------------------------------------
# What findings say per kind
# --------------------------------------------------------------------------------------------

FAMILY_FACTORS = {name: kind.factor for name, kind in LINT_KINDS.items() if kind.factor}
"""How the modulating factor of each family kind reads in an FL004 finding."""
NEGATIVE_ALPHA_KINDS = (VFL,)
"""Kinds whose alpha weights the negatives only (Varifocal: ``alpha * p**gamma``)."""
SHIFTED_FACTOR_KINDS = (ASL,)
"""Kinds whose FL004 defect sits where the probability shift is taken (the anchor ``FL004:<kind>``)."""
UNSET_DEFAULT_KINDS = (CENTERNET, LS_CE)
"""Kinds FL019 does not check: CenterNet's exponents are fixed; PyTorch (0) and timm (0.1) differ
on label smoothing's default."""

NO_ALPHA = tuple((name, kind.no_alpha) for name, kind in LINT_KINDS.items() if kind.no_alpha)
"""The fix of an alpha rule for the families without alpha."""
VFL_ALPHA = (VFL, "apply alpha once and to the negatives only: weight = q on positives, alpha * p**gamma on negatives")

# --------------------------------------------------------------------------------------------
# Auto mode and discovery
# --------------------------------------------------------------------------------------------

AUTO_KINDS = tuple(dict.fromkeys((CENTERNET, QFL, SIGMOID, SOFTMAX, BINARY, VFL, ASL, LS_CE, GHM, *KINDS)))
"""The order auto mode tries kinds in: QFL before sigmoid, since on soft targets only a QFL matches
QFL, while on hard labels a QFL matches the sigmoid focal loss (alpha off, gamma = beta); a kind a
new family registers comes last."""
FAMILY_HINTS = {name: kind.hint for name, kind in LINT_KINDS.items() if kind.hint is not None}
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
    LS_CE: (
        "epsilon spread over the C - 1 other classes (fairseq's convention), where PyTorch's label_smoothing spreads it over all C classes",
        _smoothing_over_the_others,
    ),
}
"""Per kind, a documented convention a target may follow while its parameter names promise the
reference's: what the FL014 finding says when the output matches it."""
