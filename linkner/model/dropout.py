"""Dropout with a cheaper random mask for training on CPU.

PyTorch's CPU dropout draws one random number per element from a single-threaded generator; in
training the span model that was about a seventh of every step (the head drops ``[spans, 3H+..]``
features). :class:`MaskDropout` draws one 64-bit word per three elements and compares 16-bit
lanes against the rate (exact to 1/65536), the same Bernoulli mask in distribution at a quarter of
the generator calls. On other devices, and outside training, it is ``torch.nn.functional.dropout``.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

LANES = 3  # 16-bit lanes used per 64-bit draw: the top lane's sign bit is never set by random_()
LEVELS = 1 << 16


def mask_dropout(values: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """``F.dropout(values, p, training)`` with the mask drawn as described in the module docstring."""
    if not training or p <= 0 or values.device.type != "cpu":
        return F.dropout(values, p, training)
    if p >= 1:
        return values * 0.0
    count = values.numel()
    words = torch.empty((count + LANES - 1) // LANES, dtype=torch.int64, device=values.device).random_()
    lanes = words.view(torch.int16).view(-1, 4)[:, :LANES].reshape(-1)[:count]
    keep = lanes.view(values.shape) >= round(p * LEVELS) - LEVELS // 2
    return values * keep * (1.0 / (1.0 - p))


class MaskDropout(nn.Dropout):
    """``nn.Dropout`` (same ``p``, same state dict) whose CPU training mask is :func:`mask_dropout`'s."""

    def forward(self, values: torch.Tensor) -> torch.Tensor:
        return mask_dropout(values, self.p, self.training)


def use_mask_dropout(module: nn.Module) -> int:
    """Replace every plain ``nn.Dropout`` inside ``module`` by a :class:`MaskDropout` of the same
    rate (in place; attention-probability dropouts read by fused attention keep working, they only
    read ``p``). Returns how many were replaced."""
    replaced = 0
    for name, child in list(module.named_children()):
        if type(child) is nn.Dropout:
            setattr(module, name, MaskDropout(child.p))
            replaced += 1
        else:
            replaced += use_mask_dropout(child)
    return replaced
