"""The post-processing step as inference calls it: labels and image at the working scale -> labels."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from nucleaizer.postprocess.rules import PostprocessParams, postprocess_labels
from nucleaizer.postprocess.unet import UNetEnsemble, load_ensemble


@dataclass
class ContourRefiner:
    """U-Net ensemble + tuned p1..p6: ``refiner(labels, image) -> labels``, everything at the working scale.

    labels: int (H, W) from the segmenter; image: np.uint8 (H, W, 3). Returns int32 (H, W), ids 1..M.
    """

    ensemble: UNetEnsemble
    params: PostprocessParams

    def __call__(self, labels: np.ndarray, image: np.ndarray) -> np.ndarray:
        return postprocess_labels(labels, self.ensemble.predict_probability(image), self.params)


def load_refiner(
    ensemble_path: str | Path, params: Mapping[str, float] | None = None, device: str | torch.device = "cpu"
) -> ContourRefiner:
    """A refiner from an ensemble file and a parameter mapping (a bundle's ``postprocess`` entry; None:
    the paper's values)."""
    return ContourRefiner(load_ensemble(ensemble_path, device), PostprocessParams.from_dict(params or {}))
