"""Test-time augmentation: flips and 90-degree rotations, objects matched and voted (docs/method.md section 6).

The image is segmented once per transform of the dihedral group, each label image is mapped back, and:

- objects of different transforms are the same object when their IoU is at least ``match_iou`` (groups are
  the connected components of that relation);
- a group is kept when it holds objects from more than half of the transforms;
- a pixel belongs to a kept group when at least half of the group's objects cover it (pixel-wise majority);
- where kept groups compete for a pixel, the group with the higher mean score wins.

Everything is one sparse overlap product and sorted-array bookkeeping, with no loop over objects or pixels.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from scipy import sparse
from scipy.sparse.csgraph import connected_components

# name -> (forward, inverse) on arrays whose first two axes are (H, W)
TRANSFORMS: dict[str, tuple[Callable[[np.ndarray], np.ndarray], Callable[[np.ndarray], np.ndarray]]] = {
    "identity": (lambda a: a, lambda a: a),
    "flip_h": (lambda a: a[:, ::-1], lambda a: a[:, ::-1]),
    "flip_v": (lambda a: a[::-1], lambda a: a[::-1]),
    "rot90": (lambda a: np.rot90(a, 1), lambda a: np.rot90(a, -1)),
    "rot180": (lambda a: np.rot90(a, 2), lambda a: np.rot90(a, 2)),
    "rot270": (lambda a: np.rot90(a, 3), lambda a: np.rot90(a, -3)),
    "transpose": (lambda a: np.swapaxes(a, 0, 1), lambda a: np.swapaxes(a, 0, 1)),
    "transverse": (lambda a: np.swapaxes(a, 0, 1)[::-1, ::-1], lambda a: np.swapaxes(a[::-1, ::-1], 0, 1)),
}


def check_transforms(names: Sequence[str]) -> tuple[str, ...]:
    """The transform names, validated; raises ValueError naming the unknown ones."""
    unknown = [n for n in names if n not in TRANSFORMS]
    if unknown or not names:
        raise ValueError(
            f"unknown or no TTA transforms {unknown or list(names)}; choose from {list(TRANSFORMS)}"
        )
    return tuple(names)


def vote(
    label_images: Sequence[np.ndarray], scores: Sequence[np.ndarray], match_iou: float = 0.5
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Consensus of several label images of one image (all int (H, W), same frame).

    scores[k][i] is the score of id i + 1 of label_images[k]. Returns labels int32 (H, W), ids 1..M in
    decreasing score, the score of each id (the mean over the views that found it, float32 (M,)) and each
    id's agreement (the share of the views that found it, float32 (M,)).
    """
    shape = label_images[0].shape
    n_views = len(label_images)
    flat = [np.asarray(lab).ravel() for lab in label_images]
    counts = [int(f.max()) if f.size else 0 for f in flat]
    offsets = np.concatenate([[0], np.cumsum(counts)])
    n_objects = int(offsets[-1])
    if n_objects == 0:
        return np.zeros(shape, np.int32), np.zeros(0, np.float32), np.zeros(0, np.float32)
    if any(len(s) < c for s, c in zip(scores, counts, strict=True)):
        raise ValueError("every label image needs one score per id (scores[k][i] for id i + 1)")
    object_score = np.concatenate(
        [np.asarray(s, np.float32)[:c] for s, c in zip(scores, counts, strict=True)]
    )
    object_view = np.repeat(np.arange(n_views), counts)

    # object x pixel incidence; objects of one view are disjoint, so a pixel is covered once per view at most
    pixel_lists = [np.flatnonzero(f) for f in flat]
    rows = np.concatenate(
        [f[p].astype(np.int64) - 1 + o for f, p, o in zip(flat, pixel_lists, offsets, strict=False)]
    )
    cols = np.concatenate(pixel_lists)
    incidence = sparse.csr_matrix(
        (np.ones(len(rows), np.int32), (rows, cols)), shape=(n_objects, flat[0].size)
    )
    area = np.asarray(incidence.sum(axis=1)).ravel()
    shared = sparse.triu(incidence @ incidence.T, k=1).tocoo()
    iou = shared.data / np.maximum(area[shared.row] + area[shared.col] - shared.data, 1)
    match = iou >= match_iou
    graph = sparse.coo_matrix(
        (np.ones(match.sum()), (shared.row[match], shared.col[match])), shape=(n_objects,) * 2
    )
    group = connected_components(graph, directed=False)[1]
    n_groups = int(group.max()) + 1

    # a group is kept when more than half of the views found it
    views_per_group = np.zeros(n_groups, np.int64)
    group_view = np.unique(group * n_views + object_view)
    np.add.at(views_per_group, group_view // n_views, 1)
    members = np.bincount(group, minlength=n_groups)
    group_score = np.bincount(group, weights=object_score, minlength=n_groups) / members
    kept = 2 * views_per_group > n_views

    # pixel-wise majority inside each kept group
    pixel_group = group[rows]
    on = kept[pixel_group]
    key, votes = np.unique(pixel_group[on].astype(np.int64) * flat[0].size + cols[on], return_counts=True)
    g, pixel = key // flat[0].size, key % flat[0].size
    majority = 2 * votes >= members[g]
    g, pixel = g[majority], pixel[majority]
    if not len(g):
        return np.zeros(shape, np.int32), np.zeros(0, np.float32), np.zeros(0, np.float32)

    # the best-scoring group takes a contested pixel; ids follow decreasing score
    order = np.lexsort((-group_score[g], pixel))
    first = np.r_[True, pixel[order][1:] != pixel[order][:-1]]
    g, pixel = g[order][first], pixel[order][first]
    present = np.unique(g)
    ranked = present[np.argsort(-group_score[present], kind="stable")]
    new_id = np.zeros(n_groups, np.int32)
    new_id[ranked] = np.arange(1, len(ranked) + 1)
    labels = np.zeros(flat[0].size, np.int32)
    labels[pixel] = new_id[g]
    agreement = (views_per_group[ranked] / n_views).astype(np.float32)
    return labels.reshape(shape), group_score[ranked].astype(np.float32), agreement


def segment_with_tta(
    image: np.ndarray,
    segment: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
    transforms: Sequence[str],
    match_iou: float = 0.5,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Segment ``image`` once per transform with ``segment(image) -> (labels, scores)`` and vote.

    Returns labels int32 (H, W) in the frame of ``image``, the score and the agreement of each id (``vote``).
    """
    label_images, scores = [], []
    for name in check_transforms(transforms):
        forward, inverse = TRANSFORMS[name]
        labels, object_scores = segment(np.ascontiguousarray(forward(image)))
        label_images.append(np.ascontiguousarray(inverse(labels)))
        scores.append(object_scores)
    return vote(label_images, scores, match_iou)
