"""MaskRCNNPredictor: box crops identical to torchvision's full-image masks, empty tiles, score order."""

import numpy as np
import pytest
import torch
from torchvision.models.detection.roi_heads import paste_masks_in_image

from nucleaizer import simulate
from nucleaizer.data import image_to_tensor
from nucleaizer.instances import Instances, paint_instances
from nucleaizer.maskrcnn import build_maskrcnn, load_segmenter
from nucleaizer.maskrcnn_predictor import MaskRCNNPredictor, detections_to_instances
from nucleaizer.models import DEFAULT_MODEL, segmenter_file
from tests.helpers.networks import arch

# a narrow random-init CPU model; score threshold 0 so that it has detections
TINY = arch(
    mask_head_layers=[16, 16],
    box_representation_size=64,
    box_batch_size_per_image=32,
    rpn_pre_nms_top_n_test=200,
    rpn_post_nms_top_n_test=100,
    box_score_thresh=0.0,
    max_detections=60,
)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def assert_same_instances(got: Instances, expected: Instances) -> None:
    assert np.array_equal(got.boxes, expected.boxes)
    assert np.array_equal(got.scores, expected.scores)
    assert all(np.array_equal(a, b) for a, b in zip(got.crops, expected.crops, strict=True))


def test_crops_equal_torchvision_masks_cut_to_their_boxes():
    torch.manual_seed(0)
    model = build_maskrcnn(TINY).eval()
    tiles = [
        simulate.sample("fluorescence", 96, 40, 0.3, seed=1)[0],
        simulate.sample("he", (80, 112), 40, seed=5)[0],
    ]
    with torch.inference_mode():
        outputs = model([image_to_tensor(tile) for tile in tiles])
    # untrained mask logits give probabilities below 0.5: a lower threshold keeps non-empty masks
    threshold = 0.2
    predicted = MaskRCNNPredictor(model, batch_size=len(tiles), mask_threshold=threshold)(tiles)
    assert len(predicted) == len(tiles)
    for output, instances, tile in zip(outputs, predicted, tiles, strict=True):
        masks = (output["masks"][:, 0] > threshold).numpy()
        scores = output["scores"].numpy()
        expected = Instances.from_masks(masks, scores)  # tight boxes, empty masks dropped
        assert len(expected) >= 5, "the test needs detections"
        assert isinstance(instances, Instances) and instances.scores.dtype == np.float32
        assert_same_instances(instances, expected)
        assert (np.diff(instances.scores) <= 0).all()
        assert (instances.boxes[:, :2] >= 0).all() and (instances.boxes[:, 2:] <= tile.shape[:2]).all()
        assert all(crop.dtype == bool and crop.any() for crop in instances.crops)
        # painted, the crops give the label image of the full masks
        dense_labels, _ = paint_instances(expected, tile.shape[:2])
        assert np.array_equal(paint_instances(instances, tile.shape[:2])[0], dense_labels)


def test_pasting_matches_torchvision_at_image_edges_and_drops_empty_masks():
    generator = torch.Generator().manual_seed(3)
    probs = torch.rand(5, 1, 28, 28, generator=generator)
    probs[3] = 0.1  # nothing above the threshold: dropped
    # boxes (x0, y0, x1, y1) inside, across each edge, and larger than the image
    boxes = torch.tensor(
        [
            [5.3, 7.9, 30.2, 25.0],
            [-6.0, -3.5, 12.4, 10.0],
            [40.0, 20.0, 63.7, 49.9],
            [10.0, 10.0, 20.0, 20.0],
            [-10.0, -10.0, 80.0, 70.0],
        ]
    )
    scores = torch.tensor([0.3, 0.9, 0.5, 0.8, 0.7])
    shape = (50, 64)
    got = detections_to_instances(boxes, probs, scores, shape, 0.5)
    full = paste_masks_in_image(probs, boxes, shape)[:, 0] > 0.5
    order = torch.argsort(scores, descending=True)
    expected = Instances.from_masks(full[order].numpy(), scores[order].numpy())
    assert len(expected) == 4
    assert_same_instances(got, expected)
    assert np.array_equal(got.scores, np.array([0.9, 0.7, 0.5, 0.3], np.float32))


def test_empty_output_tile():
    torch.manual_seed(0)
    model = build_maskrcnn(TINY).eval()
    model.roi_heads.score_thresh = 1.0  # no detection passes
    tiles = [np.zeros((64, 64, 3), np.uint8), simulate.sample("fluorescence", 96, 40, 0.3, seed=1)[0]]
    for instances in MaskRCNNPredictor(model, batch_size=1)(tiles):
        assert len(instances) == 0 and instances.boxes.shape == (0, 4)
    empty = detections_to_instances(torch.zeros(0, 4), torch.zeros(0, 1, 28, 28), torch.zeros(0), (32, 32))
    assert len(empty) == 0


def test_a_score_threshold_keeps_the_detections_above_it_and_leaves_the_model_alone():
    model, _ = load_segmenter(segmenter_file(DEFAULT_MODEL))  # trained: its scores spread
    own = model.roi_heads.score_thresh
    tile = simulate.sample("he", 160, 40, 0.3, seed=2)[0]
    everything = MaskRCNNPredictor(model, score_threshold=0.01)([tile])[0]
    threshold = float(np.median(everything.scores))
    kept = MaskRCNNPredictor(model, score_threshold=threshold)([tile])[0]
    above = everything.scores > threshold
    assert 0 < above.sum() < len(everything), "the test needs detections on both sides"
    assert_same_instances(kept, everything.select(np.flatnonzero(above)))
    assert model.roi_heads.score_thresh == own


@pytest.mark.parametrize(
    "backbone, returned_layers, n_maps",
    [("mobilenet_v3", [3, 4, 5], 4), ("mobilenet_v3", None, 3), ("resnet18", None, 5)],
)
def test_tiles_start_on_the_coarsest_feature_grid_of_every_backbone(backbone, returned_layers, n_maps):
    """The predictor's grid_px is what the tiling aligns tile starts to: every feature stride must divide it,
    and the coarsest one must equal it (a coarser map would leave tiles off its grid)."""
    model = build_maskrcnn(
        arch(backbone=backbone, returned_layers=returned_layers, anchor_sizes=[32] * n_maps)
    ).eval()
    with torch.inference_mode():
        features = model.backbone(torch.zeros(1, 3, 256, 256))
    strides = [256 // f.shape[-1] for f in features.values()]
    assert max(strides) == MaskRCNNPredictor.grid_px and all(
        MaskRCNNPredictor.grid_px % s == 0 for s in strides
    )
