"""Image arrays to 8-bit RGB: percentile stretch of deeper data, channel handling; the suffixes and
choices every reader shares."""

from __future__ import annotations

import logging

import numpy as np

from nucleaizer.errors import UserError

log = logging.getLogger(__name__)

TIFF_SUFFIXES = frozenset({".tif", ".tiff"})
OME_SUFFIX = ".ome.tif"
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp"}) | TIFF_SUFFIXES
LABEL_SUFFIXES = frozenset({".png"}) | TIFF_SUFFIXES
# Default percentiles of the intensity stretch for >8-bit and float images (docs/method.md section 0).
STRETCH_PERCENTILES = (0.5, 99.8)
MAX_UINT16_LABEL = np.iinfo(np.uint16).max
ON_BAD_FILE_CHOICES = ("skip", "fail")
MAX_CHANNELS = 4  # grey, grey + alpha, RGB, RGBA; an image with more channels is read as its first channel


def _channels_last(array: np.ndarray) -> np.ndarray:
    """(C, H, W) with C in 1..4 -> (H, W, C); TIFF stores planar RGB channel-first."""
    if array.ndim == 3 and array.shape[0] <= 4 < array.shape[-1]:
        return np.moveaxis(array, 0, -1)
    return array


STRETCH_SAMPLE = (
    4_000_000  # percentiles of larger images come from an evenly strided sample of this many values
)
STRETCH_CHUNK_ROWS = 256  # rows converted at a time: memory stays bounded for any image size


def _stretch_to_uint8(array: np.ndarray, percentiles: tuple[float, float]) -> np.ndarray:
    """Map the low..high percentile range of all finite values (all channels together) onto 0..255.

    Works row block by row block, so a 10,000 px 16-bit image needs no full-size float copy.
    """
    flat = array.reshape(-1)
    sample = flat[:: max(1, flat.size // STRETCH_SAMPLE)].astype(np.float64)
    sample = sample[np.isfinite(sample)]
    if not sample.size:
        return np.zeros(array.shape, dtype=np.uint8)
    low, high = np.percentile(sample, percentiles)
    if high <= low:  # nearly constant image: fall back to the full range so objects are not lost
        low, high = sample.min(), sample.max()
    if high <= low:
        return np.zeros(array.shape, dtype=np.uint8)
    result = np.empty(array.shape, dtype=np.uint8)
    for start in range(0, array.shape[0], STRETCH_CHUNK_ROWS):
        block = array[start : start + STRETCH_CHUNK_ROWS].astype(np.float64)
        block[~np.isfinite(block)] = low
        block -= low
        block *= 255.0 / (high - low)
        result[start : start + STRETCH_CHUNK_ROWS] = np.clip(np.rint(block), 0, 255)
    return result


def to_rgb8(array: np.ndarray, percentiles: tuple[float, float] = STRETCH_PERCENTILES) -> np.ndarray:
    """Convert an image array in memory to `np.uint8 (H, W, 3)` RGB.

    Accepts `(H, W)` grey, `(H, W, 1|2|3|4)` (grey, grey+alpha, RGB, RGBA; channels in RGB order) or
    channel-first `(C, H, W)`; dtype bool, any integer or float. uint8 is kept as is; every other dtype is
    stretched linearly between the `percentiles` of its values. Alpha is dropped.
    Raises `ValueError` for shapes that are not an image.
    """
    array = _channels_last(np.asarray(array))
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim == 3 and array.shape[-1] == 2:  # grey + alpha
        array = array[..., 0]
    if array.ndim == 3 and array.shape[-1] == 4:
        array = array[..., :3]
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[-1] == 3)) or min(array.shape[:2]) == 0:
        raise ValueError(f"not an image: array of shape {array.shape}")
    if array.dtype == np.bool_:
        array = array.astype(np.uint8) * 255
    elif array.dtype != np.uint8:
        if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
            raise ValueError(f"not an image: dtype {array.dtype}")
        array = _stretch_to_uint8(array, percentiles)
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    return np.ascontiguousarray(array)


def as_label_array(array: np.ndarray, source: str) -> np.ndarray:
    """Validate a label image and return it as `np.int32 (H, W)`."""
    if array.ndim == 3 and array.shape[-1] in (3, 4) and (array[..., :3] == array[..., :1]).all():
        array = array[..., 0]  # a label image saved as grey RGB
    if array.ndim != 2:
        raise UserError(f"{source}: a label image must be 2-D (H, W) integers, got shape {array.shape}")
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    if np.issubdtype(array.dtype, np.floating):
        if not np.array_equal(array, np.round(array)):
            raise UserError(f"{source}: a label image must hold integer ids, got non-integer floats")
    elif not np.issubdtype(array.dtype, np.integer):
        raise UserError(f"{source}: a label image must hold integer ids, got dtype {array.dtype}")
    if array.size and (array.min() < 0 or array.max() > np.iinfo(np.int32).max):
        raise UserError(f"{source}: label ids must lie in 0..{np.iinfo(np.int32).max}")
    return array.astype(np.int32)
