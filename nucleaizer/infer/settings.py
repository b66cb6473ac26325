"""What an ``infer.py`` command line asks for: checked before anything is written, and turned into the
NucleusSegmenter that does it (a model bundle or the classical baseline)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from nucleaizer import io, output_folder
from nucleaizer.baseline import ClassicalPredictor
from nucleaizer.bundle import Bundle, load_predictors, read_bundle
from nucleaizer.config_files import HYDRA_FOLDER
from nucleaizer.devices import resolve_device
from nucleaizer.errors import UserError
from nucleaizer.infer import exports
from nucleaizer.infer.nucleus_segmenter import NucleusSegmenter, Refiner
from nucleaizer.infer.results import LABEL_FORMATS
from nucleaizer.infer.tiling import TileParams
from nucleaizer.infer.tta import check_transforms
from nucleaizer.models import model_folder
from nucleaizer.size import SizeRule

CLASSICAL = "classical"
DEVICES = ("auto", "cpu", "cuda")


def _given(cfg: DictConfig, key: str) -> Any:
    """The value of ``key``, or None when it is unset (``???``) or null."""
    return None if OmegaConf.is_missing(cfg, key) else cfg[key]


def tile_params(cfg: DictConfig) -> TileParams:
    """TileParams from the config keys tile_size, tile_overlap, batch_size, match_iou, min_input_px."""
    try:
        return TileParams(
            int(cfg.tile_size),
            int(cfg.tile_overlap),
            int(cfg.batch_size),
            float(cfg.match_iou),
            int(cfg.min_input_px),
        )
    except ValueError as error:
        raise UserError(f"tile settings: {error}") from error


def validate_config(cfg: DictConfig) -> None:
    """Check the command line before anything is written (Hydra writes its logs under ``output``)."""
    model, source, output, truth = (_given(cfg, k) for k in ("model", "input", "output", "ground_truth"))
    bundle = read_bundle(model_folder(model)) if model is not None and str(model) != CLASSICAL else None
    if source is not None and not Path(source).is_dir():
        raise UserError(f"input folder {source} does not exist or is not a folder (key: input)")
    if truth is not None and not Path(truth).is_dir():
        raise UserError(f"ground_truth folder {truth} does not exist or is not a folder (key: ground_truth)")
    diameter = _given(cfg, "diameter")
    if diameter is not None and (
        not isinstance(diameter, (int, float))
        or isinstance(diameter, bool)
        or not math.isfinite(diameter)
        or diameter <= 0
    ):
        raise UserError(
            f"diameter={diameter!r}: give the nucleus diameter in pixels (a positive number) or null"
        )
    formats = list(cfg.formats)
    unknown = [f for f in formats if f not in exports.FORMATS]
    if unknown or not formats:
        raise UserError(f"formats={formats}: choose some of {list(exports.FORMATS)}")
    if truth is not None and "labels" not in formats:
        raise UserError("ground_truth= scores the label images: add labels to formats=[...]")
    if not 0.0 <= float(cfg.low_score) <= 1.0:
        raise UserError(f"low_score={cfg.low_score}: give a detection score between 0 and 1")
    if str(cfg.label_format) not in LABEL_FORMATS:
        raise UserError(f"label_format={cfg.label_format}: use one of {', '.join(LABEL_FORMATS)}")
    if str(cfg.on_bad_file) not in io.ON_BAD_FILE_CHOICES:
        raise UserError(f"on_bad_file={cfg.on_bad_file}: use one of {', '.join(io.ON_BAD_FILE_CHOICES)}")
    if str(cfg.device) not in DEVICES:
        raise UserError(f"device={cfg.device}: use one of {', '.join(DEVICES)}")
    try:
        check_transforms(list(cfg.tta_transforms))
    except ValueError as error:
        raise UserError(f"tta_transforms: {error}") from error
    tile_params(cfg)
    if output is not None:  # last: it probes the output folder
        output_folder.check_output(
            output,
            {
                "input folder": source,
                "ground_truth folder": truth,
                "model folder": None if bundle is None else bundle.folder,
            },
            ignore=(HYDRA_FOLDER,),
        )


def postprocess_refiner(bundle: Bundle | None, enabled: bool, device: str) -> Refiner | None:
    """Post-processing hook: the bundle's contour refiner, or None (a no-op) when ``postprocess=false`` or when
    the bundle has no post-processing section.

    The section is ``{"ensemble": FILE in the bundle, "params": {p1..p6}}`` (nucleaizer.postprocess).
    """
    if not enabled or bundle is None or bundle.postprocess is None:
        return None
    spec = bundle.postprocess
    if "ensemble" not in spec:
        raise UserError(
            f"{bundle.folder}: the 'postprocess' section needs 'ensemble' (the U-Net file); "
            "rebuild the bundle or run with postprocess=false"
        )
    try:
        from nucleaizer.postprocess.refiner import load_refiner
    except ImportError as error:
        raise UserError(
            f"this installation cannot apply the bundle's post-processing ({error}); "
            "run with postprocess=false"
        ) from error
    return load_refiner(bundle.path(spec["ensemble"]), spec.get("params"), device)


def build_segmenter(cfg: DictConfig) -> tuple[NucleusSegmenter, Bundle | None]:
    """The NucleusSegmenter the config describes (bundle or classical baseline) and the bundle (None if classical)."""
    tiles = tile_params(cfg)
    transforms = tuple(cfg.tta_transforms) if cfg.tta else ()
    if str(cfg.model) == CLASSICAL:
        predictor = ClassicalPredictor(**OmegaConf.to_container(cfg.classical))
        size = SizeRule.from_config(OmegaConf.to_container(cfg.classical_size))
        return NucleusSegmenter(predictor, None, size, tiles, transforms), None
    bundle = read_bundle(model_folder(cfg.model))
    device = resolve_device(str(cfg.device))
    predictor, preseg = load_predictors(bundle, device, int(cfg.batch_size), float(cfg.mask_threshold))
    refine = postprocess_refiner(bundle, bool(cfg.postprocess), device)
    # a model measures the size where the classical guess brings the nuclei to about its working size
    guess = ClassicalPredictor() if bundle.size_estimation == "model" else None
    return NucleusSegmenter(predictor, preseg, bundle.size, tiles, transforms, refine, guess), bundle
