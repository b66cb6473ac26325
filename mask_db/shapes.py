"""Nucleus shapes for synthetic layouts: database crops rotated and rescaled to a target area, and shapes
simulated after SIMCEP (Lehmussola et al. 2007) that imitate a reference nucleus.

Both docs/method.md fixes are here: the linear scale of a crop is the square root of the area ratio (the old code
used the area ratio itself), and a simulated shape is kept as stretched and rotated (the old code stored the
untransformed one).
"""

from __future__ import annotations

import logging
from functools import lru_cache

import cv2
import numpy as np
from scipy.interpolate import CubicSpline

from mask_db.features import shape_features

log = logging.getLogger(__name__)

# Features a simulated shape must match its reference on (all lie in [0, 1], so the tolerance is absolute).
ACCEPT_FEATURES = ("circularity", "eccentricity", "solidity")


def tight_crop(mask: np.ndarray) -> np.ndarray:
    """The mask cut to the bounding box of its pixels (bool (h, w)); (0, 0) when it is empty."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return np.zeros((0, 0), dtype=bool)
    return mask[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def linear_scale(target_area: float | np.ndarray, area: float | np.ndarray) -> float | np.ndarray:
    """Linear scale factor that turns a shape of ``area`` into one of ``target_area`` pixels: the square
    root of the area ratio (docs/method.md decision; the old code used the area ratio, a bug)."""
    return np.sqrt(np.asarray(target_area, dtype=np.float64) / np.asarray(area, dtype=np.float64))


def transform_mask(mask: np.ndarray, scale: float, angle_deg: float) -> np.ndarray:
    """Rotate a binary crop by ``angle_deg`` (counter-clockwise) and scale it by ``scale`` (linear).

    mask: bool (h, w). Returns the tight bool crop of the result, one solid connected component; (0, 0) when
    the shape vanishes.
    """
    padded = np.pad(mask.astype(np.float32), 2)
    height, width = padded.shape
    centre = ((width - 1) / 2, (height - 1) / 2)
    matrix = cv2.getRotationMatrix2D(centre, float(angle_deg), float(scale))
    corners = np.array([[0, 0, 1], [width, 0, 1], [0, height, 1], [width, height, 1]], dtype=np.float64)
    moved = corners @ matrix.T
    low, high = moved.min(axis=0), moved.max(axis=0)
    matrix[:, 2] -= low - 1
    size = np.ceil(high - low).astype(int) + 2
    warped = cv2.warpAffine(padded, matrix, (int(size[0]), int(size[1])), flags=cv2.INTER_LINEAR)
    shape = tight_crop(warped >= 0.5)
    if shape.size == 0:
        return shape
    # a thin neck can break under interpolation: an instance must stay one component
    count, components, stats, _ = cv2.connectedComponentsWithStats(shape.view(np.uint8), connectivity=8)
    if count > 2:
        shape = tight_crop(components == 1 + stats[1:, cv2.CC_STAT_AREA].argmax())
    return shape


@lru_cache(maxsize=16)
def _periodic_spline_matrix(n_points: int, n_samples: int) -> np.ndarray:
    """Matrix (n_samples, n_points) that evaluates the periodic cubic spline through ``n_points`` equally
    spaced values at ``n_samples`` equally spaced angles: a spline is linear in its values, so one matrix
    product interpolates any number of outlines at once."""
    knots = np.linspace(0, 2 * np.pi, n_points + 1)
    values = np.vstack([np.eye(n_points), np.eye(n_points)[:1]])
    samples = np.linspace(0, 2 * np.pi, n_samples, endpoint=False)
    return CubicSpline(knots, values, bc_type="periodic")(samples)


def simcep_outlines(
    area: np.ndarray,
    shape_ratio: np.ndarray,
    angle: np.ndarray,
    rng: np.random.Generator,
    n_points: int = 8,
    perturbation: float = 0.15,
    n_samples: int = 96,
) -> np.ndarray:
    """Closed SIMCEP outlines (float64 (M, n_samples, 2), y and x around 0), one per nucleus asked for.

    area, shape_ratio, angle (radians): float (M,). ``n_points`` points at radius sqrt(area/pi) * (1 +
    U(-perturbation, perturbation)) are joined by a periodic cubic spline; the curve is stretched by
    ``shape_ratio`` (major/minor, area kept), rotated by ``angle`` and rescaled so its enclosed area is
    ``area`` (square root of the area ratio). The stretched, rotated outline is what is returned.
    """
    area, shape_ratio, angle = (
        np.asarray(v, dtype=np.float64).reshape(-1) for v in (area, shape_ratio, angle)
    )
    count = area.size
    radius = np.sqrt(area / np.pi)[:, None] * (
        1 + rng.uniform(-perturbation, perturbation, (count, n_points))
    )
    r = radius @ _periodic_spline_matrix(n_points, n_samples).T
    r = np.maximum(r, 0.05 * radius.mean(axis=1, keepdims=True))
    t = rng.uniform(0, 2 * np.pi, (count, 1)) + np.linspace(0, 2 * np.pi, n_samples, endpoint=False)
    stretch = np.sqrt(np.maximum(shape_ratio, 1.0))[:, None]
    x, y = r * np.cos(t) * stretch, r * np.sin(t) / stretch
    cos, sin = np.cos(angle)[:, None], np.sin(angle)[:, None]
    x, y = x * cos - y * sin, x * sin + y * cos
    enclosed = 0.5 * np.abs(np.sum(x * np.roll(y, 1, axis=1) - y * np.roll(x, 1, axis=1), axis=1))
    scale = linear_scale(area, enclosed)[:, None]
    return np.stack([y * scale, x * scale], axis=2)


def _shelf_layout(sizes: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
    """Top-left corners (int (M, 2)) that lay boxes of ``sizes`` (int (M, 2), h and w) on shelves of a
    roughly square canvas, tallest first, a pixel apart and a pixel from its edges, and that canvas's
    (height, width)."""
    row_width = int(max(sizes[:, 1].max(), np.sqrt((sizes[:, 0] * sizes[:, 1]).sum()) * 1.1)) + 2
    corners, x, y, shelf = np.zeros((len(sizes), 2), dtype=np.int64), 1, 1, 0
    for i in np.argsort(-sizes[:, 0], kind="stable"):
        h, w = sizes[i]
        if x + w + 1 > row_width and x > 1:
            x, y, shelf = 1, y + shelf + 1, 0
        corners[i] = y, x
        x, shelf = x + w + 1, max(shelf, h)
    return corners, (y + shelf + 1, row_width)


def rasterise(outlines: np.ndarray, supersample: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Fill closed outlines (float (M, K, 2), y and x) as pixels more than half covered, all in one canvas.

    Returns (label image int32 with outline i as label i + 1, boxes int (M, 4): y0, x0, y1, x1 of the
    region reserved for each). cv2.fillPoly also fills every pixel an edge touches, which would grow a
    shape by half its perimeter; on a grid ``supersample`` times finer that growth is small, and outlines
    are pulled in by half a fine pixel towards their centre to cancel what is left.
    """
    centre = outlines.mean(axis=1, keepdims=True)
    radius = np.linalg.norm(outlines - centre, axis=2).mean(axis=1)[:, None, None]
    outlines = centre + (outlines - centre) * np.maximum(
        1 - 0.5 / (supersample * np.maximum(radius, 1.0)), 0.5
    )
    low = np.floor(outlines.min(axis=1)) - 1
    sizes = (np.ceil(outlines.max(axis=1) - low) + 1).astype(np.int64)
    corners, (height, width) = _shelf_layout(sizes)
    fine = np.zeros((height * supersample, width * supersample), dtype=np.uint8)
    # fine-grid pixel i covers [i, i + 1) / supersample; fillPoly wants centres, in 8-bit fixed point, x first
    points = ((outlines - low[:, None] + corners[:, None]) * supersample - 0.5)[:, :, ::-1]
    cv2.fillPoly(fine, list(np.round(points * 256).astype(np.int32)), 255, lineType=cv2.LINE_8, shift=8)
    covered = cv2.resize(fine, (width, height), interpolation=cv2.INTER_AREA) > 127
    boxes = np.concatenate([corners, corners + sizes], axis=1)
    owner = np.zeros((height, width), dtype=np.int32)
    for label, (y0, x0, y1, x1) in enumerate(boxes, start=1):
        owner[y0:y1, x0:x1] = label
    return np.where(covered, owner, 0), boxes


def simulate_shapes(
    reference: dict[str, np.ndarray],
    rng: np.random.Generator,
    n_points: int = 8,
    perturbation: float = 0.15,
    tolerance: float = 0.1,
    max_tries: int = 50,
) -> tuple[list[np.ndarray], np.ndarray]:
    """Simulated nuclei that imitate reference objects, one per reference.

    reference: float arrays (M,) ``area``, ``shape_ratio`` and the ACCEPT_FEATURES. SIMCEP shapes (random
    rotation) are drawn for all pending references at once and measured together, 1, 2, 4, ... per
    reference in successive rounds, up to ``max_tries`` each; the first shape whose circularity,
    eccentricity and solidity each lie within ``tolerance`` of its reference's is accepted. A reference
    never matched keeps the closest shape drawn. Returns (tight bool crops, accepted bool (M,)).
    """
    count = len(reference["area"])
    best = [np.zeros((0, 0), dtype=bool)] * count
    best_error = np.full(count, np.inf)
    pending = np.arange(count)
    wanted = np.stack([reference[f] for f in ACCEPT_FEATURES], axis=1)
    tried = 0
    while pending.size and tried < max(1, max_tries):
        per_reference = min(2 ** int(np.log2(tried + 1)), max(1, max_tries) - tried)
        tried += per_reference
        owner = np.repeat(pending, per_reference)
        outlines = simcep_outlines(
            reference["area"][owner],
            reference["shape_ratio"][owner],
            rng.uniform(0, np.pi, owner.size),
            rng,
            n_points,
            perturbation,
        )
        canvas, boxes = rasterise(outlines)
        measured = shape_features(canvas)
        got = np.full((owner.size, len(ACCEPT_FEATURES)), np.nan)
        got[measured["label"] - 1] = np.stack([measured[f] for f in ACCEPT_FEATURES], axis=1)
        error = np.nan_to_num(np.abs(got - wanted[owner]).max(axis=1), nan=np.inf).reshape(-1, per_reference)
        # per reference: the first accepted candidate, else the closest of this round
        accepted_here = error <= tolerance
        pick = np.where(accepted_here.any(axis=1), accepted_here.argmax(axis=1), error.argmin(axis=1))
        pick_error = error[np.arange(pending.size), pick]
        for j in np.flatnonzero(pick_error < best_error[pending]):
            label = j * per_reference + pick[j] + 1
            y0, x0, y1, x1 = boxes[label - 1]
            best[pending[j]] = tight_crop(canvas[y0:y1, x0:x1] == label)
        best_error[pending] = np.minimum(best_error[pending], pick_error)
        pending = pending[best_error[pending] > tolerance]
    accepted = best_error <= tolerance
    if pending.size:
        log.debug(
            "%d of %d simulated shapes not within %.2f after %d tries; kept the closest",
            pending.size,
            count,
            tolerance,
            max_tries,
        )
    return best, accepted
