"""Instances as bounding-box crops, and painting them into a label image by decreasing score.

Full-tile masks, a few hundred of them per tile, would cost hundreds of megabytes per image. ``Instances``
keeps each object as its bounding box in the image frame plus a boolean crop, which is what merging tiles
and painting need; the Mask R-CNN predictor returns them directly, simpler predictors may return full-tile
masks (``Instances.from_masks``).

Painting rule (docs/method.md section 6): instances are painted in decreasing score order and a pixel already
taken by a higher-score instance is never overwritten (the old code let later masks win). An instance left
with no visible pixel disappears; ids are 1..N in painting order, so id 1 has the highest score.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage


@dataclass
class Instances:
    """Objects in one image frame.

    boxes: int64 (N, 4) as (y0, x0, y1, x1), end-exclusive, in image pixels; crops: N bool arrays of shape
    (y1 - y0, x1 - x0), the object's pixels inside its box; scores: float32 (N,).
    """

    boxes: np.ndarray
    crops: list[np.ndarray]
    scores: np.ndarray

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, dtype=np.int64).reshape(-1, 4)
        self.scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
        if not len(self.boxes) == len(self.crops) == len(self.scores):
            raise ValueError(
                f"{len(self.boxes)} boxes, {len(self.crops)} crops and {len(self.scores)} scores differ"
            )

    def __len__(self) -> int:
        return len(self.scores)

    @classmethod
    def empty(cls) -> Instances:
        return cls(np.zeros((0, 4), np.int64), [], np.zeros(0, np.float32))

    @classmethod
    def from_masks(cls, masks: np.ndarray, scores: np.ndarray, offset: tuple[int, int] = (0, 0)) -> Instances:
        """From predictor output: masks bool (N, H, W), scores (N,); ``offset`` (y, x) places the tile in the image.

        Empty masks are dropped. Each crop is a copy: no object keeps the whole mask array alive.
        """
        masks = np.asarray(masks, dtype=bool)
        scores = np.asarray(scores, dtype=np.float32).reshape(-1)
        if masks.ndim != 3 or len(masks) != len(scores):
            raise ValueError(
                f"predictor output must be masks (N, H, W) and scores (N,), got {masks.shape}, {scores.shape}"
            )
        rows = masks.any(axis=2)
        cols = masks.any(axis=1)
        keep = np.flatnonzero(rows.any(axis=1))
        rows, cols = rows[keep], cols[keep]
        y0 = rows.argmax(axis=1)
        y1 = masks.shape[1] - rows[:, ::-1].argmax(axis=1)
        x0 = cols.argmax(axis=1)
        x1 = masks.shape[2] - cols[:, ::-1].argmax(axis=1)
        crops = [masks[k, a:b, c:d].copy() for k, a, b, c, d in zip(keep, y0, y1, x0, x1, strict=True)]
        boxes = np.stack([y0 + offset[0], x0 + offset[1], y1 + offset[0], x1 + offset[1]], axis=1)
        return cls(boxes, crops, scores[keep])

    @classmethod
    def from_labels(cls, labels: np.ndarray, scores: np.ndarray | None = None) -> Instances:
        """From a label image (H, W); ``scores[i]`` belongs to id i + 1 (default 1). Absent ids are skipped."""
        slices = ndimage.find_objects(np.asarray(labels))
        present = [i for i, s in enumerate(slices) if s is not None]
        boxes = np.array(
            [[slices[i][0].start, slices[i][1].start, slices[i][0].stop, slices[i][1].stop] for i in present],
            dtype=np.int64,
        )
        crops = [labels[slices[i]] == i + 1 for i in present]
        all_scores = np.ones(len(slices), np.float32) if scores is None else np.asarray(scores, np.float32)
        return cls(boxes, crops, all_scores[present])

    @classmethod
    def concat(cls, parts: Sequence[Instances]) -> Instances:
        parts = [p for p in parts if len(p)]
        if not parts:
            return cls.empty()
        return cls(
            np.concatenate([p.boxes for p in parts]),
            [c for p in parts for c in p.crops],
            np.concatenate([p.scores for p in parts]),
        )

    def shifted(self, offset: tuple[int, int]) -> Instances:
        """The same instances moved by ``offset`` (y, x) pixels (tile to image coordinates)."""
        return Instances(
            self.boxes + np.array([offset[0], offset[1], offset[0], offset[1]]), self.crops, self.scores
        )

    def select(self, index: np.ndarray | Sequence[int]) -> Instances:
        """The instances at the given integer positions (or boolean mask), in that order."""
        index = np.arange(len(self))[np.asarray(index)] if len(self) else np.zeros(0, np.int64)
        return Instances(self.boxes[index], [self.crops[i] for i in index], self.scores[index])

    def areas(self) -> np.ndarray:
        """Pixel count of each instance, int64 (N,)."""
        return np.array([c.sum() for c in self.crops], dtype=np.int64)

    def clipped(self, shape: tuple[int, int]) -> Instances:
        """Instances cut to the image rectangle [0, H) x [0, W); those left empty are dropped."""
        boxes = self.boxes.copy()
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, shape[0])
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, shape[1])
        crops = [
            crop[ny0 - y0 : ny1 - y0, nx0 - x0 : nx1 - x0]
            for crop, (y0, x0, _, _), (ny0, nx0, ny1, nx1) in zip(self.crops, self.boxes, boxes, strict=True)
        ]
        clipped = Instances(boxes, crops, self.scores)
        return clipped.select(np.flatnonzero(clipped.areas() > 0))


def paint_instances(instances: Instances, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Label image int32 (H, W) with instances painted by decreasing score, never over a higher score.

    Returns the labels (ids 1..M in decreasing score; instances with no visible pixel left are dropped) and the
    score of each id, float32 (M,), ``scores[i]`` for id i + 1.
    """
    labels = np.zeros(shape, dtype=np.int32)
    kept_scores = []
    # stable sort: equal scores keep the predictor's order
    for index in np.argsort(-instances.scores, kind="stable"):
        y0, x0, y1, x1 = instances.boxes[index]
        window = labels[y0:y1, x0:x1]
        free = instances.crops[index] & (window == 0)
        if free.any():
            kept_scores.append(instances.scores[index])
            window[free] = len(kept_scores)
    return labels, np.asarray(kept_scores, dtype=np.float32)
