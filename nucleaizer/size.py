"""Nucleus size from label images and the rescaling rule of docs/method.md section 1.

Nuclei are brought to about ``target_diameter_px`` (40 px) across before training and prediction. The size
of an image is the median equivalent diameter (diameter of the circle with the object's area) of its
objects, ignoring objects that touch the image border and fragments below ``min_area_px``. The scale factor
is ``target / diameter`` clamped to ``[min_scale, max_scale]``; an image without usable objects falls back to
the median over the dataset (:func:`fill_with_dataset_median`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields

import cv2
import numpy as np

from nucleaizer.errors import UserError


def _border_ids(labels: np.ndarray) -> np.ndarray:
    """Ids (> 0) of the objects that touch the image border."""
    edge = np.concatenate([labels[0, :], labels[-1, :], labels[:, 0], labels[:, -1]])
    ids = np.unique(edge)
    return ids[ids > 0]


def equivalent_diameters(
    labels: np.ndarray, min_area_px: int = 16, exclude_border: bool = True
) -> np.ndarray:
    """Equivalent diameters (px, float64, shape (N,)) of the usable objects of a label image.

    labels: integer (H, W), 0 background. Objects smaller than ``min_area_px`` pixels are fragments and are
    left out; so are objects touching the border when ``exclude_border`` (their visible area understates
    their size). Order follows the object ids.
    """
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels must be 2-D (H, W), got shape {labels.shape}")
    if labels.size == 0 or labels.max() <= 0:
        return np.zeros(0, dtype=np.float64)
    areas = np.bincount(labels.ravel().astype(np.int64, copy=False))
    areas[0] = 0
    if exclude_border:
        areas[_border_ids(labels)] = 0
    usable = areas[(areas > 0) & (areas >= min_area_px)]
    return np.sqrt(4.0 * usable / np.pi)


def median_diameter(labels: np.ndarray, min_area_px: int = 16, exclude_border: bool = True) -> float | None:
    """Median equivalent diameter in px of the usable objects, or None when there is none."""
    diameters = equivalent_diameters(labels, min_area_px=min_area_px, exclude_border=exclude_border)
    return float(np.median(diameters)) if diameters.size else None


def estimated_diameter(
    labels: np.ndarray, min_area_px: int = 16, exclude_border: bool = True
) -> float | None:
    """Nucleus diameter (px) of a *predicted* segmentation: the area-weighted median equivalent diameter of its
    usable objects (the diameter that half of the segmented area lies in objects up to), or None.

    Over-segmentation breaks a nucleus into many fragments; counted one by one they pull a plain median down
    (gowt1_fluo: 10-20 px for 61 px nuclei, 6x too small), weighted by area they barely move it (41-46 px).
    Annotated labels keep the plain median (median_diameter), which is what training rescales by.
    """
    diameters = equivalent_diameters(labels, min_area_px=min_area_px, exclude_border=exclude_border)
    if not diameters.size:
        return None
    order = np.argsort(diameters)
    areas = np.cumsum(diameters[order] ** 2)
    return float(diameters[order][np.searchsorted(areas, areas[-1] / 2)])


def fill_with_dataset_median(diameters: Sequence[float | None], default_px: float) -> list[float]:
    """Replace the missing per-image diameters (None) by the median of the known ones.

    When no image of the dataset has a diameter, ``default_px`` is used (normally the target diameter, so
    those images are not rescaled at all).
    """
    known = [d for d in diameters if d is not None]
    fallback = float(np.median(known)) if known else float(default_px)
    return [fallback if d is None else float(d) for d in diameters]


def scale_factor(
    diameter_px: float, target_diameter_px: float = 40, min_scale: float = 0.25, max_scale: float = 4.0
) -> float:
    """Factor that brings nuclei of ``diameter_px`` to ``target_diameter_px``, clamped to the given range."""
    if diameter_px is None or not math.isfinite(diameter_px) or diameter_px <= 0:
        raise UserError(
            f"nucleus diameter must be a positive number of pixels, got {diameter_px!r} (key: diameter)"
        )
    if not 0 < min_scale <= max_scale:
        raise UserError(f"size clamps need 0 < min_scale <= max_scale, got {min_scale} and {max_scale}")
    return float(np.clip(target_diameter_px / diameter_px, min_scale, max_scale))


def scaled_shape(shape: tuple[int, ...], scale: float) -> tuple[int, int]:
    """(H, W) of an image of ``shape`` after rescaling by ``scale``; never below 1 px."""
    return max(1, round(shape[0] * scale)), max(1, round(shape[1] * scale))


def rescale_image(image: np.ndarray, scale: float) -> np.ndarray:
    """Image (H, W) or (H, W, C) resized by ``scale``: area averaging when shrinking, bilinear when enlarging.

    The dtype is kept. A scale of 1 returns the input itself.
    """
    height, width = scaled_shape(image.shape, scale)
    if (height, width) == image.shape[:2]:
        return image
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(image, (width, height), interpolation=interpolation)
    # cv2 drops a trailing channel axis of length 1
    return resized.reshape((height, width, *image.shape[2:]))


def rescale_labels(labels: np.ndarray, scale_or_shape: float | tuple[int, int]) -> np.ndarray:
    """Label image (H, W) resized by nearest neighbour, by a factor or to an exact (H, W) shape.

    Give the original shape on the way back so the labels line up pixel for pixel with the input image.
    Sampling uses pixel centres (as cv2 does), so a round trip keeps objects in place. The dtype is kept.
    """
    labels = np.asarray(labels)
    if isinstance(scale_or_shape, tuple):
        height, width = int(scale_or_shape[0]), int(scale_or_shape[1])
    else:
        height, width = scaled_shape(labels.shape, float(scale_or_shape))
    if (height, width) == labels.shape:
        return labels
    rows = np.minimum(
        ((np.arange(height) + 0.5) * labels.shape[0] / height).astype(np.int64), labels.shape[0] - 1
    )
    cols = np.minimum(
        ((np.arange(width) + 0.5) * labels.shape[1] / width).astype(np.int64), labels.shape[1] - 1
    )
    return labels[rows[:, None], cols[None, :]]


@dataclass(frozen=True)
class SizeRule:
    """The size rule as one value (config section ``size``, the bundle's ``size``): target, clamps, fragments."""

    target_diameter_px: float = 40
    min_scale: float = 0.25
    max_scale: float = 4.0
    min_object_area_px: int = 16

    @classmethod
    def from_config(cls, section: Mapping, ignore: tuple[str, ...] = ()) -> SizeRule:
        """The rule of a config section (train.yaml ``size``, infer.yaml ``classical_size``); keys in ``ignore``
        belong to the section but not to the rule (e.g. ``diameter_px``). An unknown key is a UserError."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(section) - known - set(ignore))
        if unknown:
            raise UserError(f"size: unknown key(s) {unknown}; known keys: {sorted(known | set(ignore))}")
        return cls(**{key: section[key] for key in known if key in section})

    def diameter_of(self, labels: np.ndarray) -> float | None:
        """Nucleus diameter of a predicted segmentation (estimated_diameter; border objects left out), or None."""
        return estimated_diameter(labels, min_area_px=self.min_object_area_px, exclude_border=True)

    def scale_for(self, diameter_px: float) -> float:
        """Clamped factor bringing nuclei of ``diameter_px`` to the target diameter."""
        return scale_factor(diameter_px, self.target_diameter_px, self.min_scale, self.max_scale)
