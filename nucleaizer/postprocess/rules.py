"""Object rules and soft-margin contour correction of docs/method.md section 7, parameters p1..p6.

Everything works on whole label images with label-wise operations (contact counts from shifted arrays,
``bincount`` per label, label-wise erosion by min/max filters, ``expand_labels`` for the outward margin), so
the cost does not grow with a Python loop over objects.

Order of the rules (docs/method.md section 7):

1. an object whose whole boundary touches one other object (it lies wholly inside it) is dropped and its
   pixels join the enclosing object; an object of which a neighbour covers more than ``p1`` of the boundary
   is merged into that neighbour (chains merge together);
2. objects smaller than ``p2`` pixels are dropped;
3. the probability map ``P`` is thresholded at ``p3``;
4. each object keeps its core (erosion by ``p4`` px); in its margin (up to ``p5`` px outwards, never into
   another object) pixels with ``P > p3`` decide the contour, so it grows and shrinks following ``P``;
5. objects whose mean ``P`` is below ``p6`` are dropped.

**Decision:** rule 2 runs again after rule 4, because shrinking can leave fragments below ``p2`` pixels
that would only count as false positives.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields

import numpy as np
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from skimage.morphology import disk
from skimage.segmentation import expand_labels

from nucleaizer.errors import UserError


@dataclass(frozen=True)
class PostprocessParams:
    """The six post-processing parameters; defaults are the paper's values tuned on DSB."""

    p1_surround_fraction: float = 0.17
    p2_min_area_px: int = 44
    p3_threshold: float = 0.9375
    p4_erode_px: int = 1
    p5_dilate_px: int = 1
    p6_min_mean_prob: float = 0.8

    @classmethod
    def from_dict(cls, values: Mapping[str, float]) -> PostprocessParams:
        """Build from a mapping (config section, tuned JSON); unknown keys raise UserError."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise UserError(f"postprocess params: unknown key(s) {unknown}; known keys are {sorted(known)}")
        params = dict(values)
        for key in ("p2_min_area_px", "p4_erode_px", "p5_dilate_px"):
            if key in params:
                params[key] = int(round(float(params[key])))
        for key in ("p1_surround_fraction", "p3_threshold", "p6_min_mean_prob"):
            if key in params:
                params[key] = float(params[key])
        result = cls(**params)
        if min(result.p2_min_area_px, result.p4_erode_px, result.p5_dilate_px) < 0:
            raise UserError(f"postprocess params: p2, p4 and p5 must be >= 0, got {result}")
        return result

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


# Parameters under which post-processing changes nothing but rule 1's absorption of enclosed objects: no
# merging, no size or probability filter, no margin. The GA starts from it so that it can always fall back
# to (almost) the raw segmentation.
IDENTITY_PARAMS = PostprocessParams(
    p1_surround_fraction=1.0,
    p2_min_area_px=0,
    p3_threshold=0.5,
    p4_erode_px=0,
    p5_dilate_px=0,
    p6_min_mean_prob=0.0,
)

_SHIFTS = (
    (slice(0, -2), slice(1, -1)),
    (slice(2, None), slice(1, -1)),
    (slice(1, -1), slice(0, -2)),
    (slice(1, -1), slice(2, None)),
)


def boundary_contacts(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Boundary lengths and contacts between objects, counted on 4-connected pixel edges.

    labels: int (H, W), sequential ids 0..N. Returns ``boundary`` int64 (N + 1,), the number of edges from
    each object to anything else (other objects, background, the outside of the image), and three arrays
    ``(a, b, count)``: for every ordered pair of touching objects, how many of ``a``'s boundary edges touch ``b``.
    """
    n = int(labels.max())
    padded = np.pad(labels, 1)  # the outside of the image counts as background
    centre = padded[1:-1, 1:-1]
    own, other = [], []
    for rows, cols in _SHIFTS:
        neighbour = padded[rows, cols]
        edge = (centre > 0) & (neighbour != centre)
        own.append(centre[edge])
        other.append(neighbour[edge])
    own_all, other_all = np.concatenate(own), np.concatenate(other)
    boundary = np.bincount(own_all, minlength=n + 1)
    touching = other_all > 0
    pair_codes, counts = np.unique(
        own_all[touching].astype(np.int64) * (n + 1) + other_all[touching], return_counts=True
    )
    return boundary, pair_codes // (n + 1), pair_codes % (n + 1), counts


def merge_surrounded(labels: np.ndarray, surround_fraction: float) -> np.ndarray:
    """Rule 1: absorb enclosed objects and merge objects mostly surrounded by a neighbour.

    labels: int (H, W), sequential ids. An object whose boundary touches one neighbour only (it lies wholly
    inside it) joins that neighbour; an object whose best neighbour covers more than ``surround_fraction`` of
    its boundary merges with it. Merges chain (connected components of the merge graph). Returns int32 (H, W)
    with sequential ids.
    """
    n = int(labels.max())
    if n < 2:
        return labels.astype(np.int32)
    boundary, a, b, counts = boundary_contacts(labels)
    fraction = counts / boundary[a]
    # each object merges into its neighbour with the largest share of its boundary (ties: lowest id)
    order = np.lexsort((b, -fraction, a))
    first = order[np.unique(a[order], return_index=True)[1]]
    best_a, best_b, best_fraction = a[first], b[first], fraction[first]
    enclosed = counts[first] == boundary[best_a]
    chosen = enclosed | (best_fraction > surround_fraction)
    graph = coo_matrix((np.ones(int(chosen.sum())), (best_a[chosen], best_b[chosen])), shape=(n + 1, n + 1))
    _, component = connected_components(graph, directed=False)
    # background is its own component; renumber the others 1..M in order of their first object
    _, new_ids = np.unique(component[1:], return_inverse=True)
    lut = np.concatenate([[0], new_ids + 1]).astype(np.int32)
    return lut[labels]


def drop_small(labels: np.ndarray, min_area_px: int) -> np.ndarray:
    """Rule 2: remove objects of fewer than ``min_area_px`` pixels. labels: int (H, W) -> same, ids kept."""
    if min_area_px <= 0:
        return labels
    area = np.bincount(labels.ravel())
    keep = area >= min_area_px
    keep[0] = False
    return np.where(keep[labels], labels, 0)


def erode_labels(labels: np.ndarray, radius_px: int) -> np.ndarray:
    """Label-wise erosion by a disk: a pixel stays when its whole disk neighbourhood has its label.

    Touching objects erode away from each other; the image border does not erode (the object may continue
    beyond it). labels: int (H, W) -> same dtype.
    """
    if radius_px <= 0:
        return labels
    footprint = disk(radius_px)
    low = ndimage.minimum_filter(labels, footprint=footprint, mode="nearest")
    high = ndimage.maximum_filter(labels, footprint=footprint, mode="nearest")
    return np.where(low == high, labels, 0)


def correct_contours(labels: np.ndarray, foreground: np.ndarray, erode_px: int, dilate_px: int) -> np.ndarray:
    """Rule 4: inside each object's soft margin the thresholded probability map decides the contour.

    labels: int (H, W); foreground: bool (H, W), ``P > p3``. Each object keeps its core (erosion by
    ``erode_px``); a pixel of its margin, from the core out to ``dilate_px`` px beyond the object (background
    only, nearest object wins), belongs to it exactly when ``foreground`` is true there.
    """
    core = erode_labels(labels, erode_px)
    reach = expand_labels(labels, distance=dilate_px) if dilate_px > 0 else labels
    return np.where(core > 0, core, np.where(foreground, reach, 0)).astype(np.int32)


def drop_low_probability(labels: np.ndarray, prob: np.ndarray, min_mean_prob: float) -> np.ndarray:
    """Rule 5: remove objects whose mean probability is below ``min_mean_prob``.

    labels: int (H, W); prob: float (H, W) in [0, 1]. Returns labels with the same ids for kept objects.
    """
    if min_mean_prob <= 0:
        return labels
    flat = labels.ravel()
    area = np.bincount(flat)
    total = np.bincount(flat, weights=prob.ravel(), minlength=area.size)
    mean = total / np.maximum(area, 1)
    keep = mean >= min_mean_prob
    keep[0] = False
    return np.where(keep[labels], labels, 0)


def sequential_labels(labels: np.ndarray) -> np.ndarray:
    """Ids renumbered 1..M in increasing order (int32 (H, W)); a lookup table from ``bincount``, cheaper than
    ``np.unique`` on the whole image."""
    present = np.bincount(labels.ravel()) > 0
    present[0] = False
    lut = np.zeros(present.size, dtype=np.int32)
    lut[present] = np.arange(1, int(present.sum()) + 1, dtype=np.int32)
    return lut[labels]


def postprocess_labels(
    labels: np.ndarray, prob: np.ndarray, params: PostprocessParams | Mapping[str, float] | None = None
) -> np.ndarray:
    """Correct a Mask R-CNN label image with the U-Net probability map (rules 1-5, parameters p1..p6).

    labels: int (H, W), 0 background, any positive ids; prob: float (H, W) in [0, 1] at the same scale
    (the segmenter's working scale, where nuclei are about 40 px across; p2, p4 and p5 are pixels there).
    params: PostprocessParams, a mapping of its fields, or None for the paper's defaults.
    Returns int32 (H, W) with ids 1..M.
    """
    if labels.shape != prob.shape or labels.ndim != 2:
        raise ValueError(f"labels {labels.shape} and probability map {prob.shape} must be the same (H, W)")
    if params is None:
        params = PostprocessParams()
    elif not isinstance(params, PostprocessParams):
        params = PostprocessParams.from_dict(params)
    labels = np.asarray(labels)
    if labels.size and labels.min() < 0:
        raise ValueError("labels must be >= 0 (0 background, positive ids objects)")
    current = sequential_labels(labels)
    current = merge_surrounded(current, params.p1_surround_fraction)
    current = drop_small(current, params.p2_min_area_px)
    foreground = prob > params.p3_threshold
    current = correct_contours(current, foreground, params.p4_erode_px, params.p5_dilate_px)
    current = drop_small(current, params.p2_min_area_px)
    current = drop_low_probability(current, prob, params.p6_min_mean_prob)
    return sequential_labels(current)
