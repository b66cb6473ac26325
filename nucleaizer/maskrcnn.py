"""Mask R-CNN for nuclei: construction and one-file checkpoints (docs/method.md section 5); the instance
predictor is nucleaizer.maskrcnn_predictor.

The network is torchvision's Mask R-CNN with two classes (background, nucleus). Nothing is ever downloaded:
the EfficientNet-Lite0 backbone's ImageNet weights come with a pip dependency (nucleaizer.efficientnet),
torchvision weights are always ``None``, other weights come from local files. Every layer trains; BatchNorm
is the ordinary trainable kind from scratch and frozen on the pretrained Lite0 (torchvision's helpers default
to frozen BatchNorm and a few trainable layers, which suits only ImageNet-initialised backbones). Images are
never resized inside the model: the caller brings nuclei to about 40 px before prediction.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import mobilenet_backbone, resnet_fpn_backbone
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads
from torchvision.models.detection.mask_rcnn import MaskRCNNPredictor as TorchvisionMaskPredictor
from torchvision.models.detection.transform import GeneralizedRCNNTransform

from nucleaizer.efficientnet import IMAGE_MEAN, IMAGE_STD, EfficientNetLite0FPN
from nucleaizer.errors import UserError
from nucleaizer.maskrcnn_arch import MaskRCNNArch

log = logging.getLogger(__name__)

BACKBONES = ("resnet50", "resnet18", "mobilenet_v3", "efficientnet_lite0")
# Stride of the coarsest feature map of every backbone here (the FPN's pooled level; the others divide it):
# tiles that start on multiples of it see the image on the same feature grid as the whole image.
FEATURE_GRID_PX = 64
CHECKPOINT_FORMAT = "nucleaizer-segmenter"


class NoResizeTransform(GeneralizedRCNNTransform):
    """torchvision's input transform without its resizing to 800 px: images arrive at the right scale."""

    def resize(self, image, target=None):
        return image, target


def _load_state_dict(path: str | Path, what: str) -> dict:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} file {path} does not exist: give a local weights file or null")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    return state


def _load_matching(module: nn.Module, state: dict, what: str) -> None:
    """Load the entries whose name and shape match (class-specific heads of other data sets are skipped)."""
    own = module.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    module.load_state_dict(usable, strict=False)
    log.info(
        "%s: loaded %d of %d tensors (%d left at their initial values)",
        what,
        len(usable),
        len(own),
        len(own) - len(usable),
    )


def _backbone(
    backbone: str,
    returned_layers: list[int] | None,
    pretrained: bool,
    frozen_batchnorm: bool,
    fpn_channels: int,
) -> nn.Module:
    """The feature extractor + FPN: ``body`` (the network), ``fpn``, ``out_channels``."""
    if backbone == "efficientnet_lite0":
        if returned_layers is not None:
            raise UserError(
                "segmenter.arch.returned_layers does not apply to efficientnet_lite0 (its strides 8, 16 and "
                "32 feed the FPN): set it to null"
            )
        return EfficientNetLite0FPN(fpn_channels, pretrained=pretrained, frozen_batchnorm=frozen_batchnorm)
    if pretrained or frozen_batchnorm or fpn_channels != 256:
        raise UserError(
            f"segmenter.arch.pretrained, frozen_batchnorm and fpn_channels (other than 256) apply to "
            f"efficientnet_lite0 only, not to {backbone}; use segmenter.arch.backbone_weights for an "
            "ImageNet file of your own"
        )
    if backbone in ("resnet50", "resnet18"):
        return resnet_fpn_backbone(
            backbone_name=backbone,
            weights=None,
            norm_layer=nn.BatchNorm2d,
            trainable_layers=5,
            returned_layers=returned_layers,
        )
    if backbone == "mobilenet_v3":
        return mobilenet_backbone(
            backbone_name="mobilenet_v3_large",
            weights=None,
            fpn=True,
            norm_layer=nn.BatchNorm2d,
            returned_layers=returned_layers,
        )
    raise UserError(f"segmenter.arch.backbone={backbone!r} is not one of {list(BACKBONES)}")


def build_maskrcnn(arch: MaskRCNNArch) -> MaskRCNN:
    """The two-class torchvision Mask R-CNN that ``arch`` describes; every parameter trainable.

    The CPU profile narrows the mask and box heads, because the mask head runs on every positive proposal and
    dominates a CPU step.
    """
    layers = list(arch.returned_layers) if arch.returned_layers is not None else None
    body = _backbone(arch.backbone, layers, arch.pretrained, arch.frozen_batchnorm, arch.fpn_channels)
    if arch.backbone_weights is not None:
        _load_matching(
            body.body,
            _load_state_dict(arch.backbone_weights, "segmenter.arch.backbone_weights"),
            "backbone weights",
        )
    n_maps = len(body.fpn.inner_blocks) + 1  # the FPN adds a max-pooled level
    if len(arch.anchor_sizes) != n_maps:
        raise UserError(
            f"segmenter.arch.anchor_sizes needs {n_maps} sizes for backbone {arch.backbone} (one per feature "
            f"map), got {arch.as_dict()['anchor_sizes']}"
        )
    sizes = tuple(tuple(int(v) for v in (s if isinstance(s, tuple) else [s])) for s in arch.anchor_sizes)
    if len({len(level) for level in sizes}) != 1:
        raise UserError(
            f"segmenter.arch.anchor_sizes: every feature map needs the same number of sizes, got {sizes}"
        )
    ratios = tuple(float(r) for r in arch.anchor_ratios)
    anchors = AnchorGenerator(sizes=sizes, aspect_ratios=(ratios,) * n_maps)
    mask_head_layers = [int(c) for c in arch.mask_head_layers]
    box_width = int(arch.box_representation_size)
    model = MaskRCNN(
        body,
        box_head=TwoMLPHead(body.out_channels * 7 * 7, box_width),
        box_predictor=FastRCNNPredictor(box_width, 2),
        mask_head=MaskRCNNHeads(body.out_channels, mask_head_layers, dilation=1),
        mask_predictor=TorchvisionMaskPredictor(mask_head_layers[-1], mask_head_layers[-1], 2),
        rpn_anchor_generator=anchors,
        rpn_pre_nms_top_n_train=arch.rpn_pre_nms_top_n_train,
        rpn_post_nms_top_n_train=arch.rpn_post_nms_top_n_train,
        rpn_pre_nms_top_n_test=arch.rpn_pre_nms_top_n_test,
        rpn_post_nms_top_n_test=arch.rpn_post_nms_top_n_test,
        rpn_nms_thresh=arch.rpn_nms_thresh,
        box_score_thresh=arch.box_score_thresh,
        box_nms_thresh=arch.box_nms_thresh,
        box_detections_per_img=arch.max_detections,
        box_batch_size_per_image=arch.box_batch_size_per_image,
    )
    mean, std = (
        (IMAGE_MEAN, IMAGE_STD)
        if arch.backbone == "efficientnet_lite0"
        else (model.transform.image_mean, model.transform.image_std)
    )
    model.transform = NoResizeTransform(min_size=1, max_size=1, image_mean=list(mean), image_std=list(std))
    if arch.weights is not None:
        _load_matching(model, _load_state_dict(arch.weights, "segmenter.arch.weights"), "Mask R-CNN weights")
    # torchvision freezes early layers for pretrained backbones; from scratch (or fine-tuning) all train
    model.requires_grad_(True)
    return model


def save_segmenter(
    path: str | Path, model: nn.Module, arch: MaskRCNNArch, dtype: torch.dtype = torch.float32
) -> Path:
    """Write one .pt file holding the state dict and the architecture; atomic; returns the path.

    The stored architecture is ``arch.stored()``: the state dict already holds the weights it loaded. ``dtype``: how floating-point tensors are stored (``torch.float16`` halves the file, as the
    shipped models are); :func:`read_segmenter_file` gives them back as float32.
    """
    from nucleaizer.io import atomic_write

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        k: v.detach().cpu().to(dtype) if v.is_floating_point() else v.detach().cpu()
        for k, v in model.state_dict().items()
    }
    with atomic_write(path) as tmp:
        torch.save(
            {"format": CHECKPOINT_FORMAT, "version": 1, "arch": arch.stored().as_dict(), "state_dict": state},
            tmp,
        )
    return path


def read_segmenter_file(path: str | Path) -> dict:
    """The content of a segmenter .pt file: {"format", "version", "arch" (a MaskRCNNArch), "state_dict"};
    UserError if not one. Floating-point tensors come back as float32 whatever precision they were stored in.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"segmenter checkpoint {path} does not exist: check the model path")
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a truncated or foreign file: tell the user which one
        raise UserError(f"{path} is not a readable segmenter checkpoint ({error})") from error
    if not isinstance(content, dict) or content.get("format") != CHECKPOINT_FORMAT:
        raise UserError(f"{path} is not a nucleaizer segmenter checkpoint (written by save_segmenter)")
    content["arch"] = MaskRCNNArch.from_config(content["arch"], where=f"the architecture stored in {path}")
    content["state_dict"] = {
        k: v.float() if v.is_floating_point() else v for k, v in content["state_dict"].items()
    }
    return content


def load_segmenter(path: str | Path, device: str | torch.device = "cpu") -> tuple[MaskRCNN, MaskRCNNArch]:
    """(model in eval mode on ``device``, its architecture) from a file written by save_segmenter."""
    content = read_segmenter_file(path)
    arch = content["arch"]
    model = build_maskrcnn(arch)
    model.load_state_dict(content["state_dict"])
    return model.to(device).eval(), arch
