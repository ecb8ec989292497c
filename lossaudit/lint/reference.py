"""The reference element losses lint compares a target with, one function per kind of loss.

Each function takes canonical logits ``x`` (centernet: probabilities), targets ``y`` (one-hot;
QFL/VFL: soft qualities; ASL: multi-hot) and the :class:`~lossaudit.lint.subject.Params` the
target was calibrated with, and returns the loss per element (per row for the softmax kinds).
:data:`lossaudit.lint.kinds.REFERENCE_ELEMENTS` maps each kind to its function. torch and
:mod:`lossaudit.losses` are imported inside the functions, so :mod:`lossaudit.lint.kinds` (and
the rule texts that read it) import no torch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from lossaudit.lint.subject import Params


def centernet_elements(x: torch.Tensor, y: torch.Tensor, params: Params) -> torch.Tensor:
    """CenterNet's penalty-reduced focal loss per heatmap element (it takes no parameters)."""
    from lossaudit import losses

    return losses.centernet(x, y, reduction="none")


def family_elements(function: Callable) -> Callable[[torch.Tensor, torch.Tensor, Params], torch.Tensor]:
    """The element losses of a family kind's reference ``function`` (as its loss family declares
    it), called with the family keyword arguments of ``params`` (label-smoothing CE: ``(N,)`` rows;
    GHM-C: a fresh moving average, as a new instance's first call sees it)."""

    def elements(x: torch.Tensor, y: torch.Tensor, params: Params) -> torch.Tensor:
        return function(x, y, reduction="none", **params.family)

    elements.__name__ = elements.__qualname__ = f"{function.__name__}_elements"
    return elements


def softmax_elements(x: torch.Tensor, y: torch.Tensor, params: Params) -> torch.Tensor:
    """The softmax focal loss per row, alpha read by ``params.alpha_scheme`` ('class-0': kornia's
    and MONAI's scalar), class 0 dropped with ``skip_class_0``, class weights at the target."""
    import torch

    from lossaudit import losses

    alpha = _alpha(params, x)
    if params.alpha_scheme == "class-0" and isinstance(alpha, float):
        alpha = torch.tensor([1 - alpha] + [alpha] * (y.shape[1] - 1), dtype=x.dtype)
    if params.skip_class_0:
        x, y = x[:, 1:], y[:, 1:]
        alpha = alpha[1:] if isinstance(alpha, torch.Tensor) and alpha.numel() == y.shape[1] + 1 else alpha
    terms = losses.softmax_focal_terms(x, y, gamma=params.gamma, alpha=alpha)
    return (terms * _column_weight(params, terms)).sum(dim=1)


def binary_elements(x: torch.Tensor, y: torch.Tensor, params: Params) -> torch.Tensor:
    """The binary sigmoid focal loss per element, alpha read by ``params.alpha_scheme``."""
    return _sigmoid_focal(x, y, params)


def sigmoid_elements(x: torch.Tensor, y: torch.Tensor, params: Params) -> torch.Tensor:
    """The per-class sigmoid focal loss per element, with class weights by column and class 0
    zeroed with ``skip_class_0`` (MONAI's ``include_background=False``)."""
    import torch

    loss = _sigmoid_focal(x, y, params)
    loss = loss * _column_weight(params, loss)
    if params.skip_class_0:
        loss = torch.cat([torch.zeros_like(loss[:, :1]), loss[:, 1:]], dim=1)
    return loss


def _alpha(params: Params, x: torch.Tensor) -> Any:
    """The reference alpha of ``params`` (None, a float, or a tensor in ``x``'s dtype)."""
    import torch

    alpha = params.reference_alpha()
    return alpha.to(x.dtype) if isinstance(alpha, torch.Tensor) else alpha


def _sigmoid_focal(x: torch.Tensor, y: torch.Tensor, params: Params) -> torch.Tensor:
    """torchvision's sigmoid focal loss per element under each alpha scheme: 'positives' (MONAI's
    per-class vector on positives only), 'constant' and 'inverted' (the FL001/FL002 readings)."""
    import torch

    from lossaudit import losses

    alpha = _alpha(params, x)
    if params.skip_class_0 and isinstance(alpha, torch.Tensor) and alpha.numel() == y.shape[1] - 1:
        alpha = torch.cat([alpha.new_ones(1), alpha])  # MONAI's alpha omits class 0, which is not counted
    if params.alpha_scheme == "positives" and isinstance(alpha, torch.Tensor):
        return losses.focal(x, y, alpha=-1, gamma=params.gamma) * torch.where(y == 1, alpha, torch.ones_like(alpha))
    if params.alpha_scheme == "constant" and alpha is not None:
        return losses.focal(x, y, alpha=-1, gamma=params.gamma) * alpha
    if params.alpha_scheme == "inverted" and alpha is not None:
        return losses.focal(x, y, alpha=1 - alpha, gamma=params.gamma)
    return losses.focal(x, y, alpha=-1 if alpha is None else alpha, gamma=params.gamma)


def _column_weight(params: Params, loss: torch.Tensor) -> torch.Tensor | float:
    """The per-class weight as a row to multiply ``(N, C)`` terms by, or 1; terms without class 0
    (softmax with ``skip_class_0``) take the weights of classes 1..C-1."""
    import torch

    if params.class_weight is None:
        return 1.0
    weight = torch.tensor(params.class_weight, dtype=loss.dtype)
    return weight[weight.numel() - loss.shape[1] :]


def ghm_calls(x: torch.Tensor, y: torch.Tensor, params: Params, calls: int) -> list[torch.Tensor]:
    """GHM-C's element losses over ``calls`` successive calls of one instance on the same batch,
    its moving average carried from call to call (the one stateful reference)."""
    from lossaudit import losses

    state = losses.GHMState(bins=params.family["bins"], momentum=params.family["momentum"])
    return [losses.ghm(x, y, reduction="none", state=state, **params.family) for _ in range(calls)]


def public_name(function: Callable) -> str:
    """``lossaudit.losses.NAME`` for a reference the package exports, else its module's path."""
    from lossaudit import losses

    exported = getattr(losses, function.__name__, None) is function
    return f"lossaudit.losses.{function.__name__}" if exported else f"{function.__module__}.{function.__name__}"
