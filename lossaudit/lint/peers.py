"""The documented focal-loss conventions of the libraries users import, as lint recognises them.

Each entry states what the library's own documentation and source fix: the kind of loss, how it
reads alpha (a scheme of :data:`lossaudit.lint.subject.ALPHA_SCHEMES`), how its targets are
encoded, and the normalisations its reductions produce. A calibrated target that matches the
reference under one of these readings follows that library's convention; lint names it in the
``detected`` section instead of reporting the convention as a defect. Where a convention departs
from the focal-loss paper, :data:`DEPARTURES` says how, and lint reports it as ``info`` only.

Sources (read for the semantics, not copied): torchvision ``ops/focal_loss.py``, fvcore
``fvcore/nn/focal_loss.py``, mmdet 3.x ``models/losses/focal_loss.py``, kornia 0.9
``losses/focal.py``, MONAI 1.x ``losses/focal_loss.py``, segmentation_models_pytorch 0.6
``losses/focal.py`` and ``_functional.py``, ultralytics 8.x ``utils/loss.py`` (``FocalLoss``),
mmcv ``ops/focal_loss.py`` (``softmax_focal_loss``); for the family kinds, mmdet
``gfocal_loss.py``, ``varifocal_loss.py`` and ``ghm_loss.py``, timm ``asymmetric_loss.py`` and
``loss/cross_entropy.py``, torch ``nn.CrossEntropyLoss(label_smoothing=)``.
"""

from __future__ import annotations

from dataclasses import dataclass

from lossaudit.lint.kinds import ASL, BINARY, GHM, LS_CE, QFL, SIGMOID, SOFTMAX, VFL


@dataclass(frozen=True)
class PeerConvention:
    """One library's convention. ``targets`` holds encodings as ``"onehot"`` or
    ``"index/<background>"``; ``normalisations`` the names of :func:`subject.normalisers` (and
    'none' for an unreduced output)."""

    library: str
    kinds: frozenset[str]
    alpha_schemes: frozenset[str]
    targets: frozenset[str]
    normalisations: frozenset[str]

    def matches(self, kind: str, alpha_scheme: str, targets: str, normalisation: str) -> bool:
        return kind in self.kinds and alpha_scheme in self.alpha_schemes and targets in self.targets and normalisation in self.normalisations


def _set(*items: str) -> frozenset[str]:
    return frozenset(items)


PEER_CONVENTIONS: tuple[PeerConvention, ...] = (
    PeerConvention(
        "torchvision ops.sigmoid_focal_loss / fvcore sigmoid_focal_loss",
        _set(SIGMOID, BINARY),
        _set("alpha_t", "off"),
        _set("onehot"),
        _set("none", "sum", "mean over elements"),
    ),
    PeerConvention(
        "mmdet FocalLoss / py_sigmoid_focal_loss",
        _set(SIGMOID),
        _set("alpha_t"),
        _set("onehot", "index/C"),
        _set("none", "sum", "mean over elements", "sum per positive"),
    ),
    PeerConvention(
        "kornia binary_focal_loss_with_logits", _set(SIGMOID, BINARY), _set("alpha_t", "off"), _set("onehot"), _set("none", "sum", "mean over elements")
    ),
    PeerConvention("kornia focal_loss / FocalLoss", _set(SOFTMAX), _set("class-0", "off"), _set("index/none"), _set("none", "sum", "mean over elements")),
    PeerConvention("MONAI FocalLoss", _set(SIGMOID), _set("alpha_t", "positives", "off"), _set("onehot"), _set("none", "mean over elements")),
    PeerConvention("MONAI FocalLoss(use_softmax=True)", _set(SOFTMAX), _set("class-0", "target", "off"), _set("onehot"), _set("none", "mean over elements")),
    # smp's multiclass mode has no background label, but a label C matches no class column, so a
    # loss that reads label C as background computes the same values.
    PeerConvention(
        "segmentation_models_pytorch FocalLoss(mode='multiclass')",
        _set(SIGMOID),
        _set("alpha_t", "off"),
        _set("index/none", "index/C"),
        _set("mean over elements", "sum"),
    ),
    PeerConvention(
        "segmentation_models_pytorch FocalLoss(mode='multilabel' or 'binary')",
        _set(SIGMOID, BINARY),
        _set("alpha_t", "off"),
        _set("onehot"),
        _set("mean over elements", "sum"),
    ),
    PeerConvention("ultralytics FocalLoss", _set(SIGMOID), _set("alpha_t", "off"), _set("onehot"), _set("mean over classes")),
    PeerConvention("mmcv softmax_focal_loss", _set(SOFTMAX), _set("target", "off"), _set("index/none"), _set("mean over rows", "sum", "none")),
    PeerConvention(
        "mmdet QualityFocalLoss / quality_focal_loss_tensor_target",
        _set(QFL),
        _set("off"),
        _set("onehot"),
        _set("none", "sum", "mean over rows", "sum per positive"),
    ),
    PeerConvention(
        "mmdet VarifocalLoss / varifocal_loss", _set(VFL), _set("off"), _set("onehot"), _set("none", "sum", "mean over elements", "sum per positive")
    ),
    PeerConvention("timm AsymmetricLossMultiLabel", _set(ASL), _set("off"), _set("onehot"), _set("sum")),
    PeerConvention(
        "torch nn.CrossEntropyLoss(label_smoothing=) / timm LabelSmoothingCrossEntropy",
        _set(LS_CE),
        _set("off"),
        _set("index/none", "onehot"),
        _set("none", "sum", "mean over rows"),
    ),
    PeerConvention("mmdet GHMC", _set(GHM), _set("off"), _set("onehot"), _set("mean over elements")),
)

DEPARTURES: dict[str, str] = {
    "class-0": (
        "alpha follows kornia's and MONAI's softmax convention: class 0 is weighted by 1 - alpha and classes "
        "1..C-1 by alpha, so class 0 is treated as background; the paper's softmax focal loss balances classes "
        "with a per-class alpha taken at the target class, and a relabelling that moves class 0 changes this loss"
    ),
    "positives": (
        "the per-class alpha follows MONAI's sigmoid convention: alpha[c] weights the positives of class c and "
        "negatives are weighted 1; torchvision's alpha_t would weight them by 1 - alpha[c]"
    ),
}
"""Alpha schemes that follow a library but depart from the paper: the info text that says how."""


def followed(kind: str, alpha_scheme: str, targets: str, normalisation: str) -> list[str]:
    """The libraries whose documented convention a matched target follows."""
    return [peer.library for peer in PEER_CONVENTIONS if peer.matches(kind, alpha_scheme, targets, normalisation)]
