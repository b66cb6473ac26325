"""Hand-crafted appearance features of one image, the space in which images are clustered into styles.

Per image (docs/method.md section 2): intensity statistics of every channel in RGB and L*a*b* (mean, standard
deviation, percentiles, a coarse histogram), grey-level co-occurrence (Haralick) texture of the lightness
channel at a few distances, a rotation-invariant local binary pattern histogram, and the image size.
Large images are downscaled first so a feature vector costs about the same for every image.

The intensity statistics come from one 256-bin histogram per uint8 channel and the LBP codes from whole-array
shifts, which keeps one 512x512 image in the tens of milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from skimage.feature import graycomatrix, graycoprops

CHANNELS = ("R", "G", "B", "L", "a", "b")
BLOCKS = ("intensity", "texture", "lbp", "size")
GLCM_PROPERTIES = ("contrast", "dissimilarity", "homogeneity", "energy", "correlation", "entropy")
# four directions; the texture features are averaged over them so they do not depend on orientation
GLCM_ANGLES = (0.0, np.pi / 4, np.pi / 2, 3 * np.pi / 4)


@dataclass(frozen=True)
class FeatureSettings:
    """How features are computed (keys of conf/styles/default.yaml; defaults equal the config's)."""

    feature_size: int = 512  # longer side, in pixels, images are downscaled to before features
    percentiles: tuple[float, ...] = (1, 5, 25, 50, 75, 95, 99)
    histogram_bins: int = 16  # per channel, over 0..255
    glcm_distances: tuple[int, ...] = (3, 5)
    glcm_levels: int = 32  # grey levels the lightness channel is quantised to for the co-occurrence matrix
    lbp_points: int = 8
    lbp_radius: float = 1

    def __post_init__(self) -> None:
        if self.feature_size < 16:
            raise ValueError(f"feature_size={self.feature_size}: use at least 16 pixels")
        if not 2 <= self.histogram_bins <= 256 or 256 % self.histogram_bins:
            raise ValueError(f"histogram_bins={self.histogram_bins}: use a divisor of 256 (2, 4, ..., 256)")
        if not 2 <= self.glcm_levels <= 256 or 256 % self.glcm_levels:
            raise ValueError(f"glcm_levels={self.glcm_levels}: use a divisor of 256 (2, 4, ..., 256)")
        if not self.glcm_distances or min(self.glcm_distances) < 1:
            raise ValueError(f"glcm_distances={list(self.glcm_distances)}: give one or more distances >= 1")
        if not 1 <= self.lbp_points <= 253 or self.lbp_radius <= 0:
            raise ValueError(
                f"lbp_points={self.lbp_points}, lbp_radius={self.lbp_radius}: use 1..253 points, radius > 0"
            )
        if any(not 0 <= p <= 100 for p in self.percentiles):
            raise ValueError(f"percentiles={list(self.percentiles)}: every value must lie in 0..100")


def feature_names(settings: FeatureSettings) -> list[str]:
    """Names of the entries of :func:`image_features`, in order (the columns of features.csv)."""
    per_channel = ["mean", "std", *(f"p{p:g}" for p in settings.percentiles)]
    per_channel += [f"hist{i:02d}" for i in range(settings.histogram_bins)]
    names = [f"{channel}_{stat}" for channel in CHANNELS for stat in per_channel]
    names += [f"glcm_d{d}_{prop}" for d in settings.glcm_distances for prop in GLCM_PROPERTIES]
    names += [f"lbp_{i:02d}" for i in range(settings.lbp_points + 2)]
    names += ["log2_height", "log2_width"]
    return names


def feature_blocks(settings: FeatureSettings) -> dict[str, slice]:
    """The families of features, as column ranges of :func:`image_features`: intensity, texture, lbp, size.

    Clustering weighs families, not single columns: the intensity family alone holds most of the columns
    (and grey images repeat it in R, G, B and L), which would otherwise drown texture and size.
    """
    n_intensity = len(CHANNELS) * (2 + len(settings.percentiles) + settings.histogram_bins)
    n_texture = len(settings.glcm_distances) * len(GLCM_PROPERTIES)
    n_lbp = settings.lbp_points + 2
    bounds = np.cumsum([0, n_intensity, n_texture, n_lbp, 2])
    return {name: slice(int(a), int(b)) for name, a, b in zip(BLOCKS, bounds[:-1], bounds[1:], strict=True)}


def downscale(image: np.ndarray, max_side: int) -> np.ndarray:
    """The image shrunk (area interpolation) so its longer side is at most ``max_side``; never enlarged."""
    height, width = image.shape[:2]
    scale = max_side / max(height, width)
    if scale >= 1:
        return image
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def _histogram_statistics(channel_counts: np.ndarray, settings: FeatureSettings) -> np.ndarray:
    """Mean, std, percentiles and a normalised coarse histogram from 256-bin counts (C, 256) -> (C, S)."""
    values = np.arange(256, dtype=np.float64)
    total = channel_counts.sum(axis=1, keepdims=True)
    share = channel_counts / total
    mean = share @ values
    std = np.sqrt(np.maximum(share @ values**2 - mean**2, 0.0))
    cumulative = np.cumsum(share, axis=1)
    # percentile p = the first grey value whose cumulative share reaches p / 100
    levels = np.asarray(settings.percentiles, dtype=np.float64) / 100
    percentiles = np.stack([np.searchsorted(row, levels - 1e-12) for row in cumulative]).astype(np.float64)
    coarse = share.reshape(len(share), settings.histogram_bins, -1).sum(axis=2)
    return np.concatenate([mean[:, None], std[:, None], percentiles, coarse], axis=1)


def uniform_lbp(grey: np.ndarray, points: int, radius: float) -> np.ndarray:
    """Rotation-invariant uniform local binary pattern codes (uint8 (H, W), 0..points+1) of a 2-D grey image.

    The codes of ``skimage.feature.local_binary_pattern(grey, points, radius, method="uniform")`` (neighbours
    bilinearly interpolated on a circle, zero outside the image; an exact tie between interpolated values can
    round the other way), computed with whole-array shifts: about 5x faster, the largest single cost of a
    feature vector otherwise.
    """
    image = grey.astype(np.float32)
    height, width = image.shape
    pad = int(np.ceil(radius)) + 1
    padded = np.pad(image, pad)
    angles = 2 * np.pi * np.arange(points) / points
    # skimage's offsets, rounded the same way so axis-aligned neighbours fall exactly on pixels
    offsets = zip(np.round(-radius * np.sin(angles), 5), np.round(radius * np.cos(angles), 5), strict=True)
    ones = np.zeros(image.shape, dtype=np.uint8)
    changes = np.zeros(image.shape, dtype=np.uint8)  # 0/1 switches going round the circle
    first = previous = None
    for dy, dx in offsets:
        y0, x0 = int(np.floor(dy)), int(np.floor(dx))
        fy, fx = np.float32(dy - y0), np.float32(dx - x0)
        value = np.zeros(image.shape, dtype=np.float32)
        for row, weight_y in ((0, 1 - fy), (1, fy)):
            for col, weight_x in ((0, 1 - fx), (1, fx)):
                if weight_y * weight_x > 1e-6:  # skip the corners an axis-aligned neighbour does not touch
                    top, left = pad + y0 + row, pad + x0 + col
                    value += weight_y * weight_x * padded[top : top + height, left : left + width]
        bit = value >= image
        ones += bit
        if previous is None:
            first = bit
        else:
            changes += bit != previous
        previous = bit
    changes += previous != first
    # uniform patterns (at most two switches) are coded by their number of ones, all others by points + 1
    return np.where(changes <= 2, ones, points + 1).astype(np.uint8)


def _texture_features(lightness: np.ndarray, settings: FeatureSettings) -> np.ndarray:
    """Haralick properties per distance (averaged over four directions), then the LBP histogram."""
    quantised = (lightness // (256 // settings.glcm_levels)).astype(np.uint8)
    glcm = graycomatrix(
        quantised,
        distances=list(settings.glcm_distances),
        angles=list(GLCM_ANGLES),
        levels=settings.glcm_levels,
        symmetric=True,
        normed=True,
    )
    # (n_distances, n_properties); a flat image has an undefined correlation, read as 0
    haralick = np.stack([graycoprops(glcm, prop).mean(axis=1) for prop in GLCM_PROPERTIES], axis=1)
    haralick = np.nan_to_num(haralick, nan=0.0)
    codes = uniform_lbp(lightness, settings.lbp_points, settings.lbp_radius)
    n_codes = settings.lbp_points + 2  # uniform patterns 0..P plus one bin for all non-uniform ones
    lbp = np.bincount(codes.ravel(), minlength=n_codes) / codes.size
    return np.concatenate([haralick.ravel(), lbp])


def image_features(image: np.ndarray, settings: FeatureSettings | None = None) -> np.ndarray:
    """Feature vector (float64, ``len(feature_names(settings))``) of one ``uint8 (H, W, 3)`` RGB image."""
    settings = settings or FeatureSettings()
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected a uint8 (H, W, 3) RGB image, got {image.dtype} {image.shape}")
    height, width = image.shape[:2]
    small = np.ascontiguousarray(downscale(image, settings.feature_size))
    # OpenCV's 8-bit L*a*b*: L scaled to 0..255, a and b offset by 128, so every channel is one byte
    lab = cv2.cvtColor(small, cv2.COLOR_RGB2LAB)
    counts = np.stack(
        [
            cv2.calcHist([channels], [c], None, [256], [0, 256]).ravel()
            for channels in (small, lab)
            for c in range(3)
        ]
    ).astype(np.float64)
    intensity = _histogram_statistics(counts, settings)
    texture = _texture_features(lab[..., 0], settings)
    size = np.log2([height, width])
    return np.concatenate([intensity.ravel(), texture, size])
