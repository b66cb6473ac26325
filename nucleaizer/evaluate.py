"""Score a folder of predicted label images against a folder of ground truth, matched by file stem.

    python -m nucleaizer.evaluate PRED_DIR GT_DIR [--out DIR]

Either folder may be a plain folder of label images (PNG/TIFF), a dataset folder with `labels/`, or (for
the ground truth) the DSB 2018 layout with one mask per nucleus. A ground-truth image without prediction
scores as an empty prediction; a prediction without ground truth is reported in a warning and not scored.
`--out` receives `per_image.csv` and `summary.json`; the summary is also printed as one JSON object on the
last line of standard output. Mistakes in the input end with one line on standard error and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
from tqdm import tqdm

from nucleaizer import io, metrics, output_folder
from nucleaizer.errors import UserError

log = logging.getLogger(__name__)

PER_IMAGE_CSV = "per_image.csv"
SUMMARY_JSON = "summary.json"


@dataclass(frozen=True)
class LabelSource:
    """Where the labels of one image come from (`path`, for messages) and how to read them."""

    path: Path
    read: Callable[[], np.ndarray]


def find_label_sources(folder: str | Path, role: str) -> tuple[Path, dict[str, LabelSource]]:
    """The folder actually read and its label images keyed by name (file stem, or DSB sample id).

    `role` ("prediction" / "ground truth") only words the messages. Raises `UserError` for a missing
    folder or one without any label image.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{role} folder {folder} does not exist; check the path")
    if (folder / "labels").is_dir():
        folder = folder / "labels"
    files = io.files_by_stem(folder, io.LABEL_SUFFIXES)
    if files:
        return folder, {
            name: LabelSource(path, partial(io.read_labels, path)) for name, path in files.items()
        }
    samples = io.list_samples(folder, require_labels=True)  # DSB layout, or a clear error
    return folder, {s.name: LabelSource(s.mask_paths[0].parent if s.mask_paths else s.image_path, s.read_labels)
                    for s in samples}  # fmt: skip


def _examples(names: Sequence[str]) -> str:
    return ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")


def score_sources(
    pred_sources: dict[str, LabelSource],
    gt_sources: dict[str, LabelSource],
    thresholds: Sequence[float] = metrics.IOU_THRESHOLDS,
    error_iou: float = metrics.ERROR_IOU,
    cover_iou: float = metrics.COVER_IOU,
    size_bins_px: Sequence[float] = metrics.SIZE_BINS_PX,
) -> list[dict]:
    """Per-image scores sorted by name: `name`, `predicted` (1, or 0 when scored as empty), score keys."""
    if not gt_sources:
        raise UserError("no ground-truth label images to score against")
    without_gt = sorted(set(pred_sources) - set(gt_sources))
    if without_gt:
        log.warning("%d prediction(s) have no ground truth and are not scored: %s", len(without_gt),
                    _examples(without_gt))  # fmt: skip
    without_pred = sorted(set(gt_sources) - set(pred_sources))
    if without_pred:
        log.warning("%d ground-truth image(s) have no prediction and score as empty: %s", len(without_pred),
                    _examples(without_pred))  # fmt: skip
    rows = []
    for name in tqdm(sorted(gt_sources), desc="scoring", unit="image", disable=len(gt_sources) < 50):
        gt = gt_sources[name].read()
        pred_source = pred_sources.get(name)
        pred = pred_source.read() if pred_source is not None else np.zeros_like(gt)
        if pred.shape != gt.shape:
            raise UserError(
                f"{pred_source.path}: size {pred.shape} differs from its ground truth "
                f"{gt_sources[name].path} {gt.shape}; predictions must have the image's size"
            )
        scores = metrics.score_image(gt, pred, thresholds, error_iou, cover_iou, size_bins_px)
        rows.append({"name": name, "predicted": int(pred_source is not None), **scores})
    return rows


def evaluate_folders(
    pred_dir: str | Path,
    gt_dir: str | Path,
    out_dir: str | Path | None = None,
    thresholds: Sequence[float] = metrics.IOU_THRESHOLDS,
    error_iou: float = metrics.ERROR_IOU,
    cover_iou: float = metrics.COVER_IOU,
    size_bins_px: Sequence[float] = metrics.SIZE_BINS_PX,
    names: Collection[str] | None = None,
) -> dict:
    """Score `pred_dir` against `gt_dir` and return the dataset summary (`metrics.summarize` keys).

    names: score only these images (the images of one run), whatever else the folders hold.
    The summary also counts `missing_predictions` (ground-truth images without prediction, scored as
    empty). With `out_dir`, writes `per_image.csv` and `summary.json` there; `out_dir` may not lie inside
    a folder that is read.
    """
    gt_folder, gt_sources = find_label_sources(gt_dir, "ground truth")
    pred_folder, pred_sources = find_label_sources(pred_dir, "prediction")
    if out_dir is not None:  # before the scoring, so a bad output path costs no time
        output_folder.check_output(
            out_dir, {"prediction folder": pred_folder, "ground-truth folder": gt_folder}
        )
    if names is not None:
        names = set(names)
        gt_sources = {k: v for k, v in gt_sources.items() if k in names}
        pred_sources = {k: v for k, v in pred_sources.items() if k in names}
    rows = score_sources(pred_sources, gt_sources, thresholds, error_iou, cover_iou, size_bins_px)
    summary = metrics.summarize(rows)
    summary["missing_predictions"] = summary["images"] - summary.pop("predicted")
    if out_dir is not None:  # made only now: a scoring error leaves no empty folder behind
        out_dir = output_folder.claim(out_dir, "evaluate")
        io.write_csv(out_dir / PER_IMAGE_CSV, rows)
        with io.atomic_write(out_dir / SUMMARY_JSON) as temporary:
            temporary.write_text(json.dumps(summary, indent=2) + "\n")
        log.info("wrote %s and %s", out_dir / PER_IMAGE_CSV, out_dir / SUMMARY_JSON)
    return summary


def _floats(text: str) -> list[float]:
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from error


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: score, write `--out`, print the summary JSON as the last line; 2 on a user error."""
    parser = argparse.ArgumentParser(
        prog="python -m nucleaizer.evaluate",
        description="Score predicted label images against ground truth (files matched by stem).",
    )
    parser.add_argument("pred_dir", type=Path, help="predicted label images (or a folder with labels/)")
    parser.add_argument(
        "gt_dir", type=Path, help="ground-truth label images, a folder with labels/, or DSB layout"
    )
    parser.add_argument("--out", type=Path, default=None, help="write per_image.csv and summary.json here")
    parser.add_argument("--size-bins", type=_floats, default=list(metrics.SIZE_BINS_PX),
                        help="equivalent-diameter edges (px) of the miss bins, e.g. 10,20,40")  # fmt: skip
    parser.add_argument("--error-iou", type=float, default=metrics.ERROR_IOU, help="missed/extra IoU")
    parser.add_argument("--cover-iou", type=float, default=metrics.COVER_IOU, help="merge/split IoU")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s", stream=sys.stderr)
    try:
        summary = evaluate_folders(
            args.pred_dir, args.gt_dir, args.out,
            error_iou=args.error_iou, cover_iou=args.cover_iou, size_bins_px=args.size_bins,
        )  # fmt: skip
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
