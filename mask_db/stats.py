"""Style statistics: what the nuclei of a set of label images look like and how they are laid out.

The same measurement describes a real style (its pre-segmented or annotated label images) and a set of
generated masks, and ``compare`` turns the two into the match figures the tests and reports use.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree
from scipy.stats import ks_2samp

from mask_db.features import FEATURE_COLUMNS, check_labels, shape_features, touching_labels, whole_nuclei


@dataclass(frozen=True)
class StyleStats:
    """Measurements of a set of label images (I images).

    image_shapes: int (I, 2) height and width. counts: int (I,) all objects, border ones included.
    touching_counts: int (I,) objects that touch another (8-neighbourhood).
    objects: whole nuclei only (not touching the border, holes filled; features.whole_nuclei), float
    arrays (K,) for every FEATURE_COLUMNS entry plus ``image`` (int (K,), the image each comes from).
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
    def densities(self) -> np.ndarray:
        """Objects per pixel of every image, float (I,)."""
        return self.counts / np.prod(self.image_shapes, axis=1).astype(np.float64)

    @property
    def touching_fractions(self) -> np.ndarray:
        """Share of each image's objects that touch another, float (I,); NaN where an image has none."""
        return np.divide(self.touching_counts, self.counts, out=np.full(self.n_images, np.nan),
                         where=self.counts > 0)

    @property
    def touching_fraction(self) -> float:
        """Share of all objects that touch another (NaN without objects)."""
        total = self.counts.sum()
        return float(self.touching_counts.sum() / total) if total else float("nan")

    def summary(self) -> dict:
        """JSON-ready figures: counts, area percentiles, density (objects per 512x512) mean and spread,
        median nearest-neighbour distance, touching fraction, median shape features."""
        area = self.objects["area"]
        per_512 = self.densities * 512 * 512

        def median(values: np.ndarray) -> float | None:
            return round(float(np.median(values)), 4) if values.size else None

        return {
            "images": self.n_images,
            "objects": int(self.counts.sum()),
            "whole_objects": int(area.size),
            "area_p10_p50_p90": np.percentile(area, [10, 50, 90]).round(1).tolist() if area.size else None,
            "objects_per_512x512_mean": round(float(per_512.mean()), 2) if self.n_images else None,
            "objects_per_512x512_std": round(float(per_512.std()), 2) if self.n_images else None,
            "nn_distance_median": median(self.nn_distances),
            "touching_fraction": round(self.touching_fraction, 4) if self.counts.sum() else None,
            **{f"{name}_median": median(self.objects[name])
               for name in ("shape_ratio", "circularity", "eccentricity", "solidity")},
        }


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
    objects: dict[str, list[np.ndarray]] = {name: [] for name in (*FEATURE_COLUMNS, "image")}
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
    """How well generated masks match a real style: ratios generated/real of median area, mean density
    and median nearest-neighbour distance, the two-sample KS test on whole-object areas (statistic and
    p-value), and both touching fractions and shape-feature medians."""

    def ratio(a: float, b: float) -> float | None:
        return round(float(a / b), 4) if np.isfinite(a) and np.isfinite(b) and b else None

    def median(values: np.ndarray) -> float:
        return float(np.median(values)) if values.size else float("nan")

    result = {
        "median_area_ratio": ratio(median(generated.objects["area"]), median(real.objects["area"])),
        "density_ratio": ratio(generated.densities.mean(), real.densities.mean()),
        "nn_distance_median_ratio": ratio(median(generated.nn_distances), median(real.nn_distances)),
        "touching_fraction_generated": round(generated.touching_fraction, 4),
        "touching_fraction_real": round(real.touching_fraction, 4),
        "objects_generated": int(generated.objects["area"].size),
        "objects_real": int(real.objects["area"].size),
    }
    if generated.objects["area"].size and real.objects["area"].size:
        test = ks_2samp(generated.objects["area"], real.objects["area"])
        result.update(area_ks_statistic=round(float(test.statistic), 4), area_ks_pvalue=float(test.pvalue))
    for name in ("shape_ratio", "circularity", "eccentricity", "solidity"):
        result[f"{name}_median"] = [round(median(s.objects[name]), 4) for s in (generated, real)]
    return result
