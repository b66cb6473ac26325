"""How real do a style's synthetic images look? Two measures, beyond the paper's manual expert test.

- Classifier two-sample test (C2ST): a small CNN learns to tell real patches from synthetic patches of one
  style; its accuracy on held-out patches is the score. 0.5 = indistinguishable, 1.0 = always told apart.
  Patches are split by source image (no image has patches in both training and test; with ``paired``, a real
  image and the synthetic one rendered from its mask are held out together), and each split is balanced
  between the two classes, so chance is 0.5. A one-sided binomial p-value
  says whether the accuracy is above chance.
- Per-channel intensity distance: the 1-d Wasserstein (earth mover's) distance between the real and the
  synthetic intensity distributions of each RGB channel, in grey levels (0..255): the mean shift of
  intensity mass needed to turn one histogram into the other.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from scipy import stats
from torch import nn

from stylegen.data import images_to_tensor, pad_bottom_right, tile_origins

GREY_LEVELS = np.arange(256, dtype=np.float64)


def cut_patches(images: Sequence[np.ndarray], patch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Grid patches of every uint8 (H, W, 3) image (last row/column aligned to the edge; images smaller than
    a patch are reflect-padded). Returns patches uint8 (M, p, p, 3) and the source image index of each (M,)."""
    patches, sources = [], []
    for index, image in enumerate(images):
        image = pad_bottom_right(np.asarray(image), patch_size, patch_size)
        for y in tile_origins(image.shape[0], patch_size):
            for x in tile_origins(image.shape[1], patch_size):
                patches.append(image[y : y + patch_size, x : x + patch_size])
                sources.append(index)
    return np.stack(patches), np.asarray(sources)


def choose_test_sources(n_sources: int, test_fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Indices of the source images whose patches form the test split (at least one, never all)."""
    if n_sources < 2:
        raise ValueError("the two-sample test needs at least two images per set (whole images are held out)")
    n_test = min(max(int(round(test_fraction * n_sources)), 1), n_sources - 1)
    return rng.choice(n_sources, size=n_test, replace=False)


def balance(
    real_index: np.ndarray, fake_index: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Subsample the larger of two index sets to the size of the smaller."""
    n = min(len(real_index), len(fake_index))
    return rng.choice(real_index, n, replace=False), rng.choice(fake_index, n, replace=False)


def patch_classifier() -> nn.Module:
    """A small CNN (about 24k parameters): three stride-2 convolutions, global average pooling, one logit."""
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, 2, 1),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, 2, 1),
        nn.ReLU(),
        nn.Conv2d(32, 64, 3, 2, 1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(64, 1),
    )


def classifier_two_sample_test(
    real_images: Sequence[np.ndarray],
    fake_images: Sequence[np.ndarray],
    patch_size: int = 64,
    test_fraction: float = 0.5,
    epochs: int = 30,
    batch_size: int = 32,
    lr: float = 3e-3,
    seed: int = 0,
    paired: bool = False,
) -> dict:
    """Held-out accuracy of a CNN trained to tell real from synthetic patches.

    real_images, fake_images: uint8 (H, W, 3) images (any sizes), at least two of each. paired: fake image i
    was rendered from the mask of real image i, so pairs are held out together; the classifier then cannot
    score by telling which kinds of image happen to be in the test split (with a heterogeneous set and few
    images, an unpaired test is biased below 0.5 for the same reason). Returns a dict: accuracy (0.5 =
    indistinguishable), p_value (one-sided binomial test against 0.5), n_train and n_test (patches, both
    classes together).
    """
    rng = np.random.default_rng(seed)
    real, real_sources = cut_patches(real_images, patch_size)
    fake, fake_sources = cut_patches(fake_images, patch_size)
    if paired and len(real_images) != len(fake_images):
        raise ValueError(
            f"paired=True needs as many synthetic as real images, got {len(fake_images)} and {len(real_images)}"
        )
    real_held = choose_test_sources(len(real_images), test_fraction, rng)
    fake_held = real_held if paired else choose_test_sources(len(fake_images), test_fraction, rng)
    real_test, fake_test = np.isin(real_sources, real_held), np.isin(fake_sources, fake_held)
    train_real, train_fake = balance(np.flatnonzero(~real_test), np.flatnonzero(~fake_test), rng)
    test_real, test_fake = balance(np.flatnonzero(real_test), np.flatnonzero(fake_test), rng)
    if min(len(train_real), len(test_real)) == 0:
        raise ValueError(
            "too few patches for the two-sample test; give more or larger images, or a smaller patch_size"
        )

    def stacked(real_index: np.ndarray, fake_index: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        x = images_to_tensor(np.concatenate([real[real_index], fake[fake_index]]))
        y = torch.cat([torch.ones(len(real_index)), torch.zeros(len(fake_index))])
        return x, y

    x_train, y_train = stacked(train_real, train_fake)
    x_test, y_test = stacked(test_real, test_fake)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        classifier = patch_classifier()
        optimizer = torch.optim.Adam(classifier.parameters(), lr=lr)
        for _ in range(epochs):
            order = torch.randperm(len(x_train))
            for start in range(0, len(order), batch_size):
                batch = order[start : start + batch_size]
                loss = nn.functional.binary_cross_entropy_with_logits(
                    classifier(x_train[batch]).squeeze(1), y_train[batch]
                )
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        with torch.inference_mode():
            predicted = torch.cat(
                [classifier(x_test[i : i + 256]).squeeze(1) > 0 for i in range(0, len(x_test), 256)]
            )
    correct = int((predicted.float() == y_test).sum())
    return {
        "accuracy": correct / len(y_test),
        "p_value": float(stats.binomtest(correct, len(y_test), 0.5, alternative="greater").pvalue),
        "n_train": len(y_train),
        "n_test": len(y_test),
    }


def channel_histograms(images: Sequence[np.ndarray]) -> np.ndarray:
    """Pixel counts per grey level for each channel of uint8 (H, W, 3) images: int64 (3, 256)."""
    return np.stack(
        [
            sum(np.bincount(np.asarray(image)[..., c].ravel(), minlength=256) for image in images)
            for c in range(3)
        ]
    )


def channel_wasserstein(real_images: Sequence[np.ndarray], fake_images: Sequence[np.ndarray]) -> list[float]:
    """1-d Wasserstein distance between real and synthetic intensities, per RGB channel, in grey levels."""
    real, fake = channel_histograms(real_images), channel_histograms(fake_images)
    return [float(stats.wasserstein_distance(GREY_LEVELS, GREY_LEVELS, real[c], fake[c])) for c in range(3)]


def realism_report(
    real_images: Sequence[np.ndarray], fake_images: Sequence[np.ndarray], **c2st: object
) -> dict:
    """Both measures for one style: {c2st: classifier_two_sample_test(...), wasserstein_rgb: [r, g, b],
    wasserstein_mean}. Extra keyword arguments go to ``classifier_two_sample_test``."""
    distances = channel_wasserstein(real_images, fake_images)
    return {
        "c2st": classifier_two_sample_test(real_images, fake_images, **c2st),
        "wasserstein_rgb": distances,
        "wasserstein_mean": float(np.mean(distances)),
    }
