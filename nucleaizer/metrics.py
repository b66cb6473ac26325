"""Instance segmentation metrics, exactly as docs/method.md section 8 defines them.

Everything is computed from one sparse overlap count: the (ground-truth id, predicted id) pairs of the
pixels that belong to an object in both label images, counted with `np.bincount` (or `np.unique` when
the pair space is large). Object areas come from `np.bincount` too, so the cost is a few passes over the
pixels plus work proportional to the number of overlapping pairs; there is no loop over objects.

Definitions (per image; `t` runs over `IOU_THRESHOLDS`):
- a ground-truth object is a true positive at `t` when some prediction has IoU > t with it (strict);
  for t >= 0.5 this matching is one-to-one because instances in a label image do not overlap.
  FP = predictions - TP, FN = ground truth - TP.
- DSB score: mean over t of TP / (TP + FP + FN). mAP, mAR, mF1: mean over t of precision TP / predictions,
  recall TP / ground truth and F1 2 TP / (ground truth + predictions). F1 at 0.5 and 0.7.
  A ratio with a zero denominator is 1 when the image has neither ground truth nor prediction, else 0.
- mean IoU of the objects matched one-to-one at IoU > 0.5 (1 for an empty/empty image, 0 with no match).
- Error taxonomy (Caicedo et al. 2019): missed = ground-truth object with no prediction at IoU >= 0.7;
  extra = prediction with no ground-truth object at IoU >= 0.7; merge = prediction with IoU >= 0.1 with
  each of two or more ground-truth objects; split = ground-truth object with IoU >= 0.1 with each of two or
  more predictions. Misses are also counted per bin of ground-truth equivalent diameter.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from nucleaizer.errors import UserError

IOU_THRESHOLDS: tuple[float, ...] = tuple(float(t) for t in np.round(np.arange(0.50, 0.951, 0.05), 2))
ERROR_IOU = 0.7  # missed / extra: no partner at IoU >= this
COVER_IOU = 0.1  # merge / split: "covering" an object means IoU >= this with it
SIZE_BINS_PX: tuple[float, ...] = (10.0, 20.0, 40.0)  # equivalent-diameter edges of the miss bins

# Pair-space sizes up to this many cells are counted with a dense bincount; above it with a sort.
_DENSE_PAIR_LIMIT = 4_000_000


@dataclass(frozen=True)
class Overlaps:
    """Areas and pairwise overlaps of two label images, objects numbered 0..n-1 in increasing id order.

    `gt_area (G,)`, `pred_area (P,)` int64; `pair_gt`, `pair_pred (K,)` int64 object indices of each
    overlapping pair; `intersection (K,)` int64 pixels; `iou (K,)` float64.
    """

    gt_area: np.ndarray
    pred_area: np.ndarray
    pair_gt: np.ndarray
    pair_pred: np.ndarray
    intersection: np.ndarray
    iou: np.ndarray

    @property
    def n_gt(self) -> int:
        return len(self.gt_area)

    @property
    def n_pred(self) -> int:
        return len(self.pred_area)

    def best_iou_gt(self) -> np.ndarray:
        """(G,) float64: the highest IoU of each ground-truth object with any prediction (0 if none)."""
        best = np.zeros(self.n_gt)
        np.maximum.at(best, self.pair_gt, self.iou)
        return best

    def best_iou_pred(self) -> np.ndarray:
        """(P,) float64: the highest IoU of each prediction with any ground-truth object (0 if none)."""
        best = np.zeros(self.n_pred)
        np.maximum.at(best, self.pair_pred, self.iou)
        return best


def _check_labels(labels: np.ndarray, name: str) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"{name} must be a 2-D label image, got shape {labels.shape}")
    if labels.dtype == np.bool_:
        return labels.astype(np.uint8)
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{name} must hold integer ids, got dtype {labels.dtype}")
    if labels.size and labels.min() < 0:
        raise ValueError(f"{name} holds negative ids")
    if labels.dtype == np.uint64:  # np.bincount refuses uint64
        return labels.astype(np.int64)
    return labels


def _object_table(flat: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For a flat label array: (ids per pixel, area of each object, lookup id -> object index).

    Ids far larger than the image (e.g. random 32-bit ids) are first made compact with `np.unique`, so
    the per-id tables stay the size of the image.
    """
    if flat.size and int(flat.max()) > 4 * flat.size + 65_536:
        ids, flat = np.unique(flat, return_inverse=True)
        flat = flat.reshape(-1) + (1 if ids[0] != 0 else 0)  # keep 0 for background
    counts = np.bincount(flat)
    present = np.flatnonzero(counts[1:]) + 1
    lookup = np.full(len(counts), -1, dtype=np.int64)
    lookup[present] = np.arange(len(present))
    return flat, counts[present].astype(np.int64), lookup


def overlaps(gt: np.ndarray, pred: np.ndarray) -> Overlaps:
    """The sparse overlap table of two integer `(H, W)` label images (0 = background)."""
    gt = _check_labels(gt, "ground truth")
    pred = _check_labels(pred, "prediction")
    if gt.shape != pred.shape:
        raise UserError(f"ground truth {gt.shape} and prediction {pred.shape} differ in size")
    gt_flat, gt_area, gt_lookup = _object_table(gt.ravel())
    pred_flat, pred_area, pred_lookup = _object_table(pred.ravel())
    both = (gt_flat > 0) & (pred_flat > 0)
    n_pred = len(pred_area)
    keys = gt_lookup[gt_flat[both]] * n_pred + pred_lookup[pred_flat[both]]
    if len(gt_area) * n_pred <= max(_DENSE_PAIR_LIMIT, 2 * len(keys)):
        counts = np.bincount(keys, minlength=len(gt_area) * n_pred)
        keys = np.flatnonzero(counts)
        intersection = counts[keys]
    else:
        keys, intersection = np.unique(keys, return_counts=True)
    pair_gt, pair_pred = np.divmod(keys, max(n_pred, 1))
    intersection = intersection.astype(np.int64)
    union = gt_area[pair_gt] + pred_area[pair_pred] - intersection
    return Overlaps(gt_area, pred_area, pair_gt, pair_pred, intersection, intersection / union)


def _ratio(numerator: np.ndarray, denominator: np.ndarray | int, both_empty: bool) -> np.ndarray:
    """numerator / denominator, with 0/0 read as 1 for an empty/empty image and 0 otherwise."""
    numerator = np.asarray(numerator, dtype=np.float64)
    denominator = np.broadcast_to(np.asarray(denominator, dtype=np.float64), numerator.shape)
    safe = np.where(denominator > 0, denominator, 1.0)
    return np.where(denominator > 0, numerator / safe, 1.0 if both_empty else 0.0)


def size_bin_names(size_bins_px: Sequence[float] = SIZE_BINS_PX) -> list[str]:
    """Names of the equivalent-diameter bins, e.g. ['d0_10', 'd10_20', 'd20_40', 'd40_inf']."""
    edges = [0.0, *size_bins_px, np.inf]
    return [f"d{low:g}_{high:g}" for low, high in zip(edges[:-1], edges[1:], strict=True)]


def score_image(
    gt: np.ndarray,
    pred: np.ndarray,
    thresholds: Sequence[float] = IOU_THRESHOLDS,
    error_iou: float = ERROR_IOU,
    cover_iou: float = COVER_IOU,
    size_bins_px: Sequence[float] = SIZE_BINS_PX,
) -> dict[str, float | int]:
    """Score one predicted label image against its ground truth (both integer `(H, W)`, 0 = background).

    Returns floats `dsb, map, mar, mf1, f1_50, f1_70, mean_iou` and ints `n_gt, n_pred, matched` (one-to-one
    matches at IoU > 0.5), `missed, extra, merges, splits`, and per equivalent-diameter bin `n_gt_<bin>`
    and `missed_<bin>` (bins from `size_bin_names(size_bins_px)`). Thresholds must lie in [0.5, 1), where
    the matching is one-to-one.
    """
    thresholds = np.asarray(thresholds, dtype=np.float64)
    if thresholds.size == 0 or thresholds.min() < 0.5 or thresholds.max() >= 1.0:
        raise ValueError(f"IoU thresholds must lie in [0.5, 1), got {thresholds.tolist()}")
    table = overlaps(gt, pred)
    n_gt, n_pred = table.n_gt, table.n_pred
    both_empty = n_gt == 0 and n_pred == 0
    best_gt, best_pred = table.best_iou_gt(), table.best_iou_pred()

    all_thresholds = np.concatenate([thresholds, [0.5, 0.7]])
    tp = (best_gt[None, :] > all_thresholds[:, None]).sum(axis=1)
    dsb = _ratio(tp, n_gt + n_pred - tp, both_empty)
    precision = _ratio(tp, n_pred, both_empty)
    recall = _ratio(tp, n_gt, both_empty)
    f1 = _ratio(2 * tp, n_gt + n_pred, both_empty)
    n = len(thresholds)

    matched_iou = table.iou[table.iou > 0.5]
    mean_iou = float(matched_iou.mean()) if matched_iou.size else (1.0 if both_empty else 0.0)

    covering = table.iou >= cover_iou
    merges = int((np.bincount(table.pair_pred[covering], minlength=n_pred) >= 2).sum())
    splits = int((np.bincount(table.pair_gt[covering], minlength=n_gt) >= 2).sum())
    missed = best_gt < error_iou

    diameter = np.sqrt(4.0 * table.gt_area / np.pi)
    size_bin = np.digitize(diameter, np.asarray(size_bins_px, dtype=np.float64))
    n_bins = len(size_bins_px) + 1
    gt_per_bin = np.bincount(size_bin, minlength=n_bins)
    missed_per_bin = np.bincount(size_bin[missed], minlength=n_bins)

    scores: dict[str, float | int] = {
        "dsb": float(dsb[:n].mean()),
        "map": float(precision[:n].mean()),
        "mar": float(recall[:n].mean()),
        "mf1": float(f1[:n].mean()),
        "f1_50": float(f1[n]),
        "f1_70": float(f1[n + 1]),
        "mean_iou": mean_iou,
        "n_gt": n_gt,
        "n_pred": n_pred,
        "matched": int(matched_iou.size),
        "missed": int(missed.sum()),
        "extra": int((best_pred < error_iou).sum()),
        "merges": merges,
        "splits": splits,
    }
    for name, n_in_bin, n_missed in zip(
        size_bin_names(size_bins_px), gt_per_bin, missed_per_bin, strict=True
    ):
        scores[f"n_gt_{name}"] = int(n_in_bin)
        scores[f"missed_{name}"] = int(n_missed)
    return scores


def dsb_score(gt: np.ndarray, pred: np.ndarray, thresholds: Sequence[float] = IOU_THRESHOLDS) -> float:
    """The DSB 2018 score of one image: mean over IoU thresholds of TP / (TP + FP + FN)."""
    return float(score_image(gt, pred, thresholds=thresholds)["dsb"])


def summarize(per_image: Sequence[dict]) -> dict[str, float | int | None]:
    """Dataset figures from `score_image` results (extra keys such as a file name are ignored).

    Float scores are averaged over images (the DSB dataset score is the mean of the image scores), except
    `mean_iou`, averaged over all matched objects of the dataset. Integer counts are summed. Adds `images`,
    `miss_rate` (missed / ground truth) and `miss_rate_<bin>` per size bin (None for an empty bin).
    """
    if not per_image:
        raise UserError("no images to summarise")
    summary: dict[str, float | int | None] = {}
    for key, first in per_image[0].items():
        values = [scores[key] for scores in per_image]
        if isinstance(first, bool) or not isinstance(first, int | float | np.number):
            continue
        if isinstance(first, int | np.integer):
            summary[key] = int(np.sum(values))
        else:
            summary[key] = float(np.mean(values))
    if "matched" in summary and "mean_iou" in summary:
        matched = np.array([scores["matched"] for scores in per_image], dtype=np.float64)
        if matched.sum() > 0:
            iou = np.array([scores["mean_iou"] for scores in per_image])
            summary["mean_iou"] = float((iou * matched).sum() / matched.sum())
    for key in [k for k in summary if k.startswith("missed")]:
        n_gt = summary.get(key.replace("missed", "n_gt", 1))
        if n_gt is not None:
            rate_key = key.replace("missed", "miss_rate", 1)
            summary[rate_key] = float(summary[key] / n_gt) if n_gt else None
    summary["images"] = len(per_image)
    return summary
