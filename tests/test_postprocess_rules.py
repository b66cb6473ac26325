"""Object rules and soft-margin contour correction (docs/method.md section 7) on constructed cases."""

import numpy as np
import pytest

from nucleaizer.errors import UserError
from nucleaizer.postprocess.rules import (
    IDENTITY_PARAMS,
    PostprocessParams,
    boundary_contacts,
    merge_surrounded,
    postprocess_labels,
)

# every rule switched off except the one a test looks at
NEUTRAL = IDENTITY_PARAMS.as_dict()


def disc(shape, centre, radius):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius**2


def test_paper_defaults():
    assert PostprocessParams().as_dict() == {
        "p1_surround_fraction": 0.17,
        "p2_min_area_px": 44,
        "p3_threshold": 0.9375,
        "p4_erode_px": 1,
        "p5_dilate_px": 1,
        "p6_min_mean_prob": 0.8,
    }


def test_object_inside_another_is_dropped_into_it():
    labels = np.zeros((64, 64), np.int32)
    labels[disc(labels.shape, (32, 32), 15)] = 1
    labels[disc(labels.shape, (30, 33), 4)] = 2
    out = postprocess_labels(labels, (labels > 0).astype(np.float32), NEUTRAL)
    assert out.max() == 1
    np.testing.assert_array_equal(out > 0, labels > 0)


def test_boundary_contacts_count_shared_edges():
    labels = np.zeros((40, 40), np.int32)
    labels[10:30, 10:30] = 1
    labels[15:21, 30:36] = 2  # a 6x6 square against the big square's right side
    boundary, a, b, count = boundary_contacts(labels)
    assert boundary[2] == 24 and boundary[1] == 80
    pairs = {(int(i), int(j)): int(c) for i, j, c in zip(a, b, count, strict=True)}
    assert pairs == {(1, 2): 6, (2, 1): 6}


@pytest.mark.parametrize("p1, merged", [(0.2, True), (0.3, False)])
def test_object_surrounded_beyond_p1_is_merged(p1, merged):
    labels = np.zeros((40, 40), np.int32)
    labels[10:30, 10:30] = 1
    labels[15:21, 30:36] = 2  # a quarter (6 of 24 edges) of its boundary touches object 1
    out = postprocess_labels(labels, (labels > 0).astype(np.float32), {**NEUTRAL, "p1_surround_fraction": p1})
    assert out.max() == (1 if merged else 2)
    np.testing.assert_array_equal(out > 0, labels > 0)


def test_merges_chain_and_keep_unrelated_objects():
    labels = np.zeros((40, 60), np.int32)
    labels[10:30, 10:20] = 1
    labels[10:30, 20:30] = 2  # half-and-half neighbours: each shares 20 of 60 edges
    labels[10:30, 30:40] = 3
    labels[2:6, 50:56] = 4
    out = merge_surrounded(labels, 0.17)
    assert out.max() == 2
    assert len(np.unique(out[10:30, 10:40])) == 1 and out[3, 52] != out[15, 15]


def test_objects_under_p2_pixels_are_dropped():
    labels = np.zeros((40, 40), np.int32)
    labels[2:7, 2:8] = 1  # 30 px
    labels[20:27, 20:27] = 2  # 49 px
    out = postprocess_labels(labels, (labels > 0).astype(np.float32), {**NEUTRAL, "p2_min_area_px": 44})
    assert out.max() == 1
    np.testing.assert_array_equal(out > 0, labels == 2)


def test_contour_grows_and_shrinks_within_the_margin_following_p():
    labels = np.zeros((60, 60), np.int32)
    labels[20:40, 20:40] = 1
    prob = np.zeros(labels.shape, np.float32)
    prob[20:40, 23:43] = 1.0  # low on the object's 3 left columns, high 3 columns beyond its right side
    params = {**NEUTRAL, "p3_threshold": 0.5, "p4_erode_px": 1, "p5_dilate_px": 2}
    out = postprocess_labels(labels, prob, params)
    expected = np.zeros(labels.shape, bool)
    expected[21:39, 21:39] = True  # the core (1 px erosion) stays whatever P says
    expected[20:40, 23:42] = True  # P decides in the margin, which ends 2 px outside the object
    np.testing.assert_array_equal(out > 0, expected)


def test_margin_never_grows_into_another_object():
    labels = np.zeros((30, 40), np.int32)
    labels[5:25, 5:20] = 1
    labels[5:25, 21:35] = 2  # one background column between them
    prob = np.ones(labels.shape, np.float32)
    out = postprocess_labels(labels, prob, {**NEUTRAL, "p3_threshold": 0.5, "p5_dilate_px": 3})
    assert out.max() == 2
    np.testing.assert_array_equal(out[labels == 1], 1)
    np.testing.assert_array_equal(out[labels == 2], 2)


def test_object_of_low_mean_probability_is_dropped():
    labels = np.zeros((40, 40), np.int32)
    labels[5:15, 5:15] = 1
    labels[25:35, 25:35] = 2
    prob = np.where(labels == 1, 0.9, np.where(labels == 2, 0.3, 0.0)).astype(np.float32)
    out = postprocess_labels(labels, prob, {**NEUTRAL, "p3_threshold": 0.2, "p6_min_mean_prob": 0.8})
    np.testing.assert_array_equal(out > 0, labels == 1)


def test_defaults_leave_a_clean_case_unchanged():
    labels = np.zeros((128, 128), np.int32)
    for i, (y, x, r) in enumerate([(20, 20, 8), (20, 70, 12), (70, 30, 10), (90, 100, 15), (60, 120, 9)]):
        labels[disc(labels.shape, (y, x), r)] = (i + 1) * 3  # ids need not be sequential
    out = postprocess_labels(labels, (labels > 0).astype(np.float32))
    np.testing.assert_array_equal(out, labels // 3)


def test_bad_inputs():
    with pytest.raises(ValueError, match="same"):
        postprocess_labels(np.zeros((4, 4), int), np.zeros((4, 5)))
    with pytest.raises(UserError, match="p7"):
        PostprocessParams.from_dict({"p7": 1})
    empty = postprocess_labels(np.zeros((8, 8), int), np.zeros((8, 8)))
    assert empty.dtype == np.int32 and empty.max() == 0
