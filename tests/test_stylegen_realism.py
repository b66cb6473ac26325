"""stylegen.realism: the two-sample classifier test and the per-channel intensity distance."""

import numpy as np
import pytest
from scipy import ndimage

from nucleaizer import simulate
from stylegen.realism import channel_wasserstein, classifier_two_sample_test, cut_patches, realism_report
from tests.helpers.threads import one_thread  # noqa: F401 (autouse fixture)

C2ST = {"patch_size": 32, "epochs": 30, "batch_size": 32, "lr": 3e-3, "seed": 0}


def images_of(style: str, seeds: range) -> list[np.ndarray]:
    return [simulate.sample(style, size=128, diameter_px=14, seed=s)[0] for s in seeds]


def test_two_halves_of_one_set_are_indistinguishable():
    real = images_of("he", range(24))
    result = classifier_two_sample_test(real[::2], real[1::2], **C2ST)
    assert result["n_test"] >= 150
    assert 0.38 <= result["accuracy"] <= 0.62, result
    assert result["p_value"] > 0.01


def test_clearly_different_sets_are_told_apart():
    result = classifier_two_sample_test(
        images_of("he", range(12)), images_of("fluorescence", range(12)), **C2ST
    )
    assert result["accuracy"] >= 0.95, result
    assert result["p_value"] < 1e-6


def test_blur_alone_is_detected():
    # a synthetic set that only lacks fine texture must not pass as real (paired: the same images, blurred)
    real = images_of("he", range(12))
    blurred = [ndimage.gaussian_filter(image, (1.0, 1.0, 0)) for image in real]
    assert classifier_two_sample_test(real, blurred, paired=True, **C2ST)["accuracy"] >= 0.75


def test_paired_renders_of_the_same_masks_are_indistinguishable():
    labels = [simulate.sample("he", size=128, diameter_px=14, seed=s)[1] for s in range(24)]
    first = [simulate.render(lab, "he", np.random.default_rng(1000 + i)) for i, lab in enumerate(labels)]
    second = [simulate.render(lab, "he", np.random.default_rng(2000 + i)) for i, lab in enumerate(labels)]
    result = classifier_two_sample_test(first, second, paired=True, **C2ST)
    assert 0.38 <= result["accuracy"] <= 0.62, result
    with pytest.raises(ValueError, match="paired"):
        classifier_two_sample_test(first, second[:-1], paired=True, **C2ST)
    with pytest.raises(ValueError, match="two images"):
        classifier_two_sample_test(first[:1], second, **C2ST)


def test_same_seed_same_accuracy():
    real, fake = images_of("he", range(6)), images_of("brightfield", range(6))
    assert classifier_two_sample_test(real, fake, **C2ST) == classifier_two_sample_test(real, fake, **C2ST)


def test_wasserstein_is_in_grey_levels():
    dark = [np.full((10, 10, 3), 20, np.uint8)]
    bright = [np.full((10, 10, 3), 70, np.uint8)]
    assert channel_wasserstein(dark, bright) == [50.0, 50.0, 50.0]
    he = images_of("he", range(8))
    assert max(channel_wasserstein(he[:4], he[4:])) < 3.0
    assert min(channel_wasserstein(he, images_of("fluorescence", range(4)))) > 30.0


def test_patches_split_by_source_and_report_keys():
    patches, sources = cut_patches([np.zeros((100, 64, 3), np.uint8), np.zeros((20, 20, 3), np.uint8)], 32)
    # 100 rows -> origins 0, 32, 64, 68; 64 columns -> 0, 32; the small image is padded to one patch
    assert patches.shape == (4 * 2 + 1, 32, 32, 3)
    assert sources.tolist() == [0] * 8 + [1]
    report = realism_report(images_of("he", range(4)), images_of("he", range(4, 8)), **C2ST)
    assert set(report) == {"c2st", "wasserstein_rgb", "wasserstein_mean"}
