"""mask_db.shapes: database crops rotated and scaled, SIMCEP shapes with both docs/method.md fixes."""

import numpy as np
import pytest

from mask_db import shapes as shapes_module
from mask_db.features import shape_features
from mask_db.shapes import linear_scale, rasterise, simcep_outlines, simulate_shapes, transform_mask


def orientation(mask: np.ndarray) -> float:
    """Angle (radians, 0..pi) of the major axis, x to the right, y down."""
    rows, cols = np.nonzero(mask)
    cov = np.cov(np.stack([cols, rows]))
    values, vectors = np.linalg.eigh(cov)
    major = vectors[:, values.argmax()]
    return float(np.arctan2(major[1], major[0]) % np.pi)


def test_linear_scale_is_the_square_root_of_the_area_ratio():
    assert linear_scale(400.0, 100.0) == pytest.approx(2.0)  # the old code used 4.0
    yy, xx = np.mgrid[:41, :41]
    disc = (yy - 20) ** 2 + (xx - 20) ** 2 <= 15**2
    for ratio in (0.5, 2.0, 3.0):
        scaled = transform_mask(disc, linear_scale(ratio * disc.sum(), disc.sum()), angle_deg=33)
        assert scaled.sum() == pytest.approx(ratio * disc.sum(), rel=0.05)


def test_transform_rotates_and_keeps_one_component():
    bar = np.zeros((9, 41), dtype=bool)
    bar[2:7, :] = True
    turned = transform_mask(bar, 1.0, angle_deg=90)
    assert turned.shape[0] > turned.shape[1]
    assert shape_features(turned.astype(np.int32))["label"].size == 1


@pytest.mark.parametrize("angle", [0.0, 0.7, 2.0])
def test_simcep_shape_is_kept_stretched_and_rotated(angle):
    rng = np.random.default_rng(0)
    outlines = simcep_outlines(
        np.full(40, 600.0), np.full(40, 2.0), np.full(40, angle), rng, perturbation=0.05
    )
    canvas, boxes = rasterise(outlines)
    features = shape_features(canvas)
    assert np.median(features["area"]) == pytest.approx(600, rel=0.03)
    assert np.median(features["shape_ratio"]) == pytest.approx(2.0, rel=0.1)  # the old code kept ratio 1
    angles = [orientation(canvas[y0:y1, x0:x1] == i + 1) for i, (y0, x0, y1, x1) in enumerate(boxes)]
    error = np.abs((np.array(angles) - angle + np.pi / 2) % np.pi - np.pi / 2)
    assert np.median(error) < 0.1


def test_simulated_shapes_match_their_references_and_are_seeded():
    reference = {
        "area": np.array([150.0, 400.0, 900.0]),
        "shape_ratio": np.array([1.1, 1.5, 2.2]),
        "circularity": np.array([0.95, 0.9, 0.8]),
        "eccentricity": np.array([0.4, 0.75, 0.9]),
        "solidity": np.array([1.0, 0.98, 0.97]),
    }
    shapes, accepted = simulate_shapes(reference, np.random.default_rng(5), tolerance=0.1, max_tries=50)
    assert accepted.all()
    for i, shape in enumerate(shapes):
        f = shape_features(shape.astype(np.int32))
        for name in ("circularity", "eccentricity", "solidity"):
            assert abs(f[name][0] - reference[name][i]) <= 0.1
        assert f["area"][0] == pytest.approx(reference["area"][i], rel=0.15)
    again, _ = simulate_shapes(reference, np.random.default_rng(5), tolerance=0.1, max_tries=50)
    assert all(np.array_equal(a, b) for a, b in zip(shapes, again, strict=True))


def test_impossible_reference_gives_up_after_bounded_tries(monkeypatch):
    drawn = []

    def counting(area, *args, **kwargs):  # the real function, counted
        drawn.append(len(area))
        return simcep_outlines(area, *args, **kwargs)

    monkeypatch.setattr(shapes_module, "simcep_outlines", counting)
    reference = {
        "area": np.array([300.0]),
        "shape_ratio": np.array([1.0]),
        "circularity": np.array([0.2]),
        "eccentricity": np.array([0.0]),
        "solidity": np.array([0.3]),
    }
    shapes, accepted = simulate_shapes(reference, np.random.default_rng(0), max_tries=7)
    assert not accepted[0]
    assert sum(drawn) == 7
    assert shapes[0].sum() > 0  # the closest shape drawn is kept
