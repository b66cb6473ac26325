"""The Mask R-CNN instance predictor: tiles in, ``Instances`` out (each mask pasted into its own box only),
batched, on a BatchNorm-folded copy of the network (docs/method.md section 5)."""

from __future__ import annotations

import logging
from collections import OrderedDict
from copy import deepcopy
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.roi_heads import expand_boxes, expand_masks
from torchvision.models.detection.transform import resize_boxes

from nucleaizer.batchnorm_folding import fold_batchnorm
from nucleaizer.instances import Instances
from nucleaizer.maskrcnn import FEATURE_GRID_PX, load_segmenter

log = logging.getLogger(__name__)


def detections_to_instances(
    boxes: torch.Tensor,
    mask_probs: torch.Tensor,
    scores: torch.Tensor,
    image_shape: tuple[int, int],
    mask_threshold: float = 0.5,
) -> Instances:
    """Instances of one image from Mask R-CNN detections, each mask pasted into its own box only.

    boxes: float (N, 4) as (x0, y0, x1, y1) in the image's pixels; mask_probs: (N, 1, M, M) soft masks;
    scores: (N,). The pixels are exactly those of torchvision's ``paste_masks_in_image`` (the mask padded by
    one pixel, its box enlarged by (M + 2) / M, bilinear resizing to the box, threshold) cut to the object's
    tight bounding box inside the image, without the full-image array per detection that torchvision
    allocates. Empty masks are dropped; the order is by decreasing score (stable).
    """
    height, width = image_shape
    order = torch.argsort(scores.detach().float().cpu(), descending=True, stable=True)
    boxes, mask_probs = boxes.detach().cpu()[order], mask_probs.detach().cpu()[order]
    scores = scores.detach().float().cpu()[order].numpy().astype(np.float32)
    padded, scale = expand_masks(mask_probs, padding=1)
    pasted = expand_boxes(boxes, scale).to(dtype=torch.int64).numpy()
    # the resized mask spans columns x0..x1 and rows y0..y1 (inclusive) of the image; what lies inside it
    x0, y0, x1, y1 = pasted.T
    out_w, out_h = np.maximum(x1 - x0 + 1, 1), np.maximum(y1 - y0 + 1, 1)
    cx0, cy0 = np.maximum(x0, 0), np.maximum(y0, 0)
    cx1, cy1 = np.minimum(x1 + 1, width), np.minimum(y1 + 1, height)
    kept, out_boxes, crops = [], [], []
    for k in np.flatnonzero((cx1 > cx0) & (cy1 > cy0)):
        resized = F.interpolate(
            padded[k : k + 1], size=(int(out_h[k]), int(out_w[k])), mode="bilinear", align_corners=False
        )[0, 0]
        crop = (
            resized[cy0[k] - y0[k] : cy1[k] - y0[k], cx0[k] - x0[k] : cx1[k] - x0[k]] > mask_threshold
        ).numpy()
        rows, cols = np.flatnonzero(crop.any(axis=1)), np.flatnonzero(crop.any(axis=0))
        if not len(rows):
            continue
        kept.append(k)
        crops.append(crop[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1])
        out_boxes.append((cy0[k] + rows[0], cx0[k] + cols[0], cy0[k] + rows[-1] + 1, cx0[k] + cols[-1] + 1))
    if not kept:
        return Instances.empty()
    return Instances(np.array(out_boxes, np.int64), crops, scores[kept])


def predict_instances(
    model: MaskRCNN, images: list[torch.Tensor], mask_threshold: float = 0.5
) -> list[Instances]:
    """Instances of each image (float (3, H, W) tensors in [0, 1]) from a torchvision Mask R-CNN in eval mode.

    Runs the model's parts (transform, backbone, RPN, RoI heads) as ``model(images)`` does, but replaces its
    last step, which pastes every 28 x 28 mask into a full-size image (N x H x W floats per image), with
    :func:`detections_to_instances`. Call it under ``torch.inference_mode()`` or ``torch.no_grad()``.
    """
    original_sizes = [(int(image.shape[-2]), int(image.shape[-1])) for image in images]
    image_list, _ = model.transform(images)
    features = model.backbone(image_list.tensors)
    if isinstance(features, torch.Tensor):
        features = OrderedDict([("0", features)])
    proposals, _ = model.rpn(image_list, features)
    detections, _ = model.roi_heads(features, proposals, image_list.image_sizes)
    return [
        detections_to_instances(
            resize_boxes(found["boxes"], size, original),
            found["masks"],
            found["scores"],
            original,
            mask_threshold,
        )
        for found, size, original in zip(detections, image_list.image_sizes, original_sizes, strict=True)
    ]


def inference_copy(model: nn.Module, device: torch.device) -> nn.Module:
    """A copy of ``model`` on ``device`` in eval mode that predicts the same, faster: BatchNorm folded into the
    convolutions before it (nucleaizer.batchnorm_folding) and, on the CPU, weights in channels-last layout.
    Together they made the shipped model's predictions 1.65x faster on the 2-core CPU (43 DSB images, same
    detections); channels-last alone gained about 10%."""
    copy = deepcopy(model).to(device).eval()
    fold_batchnorm(copy)
    return copy.to(memory_format=torch.channels_last) if device.type == "cpu" else copy


class MaskRCNNPredictor:
    """Instance predictor over a Mask R-CNN: ``predict(tiles) -> [Instances]``, one per tile.

    tiles: list of uint8 (H, W, 3) RGB images already at the model's scale (nuclei about 40 px); sizes may
    differ. Each tile's objects come as boxes in tile pixels + boolean crops + scores, in decreasing score
    order: the soft masks thresholded at ``mask_threshold`` exactly as torchvision's ``model(images)``
    would give them, cut to each object's box (see :func:`predict_instances`); empty masks are dropped.
    ``grid_px`` tells the tiling (nucleaizer.infer.tiling) to start tiles on the network's feature grid.
    It predicts with a copy of ``model`` made for inference (:func:`inference_copy`); ``score_threshold``, when
    given, replaces the model's own detection score threshold in that copy.
    """

    grid_px = FEATURE_GRID_PX

    def __init__(
        self,
        model: nn.Module,
        device: str | torch.device = "cpu",
        batch_size: int = 4,
        mask_threshold: float = 0.5,
        score_threshold: float | None = None,
    ):
        self.device = torch.device(device)
        self.model = inference_copy(model, self.device)
        if score_threshold is not None:
            self.model.roi_heads.score_thresh = float(score_threshold)
        self.batch_size = int(batch_size)
        self.mask_threshold = float(mask_threshold)

    @classmethod
    def from_file(cls, path: str | Path, device: str | torch.device = "cpu", **settings) -> MaskRCNNPredictor:
        """The predictor of a segmenter file (save_segmenter's); settings: batch_size, mask_threshold,
        score_threshold."""
        return cls(load_segmenter(path, device=device)[0], device=device, **settings)

    @torch.inference_mode()
    def __call__(self, tiles: list[np.ndarray]) -> list[Instances]:
        from nucleaizer.data import image_to_tensor

        results = []
        for start in range(0, len(tiles), self.batch_size):
            batch = [image_to_tensor(tile).to(self.device) for tile in tiles[start : start + self.batch_size]]
            results.extend(predict_instances(self.model, batch, self.mask_threshold))
        return results
