"""The loss under audit: how to call it, what it computes, and against which reference.

Conventions. Probes build *canonical* batches — logits ``x`` and one-hot targets ``y`` (``(N, C)``
for sigmoid and softmax, ``(N,)`` for binary, ``(B, C, H, W)`` probabilities and heatmaps for
centernet) — and :meth:`Subject.call` converts them to the target's convention (logits or
probabilities; class indices or one-hot floats). The tensor handed to the target is a leaf that
requires grad, so probes can read the gradient the target produces and compare it with the
reference's.

A call's scalar output is decoded with the normalisation found at calibration: the reference's
element losses summed, divided by one of :data:`NORMALISATIONS`.
"""

from __future__ import annotations

import copy
import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, cast

import torch
import torch.nn.functional as F

from lossaudit._limits import CallTimeout as CallTimeout  # re-exported: lint's modules import it from here
from lossaudit._limits import run_with_timeout
from lossaudit.lint.kinds import (
    BINARY,
    CENTERNET,
    FAMILY_BASES,
    MULTI_LABEL_KINDS,
    REFERENCE_ELEMENTS,
    SIGMOID,
    SOFT_TARGET_KINDS,
    SOFTMAX,
    STATEFUL_REFERENCES,
    base_kind,
)

QUIET = 14.0
"""|logit| of a 'quiet' element: its reference loss is below 1e-6."""
MATCH_TOLERANCE = 1e-4
"""Relative error under which the output matches a reference."""
DEFAULT_ALPHA, DEFAULT_GAMMA = 0.25, 2.0
REQUIRED_DEFAULTS = {"alpha": DEFAULT_ALPHA, "gamma": DEFAULT_GAMMA}
"""Values lint supplies for hyper-parameters a target declares without a default."""


BACKGROUND_LABELS = {"C": "background = C", "0": "background = 0", "none": "no background label"}
"""How index targets label a background row (an all-zero one-hot row): with the class count C
(mmdet, torchvision RetinaNet), with 0 and classes shifted to 1..C (Detectron), or not at all:
every row has a class (``F.one_hot(target, num_classes=C)``, segmentation, classification)."""


@dataclass(frozen=True)
class Convention:
    """How the target is called: ``inputs`` 'logits' | 'probs'; ``targets`` 'onehot' | 'index' |
    'heatmap'; for index targets, ``background`` is a key of :data:`BACKGROUND_LABELS`."""

    kind: str
    inputs: str
    targets: str
    background: str = "none"
    layout: str = "rows"
    """'rows': ``(N, C)`` logits and ``(N,)`` / ``(N, C)`` targets; 'spatial': the same values as a
    segmentation batch, ``(B, C, H, W)`` logits and ``(B, H, W)`` / ``(B, C, H, W)`` targets;
    'sequence': ``(B, C, L)`` logits and ``(B, L)`` / ``(B, C, L)`` targets, for a loss that runs on
    nothing else (a workaround, :mod:`lossaudit.lint.crashes`)."""

    @property
    def base(self) -> str:
        """The focal kind whose batches and layout this convention's kind shares."""
        return base_kind(self.kind)

    @property
    def has_background(self) -> bool:
        """Whether batches may hold background rows (all-zero one-hot rows) in this convention."""
        return self.base == SIGMOID and (self.targets == "onehot" or self.background != "none")

    @property
    def encoding(self) -> str:
        """'onehot', 'heatmap' or 'index/<background>', as :mod:`peers` names encodings."""
        return f"index/{self.background}" if self.targets == "index" else self.targets

    def describe(self) -> str:
        targets = f"{self.targets} targets"
        if self.targets == "index" and self.kind == SIGMOID:
            targets += f" ({BACKGROUND_LABELS[self.background]})"
        layout = {"spatial": ", (B, C, H, W) layout", "sequence": ", (B, C, L) layout"}.get(self.layout, "")
        return f"{self.kind}: {self.inputs} in, {targets}{layout}"

    def arrange(self, inputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Canonical row tensors in this convention's layout: rows become the pixels of
        ``(B, C, 1, W)`` images (B = 2 when the row count is even)."""
        if self.layout == "rows":
            return inputs, targets
        if self.layout == "sequence":
            return to_sequence(inputs), to_sequence(targets)
        return to_spatial(inputs), to_spatial(targets)

    def canonical_output(self, out: torch.Tensor) -> torch.Tensor:
        """An unreduced spatial output, ``(B, C, H, W)`` or ``(B, H, W)``, back as rows."""
        if self.layout == "sequence":
            return from_sequence(out)
        if self.layout == "rows" or out.dim() < 3:
            return out
        if out.dim() == 4:
            return out.permute(0, 2, 3, 1).reshape(-1, out.shape[1])
        return out.reshape(-1)


def conventions(kind: str, inputs: str, targets: str, num_classes: int) -> list[Convention]:
    """Conventions to try for ``kind``, in order of preference, restricted by the options.

    Sigmoid losses are tried with one-hot targets, then class indices with each background label
    (no-background needs two classes or more); softmax losses (label-smoothing CE too) with
    indices, then one-hot rows; QFL, Varifocal and ASL with ``(N, C)`` float targets only (soft
    qualities and multi-hot rows have no index form).
    """
    input_options = ["logits", "probs"] if inputs == "auto" else [inputs]
    if kind == CENTERNET:
        return [Convention(kind, i, "heatmap") for i in (["probs", "logits"] if inputs == "auto" else [inputs])]
    if base_kind(kind) == SOFTMAX:
        target_options = [("index", "none"), ("onehot", "none")]
    elif kind == BINARY or kind in FAMILY_BASES:
        target_options = [("onehot", "none")]
    else:
        target_options = [("onehot", "none"), ("index", "C"), ("index", "0")] + ([("index", "none")] if num_classes > 1 else [])
    if targets != "auto":
        target_options = [option for option in target_options if option[0] == targets]
    return [Convention(kind, i, t, background) for t, background in target_options for i in input_options]


@dataclass
class Batch:
    """A canonical batch: logits (or, for centernet, probabilities) and one-hot/heatmap targets."""

    x: torch.Tensor
    y: torch.Tensor

    def clone(self) -> Batch:
        return Batch(self.x.clone(), self.y.clone())


ALPHA_SCHEMES = {
    "alpha_t": "alpha for positives, 1 - alpha for negatives (a per-class vector: by class column)",
    "positives": "a per-class alpha on positives only, negatives weighted 1",
    "target": "alpha taken at the target class (a scalar multiplies every class alike)",
    "class-0": "1 - alpha for class 0 and alpha for classes 1..C-1",
    "constant": "alpha multiplies every element alike (the FL001 defect)",
    "inverted": "1 - alpha for positives, alpha for negatives (the FL002 defect)",
}
"""How a reference reads alpha. Sigmoid: 'alpha_t' (torchvision) or 'positives' (MONAI's per-class
vector). Softmax: 'target' (a per-class vector; a scalar only rescales, as in mmcv) or 'class-0'
(kornia's and MONAI's scalar alpha, class 0 being the background). 'constant' and 'inverted' read
the two alpha defects, so lint can check what else is wrong once they are accounted for."""


@dataclass
class Params:
    """The hyper-parameters the target is called with, as the reference should read them.

    ``class_weight`` is a per-class multiplier (kornia's and MONAI's ``weight``): by column for
    sigmoid losses, at the target class for softmax ones. ``skip_class_0`` drops class 0 from the
    loss (MONAI's ``include_background=False``). ``family`` holds the keyword arguments of a family
    kind's reference (:data:`~lossaudit.lint.kinds.FAMILY_PARAMETERS`).
    """

    alpha: object = None  # None/-1 off, a float, or a per-class list
    gamma: float = DEFAULT_GAMMA
    alpha_scheme: str = "alpha_t"
    class_weight: tuple | None = None
    skip_class_0: bool = False
    family: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.alpha_scheme not in ALPHA_SCHEMES:
            raise ValueError(f"unknown alpha scheme {self.alpha_scheme!r}; expected one of {', '.join(ALPHA_SCHEMES)}")

    @property
    def scheme(self) -> str:
        """The alpha scheme in effect: 'off' when alpha is off."""
        return "off" if self.reference_alpha() is None else self.alpha_scheme

    def reference_alpha(self) -> object:
        """None (off), a float, or a float64 tensor of per-class values."""
        alpha = self.alpha
        if alpha is None or (isinstance(alpha, (int, float)) and alpha < 0):
            return None
        if isinstance(alpha, torch.Tensor):
            alpha = alpha.tolist()
        if isinstance(alpha, (list, tuple)):
            return torch.tensor(alpha, dtype=torch.float64)
        return float(cast(float, alpha))


def reference_elements(kind: str, x: torch.Tensor, y: torch.Tensor, params: Params) -> torch.Tensor:
    """The reference loss per element (sigmoid, binary, centernet) or per row (softmax), from
    canonical logits ``x`` (centernet: probabilities) and one-hot ``y`` (QFL/VFL: soft qualities;
    ASL: multi-hot), as ``params`` read it (:data:`~lossaudit.lint.kinds.REFERENCE_ELEMENTS`)."""
    return REFERENCE_ELEMENTS[kind](x, y, params)


def expects_state(kind: str, params: Params) -> bool:
    """Whether the reference keeps state across calls: GHM-C's moving average of bin counts
    (momentum > 0)."""
    return kind in STATEFUL_REFERENCES and params.family.get("momentum", 0.0) > 0


def reference_calls(kind: str, x: torch.Tensor, y: torch.Tensor, params: Params, calls: int) -> list[torch.Tensor]:
    """The element losses of a stateful reference (:func:`expects_state`) over ``calls``
    successive calls of one instance on the same batch, its state carried from call to call."""
    return STATEFUL_REFERENCES[kind](x, y, params, calls)


def normalisers(kind: str, y: torch.Tensor, params: Params) -> dict[str, float]:
    """What a scalar output may divide the summed loss by, named as reported.

    'mean over elements' counts the elements the loss covers (N·C, or N·(C - 1) without class 0);
    'mean over classes' is ultralytics' ``loss.mean(1).sum()`` on ``(N, C)``. A positive is an
    element whose target is at least 0.5, or above 0 for soft qualities (QFL, VFL).
    """
    rows = y.shape[0]
    if kind == CENTERNET:
        peaks = int(y.eq(1).sum())
        return {"sum": 1.0, "mean over elements": float(y.numel()), "sum per positive": float(max(peaks, 1))}
    elements = y.numel() - (rows if params.skip_class_0 else 0)
    candidates = {"sum": 1.0, "mean over elements": float(elements)}
    if base_kind(kind) in (SIGMOID, BINARY):  # before rows: with one positive per row, the detector's name
        positives = y.gt(0) if kind in SOFT_TARGET_KINDS else y.ge(0.5)
        candidates["sum per positive"] = float(max(int(positives.sum()), 1))
    candidates["mean over rows"] = float(rows)
    if kind == SIGMOID:
        candidates["mean over classes"] = float(y.shape[1])
    alpha = params.reference_alpha()
    if kind == SOFTMAX and isinstance(alpha, torch.Tensor) and params.alpha_scheme == "target" and alpha.numel() == y.shape[1]:
        candidates["mean over target weights"] = float(alpha[y.argmax(dim=1)].sum())
    return candidates


def output_tensor(value: object) -> torch.Tensor:
    """The loss tensor from what the target returned (a tensor, a float, or a tuple/dict holding one)."""
    if isinstance(value, (tuple, list)) and value:
        value = value[0]
    if isinstance(value, dict):
        value = value.get("loss", next(iter(value.values()), None))
    if isinstance(value, (int, float)):
        return torch.tensor(float(value))
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"the loss returned {type(value).__name__}, not a tensor")
    return value


@dataclass
class Match:
    """How well an output matches a reference: the normalisation and the relative error."""

    normalisation: str
    error: float


def match_output(kind: str, out: torch.Tensor, ref: torch.Tensor, y: torch.Tensor, params: Params) -> Match:
    """The normalisation under which ``out`` is closest to the reference elements ``ref``.

    A scalar is compared with the reference's sum under each normaliser; an unreduced output
    element by element when it has one value per element (any shape, in row order), else row by
    row when it has one value per row (sigmoid) or one per class of each row (softmax maps)."""
    out = out.detach().double()
    ref = ref.detach().double()
    if out.numel() == 1:
        total = float(ref.sum())
        best = Match("unknown", math.inf)
        for name, divisor in normalisers(kind, y, params).items():
            expected = total / divisor
            error = abs(float(out.reshape(())) - expected) / max(abs(expected), 1e-12)
            if error < best.error:
                best = Match(name, error)
        return best
    if out.numel() == ref.numel():
        out = out.reshape(ref.shape)  # elements in row order, whatever the shape: (N, 1), (1, N, C)
    elif base_kind(kind) == SIGMOID and out.numel() == ref.shape[0]:
        out, ref = out.reshape(-1), ref.sum(dim=1)  # a loss per row
    elif base_kind(kind) == SOFTMAX and out.numel() == ref.numel() * out.shape[-1]:
        out = out.reshape(ref.shape[0], -1).sum(dim=1)  # a per-class map (kornia, MONAI): the target column holds the row's loss
    if out.shape == ref.shape:
        return Match("none", float((out - ref).abs().max() / ref.abs().max().clamp_min(1e-12)))
    return Match(f"unknown shape {tuple(out.shape)}", math.inf)


class Subject:
    """The user's loss: a class (instantiated with ``init``) or a function (called with ``init``)."""

    def __init__(self, obj: Any, init: dict, timeout: float, num_classes: int, ignore_index: int | None):
        self.obj = obj
        self.init = dict(init)
        self.timeout = timeout
        self.is_class = inspect.isclass(obj)
        # A built loss (an nn.Module instance): its hyper-parameters are its attributes and cannot
        # be overridden, so the probes that vary alpha or gamma do not run.
        self.is_instance = not self.is_class and not inspect.isroutine(obj)
        self.num_classes = num_classes
        try:
            self.signature = None if self.is_instance else inspect.signature(obj.__init__ if self.is_class else obj)
        except (TypeError, ValueError):
            self.signature = None
        self.supplied = {name: value for name, value in REQUIRED_DEFAULTS.items() if self.requires(name) and name not in self.init}
        self.init.update(self.supplied)
        declared_ignore = self.init.get("ignore_index", self.default("ignore_index"))
        self.ignore_index = ignore_index if ignore_index is not None else declared_ignore if isinstance(declared_ignore, int) else None
        self.module_init = False
        """A workaround for a missing ``super().__init__()``: nn.Module's own state is set on the
        instance before its ``__init__`` runs, so ``__call__`` reaches ``forward``
        (:mod:`lossaudit.lint.crashes`)."""
        self.sequence = False
        """A workaround for a loss that runs only on ``(B, C, L)`` inputs (its shape checks refuse
        rows): the rows of a rows convention are handed over as ``(B, C, N / B)`` sequences, and
        ``(B, L)`` targets (:func:`to_sequence`)."""
        self.workarounds: list[str] = []
        """What the audit works around to run at all (a missing ``super().__init__()``, a
        hard-coded CUDA device, an argument whose default crashes), in words."""

    def variant(self, **overrides: object) -> Subject:
        """The same target with ``overrides`` on top of its ``init`` (a canonical setting, or a
        value for an argument whose default crashes); workarounds carry over."""
        other = copy.copy(self)
        other.init = {**self.init, **overrides}
        other.workarounds = list(self.workarounds)
        return other

    def with_classes(self, num_classes: int) -> Subject:
        """The same target probed with ``num_classes`` classes."""
        other = self.variant()
        other.num_classes = num_classes
        return other

    def requires(self, name: str) -> bool:
        """Whether ``name`` is a parameter without a default (kornia's ``alpha``)."""
        parameter = self.signature.parameters.get(name) if self.signature is not None else None
        return parameter is not None and parameter.default is inspect.Parameter.empty and parameter.kind is not inspect.Parameter.VAR_KEYWORD

    def accepts(self, name: str) -> bool:
        if self.signature is None:
            return name in self.init
        parameters = self.signature.parameters
        return name in parameters or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())

    def default(self, name: str) -> object:
        if self.signature is None or name not in self.signature.parameters:
            return None
        default = self.signature.parameters[name].default
        return None if default is inspect.Parameter.empty else default

    def value(self, name: str, fallback: object) -> Any:
        """The value the target uses for ``name``: from ``--init``, else its default (an
        instance's attribute), else ``fallback``."""
        if name in self.init:
            return self.init[name]
        if self.is_instance:
            return getattr(self.obj, name, fallback)
        if self.signature is not None and name in self.signature.parameters:
            default = self.signature.parameters[name].default
            if default is not inspect.Parameter.empty:
                return default
        return fallback

    def build(self, **overrides: object) -> Callable:
        """A fresh callable ``loss(inputs, targets)`` with ``overrides`` on top of ``init``."""
        kwargs = {**self.init, **overrides}
        if self.is_instance:
            return self.obj
        if self.is_class:
            instance = self.guarded(lambda: self._instantiate(kwargs))
            return instance
        return lambda inputs, targets: self.obj(inputs, targets, **kwargs)

    def _instantiate(self, kwargs: dict) -> object:
        if not self.module_init:
            return self.obj(**kwargs)
        instance = self.obj.__new__(self.obj)
        torch.nn.Module.__init__(instance)
        instance.__init__(**kwargs)
        return instance

    def guarded(self, fn: Callable):
        """Run ``fn`` under the per-call time limit, then restore the grad mode it found: a target
        that leaks it (FL021, read inside ``fn``) cannot reach later calls or lint's caller."""
        with torch.set_grad_enabled(torch.is_grad_enabled()):
            return run_with_timeout(fn, self.timeout)

    def to_call(self, convention: Convention, batch: Batch, dtype: torch.dtype = torch.float32, grad: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """The inputs and targets in the target's convention; the inputs are a grad leaf."""
        x, y = batch.x, batch.y
        if convention.kind == CENTERNET:
            inputs = x if convention.inputs == "probs" else torch.logit(x)
            targets = y
        else:
            if convention.inputs == "logits":
                inputs = x
            elif convention.base == SOFTMAX:
                inputs = torch.softmax(x, dim=1)
            else:
                inputs = torch.sigmoid(x)
            if convention.targets == "index":
                targets = index_targets(y, convention.background)
            else:
                targets = y
        inputs = inputs.detach().to(dtype).requires_grad_(grad)
        if targets.is_floating_point():
            targets = targets.to(dtype)
        return inputs, targets

    def call(
        self, convention: Convention, batch: Batch, loss: Callable | None = None, dtype: torch.dtype = torch.float32, **overrides: object
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Call the target on ``batch``; returns (output, the input leaf). Raises what the target raises.

        The target receives a clone of the leaf (a non-leaf, like a network's output, so in-place
        ops behave as in training) and a clone of the targets; the leaf itself stays untouched.
        """
        leaf, targets = self.to_call(convention, batch, dtype)
        fn = loss if loss is not None else self.build(**overrides)
        if self.sequence and convention.layout == "rows":
            convention = replace(convention, layout="sequence")
        out = self.guarded(lambda: output_tensor(fn(*convention.arrange(leaf.clone(), targets.clone()))))
        return convention.canonical_output(out), leaf


def to_spatial(rows: torch.Tensor) -> torch.Tensor:
    """``(N, C)`` -> ``(B, C, 1, N / B)``, ``(N,)`` -> ``(B, 1, N / B)``, pixel order = row order."""
    images = 2 if rows.shape[0] % 2 == 0 else 1
    width = rows.shape[0] // images
    if rows.dim() == 1:
        return rows.reshape(images, 1, width)
    return rows.reshape(images, 1, width, rows.shape[1]).permute(0, 3, 1, 2)


def to_sequence(rows: torch.Tensor) -> torch.Tensor:
    """``(N, C)`` -> ``(B, C, N / B)``, ``(N,)`` -> ``(B, N / B)`` (B = 2 when N is even), position
    order = row order."""
    sequences = 2 if rows.shape[0] % 2 == 0 else 1
    length = rows.shape[0] // sequences
    if rows.dim() == 1:
        return rows.reshape(sequences, length)
    return rows.reshape(sequences, length, rows.shape[1]).permute(0, 2, 1)


def from_sequence(out: torch.Tensor) -> torch.Tensor:
    """An unreduced ``(B, C, L)`` or ``(B, L)`` output back as rows (a scalar as it is)."""
    if out.dim() == 3:
        return out.permute(0, 2, 1).reshape(-1, out.shape[1])
    if out.dim() == 2:
        return out.reshape(-1)
    return out


def settle_layout(subject: Subject, calibration: Calibration) -> Calibration:
    """A calibration found on a subject whose rows are handed over as sequences
    (:attr:`Subject.sequence`), with its convention's layout saying so, so that every probe (also
    those that arrange a batch themselves) calls the target with ``(B, C, L)`` inputs."""
    if subject.sequence and calibration.convention is not None and calibration.convention.layout == "rows":
        calibration.convention = replace(calibration.convention, layout="sequence")
    return calibration


def index_targets(y: torch.Tensor, background: str) -> torch.Tensor:
    """Class indices from one-hot rows ``(N, C)``: background rows (all zero) get C or 0 (then
    classes shift to 1..C); with 'none' the batch must have no background row."""
    classes = y.argmax(dim=1)
    is_background = y.sum(dim=1) == 0
    if background == "C":
        return torch.where(is_background, y.shape[1], classes)
    if background == "0":
        return torch.where(is_background, 0, classes + 1)
    if bool(is_background.any()):
        raise ValueError("a convention without a background label cannot express an all-zero target row")
    return classes


def canonical_to_reference_input(convention: Convention, inputs: torch.Tensor) -> torch.Tensor:
    """The canonical logits (centernet: probabilities) that the reference reads, from the call inputs."""
    if convention.kind == CENTERNET:
        return inputs if convention.inputs == "probs" else torch.sigmoid(inputs)
    if convention.inputs == "logits":
        return inputs
    if convention.base == SOFTMAX:
        return torch.log(inputs)
    return torch.logit(inputs)


@dataclass
class Calibration:
    """What calibration found: the convention, the reference parameters, the normalisation."""

    convention: Convention | None
    params: Params
    match: Match
    attempts: list[dict] = field(default_factory=list)
    confusion: str | None = None
    kind_reason: str = ""
    couples_classes: bool | None = None
    """For an unmatched candidate: whether its classes are coupled within a row (a softmax)."""

    @property
    def matched(self) -> bool:
        return self.match.error <= MATCH_TOLERANCE


def make_batch(kind: str, num_classes: int, generator: torch.Generator, rows: int = 16, background: bool = True) -> Batch:
    """A moderate calibration batch: |logit| ≤ 4, one positive per positive row, every class
    present, background rows (sigmoid, when the convention has a background), three peaks
    (centernet); QFL and VFL positives carry an IoU quality in [0.25, 1), ASL rows of even index a
    second label."""
    if kind == CENTERNET:
        classes = min(num_classes, 3)
        heatmap = torch.rand(2, classes, 6, 6, generator=generator) * 0.9
        for b, c, i, j in ((0, 0, 1, 1), (1, classes - 1, 4, 3), (1, 0, 2, 5)):
            heatmap[b, c, i, j] = 1.0
        probs = (0.05 + 0.9 * torch.rand(heatmap.shape, generator=generator)).clamp(0.05, 0.95)
        return Batch(probs, heatmap)
    x = (torch.randn(rows, num_classes, generator=generator) * 1.5).clamp(-4, 4)
    if kind == BINARY:
        y = (torch.arange(rows) % 3 == 0).float()
        return Batch(x[:, 0].contiguous(), y)
    labels = torch.arange(rows) % num_classes
    y = F.one_hot(labels, num_classes).float()
    if kind in MULTI_LABEL_KINDS and num_classes > 1:
        y[torch.arange(0, rows, 2), (labels[::2] + 1) % num_classes] = 1.0  # multi-label rows
    if kind in SOFT_TARGET_KINDS:
        y = y * (0.25 + 0.75 * torch.rand(rows, 1, generator=generator))
    if base_kind(kind) == SIGMOID and background:
        y[rows * 5 // 8 :] = 0  # background rows
    return Batch(x, y)
