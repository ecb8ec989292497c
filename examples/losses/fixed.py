"""The corrected versions of examples/losses/buggy.py; each lints clean.

    lossaudit lint examples/losses/fixed.py:SoftmaxFocalLoss --init "alpha=[0.25, 0.5, 0.75, 1.0, 1.0]"
    lossaudit lint examples/losses/fixed.py:ClampedFocalLoss
    lossaudit lint examples/losses/fixed.py:NaiveFocalLoss
"""

import torch
import torch.nn.functional as F
from torch import nn


class SoftmaxFocalLoss(nn.Module):
    """A per-class alpha vector, taken at the target class, is what balances a softmax."""

    def __init__(self, alpha=None, gamma=2.0):
        super().__init__()
        self.register_buffer("alpha", None if alpha is None else torch.as_tensor(alpha, dtype=torch.float32))
        self.gamma = gamma

    def forward(self, logits, target):
        log_p = F.log_softmax(logits, dim=1).gather(1, target[:, None]).squeeze(1)
        loss = -((1 - log_p.exp()) ** self.gamma) * log_p
        if self.alpha is not None:
            loss = self.alpha.to(logits.dtype)[target] * loss
        return loss.mean()


class ClampedFocalLoss(nn.Module):
    """No clamp: binary_cross_entropy_with_logits is stable for any logit."""

    def __init__(self, alpha=0.25, gamma=2.0):
        super().__init__()
        self.alpha, self.gamma = alpha, gamma

    def forward(self, logits, targets):
        p = torch.sigmoid(logits)
        ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
        p_t = p * targets + (1 - p) * (1 - targets)
        alpha_t = self.alpha * targets + (1 - self.alpha) * (1 - targets)
        return (alpha_t * (1 - p_t) ** self.gamma * ce).sum() / targets.sum().clamp(min=1)


class NaiveFocalLoss(nn.Module):
    """log(sigmoid(x)) written as logsigmoid(x), and log(1 - sigmoid(x)) as logsigmoid(-x)."""

    def __init__(self, alpha=0.25, gamma=2.0):
        super().__init__()
        self.alpha, self.gamma = alpha, gamma

    def forward(self, logits, targets):
        p = torch.sigmoid(logits)
        pos = -self.alpha * (1 - p) ** self.gamma * F.logsigmoid(logits) * targets
        neg = -(1 - self.alpha) * p**self.gamma * F.logsigmoid(-logits) * (1 - targets)
        return (pos + neg).sum() / targets.sum().clamp(min=1)
