"""Tiled vs whole-image prediction on a mosaic of real fluorescence images: the share of objects that differ
and the DSB of both (benchmarks/inference.py, part 2)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage
from skimage.filters import threshold_otsu

from benchmarks.inference_setup import DATA, TILE_PARAMS, load_maskrcnn, peak_memory_mb
from nucleaizer import io, metrics
from nucleaizer.baseline import ClassicalPredictor, nuclear_channel
from nucleaizer.infer.tiling import predict_image
from nucleaizer.instances import paint_instances
from nucleaizer.size import SizeRule, median_diameter, rescale_image, rescale_labels

MOSAIC_CELL = 256
# Mask R-CNN settings for tiled vs whole, the same for the whole image and for every tile so both see the same
# limits. The CPU profile's caps (RPN 2000 per level before NMS, 1000 after, 500 detections) are meant for one
# 512 px tile, where about 7000 proposals survive the RPN's NMS; the whole rescaled mosaic would need about
# 900k. Keeping only proposals of objectness >= 0.05 (torchvision's rpn score_thresh, default 0; on sample
# tiles it leaves the detections of the default settings unchanged) brings that to tens of thousands, under
# caps high enough that none is reached (checked and reported; the pre-NMS cap exceeds the anchor count).
WHOLE_IMAGE_SETTINGS = {
    "rpn_score_thresh": 0.05,
    "rpn_pre_nms_top_n": 10_000_000,
    "rpn_post_nms_top_n": 200_000,
    "detections_per_img": 8000,
}
CONFIDENT_SCORE = 0.9


def build_mosaic(side: int) -> tuple[np.ndarray, np.ndarray]:
    """Mosaic (side x side) of 256 x 256 crops of grey fluorescence images and its ground-truth labels."""
    manifest = pd.read_csv(DATA / "manifest.csv").sort_values("id")
    candidates = manifest[
        (manifest["group"] == "gray_darkbg_fluorescence")
        & (manifest["height"] >= MOSAIC_CELL)
        & (manifest["width"] >= MOSAIC_CELL)
        & (manifest["n_nuclei"] >= 10)
    ]
    cells = side // MOSAIC_CELL
    image = np.zeros((side, side, 3), np.uint8)
    labels = np.zeros((side, side), np.int32)
    offset = 0
    for k, name in enumerate(candidates["id"].head(cells * cells)):
        y, x = divmod(k, cells)
        window = (
            slice(y * MOSAIC_CELL, (y + 1) * MOSAIC_CELL),
            slice(x * MOSAIC_CELL, (x + 1) * MOSAIC_CELL),
        )
        image[window] = io.read_image(DATA / "images" / f"{name}.png")[:MOSAIC_CELL, :MOSAIC_CELL]
        crop = io.read_labels(DATA / "labels" / f"{name}.png")[:MOSAIC_CELL, :MOSAIC_CELL]
        labels[window] = np.where(crop > 0, crop + offset, 0)
        offset += int(crop.max())
    return image, labels


def differing_objects(whole: np.ndarray, tiled: np.ndarray) -> dict:
    """Object counts, pairs matched at IoU > 0.5 (one-to-one: instances do not overlap), identical objects."""
    table = metrics.overlaps(whole, tiled)
    return {
        "n_whole": table.n_gt,
        "n_tiled": table.n_pred,
        "matched": int((table.iou > 0.5).sum()),
        "identical": int((table.iou >= 0.999).sum()),
    }


def rescaled_mosaic(side: int) -> tuple[np.ndarray, np.ndarray, float, float, np.ndarray]:
    """(mosaic, its labels, median diameter, scale, mosaic rescaled to 40 px nuclei)."""
    image, truth = build_mosaic(side)
    diameter = median_diameter(truth)
    scale = SizeRule().scale_for(diameter)
    return image, truth, diameter, scale, rescale_image(image, scale)


def comparison_row(
    description: str,
    side: int,
    truth: np.ndarray,
    diameter: float,
    scale: float,
    tiled: np.ndarray,
    whole: np.ndarray,
    tiled_seconds: float,
    whole_seconds: float,
) -> dict:
    """Objects differing between tiled and whole label images (working scale), and both DSB scores."""
    counts = differing_objects(whole, tiled)
    differ = (counts["n_whole"] - counts["matched"]) + (counts["n_tiled"] - counts["matched"])
    back = {k: rescale_labels(v, truth.shape) for k, v in (("tiled", tiled), ("whole", whole))}
    return {
        "predictor": description,
        "mosaic_px": side,
        "median_gt_diameter_px": round(diameter, 2),
        "scale": round(scale, 3),
        "working_px": list(tiled.shape),
        **counts,
        "differing_objects": differ,
        "differing_share": round(differ / max(counts["n_whole"], 1), 5),
        "tiled_seconds": round(tiled_seconds, 2),
        "whole_seconds": round(whole_seconds, 2),
        "dsb_tiled": round(metrics.dsb_score(truth, back["tiled"]), 4),
        "dsb_whole": round(metrics.dsb_score(truth, back["whole"]), 4),
        "gt_objects": int(truth.max()),
    }


def tiled_vs_whole(side: int) -> list[dict]:
    """Tiled and whole-image prediction of the same rescaled mosaic; share of differing objects.

    Two classical predictors with one fixed threshold (Otsu's over the whole mosaic), so that only the tiling
    and the predictor's own reach can make the results differ: thresholded components (no watershed; exactly
    local, so any difference is the merging's fault) and the watershed baseline (its h-maxima and distance
    transform see the whole clump of touching nuclei, so clumps cut by a tile edge may split differently).
    """
    _, truth, diameter, scale, working = rescaled_mosaic(side)
    channel, _ = nuclear_channel(working)
    threshold = float(threshold_otsu(ndimage.gaussian_filter(channel, ClassicalPredictor.smooth_sigma_px)))
    rows = []
    for description, predictor in (
        ("thresholded components (exactly local)", ClassicalPredictor(threshold=threshold, split_depth_px=0)),
        ("classical watershed baseline", ClassicalPredictor(threshold=threshold)),
    ):
        t0 = time.perf_counter()
        tiled = paint_instances(predict_image(working, predictor, TILE_PARAMS), working.shape[:2])[0]
        t1 = time.perf_counter()
        whole = predictor.segment(working)
        t2 = time.perf_counter()
        rows.append(
            comparison_row(
                f"{description}, fixed threshold {threshold:.3f}",
                side,
                truth,
                diameter,
                scale,
                tiled,
                whole,
                t1 - t0,
                t2 - t1,
            )
        )
        print(json.dumps(rows[-1]), flush=True)
    return rows


def confident_differing(
    whole: np.ndarray,
    whole_scores: np.ndarray,
    tiled: np.ndarray,
    tiled_scores: np.ndarray,
    min_score: float = CONFIDENT_SCORE,
) -> dict:
    """Objects of score >= min_score in either result with no object at all at IoU > 0.5 in the other."""
    table = metrics.overlaps(whole, tiled)
    best_whole, best_tiled = np.zeros(table.n_gt), np.zeros(table.n_pred)
    np.maximum.at(best_whole, table.pair_gt, table.iou)
    np.maximum.at(best_tiled, table.pair_pred, table.iou)
    confident_whole, confident_tiled = whole_scores >= min_score, tiled_scores >= min_score
    differ = int((best_whole[confident_whole] <= 0.5).sum() + (best_tiled[confident_tiled] <= 0.5).sum())
    return {
        "confident_score": min_score,
        "confident_whole": int(confident_whole.sum()),
        "confident_differing": differ,
        "confident_differing_share": round(differ / max(int(confident_whole.sum()), 1), 5),
    }


def maskrcnn_tiled_vs_whole(side: int, checkpoint: str, device: str) -> dict:
    """Tiled vs whole-image Mask R-CNN on the rescaled mosaic; runs in its own process (peak memory is its own).

    The predictor pastes each mask into its own box only, so the whole image costs no full-image mask per
    detection. WHOLE_IMAGE_SETTINGS apply to both runs; the largest proposal and detection counts are reported
    beside the caps (a cap reached would make the two differ for that reason alone).
    """
    _, truth, diameter, scale, working = rescaled_mosaic(side)
    predictor, description = load_maskrcnn(Path(checkpoint), device)
    model = predictor.model
    model.rpn.score_thresh = WHOLE_IMAGE_SETTINGS["rpn_score_thresh"]
    model.rpn._pre_nms_top_n["testing"] = WHOLE_IMAGE_SETTINGS["rpn_pre_nms_top_n"]
    model.rpn._post_nms_top_n["testing"] = WHOLE_IMAGE_SETTINGS["rpn_post_nms_top_n"]
    model.roi_heads.detections_per_img = WHOLE_IMAGE_SETTINGS["detections_per_img"]
    proposals, anchors = [], []
    model.rpn.register_forward_hook(lambda module, inputs, output: proposals.append(max(map(len, output[0]))))
    model.rpn.anchor_generator.register_forward_hook(
        lambda module, inputs, output: anchors.append(len(output[0]))
    )
    t0 = time.perf_counter()
    tiled, tiled_scores = paint_instances(predict_image(working, predictor, TILE_PARAMS), working.shape[:2])
    t1 = time.perf_counter()
    peak_tiled = peak_memory_mb(device)["peak_rss_mb"]
    most_tile_proposals = max(proposals)
    instances = predictor([working])[0]
    whole, whole_scores = paint_instances(instances, working.shape[:2])
    t2 = time.perf_counter()
    row = comparison_row(description, side, truth, diameter, scale, tiled, whole, t1 - t0, t2 - t1)
    caps_reached = (
        anchors[-1] >= WHOLE_IMAGE_SETTINGS["rpn_pre_nms_top_n"]
        or proposals[-1] >= WHOLE_IMAGE_SETTINGS["rpn_post_nms_top_n"]
        or len(instances) >= WHOLE_IMAGE_SETTINGS["detections_per_img"]
    )
    row.update(
        {
            **confident_differing(whole, whole_scores, tiled, tiled_scores),
            "settings": WHOLE_IMAGE_SETTINGS,
            "anchors_whole": anchors[-1],
            "rpn_proposals_whole": proposals[-1],
            "rpn_proposals_most_in_a_tile": most_tile_proposals,
            "detections_whole": len(instances),
            "caps_reached": bool(caps_reached),
            "peak_rss_mb_tiled": peak_tiled,
            **peak_memory_mb(device),
        }
    )
    return row
