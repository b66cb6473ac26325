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
    rois/<name>.zip       with formats=[...,rois]: ImageJ/Fiji ROI set (nucleaizer.exports)
    geojson/<name>.geojson  with formats=[...,geojson]: QuPath detections
    evaluation/           with ground_truth=DIR: per_image.csv and summary.json (nucleaizer.evaluate)
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from nucleaizer import exports, io, output_folder
from nucleaizer.baseline import ClassicalPredictor
from nucleaizer.bundle import Bundle, load_predictors, read_bundle
from nucleaizer.config_files import HYDRA_FOLDER
from nucleaizer.devices import resolve_device
from nucleaizer.errors import UserError
from nucleaizer.inference import NucleusSegmenter, Refiner, Segmentation
from nucleaizer.models import model_folder
from nucleaizer.overlay import NUCLEI_COLUMNS, nuclei_table, overlay
from nucleaizer.size import SizeRule
from nucleaizer.tiling import TileParams
from nucleaizer.tta import check_transforms

log = logging.getLogger(__name__)

CLASSICAL = "classical"
LABEL_FORMATS = {"png": ".png", "tif": ".tif", "tiff": ".tif", "ome": io.OME_SUFFIX}
DEVICES = ("auto", "cpu", "cuda")


def _given(cfg: DictConfig, key: str) -> Any:
    """The value of ``key``, or None when it is unset (``???``) or null."""
    return None if OmegaConf.is_missing(cfg, key) else cfg[key]


def tile_params(cfg: DictConfig) -> TileParams:
    """TileParams from the config keys tile_size, tile_overlap, batch_size, match_iou, min_input_px."""
    try:
        return TileParams(
            int(cfg.tile_size),
            int(cfg.tile_overlap),
            int(cfg.batch_size),
            float(cfg.match_iou),
            int(cfg.min_input_px),
        )
    except ValueError as error:
        raise UserError(f"tile settings: {error}") from error


def validate_config(cfg: DictConfig) -> None:
    """Check the command line before anything is written (Hydra writes its logs under ``output``)."""
    model, source, output, truth = (_given(cfg, k) for k in ("model", "input", "output", "ground_truth"))
    bundle = read_bundle(model_folder(model)) if model is not None and str(model) != CLASSICAL else None
    if source is not None and not Path(source).is_dir():
        raise UserError(f"input folder {source} does not exist or is not a folder (key: input)")
    if truth is not None and not Path(truth).is_dir():
        raise UserError(f"ground_truth folder {truth} does not exist or is not a folder (key: ground_truth)")
    diameter = _given(cfg, "diameter")
    if diameter is not None and (
        not isinstance(diameter, (int, float))
        or isinstance(diameter, bool)
        or not math.isfinite(diameter)
        or diameter <= 0
    ):
        raise UserError(
            f"diameter={diameter!r}: give the nucleus diameter in pixels (a positive number) or null"
        )
    formats = list(cfg.formats)
    unknown = [f for f in formats if f not in exports.FORMATS]
    if unknown or not formats:
        raise UserError(f"formats={formats}: choose some of {list(exports.FORMATS)}")
    if truth is not None and "labels" not in formats:
        raise UserError("ground_truth= scores the label images: add labels to formats=[...]")
    if not 0.0 <= float(cfg.low_score) <= 1.0:
        raise UserError(f"low_score={cfg.low_score}: give a detection score between 0 and 1")
    if str(cfg.label_format) not in LABEL_FORMATS:
        raise UserError(f"label_format={cfg.label_format}: use one of {', '.join(LABEL_FORMATS)}")
    if str(cfg.on_bad_file) not in io.ON_BAD_FILE_CHOICES:
        raise UserError(f"on_bad_file={cfg.on_bad_file}: use one of {', '.join(io.ON_BAD_FILE_CHOICES)}")
    if str(cfg.device) not in DEVICES:
        raise UserError(f"device={cfg.device}: use one of {', '.join(DEVICES)}")
    try:
        check_transforms(list(cfg.tta_transforms))
    except ValueError as error:
        raise UserError(f"tta_transforms: {error}") from error
    tile_params(cfg)
    if output is not None:  # last: it probes the output folder
        output_folder.check_output(
            output,
            {
                "input folder": source,
                "ground_truth folder": truth,
                "model folder": None if bundle is None else bundle.folder,
            },
            ignore=(HYDRA_FOLDER,),
        )


def postprocess_refiner(bundle: Bundle | None, enabled: bool, device: str) -> Refiner | None:
    """Post-processing hook: the bundle's contour refiner, or None (a no-op) when ``postprocess=false`` or when
    the bundle has no post-processing section.

    The section is ``{"ensemble": FILE in the bundle, "params": {p1..p6}}`` (nucleaizer.postprocess).
    """
    if not enabled or bundle is None or bundle.postprocess is None:
        return None
    spec = bundle.postprocess
    if "ensemble" not in spec:
        raise UserError(
            f"{bundle.folder}: the 'postprocess' section needs 'ensemble' (the U-Net file); "
            "rebuild the bundle or run with postprocess=false"
        )
    try:
        from nucleaizer.postprocess.refiner import load_refiner
    except ImportError as error:
        raise UserError(
            f"this installation cannot apply the bundle's post-processing ({error}); "
            "run with postprocess=false"
        ) from error
    return load_refiner(bundle.path(spec["ensemble"]), spec.get("params"), device)


def build_segmenter(cfg: DictConfig) -> tuple[NucleusSegmenter, Bundle | None]:
    """The NucleusSegmenter the config describes (bundle or classical baseline) and the bundle (None if classical)."""
    tiles = tile_params(cfg)
    transforms = tuple(cfg.tta_transforms) if cfg.tta else ()
    if str(cfg.model) == CLASSICAL:
        predictor = ClassicalPredictor(**OmegaConf.to_container(cfg.classical))
        size = SizeRule(**OmegaConf.to_container(cfg.classical_size))
        return NucleusSegmenter(predictor, None, size, tiles, transforms), None
    bundle = read_bundle(model_folder(cfg.model))
    device = resolve_device(str(cfg.device))
    predictor, preseg = load_predictors(bundle, device, int(cfg.batch_size), float(cfg.mask_threshold))
    refine = postprocess_refiner(bundle, bool(cfg.postprocess), device)
    # a model measures the size where the classical guess brings the nuclei to about its working size
    guess = ClassicalPredictor() if bundle.size_estimation == "model" else None
    return NucleusSegmenter(predictor, preseg, bundle.size, tiles, transforms, refine, guess), bundle


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
PARTS = ".parts"  # one record per finished image: written last, after its label image and overlay


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


def finished_images(output: Path, samples: list[io.Sample], fingerprint: str) -> dict[str, dict]:
    """Records of the images an earlier run with the same settings finished (every file they name is there)."""
    done = {}
    for sample in samples:
        record_path = output / PARTS / f"{sample.name}.json"
        if not record_path.is_file():
            continue
        record = json.loads(record_path.read_text())
        if record.get("fingerprint") == fingerprint and all((output / f).is_file() for f in record["files"]):
            done[sample.name] = record
    return done


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


class ImageFinisher:
    """Writes one segmented image: its files, then its record (``.parts/<name>.json``, written last, so an
    interrupted run never counts a half-written image as finished); returns the record."""

    def __init__(self, cfg: DictConfig, output: Path, fingerprint: str):
        self.cfg, self.output, self.fingerprint = cfg, output, fingerprint

    def __call__(
        self,
        sample: io.Sample,
        image: np.ndarray,
        found: Segmentation,
        diameter: float,
        diameter_source: str,
        started: float,
    ) -> dict:
        nuclei = json.loads(
            nuclei_table(sample.name, found.labels, image, found.score, found.agreement).to_json(
                orient="records"
            )
        )
        files = write_image_results(self.output, sample, image, found.labels, nuclei, self.cfg)
        record = {
            "fingerprint": self.fingerprint,
            "files": files,
            "image": {
                "image": sample.name,
                "height": image.shape[0],
                "width": image.shape[1],
                "diameter_px": diameter,
                "diameter_source": diameter_source,
                "scale": found.scale,
                "nuclei": len(nuclei),
                **confidence_summary(found.score, float(self.cfg.low_score)),
                "seconds": round(time.perf_counter() - started, 3),
            },
            "nuclei": nuclei,
        }
        with io.atomic_write(self.output / PARTS / f"{sample.name}.json") as temporary:
            temporary.write_text(json.dumps(record, default=float))
        return record


def write_image_results(
    output: Path,
    sample: io.Sample,
    image: np.ndarray,
    labels: np.ndarray,
    nuclei: list[dict],
    cfg: DictConfig,
) -> list[str]:
    """The files of one image in the chosen formats (besides the tables); returns their paths in ``output``."""
    files, name = [], sample.name

    def path(relative: str) -> Path:
        files.append(relative)
        return output / relative

    if "labels" in cfg.formats:
        io.write_labels(
            path(f"labels/{name}{LABEL_FORMATS[str(cfg.label_format)]}"),
            labels,
            pixel_size_um=io.pixel_size_um(sample.image_path),
        )
    if "overlay" in cfg.formats:
        io.write_image(path(f"overlays/{name}.png"), overlay(image, labels, seed=int(cfg.seed)))
    if {"rois", "geojson"} & set(cfg.formats):
        shapes = exports.outlines(labels)
        if "rois" in cfg.formats:
            exports.write_imagej_rois(path(f"rois/{name}.zip"), shapes, nuclei)
        if "geojson" in cfg.formats:
            exports.write_geojson(path(f"geojson/{name}.geojson"), shapes, nuclei)
    return files


def confidence_summary(score: np.ndarray, low_score: float) -> dict[str, float | None]:
    """Per image, for ranking images to check: the mean nucleus score and the share of nuclei below low_score."""
    if not len(score):
        return {"mean_score": None, "low_score_share": None}
    return {
        "mean_score": round(float(np.nanmean(score)), 4),
        "low_score_share": round(float(np.mean(score < low_score)), 4),
    }
