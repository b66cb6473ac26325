"""Small image and label files for the nucleaizer.io tests, written independently of nucleaizer.io."""

from __future__ import annotations

from io import BytesIO
from pathlib import Path

import cv2
import numpy as np
import tifffile

H, W = 24, 32


def rgb8(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)


def write_cv2(path: Path, array: np.ndarray) -> Path:
    """Write with OpenCV directly (channels in BGR order), independent of io.write_image."""
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), array)
    return path


def small_labels(n: int = 3, dtype=np.int32) -> np.ndarray:
    labels = np.zeros((H, W), dtype)
    for k in range(n):
        labels[2 + 6 * k : 6 + 6 * k, 3 : 9 + k] = k + 1
    return labels


def valid_bytes(suffix: str) -> bytes:
    """A readable image file's bytes in the format of ``suffix``."""
    if suffix == ".tif":
        buffer = BytesIO()
        tifffile.imwrite(buffer, rgb8())
        return buffer.getvalue()
    ok, encoded = cv2.imencode(suffix, rgb8())
    assert ok
    return encoded.tobytes()
