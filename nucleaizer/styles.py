"""Automatic clustering of unlabelled images into visual styles (docs/method.md section 2).

Images are described by :mod:`nucleaizer.style_features`, the features are standardised (and reduced by PCA),
and k-means splits them into styles. A style must never mix two real image types (a pix2pix trained on a mix
renders images that look like neither), so the rule for k deliberately over-clusters:

* candidates: every k between ``round(N / max_images)`` and ``round(N / min_images)`` for
  ``images_per_style_range = [min_images, max_images]`` (at most ``max_k_candidates`` of them, evenly spaced);
* each candidate is scored by the mean silhouette of its k-means partition;
* the **largest** k whose silhouette is within ``silhouette_tolerance`` of the best one is kept: among
  partitions that are about as well separated as the best, the finest (purest) wins.

Clusters with fewer than ``min_images_per_style`` images are then merged, smallest first, into the cluster
with the nearest centroid, until none is left (a cluster of one or two images cannot teach a style model
anything but those images; tiling them would only give crops of the same one or two fields of view). Every
step is seeded, so the same images and seed give the same styles.

Command line: ``python -m nucleaizer.styles IMAGES_DIR OUT_DIR`` writes ``features.csv``, ``clusters.csv``
(``image,style``), ``summary.json`` and one montage ``style_<k>.png`` per style.
"""

from __future__ import annotations

import argparse
import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.metrics import silhouette_score
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits
from tqdm import tqdm

from nucleaizer import output_folder
from nucleaizer.config_files import CONF_DIR
from nucleaizer.errors import UserError, fail
from nucleaizer.io import iter_samples, list_samples
from nucleaizer.style_features import (
    BLOCKS,
    FeatureSettings,
    downscale,
    feature_blocks,
    feature_names,
    image_features,
)
from nucleaizer.style_outputs import write_style_outputs

log = logging.getLogger(__name__)
DEFAULT_CONFIG = CONF_DIR / "styles" / "default.yaml"


@dataclass(frozen=True)
class ClusterSettings:
    """How styles are found (keys of conf/styles/default.yaml; defaults equal the config's)."""

    # total variance of each feature family after standardisation (families: style_features.BLOCKS)
    block_weights: Mapping[str, float] = field(
        default_factory=lambda: {"intensity": 1.0, "texture": 0.25, "lbp": 0.25, "size": 0.1}
    )
    pca_variance: float | None = 0.95  # keep the components explaining this share of variance; None = no PCA
    images_per_style_range: tuple[int, int] = (5, 10)
    max_k_candidates: int = 16  # k values scored at most, evenly spaced over the candidate range
    silhouette_tolerance: float = 0.02  # keep the largest k whose silhouette is within this of the best
    min_images_per_style: int = 3  # smaller clusters are merged into the nearest one
    k: int | None = None  # force the number of styles (before merging small clusters)
    kmeans_restarts: int = 10
    montage_tile_px: int = 96
    montage_max_images: int = 64

    def __post_init__(self) -> None:
        low, high = self.images_per_style_range
        if not 1 <= low <= high:
            raise ValueError(f"images_per_style_range={[low, high]}: need 1 <= first <= second")
        if self.pca_variance is not None and not 0 < self.pca_variance <= 1:
            raise ValueError(f"pca_variance={self.pca_variance}: give a share in (0, 1] or null for no PCA")
        if self.k is not None and self.k < 1:
            raise ValueError(f"k={self.k}: give a number of styles >= 1, or null to choose it automatically")
        unknown = set(self.block_weights) - set(BLOCKS)
        if unknown or any(w < 0 for w in self.block_weights.values()):
            raise ValueError(f"block_weights={dict(self.block_weights)}: use weights >= 0 for {list(BLOCKS)}")
        if self.min_images_per_style < 1 or self.max_k_candidates < 1 or self.kmeans_restarts < 1:
            raise ValueError("min_images_per_style, max_k_candidates and kmeans_restarts must be >= 1")


@dataclass(frozen=True)
class StyleClustering:
    """The styles of N images.

    ``labels``: int64 (N,), styles numbered 0..k-1 from the largest to the smallest. ``k_chosen``: the k the
    rule picked (or the one forced) before small clusters were merged; ``k`` is the final number of styles.
    ``silhouette``: mean silhouette per candidate k that was scored. ``merges``: one dict per merge of a small
    cluster (``images`` moved, ``into_size`` of the receiving cluster, centroid ``distance``).
    """

    names: list[str]
    labels: np.ndarray
    k_chosen: int
    silhouette: dict[int, float] = field(default_factory=dict)
    merges: list[dict] = field(default_factory=list)

    @property
    def k(self) -> int:
        return int(self.labels.max()) + 1 if len(self.labels) else 0

    @property
    def sizes(self) -> list[int]:
        return np.bincount(self.labels, minlength=self.k).tolist()

    def table(self) -> pd.DataFrame:
        """clusters.csv: one row per image, columns ``image`` (file stem) and ``style``."""
        return pd.DataFrame({"image": self.names, "style": self.labels})

    def summary(self) -> dict:
        return {
            "images": len(self.names),
            "k_chosen": self.k_chosen,
            "k": self.k,
            "sizes": self.sizes,
            "silhouette": {str(k): round(s, 4) for k, s in self.silhouette.items()},
            "merges": self.merges,
        }


def embed(
    features: np.ndarray,
    pca_variance: float | None,
    blocks: Mapping[str, slice] | None = None,
    block_weights: Mapping[str, float] | None = None,
    seed: int = 0,
) -> np.ndarray:
    """Feature matrix (N, F) -> points (N, D) in which styles are clustered.

    Every column is standardised (constant ones become 0). With ``blocks`` (family name -> column range,
    :func:`nucleaizer.style_features.feature_blocks`), each family is then scaled so its total variance equals
    its weight in ``block_weights`` (1 when absent), whatever its number of columns. PCA finally keeps the
    leading components explaining ``pca_variance`` of the variance (no PCA with ``None``).
    """
    scaled = StandardScaler().fit_transform(np.asarray(features, dtype=np.float64))
    for name, columns in (blocks or {}).items():
        varying = int(np.count_nonzero(scaled[:, columns].std(axis=0) > 0))
        weight = (block_weights or {}).get(name, 1.0)
        if varying:
            scaled[:, columns] *= math.sqrt(weight / varying)
    if pca_variance is None or len(scaled) < 3 or not np.any(scaled):
        return scaled
    n_components = pca_variance if pca_variance < 1 else None
    return PCA(n_components=n_components, svd_solver="full", random_state=seed).fit_transform(scaled)


def candidate_ks(n_images: int, images_per_style_range: tuple[int, int], max_candidates: int) -> list[int]:
    """The k values the rule scores: round(N / max_images) .. round(N / min_images), at most ``max_candidates``."""
    low, high = images_per_style_range
    k_low, k_high = max(1, round(n_images / high)), max(1, round(n_images / low))
    count = min(max_candidates, k_high - k_low + 1)
    return sorted({int(k) for k in np.linspace(k_low, k_high, count).round()})


def _kmeans(points: np.ndarray, k: int, seed: int, restarts: int) -> np.ndarray:
    if k == 1:
        return np.zeros(len(points), dtype=np.int64)
    model = KMeans(n_clusters=k, n_init=restarts, random_state=seed)
    # A few thousand points are clustered in well under a second on one thread; OpenMP threads cost more
    # than they give at this size (measured 5x slower on a busy 2-core machine).
    with threadpool_limits(limits=1, user_api="openmp"):
        return model.fit_predict(points).astype(np.int64)


def choose_k(
    points: np.ndarray, candidates: list[int], tolerance: float, seed: int = 0, restarts: int = 10
) -> tuple[int, np.ndarray, dict[int, float]]:
    """Score every candidate k by silhouette and keep the largest within ``tolerance`` of the best.

    Only candidates with 2 <= k < (distinct rows of ``points`` (N, D)) can be scored; when none can, the
    largest candidate the distinct rows allow is taken unscored. Returns (k, labels (N,), silhouette per k).
    """
    n_distinct = len(np.unique(points, axis=0))
    scorable = [k for k in candidates if 2 <= k < n_distinct]
    if not scorable:
        # too few distinct images to compare partitions: take the finest candidate they allow
        k = max(1, min(max(candidates), n_distinct))
        return k, _kmeans(points, k, seed, restarts), {}
    partitions, scores = {}, {}
    for k in tqdm(scorable, desc="choosing k", unit="k", leave=False, disable=len(scorable) < 4):
        partitions[k] = _kmeans(points, k, seed, restarts)
        scores[k] = float(silhouette_score(points, partitions[k]))
    best = max(scores.values())
    k = max(k for k, score in scores.items() if score >= best - tolerance)
    return k, partitions[k], scores


def merge_small_clusters(
    points: np.ndarray, labels: np.ndarray, min_size: int
) -> tuple[np.ndarray, list[dict]]:
    """Merge clusters smaller than ``min_size``, smallest first, into the cluster with the nearest centroid.

    Each merge removes one cluster, so this ends after at most k - 1 merges (at worst in one cluster).
    Returns the new labels (renumbered 0..k'-1 by decreasing size, ties by first image) and the merges done.
    """
    labels = labels.copy()
    merges = []
    while True:
        ids, counts = np.unique(labels, return_counts=True)
        if len(ids) < 2 or counts.min() >= min_size:
            break
        small = ids[np.argmin(counts)]  # np.argmin takes the first on ties: the lowest id, deterministic
        centroids = np.stack([points[labels == i].mean(axis=0) for i in ids])
        distances = np.linalg.norm(centroids - centroids[ids == small], axis=1)
        distances[ids == small] = np.inf
        target = ids[np.argmin(distances)]
        merges.append(
            {
                "images": int(counts.min()),
                "into_size": int(counts[ids == target][0]),
                "distance": round(float(distances.min()), 4),
            }
        )
        labels[labels == small] = target
    return _renumber_by_size(labels), merges


def _renumber_by_size(labels: np.ndarray) -> np.ndarray:
    ids, first, counts = np.unique(labels, return_index=True, return_counts=True)
    order = np.lexsort((first, -counts))  # largest first, then by first image
    new_id = np.empty(ids.max() + 1, dtype=np.int64)
    new_id[ids[order]] = np.arange(len(ids))
    return new_id[labels]


def cluster_features(
    features: np.ndarray,
    names: list[str],
    settings: ClusterSettings | None = None,
    blocks: Mapping[str, slice] | None = None,
    seed: int = 0,
) -> StyleClustering:
    """Styles of N images from their feature matrix ``features`` (N, F), rows in the order of ``names``.

    ``blocks``: the feature families (``style_features.feature_blocks``) that ``settings.block_weights``
    refer to; without them every column weighs the same.
    """
    settings = settings or ClusterSettings()
    if len(features) != len(names):
        raise ValueError(f"{len(features)} feature rows for {len(names)} names")
    if len(names) == 0:
        raise UserError("no images to cluster into styles: give a folder with at least one readable image")
    points = embed(features, settings.pca_variance, blocks, settings.block_weights, seed)
    if settings.k is not None:
        candidates = [min(settings.k, len(np.unique(points, axis=0)))]
        k, labels, scores = candidates[0], _kmeans(points, candidates[0], seed, settings.kmeans_restarts), {}
    else:
        candidates = candidate_ks(len(names), settings.images_per_style_range, settings.max_k_candidates)
        k, labels, scores = choose_k(
            points, candidates, settings.silhouette_tolerance, seed, settings.kmeans_restarts
        )
    labels, merges = merge_small_clusters(points, labels, settings.min_images_per_style)
    result = StyleClustering(list(names), labels, k, scores, merges)
    log.info(
        "styles: %d images, k=%d chosen from candidates %s, %d styles after %d merge(s) of small clusters; "
        "sizes %s",
        len(names),
        k,
        candidates,
        result.k,
        len(merges),
        result.sizes,
    )
    return result


def settings_from_mapping(values: Mapping) -> tuple[FeatureSettings, ClusterSettings]:
    """Feature and cluster settings from the keys of conf/styles/default.yaml (``seed`` is ignored here).

    Raises ``UserError`` naming the key for an unknown key or a bad value.
    """
    groups = {cls: {f.name for f in fields(cls)} for cls in (FeatureSettings, ClusterSettings)}
    unknown = set(values) - set().union(*groups.values()) - {"seed"}
    if unknown:
        raise UserError(
            f"styles: unknown key(s) {sorted(unknown)}; known keys: {sorted(set().union(*groups.values()))}"
        )
    built = []
    for cls, keys in groups.items():
        kwargs = {k: values[k] for k in keys if k in values}
        kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}
        if "block_weights" in kwargs:
            kwargs["block_weights"] = {str(k): float(v) for k, v in dict(kwargs["block_weights"]).items()}
        try:
            built.append(cls(**kwargs))
        except (TypeError, ValueError) as error:
            raise UserError(f"styles.{error}") from error
    return built[0], built[1]


def describe_images(
    named_images: Iterable[tuple[str, np.ndarray]], settings: FeatureSettings, thumbnail_px: int
) -> tuple[pd.DataFrame, list[np.ndarray]]:
    """Features of every ``(name, uint8 (H, W, 3) image)``: a table (index ``image``, one column per feature)
    and a thumbnail per image (longer side ``thumbnail_px``) for the montages, so no image stays in memory.
    """
    names, rows, thumbnails = [], [], []
    for name, image in tqdm(named_images, desc="style features", unit="image"):
        names.append(name)
        rows.append(image_features(image, settings))
        thumbnails.append(downscale(image, thumbnail_px))
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise UserError(
            f"two images share the name(s) {duplicated[:5]}; image names (file stems) must be unique"
        )
    table = pd.DataFrame(rows, index=pd.Index(names, name="image"), columns=feature_names(settings))
    return table, thumbnails


def style_images(
    named_images: Iterable[tuple[str, np.ndarray]],
    out_dir: str | Path,
    features: FeatureSettings | None = None,
    clustering: ClusterSettings | None = None,
    seed: int = 0,
) -> StyleClustering:
    """Cluster ``(name, uint8 (H, W, 3) image)`` pairs into styles and write the outputs into ``out_dir``."""
    features, clustering = features or FeatureSettings(), clustering or ClusterSettings()
    table, thumbnails = describe_images(named_images, features, clustering.montage_tile_px)
    result = cluster_features(table.to_numpy(), list(table.index), clustering, feature_blocks(features), seed)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_style_outputs(
        out_dir,
        table,
        result.table(),
        result.summary(),
        thumbnails,
        clustering.montage_max_images,
        clustering.montage_tile_px,
    )
    return result


def find_styles(
    images_dir: str | Path,
    out_dir: str | Path,
    features: FeatureSettings | None = None,
    clustering: ClusterSettings | None = None,
    seed: int = 0,
    on_bad_file: str = "skip",
) -> StyleClustering:
    """The pipeline's styles stage: cluster the images of ``images_dir`` (any layout ``io.list_samples``
    reads; labels are ignored) and write features.csv, clusters.csv, summary.json and montages to ``out_dir``.
    """
    # labels play no part in a style: do not spend time reading them
    samples = [replace(s, labels_path=None, mask_paths=None) for s in list_samples(images_dir)]
    named = ((sample.name, image) for sample, image, _ in iter_samples(samples, on_bad_file))
    return style_images(named, out_dir, features, clustering, seed)


def main(argv: list[str] | None = None) -> None:
    """``python -m nucleaizer.styles IMAGES_DIR OUT_DIR [--seed N] [--k K] [--config YAML]``."""
    parser = argparse.ArgumentParser(prog="python -m nucleaizer.styles", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "images_dir", type=Path, help="folder of images (or images/ + labels/, or DSB layout)"
    )
    parser.add_argument("out_dir", type=Path, help="where features.csv, clusters.csv and the montages go")
    parser.add_argument(
        "--config", type=Path, default=DEFAULT_CONFIG, help="styles YAML (default: %(default)s)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--k", type=int, default=None, help="force the number of styles")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        from omegaconf import OmegaConf

        if not args.config.is_file():
            raise UserError(f"{args.config}: no such config file")
        values = OmegaConf.to_container(OmegaConf.load(args.config), resolve=False)
        if args.k is not None:
            values["k"] = args.k
        feature_settings, cluster_settings = settings_from_mapping(values)
        output_folder.check_output(args.out_dir, {"images folder": args.images_dir})
        output_folder.claim(args.out_dir, "styles")
        result = find_styles(args.images_dir, args.out_dir, feature_settings, cluster_settings, args.seed)
    except UserError as error:
        fail(str(error))
    log.info(
        "%d images in %d styles (k chosen %d); written to %s",
        len(result.names),
        result.k,
        result.k_chosen,
        args.out_dir,
    )


if __name__ == "__main__":
    main()
