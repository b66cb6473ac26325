"""Time-to-accuracy benchmark: segmentation quality reached per minute of CPU training, per candidate.

    python -m benchmarks.time_to_accuracy [--candidates A,B] [--budgets 10,30,60] [--threads 2] [--quick]
    python -m benchmarks.time_to_accuracy --report          # tables and plot from the records so far

Each candidate (a backbone + precision + settings over conf/segmenter/maskrcnn_mobilenet.yaml, the CPU profile
before this benchmark, see CANDIDATES)
trains with the project's own trainer (nucleaizer.segmenter.fit_segmenter: data loading, augmentation,
validation and logging included) on the fixed sha1 split of ../shared/data/dsb2018_train that
benchmarks/segmenter.py uses (80% train, of which ~3% picks the best weights; 20% = 133 held-out images),
for growing wall-clock budgets. Each longer budget resumes the shorter one's run (weights, optimizer, time
already spent), so the 60-minute point costs 60 minutes, not 100. After each budget the model is scored on
the held-out images at their annotated size (oracle size, no test-time augmentation; detection threshold
chosen on the validation images) beside Otsu + watershed in the same run: DSB, mAP, F1@0.5 per group, and
training steps/s (all steps over all training time, validation included), crops/s and peak memory.

Every training segment and every evaluation runs in its own process (its own peak memory, its own thread
count); records land in WORK/<candidate>/ (outside the repository, default /tmp/nucleaizer_bench/tta), so an
interrupted benchmark continues where it stopped. Writes benchmarks/results/time_to_accuracy.{json,md,png}.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.common import RESULTS, git_commit, machine, write_report

ROOT = Path(__file__).resolve().parent.parent

log = logging.getLogger("benchmark.time_to_accuracy")

PRETRAINED_LITE0 = {
    "backbone": "efficientnet_lite0",
    "returned_layers": None,
    "pretrained": True,
    "frozen_batchnorm": True,
    "box_batch_size_per_image": 64,
}
# name -> (segmenter.arch overrides, Lightning precision, learning rate)
CANDIDATES = {
    "mobilenet_v3_scratch_fp32": ({}, "32-true", 5.0e-4),
    "lite0_pretrained_fpn128_fp32": ({**PRETRAINED_LITE0, "fpn_channels": 128}, "32-true", 2.0e-4),
    "lite0_pretrained_fpn128_bf16": ({**PRETRAINED_LITE0, "fpn_channels": 128}, "bf16-mixed", 2.0e-4),
    "lite0_pretrained_fpn256_bf16": ({**PRETRAINED_LITE0, "fpn_channels": 256}, "bf16-mixed", 2.0e-4),
}
STEPS_PER_EPOCH = 400  # validation (20 images) after every 400 steps: a few % of the time
EMA_DECAY = 0.998
SCORE_THRESHOLDS = [0.5, 0.6, 0.7]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def segmenter_config(candidate: str) -> tuple[dict, dict]:
    """(fit_segmenter kwargs, trainer settings) of a candidate."""
    from nucleaizer.config_files import load_config
    from nucleaizer.segmenter import training_kwargs_from_config

    overrides, precision, lr = CANDIDATES[candidate]
    config = load_config("segmenter", "maskrcnn_mobilenet")
    config["arch"].update(overrides)
    kwargs = training_kwargs_from_config(config)
    kwargs.update(
        stages=[{"trainable": "all", "lr": lr, "epochs": 10_000}],
        steps_per_epoch=STEPS_PER_EPOCH,
        synthetic_share=0.0,
        ema_decay=EMA_DECAY,
        warmup_steps=100,
    )
    trainer = load_config("trainer", "cpu")
    trainer.update(precision=precision, enable_progress_bar=False)
    return kwargs, trainer


def size_config() -> dict:
    from nucleaizer.config_files import load_config

    size = load_config("train")["size"]
    return {k: size[k] for k in ("target_diameter_px", "min_scale", "max_scale", "min_object_area_px")}


def train_segment(candidate: str, minutes: float, work: Path, quick: bool) -> dict:
    """Train (or continue) a candidate up to ``minutes`` of training in all; returns the segment's record."""
    import pandas as pd
    import segmenter as bench

    from nucleaizer.io import list_samples
    from nucleaizer.segmenter import fit_segmenter

    samples = list_samples(bench.DATA, require_labels=True)
    train = bench.pairs_of([s for s in samples if bench.dsb_split(s.name) == "train"])
    val = bench.pairs_of([s for s in samples if bench.dsb_split(s.name) == "val"])
    if quick:
        train, val = train[:20], val[:3]
    kwargs, trainer = segmenter_config(candidate)
    if quick:
        kwargs["steps_per_epoch"] = 10
    out = work / candidate / "run"
    started = time.perf_counter()
    path = fit_segmenter(
        train, val, out, trainer=trainer, max_time_s=minutes * 60, resume=True, **size_config(), **kwargs
    )
    history = pd.read_csv(out / "logs" / "metrics.csv")
    steps = int(history["step"].max()) + 1
    epochs = history.dropna(subset=["val_dsb"])
    return {
        "candidate": candidate,
        "minutes": minutes,
        "checkpoint": str(path),
        "steps": steps,
        "segment_wall_s": round(time.perf_counter() - started, 1),
        "val_dsb": [round(float(v), 4) for v in epochs["val_dsb"]],
        "peak_rss_mb": round(peak_rss_mb()),
        "load_average_1min": os.getloadavg()[0],
    }


def evaluate_checkpoint(checkpoint: Path, work: Path, quick: bool) -> dict:
    """Held-out scores (oracle size, no TTA) of a checkpoint and of Otsu + watershed, per group.

    The baseline does not change between budgets: it is scored once, with the first model, and kept in
    WORK/otsu_watershed.json.
    """
    import pandas as pd
    import segmenter as bench

    from nucleaizer.io import list_samples

    samples = list_samples(bench.DATA, require_labels=True)
    manifest = pd.read_csv(bench.DATA / "manifest.csv").set_index("id")
    test = [s for s in samples if bench.dsb_split(s.name) == "test"]
    val = [s for s in samples if bench.dsb_split(s.name) == "val"]
    if quick:
        test, val = test[:6], val[:2]
    baseline_record = work / "otsu_watershed.json"
    started = time.perf_counter()
    table, timing, chosen = bench.evaluate(
        test,
        checkpoint,
        manifest,
        size_config(),
        val,
        SCORE_THRESHOLDS,
        [0.5],
        ["identity"],
        with_baseline=not baseline_record.is_file(),
    )
    scores = bench.summarise(table)
    if not baseline_record.is_file():
        best = max(
            ("baseline_original_scale", "baseline_oracle_scale"), key=lambda m: scores[m]["all"]["dsb"]
        )
        baseline_record.write_text(json.dumps({"method": best, "scores": scores[best]}, indent=2))
    return {
        "scores": {
            "model": scores["model"],
            "otsu_watershed": json.loads(baseline_record.read_text())["scores"],
        },
        "score_threshold": chosen["model"]["chosen"],
        "eval_wall_s": round(time.perf_counter() - started, 1),
        "model_mp_per_s": round(timing["megapixels"] / max(timing["model_s"], 1e-9), 4),
        "test_images": len(test),
        "eval_peak_rss_mb": round(peak_rss_mb()),
    }


def record_path(work: Path, candidate: str, minutes: float) -> Path:
    return work / candidate / f"budget_{minutes:g}min.json"


def run_in_process(args: list[str], threads: int) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    subprocess.run([sys.executable, __file__, *args, "--threads", str(threads)], check=True, env=env)


def one_budget(candidate: str, minutes: float, work: Path, quick: bool) -> None:
    """Train to the budget, keep that checkpoint, score it; writes the budget's record."""
    record = train_segment(candidate, minutes, work, quick)
    kept = work / candidate / f"segmenter_{minutes:g}min.pt"
    shutil.copy(record["checkpoint"], kept)
    record["checkpoint"] = str(kept)
    record.update(evaluate_checkpoint(kept, work, quick))
    record_path(work, candidate, minutes).write_text(json.dumps(record, indent=2))
    log.info(
        "%s after %g min: DSB %.3f (Otsu %.3f)",
        candidate,
        minutes,
        record["scores"]["model"]["all"]["dsb"],
        record["scores"]["otsu_watershed"]["all"]["dsb"],
    )


def load_records(work: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(work.glob("*/budget_*min.json"))]


def markdown(report: dict) -> str:
    m = report["machine"]
    lines = [
        f"# Time to accuracy ({report['date']})",
        "",
        f"Machine: {m['platform']}, {m['cpu_count']} CPUs, torch {m['torch']}, {report['threads']} threads; "
        f"commit {report['commit']}. Training: the project's trainer (fit_segmenter) on dsb2018_train's "
        f"fixed 80% split, batch 2 x 256 px crops, AdamW, EMA of the weights ({EMA_DECAY}), validation on "
        f"20 images every {STEPS_PER_EPOCH} steps; each budget continues the shorter one. Scores: the "
        f"133 held-out images at their annotated size, no TTA; Otsu + watershed in the same run.",
        "",
        "| candidate | minutes | steps | steps/s (all) | crops/s | DSB | mAP | F1@0.5 | fluo | brightfield | "
        "tissue | Otsu DSB | peak RSS MB | load |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in report["records"]:
        s, o = r["scores"]["model"], r["scores"]["otsu_watershed"]
        per_s = r["steps"] / (r["minutes"] * 60)
        lines.append(
            f"| {r['candidate']} | {r['minutes']:g} | {r['steps']} | {per_s:.2f} | {2 * per_s:.2f} | "
            f"{s['all']['dsb']:.3f} | {s['all']['map']:.3f} | {s['all']['f1_50']:.3f} | "
            f"{s.get('fluorescence', {}).get('dsb', float('nan')):.3f} | "
            f"{s.get('brightfield', {}).get('dsb', float('nan')):.3f} | "
            f"{s.get('tissue', {}).get('dsb', float('nan')):.3f} | {o['all']['dsb']:.3f} | "
            f"{r['peak_rss_mb']} | {r['load_average_1min']:.1f} |"
        )
    lines += [
        "",
        "Otsu + watershed per group (same images): "
        + ", ".join(
            f"{g} {v['dsb']:.3f}" for g, v in report["records"][0]["scores"]["otsu_watershed"].items()
        )
        if report["records"]
        else "",
        "",
    ]
    return "\n".join(lines)


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6.5, 4))
    by_candidate: dict[str, list] = {}
    for r in report["records"]:
        by_candidate.setdefault(r["candidate"], []).append((r["minutes"], r["scores"]["model"]["all"]["dsb"]))
    for name, points in by_candidate.items():
        points.sort()
        axis.plot(*zip(*points, strict=True), marker="o", label=name)
    if report["records"]:
        axis.axhline(
            report["records"][0]["scores"]["otsu_watershed"]["all"]["dsb"],
            color="grey",
            ls="--",
            label="Otsu + watershed",
        )
    axis.set_xlabel("training minutes (2 CPU threads)")
    axis.set_ylabel("DSB, 133 held-out images")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def report_from_records(work: Path, threads: int, quick: bool) -> dict:
    report = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": machine(),
        "commit": git_commit(),
        "threads": threads,
        "candidates": {k: list(v) for k, v in CANDIDATES.items()},
        "records": load_records(work),
    }
    name = "time_to_accuracy_quick" if quick else "time_to_accuracy"
    write_report(name, report, markdown(report))
    plot(report, RESULTS / f"{name}.png")
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidates", default=",".join(CANDIDATES))
    parser.add_argument("--budgets", default="10,30,60", help="training minutes, increasing")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work", type=Path, default=Path("/tmp/nucleaizer_bench/tta"))
    parser.add_argument("--quick", action="store_true", help="tiny budgets and data: checks the script")
    parser.add_argument("--report", action="store_true", help="only rewrite the results from the records")
    parser.add_argument("--one", nargs=2, metavar=("CANDIDATE", "MINUTES"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    import torch

    torch.set_num_threads(args.threads)
    if args.quick and args.work == parser.get_default("work"):
        args.work = args.work.with_name("tta_quick")
    if args.one:
        one_budget(args.one[0], float(args.one[1]), args.work, args.quick)
        return
    if not args.report:
        for candidate in args.candidates.split(","):
            if candidate not in CANDIDATES:
                raise SystemExit(f"unknown candidate {candidate}; known: {', '.join(CANDIDATES)}")
            for minutes in (float(b) for b in args.budgets.split(",")):
                if record_path(args.work, candidate, minutes).is_file():
                    continue
                (args.work / candidate).mkdir(parents=True, exist_ok=True)
                extra = ["--quick"] if args.quick else []
                run_in_process(
                    ["--one", candidate, f"{minutes:g}", "--work", str(args.work), *extra], args.threads
                )
                report_from_records(args.work, args.threads, args.quick)
    print(markdown(report_from_records(args.work, args.threads, args.quick)))


if __name__ == "__main__":
    main()
