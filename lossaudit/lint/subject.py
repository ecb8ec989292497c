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

import inspect
import math
import signal
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F

from lossaudit import losses

QUIET = 14.0
"""|logit| of a 'quiet' element: its reference loss is below 1e-6."""
MATCH_TOLERANCE = 1e-4
"""Relative error under which the output matches a reference."""
DEFAULT_ALPHA, DEFAULT_GAMMA = 0.25, 2.0


class CallTimeout(BaseException):
    """Raised in the child when one call of the target runs past ``--timeout`` (not an Exception,
    so the target's own ``except Exception`` cannot swallow it)."""


def run_with_timeout(fn: Callable, timeout: float):
    """Run ``fn()``; raise :class:`CallTimeout` in this (main) thread after ``timeout`` seconds."""

    def on_alarm(signum, frame):
        raise CallTimeout(f"ran past {timeout:g} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        return fn()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@dataclass(frozen=True)
class Convention:
    """How the target is called: ``inputs`` 'logits' | 'probs'; ``targets`` 'onehot' | 'index' | 'heatmap'."""

    kind: str
    inputs: str
    targets: str

    def describe(self) -> str:
        return f"{self.kind}: {self.inputs} in, {self.targets} targets"


def conventions(kind: str, inputs: str, targets: str) -> list[Convention]:
    """Conventions to try for ``kind``, in order of preference, restricted by the options."""
    input_options = ["logits", "probs"] if inputs == "auto" else [inputs]
    if kind == "centernet":
        return [Convention(kind, i, "heatmap") for i in (["probs", "logits"] if inputs == "auto" else [inputs])]
    if kind == "softmax":
        target_options = ["index", "onehot"]
    elif kind == "binary":
        target_options = ["onehot"]
    else:
        target_options = ["onehot", "index"]
    if targets != "auto":
        target_options = [targets] if targets in target_options else []
    return [Convention(kind, i, t) for t in target_options for i in input_options]


@dataclass
class Batch:
    """A canonical batch: logits (or, for centernet, probabilities) and one-hot/heatmap targets."""

    x: torch.Tensor
    y: torch.Tensor

    def clone(self) -> Batch:
        return Batch(self.x.clone(), self.y.clone())


@dataclass
class Params:
    """The hyper-parameters the target is called with, as the reference should read them."""

    alpha: object = None  # None/-1 off, a float, or a per-class list
    gamma: float = DEFAULT_GAMMA

    def reference_alpha(self, kind: str) -> object:
        alpha = self.alpha
        if alpha is None or (isinstance(alpha, (int, float)) and alpha < 0):
            return None
        if isinstance(alpha, torch.Tensor):
            alpha = alpha.tolist()
        if isinstance(alpha, (list, tuple)):
            return torch.tensor(alpha, dtype=torch.float64)
        return float(alpha)


def reference_elements(kind: str, x: torch.Tensor, y: torch.Tensor, params: Params) -> torch.Tensor:
    """The reference loss per element (sigmoid, binary, centernet) or per row (softmax), from
    canonical logits ``x`` (centernet: probabilities)."""
    alpha = params.reference_alpha(kind)
    if kind in ("sigmoid", "binary"):
        return losses.focal(x, y, alpha=-1 if alpha is None else alpha.to(x.dtype) if isinstance(alpha, torch.Tensor) else alpha, gamma=params.gamma)
    if kind == "softmax":
        return losses.softmax_focal(x, y.argmax(dim=1), gamma=params.gamma, alpha=alpha.to(x.dtype) if isinstance(alpha, torch.Tensor) else alpha, reduction="none")
    return losses.centernet(x, y, reduction="none")


def normalisers(kind: str, y: torch.Tensor, params: Params) -> dict[str, float]:
    """What a scalar output may divide the summed loss by, named as reported."""
    rows = y.shape[0]
    if kind == "centernet":
        peaks = int(y.eq(1).sum())
        return {"sum": 1.0, "mean over elements": float(y.numel()), "sum per positive": float(max(peaks, 1))}
    candidates = {"sum": 1.0, "mean over elements": float(y.numel()), "mean over rows": float(rows)}
    if kind in ("sigmoid", "binary"):
        candidates["sum per positive"] = float(max(int(y.ge(0.5).sum()), 1))
    alpha = params.reference_alpha(kind)
    if kind == "softmax" and isinstance(alpha, torch.Tensor):
        candidates["mean over target weights"] = float(alpha[y.argmax(dim=1)].sum())
    return candidates


CONVENTIONAL = {
    "sigmoid": {"none", "sum", "sum per positive"},
    "binary": {"none", "sum", "sum per positive", "mean over elements"},
    "softmax": {"none", "sum", "mean over rows", "mean over target weights"},
    "centernet": {"none", "sum", "sum per positive"},
}
"""Normalisations that need no FL018 note for each kind."""


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
    """The normalisation under which ``out`` is closest to the reference elements ``ref``."""
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
    if out.shape == ref.shape:
        return Match("none", float((out - ref).abs().max() / ref.abs().max().clamp_min(1e-12)))
    if kind == "sigmoid" and out.shape == ref.shape[:1]:
        row_sums = ref.sum(dim=1)
        return Match("none", float((out - row_sums).abs().max() / row_sums.abs().max().clamp_min(1e-12)))
    return Match(f"unknown shape {tuple(out.shape)}", math.inf)


class Subject:
    """The user's loss: a class (instantiated with ``init``) or a function (called with ``init``)."""

    def __init__(self, obj: object, init: dict, timeout: float, num_classes: int, ignore_index: int | None):
        self.obj = obj
        self.init = dict(init)
        self.timeout = timeout
        self.is_class = inspect.isclass(obj)
        self.num_classes = num_classes
        try:
            self.signature = inspect.signature(obj.__init__ if self.is_class else obj)
        except (TypeError, ValueError):
            self.signature = None
        declared_ignore = self.init.get("ignore_index", self.default("ignore_index"))
        self.ignore_index = ignore_index if ignore_index is not None else declared_ignore if isinstance(declared_ignore, int) else None

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

    def value(self, name: str, fallback: object) -> object:
        """The value the target uses for ``name``: from ``--init``, else its default, else ``fallback``."""
        if name in self.init:
            return self.init[name]
        if self.signature is not None and name in self.signature.parameters:
            default = self.signature.parameters[name].default
            if default is not inspect.Parameter.empty:
                return default
        return fallback

    def build(self, **overrides: object) -> Callable:
        """A fresh callable ``loss(inputs, targets)`` with ``overrides`` on top of ``init``."""
        kwargs = {**self.init, **overrides}
        if self.is_class:
            instance = self.guarded(lambda: self.obj(**kwargs))
            return instance
        return lambda inputs, targets: self.obj(inputs, targets, **kwargs)

    def guarded(self, fn: Callable):
        """Run ``fn`` under the per-call time limit."""
        return run_with_timeout(fn, self.timeout)

    def to_call(self, convention: Convention, batch: Batch, dtype: torch.dtype = torch.float32, grad: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """The inputs and targets in the target's convention; the inputs are a grad leaf."""
        x, y = batch.x, batch.y
        if convention.kind == "centernet":
            inputs = x if convention.inputs == "probs" else torch.logit(x)
            targets = y
        else:
            if convention.inputs == "logits":
                inputs = x
            elif convention.kind == "softmax":
                inputs = torch.softmax(x, dim=1)
            else:
                inputs = torch.sigmoid(x)
            if convention.targets == "index":
                background = y.sum(dim=1) == 0
                targets = torch.where(background, torch.full_like(y[:, 0], self.num_classes), y.argmax(dim=1).to(y.dtype)).long()
            else:
                targets = y
        inputs = inputs.detach().to(dtype).requires_grad_(grad)
        if targets.is_floating_point():
            targets = targets.to(dtype)
        return inputs, targets

    def call(self, convention: Convention, batch: Batch, loss: Callable | None = None, dtype: torch.dtype = torch.float32, **overrides: object) -> tuple[torch.Tensor, torch.Tensor]:
        """Call the target on ``batch``; returns (output, the input leaf). Raises what the target raises.

        The target receives a clone of the leaf (a non-leaf, like a network's output, so in-place
        ops behave as in training) and a clone of the targets; the leaf itself stays untouched.
        """
        leaf, targets = self.to_call(convention, batch, dtype)
        fn = loss if loss is not None else self.build(**overrides)
        out = self.guarded(lambda: output_tensor(fn(leaf.clone(), targets.clone())))
        return out, leaf


def canonical_to_reference_input(convention: Convention, inputs: torch.Tensor) -> torch.Tensor:
    """The canonical logits (centernet: probabilities) that the reference reads, from the call inputs."""
    if convention.kind == "centernet":
        return inputs if convention.inputs == "probs" else torch.sigmoid(inputs)
    if convention.inputs == "logits":
        return inputs
    if convention.kind == "softmax":
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

    @property
    def matched(self) -> bool:
        return self.match.error <= MATCH_TOLERANCE


def make_batch(kind: str, num_classes: int, generator: torch.Generator, rows: int = 16) -> Batch:
    """A moderate calibration batch: |logit| ≤ 4, one positive per positive row, background rows
    (sigmoid), every class present (softmax), three peaks (centernet)."""
    if kind == "centernet":
        classes = min(num_classes, 3)
        heatmap = torch.rand(2, classes, 6, 6, generator=generator) * 0.9
        for b, c, i, j in ((0, 0, 1, 1), (1, classes - 1, 4, 3), (1, 0, 2, 5)):
            heatmap[b, c, i, j] = 1.0
        probs = (0.05 + 0.9 * torch.rand(heatmap.shape, generator=generator)).clamp(0.05, 0.95)
        return Batch(probs, heatmap)
    x = (torch.randn(rows, num_classes, generator=generator) * 1.5).clamp(-4, 4)
    if kind == "binary":
        y = (torch.arange(rows) % 3 == 0).float()
        return Batch(x[:, 0].contiguous(), y)
    labels = torch.arange(rows) % num_classes
    y = F.one_hot(labels, num_classes).float()
    if kind == "sigmoid":
        y[rows * 5 // 8 :] = 0  # background rows
    return Batch(x, y)
