"""bf16 autocast on the CPU changes a trained Mask R-CNN's detections no more than noise does."""

import torch
from torchvision.ops import box_iou

from nucleaizer import simulate
from nucleaizer.data import image_to_tensor, instance_targets
from nucleaizer.maskrcnn import build_maskrcnn

ARCH = {
    "backbone": "efficientnet_lite0",
    "returned_layers": None,
    "pretrained": True,
    "frozen_batchnorm": True,
    "anchor_sizes": [[24, 40], [48, 80], [96, 160], [192, 320]],
    "fpn_channels": 64,
    "mask_head_layers": [32, 32],
    "box_representation_size": 128,
    "box_batch_size_per_image": 64,
    "rpn_post_nms_top_n_train": 300,
}


def test_bf16_forward_gives_the_fp32_detections(one_torch_thread):
    torch.manual_seed(0)
    model = build_maskrcnn(**ARCH)
    pairs = [simulate.sample("fluorescence", size=192, diameter_px=36, density=0.3, seed=s) for s in range(8)]
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-4)
    model.train()
    for step in range(60):  # from ImageNet weights, enough to find simulated nuclei with confidence
        batch = [pairs[(2 * step + j) % len(pairs)] for j in (0, 1)]
        losses = model(
            [image_to_tensor(i) for i, _ in batch], [instance_targets(labels) for _, labels in batch]
        )
        optimizer.zero_grad()
        sum(losses.values()).backward()
        optimizer.step()
    image, _ = simulate.sample("fluorescence", size=256, diameter_px=36, density=0.3, seed=99)
    model.eval()
    with torch.no_grad():
        fp32 = model([image_to_tensor(image)])[0]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16 = model([image_to_tensor(image)])[0]
    assert len(fp32["boxes"]) >= 8, "the model should have learnt to find the nuclei"
    assert abs(len(fp32["boxes"]) - len(bf16["boxes"])) <= 0.1 * len(fp32["boxes"]) + 1
    iou = box_iou(fp32["boxes"], bf16["boxes"].float())
    assert (iou.max(dim=1).values > 0.9).float().mean() >= 0.85
    assert (iou.max(dim=0).values > 0.9).float().mean() >= 0.85
