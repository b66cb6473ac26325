"""bf16 autocast on the CPU changes a trained Mask R-CNN's detections no more than noise does."""

import torch
from torchvision.ops import box_iou

from nucleaizer import simulate
from nucleaizer.data import image_to_tensor
from nucleaizer.maskrcnn import load_segmenter
from nucleaizer.models import DEFAULT_MODEL, segmenter_file


def test_bf16_forward_gives_the_fp32_detections(one_torch_thread):
    """The shipped model (trained, real) on simulated nuclei at its working size, fp32 against bf16."""
    model, _ = load_segmenter(segmenter_file(DEFAULT_MODEL))
    image, _ = simulate.sample("fluorescence", size=256, diameter_px=40, density=0.3, seed=99)
    with torch.no_grad():
        fp32 = model([image_to_tensor(image)])[0]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16 = model([image_to_tensor(image)])[0]
    assert len(fp32["boxes"]) >= 8, "the model should find the nuclei"
    assert abs(len(fp32["boxes"]) - len(bf16["boxes"])) <= 0.1 * len(fp32["boxes"]) + 1
    iou = box_iou(fp32["boxes"], bf16["boxes"].float())
    assert (iou.max(dim=1).values > 0.9).float().mean() >= 0.85
    assert (iou.max(dim=0).values > 0.9).float().mean() >= 0.85
