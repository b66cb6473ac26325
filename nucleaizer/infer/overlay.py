"""Pictures and measurements of a segmentation: colour overlay and the per-nucleus table."""

from __future__ import annotations

import cv2
import numpy as np
import pandas as pd
from skimage.measure import regionprops_table

NUCLEI_COLUMNS = [
    "image",
    "id",
    "area_px",
    "centroid_y",
    "centroid_x",
    "bbox_y0",
    "bbox_x0",
    "bbox_y1",
    "bbox_x1",
    "equivalent_diameter_px",
    "mean_intensity",
    "score",
    "tta_agreement",
]


def label_colours(n: int, seed: int = 0) -> np.ndarray:
    """uint8 (n + 1, 3) bright random colours for ids 0..n (id 0, the background, is black); seeded."""
    rng = np.random.default_rng(seed)
    colours = rng.integers(64, 256, size=(n + 1, 3)).astype(np.uint8)
    colours[0] = 0
    return colours


def overlay(image: np.ndarray, labels: np.ndarray, alpha: float = 0.35, seed: int = 0) -> np.ndarray:
    """uint8 (H, W, 3): the image with each nucleus tinted in its own colour and outlined in it.

    image: uint8 (H, W, 3); labels: int (H, W), ids 0..N.
    """
    colours = label_colours(int(labels.max()) if labels.size else 0, seed)[labels]
    # 8-bit arithmetic throughout: a float copy of a 10,000 px image alone would take 1.2 GB
    tinted = cv2.addWeighted(np.ascontiguousarray(image), 1 - alpha, colours, alpha, 0)
    result = np.where((labels > 0)[..., None], tinted, image)
    edges = inner_boundaries(labels)
    result[edges] = colours[edges]
    return result


def inner_boundaries(labels: np.ndarray) -> np.ndarray:
    """bool (H, W): object pixels with an edge neighbour of another id (skimage's find_boundaries, mode inner)."""
    edges = np.zeros(labels.shape, dtype=bool)
    for axis in (0, 1):
        differs = np.diff(labels, axis=axis) != 0
        ahead = [slice(None)] * 2
        behind = [slice(None)] * 2
        ahead[axis], behind[axis] = slice(1, None), slice(None, -1)
        edges[tuple(ahead)] |= differs
        edges[tuple(behind)] |= differs
    return edges & (labels > 0)


def nuclei_table(
    name: str, labels: np.ndarray, image: np.ndarray, score: np.ndarray, agreement: np.ndarray
) -> pd.DataFrame:
    """One row per nucleus: image name, id, area, centroid, bounding box (end-exclusive), equivalent diameter
    and mean intensity (mean over the RGB channels of the 8-bit image, 0..255), all in original pixels, and
    its confidence: ``score[i]`` / ``agreement[i]`` of id i + 1 (inference.Segmentation)."""
    if not labels.any():
        return pd.DataFrame(columns=NUCLEI_COLUMNS)
    grey = image.mean(axis=2, dtype=np.float32) if image.ndim == 3 else image
    props = regionprops_table(
        labels,
        intensity_image=grey,
        properties=("label", "area", "centroid", "bbox", "equivalent_diameter_area", "intensity_mean"),
    )
    table = pd.DataFrame(
        {
            "image": name,
            "id": props["label"],
            "area_px": props["area"].astype(np.int64),
            "centroid_y": props["centroid-0"],
            "centroid_x": props["centroid-1"],
            "bbox_y0": props["bbox-0"],
            "bbox_x0": props["bbox-1"],
            "bbox_y1": props["bbox-2"],
            "bbox_x1": props["bbox-3"],
            "equivalent_diameter_px": props["equivalent_diameter_area"],
            "mean_intensity": props["intensity_mean"],
            "score": np.asarray(score, np.float64)[props["label"] - 1],
            "tta_agreement": np.asarray(agreement, np.float64)[props["label"] - 1],
        }
    )
    return table[NUCLEI_COLUMNS]
