"""Generalist benchmark: the shipped model beside Otsu + watershed on held-out and unseen annotated sets.

    python -m benchmarks.generalist [--model generalist] [--previous PT] [--no-tta] [--quick] [--threads 2]
        [--every N] [--max-per-set M] [--name generalist]

Sets: the 133 held-out images of dsb2018_train (nucleaizer.generalist.dsb_split ``test``, per group) and every
annotated set the generalist never saw (nih3t3_fluo, gowt1_fluo, hela_fluo, cpm15_he). Each image is segmented
as ``infer.py`` does (NucleusSegmenter with the bundle's size rule and 512 px tiles):

- ``model``: at the size the model estimates itself, and at the annotated size (``oracle``); with TTA too
  (the 8 views of infer.py's ``tta=true``) at its own size, unless ``--no-tta``;
- ``otsu_watershed``: ``infer.py model=classical`` (its own size estimate, and the oracle size);
- ``previous``: a segmenter .pt given with ``--previous`` (e.g. an earlier model), same ways as the model.

Reports DSB, mAP, F1@0.5 and the error counts per set and way, the size error of each estimate (median of
|estimate / annotated - 1|, annotated = median equivalent diameter of the labels), and speed: megapixels of
original image per second without TTA (size estimation included), CPU, ``--threads`` threads. Peak memory of
infer.py on a 4000 x 4000 image comes from benchmarks/memory.py. Writes benchmarks/results/generalist.{json,md}.
"""

from __future__ import annotations

import argparse
import datetime
import time
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
from benchmarks.segmenter_scoring import GROUPS
from nucleaizer import io, metrics, size
from nucleaizer.generalist import UNSEEN_SETS, dsb_split

ROOT = Path(__file__).resolve().parent.parent

DATA = ROOT.parent / "shared" / "data"
SCORE_KEYS = ("dsb", "map", "mf1", "f1_50", "missed", "extra", "merges", "splits", "n_gt", "n_pred")


def test_sets(
    quick: bool, every: int = 1, max_per_set: int | None = None
) -> dict[str, list[tuple[io.Sample, str]]]:
    """Per set: (sample, group) pairs; the DSB split keeps its manifest groups. ``every``: every n-th image of
    each set; ``max_per_set``: at most that many of each (a shorter run on a fixed subset)."""
    manifest = pd.read_csv(DATA / "dsb2018_train" / "manifest.csv").set_index("id")
    dsb = [
        (s, GROUPS[manifest.loc[s.name, "group"]])
        for s in io.list_samples(DATA / "dsb2018_train", require_labels=True)
        if dsb_split(s.name) == "test"
    ]
    sets = {"dsb2018_test": dsb}
    for name in UNSEEN_SETS:
        sets[name] = [(s, name) for s in io.list_samples(DATA / name, require_labels=True)]
    if quick:
        return {name: pairs[:: max(1, len(pairs) // 3)][:3] for name, pairs in sets.items()}
    return {name: pairs[::every][:max_per_set] for name, pairs in sets.items()}


def segmenters(model: str, previous: str | None, tta: bool) -> dict:
    """name -> NucleusSegmenter, built as infer.py builds them (model=NAME and model=classical)."""
    from omegaconf import OmegaConf

    from nucleaizer.config_files import CONF_DIR
    from nucleaizer.infer.settings import build_segmenter

    def infer_config(**overrides):
        cfg = OmegaConf.load(CONF_DIR / "infer.yaml")
        cfg.merge_with({"device": "cpu", **overrides})
        return cfg

    built = {
        "model": build_segmenter(infer_config(model=model))[0],
        "otsu_watershed": build_segmenter(infer_config(model="classical"))[0],
    }
    if tta:
        built["model_tta"] = build_segmenter(infer_config(model=model, tta=True))[0]
    if previous is not None:
        from nucleaizer.bundle import write_bundle

        folder = Path("/tmp/nucleaizer_bench/previous_bundle")
        write_bundle(folder, previous)
        built["previous"] = build_segmenter(infer_config(model=str(folder)))[0]
    return built


def score_image_ways(sample: io.Sample, group: str, built: dict) -> tuple[list[dict], list[dict], list[dict]]:
    """(score rows, size rows, timing rows) of one image; the timing is of the own-size runs (size estimation
    included), with the megapixels of the original image and of the image at the working scale."""
    image, truth = sample.read_image(), sample.read_labels()
    # every nucleus touches the border in a few crops: then they all count
    annotated = size.median_diameter(truth, 16) or size.median_diameter(truth, 16, exclude_border=False)
    rows, sizes, timing = [], [], []
    estimates = {}
    for name, segmenter in built.items():
        started = time.perf_counter()
        base = name.removesuffix("_tta")
        if base not in estimates:
            estimates[base] = segmenter.measure_size(image)
        found = segmenter.segment_objects(image, estimate=estimates[base])
        labels, megapixels = found.labels, truth.size / 1e6
        timing.append(
            {
                "method": name,
                "seconds": time.perf_counter() - started,
                "megapixels": megapixels,
                "working_megapixels": megapixels * found.scale**2,
                "scale": found.scale,
            }
        )
        estimate = estimates[base].diameter_px
        ways = {"own size": labels}
        if not name.endswith("_tta"):
            ways["oracle size"] = segmenter.segment(image, diameter_px=annotated)
            sizes.append(
                {
                    "image": sample.name,
                    "group": group,
                    "estimator": name,
                    "annotated_px": annotated,
                    "estimate_px": estimate,
                    "error": None if estimate is None else abs(estimate / annotated - 1),
                }
            )
        for way, found in ways.items():
            scores = metrics.score_image(truth, found)
            rows.append({"image": sample.name, "group": group, "method": name, "way": way, **scores})
    return rows, sizes, timing


def summarise(table: pd.DataFrame, by: list[str]) -> list[dict]:
    out = []
    for key, rows in table.groupby(by, sort=False):
        summary = metrics.summarize(rows.drop(columns=["image", "group", "method", "way"]).to_dict("records"))
        entry = dict(zip(by, key if isinstance(key, tuple) else (key,), strict=True))
        entry.update({k: round(v, 4) if isinstance(v, float) else v for k, v in summary.items()})
        out.append(entry)
    return out


def per_group(table: pd.DataFrame, keys: list[str], describe) -> list[dict]:
    """One row per group of ``table`` by ``keys``: the keys' values and what ``describe(part)`` says of it."""
    return [
        {**dict(zip(keys, key, strict=True)), **describe(part)}
        for key, part in table.groupby(keys, sort=False)
    ]


def size_errors(sizes: pd.DataFrame) -> list[dict]:
    def describe(part: pd.DataFrame) -> dict:
        errors = part["error"].dropna()
        return {
            "images": len(part),
            "none_found": int(part["error"].isna().sum()),
            "median_error": round(float(errors.median()), 4) if len(errors) else None,
            "p90_error": round(float(errors.quantile(0.9)), 4) if len(errors) else None,
        }

    return per_group(sizes, ["set", "estimator"], describe)


def speeds(timing: pd.DataFrame) -> list[dict]:
    """Per set and method: megapixels per second of original image and at the working scale, median scale."""

    def describe(part: pd.DataFrame) -> dict:
        seconds = part["seconds"].sum()
        return {
            "images": len(part),
            "mp_per_s": round(part["megapixels"].sum() / seconds, 4),
            "working_mp_per_s": round(part["working_megapixels"].sum() / seconds, 4),
            "median_scale": round(float(part["scale"].median()), 2),
        }

    return per_group(timing, ["set", "method"], describe)


def markdown(report: dict) -> str:
    m = report["machine"]
    lines = [
        f"# Generalist model benchmark ({report['date']})",
        "",
        f"Machine: {describe_machine(m)}, {m['torch_threads']} threads; "
        f"commit {report['commit']}; model `{report['model']}`. Held-out: the 133 test images of the fixed "
        f"dsb2018_train split; unseen: sets the model never trained on; subset: every "
        f"{report['subset']['every']}th image, at most {report['subset']['max_per_set']} per set (the image "
        "counts are in the table). `own size`: the diameter each method "
        "estimates itself (infer.py without diameter=); `oracle size`: the annotated median diameter.",
        "",
        f"| set | method | way {SCORE_HEADER}",
        f"| --- | --- | --- {SCORE_RULE}",
    ]
    for row in report["scores"]:
        lines.append(f"| {row['set']} | {row['method']} | {row['way']} {score_cells(row)}")
    lines += [
        "",
        "DSB per group of the held-out DSB images (own size):",
        "",
        "| group | method | images | DSB | F1@0.5 |",
        "| --- | --- | --- | --- | --- |",
    ]
    for row in report["dsb_groups"]:
        lines.append(
            f"| {row['group']} | {row['method']} | {row['images']} | {row['dsb']:.3f} | {row['f1_50']:.3f} |"
        )
    lines += [
        "",
        "Size estimate error, median (90th percentile) of |estimate / annotated - 1|:",
        "",
        "| set | estimator | images | none found | median error | p90 error |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for row in report["size_errors"]:
        lines.append(
            f"| {row['set']} | {row['estimator']} | {row['images']} | {row['none_found']} | "
            f"{row['median_error']} | {row['p90_error']} |"
        )
    lines += [
        "",
        "Speed at the own size (size estimation included), megapixels per second of the original image and of "
        "the image at the working scale (nuclei about 40 px; the median factor to it is `scale`); "
        "`model_tta`: 8 views:",
        "",
        "| set | method | images | MP/s | working MP/s | scale |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for row in report["speed"]:
        lines.append(
            f"| {row['set']} | {row['method']} | {row['images']} | {row['mp_per_s']} | "
            f"{row['working_mp_per_s']} | {row['median_scale']} |"
        )
    lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="generalist", help="shipped model name or bundle folder")
    parser.add_argument("--previous", default=None, help="an earlier segmenter .pt to score beside it")
    parser.add_argument("--no-tta", action="store_true", help="skip the test-time augmentation runs")
    parser.add_argument("--quick", action="store_true", help="3 images per set (a check of the script)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--every", type=int, default=1, help="every n-th image of each set")
    parser.add_argument("--max-per-set", type=int, default=None, help="at most this many images per set")
    parser.add_argument(
        "--name", default="generalist", help="results file stem under benchmarks/results (a second run's own)"
    )
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    built = segmenters(args.model, args.previous, not args.no_tta)
    score_rows, size_rows, timing_rows = [], [], []
    for data, pairs in test_sets(args.quick, args.every, args.max_per_set).items():
        for sample, group in tqdm(pairs, desc=data, mininterval=30):
            rows, sizes, timing = score_image_ways(sample, group, built)
            score_rows += [{**r, "set": data} for r in rows]
            size_rows += [{**r, "set": data} for r in sizes]
            timing_rows += [{**r, "set": data} for r in timing]
    table = pd.DataFrame(score_rows)
    scores = summarise(table, ["set", "method", "way"])
    dsb = table[(table["set"] == "dsb2018_test") & (table["way"] == "own size")]
    report = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": machine(),
        "commit": git_commit(),
        "model": args.model,
        "previous": args.previous,
        "quick": args.quick,
        "subset": {"every": args.every, "max_per_set": args.max_per_set},
        "scores": [
            {k: v for k, v in row.items() if k in ("set", "method", "way", "images", *SCORE_KEYS)}
            for row in scores
        ],
        "dsb_groups": summarise(dsb, ["group", "method"]),
        "size_errors": size_errors(pd.DataFrame(size_rows)),
        "speed": speeds(pd.DataFrame(timing_rows)),
    }
    stem = f"{args.name}_quick" if args.quick else args.name
    write_report(stem, report, markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
