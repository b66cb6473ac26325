"""Training pairs for pix2pix: square (mask, image) tiles cut from images and binary masks, and the one place
where arrays become model tensors and back.

Tiling: each image is covered by a grid of ``tile_size`` tiles; the last row and column are aligned to the
image edge, so tiles overlap a little instead of running off the image. An image smaller than a tile in
either direction is first padded by reflection (the mask identically, so image and mask stay aligned).
Tiles whose mask is empty are skipped (a style model learns nothing about nuclei from them).

Optional ignore masks mark pixels that are left out of the losses (e.g. nuclei the masks missed); they are
tiled and flipped exactly like the masks.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset


def check_pairs(images: Sequence[np.ndarray], masks: Sequence[np.ndarray]) -> None:
    """Raise ValueError unless images are uint8 (H, W, 3) and masks (H, W) of the same size, one per image."""
    if len(images) != len(masks):
        raise ValueError(f"got {len(images)} images but {len(masks)} masks; give one binary mask per image")
    if not images:
        raise ValueError("no training images given; a style needs at least one image with its mask")
    for index, (image, mask) in enumerate(zip(images, masks, strict=True)):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"image {index}: expected uint8 (H, W, 3) RGB, got {image.dtype} {image.shape}")
        if mask.shape != image.shape[:2]:
            raise ValueError(f"mask {index}: shape {mask.shape} differs from its image {image.shape[:2]}")


def pad_bottom_right(array: np.ndarray, height: int, width: int) -> np.ndarray:
    """Reflect-pad the first two axes at the bottom and right to at least (height, width).

    numpy reflects repeatedly when the pad is longer than the array, so tiny inputs work too; an axis of
    length 1 cannot be reflected and is repeated instead.
    """
    pad_h, pad_w = max(height - array.shape[0], 0), max(width - array.shape[1], 0)
    if pad_h == 0 and pad_w == 0:
        return array
    widths = [(0, pad_h), (0, pad_w)] + [(0, 0)] * (array.ndim - 2)
    return np.pad(array, widths, mode="reflect" if min(array.shape[:2]) > 1 else "edge")


def tile_origins(length: int, tile_size: int) -> list[int]:
    """Start offsets covering ``length`` with tiles of ``tile_size``; the last tile ends at the edge."""
    if length <= tile_size:
        return [0]
    starts = list(range(0, length - tile_size + 1, tile_size))
    if starts[-1] + tile_size < length:
        starts.append(length - tile_size)
    return starts


def cut_tiles(
    images: Sequence[np.ndarray],
    masks: Sequence[np.ndarray],
    tile_size: int,
    skip_empty: bool = True,
    ignore: Sequence[np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Cut every (image, mask) pair into square tiles.

    images: uint8 (H, W, 3) each; masks: bool or integer (H, W) each (non-zero = nucleus); ignore: None or
    bool (H, W) per image, cut like its mask.
    Returns image tiles uint8 (N, tile, tile, 3), mask tiles bool (N, tile, tile) and ignore tiles bool
    (N, tile, tile) or None; with ``skip_empty``, tiles without any nucleus pixel are left out.
    """
    check_pairs(images, masks)
    if ignore is not None:
        check_pairs(images, ignore)
    image_tiles, mask_tiles, ignore_tiles = [], [], []
    for index, (image, mask) in enumerate(zip(images, masks, strict=True)):
        image = pad_bottom_right(image, tile_size, tile_size)
        mask = pad_bottom_right(np.asarray(mask) != 0, tile_size, tile_size)
        left_out = (
            None
            if ignore is None
            else pad_bottom_right(np.asarray(ignore[index], bool), tile_size, tile_size)
        )
        for y in tile_origins(image.shape[0], tile_size):
            for x in tile_origins(image.shape[1], tile_size):
                window = (slice(y, y + tile_size), slice(x, x + tile_size))
                if skip_empty and not mask[window].any():
                    continue
                image_tiles.append(image[window])
                mask_tiles.append(mask[window])
                if left_out is not None:
                    ignore_tiles.append(left_out[window])
    if not image_tiles:
        empty = np.zeros((0, tile_size, tile_size), bool)
        return np.zeros((0, tile_size, tile_size, 3), np.uint8), empty, None if ignore is None else empty
    return np.stack(image_tiles), np.stack(mask_tiles), None if ignore is None else np.stack(ignore_tiles)


def images_to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> float32 (N, 3, H, W) in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def masks_to_tensor(masks: np.ndarray) -> torch.Tensor:
    """bool (N, H, W) -> float32 (N, 1, H, W) with -1 background, +1 nucleus."""
    return torch.from_numpy(np.ascontiguousarray(masks, dtype=bool)).unsqueeze(1).float().mul(2.0).sub(1.0)


def tensor_to_images(tensor: torch.Tensor) -> np.ndarray:
    """float (N, 3, H, W) in [-1, 1] -> uint8 (N, H, W, 3), rounded and clipped."""
    scaled = (tensor.detach().float().clamp(-1, 1) + 1.0) * 127.5
    return scaled.round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


class TileDataset(Dataset):
    """(mask, image) training pairs from pre-cut tiles, with random horizontal and vertical flips.

    Tiles stay uint8/bool in memory (a quarter of float32) and are converted one at a time. Items are
    (mask float32 (1, T, T), image float32 (3, T, T)), both in [-1, 1]; with ignore tiles, a third item
    ``keep`` float32 (1, T, T): 0 where a pixel is left out of the losses, 1 elsewhere. Flips draw from torch's
    global generator, which Lightning seeds (also in workers), so a seed fixes them.
    """

    def __init__(
        self,
        image_tiles: np.ndarray,
        mask_tiles: np.ndarray,
        flip: bool = True,
        ignore_tiles: np.ndarray | None = None,
    ) -> None:
        if len(image_tiles) == 0:
            raise ValueError("no tile contains a nucleus; check that the masks are not empty")
        self.images = image_tiles
        self.masks = mask_tiles
        self.ignore = ignore_tiles
        self.flip = flip

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, ...]:
        item = [
            masks_to_tensor(self.masks[index : index + 1])[0],
            images_to_tensor(self.images[index : index + 1])[0],
        ]
        if self.ignore is not None:
            item.append(torch.from_numpy(~self.ignore[index]).unsqueeze(0).float())
        if self.flip:
            flips = torch.rand(2) < 0.5
            dims = [dim for dim, do in zip((1, 2), flips.tolist(), strict=True) if do]
            if dims:
                item = [tensor.flip(dims) for tensor in item]
        return tuple(item)
