"""Stage ``sizes``: the nucleus diameter of every target image (from its pre-segmentation, or size.diameter_px)
and its scale factor to the working scale (about 40 px nuclei).

Its output: ``sizes.csv`` (image, measured_diameter_px, diameter_px, scale), read by ``read_scales`` and
``read_diameters``; ``working_scale_pairs`` gives the target images rescaled by it.
"""

from __future__ import annotations

from pathlib import Path

from nucleaizer import io, size
from nucleaizer.errors import UserError
from nucleaizer.pipeline import preseg
from nucleaizer.pipeline.common import read_csv
from nucleaizer.pipeline.context import Context, Stage
from nucleaizer.run_folder import RunFolder

NAME = "sizes"
TABLE = "sizes.csv"


def read_scales(run: RunFolder) -> dict[str, float]:
    """image stem -> scale factor to the working scale."""
    return {row["image"]: float(row["scale"]) for row in read_csv(run.path(NAME) / TABLE)}


def read_diameters(run: RunFolder) -> dict[str, float]:
    """image stem -> nucleus diameter in pixels (measured, else the dataset median)."""
    return {row["image"]: float(row["diameter_px"]) for row in read_csv(run.path(NAME) / TABLE)}


def working_scale_pairs(ctx: Context, samples: list[io.Sample], labels_dir: Path | None) -> list[tuple]:
    """(name, image, labels) of target samples rescaled to the working scale; labels from ``labels_dir`` by
    stem (None: the samples' own)."""
    scales = read_scales(ctx.run)
    pairs = []
    for sample, image, own_labels in io.iter_samples(samples, on_bad_file=ctx.cfg.train.on_bad_file):
        labels = io.read_labels(labels_dir / f"{sample.name}.png") if labels_dir is not None else own_labels
        scale = scales[sample.name]
        pairs.append((sample.name, size.rescale_image(image, scale), size.rescale_labels(labels, scale)))
    return pairs


def run(ctx: Context, out: Path, summary: dict) -> None:
    cfg = ctx.cfg.size
    label_files = sorted(preseg.labels_folder(ctx.run).glob("*.png"))
    if cfg.diameter_px:
        diameters = [float(cfg.diameter_px)] * len(label_files)
        measured = [None] * len(label_files)
    else:
        measured = [size.estimated_diameter(io.read_labels(f), cfg.min_object_area_px) for f in label_files]
        if all(d is None for d in measured):
            raise UserError(
                "no nuclei were found in any target image by the pre-segmentation: set the nucleus "
                "diameter by hand (size.diameter_px=...) or give a better preseg.checkpoint"
            )
        diameters = size.fill_with_dataset_median(measured, cfg.target_diameter_px)
    rows = [
        {
            "image": f.stem,
            "measured_diameter_px": "" if m is None else round(m, 2),
            "diameter_px": round(d, 2),
            "scale": round(size.scale_factor(d, cfg.target_diameter_px, cfg.min_scale, cfg.max_scale), 4),
        }
        for f, m, d in zip(label_files, measured, diameters, strict=True)
    ]
    io.write_csv(out / TABLE, rows)
    summary.update(
        images=len(rows),
        median_diameter_px=round(float(sorted(diameters)[len(diameters) // 2]), 1),
        no_detection_images=sum(m is None for m in measured) if not cfg.diameter_px else 0,
    )


STAGE = Stage(
    NAME,
    "estimate the nucleus diameter of every target image and its scale factor to 40 px [1]",
    ("size",),
    run,
)
