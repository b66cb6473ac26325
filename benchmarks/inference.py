"""Inference benchmark: throughput, peak memory, and tiled vs whole-image prediction.

    python -m benchmarks.inference [--quick] [--device cpu|cuda] [--checkpoint PATH]

1. Throughput, in megapixels of *original* image per second, of the per-image path (rescaling to 40 px
   nuclei, tiles of 512 px overlapping by 64, painting, rescaling back) on real dsb2018_train images of the
   three groups, for the classical baseline (the in-run reference) and for Mask R-CNN (the trained
   checkpoint when there is one, else an untrained CPU-profile network: throughput only). The scale comes
   from the annotated diameter so every predictor does the same work; the size-estimation pass (a first pass
   of the same predictor on the original image) is timed too (``mp_per_s_with_estimation``) and its
   estimate compared with the annotated diameter. Each measurement runs in a fresh process and reports its
   peak resident memory (and peak CUDA memory on a GPU). The ratio of the two MP/s figures is what holds on
   a busy machine.
2. Tiled vs whole-image prediction on a mosaic of real fluorescence images (2048 x 2048; 1024 with --quick),
   rescaled by the size rule: the share of objects that differ (no partner at IoU > 0.5 in the other
   result), and the DSB score of both against the mosaic's ground truth. Predictors: the classical one with
   one fixed threshold (see tiled_vs_whole), and the trained Mask R-CNN (when the checkpoint exists; in a
   fresh process, with the same raised caps for the whole image and for each tile; see
   WHOLE_IMAGE_SETTINGS). ``--maskrcnn-mosaic`` gives Mask R-CNN a smaller mosaic where the whole image
   does not fit in memory.

Writes benchmarks/results/inference[_cuda][_quick].json and .md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import multiprocessing
import resource
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage
from skimage.filters import threshold_otsu

from benchmarks.common import RESULTS, git_commit, machine
from nucleaizer import io, metrics
from nucleaizer.baseline import ClassicalPredictor, nuclear_channel
from nucleaizer.infer.nucleus_segmenter import NucleusSegmenter
from nucleaizer.infer.tiling import TileParams, predict_image
from nucleaizer.instances import paint_instances
from nucleaizer.models import DEFAULT_MODEL, segmenter_file
from nucleaizer.size import SizeRule, median_diameter, rescale_image, rescale_labels

ROOT = Path(__file__).resolve().parent.parent

DATA = ROOT.parent / "shared" / "data" / "dsb2018_train"
DEFAULT_CHECKPOINT = segmenter_file(DEFAULT_MODEL)  # the shipped generalist
TILE_PARAMS = TileParams(tile_size=512, overlap=64, batch_size=4)
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


def pick_images(per_group: int) -> list[str]:
    """Image ids: the first ``per_group`` of each group of dsb2018_train, in id order (deterministic)."""
    manifest = pd.read_csv(DATA / "manifest.csv").sort_values("id")
    return [i for _, group in manifest.groupby("group") for i in group["id"].head(per_group)]


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


def load_maskrcnn(checkpoint: Path | None, device: str):
    """(MaskRCNNPredictor, description) from the checkpoint, or from an untrained CPU-profile network."""
    from nucleaizer import segmenter
    from nucleaizer.config_files import load_config

    if checkpoint is not None:
        model, arch = segmenter.load_segmenter(checkpoint, device=device)
        description = f"Mask R-CNN {arch.get('backbone')}, trained checkpoint {checkpoint}"
    else:
        import torch

        torch.manual_seed(0)
        conf = load_config("segmenter", "maskrcnn_small")
        arch = segmenter.arch_from_config(conf)
        model = segmenter.build_maskrcnn(**arch).to(device).eval()
        description = f"Mask R-CNN {arch.get('backbone')}, untrained (throughput only)"
    return segmenter.MaskRCNNPredictor(model, device=device, batch_size=TILE_PARAMS.batch_size), description


def _peak_rss_kb() -> int:
    """Peak resident memory of this process (kB): VmHWM on Linux, else ru_maxrss.

    ru_maxrss of a spawned worker starts at its parent's peak (Linux keeps it across fork and exec), which
    would charge a worker with the memory of the benchmark's main process; VmHWM is the worker's own.
    """
    try:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _peak_memory_mb(device: str) -> dict:
    peak = {"peak_rss_mb": round(_peak_rss_kb() / 1024, 1)}
    if device == "cuda":
        import torch

        peak["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return peak


def throughput_worker(kind: str, names: list[str], device: str, checkpoint: str | None) -> dict:
    """Time the whole per-image path over ``names``; runs in its own process (peak memory is its own)."""
    if kind == "classical":
        predictor, description = ClassicalPredictor(), "classical Otsu + watershed (nucleaizer.baseline)"
    else:
        predictor, description = load_maskrcnn(Path(checkpoint) if checkpoint else None, device)
    segmenter = NucleusSegmenter(predictor, size=SizeRule(), tiles=TILE_PARAMS)
    images = [io.read_image(DATA / "images" / f"{n}.png") for n in names]
    truths = [io.read_labels(DATA / "labels" / f"{n}.png") for n in names]
    segmenter.segment(images[0][:128, :128], diameter_px=20)  # warm-up (lazy initialisation, CUDA context)
    if device == "cuda":
        import torch

        torch.cuda.synchronize()
    rows = []
    for name, image, truth in zip(names, images, truths, strict=True):
        t0 = time.perf_counter()
        estimated = segmenter.estimate_diameter(image)
        t1 = time.perf_counter()
        # the segmentation itself runs at the scale of the annotated diameter, so every predictor (an untrained
        # one too) does the same amount of work; the estimate is timed and compared separately
        true_diameter = median_diameter(truth) or SizeRule().target_diameter_px
        scale = SizeRule().scale_for(true_diameter)
        labels = segmenter.segment(image, scale=scale)
        t2 = time.perf_counter()
        rows.append(
            {
                "image": name,
                "megapixels": image.shape[0] * image.shape[1] / 1e6,
                "scale": scale,
                "estimate_seconds": t1 - t0,
                "segment_seconds": t2 - t1,
                "nuclei": int(labels.max()),
                "diameter_ratio": (estimated / true_diameter) if estimated else np.nan,
                "dsb": metrics.dsb_score(truth, labels),
            }
        )
    table = pd.DataFrame(rows)
    megapixels = float(table["megapixels"].sum())
    segment_seconds = float(table["segment_seconds"].sum())
    total_seconds = segment_seconds + float(table["estimate_seconds"].sum())
    return {
        "predictor": description,
        "images": len(rows),
        "megapixels": round(megapixels, 3),
        "segment_seconds": round(segment_seconds, 2),
        "mp_per_s": round(megapixels / segment_seconds, 4),
        "mp_per_s_with_estimation": round(megapixels / total_seconds, 4),
        "mean_scale": round(float(table["scale"].mean()), 3),
        "median_estimated_over_true_diameter": round(float(table["diameter_ratio"].median()), 3),
        "images_without_estimate": int(table["diameter_ratio"].isna().sum()),
        "dsb": round(float(table["dsb"].mean()), 4),
        **_peak_memory_mb(device),
    }


def in_fresh_process(function, *args) -> dict:
    """``function(*args)`` in a new process; BrokenProcessPool when that process dies (e.g. out of memory)."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(function, *args).result()


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
    peak_tiled = _peak_memory_mb(device)["peak_rss_mb"]
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
            **_peak_memory_mb(device),
        }
    )
    return row


def write_markdown(path: Path, result: dict) -> None:
    lines = [
        f"# Inference benchmark ({result['date']})",
        "",
        f"Machine: {result['machine']}; commit {result['commit']}; device {result['device']}; "
        f"{'quick' if result['quick'] else 'full'} run.",
        "",
        f"Tiles {TILE_PARAMS.tile_size} px, overlap {TILE_PARAMS.overlap} px, batch {TILE_PARAMS.batch_size}; "
        "nuclei rescaled to 40 px using the annotated diameter (same work for every predictor); the size "
        "estimation pass (same predictor, original scale) is timed separately.",
        "",
        "## Throughput (megapixels of original image per second)",
        "",
        "| predictor | images | MP | segment s | MP/s | MP/s incl. size estimation | mean scale | "
        "estimated / true diameter (median) | DSB | peak RSS MB | peak CUDA MB |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in result["throughput"]:
        lines.append(
            f"| {row['predictor']} | {row['images']} | {row['megapixels']} | {row['segment_seconds']} | "
            f"{row['mp_per_s']} | {row['mp_per_s_with_estimation']} | {row['mean_scale']} | "
            f"{row['median_estimated_over_true_diameter']} | {row['dsb']} | {row['peak_rss_mb']} | "
            f"{row.get('peak_cuda_mb', '-')} |"
        )
    first = result["tiled_vs_whole"][0]
    lines += [
        "",
        "## Tiled vs whole-image prediction",
        "",
        f"Mosaic {first['mosaic_px']} x {first['mosaic_px']} px of real fluorescence images "
        f"({first['gt_objects']} annotated nuclei, median diameter {first['median_gt_diameter_px']} px), "
        f"rescaled by {first['scale']} to {first['working_px'][0]} x {first['working_px'][1]} px. "
        "Differing = objects of either result without a partner at IoU > 0.5 in the other; share = "
        "differing / objects whole.",
        "",
        "| predictor | mosaic px | objects whole | objects tiled | matched | identical | differing share | "
        "DSB tiled | DSB whole | s tiled | s whole |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for t in result["tiled_vs_whole"]:
        lines.append(
            f"| {t['predictor']} | {t['mosaic_px']} | {t['n_whole']} | {t['n_tiled']} | {t['matched']} | "
            f"{t['identical']} | {100 * t['differing_share']:.2f}% | {t['dsb_tiled']} | {t['dsb_whole']} | "
            f"{t['tiled_seconds']} | {t['whole_seconds']} |"
        )
    for t in result["tiled_vs_whole"]:
        if "settings" in t:
            lines += [
                "",
                f"Mask R-CNN, the same settings for both runs: {t['settings']} (see WHOLE_IMAGE_SETTINGS); "
                f"the whole image gave {t['rpn_proposals_whole']} RPN proposals and {t['detections_whole']} "
                f"detections, the busiest tile {t['rpn_proposals_most_in_a_tile']} proposals "
                f"({'a cap was reached' if t['caps_reached'] else 'no cap reached'}). Confident objects "
                f"(score >= {t['confident_score']}, {t['confident_whole']} in the whole-image result) "
                f"without any object at IoU > 0.5 in the other result: {t['confident_differing']} "
                f"({100 * t['confident_differing_share']:.2f}%). Peak RSS of that process (mosaic, model, "
                f"predictions): {t['peak_rss_mb_tiled']} MB after the tiled run, {t['peak_rss_mb']} MB "
                "after the whole-image run.",
            ]
    for note in result.get("notes", []):
        lines += ["", note]
    lines.append("")
    path.write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer images and a 1024 px mosaic")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument(
        "--checkpoint",
        type=Path,
        default=DEFAULT_CHECKPOINT,
        help="trained segmenter .pt (save_segmenter); untrained network when it does not exist",
    )
    parser.add_argument(
        "--maskrcnn-mosaic",
        type=int,
        default=None,
        help="mosaic side (px) for Mask R-CNN tiled vs whole (default: the classical one's)",
    )
    args = parser.parse_args(argv)
    if not DATA.is_dir():
        raise SystemExit(f"error: {DATA} not found; the benchmark needs ../shared/data/dsb2018_train")
    checkpoint = args.checkpoint if args.checkpoint.is_file() else None
    names = pick_images(1 if args.quick else 4)
    throughput = [in_fresh_process(throughput_worker, "classical", names, "cpu", None)]
    print(json.dumps(throughput[-1]), flush=True)
    try:
        import nucleaizer.segmenter  # noqa: F401

        throughput.append(
            in_fresh_process(
                throughput_worker, "maskrcnn", names, args.device, str(checkpoint) if checkpoint else None
            )
        )
        print(json.dumps(throughput[-1]), flush=True)
    except ImportError as error:
        print(f"Mask R-CNN not measured: {error}", flush=True)
    side = 1024 if args.quick else 2048
    comparison, notes = tiled_vs_whole(side), []
    if checkpoint is None:
        notes.append(f"Mask R-CNN tiled vs whole not measured: no checkpoint at {args.checkpoint}.")
    else:
        # the whole rescaled mosaic goes through the network at once; where that runs out of memory, a smaller
        # mosaic is used instead (and said so)
        for mosaic in sorted(
            {args.maskrcnn_mosaic or side, (args.maskrcnn_mosaic or side) // 2}, reverse=True
        ):
            try:
                comparison.append(
                    in_fresh_process(maskrcnn_tiled_vs_whole, mosaic, str(checkpoint), args.device)
                )
                print(json.dumps(comparison[-1]), flush=True)
                break
            except (BrokenProcessPool, MemoryError, RuntimeError) as error:
                notes.append(
                    f"Mask R-CNN on the whole {mosaic} px mosaic failed ({type(error).__name__}: {error})."
                )
                print(notes[-1], flush=True)
        if comparison[-1].get("mosaic_px") != side and "settings" in comparison[-1]:
            notes.append(
                f"Mask R-CNN ran on a {comparison[-1]['mosaic_px']} px mosaic, not the {side} px one of "
                "the classical predictors."
            )
    result = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": machine(),
        "commit": git_commit(),
        "device": args.device,
        "quick": args.quick,
        "images": names,
        "tile_params": TILE_PARAMS.__dict__,
        "throughput": throughput,
        "tiled_vs_whole": comparison,
        "notes": notes,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    suffix = ("" if args.device == "cpu" else f"_{args.device}") + ("_quick" if args.quick else "")
    (RESULTS / f"inference{suffix}.json").write_text(json.dumps(result, indent=2) + "\n")
    write_markdown(RESULTS / f"inference{suffix}.md", result)
    print(f"wrote {RESULTS / f'inference{suffix}.json'} and .md")


if __name__ == "__main__":
    main()
