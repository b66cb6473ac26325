"""Folding BatchNorm layers into the convolutions before them, for inference.

At inference a BatchNorm layer with fixed statistics is an affine map per channel, ``x * s + t``. Folded into
the convolution that feeds it (weights times ``s``, bias ``t`` plus the old bias times ``s``) it costs nothing:
on the CPU the EfficientNet-Lite0 backbone spent a sixth of a Mask R-CNN forward pass in its frozen
BatchNorm layers. The network computes the same function (up to float rounding); it can no longer be
trained, so fold a copy made for prediction only.
"""

from __future__ import annotations

import torch
from timm.layers import BatchNormAct2d, FrozenBatchNormAct2d
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d

_BATCHNORMS = (nn.BatchNorm2d, FrozenBatchNorm2d, BatchNormAct2d, FrozenBatchNormAct2d)


def _scale_shift(norm: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """Per channel (s, t) with norm(x) = x * s + t (before any activation) in eval mode."""
    weight = norm.weight if norm.weight is not None else torch.ones_like(norm.running_mean)
    bias = norm.bias if norm.bias is not None else torch.zeros_like(norm.running_mean)
    scale = weight * (norm.running_var + norm.eps).rsqrt()
    return scale, bias - norm.running_mean * scale


def _after_norm(norm: nn.Module) -> nn.Module:
    """What is left of a BatchNorm layer once folded: its activation (timm's *Act2d layers), else nothing."""
    if isinstance(norm, (BatchNormAct2d, FrozenBatchNormAct2d)):
        return nn.Sequential(norm.drop, norm.act)
    return nn.Identity()


@torch.no_grad()
def fold_batchnorm(module: nn.Module) -> int:
    """Fold, in place, every BatchNorm layer that directly follows a plain convolution among its siblings (the
    order the parent registered them in, which is the order timm's and torchvision's blocks run them). The
    module must be in eval mode. Returns how many layers were folded."""
    if module.training:
        raise ValueError("fold_batchnorm changes what training would do: call it on a model in eval mode")
    folded = 0
    for parent in list(module.modules()):
        previous = None
        for name, child in list(parent.named_children()):
            if isinstance(child, _BATCHNORMS) and isinstance(previous, nn.Conv2d):
                scale, shift = _scale_shift(child)
                old_bias = previous.bias if previous.bias is not None else torch.zeros_like(shift)
                previous.weight.mul_(scale.reshape(-1, 1, 1, 1))
                previous.bias = nn.Parameter(old_bias * scale + shift, requires_grad=False)
                setattr(parent, name, _after_norm(child))
                folded += 1
            previous = child
    return folded
