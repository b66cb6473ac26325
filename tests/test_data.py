"""Training crops: target diameter, crop size, padding, empty-crop rejection, targets, synthetic share per batch."""

import numpy as np
import pytest

from nucleaizer import simulate, size
from nucleaizer.augment import AugmentParams
from nucleaizer.data import (
    REAL,
    SYNTHETIC,
    CropDataset,
    MixedBatchSampler,
    ValidationDataset,
    instance_targets,
    load_pairs,
)
from nucleaizer.errors import UserError


def test_targets_hold_every_object_with_boxes_around_their_masks():
    labels = simulate.random_labels((400, 400), 900, 8, np.random.default_rng(0))
    n = len(np.unique(labels)) - 1
    assert n > 500  # more than the old code's cap of 100 and the detection limit
    target = instance_targets(labels)
    assert target["boxes"].shape == (n, 4) and target["masks"].shape == (n, 400, 400)
    assert target["labels"].unique().tolist() == [1]
    masks = target["masks"].numpy().astype(bool)
    for k in (0, n // 2, n - 1):
        ys, xs = np.nonzero(masks[k])
        assert target["boxes"][k].tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
    assert masks.sum(axis=0).max() == 1 and masks.sum() == (labels > 0).sum()


def test_crops_bring_nuclei_to_the_target_diameter():
    pairs = [simulate.sample("fluorescence", 200, 20, 0.3, seed=s) for s in range(2)]
    dataset = CropDataset(pairs, crop_size=128, augment=AugmentParams.off(), target_diameter_px=40)
    np.testing.assert_allclose(dataset.scales[REAL], [40 / size.median_diameter(lab) for _, lab in pairs])
    diameters = []
    for seed in range(6):
        image, labels = dataset.crop(REAL, seed % 2, np.random.default_rng(seed))
        assert image.shape == (128, 128, 3) and labels.shape == (128, 128) and labels.any()
        diameters.extend(size.equivalent_diameters(labels))
    assert 34 < np.median(diameters) < 46


def test_random_rescaling_spreads_the_diameter_for_preseg():
    pairs = [simulate.sample("fluorescence", 256, 20, 0.3, seed=0)]
    fixed = CropDataset(pairs, crop_size=192, augment=AugmentParams.off())
    jittered = CropDataset(pairs, crop_size=192, augment=AugmentParams.from_dict({"rescale": 1.0}))

    def spread(dataset):  # std of log2 of the crops' median diameters
        crops = [dataset.crop(REAL, 0, np.random.default_rng(s))[1] for s in range(16)]
        return np.std(np.log2([size.median_diameter(c) or 40.0 for c in crops]))

    assert spread(fixed) < 0.2 < 0.3 < spread(jittered)


def test_small_images_are_padded_with_their_median():
    image, labels = simulate.sample("brightfield", 48, 30, 0.3, seed=1)
    dataset = CropDataset(
        [(image, labels)], crop_size=128, augment=AugmentParams.off(), target_diameter_px=30
    )
    crop, crop_labels = dataset.crop(REAL, 0, np.random.default_rng(0))
    assert crop.shape == (128, 128, 3)
    border = np.concatenate([crop[0], crop[-1], crop[:, 0], crop[:, -1]])
    median = np.median(image.reshape(-1, 3), axis=0)
    assert (np.abs(border.astype(int) - median).max(axis=1) <= 1).mean() > 0.5  # padding sits on some border
    assert (crop_labels > 0).sum() >= 0.8 * (labels > 0).sum()


def test_empty_crops_are_drawn_again_but_not_forever():
    labels = np.zeros((600, 600), np.int32)
    labels[280:320, 280:320] = 1  # one object in a big empty image: most crops miss it
    image = np.where(labels[..., None] > 0, 200, 10).astype(np.uint8).repeat(3, axis=2)
    patient = CropDataset([(image, labels)], crop_size=96, augment=AugmentParams.off(), max_crop_tries=200)
    assert all(patient.crop(REAL, 0, np.random.default_rng(s))[1].any() for s in range(10))
    hasty = CropDataset([(image, labels)], crop_size=96, augment=AugmentParams.off(), max_crop_tries=1)
    found = [hasty.crop(REAL, 0, np.random.default_rng(s))[1].any() for s in range(10)]
    assert not all(found)  # one try is not enough, and it still returns


def test_items_are_deterministic_for_their_key():
    pairs = [simulate.sample("he", 128, 16, seed=s) for s in range(2)]
    dataset = CropDataset(pairs, synthetic_pairs=pairs[:1], crop_size=96, augment=AugmentParams())
    a, b = dataset[(REAL, 1, 42)], dataset[(REAL, 1, 42)]
    assert a[0].shape == (3, 96, 96) and a[0].dtype.is_floating_point and float(a[0].max()) <= 1.0
    assert bool((a[0] == b[0]).all()) and bool((a[1]["masks"] == b[1]["masks"]).all())
    assert not bool((dataset[(REAL, 1, 43)][0] == a[0]).all())
    assert dataset[(SYNTHETIC, 0, 1)][1]["boxes"].shape[0] > 0


@pytest.mark.parametrize("share,batch,expected", [(0.5, 4, 2), (0.25, 4, 1), (0.0, 3, 0), (1.0, 2, 2)])
def test_whole_synthetic_share_holds_in_every_batch(share, batch, expected):
    sampler = MixedBatchSampler(10, 5, batch, 50, share, seed=0)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 50
    for keys in batches:
        assert len(keys) == batch
        assert sum(source == SYNTHETIC for source, _, _ in keys) == expected
        assert all(index < (5 if source == SYNTHETIC else 10) for source, index, _ in keys)


def test_fractional_share_holds_on_average_and_streams_are_reproducible():
    sampler = MixedBatchSampler(10, 5, 2, 2000, 0.3, seed=1)
    first = list(sampler)
    counts = [sum(s == SYNTHETIC for s, _, _ in keys) for keys in first]
    assert set(counts) <= {0, 1} and abs(np.mean(counts) / 2 - 0.3) < 0.03
    assert first == list(MixedBatchSampler(10, 5, 2, 2000, 0.3, seed=1))
    second = list(sampler)  # the next epoch draws new items without anyone calling set_epoch
    assert second != first
    sampler.set_epoch(0)
    assert list(sampler) == first
    other_rank = MixedBatchSampler(10, 5, 2, 2000, 0.3, seed=1, rank=1, world_size=2)
    assert list(other_rank) != first


def test_bad_shares_are_user_errors():
    with pytest.raises(UserError, match="synthetic_share"):
        MixedBatchSampler(10, 0, 2, 5, 0.5)
    with pytest.raises(UserError, match="synthetic_share"):
        MixedBatchSampler(10, 3, 2, 5, 1.5)
    with pytest.raises(UserError, match="annotated"):
        CropDataset([], crop_size=64)


def test_validation_images_are_whole_and_rescaled_with_their_labels(tmp_path):
    pair = simulate.sample("fluorescence", (100, 140), 20, 0.3, seed=3)
    ((image, labels),) = load_pairs([pair])
    dataset = ValidationDataset([(image, labels)], target_diameter_px=40)
    tensor, scaled_labels = dataset[0]
    scale = 40 / size.median_diameter(labels)
    assert tensor.shape == (3, round(100 * scale), round(140 * scale))
    assert scaled_labels.shape == (round(100 * scale), round(140 * scale))
    assert set(np.unique(scaled_labels)) == set(np.unique(labels))
