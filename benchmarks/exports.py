"""Export overhead benchmark: what ROI sets and GeoJSON add to the time of segmenting a folder.

    python -m benchmarks.exports [--images 30]

infer.py (model=classical, the fastest predictor, so the share is the largest it gets) segments the same
dsb2018_train images twice in fresh processes, alternating, three times each: with the default formats
(labels, overlay, csv) and with rois and geojson added. Writes benchmarks/results/exports.{json,md}.
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

from benchmarks.common import git_commit, machine, write_report

ROOT = Path(__file__).resolve().parent.parent

DATA = ROOT.parent / "shared" / "data" / "dsb2018_train"
FORMATS = {"default": "[labels,overlay,csv]", "with_exports": "[labels,overlay,csv,rois,geojson]"}


def run_infer(images: Path, out: Path, formats: str) -> float:
    started = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "infer.py"),
            "model=classical",
            f"input={images}",
            f"output={out}",
            f"formats={formats}",
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
        env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"},
    )
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    times: dict[str, list[float]] = {name: [] for name in FORMATS}
    with tempfile.TemporaryDirectory() as work:
        images = Path(work) / "images"
        images.mkdir()
        for path in sorted((DATA / "images").iterdir())[: args.images]:
            (images / path.name).symlink_to(path)
        for repeat in range(args.repeats):
            for name, formats in FORMATS.items():
                times[name].append(run_infer(images, Path(work) / f"out_{name}_{repeat}", formats))
    best = {name: min(values) for name, values in times.items()}
    report = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": machine(),
        "commit": git_commit(),
        "images": args.images,
        "seconds": times,
        "overhead": round(best["with_exports"] / best["default"] - 1, 4),
    }
    text = (
        f"# Export overhead ({report['date']})\n\ninfer.py model=classical on {args.images} dsb2018_train images, "
        f"fastest of {args.repeats} fresh processes each, 1 thread; commit {report['commit']}.\n\n"
        f"| formats | seconds |\n| --- | --- |\n| labels, overlay, csv | {best['default']:.1f} |\n"
        f"| + rois, geojson | {best['with_exports']:.1f} |\n\nROI sets and GeoJSON add "
        f"{100 * report['overhead']:.1f}% to the time of segmenting the folder.\n"
    )
    write_report("exports", report, text)
    print(text)


if __name__ == "__main__":
    main()
