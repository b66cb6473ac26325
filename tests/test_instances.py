"""Painting rule: decreasing score, no lower-score mask overwrites a pixel of a higher-score one."""

import numpy as np
import pytest

from nucleaizer.instances import Instances, paint_instances


def masks_from_boxes(shape, boxes):
    masks = np.zeros((len(boxes), *shape), bool)
    for mask, (y0, x0, y1, x1) in zip(masks, boxes, strict=True):
        mask[y0:y1, x0:x1] = True
    return masks


def test_higher_score_keeps_its_pixels_whatever_the_order():
    masks = masks_from_boxes((20, 20), [(0, 0, 10, 10), (5, 5, 15, 15), (6, 6, 9, 9), (16, 16, 19, 19)])
    scores = np.array([0.5, 0.9, 0.3, 0.1], np.float32)
    for order in ([0, 1, 2, 3], [3, 2, 1, 0], [2, 0, 3, 1]):
        labels, kept = paint_instances(Instances.from_masks(masks[order], scores[order]), (20, 20))
        # id 1 is the best (0.9) and keeps all its pixels
        assert (labels[5:15, 5:15] == 1).all()
        # the 0.5 mask gets only what the 0.9 mask left
        assert (labels[0:5, 0:10] == 2).all() and (labels[5:10, 0:5] == 2).all()
        assert (labels == 2).sum() == 100 - 25
        # the 0.3 mask lies wholly under the 0.9 mask: nothing visible, so it is gone
        np.testing.assert_allclose(kept, [0.9, 0.5, 0.1])
        assert labels.max() == 3 and (labels[16:19, 16:19] == 3).all()


def test_painting_covers_exactly_the_union_of_masks():
    rng = np.random.default_rng(0)
    masks = rng.random((30, 40, 50)) > 0.97
    scores = rng.random(30).astype(np.float32)
    labels, kept = paint_instances(Instances.from_masks(masks, scores), (40, 50))
    np.testing.assert_array_equal(labels > 0, masks.any(axis=0))
    # each pixel belongs to the best-scoring mask covering it
    best = np.where(masks.any(axis=0), np.argmax(masks * scores[:, None, None], axis=0), -1)
    assert np.all(kept[labels[labels > 0] - 1] == scores[best[labels > 0]])
    assert (np.diff(kept) <= 0).all()


def test_instances_round_trip_through_masks_and_labels():
    labels = np.zeros((12, 15), np.int32)
    labels[1:4, 2:9] = 1
    labels[6:11, 10:15] = 3  # id 2 absent
    instances = Instances.from_labels(labels, np.array([0.7, 0.0, 0.4]))
    assert instances.boxes.tolist() == [[1, 2, 4, 9], [6, 10, 11, 15]]
    np.testing.assert_allclose(instances.scores, [0.7, 0.4])
    painted, _ = paint_instances(instances, labels.shape)
    np.testing.assert_array_equal(painted, np.where(labels == 3, 2, labels))
    # from_masks with a tile offset, and empty masks dropped
    masks = np.zeros((3, 5, 5), bool)
    masks[0, 1:3, 2:4] = True
    masks[2, 4, 0] = True
    moved = Instances.from_masks(masks, np.array([1.0, 0.5, 0.2]), offset=(10, 20))
    assert moved.boxes.tolist() == [[11, 22, 13, 24], [14, 20, 15, 21]]
    clipped = moved.clipped((14, 23))
    assert clipped.boxes.tolist() == [[11, 22, 13, 23]] and clipped.crops[0].shape == (2, 1)


def test_empty_and_malformed_input():
    labels, kept = paint_instances(Instances.empty(), (4, 6))
    assert labels.shape == (4, 6) and not labels.any() and kept.shape == (0,)
    assert len(Instances.from_masks(np.zeros((0, 4, 6), bool), np.zeros(0))) == 0
    with pytest.raises(ValueError):
        Instances.from_masks(np.zeros((2, 4, 6), bool), np.zeros(3))
