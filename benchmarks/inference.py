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
import time
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.common import RESULTS, git_commit, machine
from benchmarks.inference_setup import (
    DATA,
    DEFAULT_CHECKPOINT,
    TILE_PARAMS,
    in_fresh_process,
    load_maskrcnn,
    peak_memory_mb,
    pick_images,
)
from benchmarks.inference_tiled import maskrcnn_tiled_vs_whole, tiled_vs_whole
from nucleaizer import io, metrics
from nucleaizer.baseline import ClassicalPredictor
from nucleaizer.infer.nucleus_segmenter import NucleusSegmenter
from nucleaizer.size import SizeRule, median_diameter


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
        **peak_memory_mb(device),
    }


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
