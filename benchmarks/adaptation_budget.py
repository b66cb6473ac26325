"""How much adaptation budget the CPU profile needs before AUTOstyle beats NOstyle: a study on one target.

    python -m benchmarks.adaptation_budget [--target cpm15] [--points NAME,...] [--seeds 0,1,2] [--styles auto,gt]
        [--threads 2] [--rescore] [--work DIR]

Each budget point is benchmarks/domain_shift.py's adaptation run (AUTOstyle and NOstyle fine-tuned from the
same start for the same steps) with some Hydra overrides on top of its CPU budget, in its own work folder, then
scored on the target's labels exactly as domain_shift.py scores it. A point whose runs are finished is only
re-scored (train.py resumes finished stages), so an interrupted study continues where it stopped.

A target whose start is trained here (tissue) trains it once, in WORK/<target>/source, and every point and seed
starts from it. ``--styles gt`` adds GTstyle (the same budget, styles and masks from the target's labels) to a point.
Writes benchmarks/results/adaptation_budget_<target>.{json,md}: per point the DSB of the start, NOstyle,
AUTOstyle, GTstyle where run and Otsu + watershed, the gain AUTOstyle - NOstyle, the synthetic pairs, their
realism (C2ST accuracy per style), the quality of the pre-segmentation AUTOstyle learns its style from (recall
and precision of its objects at IoU 0.5 against the target labels), the fine-tuning steps and synthetic crops
seen, and the wall time of the adaptation run.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import logging
import os
import re
import statistics
from pathlib import Path

import pandas as pd

from benchmarks import domain_shift, domain_shift_data, domain_shift_scoring
from benchmarks.common import RESULTS, describe_machine, git_commit, machine, write_report

ROOT = Path(__file__).resolve().parent.parent

# The style generator without the checkerboard: resize up-sampling and a noise channel (docs/stylegen.md).
RESIZE_NOISE = ["stylegen.train.net_g.upsample=resize", "stylegen.train.net_g.noise_channels=1"]
# The CPU profile's adaptation budget (conf/profile/cpu.yaml), in this study's steps.
MORE = [
    "stylegen.train.budget.max_steps=600",
    "masks.n_per_style=60",
    "segmenter.train.synthetic_share=0.5",
    "segmenter.train.finetune_stages=[{trainable:all,lr:1.0e-4,epochs:3}]",
    "segmenter.train.steps_per_epoch=200",
]
# Twice the fine-tuning and mask budget, and 2000 pix2pix steps: does the gain keep growing with the budget?
LONG = [
    "stylegen.train.budget.max_steps=2000",
    "masks.n_per_style=120",
    "segmenter.train.synthetic_share=0.5",
    "segmenter.train.finetune_stages=[{trainable:all,lr:1.0e-4,epochs:6}]",
    "segmenter.train.steps_per_epoch=200",
]
# name -> (what it changes, overrides on top of domain_shift's BUDGET and ADAPT_ONLY)
POINTS = {
    "base": ("domain_shift's budget: 200 pix2pix steps, 20 masks per style, share 0.3, 200 steps", []),
    "base_resize_noise": ("base, with the resize + noise generator", RESIZE_NOISE),
    "more_pairs": ("600 pix2pix steps, 60 masks per style, share 0.5, 600 fine-tuning steps", MORE),
    "more_pairs_resize_noise": ("more_pairs, with the resize + noise generator", MORE + RESIZE_NOISE),
    "long": ("2000 pix2pix steps, 120 masks per style, share 0.5, 1200 fine-tuning steps", LONG),
    "more_pairs_share03": (
        "more_pairs with synthetic share 0.3 (share 0 is NOstyle, 0.5 more_pairs): what the gain comes from",
        [*MORE, "segmenter.train.synthetic_share=0.3"],
    ),
    "more_pairs_ignore": (
        "more_pairs, with the nuclei the pre-segmentation missed (classical objects outside its nuclei) left "
        "out of pix2pix's losses",
        [*MORE, "stylegen.missed_nuclei=ignore"],
    ),
    "more_pairs_missed_as_nuclei": (
        "more_pairs, with the nuclei the pre-segmentation missed (classical objects outside its nuclei) added to "
        "pix2pix's masks",
        [*MORE, "stylegen.missed_nuclei=nuclei"],
    ),
    "more_pairs_separated": (
        "more_pairs_missed_as_nuclei, with touching nuclei parted by a background line in pix2pix's masks",
        [*MORE, "stylegen.missed_nuclei=nuclei", "stylegen.separate_nuclei=true"],
    ),
    "more_pairs_counted": (
        "more_pairs_missed_as_nuclei, with the synthetic layouts (density, touching, sizes) measured on the missed "
        "nuclei too",
        [*MORE, "stylegen.missed_nuclei=nuclei", "masks.count_missed_nuclei=true"],
    ),
    "more_pairs_layouts_counted": (
        "more_pairs, with the synthetic layouts measured on the missed nuclei too (classical objects outside the "
        "pre-segmentation's nuclei; pix2pix's pairs as in more_pairs): layouts_from_labels without the labels",
        [*MORE, "masks.count_missed_nuclei=true"],
    ),
    "more_pairs_clean_source": (
        "more_pairs_missed_as_nuclei (the CPU profile's pairs) with the generalist's train split as the annotated "
        "source (for source_regression.py)",
        [*MORE, "stylegen.missed_nuclei=nuclei"],
    ),
    "more_pairs_clean_source_tta": (
        "more_pairs_clean_source, with the pre-segmentation voting over the 8 flips and rotations (preseg.tta): "
        "a more precise teacher for pix2pix's pairs",
        [*MORE, "stylegen.missed_nuclei=nuclei", "preseg.tta=true"],
    ),
    "more_pairs_preseg065": (
        "more_pairs, with the pre-segmentation's detection score threshold at 0.65 (the start's own: 0.8): more "
        "of the target's nuclei in pix2pix's pairs, at more false detections",
        [*MORE, "preseg.score_thresh=0.65"],
    ),
    "more_pairs_preseg090_missed_as_nuclei": (
        "more_pairs_missed_as_nuclei, with the pre-segmentation's detection score threshold at 0.9: fewer false "
        "nuclei in pix2pix's pairs, the ones it then misses stood in for by the classical objects",
        [*MORE, "preseg.score_thresh=0.9", "stylegen.missed_nuclei=nuclei"],
    ),
    "more_pairs_pairs_from_labels": (
        "more_pairs, with pix2pix taught by the target's labels instead of the pre-segmentation (the synthetic "
        "layouts still measured on it): what complete pairs would give",
        [*MORE, "stylegen.masks_from=labels"],
    ),
    "more_pairs_pairs_from_found_labels": (
        "more_pairs, with pix2pix taught by the target's labelled nuclei that the start's pre-segmentation found "
        "(IoU >= 0.5; the others background, as in the paper's pairs): the labels' outlines without false "
        "nuclei, at the pre-segmentation's recall",
        [*MORE, "stylegen.masks_from=labels"],
    ),
    "more_pairs_layouts_from_labels": (
        "more_pairs, with the synthetic layouts measured on the target's labels instead of the pre-segmentation "
        "(pix2pix still taught by it): what true densities, sizes and touching would give",
        [*MORE, "masks.layouts_from=labels"],
    ),
    "more_pairs_start2400": (
        "more_pairs, from a start trained 3x longer on the same source (2,400 steps instead of 800; a target whose "
        "start is trained here): does a stronger start, with a better pre-segmentation, raise the gain?",
        MORE,
    ),
    "more_pairs_round2": (
        "more_pairs again, from more_pairs' AUTOstyle model: it pre-segments the target, and both variants start "
        "from it (a second round)",
        MORE,
    ),
}
# point -> the point whose AUTOstyle model it starts from (instead of the target's start)
SECOND_ROUND = {"more_pairs_round2": "more_pairs"}
# point -> the training steps of its own start, where the target's start is trained here (tissue; the others'
# domain_shift.SOURCE_STEPS)
LONGER_START = {"more_pairs_start2400": 2400}
# points whose pre-segmentation is not the start's own (recorded per point): another start, or preseg settings
OWN_PRESEG = {
    *SECOND_ROUND,
    *LONGER_START,
    *(name for name, (_, overrides) in POINTS.items() if any(o.startswith("preseg.") for o in overrides)),
}
# points that take a part of AUTOstyle from the target's labels (ablations): their runs are given target.labels
FROM_LABELS = {
    "more_pairs_pairs_from_labels",
    "more_pairs_pairs_from_found_labels",
    "more_pairs_layouts_from_labels",
}
# label ablations given only the labelled nuclei the start's pre-segmentation found (found_labels)
FOUND_LABELS = {"more_pairs_pairs_from_found_labels"}
# points whose annotated source is the generalist's train split (not all of dsb2018_train): fine-tuning never sees
# the held-out images benchmarks/source_regression.py scores
TRAIN_SPLIT_SOURCE = {"more_pairs_clean_source", "more_pairs_clean_source_tta"}
# a point run with another seed (styles, pix2pix, masks, fine-tuning): --seeds; its folder and record are
# "<point>_seed<k>"
SEEDED = re.compile(r"^(?P<point>.+)_seed(?P<seed>[1-9][0-9]*)$")
log = logging.getLogger("benchmark.adaptation_budget")


def point_key(name: str, seed: int) -> str:
    return name if seed == 0 else f"{name}_seed{seed}"


def base_point(key: str) -> str:
    """The budget point a record key names (without its seed)."""
    seeded = SEEDED.match(key)
    return seeded["point"] if seeded else key


def seed_of(key: str) -> int:
    seeded = SEEDED.match(key)
    return int(seeded["seed"]) if seeded else 0


def point_config(overrides: list[str]):
    """train.py's config of a point's adaptation run: domain_shift's budget with the point's overrides."""
    from hydra import compose, initialize_config_dir

    from nucleaizer.config_files import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        return compose("train", [*domain_shift.BUDGET, *domain_shift.ADAPT_ONLY, *overrides])


def finetune_budget(overrides: list[str]) -> tuple[int, float]:
    """Fine-tuning steps and synthetic share of a point, from train.py's config composed with its overrides."""
    config = point_config(overrides).segmenter.train
    epochs = sum(stage.epochs for stage in config.finetune_stages)
    return int(epochs * config.steps_per_epoch), float(config.synthetic_share)


# the score each adaptation run adds (domain_shift.adapt's styles)
SCORED_AS = {"auto": "autostyle", "gt": "gtstyle"}


def run_point(work: Path, target_name: str, key: str, threads: int, styles: tuple[str, ...]) -> dict:
    """Adapt (or resume) and score one budget point at one seed (``key``: point_key); its figures, also saved as
    work/KEY/point.json (a point finished with the same overrides and a score of every style is read from
    there). ``styles``: the adaptation runs to make (auto: AUTOstyle + NOstyle, gt: GTstyle); the scores cover
    every run present."""
    name, seed = base_point(key), seed_of(key)
    overrides = [*POINTS[name][1], *([f"seed={seed}"] if seed else [])]
    point_work = work / key
    done = point_work / "point.json"
    earlier = json.loads(done.read_text()) if done.is_file() else {}
    if earlier.get("overrides") == overrides and all(SCORED_AS[s] in earlier["dsb"] for s in styles):
        return earlier
    data = point_data(work, target_name, key)
    labels = []
    if name in FROM_LABELS:
        given = (
            found_labels(point_work, data[target_name], overrides)
            if name in FOUND_LABELS
            else data[target_name].adapt / "labels"
        )
        labels = [f"target.labels={given}"]
    seconds = domain_shift.adapt(
        point_work, data, [target_name], domain_shift.BUDGET, [*overrides, *labels], 1, threads, styles=styles
    )
    scores, evaluation = score_point(point_work, data, target_name)
    run = domain_shift_scoring.run_diagnostics(point_work, [target_name])[f"{target_name}_auto"]
    steps, share = finetune_budget(overrides)
    point = {
        "commit": git_commit(),
        "platform": machine()["platform"],
        "overrides": overrides,
        "dsb": {method: s["dsb"] for method, s in scores.items()},
        "scores": scores,  # every metric and the error taxonomy per method
        "gain": round(scores["autostyle"]["dsb"] - scores["nostyle"]["dsb"], 4),
        "finetune_steps": steps,
        "synthetic_share": share,
        "synthetic_pairs": run["synthetic_pairs"],
        "realism": {k: v.get("c2st_accuracy") for k, v in (run["realism"] or {}).items()},
        # wall time of the AUTOstyle + NOstyle run and of the GTstyle run (from the earlier record if not run now)
        "adapt_seconds": round(seconds[f"{target_name}_auto"])
        if "auto" in styles
        else earlier["adapt_seconds"],
        "gt_seconds": round(seconds[f"{target_name}_gt"]) if "gt" in styles else earlier.get("gt_seconds"),
        "stage_seconds": run["stage_seconds"],
        "median_size_error": evaluation["median_size_error"],
    }
    if name in OWN_PRESEG:
        point["preseg"] = preseg_quality(point_work, target_name, data[target_name])
    (point_work / "point.json").write_text(json.dumps(point, indent=2) + "\n")
    return point


def point_data(work: Path, target_name: str, key: str) -> dict[str, domain_shift_data.Target]:
    """The targets' folders of a point (a record key), with the source or start the point changes."""
    name, point_work = base_point(key), work / key
    data = domain_shift_data.prepare_data(point_work, quick=False)
    if data[target_name].start == domain_shift_data.TRAINED_SOURCE:
        steps = LONGER_START.get(name, domain_shift.SOURCE_STEPS)
        data[target_name] = dataclasses.replace(
            data[target_name], start=str(shared_start(work, target_name, steps))
        )
    elif name in LONGER_START:
        raise SystemExit(
            f"budget point {name} trains its own start: only for a target whose start is trained here"
        )
    if name in TRAIN_SPLIT_SOURCE:
        data[target_name] = dataclasses.replace(
            data[target_name], source=domain_shift_data.generalist_train_source(point_work)
        )
    if name in SECOND_ROUND:
        data[target_name] = dataclasses.replace(
            data[target_name], start=str(first_round_model(work, target_name, name))
        )
    return data


def shared_start(work: Path, target_name: str, steps: int = domain_shift.SOURCE_STEPS) -> Path:
    """The start a target trains here (tissue's source model) for ``steps`` steps, trained once in work/source
    (work/source_<steps> for another length) at seed 0 and shared by every point and seed: a seed varies the
    adaptation, not its start, as with the shipped generalist. Its data are linked there too: the run's
    fingerprint holds their paths."""
    source_work = work / ("source" if steps == domain_shift.SOURCE_STEPS else f"source_{steps}")
    target = domain_shift_data.prepare_data(source_work, quick=False)[target_name]
    domain_shift.train_source(source_work, target, domain_shift.BUDGET, steps)
    return Path(domain_shift_data.start_checkpoint(source_work, target))


def found_labels(
    point_work: Path, target: domain_shift_data.Target, overrides: list[str], match_iou: float = 0.5
) -> Path:
    """point_work/found_labels: the target's labels with only the nuclei the start's pre-segmentation finds (an
    object of it at IoU >= ``match_iou``), each image pre-segmented as the point's preseg stage does (its config
    composed with ``overrides``: score threshold, TTA, size pass); written once."""
    import numpy as np

    from nucleaizer import io, metrics
    from nucleaizer.models import segmenter_file
    from nucleaizer.pipeline.common import segment_folder

    out = point_work / "found_labels"
    done = out / ".complete"
    if done.is_file():
        return out
    cfg = point_config(overrides)
    preseg = segment_folder(
        cfg,
        segmenter_file(domain_shift_data.start_checkpoint(point_work, target)),
        io.list_samples(target.adapt / "images"),
        point_work / "found_labels_preseg",
        score_threshold=cfg.preseg.score_thresh,
        tta=cfg.preseg.tta,
    )
    for stem, found in preseg.items():
        truth = io.read_labels(target.adapt / "labels" / f"{stem}.png")
        table = metrics.overlaps(truth, found)
        ids = np.unique(truth[truth > 0])
        io.write_labels(
            out / f"{stem}.png",
            np.where(np.isin(truth, ids[table.pair_gt[table.iou >= match_iou]]), truth, 0),
        )
    done.write_text("")
    return out


def score_point(point_work: Path, data: dict, target_name: str) -> tuple[dict, dict]:
    """Every method's summary on the target's evaluation images (method -> metrics), and the evaluation's
    figures (size error), as domain_shift.py scores them."""
    table, evaluation = domain_shift_scoring.score_target(
        point_work, data[target_name], target_name, os.cpu_count() or 1
    )
    return domain_shift_scoring.summarise(table)[target_name], evaluation


def rescore_point(work: Path, target_name: str, key: str) -> dict:
    """Score a finished point's runs again (e.g. for figures an older record lacks) and update its record."""
    done = work / key / "point.json"
    if not done.is_file():
        raise SystemExit(f"--rescore: budget point {key} has no finished record at {done}")
    point = json.loads(done.read_text())
    data = point_data(work, target_name, key)
    scores, _ = score_point(work / key, data, target_name)
    point.update(dsb={method: s["dsb"] for method, s in scores.items()}, scores=scores)
    if base_point(key) in OWN_PRESEG:
        point["preseg"] = preseg_quality(work / key, target_name, data[target_name])
    done.write_text(json.dumps(point, indent=2) + "\n")
    return point


def first_round_model(work: Path, target_name: str, name: str) -> Path:
    """The AUTOstyle model of the point that a second-round point ``name`` starts from."""
    model = work / SECOND_ROUND[name] / "runs" / f"{target_name}_auto" / "segmenter" / "auto.pt"
    if not model.is_file():
        raise SystemExit(
            f"budget point {name} starts from {SECOND_ROUND[name]}'s AUTOstyle model: run that first"
        )
    return model


def preseg_quality(point_work: Path, target_name: str, target: domain_shift_data.Target) -> dict:
    """A point's pre-segmentation of the target images (what AUTOstyle's styles, pix2pix pairs and mask sizes
    come from) against their labels: DSB, and recall and precision of its objects at IoU 0.5."""
    from nucleaizer.evaluate import evaluate_folders

    preseg = point_work / "runs" / f"{target_name}_auto" / "preseg" / "labels"
    found = evaluate_folders(preseg, target.adapt / "labels")
    return {
        "dsb": round(found["dsb"], 4),
        "recall": round(found["matched"] / found["n_gt"], 3),
        "precision": round(found["matched"] / found["n_pred"], 3),
        "objects": found["n_pred"],
        "labelled": found["n_gt"],
        **pixel_coverage(preseg, target.adapt / "labels"),
    }


def pixel_coverage(preseg: Path, labels: Path) -> dict:
    """How much of the labelled nuclei's pixels the pre-segmentation's objects cover, and the share of the
    pixels each marks as nuclei (over all images)."""
    from nucleaizer import io

    covered = labelled = marked = pixels = 0
    for truth_file in sorted(labels.iterdir()):
        truth = io.read_labels(truth_file) > 0
        found = io.read_labels(preseg / f"{truth_file.stem}.png") > 0
        covered += int((truth & found).sum())
        labelled, marked, pixels = labelled + int(truth.sum()), marked + int(found.sum()), pixels + truth.size
    return {
        "labelled_pixels_covered": round(covered / labelled, 3),
        "marked_share": round(marked / pixels, 4),
        "labelled_share": round(labelled / pixels, 4),
    }


def start_preseg_quality(work: Path, target_name: str) -> dict | None:
    """The pre-segmentation by the target's start, the same in every first-round point (it depends on the
    start alone); None before any of them has pre-segmented."""
    for labels in sorted(work.glob(f"*/runs/{target_name}_auto/preseg/labels")):
        point_work = labels.parents[3]
        if base_point(point_work.name) not in OWN_PRESEG:
            target = domain_shift_data.prepare_data(point_work, quick=False)[target_name]
            return preseg_quality(point_work, target_name, target)
    return None


def earlier_report(target_name: str) -> dict:
    """The target's results file as it stands: its records survive a work folder that is gone (another
    machine); a record of the work folder replaces the one of the same key."""
    path = RESULTS / f"adaptation_budget_{target_name}.json"
    return json.loads(path.read_text()) if path.exists() else {}


def markdown(report: dict) -> str:
    m = report["machine"]
    lines = [
        f"# Adaptation budget study on {report['target']} ({report['date']})",
        "",
        f"Machine: {describe_machine(m)}, {report['threads']} "
        f"thread(s); commit {report['commit']}. Every point is benchmarks/domain_shift.py's run (budget "
        f"`{' '.join(domain_shift.BUDGET)}`, `{' '.join(domain_shift.ADAPT_ONLY)}`) with its overrides on top; "
        "AUTOstyle and NOstyle are fine-tuned from the same start for the same steps. Synthetic crops seen = "
        "steps x batch 2 x share. Size error: the median over images of the start's nucleus diameter estimate "
        "against the labels' own (every variant segments at that diameter).",
        "",
    ]
    preseg = report.get("preseg")
    if preseg:
        lines += [
            f"The start's pre-segmentation of the target (what AUTOstyle's styles, pix2pix pairs and mask sizes "
            f"come from; the same in every first-round point from this work folder's start, while a start trained "
            f"again on another machine differs, as the start column shows): DSB {preseg['dsb']:.3f}, "
            f"{preseg_words(preseg)} at IoU 0.5 ({preseg['objects']} objects for {preseg['labelled']} labelled "
            "nuclei). GTstyle learns the same styles from the labels instead.",
            "",
        ]
    lines += [
        "| point | what changes | start | NOstyle | AUTOstyle | GTstyle | Otsu | gain | steps | synthetic crops seen "
        "| pairs | realism (C2ST) | size error | adapt min | commit |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, p in report["points"].items():
        d = p["dsb"]
        gt = f"{d['gtstyle']:.3f}" if "gtstyle" in d else "-"
        seen = round(p["finetune_steps"] * 2 * (p["synthetic_share"] or 0))
        what = POINTS[base_point(name)][0] + (f" (seed {seed_of(name)})" if seed_of(name) else "")
        if "preseg" in p:
            what += "; its pre-segmentation: " + preseg_words(p["preseg"])
        lines.append(
            f"| {name} | {what} | {d.get('source_only', float('nan')):.3f} | {d['nostyle']:.3f} | "
            f"{d['autostyle']:.3f} | {gt} | {d['classical_baseline']:.3f} | {p['gain']:+.3f} | {p['finetune_steps']} | "
            f"{seen} | {p['synthetic_pairs']} | {p['realism']} | {p['median_size_error']:.1%} | {p['adapt_seconds'] / 60:.0f} | "
            f"{p.get('commit')}{', ' + p['platform'] if 'platform' in p else ''} |"
        )
    return "\n".join(lines + seed_lines(report["points"])) + "\n"


def preseg_words(preseg: dict) -> str:
    words = f"recall {preseg['recall']:.2f}, precision {preseg['precision']:.2f}"
    if "labelled_pixels_covered" in preseg:
        words += (
            f", {preseg['labelled_pixels_covered']:.0%} of the labelled nuclei's pixels covered, "
            f"{preseg['marked_share']:.1%} of all pixels marked (labels: {preseg['labelled_share']:.1%})"
        )
    return words


def seed_summary(points: dict) -> dict:
    """point -> mean and spread over its seeds (points run at two seeds or more): NOstyle, AUTOstyle, gain, and
    GTstyle's gain over NOstyle where GTstyle ran at two seeds or more."""
    groups: dict[str, list[dict]] = {}
    for key, p in points.items():
        groups.setdefault(base_point(key), []).append(p)
    summary = {}
    for name, records in groups.items():
        if len(records) < 2:
            continue
        gains = [p["gain"] for p in records]
        summary[name] = {
            "seeds": len(records),
            "nostyle": round(statistics.mean(p["dsb"]["nostyle"] for p in records), 4),
            "autostyle": round(statistics.mean(p["dsb"]["autostyle"] for p in records), 4),
            "gain": round(statistics.mean(gains), 4),
            "gain_sd": round(statistics.stdev(gains), 4),
            "gains": gains,
        }
        gt_gains = [
            round(p["dsb"]["gtstyle"] - p["dsb"]["nostyle"], 4) for p in records if "gtstyle" in p["dsb"]
        ]
        if len(gt_gains) >= 2:
            summary[name].update(
                gt_gain=round(statistics.mean(gt_gains), 4),
                gt_gain_sd=round(statistics.stdev(gt_gains), 4),
                gt_gains=gt_gains,
            )
    return summary


def seed_lines(points: dict) -> list[str]:
    summary = seed_summary(points)
    if not summary:
        return []
    lines = [
        "",
        "Over seeds (every record of the point; the seed changes styles, pix2pix, masks and fine-tuning):",
        "",
        "| point | seeds | NOstyle | AUTOstyle | gain, mean +- sd | gains | GTstyle gain, mean +- sd (seeds) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, s in summary.items():
        gt = f"{s['gt_gain']:+.3f} +- {s['gt_gain_sd']:.3f} ({len(s['gt_gains'])})" if "gt_gain" in s else "-"
        lines.append(
            f"| {name} | {s['seeds']} | {s['nostyle']:.3f} | {s['autostyle']:.3f} | "
            f"{s['gain']:+.3f} +- {s['gain_sd']:.3f} | {', '.join(f'{g:+.3f}' for g in s['gains'])} | {gt} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="cpm15", choices=("tissue", "cpm15", "nih3t3"))
    parser.add_argument("--points", default=",".join(POINTS), help=f"comma-separated, of {', '.join(POINTS)}")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the adaptation run")
    parser.add_argument(
        "--styles",
        default="auto",
        help="adaptation runs per point: auto (AUTOstyle + NOstyle), gt (GTstyle: styles from the labels)",
    )
    parser.add_argument(
        "--seeds",
        default="0",
        help="comma-separated seeds to run every point at (0: the configuration's own)",
    )
    parser.add_argument(
        "--rescore", action="store_true", help="score the points' finished runs again (no adaptation)"
    )
    parser.add_argument("--work", type=Path, default=Path("/tmp/nucleaizer_bench/adaptation_budget"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if not (domain_shift_data.DATA / "dsb2018_train").is_dir():
        raise SystemExit(f"needs the shared data at {domain_shift_data.DATA}")
    names = [n for n in args.points.split(",") if n]
    styles = tuple(s for s in args.styles.split(",") if s)
    if not styles or set(styles) - set(SCORED_AS):
        raise SystemExit(f"--styles {args.styles!r}: a comma-separated list of {', '.join(SCORED_AS)}")
    unknown = sorted(set(names) - set(POINTS))
    if unknown:
        raise SystemExit(f"unknown budget points {unknown}; known: {', '.join(POINTS)}")
    work = args.work / args.target
    recorded = earlier_report(args.target)
    points = {}
    keys = [point_key(name, int(seed)) for name in names for seed in args.seeds.split(",")]
    order = {name: index for index, name in enumerate(POINTS)}
    for key in keys:
        log.info("budget point %s: %s", key, POINTS[base_point(key)][0])
        points[key] = (
            rescore_point(work, args.target, key)
            if args.rescore
            else run_point(work, args.target, key, args.threads, styles)
        )
        # the report grows point by point: an interrupted study still leaves its finished points
        for done in sorted(work.glob("*/point.json")):
            if base_point(done.parent.name) in POINTS:
                points.setdefault(done.parent.name, json.loads(done.read_text()))
        for earlier_key, earlier in recorded.get("points", {}).items():  # kept from earlier machines
            if base_point(earlier_key) in POINTS:
                points.setdefault(earlier_key, earlier)
        report = {
            "date": datetime.datetime.now().isoformat(timespec="seconds"),
            "machine": machine(),
            "commit": git_commit(),
            "target": args.target,
            "threads": args.threads,
            "preseg": start_preseg_quality(work, args.target) or recorded.get("preseg"),
            "points": dict(
                sorted(points.items(), key=lambda item: (order[base_point(item[0])], seed_of(item[0])))
            ),
        }
        report["over_seeds"] = seed_summary(report["points"])
        write_report(f"adaptation_budget_{args.target}", report, markdown(report))
    print(pd.DataFrame({n: p["dsb"] for n, p in points.items()}).T.round(3))


if __name__ == "__main__":
    main()
