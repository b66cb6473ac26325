"""What ``infer.py`` writes per image (label image, overlay, ROI set, GeoJSON) and the record that marks the
image finished (``.parts/<name>.json``, written last), which lets an interrupted run resume."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from nucleaizer import io
from nucleaizer.infer import exports
from nucleaizer.infer.nucleus_segmenter import Segmentation
from nucleaizer.infer.overlay import nuclei_table, overlay

LABEL_FORMATS = {"png": ".png", "tif": ".tif", "tiff": ".tif", "ome": io.OME_SUFFIX}
PARTS = ".parts"  # one record per finished image: written last, after its label image and overlay


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
