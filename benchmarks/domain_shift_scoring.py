"""Scoring of the domain-shift runs: every variant's model, the start and Otsu + watershed on a target's
evaluation images at one diameter per image, the summary per method, and what each run learned and made."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from benchmarks.domain_shift_data import Target, start_checkpoint
from nucleaizer import io

VARIANTS = {"nostyle": ("auto", "none"), "autostyle": ("auto", "auto"), "gtstyle": ("gt", "gt")}


def score_target(work: Path, target: Target, name: str, threads: int) -> tuple[pd.DataFrame, dict]:
    """Per-image scores of every variant, the source model and the classical baseline on the eval images.

    Also the nucleus diameter every method was given (the source model's estimate) beside the labels' own.
    """
    import torch

    from nucleaizer import baseline, metrics
    from nucleaizer.infer.nucleus_segmenter import NucleusSegmenter
    from nucleaizer.maskrcnn_predictor import MaskRCNNPredictor
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
