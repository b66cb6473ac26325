"""Segment images of any size with any instance predictor (docs/method.md section 6), and the ``infer.py`` job.

One image: estimate the nucleus diameter (given, or the median equivalent diameter of a first pass of the
pre-segmentation predictor), rescale so nuclei are about 40 px across, predict in overlapping tiles merged
without seams (``tiling``), paint instances by decreasing score (``nucleaizer.instances``), optionally vote over flips and
rotations (``tta``), refine at the working scale (post-processing, when the model has it), and rescale the
labels back to the original size.

The folder job lives in ``nucleaizer.infer.job``; ``run`` and ``validate_config`` here are what ``infer.py``
calls.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from skimage.segmentation import relabel_sequential

from nucleaizer.infer.tiling import InstancePredictor, TileParams, predict_image
from nucleaizer.infer.tta import TRANSFORMS, check_transforms, segment_with_tta
from nucleaizer.instances import Instances, paint_instances
from nucleaizer.io import to_rgb8
from nucleaizer.size import SizeRule, median_diameter, rescale_image, rescale_labels

log = logging.getLogger(__name__)

# the size estimate's second pass looks at most this many working-scale pixels a side
ESTIMATION_PX = 1024
# the size pass's objects are the segmentation when its scale is within this factor of the estimated one (the
# shipped model scores the same at the annotated size and at its own estimate, a few per cent off)
REUSE_SCALE_FACTOR = 1.15
# labels int (h, w) and image uint8 (h, w, 3) at the working scale -> corrected labels (h, w)
Refiner = Callable[[np.ndarray, np.ndarray], np.ndarray]


def as_rgb8(image: np.ndarray) -> np.ndarray:
    """The image as uint8 (H, W, 3): other arrays (grey, RGBA, 16-bit, float) go through ``io.to_rgb8``."""
    image = np.asarray(image)
    if image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3:
        return image
    return to_rgb8(image)


@dataclass
class NucleusSegmenter:
    """A predictor with everything needed to segment an image of any size.

    predictor: the instance predictor (tiles -> Instances, or masks + scores; see ``tiling``) working at
    ``size.target_diameter_px``;
    preseg: predictor that measures the nucleus size (the main predictor when None);
    size_guess: a predictor for a first guess of the size on the original image (the classical one): the
    preseg then measures at the guessed working scale, where a network trained on nuclei of about the target
    diameter sees what it knows; without it, the preseg measures on the original image;
    tta_transforms: names from ``tta.TRANSFORMS``; empty for no test-time augmentation;
    refine: post-processing applied to the labels at the working scale, or None.
    """

    predictor: InstancePredictor
    preseg: InstancePredictor | None = None
    size: SizeRule = field(default_factory=SizeRule)
    tiles: TileParams = field(default_factory=TileParams)
    tta_transforms: Sequence[str] = ()
    refine: Refiner | None = None
    size_guess: InstancePredictor | None = None

    def __post_init__(self) -> None:
        if self.tta_transforms:
            self.tta_transforms = check_transforms(self.tta_transforms)

    def measure_size(self, image: np.ndarray) -> SizeEstimate:
        """The nucleus diameter (px) of the objects the pre-segmentation finds (size.estimated_diameter); None when
        it finds none, or when the first predictor says the image holds no nuclei (``sees_no_nuclei``, the
        classical one). With ``size_guess``: its diameter on the original image is the guess, and the preseg
        measures the median diameter of what it finds in the image brought to the working scale by that guess
        (at most ESTIMATION_PX pixels a side of the image's centre: a large image holds nuclei enough in a
        part of it). On held-out DSB images the median size error of the shipped model went from 38% (the
        model on the original image) to under 5% this way (benchmarks/generalist.py has the figures). When
        the segmenting predictor itself saw the whole image, its objects come with the estimate (see
        :class:`SizeEstimate`)."""
        image = as_rgb8(image)
        predictor = self.preseg or self.predictor
        first = self.size_guess or predictor
        if getattr(first, "sees_no_nuclei", None) is not None and first.sees_no_nuclei(image):
            return SizeEstimate(None)
        guess = self.size.diameter_of(self._labels(image, first))
        if self.size_guess is None or guess is None:
            return SizeEstimate(guess)
        scale = self.size.scale_for(guess)
        side = max(1, round(ESTIMATION_PX / scale))
        top, left = max(0, (image.shape[0] - side) // 2), max(0, (image.shape[1] - side) // 2)
        view = rescale_image(image[top : top + side, left : left + side], scale)
        instances = predict_image(view, predictor, self.tiles)
        # a network trained on nuclei rescaled by their median diameter measures them the same way (it does not
        # break nuclei into fragments the way the area weighting is there for)
        measured = median_diameter(
            paint_instances(instances, view.shape[:2])[0], self.size.min_object_area_px
        )
        whole = side >= max(image.shape[:2]) and self.preseg is None
        return SizeEstimate(
            guess if measured is None else measured / scale,
            scale if whole else None,
            instances if whole else None,
        )

    def estimate_diameter(self, image: np.ndarray) -> float | None:
        """The nucleus diameter (px) :meth:`measure_size` finds; None when it finds no nucleus."""
        return self.measure_size(image).diameter_px

    def _labels(self, image: np.ndarray, predictor: InstancePredictor) -> np.ndarray:
        return paint_instances(predict_image(image, predictor, self.tiles), image.shape[:2])[0]

    def scale_for(self, image: np.ndarray, diameter_px: float | None = None) -> float:
        """Scale factor for ``image``: from ``diameter_px`` when given, else estimated; 1 when nothing is found."""
        if diameter_px is None:
            diameter_px = self.estimate_diameter(image)
        return self._scale_of(diameter_px)

    def _scale_of(self, diameter_px: float | None) -> float:
        if diameter_px is None:
            log.info("no nucleus found for size estimation; the image is not rescaled")
            return 1.0
        return self.size.scale_for(diameter_px)

    def predict_working_scale(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Labels int32 (h, w), per-id scores and per-id TTA agreement (the share of views that found the
        object; 1 without TTA) of an image already at the working scale (tiles, paint, TTA)."""

        def once(view: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            return paint_instances(predict_image(view, self.predictor, self.tiles), view.shape[:2])

        if self.tta_transforms:
            return segment_with_tta(image, once, self.tta_transforms, self.tiles.match_iou)
        labels, scores = once(image)
        return labels, scores, np.ones(len(scores), np.float32)

    def segment_objects(
        self,
        image: np.ndarray,
        diameter_px: float | None = None,
        scale: float | None = None,
        estimate: SizeEstimate | None = None,
    ) -> Segmentation:
        """The labels of an image (uint8 (H, W, 3); other arrays are converted) with each nucleus's confidence.

        ``scale`` (the factor to the working scale) overrides ``diameter_px``, which overrides ``estimate`` (what
        :meth:`measure_size` found in this image); with none of them, the size is measured here. When the size
        pass's predictor saw the whole image at a scale within REUSE_SCALE_FACTOR of the one its estimate asks
        for, its objects are the segmentation (no second pass; not with TTA).
        """
        image = as_rgb8(image)
        reused = None
        if scale is None:
            if diameter_px is None:
                estimate = estimate or self.measure_size(image)
                diameter_px = estimate.diameter_px
            scale = self._scale_of(diameter_px)
            if estimate is not None and estimate.view is not None and not self.tta_transforms:
                if 1 / REUSE_SCALE_FACTOR <= scale / estimate.view_scale <= REUSE_SCALE_FACTOR:
                    scale, reused = estimate.view_scale, estimate.view
        working = rescale_image(image, scale)
        if reused is not None:
            labels, scores = paint_instances(reused, working.shape[:2])
            agreement = np.ones(len(scores), np.float32)
        else:
            labels, scores, agreement = self.predict_working_scale(working)
        if self.refine is not None and labels.any():
            refined = self.refine(labels, working)
            scores, agreement = (_carry_over(labels, refined, values) for values in (scores, agreement))
            labels = refined
        labels = rescale_labels(labels, image.shape[:2])
        labels, _, inverse = relabel_sequential(labels.astype(np.int32, copy=False))
        kept = np.asarray(inverse)[1:] - 1  # new id i + 1 was working-scale id kept[i] + 1
        return Segmentation(labels, scores[kept], agreement[kept], scale)

    def segment(
        self, image: np.ndarray, diameter_px: float | None = None, scale: float | None = None
    ) -> np.ndarray:
        """Label image int32 (H, W), ids 1..N, of an image (see :meth:`segment_objects`)."""
        return self.segment_objects(image, diameter_px, scale).labels


@dataclass
class Segmentation:
    """The nuclei of one image: labels int32 (H, W), ids 1..N; per nucleus (index i for id i + 1) the
    detection score (with TTA the mean over the views that found it; classical: 1) and the TTA agreement (the
    share of views that found it; 1 without TTA), both float32 (N,); the factor from the image to the working
    scale it was predicted at."""

    labels: np.ndarray
    score: np.ndarray
    agreement: np.ndarray
    scale: float = 1.0


@dataclass
class SizeEstimate:
    """What the size pass found in one image: the nucleus diameter in its pixels (None when it found none).

    When the segmenting predictor itself (no separate preseg) saw the whole image, brought to ``view_scale`` by
    the classical guess, ``view`` holds its objects there: a segmentation at a scale that is usually within a
    few per cent of the one the measured diameter asks for, which ``segment_objects`` then reuses instead of
    predicting the image a second time.
    """

    diameter_px: float | None
    view_scale: float | None = None
    view: Instances | None = None


def _carry_over(before: np.ndarray, after: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Per id of ``after``, the highest value among the ids of ``before`` it overlaps (NaN where none)."""
    result = np.full(int(after.max()), -np.inf, np.float32)
    both = (after > 0) & (before > 0)
    np.maximum.at(result, after[both] - 1, values[before[both] - 1])
    result[np.isneginf(result)] = np.nan
    return result


def segment_image(
    image: np.ndarray,
    predictor: InstancePredictor,
    diameter_px: float | None = None,
    preseg: InstancePredictor | None = None,
    size: SizeRule | None = None,
    tiles: TileParams | None = None,
    tta: bool = False,
) -> np.ndarray:
    """Label image int32 (H, W) of one image with any instance predictor (see :class:`NucleusSegmenter`).

    diameter_px: nucleus diameter in the image's pixels; estimated with ``preseg`` (or ``predictor``) when None.
    size, tiles: the size rule and tiling (defaults: 40 px target, 512 px tiles overlapping by 64 px).
    tta: vote over all eight flips and 90-degree rotations.
    """
    segmenter = NucleusSegmenter(
        predictor, preseg, size or SizeRule(), tiles or TileParams(), tuple(TRANSFORMS) if tta else ()
    )
    return segmenter.segment(image, diameter_px=diameter_px)
