"""Torch data sets for the segmenter: annotated pairs brought to the target nucleus diameter, cropped, augmented.

Training items are random ``crop_size`` crops of images rescaled so their median nucleus diameter (from the
labels) is ``target_diameter_px``; images smaller than the crop are padded with their per-channel median.
Crops without any object are drawn again (a bounded number of times). Synthetic pairs are mixed into every
batch at a configured share by :class:`MixedBatchSampler`. An item is fully determined by its key
``(source, index, seed)``, so a run is reproducible for a seed whatever the number of workers.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import torch
from scipy import ndimage
from torch.utils.data import Dataset, Sampler

from nucleaizer import size
from nucleaizer.augment import AugmentParams, augment_pair, channel_median
from nucleaizer.errors import UserError

log = logging.getLogger(__name__)

Pair = tuple[np.ndarray, np.ndarray]
REAL, SYNTHETIC = 0, 1


def load_pairs(samples: Iterable, on_bad_file: str = "skip") -> list[Pair]:
    """(image uint8 (H, W, 3), labels int32 (H, W)) pairs from in-memory pairs or ``nucleaizer.io`` Samples.

    Samples without labels are an error here (a training set must be annotated).
    """
    samples = list(samples)
    if not samples:
        return []
    if isinstance(samples[0], tuple):
        return [
            (np.asarray(image), np.asarray(labels).astype(np.int32, copy=False)) for image, labels in samples
        ]
    from nucleaizer.io import iter_samples

    pairs = []
    for sample, image, labels in iter_samples(samples, on_bad_file=on_bad_file):
        if labels is None:
            raise UserError(f"{sample.image_path}: a training image needs a label image")
        pairs.append((image, labels))
    return pairs


def image_to_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 (H, W, 3) -> float32 (3, H, W) in [0, 1], the Mask R-CNN input."""
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255.0)


def instance_targets(labels: np.ndarray) -> dict[str, torch.Tensor]:
    """Mask R-CNN targets of a label image: boxes float32 (N, 4) xyxy, labels int64 (N,) all 1, masks uint8 (N, H, W).

    Every object is kept (no cap on the count); ids need not be consecutive.
    """
    ids = np.unique(labels)
    ids = ids[ids > 0]
    slices = ndimage.find_objects(labels)
    boxes = np.array(
        [
            [slices[i - 1][1].start, slices[i - 1][0].start, slices[i - 1][1].stop, slices[i - 1][0].stop]
            for i in ids
        ],
        dtype=np.float32,
    ).reshape(-1, 4)
    masks = labels[None, :, :] == ids[:, None, None]
    return {
        "boxes": torch.from_numpy(boxes),
        "labels": torch.ones(len(ids), dtype=torch.int64),
        "masks": torch.from_numpy(masks.astype(np.uint8)),
    }


def base_scales(
    pairs: Sequence[Pair],
    target_diameter_px: float = 40,
    min_scale: float = 0.25,
    max_scale: float = 4.0,
    min_object_area_px: int = 16,
) -> np.ndarray:
    """Per pair the factor that brings its median nucleus diameter (from labels) to the target, float64 (N,).

    Images without usable objects take the median diameter of the others (docs/method.md section 1).
    """
    diameters = size.fill_with_dataset_median(
        [size.median_diameter(labels, min_area_px=min_object_area_px) for _, labels in pairs],
        target_diameter_px,
    )
    return np.array([size.scale_factor(d, target_diameter_px, min_scale, max_scale) for d in diameters])


def _pad_to(image: np.ndarray, labels: np.ndarray, side: int, rng: np.random.Generator) -> Pair:
    """Pad both to at least side x side at a random offset: image with its channel median, labels with 0."""
    height, width = labels.shape
    pad_y, pad_x = max(side - height, 0), max(side - width, 0)
    if pad_y == 0 and pad_x == 0:
        return image, labels
    top, left = int(rng.integers(0, pad_y + 1)), int(rng.integers(0, pad_x + 1))
    padded = np.empty((height + pad_y, width + pad_x, 3), dtype=image.dtype)
    padded[:] = channel_median(image)
    padded[top : top + height, left : left + width] = image
    padded_labels = np.zeros((height + pad_y, width + pad_x), dtype=labels.dtype)
    padded_labels[top : top + height, left : left + width] = labels
    return padded, padded_labels


class CropDataset(Dataset):
    """Random crops of annotated pairs at the target diameter, augmented; items are keyed by (source, index, seed).

    real_pairs / synthetic_pairs: (image uint8 (H, W, 3), labels int (H, W)). An item is
    ``(image float32 (3, crop, crop) in [0, 1], target dict of instance_targets)``.
    """

    def __init__(
        self,
        real_pairs: Sequence[Pair],
        synthetic_pairs: Sequence[Pair] = (),
        crop_size: int = 256,
        augment: AugmentParams | None = None,
        target_diameter_px: float = 40,
        min_scale: float = 0.25,
        max_scale: float = 4.0,
        min_object_area_px: int = 16,
        max_crop_tries: int = 10,
    ):
        if not real_pairs and not synthetic_pairs:
            raise UserError("no annotated training images: give at least one folder with images and labels")
        self.pairs = (list(real_pairs), list(synthetic_pairs))
        self.scales = tuple(
            base_scales(p, target_diameter_px, min_scale, max_scale, min_object_area_px) for p in self.pairs
        )
        self.crop_size = int(crop_size)
        self.augment = augment or AugmentParams.off()
        self.max_crop_tries = int(max_crop_tries)

    def __len__(self) -> int:
        return len(self.pairs[REAL]) + len(self.pairs[SYNTHETIC])

    def source_sizes(self) -> tuple[int, int]:
        """(number of real pairs, number of synthetic pairs)."""
        return len(self.pairs[REAL]), len(self.pairs[SYNTHETIC])

    def crop(self, source: int, index: int, rng: np.random.Generator) -> Pair:
        """One augmented crop_size x crop_size pair; retries crops without objects up to max_crop_tries times."""
        image, labels = self.pairs[source][index]
        synthetic = source == SYNTHETIC
        for attempt in range(max(self.max_crop_tries, 1)):
            last = attempt >= self.max_crop_tries - 1
            scale = self.scales[source][index]
            if self.augment.rescale > 0:
                scale *= 2.0 ** rng.uniform(-self.augment.rescale, self.augment.rescale)
            # cut the window in original pixels, then rescale only the window: cheap for large images
            side = math.ceil(self.crop_size / scale)
            window_image, window_labels = _pad_to(image, labels, side, rng)
            top = int(rng.integers(0, window_labels.shape[0] - side + 1))
            left = int(rng.integers(0, window_labels.shape[1] - side + 1))
            window_labels = window_labels[top : top + side, left : left + side]
            if not window_labels.any() and not last:
                continue
            window_image = window_image[top : top + side, left : left + side]
            # ceil above makes the rescaled window at least crop_size on each side
            scaled_image = size.rescale_image(window_image, scale)
            scaled_labels = size.rescale_labels(window_labels, scaled_image.shape[:2])
            crop_image = scaled_image[: self.crop_size, : self.crop_size]
            crop_labels = scaled_labels[: self.crop_size, : self.crop_size]
            crop_image, crop_labels = augment_pair(crop_image, crop_labels, self.augment, rng, synthetic)
            if crop_labels.any() or last:
                break
        if not crop_labels.any():
            log.debug(
                "no object in %d crops of %s pair %d; using an empty crop",
                self.max_crop_tries,
                "synthetic" if synthetic else "real",
                index,
            )
        return crop_image, crop_labels

    def __getitem__(self, key: tuple[int, int, int]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        source, index, seed = key
        crop_image, crop_labels = self.crop(source, index, np.random.default_rng(seed))
        return image_to_tensor(crop_image), instance_targets(crop_labels)


class MixedBatchSampler(Sampler[list[tuple[int, int, int]]]):
    """Batches of (source, index, seed) keys with a fixed share of synthetic pairs in every batch.

    Each batch holds ``synthetic_share * batch_size`` synthetic items, rounded up or down at random so the
    share holds on average when it is not a whole number of items; the rest are real. Items are drawn with
    replacement; ``batches_per_epoch`` batches per epoch and per process (DDP: give ``rank``/``world_size``,
    each process draws its own stream). Deterministic for (seed, epoch, rank); each pass over the sampler is
    the next epoch.
    """

    def __init__(
        self,
        n_real: int,
        n_synthetic: int,
        batch_size: int,
        batches_per_epoch: int,
        synthetic_share: float = 0.0,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ):
        if not 0.0 <= synthetic_share <= 1.0:
            raise UserError(f"segmenter.train.synthetic_share must be between 0 and 1, got {synthetic_share}")
        if synthetic_share > 0 and n_synthetic == 0:
            raise UserError("segmenter.train.synthetic_share > 0 but there are no synthetic pairs")
        if synthetic_share < 1 and n_real == 0:
            raise UserError(
                "no real annotated pairs: set segmenter.train.synthetic_share=1 or give annotated images"
            )
        self.n = (n_real, n_synthetic)
        self.batch_size = int(batch_size)
        self.batches_per_epoch = int(batches_per_epoch)
        self.synthetic_share = float(synthetic_share)
        self.seed, self.rank, self.world_size = int(seed), int(rank), int(world_size)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Start the next pass at ``epoch`` (passes otherwise count up by themselves)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.batches_per_epoch

    def __iter__(self) -> Iterator[list[tuple[int, int, int]]]:
        # every pass draws new crops: Lightning calls set_epoch on a batch sampler's inner sampler only, so
        # the sampler counts its own passes (the same seed still gives the same sequence of epochs)
        rng = np.random.default_rng([self.seed, self.epoch, self.rank])
        self.epoch += 1
        expected = self.synthetic_share * self.batch_size
        for _ in range(self.batches_per_epoch):
            n_synthetic = int(math.floor(expected)) + int(rng.random() < expected - math.floor(expected))
            sources = [SYNTHETIC] * n_synthetic + [REAL] * (self.batch_size - n_synthetic)
            yield [
                (source, int(rng.integers(self.n[source])), int(rng.integers(2**31))) for source in sources
            ]


class ValidationDataset(Dataset):
    """Whole annotated images rescaled to the target diameter (by their own labels: an oracle size).

    An item is ``(image float32 (3, H', W') in [0, 1], labels int32 (H', W') at the same scale)``.
    """

    def __init__(
        self,
        pairs: Sequence[Pair],
        target_diameter_px: float = 40,
        min_scale: float = 0.25,
        max_scale: float = 4.0,
        min_object_area_px: int = 16,
    ):
        self.pairs = list(pairs)
        self.scales = base_scales(self.pairs, target_diameter_px, min_scale, max_scale, min_object_area_px)

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, np.ndarray]:
        image, labels = self.pairs[index]
        scale = self.scales[index]
        scaled = size.rescale_image(image, scale)
        return image_to_tensor(scaled), size.rescale_labels(labels, scaled.shape[:2])


def collate_lists(batch: list) -> tuple[list, list]:
    """Detection models take lists of images and targets, not stacked tensors."""
    return tuple(list(items) for items in zip(*batch, strict=True))
