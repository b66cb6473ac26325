"""Segmenter benchmark: train the CPU profile on DSB 2018 (80%) and score the held-out 20% beside a classical baseline.

    python -m benchmarks.segmenter [--quick] [--train-minutes 50] [--checkpoint PATH] [--phase all|train|eval]
                                   [--tta identity,flip_h,flip_v,rot180]

Split: an image is held out for the test when sha1(id) % 5 == 0 (fixed, independent of order). From the
remaining 80%, images with sha1(id) % 60 in {1, 2} (about 3%) are the validation split that picks the
best epoch; the rest train. Test images are rescaled by the median nucleus diameter of their own ground
truth (an oracle size: no preseg pass), segmented whole, and the labels are rescaled back and scored at the
original size (in 512 px tiles with 64 px overlap, merged by nucleaizer.infer.tiling, painted by nucleaizer.instances).
The detection score and mask thresholds are chosen on the validation split. With ``--tta``, the vote of
those views (nucleaizer.infer.tta) is scored as ``model_tta`` beside ``model`` (the identity view alone), each with
its own thresholds. The classical baseline (Otsu + distance-transform watershed, haematoxylin channel for colour
images; nucleaizer.baseline) is scored on the same images in the same run, at the original size and at the
oracle scale; the better of the two is the baseline the model is compared with.
Writes benchmarks/results/segmenter.json and .md; the best checkpoint stays in the --work folder (the
other benchmarks take a checkpoint as an argument).
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from benchmarks.common import SCORE_HEADER, SCORE_RULE, git_commit, machine, score_cells, write_report
from nucleaizer import size
from nucleaizer.config_files import load_config
from nucleaizer.generalist import dsb_split
from nucleaizer.io import list_samples
from nucleaizer.segmenter import (
    MaskRCNNPredictor,
    fit_segmenter,
    load_segmenter,
    training_kwargs_from_config,
)

ROOT = Path(__file__).resolve().parent.parent

DATA = ROOT.parent / "shared" / "data" / "dsb2018_train"
GROUPS = {
    "gray_darkbg_fluorescence": "fluorescence",
    "gray_brightbg_brightfield": "brightfield",
    "colour_brightbg_HE_like": "tissue",
}
log = logging.getLogger("benchmark.segmenter")


def pairs_of(samples) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(s.read_image(), s.read_labels()) for s in samples]


def train(samples, args, out_dir: Path, size_cfg: dict) -> tuple[Path, dict]:
    segmenter_cfg = load_config("segmenter", "maskrcnn_small")
    trainer_cfg = load_config("trainer", "cpu")
    trainer_cfg["enable_progress_bar"] = False
    kwargs = training_kwargs_from_config(segmenter_cfg)
    kwargs["synthetic_share"] = 0.0  # real pairs only
    if args.stage_epochs:
        epochs = [int(e) for e in args.stage_epochs.split(",")]
        kwargs["stages"] = [{**stage, "epochs": e} for stage, e in zip(kwargs["stages"], epochs, strict=True)]
    if args.stage_lrs:
        lrs = [float(lr) for lr in args.stage_lrs.split(",")]
        kwargs["stages"] = [{**stage, "lr": lr} for stage, lr in zip(kwargs["stages"], lrs, strict=True)]
    if args.quick:
        kwargs["stages"] = [{**kwargs["stages"][0], "epochs": 1}]
        kwargs["steps_per_epoch"] = 5
    train_pairs = pairs_of([s for s in samples if dsb_split(s.name) == "train"])
    val_pairs = pairs_of([s for s in samples if dsb_split(s.name) == "val"])
    log.info("training on %d images, picking the best epoch on %d", len(train_pairs), len(val_pairs))
    started = time.perf_counter()
    path = fit_segmenter(
        train_pairs,
        val_pairs,
        out_dir,
        trainer=trainer_cfg,
        seed=args.seed,
        max_time_s=args.train_minutes * 60,
        init_checkpoint=args.init_checkpoint,
        **size_cfg,
        **kwargs,
    )
    seconds = time.perf_counter() - started
    history = pd.read_csv(out_dir / "logs" / "metrics.csv")
    epochs = history.dropna(subset=["val_dsb"]) if "val_dsb" in history else history.iloc[:0]
    steps_per_s = history["steps_per_s"].dropna() if "steps_per_s" in history else pd.Series([], dtype=float)
    info = {
        "init_checkpoint": None if args.init_checkpoint is None else str(args.init_checkpoint),
        "seed": args.seed,
        "train_images": len(train_pairs),
        "val_images": len(val_pairs),
        "wall_s": round(seconds, 1),
        "config": {**kwargs, "arch": kwargs["arch"].as_dict()},
        "epochs_done": int(len(epochs)),
        "steps_done": int(history["step"].max()) + 1 if "step" in history and len(history) else 0,
        "steps_per_s_mean": float(steps_per_s.mean()) if len(steps_per_s) else None,
        "val_dsb_per_epoch": [round(float(v), 4) for v in epochs["val_dsb"]],
        "best_val_dsb": float(epochs["val_dsb"].max()) if len(epochs) else None,
    }
    return path, info


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

    model, arch = load_segmenter(checkpoint, device=device)
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
            summary = metrics.summarize(
                rows.drop(columns=["image", "group", "method", "scale"]).to_dict("records")
            )
            result[method][group] = {
                k: (round(v, 4) if isinstance(v, float) else v) for k, v in summary.items() if k in keys
            }
    return result


def markdown(report: dict) -> str:
    lines = [
        f"# Segmenter benchmark ({report['date']})",
        "",
        f"Machine: {report['machine']['platform']}, {report['machine']['cpu_count']} CPUs (shared), torch "
        f"{report['machine']['torch']}, {report['machine']['torch_threads']} thread(s); commit "
        f"{report['commit']}.",
        "",
        "Data: dsb2018_train; test = sha1(id) % 5 == 0 "
        f"({report['test_images']} images); sizes by the test images' own ground truth (oracle size).",
        "",
    ]
    if report.get("training"):
        t = report["training"]
        lines += [
            f"Training (CPU profile, maskrcnn_small, {t['config']['arch']['backbone']}): {t['train_images']} "
            f"images, best epoch picked on {t['val_images']}; {t['steps_done']} steps in {t['wall_s']:.0f} s "
            f"({t['epochs_done']} epochs), {t['steps_per_s_mean'] or 0:.3f} training steps/s; "
            f"val DSB per epoch {t['val_dsb_per_epoch']}.",
            "",
        ]
    if report.get("transforms", ["identity"]) != ["identity"]:
        lines += [
            f"model_tta: test-time augmentation (nucleaizer.infer.tta), the vote of {len(report['transforms'])} views "
            f"({', '.join(report['transforms'])}); model: the first view alone, from the same run.",
            "",
        ]
    for method, chosen in report.get("thresholds", {}).items():
        lines += [
            f"{method}: detection score threshold {chosen['chosen']}, mask threshold "
            f"{chosen['mask_threshold']} (chosen on the validation split: DSB {chosen['val_dsb']}).",
            "",
        ]
    lines += [f"| method | group {SCORE_HEADER}", f"| --- | --- {SCORE_RULE}"]
    for method, groups in report["scores"].items():
        lines += [f"| {method} | {group} {score_cells(s)}" for group, s in groups.items()]
    for method, gains in report["dsb_gain_over_baseline"].items():
        lines += [
            "",
            f"{method} minus the better baseline (DSB): "
            + ", ".join(f"{g} {d:+.3f}" for g, d in gains.items()),
        ]
    lines += [""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="a few steps and 12 test images: checks the script"
    )
    parser.add_argument("--train-minutes", type=float, default=50.0)
    parser.add_argument(
        "--stage-epochs", default="10,2,2", help="epochs per stage of the CPU profile schedule"
    )
    parser.add_argument(
        "--stage-lrs",
        default=None,
        help="learning rate per stage (default: the profile's); lower ones suit a continued segment",
    )
    parser.add_argument("--checkpoint", type=Path, default=None, help="skip training and score this .pt")
    parser.add_argument(
        "--init-checkpoint",
        type=Path,
        default=None,
        help="continue from this segmenter .pt (a second training segment)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--phase", choices=("all", "train", "eval"), default="all")
    parser.add_argument("--work", type=Path, default=Path("/tmp/nucleaizer_bench/segmenter_run"))
    parser.add_argument(
        "--score-thresholds",
        default="0.3,0.5,0.7",
        help="detection score thresholds tried on the validation split; the best is used on the test",
    )
    parser.add_argument(
        "--mask-thresholds",
        default="0.4,0.5,0.6",
        help="mask probability thresholds tried on the validation split",
    )
    parser.add_argument(
        "--tta",
        default="identity",
        help="comma-separated TTA transforms (nucleaizer.infer.tta), identity first: scores model_tta too",
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (1 is fastest on a shared machine)"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(args.threads)
    train_cfg = load_config("train")["size"]
    size_cfg = {
        "target_diameter_px": train_cfg["target_diameter_px"],
        "min_scale": train_cfg["min_scale"],
        "max_scale": train_cfg["max_scale"],
        "min_object_area_px": train_cfg["min_object_area_px"],
    }

    samples = list_samples(DATA, require_labels=True)
    manifest = pd.read_csv(DATA / "manifest.csv").set_index("id")
    report = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": machine(),
        "commit": git_commit(),
    }
    checkpoint = args.checkpoint
    if args.phase in ("all", "train") and checkpoint is None:
        checkpoint, report["training"] = train(samples, args, args.work, size_cfg)
        (args.work / "training.json").write_text(json.dumps(report["training"], indent=2, default=str))
        log.info("best checkpoint %s", checkpoint)
    if args.phase == "train":
        return
    if checkpoint is None:
        checkpoint = args.work / "segmenter.pt"
    training_record = args.work / "training.json"
    if "training" not in report and training_record.is_file():
        report["training"] = json.loads(training_record.read_text())
    test = [s for s in samples if dsb_split(s.name) == "test"]
    if args.quick:
        test = test[:12]
    val = [s for s in samples if dsb_split(s.name) == "val"]
    thresholds = [float(t) for t in args.score_thresholds.split(",")]
    mask_thresholds = [float(t) for t in args.mask_thresholds.split(",")]
    report["transforms"] = args.tta.split(",")
    if report["transforms"][0] != "identity":
        raise SystemExit("--tta: the first transform must be identity (the model's own view)")
    table, timing, report["thresholds"] = evaluate(
        test, checkpoint, manifest, size_cfg, val, thresholds, mask_thresholds, report["transforms"]
    )
    report["test_images"] = len(test)
    report["checkpoint"] = str(checkpoint)
    report["timing"] = {k: round(v, 2) for k, v in timing.items()}
    report["scores"] = summarise(table)
    best_baseline = max(
        ("baseline_original_scale", "baseline_oracle_scale"), key=lambda m: report["scores"][m]["all"]["dsb"]
    )
    report["baseline"] = best_baseline
    report["dsb_gain_over_baseline"] = {
        method: {
            group: round(
                report["scores"][method][group]["dsb"] - report["scores"][best_baseline][group]["dsb"], 4
            )
            for group in report["scores"][method]
        }
        for method in report["thresholds"]
    }
    name = "segmenter_quick" if args.quick else "segmenter"
    write_report(name, report, markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
