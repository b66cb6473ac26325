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

from benchmarks.common import SCORE_HEADER, SCORE_RULE, git_commit, machine, score_cells, write_report
from benchmarks.segmenter_scoring import evaluate, summarise
from nucleaizer.config_files import load_config
from nucleaizer.generalist import dsb_split
from nucleaizer.io import list_samples
from nucleaizer.segmenter import (
    fit_segmenter,
    training_kwargs_from_config,
)

ROOT = Path(__file__).resolve().parent.parent

DATA = ROOT.parent / "shared" / "data" / "dsb2018_train"
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
