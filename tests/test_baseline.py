"""Classical baseline: Otsu + distance-transform watershed, as a function and as an instance predictor."""

import numpy as np
import pytest

from nucleaizer import simulate
from nucleaizer.baseline import (
    ClassicalPredictor,
    is_colour,
    labels_to_instances,
    nuclear_channel,
    segment_classical,
)
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
    masks, scores = ClassicalPredictor()([image])[0]
    assert masks.shape == (0, 40, 50) and masks.dtype == bool and scores.shape == (0,)


def test_predictor_returns_one_mask_per_object():
    image, _ = simulate.sample("he", size=96, diameter_px=16, density=0.3, seed=4)
    predictor = ClassicalPredictor()
    (masks, scores), (masks2, _) = predictor([image, image[:64, :80]])
    labels = predictor.segment(image)
    assert masks.shape == (labels.max(), 96, 96) and scores.dtype == np.float32
    assert masks2.shape[1:] == (64, 80)
    # masks are disjoint and cover exactly the labelled pixels
    assert masks.sum(axis=0).max() == 1
    np.testing.assert_array_equal(masks.any(axis=0), labels > 0)
    np.testing.assert_array_equal((masks * np.arange(1, len(masks) + 1)[:, None, None]).sum(axis=0), labels)


def test_labels_to_instances_keeps_given_scores():
    labels = np.array([[0, 3], [5, 5]])
    masks, scores = labels_to_instances(labels, np.array([0.2, 0.9]))
    assert masks.shape == (2, 2, 2) and masks[0, 0, 1] and masks[1, 1].all()
    np.testing.assert_allclose(scores, [0.2, 0.9])


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
