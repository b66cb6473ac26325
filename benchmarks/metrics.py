"""Speed of nucleaizer.metrics on real and large label images, against the usual dense baseline.

    python -m benchmarks.metrics [--quick] [--data ../shared/data/dsb2018_train]

1. The labelled images of dsb2018_train against copies whose objects are eroded by one pixel (label-wise):
   reading, eroding and scoring are timed separately (target: scoring all 664 images in under 10 s).
2. One 2000x2000 label image with 5,000 objects against a shifted, eroded, relabelled copy (target: < 1 s).

Baseline, measured in the same run on the same pairs: the DSB score as the widely copied Kaggle kernel
computes it, from a dense (objects x objects) `np.histogram2d`; its scores must equal ours. Scoring times are
the best of `--repeats` runs (the machine is shared; the best run is the one least disturbed), wall clock and
process CPU time both reported. Writes benchmarks/results/metrics.json and .md.
"""

from __future__ import annotations

import argparse
import datetime
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from scipy import ndimage

from benchmarks.common import git_commit, machine, write_report
from nucleaizer import io, metrics, simulate

ROOT = Path(__file__).resolve().parent.parent


def erode_labels(labels: np.ndarray) -> np.ndarray:
    """Erode every object by one pixel (4-connected), label-wise: a pixel stays when its 4 neighbours share its id."""
    cross = ndimage.generate_binary_structure(2, 1)
    low = ndimage.minimum_filter(labels, footprint=cross, mode="constant", cval=0)
    high = ndimage.maximum_filter(labels, footprint=cross, mode="constant", cval=0)
    return np.where((low == labels) & (high == labels), labels, 0).astype(labels.dtype)


def dense_dsb_baseline(gt: np.ndarray, pred: np.ndarray) -> float:
    """The DSB score the common Kaggle way: dense histogram2d of compacted ids, IoU matrix, loop over t."""
    gt = np.unique(gt, return_inverse=True)[1].reshape(gt.shape)
    pred = np.unique(pred, return_inverse=True)[1].reshape(pred.shape)
    n_true, n_pred = gt.max() + 1, pred.max() + 1
    intersection = np.histogram2d(gt.ravel(), pred.ravel(), bins=(n_true, n_pred))[0]
    area_true = np.histogram(gt, bins=n_true)[0][:, None]
    area_pred = np.histogram(pred, bins=n_pred)[0][None, :]
    iou = (intersection / (area_true + area_pred - intersection))[1:, 1:]
    if iou.size == 0:
        return 1.0 if iou.shape == (0, 0) else 0.0
    scores = []
    for t in metrics.IOU_THRESHOLDS:
        matches = iou > t
        tp = np.sum(matches.sum(axis=1) == 1)
        fp = np.sum(matches.sum(axis=0) == 0)
        fn = np.sum(matches.sum(axis=1) == 0)
        scores.append(tp / (tp + fp + fn))
    return float(np.mean(scores))


def timed(function: Callable[[], object], repeats: int) -> tuple[object, float, float, list[float]]:
    """(result, best wall s, CPU s of that run, all wall times)."""
    walls, cpus, result = [], [], None
    for _ in range(repeats):
        wall0, cpu0 = time.perf_counter(), time.process_time()
        result = function()
        walls.append(time.perf_counter() - wall0)
        cpus.append(time.process_time() - cpu0)
    best = int(np.argmin(walls))
    return result, walls[best], cpus[best], walls


def big_image_pair(n_objects: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(gt, pred): `n_objects` simulated nuclei on a size x size canvas; pred shifted, eroded, relabelled."""
    rng = np.random.default_rng(seed)
    gt = simulate.random_labels((size, size), int(n_objects * 1.3), diameter_px=20, rng=rng)
    if gt.max() < n_objects:
        raise RuntimeError(f"only {gt.max()} objects fit; lower --objects")
    gt[gt > n_objects] = 0
    new_ids = np.concatenate([[0], rng.permutation(n_objects) + 1])
    pred = new_ids[erode_labels(np.roll(gt, (1, 2), axis=(0, 1)))]
    return gt, pred.astype(np.int32)


def run(data: Path, quick: bool, repeats: int, n_objects: int, size: int) -> dict:
    samples = io.list_samples(data, require_labels=True)
    if quick:
        samples = samples[:64]
    wall0 = time.perf_counter()
    gts = [sample.read_labels() for sample in samples]
    read_s = time.perf_counter() - wall0
    wall0 = time.perf_counter()
    preds = [erode_labels(gt) for gt in gts]
    erode_s = time.perf_counter() - wall0
    n_pixels = int(sum(gt.size for gt in gts))
    print(f"{len(gts)} images, {n_pixels / 1e6:.1f} Mpx: read {read_s:.2f} s, erode {erode_s:.2f} s")

    per_image, score_s, score_cpu_s, score_walls = timed(
        lambda: [metrics.score_image(gt, pred) for gt, pred in zip(gts, preds, strict=True)], repeats
    )
    summary = metrics.summarize(per_image)
    baseline, base_s, base_cpu_s, _ = timed(
        lambda: [dense_dsb_baseline(gt, pred) for gt, pred in zip(gts, preds, strict=True)], 1
    )
    max_diff = float(np.max(np.abs(np.array(baseline) - [s["dsb"] for s in per_image])))
    print(f"score all: {score_s:.2f} s wall ({score_cpu_s:.2f} s CPU); dense baseline {base_s:.2f} s; "
          f"DSB {summary['dsb']:.4f}, max |ours - baseline| {max_diff:.1e}")  # fmt: skip

    gt, pred = big_image_pair(n_objects, size, seed=0)
    big, big_s, big_cpu_s, big_walls = timed(lambda: metrics.score_image(gt, pred), repeats)
    big_base, big_base_s, big_base_cpu_s, _ = timed(lambda: dense_dsb_baseline(gt, pred), 1)
    print(f"{size}x{size}, {n_objects} objects: {big_s:.3f} s wall ({big_cpu_s:.3f} s CPU); "
          f"dense baseline {big_base_s:.2f} s; DSB {big['dsb']:.4f} vs baseline {big_base:.4f}")  # fmt: skip

    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "commit": git_commit(),
        "machine": machine(),
        "config": {"data": str(data), "quick": quick, "repeats": repeats, "erosion": "1 px, 4-connected, label-wise",
                   "big_image": {"size": size, "objects": n_objects, "diameter_px": 20,
                                 "prediction": "shifted (1, 2) px, eroded 1 px, ids permuted"},
                   "thresholds": list(metrics.IOU_THRESHOLDS), "size_bins_px": list(metrics.SIZE_BINS_PX)},
        "dataset": {
            "images": len(gts), "megapixels": round(n_pixels / 1e6, 2), "objects": summary["n_gt"],
            "read_s": round(read_s, 3), "erode_s": round(erode_s, 3),
            "score_s": round(score_s, 3), "score_cpu_s": round(score_cpu_s, 3),
            "score_s_all_repeats": [round(w, 3) for w in score_walls],
            "baseline_dense_dsb_s": round(base_s, 3), "baseline_dense_dsb_cpu_s": round(base_cpu_s, 3),
            "speedup_vs_baseline": round(base_s / score_s, 1), "max_abs_dsb_difference_vs_baseline": max_diff,
            "scores_eroded_vs_original": {k: summary[k] for k in
                                          ("dsb", "map", "mar", "mf1", "f1_50", "f1_70", "mean_iou", "missed",
                                           "extra", "merges", "splits", "miss_rate_d0_10", "miss_rate_d10_20",
                                           "miss_rate_d20_40", "miss_rate_d40_inf")},
        },
        "big_image": {
            "score_s": round(big_s, 4), "score_cpu_s": round(big_cpu_s, 4),
            "score_s_all_repeats": [round(w, 4) for w in big_walls],
            "baseline_dense_dsb_s": round(big_base_s, 3), "baseline_dense_dsb_cpu_s": round(big_base_cpu_s, 3),
            "speedup_vs_baseline": round(big_base_s / big_s, 1),
            "dsb": big["dsb"], "baseline_dsb": big_base, "n_gt": big["n_gt"], "n_pred": big["n_pred"],
        },
    }  # fmt: skip


def markdown(result: dict) -> str:
    d, b, m = result["dataset"], result["big_image"], result["machine"]
    return f"""# Metric speed benchmark

`python -m benchmarks.metrics{" --quick" if result["config"]["quick"] else ""}` on {result["date"]}, commit
`{result["commit"]}`; {m["platform"]}, {m["cpu_count"]} CPUs (shared; 1-min load average {m["load_average_1min_at_start"]:.1f}
at start), numpy {m["numpy"]}, torch {m["torch"]}. Times are the best of {result["config"]["repeats"]} runs.

| task | nucleaizer.metrics | dense histogram2d baseline (DSB only) | speed-up |
| --- | --- | --- | --- |
| {d["images"]} dsb2018_train images ({d["megapixels"]} Mpx, {d["objects"]} objects) vs 1-px eroded copies, all metrics | {d["score_s"]:.2f} s ({d["score_cpu_s"]:.2f} s CPU) | {d["baseline_dense_dsb_s"]:.2f} s | {d["speedup_vs_baseline"]}x |
| one {result["config"]["big_image"]["size"]}x{result["config"]["big_image"]["size"]} image, {b["n_gt"]} objects | {b["score_s"]:.3f} s ({b["score_cpu_s"]:.3f} s CPU) | {b["baseline_dense_dsb_s"]:.2f} s | {b["speedup_vs_baseline"]}x |

Outside the scoring: reading the {d["images"]} label PNGs took {d["read_s"]:.2f} s, eroding them {d["erode_s"]:.2f} s.
DSB scores equal the baseline's (largest difference {d["max_abs_dsb_difference_vs_baseline"]:.1e}; big image
{b["dsb"]:.4f} vs {b["baseline_dsb"]:.4f}).

Scores of the eroded copies (a 1-px erosion costs small nuclei most):
DSB {d["scores_eroded_vs_original"]["dsb"]:.3f}, mF1 {d["scores_eroded_vs_original"]["mf1"]:.3f},
F1@0.5 {d["scores_eroded_vs_original"]["f1_50"]:.3f}, F1@0.7 {d["scores_eroded_vs_original"]["f1_70"]:.3f};
miss rate by equivalent diameter: <10 px {d["scores_eroded_vs_original"]["miss_rate_d0_10"]:.3f},
10-20 px {d["scores_eroded_vs_original"]["miss_rate_d10_20"]:.3f}, 20-40 px {d["scores_eroded_vs_original"]["miss_rate_d20_40"]:.3f},
>=40 px {d["scores_eroded_vs_original"]["miss_rate_d40_inf"]:.3f}.
"""  # noqa: E501


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="64 images, 1 repeat")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "dsb2018_train")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--objects", type=int, default=5000)
    parser.add_argument("--size", type=int, default=2000)
    args = parser.parse_args()
    repeats = 1 if args.quick else args.repeats
    result = run(args.data, args.quick, repeats, args.objects, args.size)
    path = write_report("metrics_quick" if args.quick else "metrics", result, markdown(result))
    print(f"wrote {path} and .json")


if __name__ == "__main__":
    main()
