"""A montage that shows generated masks beside real ones of a style, for reports and W&B."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from mask_db.features import check_labels

_MARGIN = 96  # left margin for the row titles, px


def colour_labels(labels: np.ndarray) -> np.ndarray:
    """Label image (integer (H, W)) as RGB uint8 (H, W, 3): one fixed bright colour per id (golden-ratio
    hues, so neighbours differ), black background, each object's outline drawn darker."""
    labels = check_labels(labels)
    ids = np.arange(int(labels.max()) + 1)
    hue = (ids * 0.618034) % 1.0
    hsv = np.stack([hue * 180, np.full(ids.size, 200), np.full(ids.size, 230)], axis=1).astype(np.uint8)
    palette = cv2.cvtColor(hsv[None], cv2.COLOR_HSV2RGB)[0]
    palette[0] = 0
    rgb = palette[labels]
    edge = np.zeros(labels.shape, dtype=bool)
    edge[:, 1:] |= labels[:, 1:] != labels[:, :-1]
    edge[1:, :] |= labels[1:, :] != labels[:-1, :]
    rgb[edge & (labels > 0)] //= 2
    return rgb


def _tile(labels: np.ndarray, size: int) -> np.ndarray:
    """One label image coloured and fitted into a size x size tile (nearest neighbour, aspect kept)."""
    rgb = colour_labels(labels)
    scale = size / max(rgb.shape[:2])
    height, width = max(1, round(rgb.shape[0] * scale)), max(1, round(rgb.shape[1] * scale))
    tile = np.full((size, size, 3), 40, dtype=np.uint8)
    tile[:height, :width] = cv2.resize(rgb, (width, height), interpolation=cv2.INTER_NEAREST)
    return tile


def montage(
    real: Sequence[np.ndarray], generated: Sequence[np.ndarray], n: int = 4, tile: int = 256
) -> np.ndarray:
    """RGB uint8 image (2 * tile + gaps, margin + n * tile + gaps, 3): the first ``n`` real label images on
    the top row, the first ``n`` generated ones below, titled "real" and "generated". Raises ValueError
    when either list is empty."""
    if not real or not generated:
        raise ValueError("a montage needs at least one real and one generated label image")
    gap = 4
    columns = min(n, max(len(real), len(generated)))
    out = np.full((2 * tile + 3 * gap, _MARGIN + columns * (tile + gap) + gap, 3), 255, dtype=np.uint8)
    for row, (title, images) in enumerate((("real", real), ("generated", generated))):
        y = gap + row * (tile + gap)
        cv2.putText(out, title, (8, y + tile // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 1, cv2.LINE_AA)
        for column, labels in enumerate(images[:columns]):
            x = _MARGIN + gap + column * (tile + gap)
            out[y : y + tile, x : x + tile] = _tile(labels, tile)
    return out
