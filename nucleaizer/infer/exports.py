"""Results in the formats biologists open: ImageJ/Fiji ROI sets and QuPath GeoJSON, from the label image.

Each nucleus becomes polygons traced on its pixel edges: marching squares at level 0.5 on the object's own
crop (scikit-image ``find_contours``), in image coordinates where pixel (row r, column c) covers
[c, c + 1) x [r, r + 1), the convention of ImageJ and QuPath. Holes are kept as interior rings (GeoJSON);
an object in several pieces is a MultiPolygon (GeoJSON) or its largest piece (ImageJ, one polygon ROI per
nucleus). Rasterising the polygons gives the labels back (``rasterise``; a test checks IoU >= 0.95 per
object).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage
from skimage.draw import polygon2mask
from skimage.measure import find_contours

from nucleaizer.io import atomic_write

FORMATS = ("labels", "overlay", "csv", "rois", "geojson")
DEFAULT_FORMATS = ("labels", "overlay", "csv")


@dataclass
class Outline:
    """One nucleus as polygons: ``pieces`` is a list of (outer ring, [hole rings]), each ring float (N, 2) as
    (x, y) in image coordinates, closed (last point = first), largest piece first."""

    id: int
    pieces: list[tuple[np.ndarray, list[np.ndarray]]]


def _signed_area(ring: np.ndarray) -> float:
    x, y = ring[:, 0], ring[:, 1]
    return 0.5 * float(np.dot(x[:-1], y[1:]) - np.dot(x[1:], y[:-1]))


def _inside(point: np.ndarray, ring: np.ndarray) -> bool:
    """Even-odd rule: whether ``point`` (x, y) lies inside the closed ``ring``."""
    x, y = point
    x0, y0, x1, y1 = ring[:-1, 0], ring[:-1, 1], ring[1:, 0], ring[1:, 1]
    crosses = (y0 > y) != (y1 > y)
    at = x0 + (y - y0) * (x1 - x0) / np.where(y1 == y0, 1, y1 - y0)
    return bool(np.count_nonzero(crosses & (x < at)) % 2)


def outlines(labels: np.ndarray) -> list[Outline]:
    """The outline of every object of a label image (ids 1..N; absent ids are skipped), in id order."""
    result = []
    for index, window in enumerate(ndimage.find_objects(labels)):
        if window is None:
            continue
        crop = np.pad(labels[window] == index + 1, 1).astype(np.float32)
        offset = np.array([window[1].start - 1 + 0.5, window[0].start - 1 + 0.5])
        # (row, col) of pixel centres -> (x, y) of pixel corners. Rings wind counter-clockwise around the object
        # as (row, col), which in (x, y) with y downwards is a negative signed area; holes wind the other way.
        rings = [
            np.ascontiguousarray(c[:, ::-1]) + offset
            for c in find_contours(crop, 0.5, positive_orientation="high")
        ]
        rings = [r for r in rings if len(r) >= 4]
        outer = sorted((r for r in rings if _signed_area(r) < 0), key=_signed_area)
        holes = [r for r in rings if _signed_area(r) > 0]
        pieces = [(ring, [h for h in holes if _inside(h[0], ring)]) for ring in outer]
        result.append(Outline(index + 1, pieces))
    return result


def rasterise(outline: Outline, shape: tuple[int, int]) -> np.ndarray:
    """bool (H, W): the pixels whose centres lie inside the outline's pieces and outside their holes."""
    mask = np.zeros(shape, dtype=bool)
    for ring, holes in outline.pieces:
        # polygon2mask takes (row, col) with pixel centres on integer coordinates
        mask |= polygon2mask(shape, ring[:, ::-1] - 0.5)
        for hole in holes:
            mask &= ~polygon2mask(shape, hole[:, ::-1] - 0.5)
    return mask


def roi_name(nucleus: dict) -> str:
    return f"{int(nucleus['id']):05d} score {nucleus['score']:.2f}"


def write_imagej_rois(path: str | Path, shapes: list[Outline], nuclei: list[dict]) -> Path:
    """An ImageJ/Fiji ROI set (zip of polygon ROIs named by nucleus id and score; the largest piece each).

    nuclei: one row per outline, in the same order (the nuclei.csv rows: id, score, ...).
    """
    from roifile import ImagejRoi, roiwrite

    path = Path(path)
    rois = [
        ImagejRoi.frompoints(shape.pieces[0][0][:-1], name=roi_name(row))
        for shape, row in zip(shapes, nuclei, strict=True)
        if shape.pieces
    ]
    with atomic_write(path) as temporary:
        temporary.unlink(missing_ok=True)
        if rois:
            roiwrite(temporary, rois, mode="w")
        else:  # an image without nuclei: an empty ROI set
            import zipfile

            zipfile.ZipFile(temporary, "w").close()
    return path


def geojson(shapes: list[Outline], nuclei: list[dict]) -> dict:
    """A QuPath-compatible FeatureCollection: one detection per nucleus, its measurements as properties."""
    features = []
    for shape, row in zip(shapes, nuclei, strict=True):
        if not shape.pieces:
            continue
        polygons = [
            [outer.round(3).tolist(), *[h.round(3).tolist() for h in holes]] for outer, holes in shape.pieces
        ]
        geometry = (
            {"type": "Polygon", "coordinates": polygons[0]}
            if len(polygons) == 1
            else {"type": "MultiPolygon", "coordinates": polygons}
        )
        measurements = {
            "Area px": row["area_px"],
            "Score": row["score"],
            "TTA agreement": row["tta_agreement"],
            "Equivalent diameter px": row["equivalent_diameter_px"],
        }
        features.append(
            {
                "type": "Feature",
                "id": str(int(row["id"])),
                "geometry": geometry,
                "properties": {
                    "objectType": "detection",
                    "name": roi_name(row),
                    "measurements": {k: float(v) for k, v in measurements.items()},
                },
            }
        )
    return {"type": "FeatureCollection", "features": features}


def write_geojson(path: str | Path, shapes: list[Outline], nuclei: list[dict]) -> Path:
    path = Path(path)
    with atomic_write(path) as temporary:
        temporary.write_text(json.dumps(geojson(shapes, nuclei)))
    return path
