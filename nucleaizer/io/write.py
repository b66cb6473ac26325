"""Writing: every file through an atomic rename (no half-written file under its final name), label images
as PNG, TIFF or OME-TIFF, images and tables."""

from __future__ import annotations

import csv
import logging
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np
import tifffile

from nucleaizer.errors import UserError
from nucleaizer.io.arrays import (
    IMAGE_SUFFIXES,
    LABEL_SUFFIXES,
    MAX_UINT16_LABEL,
    OME_SUFFIX,
    TIFF_SUFFIXES,
    as_label_array,
)

log = logging.getLogger(__name__)


@contextmanager
def atomic_write(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path in the folder of `path`; on success rename it onto `path`, else delete it.

    The temporary name keeps the suffix of `path`, so writers that pick a format from it still work.
    Readers never see a half-written file, and a crash leaves the old file (if any) in place.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A unique name rather than mkstemp: mkstemp creates mode 0600, which the rename would keep.
    temporary = path.with_name(f".{path.stem}.{uuid.uuid4().hex[:12]}.tmp{path.suffix}")
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def _encode(path: Path, array: np.ndarray) -> None:
    """Write `array` (channels in OpenCV order) to `path` in the format its suffix names."""
    suffix = path.suffix.lower()
    if suffix in TIFF_SUFFIXES:
        tifffile.imwrite(path, array, compression="zlib")
        return
    ok, encoded = cv2.imencode(suffix, array)
    if not ok:
        raise UserError(f"{path}: cannot encode as {suffix}")
    path.write_bytes(encoded.tobytes())


def write_table(path: str | Path, table) -> Path:
    """Write a pandas DataFrame as CSV (no index), atomically."""
    path = Path(path)
    with atomic_write(path) as temporary:
        table.to_csv(temporary, index=False)
    return path


def write_csv(path: str | Path, rows: list[dict]) -> Path:
    """Write a list of flat dictionaries (one per row, same keys) as CSV, atomically."""
    path = Path(path)
    with atomic_write(path) as temporary, temporary.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_image(path: str | Path, image: np.ndarray) -> Path:
    """Write a `np.uint8 (H, W, 3)` RGB (or `(H, W)` grey) image atomically as PNG/TIFF/JPEG/BMP."""
    path = Path(path)
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise UserError(f"{path}: unsupported image format; use one of {', '.join(sorted(IMAGE_SUFFIXES))}")
    image = np.asarray(image)
    if image.dtype != np.uint8 or not (image.ndim == 2 or (image.ndim == 3 and image.shape[-1] == 3)):
        raise ValueError(f"write_image expects uint8 (H, W, 3) or (H, W), got {image.dtype} {image.shape}")
    if path.suffix.lower() not in TIFF_SUFFIXES and image.ndim == 3:
        image = image[..., ::-1]  # RGB -> BGR for OpenCV
    with atomic_write(path) as temporary:
        _encode(temporary, np.ascontiguousarray(image))
    return path


def write_labels(
    path: str | Path, labels: np.ndarray, pixel_size_um: tuple[float, float] | None = None
) -> Path:
    """Write an integer `(H, W)` label image atomically; returns the path written.

    uint16 PNG or TIFF. Ids above 65,535 need 32 bits: a TIFF is then written as uint32, and a PNG
    request becomes a `.tif` beside it (with a warning), since PNG holds at most 16 bits. A path ending in
    `.ome.tif` is written as OME-TIFF, with the physical pixel size (y, x) in micrometres when given.
    """
    path = Path(path)
    if path.suffix.lower() not in LABEL_SUFFIXES:
        raise UserError(f"{path}: unsupported label format; use one of {', '.join(sorted(LABEL_SUFFIXES))}")
    labels = as_label_array(np.asarray(labels), str(path))
    if labels.size and labels.max() > MAX_UINT16_LABEL:
        if path.suffix.lower() not in TIFF_SUFFIXES:
            log.warning("%s: ids above %d do not fit a PNG; writing a 32-bit TIFF", path, MAX_UINT16_LABEL)
            path = path.with_suffix(".tif")
        array = labels.astype(np.uint32)
    else:
        array = labels.astype(np.uint16)
    if path.name.lower().endswith(OME_SUFFIX):
        metadata = {"axes": "YX"}
        if pixel_size_um is not None:
            metadata.update(
                PhysicalSizeY=float(pixel_size_um[0]),
                PhysicalSizeYUnit="µm",
                PhysicalSizeX=float(pixel_size_um[1]),
                PhysicalSizeXUnit="µm",
            )
        with atomic_write(path) as temporary:
            tifffile.imwrite(temporary, array, ome=True, metadata=metadata, compression="zlib")
        return path
    with atomic_write(path) as temporary:
        _encode(temporary, array)
    return path
