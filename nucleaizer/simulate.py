"""Procedural nucleus images with exact labels, in five looks: fluorescence, brightfield, H&E-like tissue, dim noisy
fluorescence and a two-colour fluorescence composite.

Used by the demo experiment and by tests that need realistic-looking data without downloads. Everything is
vectorised and deterministic for a seed.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

STYLES = ("fluorescence", "brightfield", "he", "dim", "two_colour")
# the three looks of the DSB image types (fluorescence, bright-field, tissue) that tests and the style
# benchmark use; dim and two_colour are harder variants for the demo's target
DSB_LOOKS = STYLES[:3]


def random_labels(
    shape: tuple[int, int],
    n_objects: int,
    diameter_px: float,
    rng: np.random.Generator,
    diameter_spread: float = 0.2,
    max_aspect: float = 1.6,
) -> np.ndarray:
    """Label image (int32, 0 = background) of non-overlapping elliptical nuclei.

    Ellipses are drawn in random order; a pixel already taken keeps its first owner and objects left with
    fewer than a third of their pixels are dropped, so objects may touch but never overlap. Ids are 1..N.
    """
    height, width = shape
    labels = np.zeros(shape, dtype=np.int32)
    diameters = np.clip(rng.normal(diameter_px, diameter_spread * diameter_px, n_objects), 4, None)
    aspects = rng.uniform(1.0, max_aspect, n_objects)
    angles = rng.uniform(0, np.pi, n_objects)
    centres = rng.uniform([0, 0], [height, width], size=(n_objects, 2))
    next_id = 1
    for diameter, aspect, angle, (cy, cx) in zip(diameters, aspects, angles, centres, strict=True):
        semi_major = diameter / 2 * np.sqrt(aspect)
        semi_minor = diameter / 2 / np.sqrt(aspect)
        r = int(np.ceil(semi_major)) + 1
        y0, y1 = max(int(cy) - r, 0), min(int(cy) + r + 1, height)
        x0, x1 = max(int(cx) - r, 0), min(int(cx) + r + 1, width)
        yy, xx = np.mgrid[y0:y1, x0:x1]
        dy, dx = yy - cy, xx - cx
        u = dx * np.cos(angle) + dy * np.sin(angle)
        v = -dx * np.sin(angle) + dy * np.cos(angle)
        inside = (u / semi_major) ** 2 + (v / semi_minor) ** 2 <= 1.0
        window = labels[y0:y1, x0:x1]
        free = inside & (window == 0)
        if free.sum() >= max(inside.sum() / 3, 4):
            window[free] = next_id
            next_id += 1
    return labels


def _smooth_noise(shape: tuple[int, int], sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian-filtered noise scaled to zero mean and unit standard deviation."""
    noise = ndimage.gaussian_filter(rng.standard_normal(shape), sigma)
    return (noise - noise.mean()) / (noise.std() + 1e-8)


def render(labels: np.ndarray, style: str, rng: np.random.Generator) -> np.ndarray:
    """Render a label image as an 8-bit RGB image (H, W, 3) of the given style.

    fluorescence: bright textured nuclei on a dark noisy background, grey.
    brightfield: slightly dark nuclei with a bright rim on a mid-grey uneven background, grey.
    he: dark purple (haematoxylin) nuclei on a bright pink (eosin) textured background.
    dim: faint nuclei under uneven illumination and strong camera noise (a short exposure), grey.
    two_colour: green nuclei (a nuclear reporter) on a magenta textured counterstain of about the same brightness,
    each nucleus a little darker than its surroundings by its own random amount.
    """
    if style not in STYLES:
        raise ValueError(f"unknown style {style!r}; choose one of {STYLES}")
    shape = labels.shape
    foreground = labels > 0
    soft = ndimage.gaussian_filter(foreground.astype(np.float32), 1.0)
    texture = _smooth_noise(shape, 1.5, rng)
    # every nucleus gets its own brightness
    brightness = rng.uniform(0.6, 1.0, labels.max() + 1)
    per_object = brightness[labels]
    if style == "fluorescence":
        signal = soft * (per_object + 0.12 * texture)
        grey = 0.05 + 0.75 * signal + 0.02 * rng.standard_normal(shape)
        rgb = np.repeat(grey[..., None], 3, axis=2)
    elif style == "brightfield":
        rim = ndimage.gaussian_filter(foreground.astype(np.float32), 2.5) - soft
        background = 0.6 + 0.05 * _smooth_noise(shape, 40, rng)
        grey = (
            background
            - 0.25 * soft * per_object
            + 0.3 * np.clip(rim, 0, None)
            + 0.03 * rng.standard_normal(shape)
        )
        rgb = np.repeat(grey[..., None], 3, axis=2)
    elif style == "dim":
        illumination = 0.75 + 0.25 * _smooth_noise(shape, 60, rng)
        grey = 0.1 + 0.15 * soft * per_object * illumination + 0.06 * rng.standard_normal(shape)
        rgb = np.repeat(grey[..., None], 3, axis=2)
    elif style == "two_colour":
        counterstain = np.array([0.75, 0.45, 0.70])
        reporter = np.array([0.45, 0.70, 0.50])
        grain = 0.85 + 0.15 * (0.5 + 0.5 * _smooth_noise(shape, 2.0, rng))[..., None]
        darker = rng.uniform(0.0, 0.15, labels.max() + 1)[labels][..., None]
        rgb = counterstain * grain * (1 - soft[..., None]) + (reporter * grain - darker) * soft[..., None]
        rgb = rgb + 0.03 * rng.standard_normal((*shape, 3))
    else:
        eosin = np.array([0.93, 0.62, 0.75])
        haematoxylin = np.array([0.30, 0.15, 0.45])
        fibres = 0.5 + 0.5 * _smooth_noise(shape, 3.0, rng)
        background = eosin[None, None, :] - 0.15 * fibres[..., None] * np.array([0.1, 0.5, 0.3])
        nuclei = haematoxylin[None, None, :] * (1.3 - 0.4 * per_object[..., None]) + 0.06 * texture[..., None]
        rgb = background * (1 - soft[..., None]) + nuclei * soft[..., None]
        rgb = rgb + 0.03 * rng.standard_normal((*shape, 3))
    return (np.clip(rgb, 0, 1) * 255).astype(np.uint8)


def sample(
    style: str,
    size: int | tuple[int, int] = 256,
    diameter_px: float = 20,
    density: float = 0.25,
    seed: int | np.random.Generator = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """One (image, labels) pair: ``density`` is the share of the image the nuclei would cover."""
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    shape = (size, size) if isinstance(size, int) else tuple(size)
    n_objects = max(1, int(density * shape[0] * shape[1] / (np.pi * (diameter_px / 2) ** 2)))
    labels = random_labels(shape, n_objects, diameter_px, rng)
    return render(labels, style, rng), labels
