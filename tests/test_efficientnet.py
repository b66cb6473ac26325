"""EfficientNet-Lite0: the ImageNet weights of the pip package really load (a cat is a cat, an espresso an
espresso), a wrong mapping fails, and the Mask R-CNN backbone built on them is frozen where it should be."""

import cv2
import numpy as np
import pytest
import torch
from skimage import data
from timm.layers import FrozenBatchNormAct2d

from nucleaizer.efficientnet import (
    IMAGE_MEAN,
    IMAGE_STD,
    imagenet_classifier,
    imagenet_state_dict,
    weights_file,
)
from nucleaizer.errors import UserError
from nucleaizer.maskrcnn import build_maskrcnn, load_segmenter, save_segmenter
from nucleaizer.segmenter_module import trainable_mask
from tests.helpers.networks import arch

CATS = {281, 282, 283, 284, 285}  # ImageNet: tabby, tiger cat, Persian, Siamese, Egyptian cat
ESPRESSO = 967
LITE0 = arch(
    backbone="efficientnet_lite0",
    anchor_sizes=[32, 64, 128, 256],
    mask_head_layers=[16],
    box_representation_size=64,
)


def top_class(classifier: torch.nn.Module, image: np.ndarray) -> int:
    resized = cv2.resize(image, (224, 224), interpolation=cv2.INTER_AREA).astype(np.float32) / 255
    tensor = torch.from_numpy(resized).permute(2, 0, 1)[None]
    tensor = (tensor - torch.tensor(IMAGE_MEAN)[:, None, None]) / torch.tensor(IMAGE_STD)[:, None, None]
    with torch.no_grad():
        return int(classifier(tensor).argmax())


@pytest.fixture(scope="module")
def packaged_weights():
    return torch.load(weights_file(), map_location="cpu", weights_only=True)


def test_the_imagenet_classifier_from_the_packaged_file_names_known_photos(packaged_weights):
    classifier = imagenet_classifier(packaged_weights)
    assert top_class(classifier, data.chelsea()) in CATS
    assert top_class(classifier, data.coffee()) == ESPRESSO


def test_a_changed_tensor_order_no_longer_names_them(packaged_weights):
    """Each BatchNorm's scale and shift have the same shape: swapped, every shape check passes, the net is wrong.

    (Two whole residual blocks of one stage swapped would not do: such a net still tells a cat.)"""
    swapped = dict(packaged_weights)
    for name in [
        k
        for k in packaged_weights
        if k.endswith(".weight") and k.replace(".weight", ".bias") in packaged_weights and "_bn" in k
    ]:
        bias = name.replace(".weight", ".bias")
        swapped[name], swapped[bias] = packaged_weights[bias], packaged_weights[name]
    classifier = imagenet_classifier(swapped)
    assert top_class(classifier, data.chelsea()) not in CATS
    assert top_class(classifier, data.coffee()) != ESPRESSO


def test_missing_extra_or_misshapen_tensors_fail_loudly(packaged_weights):
    missing = {k: v for k, v in packaged_weights.items() if k != "_blocks.3._depthwise_conv.weight"}
    with pytest.raises(UserError, match="missing"):
        imagenet_state_dict(missing)
    with pytest.raises(UserError, match="no counterpart"):
        imagenet_state_dict({**packaged_weights, "_blocks.3._se_reduce.weight": torch.zeros(1)})
    misshapen = {**packaged_weights, "_conv_stem.weight": torch.zeros(16, 3, 3, 3)}
    with pytest.raises(UserError, match="shape"):
        imagenet_state_dict(misshapen)


def test_pretrained_backbone_holds_the_imagenet_weights_with_frozen_batchnorm(tmp_path):
    pretrained = LITE0.replace(pretrained=True, frozen_batchnorm=True, fpn_channels=64)
    model = build_maskrcnn(pretrained)
    reference = imagenet_state_dict()
    body = model.backbone.body.state_dict()
    assert torch.equal(body["conv_stem.weight"], reference["conv_stem.weight"])
    assert torch.equal(body["blocks.6.0.conv_pwl.weight"], reference["blocks.6.0.conv_pwl.weight"])
    assert torch.equal(body["blocks.2.1.bn2.running_var"], reference["blocks.2.1.bn2.running_var"])
    assert any(isinstance(m, FrozenBatchNormAct2d) for m in model.backbone.body.modules())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.backbone.body.modules())
    features = model.eval().backbone(torch.zeros(1, 3, 256, 256))
    assert {k: tuple(v.shape[1:]) for k, v in features.items()} == {
        "0": (64, 32, 32),
        "1": (64, 16, 16),
        "2": (64, 8, 8),
        "pool": (64, 4, 4),
    }
    # stage5+ trains the stride-32 blocks, the FPN and the heads
    stage5 = trainable_mask(model, "stage5+")
    assert (
        stage5["backbone.body.blocks.5.0.conv_pw.weight"]
        and stage5["backbone.body.blocks.6.0.conv_pw.weight"]
    )
    assert (
        not stage5["backbone.body.blocks.4.0.conv_pw.weight"]
        and stage5["backbone.fpn.inner_blocks.0.0.weight"]
    )
    # a checkpoint rebuilds without reading the ImageNet file again, with the same (trained) weights
    path = save_segmenter(tmp_path / "seg.pt", model, pretrained)
    rebuilt, stored = load_segmenter(path)
    assert stored.pretrained is False and stored.frozen_batchnorm is True
    assert torch.equal(rebuilt.backbone.body.conv_stem.weight, model.backbone.body.conv_stem.weight)


def test_lite0_options_are_checked():
    with pytest.raises(UserError, match="efficientnet_lite0 only"):
        build_maskrcnn(arch(pretrained=True))
    with pytest.raises(UserError, match="returned_layers"):
        build_maskrcnn(LITE0.replace(returned_layers=[3, 4, 5]))
