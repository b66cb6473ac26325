"""Benchmark of mask_db on ../shared/data/dsb2018_train: build speed and size, query speed, compose speed,
and how well composed masks match the fluorescence and the colour-tissue groups.

    python -m benchmarks.mask_db [--quick] [--data ../shared/data] [--workdir /tmp/mask_db_bench]

Writes benchmarks/results/mask_db.json and .md (and one montage PNG per group). The database goes to
--workdir (never into the repository). Baselines measured in the same run: skimage regionprops_table for
the features, brute-force numpy for the queries, and, for the statistical match, one half of a group's real
images against the other half (the agreement two real samples of the same style reach).
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import logging
import shutil
import time
from pathlib import Path

import cv2
import numpy as np
from skimage.measure import regionprops_table

from benchmarks.common import RESULTS, git_commit, machine, write_report
from mask_db.cli import main as cli_main
from mask_db.features import SHAPE_SPACE, shape_features, whole_nuclei
from mask_db.layout import LayoutComposer
from mask_db.montage import montage
from mask_db.stats import compare, style_statistics
from mask_db.store import MaskDatabase

ROOT = Path(__file__).resolve().parent.parent

GROUPS = {"fluorescence": "gray_darkbg_fluorescence", "he_tissue": "colour_brightbg_HE_like"}
log = logging.getLogger("benchmark")


class Timer:
    """Wall and CPU seconds of a block."""

    def __enter__(self) -> Timer:
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc) -> None:
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu

    def as_dict(self) -> dict:
        return {"wall_s": round(self.wall, 3), "cpu_s": round(self.cpu, 3)}


def read_labels(path: Path) -> np.ndarray:
    return cv2.imread(str(path), cv2.IMREAD_UNCHANGED).astype(np.int32)


def bench_build(dataset: Path, workdir: Path, limit: int | None) -> tuple[dict, Path]:
    """Fresh build, then the same build again (must add nothing), and the regionprops baseline."""
    files = sorted((dataset / "labels").glob("*.png"))[:limit]
    db_path = workdir / "dsb.sqlite"
    for leftover in workdir.glob("dsb.sqlite*"):
        leftover.unlink()

    def rebuild() -> None:
        if limit is None:  # the command a user runs
            assert cli_main(["build", str(db_path), str(dataset)]) == 0
        else:
            with MaskDatabase(db_path, create=True) as db:
                db.add_many(
                    (dataset.name, p.stem, read_labels(p))
                    for p in files
                    if not db.has_image(dataset.name, p.stem)
                )

    with Timer() as build:
        rebuild()
    with MaskDatabase(db_path) as db:
        first = len(db)
    with Timer() as again:
        rebuild()
    with MaskDatabase(db_path) as db:
        info = db.info()
    # features only, ours against skimage's regionprops_table, on the same whole nuclei
    sample = [whole_nuclei(read_labels(p)) for p in files[:120]]
    n_objects = sum(int(np.count_nonzero(np.bincount(s.ravel())[1:])) for s in sample)
    with Timer() as ours:
        for labels in sample:
            shape_features(labels)
    with Timer() as skimage:
        for labels in sample:
            regionprops_table(
                labels,
                properties=(
                    "label",
                    "area",
                    "perimeter",
                    "axis_major_length",
                    "axis_minor_length",
                    "eccentricity",
                    "solidity",
                    "bbox",
                ),
            )
    return {
        "images": len(files),
        "nuclei": info["nuclei"],
        "size_mb": round(db_path.stat().st_size / 1e6, 2),
        "build": build.as_dict(),
        "rebuild": {**again.as_dict(), "nuclei_added": info["nuclei"] - first},
        "features_ms_per_nucleus": round(1e3 * ours.cpu / n_objects, 3),
        "baseline_regionprops_ms_per_nucleus": round(1e3 * skimage.cpu / n_objects, 3),
    }, db_path


def bench_queries(db_path: Path) -> dict:
    with MaskDatabase(db_path) as db:
        with Timer() as load:
            index = db.index
            db.query(index.shape[:1])
        rng = np.random.default_rng(0)
        queries = index.shape[rng.integers(0, index.ids.size, 1000)] * rng.normal(
            1, 0.05, (1000, len(SHAPE_SPACE))
        )
        with Timer() as batched:
            ids, _ = db.query(queries, k=5, area_range=(50, 5000))
        with Timer() as one_by_one:
            for q in queries:
                db.query(q[None], k=5, area_range=(50, 5000))
        with Timer() as crops:
            db.crops(ids[:, 0])
        # baseline: brute force over the standardised features, the same filter
        keep = (index.area >= 50) & (index.area <= 5000)
        space = index.standardise(index.shape[keep])
        with Timer() as brute:
            for q in index.standardise(queries):
                np.argpartition(((space - q) ** 2).sum(axis=1), 5)[:5]
    return {
        "nuclei": int(index.ids.size),
        "load_and_tree": load.as_dict(),
        "queries": 1000,
        "batched_k5": batched.as_dict(),
        "one_by_one_k5": one_by_one.as_dict(),
        "fetch_1000_crops": crops.as_dict(),
        "baseline_bruteforce_one_by_one": brute.as_dict(),
    }


def bench_group(name: str, rows: list[dict], dataset: Path, db_path: Path, quick: bool) -> dict:
    """Compose masks that imitate a group; time 20 masks of 512x512; match figures against the real
    group and the real-against-real baseline."""
    labels = [read_labels(dataset / "labels" / f"{r['id']}.png") for r in rows]
    with Timer() as measuring:
        style = style_statistics(labels)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(labels))
    half_a = style_statistics([labels[i] for i in order[: len(order) // 2]])
    half_b = style_statistics([labels[i] for i in order[len(order) // 2 :]])
    result = {
        "images": len(labels),
        "style": style.summary(),
        "measure_style": measuring.as_dict(),
        "baseline_real_half_vs_real_half": compare(half_a, half_b),
    }
    with MaskDatabase(db_path) as db:
        composer = LayoutComposer(style, db)
        with Timer() as compose20:
            masks = composer.compose(20, 512, seed=0)
        result["compose_20x512"] = {
            **compose20.as_dict(),
            "report": dict(composer.report),
            "match": compare(style_statistics(masks), style),
        }
        cv2.imwrite(
            str(RESULTS / f"mask_db.montage_{name}.png"),
            cv2.cvtColor(montage(labels[:4], masks[:4], n=4, tile=256), cv2.COLOR_RGB2BGR),
        )
        # as much field of view as a subset of real images holds: every image imitated about in proportion
        subset = [labels[i] for i in order[: 30 if quick else 80]]
        subset_style = style_statistics(subset)
        n = int(round(subset_style.pixels.sum() / 256**2))
        composer = LayoutComposer(subset_style, db)
        with Timer() as matched:
            masks = composer.compose(n, 256, seed=1)
        result["field_of_view_matched"] = {
            "real_images": len(subset),
            "masks_256": n,
            **matched.as_dict(),
            "match": compare(style_statistics(masks), subset_style),
        }
    return result


def markdown(results: dict) -> str:
    b, q = results["build"], results["queries"]
    lines = [
        "# mask_db benchmark",
        "",
        f"{results['machine']['date']}, {results['machine']['platform']}, {results['machine']['cpu_count']} CPUs "
        f"(1-min load average {results['machine']['load_average_1min_at_start']:.2f} at start: the machine is shared, so "
        f"wall time can exceed CPU time), torch {results['machine']['torch']}, commit "
        f"{results['machine']['git_commit']}; config: {json.dumps(results['config'])}.",
        "",
        "| measure | result | target |",
        "| --- | --- | --- |",
        f"| build from {b['images']} images | {b['nuclei']} nuclei, {b['build']['wall_s']} s wall "
        f"({b['build']['cpu_s']} s CPU), {b['size_mb']} MB | < 120 s, < 50 MB |",
        f"| build again (incremental) | {b['rebuild']['nuclei_added']} added, {b['rebuild']['wall_s']} s | 0 added |",
        f"| shape features per nucleus | {b['features_ms_per_nucleus']} ms (regionprops_table "
        f"{b['baseline_regionprops_ms_per_nucleus']} ms) | |",
        f"| 1,000 queries k=5, batched | {q['batched_k5']['wall_s']} s | < 1 s |",
        f"| 1,000 queries k=5, one by one | {q['one_by_one_k5']['wall_s']} s (brute force "
        f"{q['baseline_bruteforce_one_by_one']['wall_s']} s) | < 1 s |",
        f"| load features + KD-tree | {q['load_and_tree']['wall_s']} s | |",
    ]
    for name, g in results["groups"].items():
        c = g["compose_20x512"]
        lines.append(
            f"| 20 masks 512x512, {name} | {c['wall_s']} s wall ({c['cpu_s']} s CPU), "
            f"{c['report'].get('placed', 0)} objects | < 5 s |"
        )
    lines += [
        "",
        "Statistical match (generated / real; KS on whole-nucleus areas, border-weighted). "
        "`real half` compares two random halves of the real group: the agreement real samples reach.",
        "",
        "| group | masks | objects | median area ratio | density ratio | KS p | touching gen / real | "
        "nn distance ratio |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, g in results["groups"].items():
        for label, m in (
            ("20 x 512, whole group", g["compose_20x512"]["match"]),
            (
                f"{g['field_of_view_matched']['masks_256']} x 256, {g['field_of_view_matched']['real_images']}"
                " images",
                g["field_of_view_matched"]["match"],
            ),
            ("real half vs real half", g["baseline_real_half_vs_real_half"]),
        ):
            lines.append(
                f"| {name} | {label} | {m['objects_generated']} | {m['median_area_ratio']} | "
                f"{m['density_ratio']} | {m.get('area_ks_pvalue', float('nan')):.3g} | "
                f"{m['touching_fraction_generated']} / {m['touching_fraction_real']} | "
                f"{m['nn_distance_median_ratio']} |"
            )
    lines += [
        "",
        "Montages (real above, generated below): "
        + ", ".join(f"`mask_db.montage_{name}.png`" for name in results["groups"]),
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="build from 120 images, smaller match runs")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/mask_db_bench"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    dataset = args.data / "dsb2018_train"
    if not dataset.is_dir():
        raise SystemExit(f"error: {dataset} not found; give --data")
    args.workdir.mkdir(parents=True, exist_ok=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    results = {
        "machine": {
            **machine(),
            "date": datetime.datetime.now().isoformat(timespec="seconds"),
            "git_commit": git_commit(),
        },
        "config": {"quick": args.quick, "simulated_share": 0.5, "min_area": 16, "neighbours": 5, "seed": 0},
    }
    log.info("building the database ...")
    results["build"], db_path = bench_build(dataset, args.workdir, 120 if args.quick else None)
    log.info("%s", results["build"])
    results["queries"] = bench_queries(db_path)
    log.info("%s", results["queries"])
    with open(dataset / "manifest.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    results["groups"] = {}
    for name, group in GROUPS.items():
        log.info("group %s ...", name)
        chosen = [r for r in rows if r["group"] == group][: 60 if args.quick else None]
        results["groups"][name] = bench_group(name, chosen, dataset, db_path, args.quick)
        log.info("%s", json.dumps(results["groups"][name]["compose_20x512"]))
    write_report("mask_db", results, markdown(results))
    print(markdown(results))
    if not args.quick:
        shutil.rmtree(args.workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
