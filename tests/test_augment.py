"""Augmentations keep labels on their objects, respect their probabilities and are reproducible."""

import dataclasses

import numpy as np
import pytest
from scipy import ndimage

from nucleaizer import simulate
from nucleaizer.augment import AugmentParams, augment_pair
from nucleaizer.errors import UserError

OFF = AugmentParams.off()


def bright_objects(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels of well-separated nuclei and an image that is 255 exactly on them (1 elsewhere)."""
    labels = simulate.random_labels((128, 128), 8, 18, np.random.default_rng(seed))
    image = np.where(labels[..., None] > 0, 255, 1).astype(np.uint8).repeat(3, axis=2)
    return image, labels


def only(**changes) -> AugmentParams:
    return dataclasses.replace(OFF, **changes)


@pytest.mark.parametrize(
    "params",
    [
        only(rotate=1.0),
        only(flip=1.0),
        only(translate=1.0, translate_max=0.2),
        only(rotate=1.0, translate=1.0, flip=1.0),
    ],
)
def test_geometric_transforms_move_labels_with_the_image(params):
    image, labels = bright_objects()
    for seed in range(5):
        out_image, out_labels = augment_pair(image, labels, params, np.random.default_rng(seed))
        assert out_labels.dtype == labels.dtype and out_image.dtype == np.uint8
        inside = out_labels > 0
        # bilinear image edges may blur by a pixel; away from the edges image and labels must agree
        core = ndimage.binary_erosion(inside, iterations=1)
        outside = ~ndimage.binary_dilation(inside, iterations=1)
        assert out_image[core].min() > 200
        assert out_image[outside].max() < 60
        assert set(np.unique(out_labels)) <= set(np.unique(labels))


def test_rotation_keeps_the_area_of_each_object_inside_the_frame():
    image, labels = bright_objects(1)
    out_image, out_labels = augment_pair(image, labels, only(rotate=1.0), np.random.default_rng(3))
    before = np.bincount(labels.ravel(), minlength=labels.max() + 1)
    after = np.bincount(out_labels.ravel(), minlength=labels.max() + 1)
    # objects near the centre stay in the frame whatever the angle
    centres = ndimage.center_of_mass(labels > 0, labels, range(1, labels.max() + 1))
    central = [i + 1 for i, (y, x) in enumerate(centres) if np.hypot(y - 63.5, x - 63.5) < 35]
    assert central
    for i in central:
        assert abs(int(after[i]) - int(before[i])) <= 0.1 * before[i]


def test_same_seed_same_pair_and_other_seed_differs():
    image, labels = simulate.sample("he", 96, 16, seed=2)
    params = AugmentParams()
    a = augment_pair(image, labels, params, np.random.default_rng(7))
    b = augment_pair(image, labels, params, np.random.default_rng(7))
    c = augment_pair(image, labels, params, np.random.default_rng(8))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def test_inversion_only_for_real_images():
    image, labels = simulate.sample("fluorescence", 64, 12, seed=1)
    real, _ = augment_pair(image, labels, only(invert=1.0), np.random.default_rng(0))
    synthetic, _ = augment_pair(image, labels, only(invert=1.0), np.random.default_rng(0), synthetic=True)
    assert np.array_equal(real, 255 - image)
    assert np.array_equal(synthetic, image)


def test_intensity_transforms_leave_labels_alone_and_change_the_image():
    image, labels = simulate.sample("he", 96, 16, seed=3)
    for name in ("intensity_stretch", "equalize", "blur", "noise", "channel_swap"):
        params = only(
            **{name: 1.0, "blur_sigma_max": 2.0, "noise_std_max": 0.05, "stretch_percentile_max": 5.0}
        )
        changed = False
        for seed in range(4):
            out_image, out_labels = augment_pair(image, labels, params, np.random.default_rng(seed))
            assert np.array_equal(out_labels, labels)
            changed |= not np.array_equal(out_image, image)
        assert changed, name


def test_synthetic_images_may_be_blurred_harder():
    image, labels = simulate.sample("fluorescence", 96, 16, seed=4)
    params = only(blur=1.0, blur_sigma_max=0.0, blur_sigma_max_synthetic=4.0)
    real, _ = augment_pair(image, labels, params, np.random.default_rng(0))
    synthetic, _ = augment_pair(image, labels, params, np.random.default_rng(0), synthetic=True)
    assert np.array_equal(real, image)
    assert synthetic.astype(float).std() < image.astype(float).std()


def test_probability_zero_is_identity_and_config_errors_name_the_key():
    image, labels = simulate.sample("brightfield", 64, 12, seed=5)
    out_image, out_labels = augment_pair(image, labels, OFF, np.random.default_rng(0))
    assert np.array_equal(out_image, image) and np.array_equal(out_labels, labels)
    with pytest.raises(UserError, match="rotation"):
        AugmentParams.from_dict({"rotation": 0.5})
    with pytest.raises(UserError, match="flip"):
        AugmentParams.from_dict({"flip": 1.5})
    assert AugmentParams.from_dict({"flip": 0.25}).flip == 0.25
