"""Augmentations of docs/method.md section 5 on (image, labels) pairs, each with its own probability.

Geometric transforms (flips, rotation by any angle, translation) move image and labels together; labels are
resampled by nearest neighbour so every pixel keeps an exact instance id. Intensity transforms (per-channel
stretch, histogram equalisation, inversion, blur, noise, channel swaps) touch the image only. Inversion is for
real images only; synthetic images may be blurred harder. Everything is vectorised with numpy/OpenCV and
driven by one ``numpy.random.Generator`` so the same seed gives the same pair.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import cv2
import numpy as np

from nucleaizer.errors import UserError


@dataclass(frozen=True)
class AugmentParams:
    """Probabilities (0..1) of each augmentation and their strengths; the ``augment:`` block of the config.

    ``rescale`` is not applied here but by the data set before cropping (see nucleaizer.data): the random
    scale factor is ``2 ** uniform(-rescale, rescale)`` (0 = off), which makes a preseg model robust to size.
    """

    flip: float = 0.5
    rotate: float = 0.5
    translate: float = 0.3
    translate_max: float = 0.2
    intensity_stretch: float = 0.5
    stretch_percentile_max: float = 5.0
    equalize: float = 0.1
    invert: float = 0.2
    blur: float = 0.3
    blur_sigma_max: float = 2.0
    blur_sigma_max_synthetic: float = 4.0
    noise: float = 0.3
    noise_std_max: float = 0.05
    channel_swap: float = 0.3
    rescale: float = 0.0

    @classmethod
    def from_dict(cls, values: dict | None) -> AugmentParams:
        """Build from a plain dict (the config block); unknown keys raise UserError naming them."""
        values = dict(values or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise UserError(
                f"segmenter.train.augment: unknown key(s) {unknown}; known keys are {sorted(known)}"
            )
        params = cls(**{k: float(v) for k, v in values.items()})
        probabilities = (
            "flip",
            "rotate",
            "translate",
            "intensity_stretch",
            "equalize",
            "invert",
            "blur",
            "noise",
            "channel_swap",
        )
        bad = [name for name in probabilities if not 0.0 <= getattr(params, name) <= 1.0]
        if bad:
            raise UserError(f"segmenter.train.augment: {bad} must be probabilities between 0 and 1")
        return params

    @classmethod
    def off(cls) -> AugmentParams:
        """Every augmentation switched off (validation, tests)."""
        return cls(**{f.name: 0.0 for f in fields(cls)})


def channel_median(image: np.ndarray) -> np.ndarray:
    """Per-channel median of an (H, W, C) image, shape (C,), same dtype: the fill value for padding."""
    return np.median(image.reshape(-1, image.shape[-1]), axis=0).astype(image.dtype)


def warp_pair(image: np.ndarray, labels: np.ndarray, matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Apply a 2x3 affine ``matrix`` to both: bilinear image (median fill), nearest labels (0 fill).

    image: uint8 (H, W, 3); labels: integer (H, W). Output has the same shapes and dtypes.
    """
    height, width = labels.shape
    fill = tuple(int(v) for v in channel_median(image))
    warped = cv2.warpAffine(
        image,
        matrix,
        (width, height),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=fill,
    )
    # float32 holds ids exactly up to 2**24; nearest never mixes two ids
    warped_labels = cv2.warpAffine(
        labels.astype(np.float32),
        matrix,
        (width, height),
        flags=cv2.INTER_NEAREST,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0,
    )
    return warped, warped_labels.astype(labels.dtype)


def rotation_matrix(
    shape: tuple[int, int], angle_deg: float, shift_yx: tuple[float, float] = (0.0, 0.0)
) -> np.ndarray:
    """2x3 affine matrix rotating about the image centre by ``angle_deg`` then shifting by ``shift_yx`` px."""
    height, width = shape
    matrix = cv2.getRotationMatrix2D(((width - 1) / 2.0, (height - 1) / 2.0), angle_deg, 1.0)
    matrix[0, 2] += shift_yx[1]
    matrix[1, 2] += shift_yx[0]
    return matrix


def _geometric(image: np.ndarray, labels: np.ndarray, params: AugmentParams, rng: np.random.Generator):
    if rng.random() < params.flip:
        image, labels = image[:, ::-1], labels[:, ::-1]
    if rng.random() < params.flip:
        image, labels = image[::-1], labels[::-1]
    angle = rng.uniform(0.0, 360.0) if rng.random() < params.rotate else 0.0
    shift = (0.0, 0.0)
    if rng.random() < params.translate:
        shift = tuple(rng.uniform(-params.translate_max, params.translate_max, 2) * np.array(labels.shape))
    if angle != 0.0 or shift != (0.0, 0.0):
        image, labels = warp_pair(
            np.ascontiguousarray(image),
            np.ascontiguousarray(labels),
            rotation_matrix(labels.shape, angle, shift),
        )
    return np.ascontiguousarray(image), np.ascontiguousarray(labels)


def _stretch(image: np.ndarray, params: AugmentParams, rng: np.random.Generator) -> np.ndarray:
    """Per-channel contrast stretch between random low/high percentiles."""
    flat = image.reshape(-1, 3).astype(np.float32)
    low_q = rng.uniform(0.0, params.stretch_percentile_max, 3)
    high_q = 100.0 - rng.uniform(0.0, params.stretch_percentile_max, 3)
    low = np.array([np.percentile(flat[:, c], low_q[c]) for c in range(3)], dtype=np.float32)
    high = np.array([np.percentile(flat[:, c], high_q[c]) for c in range(3)], dtype=np.float32)
    high = np.maximum(high, low + 1.0)
    return np.clip((image.astype(np.float32) - low) / (high - low) * 255.0, 0, 255).astype(np.uint8)


def _intensity(
    image: np.ndarray, params: AugmentParams, rng: np.random.Generator, synthetic: bool
) -> np.ndarray:
    if rng.random() < params.intensity_stretch:
        image = _stretch(image, params, rng)
    if rng.random() < params.equalize:
        image = np.stack([cv2.equalizeHist(np.ascontiguousarray(image[..., c])) for c in range(3)], axis=-1)
    # inversion makes a dark-background image look like a bright-field one; synthetic images already carry
    # the look of their style, so they are never inverted
    if rng.random() < params.invert and not synthetic:
        image = 255 - image
    if rng.random() < params.blur:
        sigma_max = params.blur_sigma_max_synthetic if synthetic else params.blur_sigma_max
        sigma = rng.uniform(0.0, sigma_max)
        if sigma > 0.1:
            image = cv2.GaussianBlur(image, (0, 0), sigmaX=sigma, sigmaY=sigma)
    if rng.random() < params.noise:
        std = rng.uniform(0.0, params.noise_std_max) * 255.0
        noisy = image.astype(np.float32) + rng.standard_normal(image.shape, dtype=np.float32) * std
        image = np.clip(noisy, 0, 255).astype(np.uint8)
    if rng.random() < params.channel_swap:
        image = image[..., rng.permutation(3)]
    return np.ascontiguousarray(image)


def augment_pair(
    image: np.ndarray,
    labels: np.ndarray,
    params: AugmentParams,
    rng: np.random.Generator,
    synthetic: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Randomly augmented copy of a pair.

    image: uint8 (H, W, 3) RGB; labels: integer (H, W), 0 background. Returns arrays of the same shapes and
    dtypes; ids are kept (objects pushed out of the frame disappear, none are renumbered).
    ``synthetic``: the pair is a rendered one (no inversion, stronger blur allowed).
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[:2] != labels.shape:
        raise ValueError(
            f"image (H, W, 3) and labels (H, W) must match, got {image.shape} and {labels.shape}"
        )
    image, labels = _geometric(image, labels, params, rng)
    return _intensity(image, params, rng, synthetic), labels
