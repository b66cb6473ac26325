"""The Mask R-CNN network as one typed value: what ``segmenter.arch`` says, what a checkpoint stores.

Its defaults live in the config only (``conf/segmenter/*.yaml``, block ``arch:``): every field is required,
so a network is always described in full, in the config and in every checkpoint file. Lists become tuples,
so two architectures compare equal whether they came from YAML or from a checkpoint.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from nucleaizer.errors import UserError

# the fields that decide the shapes of the weights: two networks that agree on them share weights
WEIGHT_SHAPE_FIELDS = (
    "backbone",
    "returned_layers",
    "fpn_channels",
    "anchor_sizes",
    "anchor_ratios",
    "mask_head_layers",
    "box_representation_size",
)


def _frozen(value):
    return tuple(_frozen(v) for v in value) if isinstance(value, (list, tuple)) else value


def _plain(value):
    return [_plain(v) for v in value] if isinstance(value, tuple) else value


@dataclass(frozen=True)
class MaskRCNNArch:
    """A two-class torchvision Mask R-CNN for nuclei about 40 px across (built by maskrcnn.build_maskrcnn).

    backbone: resnet50 | resnet18 (FPN over 4 stages + pool: 5 feature maps), mobilenet_v3 (large; FPN over
    its last 2 stages + pool: 3 feature maps) or efficientnet_lite0 (strides 8, 16, 32 + pool: 4 feature maps,
    ``fpn_channels`` wide; ``pretrained`` loads the ImageNet weights shipped by a pip package,
    ``frozen_batchnorm`` fixes its BatchNorm layers). ``returned_layers``: backbone stages fed to the FPN
    (None: torchvision's default). ``anchor_sizes`` has one entry per feature map: a size in px or a list of
    sizes (the same count on every map). ``mask_head_layers`` (channels of the mask head's 3x3 convolutions)
    and ``box_representation_size`` (width of the box head's two fully connected layers): torchvision's are
    4 x 256 and 1024. weights: optional local file with a full Mask R-CNN state dict (e.g. COCO); tensors
    whose shapes differ stay freshly initialised. backbone_weights: optional local ImageNet state dict of the
    bare backbone network. The rest are torchvision's detection settings.
    """

    backbone: str
    weights: str | None
    backbone_weights: str | None
    pretrained: bool
    frozen_batchnorm: bool
    fpn_channels: int
    returned_layers: tuple[int, ...] | None
    anchor_sizes: tuple
    anchor_ratios: tuple[float, ...]
    max_detections: int
    box_nms_thresh: float
    rpn_nms_thresh: float
    box_score_thresh: float
    rpn_pre_nms_top_n_train: int
    rpn_post_nms_top_n_train: int
    rpn_pre_nms_top_n_test: int
    rpn_post_nms_top_n_test: int
    box_batch_size_per_image: int
    mask_head_layers: tuple[int, ...]
    box_representation_size: int

    def __post_init__(self):
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, Path):
                value = str(value)
            object.__setattr__(self, field.name, _frozen(value))

    @classmethod
    def from_config(cls, section: Mapping, where: str = "segmenter.arch") -> MaskRCNNArch:
        """From a ``segmenter.arch`` block or a checkpoint's stored architecture; every field, nothing else."""
        names = {field.name for field in dataclasses.fields(cls)}
        unknown, missing = sorted(set(section) - names), sorted(names - set(section))
        problems = [f"unknown keys {unknown}"] if unknown else []
        problems += [f"missing keys {missing}"] if missing else []
        if problems:
            raise UserError(
                f"{where}: {'; '.join(problems)} (a Mask R-CNN architecture has exactly {sorted(names)})"
            )
        return cls(**dict(section))

    def replace(self, **changes) -> MaskRCNNArch:
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict:
        """Plain values (lists, str paths): what a checkpoint stores and YAML shows."""
        return {field.name: _plain(getattr(self, field.name)) for field in dataclasses.fields(self)}

    def stored(self) -> MaskRCNNArch:
        """The architecture a checkpoint records: its state dict already holds every weight, so no weight
        files and no ImageNet loading."""
        return self.replace(weights=None, backbone_weights=None, pretrained=False)

    def weight_shape_differences(self, wanted: MaskRCNNArch) -> list[str]:
        """'field: self's != wanted's' for each WEIGHT_SHAPE_FIELDS entry where the two networks differ."""
        return [
            f"{name}: {_plain(getattr(self, name))} != {_plain(getattr(wanted, name))}"
            for name in WEIGHT_SHAPE_FIELDS
            if getattr(self, name) != getattr(wanted, name)
        ]
