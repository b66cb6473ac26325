"""How well the classical stand-in finds the nuclei a pre-segmentation missed (``stylegen.missed_nuclei``).

    python -m benchmarks.missed_nuclei --run-work DIR --target cpm15|tissue|nih3t3

``DIR`` is the work folder of one adaptation run of benchmarks/adaptation_budget.py or domain_shift.py
(``DIR/runs/<target>_auto/preseg/labels``: the start's pre-segmentation of the target's adaptation images).
On each adaptation image with labels, ``nucleaizer.pipeline.stylegen.unlabelled_nuclei`` (the classical
segmentation's objects that lie mostly outside the pre-segmented nuclei) is compared with the labelled nuclei
the pre-segmentation missed (under half of their pixels pre-segmented): how many of those it covers (over half
of their pixels), how much of its area lies on labelled nuclei, and how much of the labels' background it
marks; and which nuclei the pre-segmentation misses: those touching another labelled nucleus (crowded) against
the isolated ones. Writes benchmarks/results/missed_nuclei_<target>.{json,md} (``--name`` replaces the file
name, e.g. for a second pre-segmentation of the same target).
"""

from __future__ import annotations

import argparse
import datetime
from pathlib import Path

import numpy as np
from tqdm import tqdm

from benchmarks import domain_shift_data
from benchmarks.common import describe_machine, git_commit, machine, write_report
from mask_db.features import touching_labels
from nucleaizer import io
from nucleaizer.pipeline.stylegen import unlabelled_nuclei


def covered(labels: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """bool per label id (index 0 = background, always False): over half of the nucleus lies in ``mask``."""
    area = np.bincount(labels.ravel())
    inside = np.bincount(labels[mask].ravel(), minlength=area.size)
    result = inside > area // 2
    result[0] = False
    return result


def image_counts(image: np.ndarray, preseg: np.ndarray, truth: np.ndarray) -> dict:
    """One image's counts: labelled nuclei, those touching another, those the pre-segmentation missed (of them
    touching another) and those the stand-in covers, the stand-in's pixels, those on labelled nuclei, and the
    labels' background pixels it marks."""
    stand_in = unlabelled_nuclei(image, preseg) > 0
    present = np.bincount(truth.ravel()) > 0
    present[0] = False
    touching = np.zeros_like(present)
    touching[touching_labels(truth)] = True
    missed = present & ~covered(truth, preseg > 0)
    return {
        "nuclei": int(present.sum()),
        "touching": int(touching.sum()),
        "missed": int(missed.sum()),
        "missed_touching": int((missed & touching).sum()),
        "missed_covered": int((missed & covered(truth, stand_in)).sum()),
        "stand_in_px": int(stand_in.sum()),
        "stand_in_on_nuclei_px": int((stand_in & (truth > 0)).sum()),
        "background_px": int((truth == 0).sum()),
        "background_marked_px": int((stand_in & (truth == 0)).sum()),
    }


def measure(run_work: Path, target_name: str) -> dict:
    target = domain_shift_data.prepare_data(run_work, quick=False)[target_name]
    preseg_folder = run_work / "runs" / f"{target_name}_auto" / "preseg" / "labels"
    if not preseg_folder.is_dir():
        raise SystemExit(f"no pre-segmentation of {target_name} at {preseg_folder}: run the adaptation first")
    totals: dict[str, int] = {}
    paths = sorted((target.adapt / "labels").glob("*.png"))
    for path in tqdm(paths, desc=f"missed nuclei {target_name}", unit="image"):
        counts = image_counts(
            io.read_image(target.adapt / "images" / path.name),
            io.read_labels(preseg_folder / path.name),
            io.read_labels(path),
        )
        totals = {key: totals.get(key, 0) + value for key, value in counts.items()}
    return {
        "images": len(paths),
        **totals,
        "recall_of_missed": round(totals["missed_covered"] / max(totals["missed"], 1), 3),
        "missed_of_touching": round(totals["missed_touching"] / max(totals["touching"], 1), 3),
        "missed_of_isolated": round(
            (totals["missed"] - totals["missed_touching"]) / max(totals["nuclei"] - totals["touching"], 1), 3
        ),
        "precision": round(totals["stand_in_on_nuclei_px"] / max(totals["stand_in_px"], 1), 3),
        "background_marked": round(totals["background_marked_px"] / max(totals["background_px"], 1), 4),
    }


def markdown(report: dict) -> str:
    figures = report["figures"]
    return "\n".join(
        [
            f"# The classical stand-in for missed nuclei on {report['target']} ({report['date']})",
            "",
            f"Machine: {describe_machine(report['machine'])}; commit {report['commit']}. Pre-segmentation of "
            f"`{report['run_work']}`; {figures['images']} adaptation images with labels (the labels only score).",
            "",
            "| labelled nuclei | missed by the pre-segmentation | of those covered by the stand-in | "
            "stand-in pixels on labelled nuclei | labels' background it marks |",
            "| --- | --- | --- | --- | --- |",
            f"| {figures['nuclei']} | {figures['missed']} | {figures['missed_covered']} "
            f"({figures['recall_of_missed']:.0%}) | {figures['precision']:.0%} | {figures['background_marked']:.2%} |",
            "",
            "Which nuclei the pre-segmentation misses (under half of their pixels pre-segmented):",
            "",
            "| | labelled | missed |",
            "| --- | --- | --- |",
            f"| touching another labelled nucleus | {figures['touching']} | {figures['missed_touching']} "
            f"({figures['missed_of_touching']:.0%}) |",
            f"| isolated | {figures['nuclei'] - figures['touching']} | {figures['missed'] - figures['missed_touching']} "
            f"({figures['missed_of_isolated']:.0%}) |",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--run-work", type=Path, required=True, help="the work folder of one adaptation run")
    parser.add_argument("--target", default="cpm15", choices=["cpm15", "tissue", "nih3t3"])
    parser.add_argument("--name", help="the results file's name (default: missed_nuclei_<target>)")
    args = parser.parse_args()
    report = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": machine(),
        "commit": git_commit(),
        "target": args.target,
        "run_work": str(args.run_work),
        "figures": measure(args.run_work, args.target),
    }
    print(write_report(args.name or f"missed_nuclei_{args.target}", report, markdown(report)).read_text())


if __name__ == "__main__":
    main()
