"""Classical baseline: Otsu + distance-transform watershed, as a function and as an instance predictor."""

import numpy as np
import pytest

from nucleaizer import simulate
from nucleaizer.baseline import (
    ClassicalPredictor,
    is_colour,
    nuclear_channel,
    segment_classical,
)
from nucleaizer.instances import Instances, paint_instances
from nucleaizer.metrics import dsb_score


@pytest.mark.parametrize(("style", "minimum"), [("fluorescence", 0.35), ("brightfield", 0.12), ("he", 0.3)])
def test_classical_segmentation_scores_sensibly_on_simulated_images(style, minimum):
    scores = []
    for seed in range(3):
        image, labels = simulate.sample(style, size=128, diameter_px=16, density=0.25, seed=seed)
        predicted = segment_classical(image)
        assert predicted.dtype == np.int32 and predicted.shape == labels.shape
        np.testing.assert_array_equal(np.unique(predicted), np.arange(predicted.max() + 1))
        scores.append(dsb_score(labels, predicted))
    assert np.mean(scores) > minimum


def test_polarity_and_colour_detection():
    fluo, labels = simulate.sample("fluorescence", size=96, diameter_px=16, density=0.3, seed=0)
    bright, _ = simulate.sample("brightfield", size=96, diameter_px=16, density=0.3, seed=0)
    he, _ = simulate.sample("he", size=96, diameter_px=16, density=0.3, seed=0)
    assert not is_colour(fluo) and not is_colour(bright) and is_colour(he)
    for image, inverted in ((fluo, False), (bright, True), (he, False)):
        channel, was_inverted = nuclear_channel(image)
        assert was_inverted == inverted
        # in every look, nuclei are brighter than the background in the nuclear channel
        assert channel[labels > 0].mean() > channel[labels == 0].mean()


def test_touching_nuclei_are_split():
    yy, xx = np.mgrid[:64, :96]
    two_discs = ((yy - 32) ** 2 + (xx - 34) ** 2 <= 14**2) | ((yy - 32) ** 2 + (xx - 60) ** 2 <= 14**2)
    image = np.repeat((two_discs * 200 + 20).astype(np.uint8)[..., None], 3, axis=2)
    labels = segment_classical(image, smooth_sigma_px=0)
    assert labels.max() == 2
    assert labels[32, 34] != labels[32, 60]


@pytest.mark.parametrize("value", [0, 255, 77])
def test_flat_images_have_no_nuclei(value):
    image = np.full((40, 50, 3), value, np.uint8)
    assert segment_classical(image).max() == 0
    assert len(ClassicalPredictor()([image])[0]) == 0


def test_predictor_returns_one_small_crop_per_object():
    image, _ = simulate.sample("he", size=96, diameter_px=16, density=0.3, seed=4)
    predictor = ClassicalPredictor()
    found, found2 = predictor([image, image[:64, :80]])
    labels = predictor.segment(image)
    assert len(found) == labels.max() and found.scores.dtype == np.float32 and (found.scores == 1).all()
    assert (found2.boxes[:, 2] <= 64).all() and (found2.boxes[:, 3] <= 80).all()
    # each crop is its own small array (no view of a tile-sized mask), and painting gives the labels back
    assert all(
        crop.base is None and crop.shape == (y1 - y0, x1 - x0)
        for crop, (y0, x0, y1, x1) in zip(found.crops, found.boxes, strict=True)
    )
    np.testing.assert_array_equal(paint_instances(found, labels.shape)[0] > 0, labels > 0)
    assert len(np.unique(paint_instances(found, labels.shape)[0])) == labels.max() + 1


def test_masks_become_copied_crops():
    masks = np.zeros((3, 200, 200), bool)
    masks[0, 10:20, 10:30] = masks[1, 50:60, 50:52] = True
    found = Instances.from_masks(masks, np.array([0.9, 0.5, 0.1]))
    assert len(found) == 2 and all(crop.base is None for crop in found.crops)
    assert [crop.shape for crop in found.crops] == [(10, 20), (10, 2)]


def test_fixed_threshold_makes_the_result_local():
    image, _ = simulate.sample("fluorescence", size=128, diameter_px=16, density=0.3, seed=1)
    whole = segment_classical(image, threshold=0.3)
    part = segment_classical(image[:, :64], threshold=0.3)
    # objects well inside the left half come out the same whether the right half is there or not
    inner = np.unique(whole[:, :40])
    for obj in inner[inner > 0]:
        if not (whole == obj)[:, 56:].any():
            ids = np.unique(part[whole[:, :64] == obj])
            assert len(ids) == 1 and ((part == ids[0]) == (whole[:, :64] == obj)).all()
    assert segment_classical(image, threshold=0.99).max() < whole.max()


def test_background_and_noise_are_seen_as_holding_no_nuclei():
    from nucleaizer.baseline import sees_no_nuclei

    rng = np.random.default_rng(0)
    assert sees_no_nuclei(rng.normal(100, 10, (200, 200)).clip(0, 255).astype(np.uint8))
    assert sees_no_nuclei(np.full((50, 50, 3), 80, np.uint8))
    for style in ("fluorescence", "he", "brightfield"):
        image, _ = simulate.sample(style, size=128, diameter_px=16, density=0.2, seed=5)
        assert not sees_no_nuclei(image), style
