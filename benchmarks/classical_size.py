"""Classical size estimation benchmark: does Otsu + watershed segment better at the size it estimates itself?

    python -m benchmarks.classical_size [--split test|all] [--quick]

On dsb2018_train (the 133 held-out images of the segmenter benchmarks' sha1 split, or all 664) and the unseen
sets (gowt1_fluo, nih3t3_fluo, hela_fluo, cpm15_he), ``infer.py model=classical``'s path (NucleusSegmenter with
the classical predictor and infer.py's classical size rule) segments each image three ways: at the diameter it
estimates itself, at the annotated median diameter (oracle), and at the image's own scale (no rescaling). The
estimate is also made the previous way (plain median of the classical objects) for comparison. Reports DSB per
way and data set, and the size error of each estimator (median of |estimate / annotated - 1|). Writes
benchmarks/results/classical_size.{json,md}.
"""

from __future__ import annotations

import argparse
import datetime
from pathlib import Path

import numpy as np
from tqdm import tqdm

from benchmarks.common import git_commit, machine, write_report
from nucleaizer import io, metrics, size
from nucleaizer.baseline import ClassicalPredictor
from nucleaizer.config_files import CONF_DIR
from nucleaizer.generalist import dsb_split
from nucleaizer.infer.nucleus_segmenter import NucleusSegmenter
from nucleaizer.infer.tiling import predict_image
from nucleaizer.instances import paint_instances

ROOT = Path(__file__).resolve().parent.parent

DATA = ROOT.parent / "shared" / "data"
UNSEEN = ("gowt1_fluo", "nih3t3_fluo", "hela_fluo", "cpm15_he")


def samples_of(name: str, split: str):
    samples = io.list_samples(DATA / name, require_labels=True)
    if name == "dsb2018_train" and split == "test":
        samples = [s for s in samples if dsb_split(s.name) == "test"]
    return samples


def previous_estimate(segmenter: NucleusSegmenter, image: np.ndarray) -> float | None:
    """The estimate before the area weighting and the background check: plain median of the objects."""
    labels, _ = paint_instances(predict_image(image, segmenter.predictor, segmenter.tiles), image.shape[:2])
    return size.median_diameter(labels, segmenter.size.min_object_area_px)


def score_set(name: str, samples, segmenter: NucleusSegmenter) -> dict:
    rows = []
    for sample in tqdm(samples, desc=name, mininterval=30):
        image, gt = sample.read_image(), sample.read_labels()
        truth = size.median_diameter(gt, segmenter.size.min_object_area_px)
        estimate = segmenter.estimate_diameter(image)
        row = {
            "image": sample.name,
            "annotated_px": truth,
            "estimate_px": estimate,
            "previous_estimate_px": previous_estimate(segmenter, image),
        }
        for way, scale in (
            ("own_estimate", segmenter.scale_for(image, estimate) if estimate else 1.0),
            ("annotated_size", segmenter.size.scale_for(truth) if truth else 1.0),
            ("own_scale", 1.0),
        ):
            row[f"dsb_{way}"] = metrics.dsb_score(gt, segmenter.segment(image, scale=scale))
        rows.append(row)

    def size_error(key: str) -> float | None:
        errors = [abs(r[key] / r["annotated_px"] - 1) for r in rows if r[key] and r["annotated_px"]]
        return round(float(np.median(errors)), 4) if errors else None

    return {
        "images": len(rows),
        **{
            f"dsb_{w}": round(float(np.mean([r[f"dsb_{w}"] for r in rows])), 4)
            for w in ("own_estimate", "annotated_size", "own_scale")
        },
        "size_error_median": size_error("estimate_px"),
        "previous_size_error_median": size_error("previous_estimate_px"),
        "no_estimate": sum(r["estimate_px"] is None for r in rows),
        "rows": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", choices=("test", "all"), default="test")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    from omegaconf import OmegaConf

    infer_cfg = OmegaConf.load(CONF_DIR / "infer.yaml")
    segmenter = NucleusSegmenter(
        ClassicalPredictor(**OmegaConf.to_container(infer_cfg.classical)),
        size=size.SizeRule.from_config(OmegaConf.to_container(infer_cfg.classical_size)),
    )
    report = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": machine(),
        "commit": git_commit(),
        "split": args.split,
        "sets": {},
    }
    for name in ("dsb2018_train", *UNSEEN):
        samples = samples_of(name, args.split)
        report["sets"][name] = score_set(name, samples[:3] if args.quick else samples, segmenter)
    suffix = "_quick" if args.quick else ""
    lines = [
        f"# Classical size estimation ({report['date']})",
        "",
        f"Machine: {report['machine']['platform']}; commit {report['commit']}. Otsu + watershed through "
        f"infer.py's path (model=classical); dsb2018_train: the {args.split} split.",
        "",
        "| data set | images | DSB at own estimate | DSB at annotated size | DSB at own scale | size error | "
        "previous size error | no estimate |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, s in report["sets"].items():
        lines.append(
            f"| {name} | {s['images']} | {s['dsb_own_estimate']:.3f} | {s['dsb_annotated_size']:.3f} | "
            f"{s['dsb_own_scale']:.3f} | {s['size_error_median']} | {s['previous_size_error_median']} | "
            f"{s['no_estimate']} |"
        )
    lines += [
        "",
        "size error: median over images of |estimate / annotated median diameter - 1|; previous: the plain "
        "median of the classical objects without the background check (before this change).",
    ]
    write_report(f"classical_size{suffix}", report, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
