"""The colour overlay: object pixels tinted, outlines in the object's colour, background untouched."""

import numpy as np
from skimage.segmentation import find_boundaries

from nucleaizer import simulate
from nucleaizer.infer.overlay import inner_boundaries, label_colours, overlay


def test_inner_boundaries_are_skimages():
    _, labels = simulate.sample("fluorescence", size=128, diameter_px=16, density=0.5, seed=3)
    np.testing.assert_array_equal(inner_boundaries(labels), find_boundaries(labels, mode="inner"))


def test_overlay_tints_objects_outlines_them_and_keeps_the_background():
    image, labels = simulate.sample("he", size=96, diameter_px=20, density=0.3, seed=1)
    result = overlay(image, labels, alpha=0.35, seed=2)
    colours = label_colours(int(labels.max()), 2)[labels]
    edges = find_boundaries(labels, mode="inner")
    inside = (labels > 0) & ~edges
    expected = 0.65 * image.astype(np.float32) + 0.35 * colours
    assert result.dtype == np.uint8 and result.shape == image.shape
    np.testing.assert_array_equal(result[labels == 0], image[labels == 0])
    np.testing.assert_array_equal(result[edges], colours[edges])
    assert np.abs(result[inside] - expected[inside]).max() <= 1
