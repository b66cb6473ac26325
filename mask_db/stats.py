"""Style statistics: what the nuclei of a set of label images look like and how they are laid out.

The same measurement describes a real style (its pre-segmented or annotated label images) and a set of
generated masks, and ``compare`` turns the two into the match figures the tests and reports use.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree
from scipy.stats import kstwobign

from mask_db.features import FEATURE_COLUMNS, check_labels, shape_features, touching_labels, whole_nuclei


@dataclass(frozen=True)
class StyleStats:
    """Measurements of a set of label images (I images).

    image_shapes: int (I, 2) height and width. counts: int (I,) all objects, border ones included.
    touching_counts: int (I,) objects that touch another (8-neighbourhood).
    objects: whole nuclei only (not touching the border, holes filled; features.whole_nuclei), float
    arrays (K,) for every FEATURE_COLUMNS entry plus ``image`` (int (K,), the image each comes from) and
    ``weight`` (float (K,), see border_weights): a large nucleus touches the border of a small image more
    often, so whole nuclei under-represent large ones; weighted, they stand for every nucleus.
    nn_distances: float (D,) centroid distance of every object to its nearest neighbour (images with two or
    more objects), nn_image: int (D,) the image of each.
    """

    image_shapes: np.ndarray
    counts: np.ndarray
    touching_counts: np.ndarray
    objects: dict[str, np.ndarray]
    nn_distances: np.ndarray
    nn_image: np.ndarray

    @property
    def n_images(self) -> int:
        return len(self.counts)

    @property
    def pixels(self) -> np.ndarray:
        """Pixels of every image, float (I,)."""
        return np.prod(self.image_shapes, axis=1).astype(np.float64)

    @property
    def densities(self) -> np.ndarray:
        """Objects per pixel of every image, float (I,)."""
        return self.counts / self.pixels

    @property
    def density(self) -> float:
        """Objects per pixel over all images together (the style's density: images count by their size)."""
        return float(self.counts.sum() / self.pixels.sum()) if self.n_images else float("nan")

    @property
    def touching_fractions(self) -> np.ndarray:
        """Share of each image's objects that touch another, float (I,); NaN where an image has none."""
        return np.divide(
            self.touching_counts, self.counts, out=np.full(self.n_images, np.nan), where=self.counts > 0
        )

    @property
    def touching_fraction(self) -> float:
        """Share of all objects that touch another (NaN without objects)."""
        total = self.counts.sum()
        return float(self.touching_counts.sum() / total) if total else float("nan")

    def summary(self) -> dict:
        """JSON-ready figures: counts, area percentiles, density (objects per 512x512) mean and spread,
        median nearest-neighbour distance, touching fraction, median shape features."""
        area, weight = self.objects["area"], self.objects["weight"]

        def median(values: np.ndarray, weights: np.ndarray | None = None) -> float | None:
            return round(weighted_quantile(values, 0.5, weights), 4) if values.size else None

        return {
            "images": self.n_images,
            "objects": int(self.counts.sum()),
            "whole_objects": int(area.size),
            "area_p10_p50_p90": [round(weighted_quantile(area, q, weight), 1) for q in (0.1, 0.5, 0.9)]
            if area.size
            else None,
            "objects_per_512x512": round(self.density * 512 * 512, 2) if self.n_images else None,
            "objects_per_512x512_image_std": round(float(self.densities.std() * 512 * 512), 2)
            if self.n_images
            else None,
            "nn_distance_median": median(self.nn_distances),
            "touching_fraction": round(self.touching_fraction, 4) if self.counts.sum() else None,
            **{
                f"{name}_median": median(self.objects[name], weight)
                for name in ("shape_ratio", "circularity", "eccentricity", "solidity")
            },
        }


def weighted_quantile(values: np.ndarray, q: float, weights: np.ndarray | None = None) -> float:
    """Quantile ``q`` (0..1) of ``values`` with ``weights`` (float (N,); None: all 1); NaN when empty."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return float("nan")
    weights = np.ones_like(values) if weights is None else np.asarray(weights, dtype=np.float64)
    order = np.argsort(values)
    cumulative = np.cumsum(weights[order])
    return float(values[order][np.searchsorted(cumulative, q * cumulative[-1])])


def weighted_ks(
    a: np.ndarray, b: np.ndarray, weight_a: np.ndarray, weight_b: np.ndarray
) -> tuple[float, float]:
    """Two-sample Kolmogorov-Smirnov test on weighted samples: (statistic, asymptotic p-value).

    The statistic is the largest gap between the two weighted empirical distribution functions; the
    p-value uses Kish's effective sample sizes (sum w)^2 / sum w^2 (the plain test when all weights are 1).
    """
    grid = np.union1d(a, b)

    def ecdf(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
        order = np.argsort(values)
        cumulative = np.concatenate([[0.0], np.cumsum(weights[order])]) / weights.sum()
        return cumulative[np.searchsorted(values[order], grid, side="right")]

    statistic = float(np.abs(ecdf(a, weight_a) - ecdf(b, weight_b)).max())
    n_a, n_b = (w.sum() ** 2 / (w**2).sum() for w in (weight_a, weight_b))
    effective = n_a * n_b / (n_a + n_b)
    return statistic, float(kstwobign.sf(statistic * np.sqrt(effective)))


def border_weights(bbox: np.ndarray, image_shape: tuple[int, int]) -> np.ndarray:
    """Inverse probability that a nucleus of each bounding box (int (K, 4)) lies wholly inside an image
    of ``image_shape`` at a uniformly random position: (H * W) / ((H - h) * (W - w)), float (K,)."""
    height, width = image_shape
    h, w = bbox[:, 2] - bbox[:, 0], bbox[:, 3] - bbox[:, 1]
    inside = np.clip((height - h) / height, 0.05, 1) * np.clip((width - w) / width, 0.05, 1)
    return 1.0 / inside


def nearest_neighbour_distances(centroids: np.ndarray) -> np.ndarray:
    """Distance from each centroid (float (N, 2)) to its nearest other one, float (N,); empty when N < 2."""
    if len(centroids) < 2:
        return np.zeros(0)
    distances, _ = cKDTree(centroids).query(centroids, k=2)
    return distances[:, 1]


def style_statistics(label_images: Iterable[np.ndarray], min_area: int = 16) -> StyleStats:
    """Measure a set of label images (each integer (H, W), 0 background); raises ValueError when empty.

    Areas and shapes come from whole nuclei of at least ``min_area`` px (features.whole_nuclei); counts,
    density, touching and nearest-neighbour distances from every object.
    """
    shapes, counts, touching, nn, nn_image = [], [], [], [], []
    objects: dict[str, list[np.ndarray]] = {name: [] for name in (*FEATURE_COLUMNS, "image", "weight")}
    for index, labels in enumerate(label_images):
        labels = check_labels(labels, what=f"label image {index}")
        every = shape_features(labels)
        whole = shape_features(whole_nuclei(labels, min_area=min_area))
        shapes.append(labels.shape)
        counts.append(every["label"].size)
        touching.append(touching_labels(labels).size)
        distances = nearest_neighbour_distances(every["centroid"])
        nn.append(distances)
        nn_image.append(np.full(distances.size, index))
        for name in FEATURE_COLUMNS:
            objects[name].append(whole[name])
        objects["image"].append(np.full(whole["label"].size, index))
        objects["weight"].append(border_weights(whole["bbox"], labels.shape))
    if not shapes:
        raise ValueError("no label images to measure; give at least one label image of the style")
    return StyleStats(
        image_shapes=np.array(shapes, dtype=np.int64),
        counts=np.array(counts, dtype=np.int64),
        touching_counts=np.array(touching, dtype=np.int64),
        objects={name: np.concatenate(values) for name, values in objects.items()},
        nn_distances=np.concatenate(nn),
        nn_image=np.concatenate(nn_image).astype(np.int64),
    )


def compare(generated: StyleStats, real: StyleStats) -> dict:
    """How well generated masks match a real style: ratios generated/real of the median area, the density
    (objects per pixel) and the median nearest-neighbour distance; the two-sample KS test on the areas of
    whole nuclei (statistic and p-value); both touching fractions and shape-feature medians. Areas and
    shapes are weighted by border_weights, so images of different sizes compare fairly."""

    def ratio(a: float, b: float) -> float | None:
        return round(float(a / b), 4) if np.isfinite(a) and np.isfinite(b) and b else None

    def median(stats: StyleStats, name: str) -> float:
        return weighted_quantile(stats.objects[name], 0.5, stats.objects["weight"])

    result = {
        "median_area_ratio": ratio(median(generated, "area"), median(real, "area")),
        "density_ratio": ratio(generated.density, real.density),
        "nn_distance_median_ratio": ratio(
            weighted_quantile(generated.nn_distances, 0.5), weighted_quantile(real.nn_distances, 0.5)
        ),
        "touching_fraction_generated": round(generated.touching_fraction, 4),
        "touching_fraction_real": round(real.touching_fraction, 4),
        "objects_generated": int(generated.objects["area"].size),
        "objects_real": int(real.objects["area"].size),
    }
    if generated.objects["area"].size and real.objects["area"].size:
        statistic, pvalue = weighted_ks(
            generated.objects["area"],
            real.objects["area"],
            generated.objects["weight"],
            real.objects["weight"],
        )
        result.update(area_ks_statistic=round(statistic, 4), area_ks_pvalue=pvalue)
    for name in ("shape_ratio", "circularity", "eccentricity", "solidity"):
        result[f"{name}_median"] = [round(median(s, name), 4) for s in (generated, real)]
    return result
