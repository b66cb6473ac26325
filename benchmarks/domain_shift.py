"""The paper's domain-shift experiment on real data: does learning the target's style (AUTOstyle) help?

    python -m benchmarks.domain_shift [--quick] [--targets tissue,cpm15,nih3t3] [--jobs 2] [--threads 1]
                                      [--phase all|adapt|score] [--work DIR] [-- HYDRA_OVERRIDE ...]

Every target starts from a source model that never saw its domain, and is fine-tuned on that model's
annotated source data (NOstyle) or on it plus synthetic images in the target's styles (AUTOstyle, GTstyle):
- ``tissue``: dsb2018_train's colour tissue images, split by sha1 of the id into an adaptation half (labels
  unused) and an evaluation half. Source: dsb2018_train's fluorescence and bright-field images, and a model
  trained on them here (the shipped generalist saw DSB tissue, so it cannot be the start).
- ``cpm15`` (H&E) and ``nih3t3`` (fluorescence): adapted on all images unlabelled, scored on their labels.
  Source: all of dsb2018_train and the shipped generalist model, which never saw either set.

Everything runs through ``python train.py`` as a user would run it, in run folders under ``--work``:
1. ``source``: the tissue target's source model (stages=[preseg], trained from the ImageNet backbone).
2. per target, ``<target>_auto`` (style=auto, compare=[none]: AUTOstyle and NOstyle fine-tuned from the
   same source model with the same budget) and ``<target>_gt`` (style=gt: styles learned from the
   adaptation images' own labels), stages preseg..segmenter (post-processing is left out: it is the same
   for every variant and costs the budget). The source model pre-segments the target (its sizes and the
   masks AUTOstyle learns styles from). Runs of different targets go in parallel (``--jobs``).
3. scoring, here: each variant's model segments the evaluation images with the same nucleus diameter
   (measured once per image by the source model, as the runs' sizes stage measures it) and is scored with
   nucleaizer.metrics, beside the source model without fine-tuning and the classical baseline (Otsu +
   watershed); the size error of that diameter against the labels' is reported per target.

Writes benchmarks/results/domain_shift{,_quick}.json, .md and .png (DSB per variant and target), with the
date, machine, profile, budget overrides and git commit, plus each run's diagnostics (styles, synthetic
pairs, realism of the synthetic images, stage timings).
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import logging
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from benchmarks.common import (
    RESULTS,
    SCORE_HEADER,
    SCORE_RULE,
    describe_machine,
    git_commit,
    machine,
    score_cells,
    write_report,
)
from nucleaizer import io

ROOT = Path(__file__).resolve().parent.parent

DATA = ROOT.parent / "shared" / "data"
SOURCE_GROUPS = ("gray_darkbg_fluorescence", "gray_brightbg_brightfield")
TISSUE_GROUP = "colour_brightbg_HE_like"
VARIANTS = {"nostyle": ("auto", "none"), "autostyle": ("auto", "auto"), "gtstyle": ("gt", "gt")}
SHIPPED = "generalist"  # the start of the targets the shipped model never saw
TRAINED_SOURCE = "trained"  # the start trained here, in the run ``source``
# The CPU budget: the cpu profile with bigger styles (fewer pix2pix models) and shorter pix2pix training;
# every model keeps detections scoring >= 0.8 (the shipped model's threshold), so that the comparison of a
# fine-tuned model with its start measures the weights, not the threshold.
BUDGET = [
    "profile=cpu",
    "segmenter.box_score_thresh=0.8",
    "styles.images_per_style_range=[15,30]",
    "stylegen.train.budget.max_steps=200",
]
# The tissue target's source model: 800 steps from the ImageNet backbone (about 10 minutes on 2 threads).
SOURCE_TRAINING = [
    "preseg.checkpoint=null",
    "segmenter.max_val_images=20",
    "segmenter.steps_per_epoch=200",
    "segmenter.stages=[{trainable:all,lr:2.0e-4,epochs:4}]",
    "preseg.rescale_jitter=0.5",  # the generalist's recipe
]
# quick: an untrained tiny model keeps its low-score boxes so every stage has objects to work with
QUICK_BUDGET = ["profile=tiny", "preseg.checkpoint=null", "segmenter.box_score_thresh=0.01"]
# Fine-tuning validates on fewer source images than the source model did (it only picks the best epoch) and
# runs 200 steps per variant.
ADAPT_ONLY = ["segmenter.max_val_images=8", "segmenter.finetune_stages=[{trainable:all,lr:1.0e-4,epochs:2}]"]
log = logging.getLogger("benchmark.domain_shift")


@dataclass(frozen=True)
class Target:
    """A target's folders (links into ../shared/data), its annotated source and the model adaptation starts from."""

    adapt: Path
    eval: Path
    source: Path
    start: str  # SHIPPED or TRAINED_SOURCE


def half_of(image_id: str) -> str:
    """adapt | eval: a fixed split of the tissue images by the sha1 of the id."""
    return "eval" if int(hashlib.sha1(image_id.encode()).hexdigest(), 16) % 2 == 0 else "adapt"


def link_folder(folder: Path, ids: list[str], dataset: Path) -> Path:
    """``folder/{images,labels}`` of symbolic links to ``dataset``'s files of ``ids`` (data are never copied)."""
    for kind in ("images", "labels"):
        (folder / kind).mkdir(parents=True, exist_ok=True)
        for image_id in ids:
            link = folder / kind / f"{image_id}.png"
            if not link.exists():
                link.symlink_to(dataset / kind / f"{image_id}.png")
    return folder


def prepare_data(work: Path, quick: bool) -> dict[str, Target]:
    """Every target's folders: links into ../shared/data (data are never copied)."""
    dsb = DATA / "dsb2018_train"
    manifest = pd.read_csv(dsb / "manifest.csv")
    source_ids = sorted(manifest.loc[manifest["group"].isin(SOURCE_GROUPS), "id"])
    tissue_ids = sorted(manifest.loc[manifest["group"] == TISSUE_GROUP, "id"])
    cpm_ids = sorted(p.stem for p in (DATA / "cpm15_he" / "images").glob("*.png"))
    nih_ids = sorted(p.stem for p in (DATA / "nih3t3_fluo" / "images").glob("*.png"))
    all_dsb = sorted(manifest["id"])
    if quick:
        source_ids, tissue_ids, cpm_ids, nih_ids = source_ids[:12], tissue_ids[:12], cpm_ids[:3], nih_ids[:3]
        all_dsb = source_ids + tissue_ids
    data = work / "data"
    # quick: a tiny model trained here starts every target (the shipped one would not run the tiny profile)
    start = TRAINED_SOURCE if quick else SHIPPED
    tissue_adapt = link_folder(data / "tissue_adapt", [i for i in tissue_ids if half_of(i) == "adapt"], dsb)
    cpm = link_folder(data / "cpm15", cpm_ids, DATA / "cpm15_he")
    nih = link_folder(data / "nih3t3", nih_ids, DATA / "nih3t3_fluo")
    fluo_bf = link_folder(data / "source", source_ids, dsb)
    dsb_all = link_folder(data / "dsb2018_all", all_dsb, dsb)
    return {
        "tissue": Target(
            tissue_adapt,
            link_folder(data / "tissue_eval", [i for i in tissue_ids if half_of(i) == "eval"], dsb),
            fluo_bf,
            TRAINED_SOURCE,
        ),
        "cpm15": Target(cpm, cpm, fluo_bf if quick else dsb_all, start),
        "nih3t3": Target(nih, nih, fluo_bf if quick else dsb_all, start),
    }


def train_py(
    run_dir: Path, target: Path, source: Path, overrides: list[str], threads: int, log_file: Path
) -> float:
    """``python train.py`` for one run (its output goes to ``log_file``); returns the wall time in seconds."""
    command = [
        sys.executable,
        str(ROOT / "train.py"),
        "+target=new_experiment",
        f"target.name={run_dir.name}",
        f"target.images={target / 'images'}",
        f"train.datasets=[{source}]",
        f"run_dir={run_dir}",
        "logger=none",
        "trainer.enable_progress_bar=false",
        *overrides,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    log.info("%s", " ".join(command))
    started = time.perf_counter()
    with open(log_file, "a") as handle:
        result = subprocess.run(command, cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        raise RuntimeError(f"{run_dir.name} failed (exit {result.returncode}); see {log_file}")
    return time.perf_counter() - started


def start_checkpoint(work: Path, target: Target) -> str:
    """What ``preseg.checkpoint`` names for a target: the shipped model or the source model trained here."""
    return SHIPPED if target.start == SHIPPED else str(work / "runs" / "source" / "preseg" / "preseg.pt")


def adapt(
    work: Path,
    data: dict[str, Target],
    targets: list[str],
    budget: list[str],
    extra: list[str],
    jobs: int,
    threads: int,
    with_gt: bool = True,
) -> dict[str, float]:
    """Train the source model where needed, then every target's runs (targets in parallel).

    Returns wall seconds per run. The source model trains alone, on every core.
    """
    runs, logs = work / "runs", work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    seconds = {}
    trained = [t for t in targets if data[t].start == TRAINED_SOURCE]
    if trained:
        seconds["source"] = train_py(
            runs / "source",
            data[trained[0]].adapt,
            data[trained[0]].source,
            [*budget, *SOURCE_TRAINING, *extra, "stages=[preseg]"],
            os.cpu_count() or 1,
            logs / "source.log",
        )
    adapt_stages = "stages=[preseg,sizes,styles,stylegen,masks,synthetic,segmenter]"

    def target_runs(name: str) -> dict[str, float]:
        target = data[name]
        done = {}
        runs_of_target = [("auto", ["style=auto", "compare=[none]"])]
        if with_gt:
            runs_of_target.append(("gt", ["style=gt", f"target.labels={target.adapt / 'labels'}"]))
        for style, more in runs_of_target:
            run = f"{name}_{style}"
            done[run] = train_py(
                runs / run,
                target.adapt,
                target.source,
                [
                    *budget,
                    *ADAPT_ONLY,
                    *extra,
                    adapt_stages,
                    f"preseg.checkpoint={start_checkpoint(work, target)}",
                    *more,
                ],
                threads,
                logs / f"{run}.log",
            )
        return done

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        for result in pool.map(target_runs, targets):
            seconds.update(result)
    return seconds


def score_target(work: Path, target: Target, name: str, threads: int) -> tuple[pd.DataFrame, dict]:
    """Per-image scores of every variant, the source model and the classical baseline on the eval images.

    Also the nucleus diameter every method was given (the source model's estimate) beside the labels' own.
    """
    import torch

    from nucleaizer import baseline, metrics
    from nucleaizer.infer.nucleus_segmenter import NucleusSegmenter
    from nucleaizer.maskrcnn import MaskRCNNPredictor
    from nucleaizer.models import segmenter_file
    from nucleaizer.size import SizeRule

    torch.set_num_threads(threads)
    runs = work / "runs"
    checkpoints = {"source_only": segmenter_file(start_checkpoint(work, target))}
    for variant, (run_style, model) in VARIANTS.items():
        checkpoints[variant] = runs / f"{name}_{run_style}" / "segmenter" / f"{model}.pt"
    # the size pass starts from the classical guess, as infer.py and the runs' sizes stage do (without it the
    # model's first look at cpm15's original scale misses small nuclei: DSB 0.168 instead of 0.214)
    segmenters = {
        method: NucleusSegmenter(
            MaskRCNNPredictor.from_file(path), size=SizeRule(), size_guess=baseline.ClassicalPredictor()
        )
        for method, path in checkpoints.items()
        if path.is_file()
    }
    # where the evaluation images are the adaptation images (cpm15, nih3t3), the runs segmented them already,
    # at the diameters of their sizes stage: those labels are scored instead of segmenting again
    made_by_runs = {
        variant: runs / f"{name}_{run_style}" / "segmenter" / model / "labels"
        for variant, (run_style, model) in VARIANTS.items()
    }
    rows, diameters, size_errors = [], {}, []
    samples = io.list_samples(target.eval, require_labels=True)
    rule = SizeRule()
    for sample in tqdm(samples, desc=f"scoring {name}", unit="image"):
        image, truth = sample.read_image(), sample.read_labels()
        # one size for every method, measured as the runs' sizes stage measured the adaptation images
        scale = segmenters["source_only"].scale_for(image)
        diameters[sample.name] = round(rule.target_diameter_px / scale, 2)
        true_diameter = rule.diameter_of(truth)
        if true_diameter:
            size_errors.append(abs(diameters[sample.name] / true_diameter - 1))
        predictions = {}
        for method, segmenter in segmenters.items():
            made = made_by_runs[method] / f"{sample.name}.png" if method in made_by_runs else None
            predictions[method] = (
                io.read_labels(made) if made and made.is_file() else segmenter.segment(image, scale=scale)
            )
        predictions["classical_baseline"] = baseline.segment_classical(image)
        for method, labels in predictions.items():
            rows.append(
                {
                    "target": name,
                    "image": sample.name,
                    "method": method,
                    **metrics.score_image(truth, labels),
                }
            )
    evaluation = {
        "images": len(samples),
        "start": target.start,
        "median_size_error": round(float(np.median(size_errors)), 4) if size_errors else None,
        "estimated_diameters_px": diameters,
    }
    return pd.DataFrame(rows), evaluation


SUMMARY_KEYS = (
    "images",
    "dsb",
    "map",
    "mf1",
    "f1_50",
    "mean_iou",
    "n_gt",
    "n_pred",
    "missed",
    "extra",
    "merges",
    "splits",
    "miss_rate",
)


def summarise(table: pd.DataFrame) -> dict:
    from nucleaizer import metrics

    result = {}
    for (target, method), rows in table.groupby(["target", "method"], sort=False):
        summary = metrics.summarize(rows.drop(columns=["target", "image", "method"]).to_dict("records"))
        result.setdefault(target, {})[method] = {
            k: round(v, 4) if isinstance(v, float) else v for k, v in summary.items() if k in SUMMARY_KEYS
        }
    return result


def run_diagnostics(work: Path, targets: list[str]) -> dict:
    """What each run learned and made: styles, synthetic pairs, realism, preseg objects, stage seconds."""
    result = {}
    for name in ["source", *[f"{t}_{s}" for t in targets for s in ("auto", "gt")]]:
        report_file = work / "runs" / name / "report.json"
        if not report_file.is_file():
            continue
        stages = json.loads(report_file.read_text())["stages"]
        summary = {stage: record["summary"] for stage, record in stages.items()}
        result[name] = {
            "stage_seconds": {stage: round(record["seconds"]) for stage, record in stages.items()},
            "preseg_objects": summary.get("preseg", {}).get("objects"),
            "styles": summary.get("styles"),
            "synthetic_pairs": summary.get("synthetic", {}).get("pairs"),
            "realism": summary.get("synthetic", {}).get("realism"),
            "median_diameter_px": summary.get("sizes", {}).get("median_diameter_px"),
        }
    return result


def markdown(report: dict) -> str:
    m = report["machine"]
    lines = [
        f"# Domain-shift benchmark ({report['date']})",
        "",
        f"Machine: {describe_machine(m)}, "
        f"{report['threads']} thread(s) per run, {report['jobs']} run(s) in parallel; commit {report['commit']}.",
        "",
        f"Budget (Hydra overrides of every run): `{' '.join(report['budget'])}`; the adaptation runs add "
        f"`{' '.join(report['adapt_only'])}`; the tissue source model: `{' '.join(report['source_training'])}`.",
        "",
        "Targets and their start: `tissue` = dsb2018_train colour tissue, adapted on one half by hash of the id "
        "(labels unused), scored on the other, from a model trained here on dsb2018_train fluorescence + "
        "bright-field (its annotated source); `cpm15` (H&E) and `nih3t3` (fluorescence), adapted on all images "
        "unlabelled and scored on their labels, from the shipped generalist model, which never saw them (its "
        "annotated source: all of dsb2018_train). The start pre-segments the target (sizes, AUTOstyle's "
        "masks), and every method segments an evaluation image at the diameter the start estimates.",
        "",
        "Size error of that diameter (median over images, against the labels' own): "
        + ", ".join(
            f"{t} {e['median_size_error']:.1%}"
            for t, e in report["evaluation"].items()
            if e.get("median_size_error") is not None
        ),
        "",
        f"| target | method {SCORE_HEADER}",
        f"| --- | --- {SCORE_RULE}",
    ]
    for target, methods in report["scores"].items():
        lines += [f"| {target} | {method} {score_cells(s)}" for method, s in methods.items()]
    lines += [
        "",
        "AUTOstyle minus NOstyle (DSB; the goal is at least +0.05): "
        + ", ".join(f"{t} {d:+.3f}" for t, d in report["autostyle_gain"].items()),
        "",
        "## Runs",
        "",
        "| run | wall s | preseg objects | styles | synthetic pairs | realism (C2ST acc., per style) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, d in report["runs"].items():
        styles = d["styles"] or {}
        realism = {k: v.get("c2st_accuracy") for k, v in (d["realism"] or {}).items()}
        lines.append(
            f"| {name} | {report['run_seconds'].get(name, 0):.0f} | {d['preseg_objects']} | "
            f"{styles.get('styles', '-')} (sizes {styles.get('sizes', '-')}) | {d['synthetic_pairs'] or '-'} | "
            f"{realism or '-'} |"
        )
    return "\n".join(lines) + "\n"


def bar_plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    targets = list(report["scores"])
    methods = list(dict.fromkeys(m for t in targets for m in report["scores"][t]))
    width = 0.8 / len(methods)
    figure, axis = plt.subplots(figsize=(1.6 + 1.4 * len(targets) * len(methods) / 3, 3.6))
    for index, method in enumerate(methods):
        values = [report["scores"][t].get(method, {}).get("dsb", np.nan) for t in targets]
        axis.bar(
            np.arange(len(targets)) + (index - (len(methods) - 1) / 2) * width, values, width, label=method
        )
    axis.set_xticks(np.arange(len(targets)), targets)
    axis.set_ylabel("DSB score (eval images)")
    axis.set_title(f"Domain shift, {report['profile']} budget, {report['date'][:10]}")
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="tiny profile and a few images: checks the script"
    )
    parser.add_argument("--targets", default="tissue,cpm15,nih3t3")
    parser.add_argument("--phase", choices=("all", "adapt", "score"), default="all")
    parser.add_argument("--jobs", type=int, default=2, help="targets adapted in parallel")
    parser.add_argument(
        "--without-gt", action="store_true", help="no GTstyle runs (half the adaptation time)"
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads per run (scoring uses every core)"
    )
    parser.add_argument("--work", type=Path, default=Path("/tmp/nucleaizer_bench/domain_shift"))
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for every run (after --)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if not (DATA / "dsb2018_train").is_dir():
        raise SystemExit(f"needs the shared data at {DATA}")
    targets = [t for t in args.targets.split(",") if t]
    work = args.work / "quick" if args.quick else args.work
    budget = QUICK_BUDGET if args.quick else BUDGET
    data = prepare_data(work, args.quick)
    seconds_file = work / "run_seconds.json"
    if args.phase in ("all", "adapt"):
        seconds = adapt(
            work, data, targets, budget, args.overrides, args.jobs, args.threads, with_gt=not args.without_gt
        )
        seconds_file.write_text(json.dumps(seconds, indent=2))
    if args.phase == "adapt":
        return
    tables, evaluation = [], {}
    for target in targets:
        table, evaluation[target] = score_target(work, data[target], target, os.cpu_count() or 1)
        tables.append(table)
    scores = summarise(pd.concat(tables))
    report = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": machine(),
        "commit": git_commit(),
        "profile": "tiny" if args.quick else "cpu",
        "budget": [*budget, *args.overrides],
        "adapt_only": ADAPT_ONLY,
        "source_training": SOURCE_TRAINING,
        "threads": args.threads,
        "jobs": args.jobs,
        "targets": targets,
        "scores": scores,
        "autostyle_gain": {
            t: round(s["autostyle"]["dsb"] - s["nostyle"]["dsb"], 4)
            for t, s in scores.items()
            if "autostyle" in s and "nostyle" in s
        },
        "runs": run_diagnostics(work, targets),
        "run_seconds": json.loads(seconds_file.read_text()) if seconds_file.is_file() else {},
        "evaluation": evaluation,
    }
    name = "domain_shift_quick" if args.quick else "domain_shift"
    write_report(name, report, markdown(report))
    bar_plot(report, RESULTS / f"{name}.png")
    print(markdown(report))


if __name__ == "__main__":
    main()
