"""The label image a mask layout is composed on (mask_db.layout): objects placed without overlap, the pixels
they block (themselves and their 8-neighbours) and which of them touch.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

_EIGHT = np.ones((3, 3), dtype=np.uint8)


@dataclass(frozen=True)
class Shape:
    """A nucleus to place: its tight bool crop, the crop's centroid (y, x) and its area."""

    mask: np.ndarray
    centroid: np.ndarray
    area: int

    @classmethod
    def of(cls, mask: np.ndarray) -> Shape:
        return cls(mask, np.argwhere(mask).mean(axis=0), int(mask.sum()))


@dataclass
class Canvas:
    """A label image being filled, with a margin around it: an object's centre must lie in the image, its
    pixels may reach into the margin and are cut off at the end, as nuclei are cut by a real image's border.
    Positions (y, x) are top-left corners of crops in the coordinates of the padded canvas."""

    labels: np.ndarray
    blocked: np.ndarray  # object pixels and their 8-neighbours
    margin: int
    centres: list
    radii: list  # half the diagonal of each object's box: no pixel lies farther from its centre
    equivalent_radii: list  # radius of the disc of the object's area
    touching: list

    @classmethod
    def empty(cls, shape: tuple[int, int], margin: int) -> Canvas:
        padded = (shape[0] + 2 * margin, shape[1] + 2 * margin)
        return cls(np.zeros(padded, dtype=np.int32), np.zeros(padded, dtype=bool), margin, [], [], [], [])

    @property
    def image(self) -> np.ndarray:
        """The label image without the margin, ids renumbered 1..N (int32 (H, W))."""
        m = self.margin
        visible = self.labels[m : self.labels.shape[0] - m, m : self.labels.shape[1] - m]
        present = np.bincount(visible.ravel(), minlength=len(self.centres) + 1) > 0
        present[0] = False
        renumber = np.cumsum(present).astype(np.int32)
        renumber[0] = 0
        return renumber[visible]

    def inside(self, shape: Shape, y: int, x: int) -> bool:
        """The centre lies in the image and the crop within the padded canvas."""
        h, w = shape.mask.shape
        cy, cx = y + shape.centroid[0], x + shape.centroid[1]
        height, width = self.labels.shape
        m = self.margin
        return (
            m <= cy < height - m
            and m <= cx < width - m
            and y >= 0
            and x >= 0
            and y + h <= height
            and x + w <= width
        )

    def free(self, shape: Shape, y: int, x: int) -> bool:
        """Fits without overlapping or touching anything."""
        h, w = shape.mask.shape
        return self.inside(shape, y, x) and not (self.blocked[y : y + h, x : x + w] & shape.mask).any()

    def overlaps(self, shape: Shape, y: int, x: int) -> bool:
        """Shares a pixel with a placed object (call only where ``inside``)."""
        h, w = shape.mask.shape
        return bool(((self.labels[y : y + h, x : x + w] > 0) & shape.mask).any())

    def paint(self, shape: Shape, y: int, x: int) -> None:
        """Add an object; records its centre and which objects now touch."""
        mask = shape.mask
        h, w = mask.shape
        label = len(self.centres) + 1
        self.labels[y : y + h, x : x + w][mask] = label
        # the 8-dilated object, one pixel beyond its box where the canvas allows
        y0, x0 = max(y - 1, 0), max(x - 1, 0)
        y1, x1 = min(y + h + 1, self.labels.shape[0]), min(x + w + 1, self.labels.shape[1])
        ring = np.zeros((h + 2, w + 2), dtype=np.uint8)
        ring[1:-1, 1:-1] = mask
        ring = cv2.dilate(ring, _EIGHT)[y0 - y + 1 : y1 - y + 1, x0 - x + 1 : x1 - x + 1].astype(bool)
        self.blocked[y0:y1, x0:x1] |= ring
        neighbours = np.unique(self.labels[y0:y1, x0:x1][ring])
        neighbours = neighbours[(neighbours > 0) & (neighbours != label)]
        self.centres.append(np.array([y, x]) + shape.centroid)
        self.radii.append(np.hypot(h, w) / 2)
        self.equivalent_radii.append(np.sqrt(shape.area / np.pi))
        self.touching.append(neighbours.size > 0)
        for other in neighbours:
            self.touching[other - 1] = True
