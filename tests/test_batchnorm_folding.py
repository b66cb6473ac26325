"""Folding BatchNorm into convolutions: the shipped network computes the same detections, faster, and
nothing is folded where it would be wrong (training mode)."""

import copy

import pytest
import torch
from torch import nn

from nucleaizer.batchnorm_folding import fold_batchnorm
from nucleaizer.efficientnet import EfficientNetLite0FPN
from nucleaizer.maskrcnn import load_segmenter
from nucleaizer.models import DEFAULT_MODEL, segmenter_file


def test_folded_backbone_gives_the_same_features(one_torch_thread):
    """The ImageNet-pretrained Lite0 body (timm's frozen BatchNorm + activation layers) and its FPN."""
    backbone = EfficientNetLite0FPN(out_channels=32).eval()
    folded = copy.deepcopy(backbone)
    count = fold_batchnorm(folded)
    assert count == sum(
        1 for m in backbone.modules() if type(m).__name__ in ("FrozenBatchNormAct2d", "BatchNormAct2d")
    )
    assert count > 40
    image = torch.rand(1, 3, 96, 128)
    with torch.no_grad():
        before, after = backbone(image), folded(image)
    for name in before:
        assert torch.allclose(before[name], after[name], rtol=1e-4, atol=1e-4), name


def test_plain_batchnorm_after_a_convolution_folds(one_torch_thread):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, bias=True), nn.BatchNorm2d(8), nn.ReLU(), nn.BatchNorm2d(8))
    for norm in (net[1], net[3]):
        norm.running_mean.uniform_(-1, 1)
        norm.running_var.uniform_(0.5, 2)
        norm.weight.data.uniform_(0.5, 2)
        norm.bias.data.uniform_(-1, 1)
    net.eval()
    folded = copy.deepcopy(net)
    assert fold_batchnorm(folded) == 1  # the second BatchNorm follows a ReLU: it stays
    assert isinstance(folded[1], nn.Identity) and isinstance(folded[3], nn.BatchNorm2d)
    image = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.allclose(net(image), folded(image), atol=1e-5)


def test_training_mode_is_refused():
    with pytest.raises(ValueError, match="eval mode"):
        fold_batchnorm(nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4)))


def test_shipped_model_detects_the_same_after_folding(one_torch_thread):
    model, _ = load_segmenter(segmenter_file(DEFAULT_MODEL))
    folded = copy.deepcopy(model)
    assert fold_batchnorm(folded) > 40
    torch.manual_seed(1)
    image = torch.rand(3, 160, 160)
    image[:, 40:80, 40:80] += 0.6  # two bright blobs on noise: something to detect
    image[:, 100:140, 90:130] += 0.6
    with torch.no_grad():
        before, after = model([image.clamp(0, 1)])[0], folded([image.clamp(0, 1)])[0]
    assert len(before["boxes"]) == len(after["boxes"])
    assert torch.allclose(before["boxes"], after["boxes"], atol=0.05)
    assert torch.allclose(before["scores"], after["scores"], atol=1e-3)
