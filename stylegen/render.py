"""Render binary masks of any size into images of a style with a trained generator.

The generator is fully convolutional, but it saw ``tile_size`` tiles in training; each mask is padded by
reflection at the bottom and right to a multiple of ``tile_size`` (the training context; always a multiple
of 2**depth), rendered, and cropped back. Masks that pad to the same shape are rendered together in batches.
Rendering is deterministic: dropout is off, normalisation uses per-image statistics, and a generator with
noise channels gets, per mask, noise seeded by ``seed`` and the mask's own pixels (the same mask renders the
same in any batch, in any position).
"""

from __future__ import annotations

import contextlib
import logging
import zlib
from collections import defaultdict
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from stylegen.data import masks_to_tensor, pad_bottom_right, tensor_to_images

log = logging.getLogger(__name__)


def default_device() -> torch.device:
    """The first GPU when there is one, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def padded_size(length: int, multiple: int) -> int:
    """Smallest multiple of ``multiple`` that is >= length."""
    return -(-length // multiple) * multiple


def render_masks(
    model: nn.Module,
    masks: Sequence[np.ndarray] | np.ndarray,
    batch_size: int = 8,
    device: str | torch.device | None = None,
    pad_multiple: int | None = None,
    bf16: bool = True,
    seed: int = 0,
) -> list[np.ndarray]:
    """Render binary masks as RGB images of the model's style.

    model: a ``Pix2Pix`` (its generator and tile size are used) or a bare ``UnetGenerator``.
    masks: bool or integer (H, W) arrays (non-zero = nucleus), sizes may differ; or one (N, H, W) array.
    pad_multiple: pad to a multiple of this; default the model's tile size (2**depth for a bare generator).
    device: default the first GPU when there is one, else CPU; the generator is moved there and left in eval
    mode. bf16: on a GPU that supports it, run under bfloat16 autocast. seed: of the generator's input noise.
    Returns one uint8 (H, W, 3) image per mask, in order.
    """
    generator = getattr(model, "net_g", model)
    multiple = pad_multiple or getattr(model, "tile_size", None) or generator.multiple
    if multiple % generator.multiple:
        raise ValueError(f"pad_multiple {multiple} must be a multiple of 2**depth = {generator.multiple}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    device = torch.device(device) if device is not None else default_device()
    generator.to(device).eval()
    use_bf16 = bf16 and device.type == "cuda" and torch.cuda.is_bf16_supported()
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if use_bf16 else contextlib.nullcontext()
    noise_channels = getattr(generator, "noise_channels", 0)

    masks = [np.asarray(m) != 0 for m in masks]
    groups: dict[tuple[int, int], list[int]] = defaultdict(list)
    for index, mask in enumerate(masks):
        if mask.ndim != 2 or mask.size == 0:
            raise ValueError(f"mask {index}: expected a non-empty (H, W) array, got shape {mask.shape}")
        groups[(padded_size(mask.shape[0], multiple), padded_size(mask.shape[1], multiple))].append(index)

    images: list[np.ndarray | None] = [None] * len(masks)
    with torch.inference_mode(), autocast:
        for (height, width), indices in groups.items():
            for start in range(0, len(indices), batch_size):
                chunk = indices[start : start + batch_size]
                batch = np.stack([pad_bottom_right(masks[i], height, width) for i in chunk])
                inputs = masks_to_tensor(batch).to(device)
                if noise_channels:
                    noise = torch.stack(
                        [mask_noise(masks[i], noise_channels, height, width, seed) for i in chunk]
                    )
                    rendered = tensor_to_images(generator(inputs, noise.to(device)))
                else:
                    rendered = tensor_to_images(generator(inputs))
                for i, image in zip(chunk, rendered, strict=True):
                    images[i] = image[: masks[i].shape[0], : masks[i].shape[1]]
    log.debug("rendered %d masks in %d shape groups on %s", len(masks), len(groups), device)
    return images  # type: ignore[return-value]


def mask_noise(mask: np.ndarray, channels: int, height: int, width: int, seed: int) -> torch.Tensor:
    """N(0, 1) noise float32 (channels, height, width) for one mask, seeded by ``seed`` and the mask's pixels."""
    # torch's CPU generator keeps 32 bits of a seed: the seed starts the checksum instead of being added to it
    digest = zlib.crc32(np.packbits(mask).tobytes(), zlib.crc32(repr((seed, mask.shape)).encode()))
    source = torch.Generator().manual_seed(digest)
    return torch.randn((channels, height, width), generator=source)


def sample_grid(
    real_images: np.ndarray, masks: np.ndarray, fake_images: np.ndarray, gap: int = 4
) -> np.ndarray:
    """One row per sample: real | mask | synthetic, white gaps between. Inputs (N, H, W, 3) uint8 and
    (N, H, W) bool of equal H, W; returns uint8 (N*H + (N-1)*gap, 3*W + 2*gap, 3)."""
    n, height, width = masks.shape
    mask_rgb = np.repeat((masks.astype(np.uint8) * 255)[..., None], 3, axis=3)
    grid = np.full((n * height + (n - 1) * gap, 3 * width + 2 * gap, 3), 255, np.uint8)
    for column, panel in enumerate((real_images, mask_rgb, fake_images)):
        x = column * (width + gap)
        for row in range(n):
            y = row * (height + gap)
            grid[y : y + height, x : x + width] = panel[row]
    return grid
