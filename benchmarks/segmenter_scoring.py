"""Scoring a segmenter checkpoint on held-out DSB 2018 images at their oracle size, beside Otsu + watershed: the
scoring half of benchmarks/segmenter.py, also used by the GPU check and the generalist benchmark."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from nucleaizer import size
from nucleaizer.segmenter import MaskRCNNPredictor, load_segmenter

# manifest group -> the name the reports use
GROUPS = {
    "gray_darkbg_fluorescence": "fluorescence",
    "gray_brightbg_brightfield": "brightfield",
    "colour_brightbg_HE_like": "tissue",
}
log = logging.getLogger("benchmark.segmenter")


def oracle_scale(gt: np.ndarray, size_cfg: dict) -> float:
    """The factor that brings the ground truth's median diameter to the target (the oracle size rule)."""
    diameter = size.median_diameter(gt, min_area_px=size_cfg["min_object_area_px"])
    return size.scale_factor(
        diameter or size_cfg["target_diameter_px"],
        size_cfg["target_diameter_px"],
        size_cfg["min_scale"],
        size_cfg["max_scale"],
    )


def labels_by_method(
    predict, scaled: np.ndarray, score_thresholds: list[float], transforms: list[str], match_iou: float = 0.5
) -> dict[str, dict[float, np.ndarray]]:
    """Label images (at the scaled size) of the instances scored >= each threshold, painted by score.

    ``model``: the prediction of the image itself (the first transform, identity). With more transforms,
    ``model_tta`` too: the vote of all views (nucleaizer.infer.tta), each view thresholded before the vote.
    """
    from nucleaizer.infer.tta import TRANSFORMS, vote
    from nucleaizer.instances import paint_instances

    views = []
    for name in transforms:
        forward, inverse = TRANSFORMS[name]
        moved = np.ascontiguousarray(forward(scaled))
        views.append((predict(moved), inverse, moved.shape[:2]))
    result: dict[str, dict[float, np.ndarray]] = (
        {"model": {}, "model_tta": {}} if len(views) > 1 else {"model": {}}
    )
    for score in score_thresholds:
        painted = [
            paint_instances(found.select(np.flatnonzero(found.scores >= score)), shape)
            for found, _, shape in views
        ]
        labels = [
            np.ascontiguousarray(inverse(lab))
            for (lab, _), (_, inverse, _) in zip(painted, views, strict=True)
        ]
        result["model"][score] = labels[0]
        if len(views) > 1:
            result["model_tta"][score] = vote(labels, [scores for _, scores in painted], match_iou)[0]
    return result


def choose_thresholds(
    predictor,
    predict,
    samples,
    size_cfg: dict,
    score_thresholds: list[float],
    mask_thresholds: list[float],
    transforms: list[str],
) -> dict[str, dict]:
    """Per method, the detection score and mask thresholds with the best mean DSB on the validation split."""
    from nucleaizer import metrics

    totals: dict[str, dict[tuple[float, float], float]] = {}
    for sample in samples:
        image, gt = sample.read_image(), sample.read_labels()
        scaled = size.rescale_image(image, oracle_scale(gt, size_cfg))
        for mask in mask_thresholds:
            predictor.mask_threshold = mask
            for method, by_score in labels_by_method(predict, scaled, score_thresholds, transforms).items():
                for score, labels in by_score.items():
                    dsb = metrics.dsb_score(gt, size.rescale_labels(labels, gt.shape)) / len(samples)
                    totals.setdefault(method, {}).setdefault((score, mask), 0.0)
                    totals[method][score, mask] += dsb
    chosen = {}
    for method, by_pair in totals.items():
        score, mask = max(by_pair, key=by_pair.get)
        chosen[method] = {
            "chosen": score,
            "mask_threshold": mask,
            "val_dsb": {f"score {s} mask {m}": round(v, 4) for (s, m), v in by_pair.items()},
        }
    return chosen


def evaluate(
    samples,
    checkpoint: Path,
    manifest: pd.DataFrame,
    size_cfg: dict,
    val_samples,
    thresholds: list[float],
    mask_thresholds: list[float],
    transforms: list[str],
    with_baseline: bool = True,
    device: str = "cpu",
) -> tuple[pd.DataFrame, dict, dict]:
    """Per-image scores of the model (and, with_baseline, of Otsu + watershed), timing, chosen thresholds."""
    from nucleaizer import baseline, metrics
    from nucleaizer.infer.tiling import TileParams, predict_image

    model, _ = load_segmenter(checkpoint, device=device)
    model.roi_heads.score_thresh = min(thresholds)
    predictor = MaskRCNNPredictor(model, device=device, batch_size=1)
    # large images go through the inference tiling (512 px tiles, 64 px overlap), as infer.py does
    tile_params = TileParams(tile_size=512, overlap=64, batch_size=1)

    def predict(scaled: np.ndarray):
        return predict_image(scaled, predictor, tile_params)

    chosen = choose_thresholds(
        predictor, predict, val_samples, size_cfg, thresholds, mask_thresholds, transforms
    )
    log.info("thresholds chosen on the validation split: %s", chosen)
    rows = []
    timing = {"model_s": 0.0, "baseline_s": 0.0, "megapixels": 0.0}
    for sample in tqdm(samples, desc="test images", mininterval=30):
        image, gt = sample.read_image(), sample.read_labels()
        scale = oracle_scale(gt, size_cfg)
        scaled = size.rescale_image(image, scale)
        started = time.perf_counter()
        predicted = {}
        for mask in sorted({c["mask_threshold"] for c in chosen.values()}):
            predictor.mask_threshold = mask
            scores = sorted({c["chosen"] for c in chosen.values() if c["mask_threshold"] == mask})
            for method, by_score in labels_by_method(predict, scaled, scores, transforms).items():
                if chosen[method]["mask_threshold"] == mask:
                    predicted[method] = size.rescale_labels(by_score[chosen[method]["chosen"]], gt.shape)
        timing["model_s"] += time.perf_counter() - started
        timing["megapixels"] += gt.size / 1e6
        if with_baseline:
            started = time.perf_counter()
            predicted["baseline_original_scale"] = baseline.segment_classical(image)
            predicted["baseline_oracle_scale"] = size.rescale_labels(
                baseline.segment_classical(scaled), gt.shape
            )
            timing["baseline_s"] += time.perf_counter() - started
        group = GROUPS[manifest.loc[sample.name, "group"]]
        for method, labels in predicted.items():
            rows.append(
                {
                    "image": sample.name,
                    "group": group,
                    "method": method,
                    "scale": scale,
                    **metrics.score_image(gt, labels),
                }
            )
    return pd.DataFrame(rows), timing, chosen


def summarise(table: pd.DataFrame) -> dict:
    """method -> group ('all' and each) -> nucleaizer.metrics summary of a table of per-image scores."""
    from nucleaizer import metrics

    keys = (
        "images",
        "dsb",
        "map",
        "mar",
        "mf1",
        "f1_50",
        "f1_70",
        "mean_iou",
        "n_gt",
        "n_pred",
        "missed",
        "extra",
        "merges",
        "splits",
        "miss_rate",
    )
    result = {}
    for method, by_method in table.groupby("method"):
        result[method] = {}
        for group, rows in [("all", by_method), *by_method.groupby("group")]:
            scores = rows.drop(columns=[c for c in ("image", "group", "method", "scale") if c in rows])
            summary = metrics.summarize(scores.to_dict("records"))
            result[method][group] = {
                k: (round(v, 4) if isinstance(v, float) else v) for k, v in summary.items() if k in keys
            }
    return result
