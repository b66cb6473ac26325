"""The built-in demo experiment: an annotated source domain and a differently stained, unlabelled target.

The source looks like fluorescence microscopy (bright nuclei on a dark background); the target, with somewhat
larger nuclei, has another of ``simulate.STYLES``' looks: by default H&E-stained tissue (dark purple nuclei on a
bright pink textured background).
Target labels are written too, but only for scoring at the end: the pipeline never trains on them unless
asked to (style=gt).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from nucleaizer import io, simulate
from nucleaizer.errors import UserError

log = logging.getLogger(__name__)

SOURCE_STYLE = "fluorescence"
# what a demo folder written before its marker recorded every setting was made with
LEGACY_SETTINGS = {"source_diameter_px": "30", "target_diameter_px": "36", "target_style": "he"}


def _write_domain(
    folder: Path, style: str, n_images: int, image_size: int, diameter_px: float, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    for index in range(n_images):
        density = rng.uniform(0.15, 0.35)
        image, labels = simulate.sample(style, image_size, diameter_px, density, seed=rng)
        name = f"{style}_{index:03d}"
        io.write_image(folder / "images" / f"{name}.png", image)
        io.write_labels(folder / "labels" / f"{name}.png", labels)


def make_demo(
    folder: str | Path,
    n_source: int = 24,
    n_target: int = 16,
    image_size: int = 256,
    source_diameter_px: float = 30,
    target_diameter_px: float = 36,
    seed: int = 0,
    target_style: str = "he",
) -> Path:
    """Write the demo experiment under ``folder`` once: ``source/{images,labels}`` and ``target/{images,labels}``.

    ``target_style``: the target's look, one of ``simulate.STYLES`` other than the source's fluorescence. An
    existing, complete demo folder written with the same settings is left as it is; one written with other
    settings is an error (its runs' results belong to those images). Returns ``folder``.
    """
    if target_style not in simulate.STYLES or target_style == SOURCE_STYLE:
        looks = ", ".join(s for s in simulate.STYLES if s != SOURCE_STYLE)
        raise UserError(f"target.demo.target_style {target_style!r}: one of {looks}")
    folder = Path(folder)
    settings = {
        "n_source": n_source,
        "n_target": n_target,
        "image_size": image_size,
        "source_diameter_px": source_diameter_px,
        "target_diameter_px": target_diameter_px,
        "seed": seed,
        "target_style": target_style,
    }
    written = " ".join(f"{key}={value}" for key, value in settings.items())
    done_marker = folder / ".complete"
    if done_marker.exists():
        recorded = {**LEGACY_SETTINGS, **dict(pair.split("=", 1) for pair in done_marker.read_text().split())}
        if recorded != {key: str(value) for key, value in settings.items()}:
            raise UserError(
                f"{folder} holds a demo written with other settings ({done_marker.read_text().strip()}); "
                "give the run another run_dir"
            )
        return folder
    log.info("simulating the demo experiment (%s target) in %s", target_style, folder)
    _write_domain(folder / "source", SOURCE_STYLE, n_source, image_size, source_diameter_px, seed)
    _write_domain(folder / "target", target_style, n_target, image_size, target_diameter_px, seed + 1)
    done_marker.write_text(written + "\n")
    return folder
