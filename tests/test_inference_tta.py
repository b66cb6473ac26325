"""Test-time augmentation: transforms invert exactly, identity-like predictors pass through, majority vote."""

import numpy as np
import pytest

from nucleaizer import simulate
from nucleaizer.infer.nucleus_segmenter import NucleusSegmenter
from nucleaizer.infer.tiling import TileParams
from nucleaizer.infer.tta import TRANSFORMS, check_transforms, segment_with_tta, vote
from tests.helpers.predictors import (
    objects_image,
    same_partition,
    threshold_predictor,
    threshold_predictor_labels,
)


def test_every_transform_is_inverted_and_transforms_are_distinct():
    image = np.arange(3 * 5 * 2).reshape(3, 5, 2)
    seen = set()
    for forward, inverse in TRANSFORMS.values():
        np.testing.assert_array_equal(inverse(forward(image)), image)
        seen.add(forward(image).tobytes() + bytes(forward(image).shape))
    assert len(seen) == 8  # the whole dihedral group


def test_tta_of_an_identity_like_predictor_returns_its_input():
    labels = simulate.random_labels((150, 170), 40, 18, np.random.default_rng(2))
    image = objects_image(labels)
    expected = threshold_predictor_labels(image)
    segmenter = NucleusSegmenter(
        threshold_predictor, tiles=TileParams(tile_size=64, overlap=16), tta_transforms=tuple(TRANSFORMS)
    )
    out = segmenter.segment(image, scale=1.0)
    assert same_partition(out, expected)


def test_objects_found_by_a_minority_of_views_are_dropped():
    base = np.zeros((10, 10), np.int32)
    base[1:4, 1:4] = 1
    base[6:9, 6:9] = 2
    extra = base.copy()
    extra[1:3, 6:9] = 3  # an object only one view sees
    shrunk = base.copy()
    shrunk[3, 1:4] = 0  # a view where object 1 lacks its last row
    labels, scores, agreement = vote([base, extra, shrunk], [np.ones(2), np.ones(3), np.ones(2)])
    assert same_partition(labels, base)
    np.testing.assert_allclose(agreement, [1.0, 1.0])  # both kept objects were found by all three views
    # two of three views: found by the majority, and the disputed row holds 2 of 3 votes
    labels, _, agreement = vote([base, extra, extra], [np.ones(2), np.ones(3), np.ones(3)])
    assert labels.max() == 3 and sorted(np.round(agreement, 3)) == [0.667, 1.0, 1.0]
    labels, *_ = vote([base, shrunk, shrunk], [np.ones(2)] * 3)
    assert same_partition(labels, shrunk)
    # an object seen in exactly half of the views is not a majority
    labels, *_ = vote([base, extra, extra, base], [np.ones(2), np.ones(3), np.ones(3), np.ones(2)])
    assert same_partition(labels, base)
    labels, *_ = vote([extra, extra, extra, base], [np.ones(3), np.ones(3), np.ones(3), np.ones(2)])
    assert same_partition(labels, extra)


def test_objects_match_only_at_iou_threshold():
    a = np.zeros((10, 20), np.int32)
    a[0:10, 0:10] = 1
    b = np.zeros((10, 20), np.int32)
    b[0:10, 4:14] = 1  # IoU 60/140 < 0.5 with a: two different objects, neither in a majority of 2 views
    labels, *_ = vote([a, b], [np.ones(1), np.ones(1)])
    assert labels.max() == 0
    labels, *_ = vote([a, b], [np.ones(1), np.ones(1)], match_iou=0.4)
    assert labels.max() == 1 and (labels[:, 0:14] == 1).all()  # each view covers half of the pixels


def test_higher_mean_score_wins_contested_pixels():
    a = np.zeros((6, 12), np.int32)
    a[:, 0:7] = 1
    a[:, 7:12] = 2
    b = np.zeros((6, 12), np.int32)
    b[:, 0:6] = 1
    b[:, 6:12] = 2
    labels, scores, _ = vote([a, b], [np.array([0.2, 0.9]), np.array([0.2, 0.9])])
    np.testing.assert_allclose(scores, [0.9, 0.2])
    assert (labels[:, 6] == 1).all()  # the column both claim (one vote each) goes to the 0.9 object


def test_tta_sees_rotated_views_and_rejects_unknown_names():
    views = []

    def recording(image):
        views.append(image.shape)
        return np.zeros(image.shape[:2], np.int32), np.zeros(0, np.float32)

    labels, *_ = segment_with_tta(np.zeros((20, 30, 3), np.uint8), recording, ["identity", "rot90"])
    assert views == [(20, 30, 3), (30, 20, 3)] and labels.shape == (20, 30) and labels.max() == 0
    with pytest.raises(ValueError, match="rot45"):
        check_transforms(["rot45"])
