"""Mask R-CNN architectures for tests: the shipped config's MobileNetV3 network, changed where a test needs."""

from nucleaizer.config_files import load_config
from nucleaizer.maskrcnn_arch import MaskRCNNArch


def arch(**changes) -> MaskRCNNArch:
    """conf/segmenter/maskrcnn_mobilenet.yaml's network on torchvision's default MobileNetV3 stages (3 feature
    maps, anchors 16, 32, 64 px), with ``changes``."""
    base = MaskRCNNArch.from_config(load_config("segmenter", "maskrcnn_mobilenet")["arch"])
    return base.replace(returned_layers=None, anchor_sizes=[16, 32, 64]).replace(**changes)


# a small untrained Mask R-CNN: narrow heads and few proposals keep a CPU prediction around a second
TINY_MASKRCNN = arch(
    mask_head_layers=[16],
    box_representation_size=64,
    rpn_pre_nms_top_n_test=200,
    rpn_post_nms_top_n_test=100,
    max_detections=50,
)
