"""nucleaizer.metrics: hand-made cases with known answers, an independent brute-force oracle, id invariance."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from nucleaizer import metrics
from nucleaizer.errors import UserError

RATIOS = ("dsb", "map", "mar", "mf1", "f1_50", "f1_70", "mean_iou")
ERRORS = ("missed", "extra", "merges", "splits")


def _canvas(shape=(40, 40)) -> np.ndarray:
    return np.zeros(shape, dtype=np.int32)


def _three_objects() -> np.ndarray:
    labels = _canvas()
    labels[2:12, 2:12] = 1
    labels[20:26, 5:30] = 2
    labels[30:38, 30:38] = 3
    return labels


def _n_thresholds_below(iou: float) -> int:
    """How many IoU thresholds a match of this IoU passes (IoU > t, strictly)."""
    return sum(iou > t for t in metrics.IOU_THRESHOLDS)


def test_thresholds_are_050_to_095():
    assert metrics.IOU_THRESHOLDS == (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)


def test_perfect_match_scores_one():
    gt = _three_objects()
    scores = metrics.score_image(gt, gt)
    assert all(scores[k] == 1.0 for k in RATIOS)
    assert all(scores[k] == 0 for k in ERRORS)
    assert (scores["n_gt"], scores["n_pred"], scores["matched"]) == (3, 3, 3)
    assert metrics.dsb_score(gt, gt) == 1.0


def test_empty_vs_empty_scores_one_for_every_ratio():
    scores = metrics.score_image(_canvas(), _canvas())
    assert all(scores[k] == 1.0 for k in RATIOS)
    assert all(scores[k] == 0 for k in (*ERRORS, "n_gt", "n_pred", "matched"))


def test_prediction_on_empty_ground_truth_scores_zero():
    scores = metrics.score_image(_canvas(), _three_objects())
    assert all(scores[k] == 0.0 for k in RATIOS)
    assert (scores["extra"], scores["missed"], scores["n_pred"]) == (3, 0, 3)


def test_empty_prediction_scores_zero_and_misses_everything():
    scores = metrics.score_image(_three_objects(), _canvas())
    assert all(scores[k] == 0.0 for k in RATIOS)
    assert (scores["missed"], scores["extra"], scores["n_gt"]) == (3, 0, 3)


def test_one_merge():
    gt = _canvas()
    gt[0:10, 0:10] = 1  # 100 px
    gt[0:10, 10:15] = 2  # 50 px, touching object 1
    pred = _canvas()
    pred[0:10, 0:15] = 9  # one prediction over both: IoU 100/150 and 50/150
    scores = metrics.score_image(gt, pred)
    # TP at t < 2/3 (4 thresholds): TP 1, FP 0, FN 1 -> 1/2; at the other 6 thresholds TP 0, FP 1, FN 2.
    assert scores["dsb"] == pytest.approx(4 * 0.5 / 10)
    assert scores["map"] == pytest.approx(4 / 10)
    assert scores["mar"] == pytest.approx(4 * 0.5 / 10)
    assert scores["mf1"] == pytest.approx(4 * (2 / 3) / 10)
    assert scores["f1_50"] == pytest.approx(2 / 3) and scores["f1_70"] == 0.0
    assert scores["mean_iou"] == pytest.approx(2 / 3)
    assert (scores["merges"], scores["splits"], scores["missed"], scores["extra"]) == (1, 0, 2, 1)


def test_merge_needs_iou_of_at_least_01_with_each_object():
    gt = _canvas((20, 120))
    gt[0:10, 0:100] = 1  # 1000 px
    gt[0:10, 100:110] = 2  # 100 px: IoU with the union prediction 100/1100 < 0.1
    pred = _canvas((20, 120))
    pred[0:10, 0:110] = 1
    assert metrics.score_image(gt, pred)["merges"] == 0
    gt = _canvas((20, 120))
    gt[0:10, 0:90] = 1  # 900 px
    gt[0:10, 90:100] = 2  # 100 px: IoU with the union prediction 100/1000 = 0.1 exactly
    pred = _canvas((20, 120))
    pred[0:10, 0:100] = 1
    assert metrics.score_image(gt, pred)["merges"] == 1


def test_one_split_and_the_07_boundary():
    gt = _canvas()
    gt[0:10, 0:20] = 1  # 200 px
    pred = _canvas()
    pred[0:10, 0:14] = 1  # IoU 140/200 = 0.7 exactly
    pred[0:10, 14:20] = 2  # IoU 60/200 = 0.3
    scores = metrics.score_image(gt, pred)
    assert (scores["splits"], scores["merges"]) == (1, 0)
    assert scores["missed"] == 0  # missed means no prediction at IoU >= 0.7: 0.7 is enough
    assert scores["extra"] == 1  # the 0.3 piece
    assert scores["f1_70"] == 0.0  # a true positive needs IoU > 0.7, strictly
    # 4 thresholds (0.5..0.65): TP 1, FP 1, FN 0 -> 1/2
    assert scores["dsb"] == pytest.approx(4 * 0.5 / 10)
    assert scores["mean_iou"] == pytest.approx(0.7)


@pytest.mark.parametrize("shift", [0, 1, 2, 3, 4, 5, 8])
def test_shifted_object_crosses_thresholds(shift):
    gt = _canvas((30, 60))
    gt[5:25, 10:30] = 4
    pred = np.roll(gt, shift, axis=1)
    iou = (20 - shift) / (20 + shift)  # 1, .905, .818, .739, .667, .6 (exactly a threshold), .429
    passed = _n_thresholds_below(iou)
    scores = metrics.score_image(gt, pred)
    assert scores["dsb"] == pytest.approx(passed / 10)
    assert scores["map"] == scores["mar"] == scores["mf1"] == pytest.approx(passed / 10)
    assert scores["f1_50"] == (1.0 if iou > 0.5 else 0.0)
    assert scores["f1_70"] == (1.0 if iou > 0.7 else 0.0)
    assert scores["missed"] == scores["extra"] == (0 if iou >= 0.7 else 1)
    assert scores["matched"] == (1 if iou > 0.5 else 0)
    if shift == 5:
        assert passed == 2  # IoU 0.6 passes 0.5 and 0.55 but not 0.6


def test_relabelled_ids_give_the_same_scores():
    gt = _three_objects()
    pred = np.roll(gt, 2, axis=0)
    reference = metrics.score_image(gt, pred)
    lookup = np.array([0, 7, 300, 65_000])
    assert metrics.score_image(lookup[gt], pred) == reference
    huge = np.array([0, 2**31 - 1, 5, 2**30], dtype=np.int64)  # sparse ids far above the pixel count
    assert metrics.score_image(gt, huge[pred]) == reference
    assert metrics.score_image(gt.astype(np.uint16), pred.astype(np.uint64)) == reference


def test_misses_are_binned_by_equivalent_diameter():
    gt = _canvas((100, 100))
    gt[0:4, 0:4] = 1  # 16 px -> d = 4.5
    gt[10:24, 0:14] = 2  # 196 px -> d = 15.8
    gt[30:55, 0:25] = 3  # 625 px -> d = 28.2
    gt[40:100, 40:100] = 4  # 3600 px -> d = 67.7
    pred = np.where(gt == 4, 1, 0)
    scores = metrics.score_image(gt, pred)
    assert metrics.size_bin_names() == ["d0_10", "d10_20", "d20_40", "d40_inf"]
    assert [scores[f"n_gt_{b}"] for b in metrics.size_bin_names()] == [1, 1, 1, 1]
    assert [scores[f"missed_{b}"] for b in metrics.size_bin_names()] == [1, 1, 1, 0]
    custom = metrics.score_image(gt, pred, size_bins_px=(20,))
    assert (custom["missed_d0_20"], custom["missed_d20_inf"], custom["n_gt_d20_inf"]) == (2, 1, 2)


def test_bad_inputs():
    with pytest.raises(UserError, match="differ in size"):
        metrics.score_image(_canvas((4, 4)), _canvas((4, 5)))
    with pytest.raises(ValueError, match="integer"):
        metrics.score_image(_canvas().astype(float), _canvas())
    with pytest.raises(ValueError, match="negative"):
        metrics.score_image(-_three_objects(), _canvas())
    with pytest.raises(ValueError, match="thresholds"):
        metrics.score_image(_canvas(), _canvas(), thresholds=(0.3,))


def test_summarize_means_ratios_and_sums_counts():
    gt = _three_objects()
    per_image = [
        {"name": "a", **metrics.score_image(gt, gt)},
        {"name": "b", **metrics.score_image(gt, _canvas())},
        {"name": "c", **metrics.score_image(_canvas(), _canvas())},
    ]
    summary = metrics.summarize(per_image)
    assert summary["images"] == 3 and "name" not in summary
    assert summary["dsb"] == pytest.approx(2 / 3)
    assert (summary["n_gt"], summary["missed"], summary["extra"]) == (6, 3, 0)
    assert summary["mean_iou"] == 1.0  # over matched objects only, not over images
    assert summary["miss_rate"] == pytest.approx(0.5)
    assert summary["miss_rate_d40_inf"] is None  # no object of that size
    with pytest.raises(UserError):
        metrics.summarize([])


# ------------------------------------------------------------------------------ independent oracle


def _oracle(gt: np.ndarray, pred: np.ndarray) -> dict[str, float | int]:
    """docs/method.md section 8 written the slow, obvious way: a dense IoU matrix from per-object masks."""
    gt_ids = [i for i in np.unique(gt) if i != 0]
    pred_ids = [j for j in np.unique(pred) if j != 0]
    iou = np.zeros((len(gt_ids), len(pred_ids)))
    for a, i in enumerate(gt_ids):
        for b, j in enumerate(pred_ids):
            inter = np.logical_and(gt == i, pred == j).sum()
            iou[a, b] = inter / np.logical_or(gt == i, pred == j).sum()
    n_gt, n_pred = len(gt_ids), len(pred_ids)

    def at(t: float) -> tuple[float, float, float, float]:
        tp = int((iou > t).any(axis=1).sum()) if n_gt and n_pred else 0
        if n_gt == 0 and n_pred == 0:
            return 1.0, 1.0, 1.0, 1.0
        dsb = tp / (n_gt + n_pred - tp)
        return dsb, tp / n_pred if n_pred else 0.0, tp / n_gt if n_gt else 0.0, 2 * tp / (n_gt + n_pred)

    per_t = np.array([at(t) for t in metrics.IOU_THRESHOLDS])
    matched = iou[iou > 0.5]
    empty = n_gt == 0 and n_pred == 0
    best_gt = iou.max(axis=1) if n_pred else np.zeros(n_gt)
    best_pred = iou.max(axis=0) if n_gt else np.zeros(n_pred)
    return {
        "dsb": per_t[:, 0].mean(), "map": per_t[:, 1].mean(), "mar": per_t[:, 2].mean(),
        "mf1": per_t[:, 3].mean(), "f1_50": at(0.5)[3], "f1_70": at(0.7)[3],
        "mean_iou": matched.mean() if matched.size else (1.0 if empty else 0.0),
        "n_gt": n_gt, "n_pred": n_pred, "matched": matched.size,
        "missed": int((best_gt < 0.7).sum()), "extra": int((best_pred < 0.7).sum()),
        "merges": int(((iou >= 0.1).sum(axis=0) >= 2).sum()),
        "splits": int(((iou >= 0.1).sum(axis=1) >= 2).sum()),
    }  # fmt: skip


def _blocky_labels(cells: np.ndarray) -> np.ndarray:
    """Upsample a small id grid 3x so objects are blobs of several pixels, as in real label images."""
    return np.kron(cells, np.ones((3, 3), dtype=cells.dtype))


label_grids = arrays(np.int32, (6, 7), elements=st.integers(0, 5))


@settings(max_examples=60, deadline=None)
@given(gt_cells=label_grids, pred_cells=label_grids)
def test_agrees_with_the_brute_force_oracle(gt_cells, pred_cells):
    gt, pred = _blocky_labels(gt_cells), _blocky_labels(pred_cells)
    scores, expected = metrics.score_image(gt, pred), _oracle(gt, pred)
    for key, value in expected.items():
        assert scores[key] == pytest.approx(value), key


@settings(max_examples=60, deadline=None)
@given(gt_cells=label_grids, pred_cells=label_grids, data=st.data())
def test_scores_do_not_change_under_any_permutation_of_ids(gt_cells, pred_cells, data):
    gt, pred = _blocky_labels(gt_cells), _blocky_labels(pred_cells)
    new_ids = st.lists(st.integers(1, 2**31 - 1), min_size=5, max_size=5, unique=True)
    gt_map = np.array([0, *data.draw(st.permutations(range(1, 6)))])  # a permutation of 1..5
    pred_map = np.array([0, *data.draw(new_ids)])  # any relabelling to distinct positive ids
    relabelled, original = metrics.score_image(gt_map[gt], pred_map[pred]), metrics.score_image(gt, pred)
    assert relabelled.keys() == original.keys()
    for key, value in original.items():  # means may sum in another order: equal up to rounding
        assert relabelled[key] == pytest.approx(value, rel=1e-12, abs=1e-12), key


def test_sparse_and_dense_pair_counts_agree(monkeypatch):
    rng = np.random.default_rng(3)
    gt = _blocky_labels(rng.integers(0, 120, (20, 20)).astype(np.int32))  # many objects, few pixels each
    pred = np.roll(gt, 1, axis=1)
    dense = metrics.overlaps(gt, pred)
    monkeypatch.setattr(metrics, "_DENSE_PAIR_LIMIT", -1)
    sparse = metrics.overlaps(gt, pred)
    assert dense.n_gt * dense.n_pred > 2 * gt.size  # really took the np.unique path
    for field in ("pair_gt", "pair_pred", "intersection", "iou"):
        np.testing.assert_array_equal(getattr(dense, field), getattr(sparse, field))
