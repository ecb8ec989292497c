"""Three focal losses as they are often found in public code, each with a classic bug.

    lossaudit lint examples/losses/buggy.py:SoftmaxFocalLoss
    lossaudit lint examples/losses/buggy.py:ClampedFocalLoss
    lossaudit lint examples/losses/buggy.py:NaiveFocalLoss

examples/losses/fixed.py holds the corrected versions.
"""

import torch
import torch.nn.functional as F
from torch import nn


class SoftmaxFocalLoss(nn.Module):
    """Multi-class focal loss with a scalar alpha (kornia <= 0.6 did this): alpha rescales every
    class alike, so it does not balance anything."""

    def __init__(self, alpha=0.25, gamma=2.0):
        super().__init__()
        self.alpha, self.gamma = alpha, gamma

    def forward(self, logits, target):
        log_p = F.log_softmax(logits, dim=1).gather(1, target[:, None]).squeeze(1)
        loss = -self.alpha * (1 - log_p.exp()) ** self.gamma * log_p
        return loss.mean()


class ClampedFocalLoss(nn.Module):
    """Clamps the logits as if they were probabilities 'for stability': the gradient of every
    logit outside [1e-4, 1 - 1e-4] is zero."""

    def __init__(self, alpha=0.25, gamma=2.0):
        super().__init__()
        self.alpha, self.gamma = alpha, gamma

    def forward(self, logits, targets):
        logits = logits.clamp(1e-4, 1 - 1e-4)
        p = torch.sigmoid(logits)
        ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
        p_t = p * targets + (1 - p) * (1 - targets)
        alpha_t = self.alpha * targets + (1 - self.alpha) * (1 - targets)
        return (alpha_t * (1 - p_t) ** self.gamma * ce).sum() / targets.sum().clamp(min=1)


class NaiveFocalLoss(nn.Module):
    """Computes log(sigmoid(x)) directly: -inf, then NaN, for confident predictions."""

    def __init__(self, alpha=0.25, gamma=2.0):
        super().__init__()
        self.alpha, self.gamma = alpha, gamma

    def forward(self, logits, targets):
        p = torch.sigmoid(logits)
        pos = -self.alpha * (1 - p) ** self.gamma * torch.log(p) * targets
        neg = -(1 - self.alpha) * p**self.gamma * torch.log(1 - p) * (1 - targets)
        return (pos + neg).sum() / targets.sum().clamp(min=1)
