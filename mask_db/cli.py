"""Command line: build a mask database from labelled dataset folders, describe it, compose masks.

    python -m mask_db build DB.sqlite DATASET_DIR [DATASET_DIR ...]
    python -m mask_db info DB.sqlite
    python -m mask_db compose DB.sqlite --like LABELS_DIR --n 20 --size 512 --seed 0 OUT_DIR

Each command prints one JSON object on its last line. A user error (missing folder, unreadable file, bad
value, empty database) prints one line ``error: ...`` on stderr and exits with status 2.

mask_db knows nothing of nucleaizer's I/O module, so label files are read and written here with two small
private helpers: uint16 (or other integer) PNG/TIFF in, uint16 PNG out.
"""

from __future__ import annotations

import argparse
import json
import logging
import sqlite3
import sys
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import tifffile
from tqdm import tqdm

from mask_db.layout import LayoutComposer
from mask_db.montage import montage
from mask_db.stats import compare, style_statistics
from mask_db.store import MaskDatabase

log = logging.getLogger("mask_db")

LABEL_SUFFIXES = (".png", ".tif", ".tiff")


def _read_labels(path: Path) -> np.ndarray:
    """One label file (integer PNG or TIFF, one channel) as int32 (H, W); ValueError naming the file."""
    try:
        array = (
            tifffile.imread(path)
            if path.suffix.lower() in (".tif", ".tiff")
            else cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        )
    except (OSError, ValueError, tifffile.TiffFileError) as error:
        raise ValueError(f"cannot read label image {path}: {error}") from error
    if array is None:
        raise ValueError(f"cannot read label image {path}: not an image file")
    if array.ndim == 3 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 2 or not np.issubdtype(array.dtype, np.integer):
        raise ValueError(
            f"{path} is not a label image: expected one integer channel (uint16 PNG/TIFF), "
            f"got {array.dtype} {array.shape}"
        )
    return array.astype(np.int32)


def _write_labels(path: Path, labels: np.ndarray) -> None:
    """Write a label image as a uint16 PNG (through a temporary file, renamed when complete)."""
    if labels.max(initial=0) > np.iinfo(np.uint16).max:
        raise ValueError(f"{path}: more than 65,535 objects do not fit a uint16 PNG")
    partial = path.with_name(f".{path.stem}.partial.png")
    if not cv2.imwrite(str(partial), labels.astype(np.uint16)):
        raise ValueError(f"cannot write {path}")
    partial.replace(path)


def _label_files(folder: Path) -> list[Path]:
    """Label files of a dataset folder (``folder/labels/``) or of a folder of label images, sorted."""
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder; give a dataset folder with labels/*.png")
    source = folder / "labels" if (folder / "labels").is_dir() else folder
    files = sorted(
        p for p in source.iterdir() if p.suffix.lower() in LABEL_SUFFIXES and not p.name.startswith(".")
    )
    if not files:
        raise FileNotFoundError(
            f"no label images (*.png, *.tif) in {source}; a dataset folder holds labels/<id>.png"
        )
    return files


def _labelled(files: list[Path], desc: str) -> Iterator[tuple[Path, np.ndarray]]:
    for path in tqdm(files, desc=desc, unit="image", leave=False, disable=len(files) < 50):
        yield path, _read_labels(path)


def build(args: argparse.Namespace) -> dict:
    totals = {"images_added": 0, "images_skipped": 0, "nuclei_added": 0}
    folders = [Path(d) for d in args.datasets]
    listed = [(folder, _label_files(folder)) for folder in folders]  # every folder checked before writing
    with MaskDatabase(args.database, create=True) as database:
        for folder, files in listed:
            name = folder.resolve().name
            # images already in the database are not even read
            new = [path for path in files if not database.has_image(name, path.stem)]
            items = ((name, path.stem, labels) for path, labels in _labelled(new, f"adding {name}"))
            counts = database.add_many(items, min_area=args.min_area)
            counts["images_skipped"] += len(files) - len(new)
            log.info("%s: %s", name, counts)
            for key, value in counts.items():
                totals[key] += value
        totals["nuclei"] = len(database)
    return totals


def info(args: argparse.Namespace) -> dict:
    with MaskDatabase(args.database) as database:
        return database.info()


def compose(args: argparse.Namespace) -> dict:
    like, out = Path(args.like), Path(args.out)
    if out.resolve().is_relative_to(like.resolve()):
        raise ValueError(f"output folder {out} lies inside the input folder {like}; choose another")
    real = [labels for _, labels in _labelled(_label_files(like), "measuring style")]
    style = style_statistics(real, min_area=args.min_area)
    with MaskDatabase(args.database) as database:
        composer = LayoutComposer(
            style,
            database if args.simulated_share < 1 else None,
            simulated_share=args.simulated_share,
            touch_probability=args.touch_probability,
        )
        masks = composer.compose(args.n, args.size, seed=args.seed)
    out.mkdir(parents=True, exist_ok=True)
    for index, labels in enumerate(masks):
        _write_labels(out / f"mask_{index:04d}.png", labels)
    if args.montage:
        cv2.imwrite(str(args.montage), cv2.cvtColor(montage(real, masks), cv2.COLOR_RGB2BGR))
    return {
        "written": len(masks),
        "out": str(out),
        "report": dict(composer.report),
        "match": compare(style_statistics(masks, min_area=args.min_area), style),
    }


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not the usage block
        self.exit(2, f"error: {message} (see python -m mask_db {self.prog.split()[-1]} --help)\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m mask_db", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    p = commands.add_parser("build", help="add the nuclei of labelled dataset folders to a database")
    p.add_argument("database", type=Path)
    p.add_argument("datasets", nargs="+", help="folders with labels/<id>.png (uint16 instance labels)")
    p.add_argument("--min-area", type=int, default=16, help="skip objects smaller than this (px)")
    p.set_defaults(run=build)
    p = commands.add_parser("info", help="print counts of a database as JSON")
    p.add_argument("database", type=Path)
    p.set_defaults(run=info)
    p = commands.add_parser("compose", help="compose label images that imitate a folder of label images")
    p.add_argument("database", type=Path)
    p.add_argument("out", type=Path, help="output folder for mask_NNNN.png (uint16 labels)")
    p.add_argument(
        "--like", required=True, help="dataset folder (labels/) or folder of label images to imitate"
    )
    p.add_argument("--n", type=int, default=20, help="number of masks")
    p.add_argument("--size", type=int, default=512, help="mask height and width (px)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--simulated-share", type=float, default=0.5, help="share of SIMCEP shapes (0..1)")
    p.add_argument(
        "--touch-probability",
        type=float,
        default=None,
        help="share of touching objects (default: as measured in --like)",
    )
    p.add_argument(
        "--min-area", type=int, default=16, help="ignore objects smaller than this when measuring (px)"
    )
    p.add_argument(
        "--montage", type=Path, default=None, help="also write a PNG of real beside generated masks"
    )
    p.set_defaults(run=compose)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        result = args.run(args)
    except (ValueError, FileNotFoundError, sqlite3.Error, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0
