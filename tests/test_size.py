"""Size estimation and rescaling rule (docs/method.md section 1)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nucleaizer import simulate
from nucleaizer.errors import UserError
from nucleaizer.size import (
    equivalent_diameters,
    fill_with_dataset_median,
    median_diameter,
    rescale_image,
    rescale_labels,
    scale_factor,
)


def disc_labels(shape, centres, radius):
    """Label image with one disc per centre, ids 1..N."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    labels = np.zeros(shape, np.int32)
    for i, (cy, cx) in enumerate(centres, start=1):
        labels[(yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2] = i
    return labels


def test_equivalent_diameter_of_squares_and_discs():
    labels = np.zeros((100, 100), np.int32)
    labels[10:30, 10:30] = 1  # area 400 -> d = sqrt(1600/pi)
    labels[50:60, 50:60] = 7  # non-consecutive id, area 100
    d = equivalent_diameters(labels)
    np.testing.assert_allclose(d, np.sqrt(4 * np.array([400, 100]) / np.pi))
    disc = disc_labels((200, 200), [(100, 100)], 20)
    assert median_diameter(disc) == pytest.approx(40, rel=0.02)


def test_border_objects_and_fragments_are_ignored():
    labels = np.zeros((64, 64), np.int32)
    labels[0:10, 20:30] = 1  # touches the top border
    labels[30:40, 30:40] = 2  # usable, area 100
    labels[50:53, 5:8] = 3  # fragment, area 9 < 16
    assert equivalent_diameters(labels).size == 1
    assert equivalent_diameters(labels, exclude_border=False).size == 2
    assert equivalent_diameters(labels, min_area_px=1).size == 2
    assert median_diameter(labels) == pytest.approx(np.sqrt(400 / np.pi))


def test_no_usable_object_gives_none():
    assert median_diameter(np.zeros((32, 32), np.int32)) is None
    only_border = np.zeros((32, 32), np.int32)
    only_border[:, :5] = 1
    assert median_diameter(only_border) is None
    assert median_diameter(np.zeros((1, 1), np.uint16)) is None


def test_median_diameter_of_simulated_images_matches_the_requested_size():
    _, labels = simulate.sample("fluorescence", size=256, diameter_px=20, density=0.2, seed=3)
    assert median_diameter(labels) == pytest.approx(20, rel=0.2)


def test_scale_factor_rule_and_clamps():
    assert scale_factor(20) == pytest.approx(2.0)
    assert scale_factor(80) == pytest.approx(0.5)
    assert scale_factor(2) == 4.0  # clamped
    assert scale_factor(1000) == 0.25
    assert scale_factor(20, target_diameter_px=30, max_scale=1.2) == 1.2
    for bad in (0, -3, float("nan"), None):
        with pytest.raises(UserError, match="diameter"):
            scale_factor(bad)


def test_dataset_median_fallback():
    assert fill_with_dataset_median([10.0, None, 30.0, 20.0], default_px=40) == [10.0, 20.0, 30.0, 20.0]
    assert fill_with_dataset_median([None, None], default_px=40) == [40.0, 40.0]


def test_rescale_image_keeps_dtype_and_channels():
    image = np.random.default_rng(0).integers(0, 255, (50, 70, 3), dtype=np.uint8)
    up = rescale_image(image, 2.0)
    down = rescale_image(image, 0.5)
    assert up.shape == (100, 140, 3) and up.dtype == np.uint8
    assert down.shape == (25, 35, 3)
    assert rescale_image(image, 1.0) is image
    grey = rescale_image(np.zeros((10, 10, 1), np.uint16), 3.0)
    assert grey.shape == (30, 30, 1) and grey.dtype == np.uint16
    assert rescale_image(np.zeros((1, 1, 3), np.uint8), 0.25).shape == (1, 1, 3)


def test_rescaled_labels_stay_aligned_with_the_rescaled_image():
    _, labels = simulate.sample("fluorescence", size=128, diameter_px=16, density=0.3, seed=1)
    up = rescale_labels(labels, 2.5)
    # the foreground of the labels and of the bilinearly rescaled binary image coincide
    mask_up = rescale_image((labels > 0).astype(np.float32), 2.5) > 0.5
    assert up.shape == mask_up.shape == (320, 320)
    agreement = (mask_up == (up > 0)).mean()
    assert agreement > 0.98
    # centroids move with the scale
    for obj in (1, labels.max()):
        c0 = np.argwhere(labels == obj).mean(axis=0)
        c1 = np.argwhere(up == obj).mean(axis=0)
        np.testing.assert_allclose((c1 + 0.5) / 2.5 - 0.5, c0, atol=0.5)


@settings(max_examples=30, deadline=None)
@given(
    height=st.integers(1, 90),
    width=st.integers(1, 90),
    scale=st.sampled_from([0.5, 1.0, 1.7, 2.0, 3.0, 4.0]),
    seed=st.integers(0, 1000),
)
def test_upscale_then_back_to_shape_is_the_identity(height, width, scale, seed):
    labels = np.random.default_rng(seed).integers(0, 5, (height, width)).astype(np.uint16)
    if scale < 1:
        labels = np.repeat(np.repeat(labels, 2, axis=0), 2, axis=1)  # exact halving needs 2x2 blocks
    there = rescale_labels(labels, scale)
    back = rescale_labels(there, labels.shape)
    assert back.dtype == labels.dtype
    if scale >= 1:
        np.testing.assert_array_equal(back, labels)
    else:
        assert back.shape == labels.shape
        np.testing.assert_array_equal(there, labels[::2, ::2])


def test_estimated_diameter_is_not_pulled_down_by_fragments():
    """Over-segmentation: one 40 px nucleus per 3 nuclei broken into many 5 px fragments."""
    from nucleaizer.size import estimated_diameter

    labels = np.zeros((400, 400), np.int32)
    yy, xx = np.mgrid[:400, :400]
    next_id = 1
    for k, (cy, cx) in enumerate([(60, 60), (60, 200), (200, 60), (200, 200), (320, 320), (320, 100)]):
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= 20**2
        if k % 3:
            labels[disc] = next_id
            next_id += 1
        else:  # the nucleus split into 5 x 5 squares
            for y0 in range(cy - 20, cy + 20, 5):
                for x0 in range(cx - 20, cx + 20, 5):
                    piece = disc & (yy >= y0) & (yy < y0 + 5) & (xx >= x0) & (xx < x0 + 5)
                    if piece.sum() >= 16:
                        labels[piece] = next_id
                        next_id += 1
    assert median_diameter(labels) < 10  # the plain median counts fragments
    assert abs(estimated_diameter(labels) - 40) < 2
    assert estimated_diameter(np.zeros((10, 10), np.int32)) is None


@pytest.mark.data
def test_classical_estimate_on_gowt1_is_near_the_truth_and_background_has_none(shared_data):
    """gowt1_fluo t01: 61 px nuclei were estimated at 10 px (34,089 objects for 23); a background crop at 6."""
    from nucleaizer import io
    from nucleaizer.baseline import ClassicalPredictor
    from nucleaizer.infer.nucleus_segmenter import NucleusSegmenter

    image = io.read_image(shared_data / "gowt1_fluo" / "images" / "t01.png")
    segmenter = NucleusSegmenter(ClassicalPredictor())
    assert 35 < segmenter.estimate_diameter(image) < 80
    assert segmenter.estimate_diameter(image[:150, :150]) is None


def test_infer_warns_about_estimates_far_from_the_folder_median(caplog):
    import logging

    from nucleaizer.infer.job import warn_about_outliers

    with caplog.at_level(logging.WARNING, logger="nucleaizer.infer.job"):
        warn_about_outliers({"a": 20.0, "b": 22.0, "c": 21.0})
        assert not caplog.text
        warn_about_outliers({"a": 20.0, "b": 22.0, "c": 90.0})
    assert "c 90.0 px" in caplog.text and "diameter=" in caplog.text
