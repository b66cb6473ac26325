"""What the styles stage writes: features.csv, clusters.csv, summary.json and a montage of each style."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from nucleaizer.io import atomic_write, write_image
from nucleaizer.style_features import downscale


def montage(thumbnails: list[np.ndarray], tile_px: int, gap_px: int = 2) -> np.ndarray:
    """A near-square grid (uint8 (H, W, 3), white gaps) of thumbnails, each centred in a ``tile_px`` square."""
    columns = math.ceil(math.sqrt(len(thumbnails)))
    rows = math.ceil(len(thumbnails) / columns)
    step = tile_px + gap_px
    grid = np.full((rows * step + gap_px, columns * step + gap_px, 3), 255, dtype=np.uint8)
    for i, thumb in enumerate(thumbnails):
        thumb = downscale(thumb, tile_px)
        top = gap_px + (i // columns) * step + (tile_px - thumb.shape[0]) // 2
        left = gap_px + (i % columns) * step + (tile_px - thumb.shape[1]) // 2
        grid[top : top + thumb.shape[0], left : left + thumb.shape[1]] = thumb
    return grid


def write_style_outputs(
    out_dir: Path,
    features: pd.DataFrame,
    clusters: pd.DataFrame,
    summary: dict,
    thumbnails: list[np.ndarray],
    montage_max_images: int,
    montage_tile_px: int,
) -> None:
    """features.csv, clusters.csv (image, style), summary.json and style_<k>.png (at most
    ``montage_max_images`` thumbnails each; stale montages of earlier runs removed)."""
    with atomic_write(out_dir / "features.csv") as tmp:
        features.to_csv(tmp, float_format="%.8g")
    with atomic_write(out_dir / "clusters.csv") as tmp:
        clusters.to_csv(tmp, index=False)
    with atomic_write(out_dir / "summary.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=2))
    for stale in out_dir.glob("style_*.png"):
        stale.unlink()
    styles = clusters["style"].to_numpy()
    for style in np.unique(styles):
        members = np.flatnonzero(styles == style)[:montage_max_images]
        write_image(
            out_dir / f"style_{style}.png",
            montage([thumbnails[i] for i in members], montage_tile_px),
        )
