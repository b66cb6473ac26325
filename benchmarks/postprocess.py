"""Benchmark of post-processing (docs/method.md section 7) on the validation part of dsb2018_train.

    python -m benchmarks.postprocess [--quick] [--raw auto|maskrcnn|baseline] [--checkpoint PATH]

The validation part is the segmenter benchmark's (sha1(id) % 5 == 0); it is halved by the next hash digit
into a tuning half (the GA's fitness) and a scoring half (the figures). Every image is rescaled so its
median nucleus diameter (from its ground truth) is 40 px, the segmenter's working scale, and cropped to a
centre window there (to bound the GA's cost on this shared 2-core machine); scores are DSB scores at that
scale against the ground truth rescaled the same way. The U-Net ensemble (CPU profile config, smaller crops)
trains on crops of the other 80%. Raw segmentation: the Mask R-CNN checkpoint of the segmenter benchmark,
or the classical baseline (nucleaizer.baseline) when the checkpoint or inference code is missing
(``--raw baseline`` forces it). Figures: DSB score raw / paper defaults / GA-tuned, GA evaluations per
second, wall time of the tuning run. Writes benchmarks/results/postprocess.{json,md} and the GA history.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import logging
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from skimage.segmentation import relabel_sequential

from benchmarks.common import RESULTS, git_commit, machine, write_report
from nucleaizer.config_files import CONF_DIR
from nucleaizer.io import list_samples
from nucleaizer.models import segmenter_file
from nucleaizer.postprocess.genetic import GASearch
from nucleaizer.postprocess.rules import IDENTITY_PARAMS, PostprocessParams
from nucleaizer.postprocess.tune import build_cases, mean_score, score_case, tune_parameters
from nucleaizer.postprocess.unet import load_ensemble, member_specs, train_ensemble
from nucleaizer.size import median_diameter, rescale_image, rescale_labels, scale_factor

ROOT = Path(__file__).resolve().parent.parent

log = logging.getLogger("benchmarks.postprocess")
DATA = ROOT.parent / "shared" / "data" / "dsb2018_train"
CACHE = Path("/tmp/nucleaizer_bench/postprocess")


def id_hash(name: str) -> int:
    return int(hashlib.sha1(name.encode()).hexdigest(), 16)


def working_crop(image: np.ndarray, gt: np.ndarray, size_cfg, crop_px: int) -> tuple[np.ndarray, np.ndarray]:
    """Image and labels at the working scale (GT median diameter -> target), centre-cropped to crop_px."""
    diameter = median_diameter(gt, min_area_px=size_cfg.min_object_area_px) or size_cfg.target_diameter_px
    scale = scale_factor(diameter, size_cfg.target_diameter_px, size_cfg.min_scale, size_cfg.max_scale)
    working = rescale_image(image, scale)
    labels = rescale_labels(gt, working.shape[:2])
    y0 = max((working.shape[0] - crop_px) // 2, 0)
    x0 = max((working.shape[1] - crop_px) // 2, 0)
    window = (slice(y0, y0 + crop_px), slice(x0, x0 + crop_px))
    return np.ascontiguousarray(working[window]), relabel_sequential(labels[window])[0].astype(np.int32)


def raw_segmenter(kind: str, checkpoint: Path):
    """(name, function working-scale image -> labels int32 (H, W)) of the raw segmentation."""
    if kind in ("auto", "maskrcnn"):
        try:
            from nucleaizer.infer.nucleus_segmenter import NucleusSegmenter
            from nucleaizer.maskrcnn_predictor import MaskRCNNPredictor

            if not checkpoint.is_file():
                raise FileNotFoundError(checkpoint)
            segmenter = NucleusSegmenter(MaskRCNNPredictor.from_file(checkpoint))
            return f"Mask R-CNN ({checkpoint})", lambda image: segmenter.predict_working_scale(image)[0]
        except (ImportError, FileNotFoundError) as error:
            if kind == "maskrcnn":
                raise
            log.warning(
                "Mask R-CNN not available (%s): the classical baseline is the raw segmentation", error
            )
    from nucleaizer.baseline import ClassicalPredictor

    predictor = ClassicalPredictor()
    return "classical baseline (nucleaizer.baseline: Otsu + distance-transform watershed)", predictor.segment


def load_split() -> tuple[list, list, dict[str, str]]:
    samples = list_samples(DATA, require_labels=True)
    with open(DATA / "manifest.csv") as handle:
        groups = {row["id"]: row["group"] for row in csv.DictReader(handle)}
    val = [s for s in samples if id_hash(s.name) % 5 == 0]
    train = [s for s in samples if id_hash(s.name) % 5 != 0]
    return val, train, groups


def steady_rate(history: list[dict]) -> float | None:
    """GA evaluations per second after the first generation (which includes starting the worker pool)."""
    if len(history) < 2:
        return None
    evaluations = history[-1]["evaluations"] - history[0]["evaluations"]
    return evaluations / max(history[-1]["seconds"] - history[0]["seconds"], 1e-9)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a few images and generations (a smoke run)")
    parser.add_argument("--raw", choices=["auto", "maskrcnn", "baseline"], default="auto")
    parser.add_argument(
        "--checkpoint",
        type=Path,
        default=segmenter_file("generalist"),
        help="segmenter .pt of the raw segmentation (default: the shipped generalist's)",
    )
    parser.add_argument(
        "--workers", type=int, default=None, help="GA processes (config: postprocess.ga.workers)"
    )
    parser.add_argument("--crop", type=int, default=320, help="centre window at the working scale, px")
    parser.add_argument("--train-images", type=int, default=32, help="U-Net training images (of the 80%%)")
    parser.add_argument("--tune-images", type=int, default=1000, help="most images in the tuning half")
    parser.add_argument("--retrain", action="store_true", help="retrain the U-Nets even when cached")
    parser.add_argument("--note", default="", help="a line recorded in the results (e.g. code provenance)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    # the machine is shared by several engineers: one thread per process is much faster than oversubscribing
    torch.set_num_threads(1)

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        cfg = compose(config_name="train", overrides=["profile=cpu", "trainer=cpu"])
    pp = cfg.postprocess
    unet_cfg = OmegaConf.to_container(pp.unet, resolve=True)
    unet_cfg["crop_size"] = 128  # benchmark override: 256 px crops cost 9 s a step on this loaded machine
    ga_cfg = OmegaConf.to_container(pp.ga, resolve=True)
    if args.quick:
        unet_cfg.update(epochs=1)
        ga_cfg.update(population=8, generations=3, patience=2)
        args.train_images, args.tune_images = 8, 8
    workers = args.workers or ga_cfg["workers"]
    trainer = OmegaConf.to_container(cfg.trainer, resolve=True) | {"enable_progress_bar": False}

    val, train, groups = load_split()
    rng = np.random.default_rng(cfg.seed)
    tune_half = [s for s in val if (id_hash(s.name) // 5) % 2 == 0]
    score_half = [s for s in val if (id_hash(s.name) // 5) % 2 == 1]
    tune_half = sorted(
        rng.choice(tune_half, size=min(args.tune_images, len(tune_half)), replace=False), key=lambda s: s.name
    )
    if args.quick:
        score_half = score_half[:8]
    train_subset = sorted(
        rng.choice(train, size=min(args.train_images, len(train)), replace=False), key=lambda s: s.name
    )
    log.info(
        "validation %d images: tuning on %d, scoring on %d; U-Nets train on %d",
        len(val),
        len(tune_half),
        len(score_half),
        len(train_subset),
    )

    # -- U-Net ensemble, trained once and cached ----------------------------------------------------------
    CACHE.mkdir(parents=True, exist_ok=True)
    specs = member_specs(
        unet_cfg["members"], unet_cfg["target_blur_sigmas"], unet_cfg["depth"], unet_cfg["base_filters"]
    )
    key = hashlib.sha1(
        json.dumps(
            [unet_cfg, [s.name for s in train_subset], args.crop], sort_keys=True, default=str
        ).encode()
    ).hexdigest()[:10]
    ensemble_path = CACHE / f"unet_{key}.pt"
    start = time.perf_counter()
    if ensemble_path.is_file() and not args.retrain:
        ensemble, unet_losses, unet_seconds = load_ensemble(ensemble_path), None, None
        log.info("U-Net ensemble from cache %s", ensemble_path)
    else:
        pairs = [working_crop(s.read_image(), s.read_labels(), cfg.size, 2 * args.crop) for s in train_subset]
        ensemble, unet_losses = train_ensemble(
            pairs,
            specs,
            epochs=unet_cfg["epochs"],
            lr=unet_cfg["lr"],
            batch_size=unet_cfg["batch_size"],
            crop_size=unet_cfg["crop_size"],
            crops_per_image=unet_cfg["crops_per_image"],
            trainer=trainer,
            seed=cfg.seed,
        )
        unet_seconds = time.perf_counter() - start
        ensemble.save(ensemble_path)

    # -- raw segmentation and probability maps, computed once ---------------------------------------------
    raw_name, segment = raw_segmenter(args.raw, args.checkpoint)
    log.info("raw segmentation: %s", raw_name)

    def cases_of(samples):
        crops = (
            (s.name, *working_crop(s.read_image(), s.read_labels(), cfg.size, args.crop)) for s in samples
        )
        return build_cases(crops, segment, ensemble.predict_probability)

    start = time.perf_counter()
    tune_cases, score_cases = cases_of(tune_half), cases_of(score_half)
    cache_seconds = time.perf_counter() - start

    # -- genetic algorithm on the tuning half ------------------------------------------------------------
    search = GASearch.from_config(ga_cfg)
    paper = PostprocessParams.from_dict(OmegaConf.to_container(pp.params, resolve=True))
    ga_settings = search.algorithm_settings()
    out_dir = CACHE / "ga"
    shutil.rmtree(out_dir, ignore_errors=True)
    start = time.perf_counter()
    result = tune_parameters(
        tune_cases,
        list(search.genes),
        out_dir=out_dir,
        initial=[paper.as_dict(), IDENTITY_PARAMS.as_dict()],
        workers=workers,
        seed=cfg.seed,
        **ga_settings,
    )
    tuning_seconds = time.perf_counter() - start
    tuned = PostprocessParams.from_dict(result.best)

    # -- figures on the scoring half ---------------------------------------------------------------------
    variants = {"raw": None, "paper_defaults": paper, "ga_tuned": tuned}
    scores = {name: mean_score(score_cases, params) for name, params in variants.items()}
    tune_scores = {name: mean_score(tune_cases, params) for name, params in variants.items()}
    per_group: dict[str, dict[str, float]] = {}
    for group in sorted({groups[c.name] for c in score_cases}):
        members = [c for c in score_cases if groups[c.name] == group]
        per_group[group] = {"images": len(members)} | {
            name: float(np.mean([score_case(c, params) for c in members]))
            for name, params in variants.items()
        }
    serial_start = time.perf_counter()
    mean_score(tune_cases, paper)
    serial_eval_seconds = time.perf_counter() - serial_start

    report = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "git_commit": git_commit(),
        "quick": args.quick,
        "raw_segmentation": raw_name,
        "note": args.note,
        "data": {
            "dataset": str(DATA),
            "validation_images": len(val),
            "tuning_images": len(tune_cases),
            "scoring_images": len(score_cases),
            "unet_training_images": len(train_subset),
            "working_scale_crop_px": args.crop,
            "scale": "per image from the ground truth's median equivalent diameter to 40 px",
        },
        "config": {"unet": unet_cfg, "ga": ga_settings | {"workers": workers, "genes": ga_cfg["genes"]}},
        "dsb_score_scoring_half": scores,
        "dsb_score_tuning_half": tune_scores,
        "dsb_score_by_group_scoring_half": per_group,
        "tuned_params": tuned.as_dict(),
        "paper_params": paper.as_dict(),
        "ga": {
            "generations": len(result.history),
            "evaluations": result.evaluations,
            "tuning_wall_s": tuning_seconds,
            "evaluations_per_s": result.evaluations / tuning_seconds,
            "images_per_evaluation": len(tune_cases),
            "evaluations_per_s_after_pool_start": steady_rate(result.history),
            "serial_evaluation_s": serial_eval_seconds,
        },
        "unet": {
            "members": [vars(s) for s in specs],
            "training_s": unet_seconds,
            "epoch_losses": unet_losses,
            "ensemble_file": str(ensemble_path),
        },
        "cache_inputs_s": cache_seconds,
        "tuned_not_below_raw": scores["ga_tuned"] >= scores["raw"],
    }
    # Mask R-CNN results are postprocess.*, the baseline fallback's postprocess.baseline.*
    suffix = ("" if raw_name.startswith("Mask R-CNN") else ".baseline") + (".quick" if args.quick else "")
    write_report(f"postprocess{suffix}", report, markdown(report, suffix))
    for name in ("ga_history.csv", "ga_history.png", "best_params.json"):
        shutil.copy(out_dir / name, RESULTS / f"postprocess{suffix}.{name}")
    print(markdown(report, suffix))


def markdown(report: dict, suffix: str) -> str:
    scores, tune_scores, ga = report["dsb_score_scoring_half"], report["dsb_score_tuning_half"], report["ga"]
    lines = [
        "# Post-processing benchmark" + (f" ({suffix.strip('.')})" if suffix else ""),
        "",
        f"- date {report['date']}, commit {report['git_commit']}, {report['machine']['platform']}, "
        f"{report['machine']['cpu_count']} CPUs, torch {report['machine']['torch']} "
        f"({report['machine']['torch_threads']} thread per process)",
        f"- raw segmentation: **{report['raw_segmentation']}**",
        *([f"- note: {report['note']}"] if report.get("note") else []),
        f"- data: dsb2018_train validation part (sha1(id) % 5 == 0, {report['data']['validation_images']} images): "
        f"GA tuned on {report['data']['tuning_images']}, scored on {report['data']['scoring_images']} others; "
        f"working scale (median diameter 40 px), centre {report['data']['working_scale_crop_px']} px window",
        f"- U-Net ensemble: {len(report['unet']['members'])} members {report['unet']['members']}, "
        f"trained on {report['data']['unet_training_images']} images of the other 80%",
        "",
        "| DSB score | scoring half | tuning half |",
        "| --- | --- | --- |",
    ]
    for name in scores:
        lines.append(f"| {name} | {scores[name]:.4f} | {tune_scores[name]:.4f} |")
    lines += [
        "",
        "| group (scoring half) | images | raw | paper defaults | GA-tuned |",
        "| --- | --- | --- | --- | --- |",
    ]
    for group, row in report["dsb_score_by_group_scoring_half"].items():
        lines.append(
            f"| {group} | {row['images']} | {row['raw']:.4f} | {row['paper_defaults']:.4f} | "
            f"{row['ga_tuned']:.4f} |"
        )
    lines += [
        "",
        f"- tuned parameters: {report['tuned_params']}",
        f"- GA: {ga['generations']} generations, {ga['evaluations']} evaluations of {ga['images_per_evaluation']} "
        f"images in {ga['tuning_wall_s']:.1f} s (wall time of the tuning run) with "
        f"{report['config']['ga']['workers']} processes = **{ga['evaluations_per_s']:.2f} evaluations/s** "
        f"({ga['evaluations_per_s_after_pool_start'] or float('nan'):.2f}/s after the first generation); "
        f"one serial evaluation {ga['serial_evaluation_s']:.2f} s",
        f"- tuned not below raw on the scoring half: **{report['tuned_not_below_raw']}**",
        "",
        f"History: `postprocess{suffix}.ga_history.csv`, plot `postprocess{suffix}.ga_history.png`.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
