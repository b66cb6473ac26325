"""Does adaptation cost the source domain? An adaptation run's start, NOstyle and AUTOstyle on held-out DSB.

    python -m benchmarks.source_regression --run-work DIR [--target cpm15] [--every 1] [--threads 2]

``DIR`` is the work folder of an adaptation run made by benchmarks/domain_shift.py or one point of
benchmarks/adaptation_budget.py (``DIR/runs/<target>_auto/segmenter/{none,auto}.pt``). The 133 held-out
images of dsb2018_train (nucleaizer.generalist.dsb_split ``test``) are segmented by the start (the shipped
generalist), NOstyle and AUTOstyle at their annotated nucleus size (no size estimation: the segmentation alone
is compared), 512 px tiles, each model's own detection threshold. The goal (issue 16): AUTOstyle's DSB within
0.02 of the start's. Writes benchmarks/results/source_regression.{json,md}.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from benchmarks.common import (
    SCORE_HEADER,
    SCORE_RULE,
    describe_machine,
    git_commit,
    machine,
    score_cells,
    write_report,
)
from benchmarks.segmenter_scoring import GROUPS, summarise
from nucleaizer import io, metrics, size
from nucleaizer.generalist import dsb_split

ROOT = Path(__file__).resolve().parent.parent
DSB = ROOT.parent / "shared" / "data" / "dsb2018_train"
GOAL = 0.02  # the largest drop of AUTOstyle's DSB below the start's that counts as no regression
log = logging.getLogger("benchmark.source_regression")


def checkpoints(run_work: Path, target: str) -> dict[str, Path]:
    from nucleaizer.models import segmenter_file

    fine_tuned = run_work / "runs" / f"{target}_auto" / "segmenter"
    found = {"start": segmenter_file("generalist"), "nostyle": fine_tuned / "none.pt"}
    found["autostyle"] = fine_tuned / "auto.pt"
    missing = [str(path) for path in found.values() if not path.is_file()]
    if missing:
        raise SystemExit(f"no checkpoint at {', '.join(missing)}: is {run_work} a finished adaptation run?")
    return found


def held_out(every: int) -> list[tuple[io.Sample, str]]:
    manifest = pd.read_csv(DSB / "manifest.csv").set_index("id")
    samples = [s for s in io.list_samples(DSB, require_labels=True) if dsb_split(s.name) == "test"]
    return [(s, GROUPS[manifest.loc[s.name, "group"]]) for s in samples[::every]]


def score(models: dict[str, Path], samples: list[tuple[io.Sample, str]]) -> pd.DataFrame:
    """One row per image and model: nucleaizer.metrics.score_image at the annotated nucleus size."""
    from nucleaizer.infer.nucleus_segmenter import NucleusSegmenter
    from nucleaizer.maskrcnn_predictor import MaskRCNNPredictor
    from nucleaizer.size import SizeRule

    segmenters = {
        name: NucleusSegmenter(MaskRCNNPredictor.from_file(path), size=SizeRule())
        for name, path in models.items()
    }
    rows = []
    for sample, group in tqdm(samples, desc="held-out DSB", unit="image", mininterval=30):
        image, truth = sample.read_image(), sample.read_labels()
        annotated = size.median_diameter(truth, 16) or size.median_diameter(truth, 16, exclude_border=False)
        for name, segmenter in segmenters.items():
            labels = segmenter.segment(image, diameter_px=annotated)
            rows.append(
                {"image": sample.name, "group": group, "method": name, **metrics.score_image(truth, labels)}
            )
    return pd.DataFrame(rows)


def markdown(report: dict) -> str:
    scores, gap = report["scores"], report["autostyle_minus_start"]
    lines = [
        f"# Source domain after adaptation ({report['date']})",
        "",
        f"Machine: {describe_machine(report['machine'])}, {report['threads']} thread(s); commit {report['commit']}. "
        f"Run: `{report['run_work']}` (target {report['target']}). {report['images']} held-out dsb2018_train "
        "images (the generalist's `test` split), segmented at their annotated nucleus size.",
        "",
        f"AUTOstyle - start: **{gap:+.3f}** DSB (goal: no drop larger than {GOAL}: "
        f"{'met' if gap >= -GOAL else 'missed'}); NOstyle - start: {report['nostyle_minus_start']:+.3f}.",
        "",
        f"| model | group {SCORE_HEADER}",
        f"| --- | --- {SCORE_RULE}",
    ]
    for method, groups in scores.items():
        for group, summary in groups.items():
            lines.append(f"| {method} | {group} {score_cells(summary)}")
    lines += ["", report["source_note"]]
    return "\n".join(lines) + "\n"


def source_note(run_work: Path, held_out_names: set[str]) -> str:
    """Whether the run's fine-tuning saw the held-out images: its annotated source (``train.datasets``, read
    from the recorded Hydra overrides) against their names."""
    seen = set()
    for overrides in (run_work / "runs").glob("*_auto/hydra/*/.hydra/overrides.yaml"):
        for line in overrides.read_text().splitlines():
            if line.startswith("- train.datasets=["):
                for folder in line.removeprefix("- train.datasets=[").rstrip("]").split(","):
                    seen |= {p.stem for p in (Path(folder.strip()) / "images").glob("*.png")} & held_out_names
    if seen:
        return (
            f"Caveat: this run's annotated source (`train.datasets`) holds {len(seen)} of these held-out "
            "images: NOstyle and AUTOstyle saw them while fine-tuning, the start did not. Their scores here are "
            "optimistic; the comparison that holds is AUTOstyle against NOstyle (same images, same steps). The "
            "adaptation_budget point more_pairs_clean_source fine-tunes on the generalist's train split only."
        )
    return "The run's annotated source holds none of these images: the comparison with the start is clean."


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--run-work", type=Path, required=True, help="work folder of a finished adaptation run"
    )
    parser.add_argument("--target", default="cpm15")
    parser.add_argument("--every", type=int, default=1, help="every n-th held-out image (1: all 133)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    import torch

    torch.set_num_threads(args.threads)
    if not DSB.is_dir():
        raise SystemExit(f"needs the shared data at {DSB}")
    models = checkpoints(args.run_work, args.target)
    samples = held_out(args.every)
    scores = summarise(score(models, samples))
    dsb = {method: scores[method]["all"]["dsb"] for method in models}
    report = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": machine(),
        "threads": args.threads,
        "commit": git_commit(),
        "run_work": str(args.run_work),
        "target": args.target,
        "checkpoints": {name: str(path) for name, path in models.items()},
        "images": len(samples),
        "scores": scores,
        "autostyle_minus_start": round(dsb["autostyle"] - dsb["start"], 4),
        "nostyle_minus_start": round(dsb["nostyle"] - dsb["start"], 4),
        "goal": GOAL,
        "source_note": source_note(args.run_work, {sample.name for sample, _ in samples}),
    }
    log.info("DSB on held-out DSB: %s", json.dumps(dsb))
    print(write_report("source_regression", report, markdown(report)).read_text())


if __name__ == "__main__":
    main()
