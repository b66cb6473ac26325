"""mask_db.features: per-object shape features, whole-nucleus clean-up, touching objects."""

import numpy as np
import pytest
from skimage.measure import regionprops_table

from mask_db.features import FEATURE_COLUMNS, border_labels, shape_features, touching_labels, whole_nuclei
from nucleaizer.simulate import random_labels


@pytest.fixture(scope="module")
def labels() -> np.ndarray:
    labels = random_labels((128, 160), 30, 18, np.random.default_rng(3))
    labels[labels == 5] = 70_000  # ids need not be consecutive nor small
    return labels


def test_features_equal_regionprops(labels):
    ours = shape_features(labels)
    theirs = regionprops_table(
        labels,
        properties=(
            "label",
            "area",
            "perimeter",
            "axis_major_length",
            "axis_minor_length",
            "eccentricity",
            "bbox",
            "centroid",
        ),
    )
    np.testing.assert_array_equal(ours["label"], theirs["label"])
    for mine, skimage_name in (
        ("area", "area"),
        ("perimeter", "perimeter"),
        ("major_axis", "axis_major_length"),
        ("minor_axis", "axis_minor_length"),
        ("eccentricity", "eccentricity"),
    ):
        np.testing.assert_allclose(ours[mine], theirs[skimage_name], atol=1e-9, err_msg=mine)
    np.testing.assert_array_equal(ours["bbox"], np.stack([theirs[f"bbox-{i}"] for i in range(4)], axis=1))
    np.testing.assert_allclose(
        ours["centroid"], np.stack([theirs["centroid-0"], theirs["centroid-1"]], axis=1)
    )
    assert set(FEATURE_COLUMNS) <= set(ours)


def test_solidity_circularity_and_shape_ratio_describe_shapes():
    yy, xx = np.mgrid[:80, :200]
    image = np.zeros((80, 200), dtype=np.int32)
    image[(yy - 40) ** 2 + (xx - 40) ** 2 <= 15**2] = 1  # disc
    image[(yy - 40) ** 2 / 8**2 + (xx - 100) ** 2 / 24**2 <= 1] = 2  # ellipse 3:1
    image[10:70, 140:150] = 3  # L shape
    image[60:70, 140:190] = 3
    f = shape_features(image)
    assert f["solidity"][0] == pytest.approx(1.0) and f["solidity"][1] == pytest.approx(1.0)
    assert f["solidity"][2] < 0.6
    assert f["circularity"][0] > 0.85 and f["circularity"][2] < 0.5
    assert f["shape_ratio"][0] == pytest.approx(1.0, abs=0.02) and f["shape_ratio"][1] == pytest.approx(
        3.0, rel=0.05
    )
    assert f["eccentricity"][0] < 0.1 < 0.9 < f["eccentricity"][1]


def test_empty_image_has_no_features():
    f = shape_features(np.zeros((10, 10), dtype=np.uint16))
    assert f["area"].size == 0 and f["bbox"].shape == (0, 4)


def test_whole_nuclei_drop_border_and_tiny_objects_fill_holes_keep_one_component():
    image = np.zeros((40, 40), dtype=np.int32)
    image[0:5, 10:15] = 1  # touches the border
    image[10:20, 10:20] = 2
    image[14:16, 14:16] = 0  # a hole
    image[10:12, 30:32] = 3  # 4 px: tiny
    image[25:35, 25:35] = 4
    image[25:27, 10:13] = 4  # a second, smaller piece of object 4
    cleaned = whole_nuclei(image, min_area=16)
    assert set(np.unique(cleaned)) == {0, 2, 4}
    assert (cleaned[10:20, 10:20] == 2).all()  # hole filled
    assert (cleaned[25:27, 10:13] == 0).all() and (cleaned[25:35, 25:35] == 4).all()
    np.testing.assert_array_equal(border_labels(image), [1])


def test_touching_labels_use_the_eight_neighbourhood():
    image = np.zeros((20, 20), dtype=np.int32)
    image[2:5, 2:5] = 1
    image[5:8, 5:8] = 2  # diagonal contact with 1
    image[12:15, 2:5] = 3
    image[12:15, 6:9] = 4  # one free column between 3 and 4
    np.testing.assert_array_equal(touching_labels(image), [1, 2])


@pytest.mark.parametrize(
    "bad", [np.zeros((4, 4, 3), dtype=np.uint16), np.full((4, 4), 0.5), np.full((4, 4), -1)]
)
def test_bad_label_images_are_refused(bad):
    with pytest.raises(ValueError, match="label"):
        shape_features(bad)
