"""Memory benchmark: peak resident memory of ``infer.py`` on large square images, classical and Mask R-CNN.

    python -m benchmarks.memory [--cases classical:2000,maskrcnn:2000,...] [--checkpoint PT]

Each image is a mosaic of real dsb2018_train fluorescence crops (benchmarks/inference.py's 2048 px mosaic,
repeated, enlarged 2.8x so its nuclei are about 40 px across) written as an 8-bit PNG; infer.py segments it in
a fresh process, as a user would (tiles of 512 px, diameter=40 given: no size-estimation pass and no
rescaling, so the side is also the working size that memory depends on), and the peak resident set of that
process is read from the kernel (wait4). Mask R-CNN: a bundle made from ``--checkpoint`` (default: the shipped
generalist model's segmenter). Writes benchmarks/results/memory.{json,md}.
"""

from __future__ import annotations

import argparse
import datetime
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import git_commit, machine, write_report
from nucleaizer.models import DEFAULT_MODEL, segmenter_file

ROOT = Path(__file__).resolve().parent.parent

DEFAULT_CHECKPOINT = segmenter_file(DEFAULT_MODEL)


def write_mosaic(side: int, folder: Path) -> float:
    """A side x side PNG of real fluorescence crops with nuclei about 40 px across in ``folder``; returns 40."""
    from inference import build_mosaic

    from nucleaizer import io
    from nucleaizer.size import median_diameter, rescale_image

    tile, labels = build_mosaic(2048)
    tile = rescale_image(tile, 40 / median_diameter(labels))
    repeats = -(-side // tile.shape[0])
    io.write_image(folder / f"mosaic_{side}.png", np.tile(tile, (repeats, repeats, 1))[:side, :side])
    return 40.0


def peak_rss_of_infer(
    model: str, images: Path, out: Path, diameter: float, threads: int
) -> tuple[float, float]:
    """(peak resident MB, seconds) of one infer.py process."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT)}
    started = time.perf_counter()
    process = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "infer.py"),
            f"model={model}",
            f"input={images}",
            f"output={out}",
            f"diameter={diameter}",
            "device=cpu",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    if status != 0:
        raise SystemExit(f"infer.py failed: {process.stderr.read().decode()[-2000:]}")
    return usage.ru_maxrss / 1024, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--cases",
        default=",".join(f"{p}:{s}" for s in (2000, 4000, 10000) for p in ("classical", "maskrcnn")),
        help="predictor:side pairs, comma-separated",
    )
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    from nucleaizer.bundle import write_bundle

    cases = [
        (predictor, int(side)) for predictor, side in (case.split(":") for case in args.cases.split(","))
    ]
    rows = []
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        models = {"classical": "classical"}
        if any(predictor == "maskrcnn" for predictor, _ in cases):
            write_bundle(work / "bundle", args.checkpoint)
            models["maskrcnn"] = str(work / "bundle")
        diameters: dict[int, float] = {}
        for predictor, side in cases:
            images = work / f"images_{side}"
            if side not in diameters:
                diameters[side] = write_mosaic(side, images)
            out = work / f"out_{predictor}_{side}"
            peak, seconds = peak_rss_of_infer(models[predictor], images, out, diameters[side], args.threads)
            megapixels = side * side / 1e6
            rows.append(
                {
                    "predictor": predictor,
                    "side_px": side,
                    "megapixels": megapixels,
                    "peak_rss_mb": round(peak),
                    "seconds": round(seconds, 1),
                    "mp_per_s": round(megapixels / seconds, 4),
                }
            )
            print(rows[-1], flush=True)
    report = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": machine(),
        "commit": git_commit(),
        "threads": args.threads,
        "checkpoint": str(args.checkpoint),
        "rows": rows,
    }
    lines = [
        f"# Memory of infer.py on large images ({report['date']})",
        "",
        f"Machine: {report['machine']['platform']}, {report['machine']['cpu_count']} CPUs, {args.threads} "
        f"threads; commit {report['commit']}. One fresh infer.py process per row (8-bit PNG mosaic of real "
        "fluorescence crops, nuclei about 40 px, diameter=40: segmented at its own size, 512 px tiles); peak "
        "resident set from the kernel.",
        "",
        "| predictor | image px | peak RSS MB | seconds | MP/s |",
        "| --- | --- | --- | --- | --- |",
    ]
    lines += [
        f"| {r['predictor']} | {r['side_px']} | {r['peak_rss_mb']} | {r['seconds']} | {r['mp_per_s']} |"
        for r in rows
    ]
    write_report("memory", report, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
