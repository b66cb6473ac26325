"""The ``infer.py`` job: segment a folder of images with a model bundle and write labels, overlays, tables.

    python infer.py input=DIR output=DIR [model=NAME|PATH|classical] [ground_truth=DIR] [diameter=PX] [tta=true]

``model`` defaults to the generalist model shipped with the package (nucleaizer.models); a bundle folder written
by train.py (runs/<target>/model) or ``classical`` (the classical baseline, a reference) replace it.

Output folder::

    labels/<name>.png     uint16 label image per input image (label_format=tif: TIFF; ome: OME-TIFF
                          with the input's physical pixel size when its TIFF records one)
    overlays/<name>.png   the image with every nucleus tinted and outlined
    nuclei.csv            one row per nucleus (see overlay.nuclei_table), with its score and TTA agreement
    images.csv            per image: size, diameter used and where it came from, scale, count, mean score,
                          share of low-score nuclei, seconds
    rois/<name>.zip       with formats=[...,rois]: ImageJ/Fiji ROI set (nucleaizer.infer.exports)
    geojson/<name>.geojson  with formats=[...,geojson]: QuPath detections
    evaluation/           with ground_truth=DIR: per_image.csv and summary.json (nucleaizer.evaluate)
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from nucleaizer import io, output_folder
from nucleaizer.config_files import HYDRA_FOLDER
from nucleaizer.errors import UserError
from nucleaizer.infer.overlay import NUCLEI_COLUMNS
from nucleaizer.infer.results import ImageFinisher, finished_images
from nucleaizer.infer.settings import CLASSICAL, build_segmenter, validate_config
from nucleaizer.models import model_folder

log = logging.getLogger(__name__)


OUTLIER_FACTOR = 3.0  # an estimate this many times off the folder's median is worth a warning


def warn_about_outliers(diameters: dict[str, float]) -> None:
    """Warn when some images' estimated nucleus diameters lie far from the folder's median."""
    if len(diameters) < 2:
        return
    median = float(np.median(list(diameters.values())))
    far = {name: d for name, d in diameters.items() if not 1 / OUTLIER_FACTOR <= d / median <= OUTLIER_FACTOR}
    if far:
        listed = ", ".join(f"{name} {d:.1f} px" for name, d in list(far.items())[:5])
        log.warning(
            "the estimated nucleus diameters of %d image(s) lie over %gx away from the folder's median "
            "of %.1f px (%s%s): check those images, or give diameter=PX if all share one magnification",
            len(far),
            OUTLIER_FACTOR,
            median,
            listed,
            ", ..." if len(far) > 5 else "",
        )


# the settings that make a segmentation: an image finished with other settings is segmented again
RESULT_SETTINGS = (
    "model",
    "diameter",
    "tta",
    "tta_transforms",
    "postprocess",
    "tile_size",
    "tile_overlap",
    "match_iou",
    "min_input_px",
    "mask_threshold",
    "label_format",
    "classical",
    "classical_size",
    "seed",
    "formats",
    "low_score",
)


def result_fingerprint(cfg: DictConfig) -> str:
    from nucleaizer.run_folder import fingerprint

    settings = {
        key: OmegaConf.to_container(cfg[key], resolve=True) if OmegaConf.is_config(cfg[key]) else cfg[key]
        for key in RESULT_SETTINGS
    }
    if str(cfg.model) != CLASSICAL:  # the bundle's files as they are now: a retrained model is a new model
        folder = model_folder(cfg.model).resolve()
        settings["model"] = [str(folder)] + [
            [p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in sorted(folder.iterdir()) if p.is_file()
        ]
    return fingerprint(settings)


def ground_truth_shapes(cfg: DictConfig, samples: list[io.Sample]) -> dict[str, tuple[Path, tuple[int, int]]]:
    """Per image of this run that has ground truth: (its file, its size); every one is read up front, so an
    unreadable or non-integer ground truth fails before any image is segmented."""
    from nucleaizer.evaluate import find_label_sources

    _, sources = find_label_sources(cfg.ground_truth, "ground truth")
    return {
        s.name: (sources[s.name].path, sources[s.name].read().shape) for s in samples if s.name in sources
    }


def run(cfg: DictConfig) -> dict[str, Any]:
    """Segment the ``input`` folder (see module doc); returns a summary (images, nuclei, seconds, evaluation).

    A rerun with the same settings into the same output folder skips the images an interrupted run finished.
    A user error found before any image is written removes an output folder this run created.
    """
    validate_config(cfg)
    output = Path(cfg.output)
    fresh = not output.exists() or all(p.name == HYDRA_FOLDER for p in output.iterdir())
    try:
        return _segment_folder(cfg, output_folder.claim(output, "infer"))
    except UserError:
        if fresh and all(p.name in (HYDRA_FOLDER, output_folder.MARKER) for p in output.iterdir()):
            shutil.rmtree(output, ignore_errors=True)
        raise


def _segment_folder(cfg: DictConfig, output: Path) -> dict[str, Any]:
    started = time.perf_counter()
    samples = io.list_samples(cfg.input)
    truth = ground_truth_shapes(cfg, samples) if cfg.ground_truth is not None else None
    fingerprint = result_fingerprint(cfg)
    done = finished_images(output, samples, fingerprint)
    if done:
        log.info(
            "%d of %d images were finished by an earlier run with the same settings; skipping them",
            len(done),
            len(samples),
        )
    todo = [s for s in samples if s.name not in done]
    segmenter, _ = build_segmenter(cfg)
    finish = ImageFinisher(cfg, output, fingerprint)
    records = dict(done)
    estimated = {
        name: r["image"]["diameter_px"]
        for name, r in done.items()
        if r["image"]["diameter_source"] == "estimated"
    }
    unsized = []  # no nucleus found to measure: segmented last, at the median size of the others
    for sample, image, _ in tqdm(
        io.iter_samples(todo, str(cfg.on_bad_file)), total=len(todo), desc="segmenting"
    ):
        started_image = time.perf_counter()
        if truth is not None and sample.name in truth and truth[sample.name][1] != image.shape[:2]:
            path, shape = truth[sample.name]
            raise UserError(
                f"{path}: ground-truth size {shape} differs from its image {image.shape[:2]}; ground "
                "truth must have the image's height and width"
            )
        if cfg.diameter is not None:
            found = segmenter.segment_objects(image, diameter_px=float(cfg.diameter))
            records[sample.name] = finish(sample, image, found, float(cfg.diameter), "given", started_image)
            continue
        estimate = segmenter.measure_size(image)
        if estimate.diameter_px is None:
            unsized.append(sample)
            continue
        estimated[sample.name] = estimate.diameter_px
        found = segmenter.segment_objects(image, estimate=estimate)
        records[sample.name] = finish(sample, image, found, estimate.diameter_px, "estimated", started_image)
    warn_about_outliers(estimated)
    median = float(np.median(list(estimated.values()))) if estimated else segmenter.size.target_diameter_px
    for sample, image, _ in io.iter_samples(unsized, str(cfg.on_bad_file)):
        started_image = time.perf_counter()
        found = segmenter.segment_objects(image, diameter_px=median)
        records[sample.name] = finish(sample, image, found, median, "dataset_median", started_image)
    if not records:
        raise UserError(f"no image of {cfg.input} could be read; nothing was segmented")
    ordered = [records[s.name] for s in samples if s.name in records]
    if "csv" in cfg.formats:
        nuclei = pd.DataFrame([row for r in ordered for row in r["nuclei"]], columns=NUCLEI_COLUMNS)
        io.write_table(output / "nuclei.csv", nuclei)
        io.write_table(output / "images.csv", pd.DataFrame([r["image"] for r in ordered]))
    summary: dict[str, Any] = {
        "images": len(ordered),
        "nuclei": int(sum(r["image"]["nuclei"] for r in ordered)),
    }
    if truth is not None:
        from nucleaizer.evaluate import evaluate_folders

        summary["evaluation"] = evaluate_folders(
            output / "labels",
            cfg.ground_truth,
            output / "evaluation",
            names=[r["image"]["image"] for r in ordered],
        )
        log.info("DSB score %.4f on %d images", summary["evaluation"]["dsb"], summary["evaluation"]["images"])
    summary["seconds"] = round(time.perf_counter() - started, 2)
    log.info(
        "segmented %d images, %d nuclei, in %.1f s; results in %s",
        summary["images"],
        summary["nuclei"],
        summary["seconds"],
        output,
    )
    return summary
