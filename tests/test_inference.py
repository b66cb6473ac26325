"""segment_image / NucleusSegmenter: size rule, rescaling back to the original frame, awkward images."""

import numpy as np
import pytest
from scipy import ndimage

from nucleaizer import simulate
from nucleaizer.baseline import ClassicalPredictor
from nucleaizer.infer.nucleus_segmenter import NucleusSegmenter, segment_image
from nucleaizer.infer.tiling import TileParams
from nucleaizer.metrics import dsb_score
from nucleaizer.size import SizeRule, median_diameter
from tests.helpers.predictors import (
    objects_image,
    same_partition,
    threshold_predictor,
    threshold_predictor_labels,
)


def scale_recording(predictor, shapes):
    def recording(tiles):
        shapes.extend(t.shape[:2] for t in tiles)
        return predictor(tiles)

    return recording


def test_labels_come_back_aligned_with_the_original_image():
    labels = simulate.random_labels((120, 150), 25, 14, np.random.default_rng(5))
    image = objects_image(labels)
    expected = threshold_predictor_labels(image)
    shapes = []
    out = segment_image(
        image,
        scale_recording(threshold_predictor, shapes),
        diameter_px=14,
        tiles=TileParams(tile_size=128, overlap=32),
    )
    assert out.shape == (120, 150) and out.dtype == np.int32
    scale = 40 / 14
    assert max(s[0] for s in shapes) == 128 and len(shapes) > 1  # upscaled, so predicted in tiles
    assert out.max() == expected.max()
    # every object is found where it is, to within the interpolation of its outline
    assert dsb_score(expected, out) > 0.9
    np.testing.assert_array_equal(np.unique(out), np.arange(out.max() + 1))
    assert scale > 1


def test_diameter_is_estimated_by_the_preseg_pass_and_drives_the_scale():
    labels = simulate.random_labels((160, 160), 30, 20, np.random.default_rng(1))
    image = objects_image(labels)
    shapes = []
    segmenter = NucleusSegmenter(
        scale_recording(threshold_predictor, shapes), tiles=TileParams(tile_size=1024)
    )
    diameter = segmenter.estimate_diameter(image)
    assert diameter == pytest.approx(18, rel=0.2)  # objects_image shaves a 1 px rim
    shapes.clear()
    segmenter.segment(image)
    assert shapes[-1] == (round(160 * 40 / diameter),) * 2
    # the user's diameter overrides the estimate; the clamps hold
    shapes.clear()
    segmenter.segment(image, diameter_px=80)
    assert shapes[-1] == (80, 80)
    shapes.clear()
    NucleusSegmenter(scale_recording(threshold_predictor, shapes), size=SizeRule(max_scale=1.5)).segment(
        image, diameter_px=5
    )
    assert shapes[-1] == (240, 240)


def test_a_separate_preseg_predictor_is_used_for_size_only():
    image = objects_image(simulate.random_labels((100, 100), 12, 20, np.random.default_rng(3)))
    preseg_calls, main_calls = [], []
    segmenter = NucleusSegmenter(
        scale_recording(threshold_predictor, main_calls),
        preseg=scale_recording(threshold_predictor, preseg_calls),
    )
    segmenter.segment(image)
    assert preseg_calls == [(100, 100)] and main_calls and main_calls[0] != (100, 100)


def dilating_predictor(pixels):
    """threshold_predictor that sees every object ``pixels`` px larger (a size guess that is too large)."""
    if not pixels:
        return threshold_predictor

    def predict(tiles):
        return [
            (np.stack([ndimage.binary_dilation(m, iterations=pixels) for m in masks]), scores)
            for masks, scores in threshold_predictor(tiles)
        ]

    return predict


@pytest.mark.parametrize(("guess_error_px", "tta", "passes"), [(0, False, 1), (8, False, 2), (0, True, 9)])
def test_the_size_pass_is_the_segmentation_when_its_scale_was_right(guess_error_px, tta, passes):
    """The guess sets the scale of the model's size pass; when the diameter it measures there asks for about
    that scale, those objects are the result (one model pass); a guess far off (or TTA) means another pass."""
    image = objects_image(simulate.random_labels((160, 160), 30, 20, np.random.default_rng(1)))
    calls = []
    segmenter = NucleusSegmenter(
        scale_recording(threshold_predictor, calls),
        tiles=TileParams(tile_size=1024),
        size_guess=dilating_predictor(guess_error_px),
        tta_transforms=(
            "identity",
            "flip_h",
            "flip_v",
            "rot90",
            "rot180",
            "rot270",
            "transpose",
            "transverse",
        )
        if tta
        else (),
    )
    estimate = segmenter.measure_size(image)
    assert estimate.diameter_px == pytest.approx(median_diameter(threshold_predictor_labels(image)), rel=0.1)
    found = segmenter.segment_objects(image)
    assert len(calls) == 1 + passes  # measure_size above, then segment_objects' own passes
    assert found.scale == pytest.approx(40 / estimate.diameter_px, rel=0.15)
    assert dsb_score(threshold_predictor_labels(image), found.labels) > 0.9


def test_refiner_runs_at_the_working_scale():
    image = objects_image(simulate.random_labels((60, 60), 5, 20, np.random.default_rng(0)))
    seen = []

    def refine(labels, working_image):
        seen.append((labels.shape, working_image.shape))
        return np.zeros_like(labels)

    out = NucleusSegmenter(threshold_predictor, refine=refine).segment(image, diameter_px=20)
    assert seen == [((120, 120), (120, 120, 3))] and out.max() == 0


def test_classical_predictor_through_tiles_scores_like_the_whole_image():
    image, labels = simulate.sample("fluorescence", size=160, diameter_px=16, density=0.3, seed=2)
    tiled = segment_image(
        image, ClassicalPredictor(), diameter_px=16, tiles=TileParams(tile_size=192, overlap=48)
    )
    whole = segment_image(image, ClassicalPredictor(), diameter_px=16, tiles=TileParams(tile_size=1024))
    assert abs(dsb_score(labels, tiled) - dsb_score(labels, whole)) < 0.05
    assert dsb_score(labels, tiled) > 0.3


@pytest.mark.parametrize(
    "image",
    [
        np.zeros((1, 1, 3), np.uint8),  # 1x1
        np.zeros((50, 40, 3), np.uint8),  # all black: no detection anywhere
        np.full((30, 30), 40000, np.uint16),  # 16-bit grey, flat
        np.zeros((1, 300, 3), np.uint8),  # one row
    ],
    ids=["1x1", "black", "16bit-flat", "one-row"],
)
def test_awkward_images_give_empty_labels_of_their_shape(image):
    out = segment_image(image, threshold_predictor)
    assert out.shape == image.shape[:2] and out.dtype == np.int32 and out.max() == 0


def test_16_bit_and_rgba_images_are_converted():
    labels = simulate.random_labels((80, 80), 10, 16, np.random.default_rng(4))
    rgb = objects_image(labels)
    expected = threshold_predictor_labels(rgb)
    sixteen = rgb[..., 0].astype(np.uint16) * 200  # 16-bit grey: stretched, never cast
    rgba = np.concatenate([rgb, np.full((80, 80, 1), 255, np.uint8)], axis=2)
    for image in (sixteen, rgba):
        out = segment_image(image, threshold_predictor, diameter_px=40)
        assert same_partition(out, expected)


def test_predictor_without_detections_gives_empty_labels():
    image, _ = simulate.sample("he", size=64, diameter_px=16, seed=0)

    def nothing(tiles):
        return [(np.zeros((0, *t.shape[:2]), bool), np.zeros(0, np.float32)) for t in tiles]

    out = segment_image(image, nothing, tta=True)
    assert out.shape == (64, 64) and out.max() == 0


def test_segment_objects_carries_each_nucleus_score_to_the_original_size():
    """Scores follow their objects through rescaling, relabelling and TTA; agreement is 1 without TTA."""
    from nucleaizer.infer.tta import TRANSFORMS

    labels = simulate.random_labels((120, 140), 12, 16, np.random.default_rng(4))
    brightness = np.linspace(150, 250, labels.max() + 1).astype(np.uint8)
    image = objects_image(labels, brightness)
    for scale in (1.0, 2.0):
        found = NucleusSegmenter(threshold_predictor).segment_objects(image, scale=scale)
        assert (
            found.labels.max() >= 8
            and (found.agreement == 1).all()
            and len(found.score) == found.labels.max()
        )
        truth = [np.bincount(labels[found.labels == i + 1]).argmax() for i in range(found.labels.max())]
        if scale == 1.0:  # threshold_predictor scores an object by its brightness
            np.testing.assert_allclose(found.score, brightness[truth] / 255, atol=1e-6)
        else:  # interpolated edges lower every score a little; the order stays
            assert (np.diff(brightness[truth][np.argsort(found.score)].astype(int)) > 0).all()
    voted = NucleusSegmenter(threshold_predictor, tta_transforms=tuple(TRANSFORMS)).segment_objects(
        image, scale=1.0
    )
    assert len(voted.agreement) == voted.labels.max() and (voted.agreement > 0.5).all()
