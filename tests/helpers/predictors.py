"""Exact instance predictor and label comparisons shared by the inference tests."""

import numpy as np
from scipy import ndimage


def threshold_predictor(tiles):
    """Exact, local predictor: each 8-connected bright component (> 127 in channel 0) of a tile is one object.

    Its score is the object's mean brightness, so painting order is known. It returns full-tile masks
    (N, H, W) and scores, the simple predictor protocol (nucleaizer.infer.tiling).
    """
    outputs = []
    for tile in tiles:
        labels, n = ndimage.label(tile[..., 0] > 127, structure=np.ones((3, 3)))
        means = ndimage.mean(tile[..., 0], labels, np.arange(1, n + 1)) / 255.0 if n else np.zeros(0)
        outputs.append((labels[None] == np.arange(1, n + 1)[:, None, None], np.asarray(means, np.float32)))
    return outputs


def objects_image(labels, brightness=None):
    """uint8 RGB image where every object of ``labels`` is bright and separated from touching neighbours."""
    edges = ndimage.grey_dilation(labels, size=3) != ndimage.grey_erosion(labels, size=3)
    value = np.full(labels.max() + 1, 220, np.uint8) if brightness is None else brightness
    grey = np.where((labels > 0) & ~edges, value[labels], 0).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=2)


def threshold_predictor_labels(image):
    """What the threshold predictor finds on the whole image, as a label image."""
    return ndimage.label(image[..., 0] > 127, structure=np.ones((3, 3)))[0]


def same_partition(a, b):
    """True when two label images hold the same objects up to renumbering."""
    if ((a > 0) != (b > 0)).any():
        return False
    pairs = np.unique(np.stack([a.ravel(), b.ravel()]), axis=1)
    return pairs.shape[1] == len(np.unique(a)) == len(np.unique(b))
