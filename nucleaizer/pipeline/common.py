"""Helpers several stages share: the configuration as plain arguments, the annotated and target samples, and
segmenting a folder with a checkpoint."""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from nucleaizer import io
from nucleaizer.size import SizeRule


def plain(node) -> dict:
    """A config node as plain Python containers (classes take plain arguments, never the config)."""
    return OmegaConf.to_container(node, resolve=True)


def trainer_settings(cfg: DictConfig) -> dict:
    """The Lightning settings every trained model gets (conf/trainer/*.yaml) as a plain dict."""
    return plain(cfg.trainer)


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def source_samples(cfg: DictConfig) -> list[io.Sample]:
    """Every annotated sample of train.datasets."""
    return [s for folder in cfg.train.datasets for s in io.list_samples(folder, require_labels=True)]


def target_samples(cfg: DictConfig) -> list[io.Sample]:
    return io.list_samples(cfg.target.images)


def size_rule(cfg: DictConfig) -> SizeRule:
    """The size rule of the ``size`` section (``diameter_px``, the user's own estimate, is not part of it)."""
    return SizeRule.from_config(plain(cfg.size), ignore=("diameter_px",))


def device_of(cfg: DictConfig) -> str:
    """Where a stage predicts: the GPU when the trainer may use one and one is visible, else the CPU."""
    from nucleaizer.devices import resolve_device

    return resolve_device("auto") if cfg.trainer.accelerator in ("gpu", "cuda", "auto") else "cpu"


def fit_kwargs(cfg: DictConfig, stages_key: str = "stages") -> dict:
    """fit_segmenter keyword arguments from the segmenter and size configuration."""
    from nucleaizer.segmenter import training_kwargs_from_config

    kwargs = training_kwargs_from_config(plain(cfg.segmenter))
    kwargs["stages"] = plain(cfg.segmenter.train[stages_key])
    kwargs["synthetic_share"] = 0.0  # the segmenter stage sets it for variants that have synthetic pairs
    trainer = trainer_settings(cfg)
    if cfg.segmenter.train.get("precision") is not None:  # the segmenter's own (e.g. auto: bf16 where native)
        trainer["precision"] = cfg.segmenter.train.precision
    kwargs.update(asdict(size_rule(cfg)), trainer=trainer, seed=cfg.seed)
    return kwargs


def split_train_val(cfg: DictConfig, samples: list[io.Sample]) -> tuple[list[io.Sample], list[io.Sample]]:
    """The segmenter's fixed split by hash of the sample name (segmenter.train.val_fraction, max_val_images)."""
    from nucleaizer.segmenter import split_train_val as split

    return split(samples, cfg.segmenter.train.val_fraction, cfg.segmenter.train.max_val_images)


def segment_folder(
    cfg: DictConfig,
    checkpoint: Path,
    samples: list[io.Sample],
    out: Path,
    diameters: dict[str, float] | None = None,
    score_threshold: float | None = None,
    tta: bool = False,
) -> dict[str, np.ndarray]:
    """Segment ``samples`` with a segmenter checkpoint; labels go to ``out/<stem>.png`` and are returned.

    diameters: nucleus diameter per image stem; None lets the model estimate it in a first pass.
    score_threshold: the detection score threshold; None keeps the checkpoint's own.
    tta: vote over the eight flips and 90-degree rotations (nucleaizer.infer.tta).
    """
    from nucleaizer.baseline import ClassicalPredictor
    from nucleaizer.infer.nucleus_segmenter import NucleusSegmenter
    from nucleaizer.infer.tta import TRANSFORMS
    from nucleaizer.maskrcnn_predictor import MaskRCNNPredictor

    predictor = MaskRCNNPredictor.from_file(
        checkpoint, device=device_of(cfg), score_threshold=score_threshold
    )
    segmenter = NucleusSegmenter(
        predictor,
        size=size_rule(cfg),
        tta_transforms=tuple(TRANSFORMS) if tta else (),
        size_guess=ClassicalPredictor(),
    )
    return write_segmentations(
        cfg,
        samples,
        out,
        lambda name, image: segmenter.segment(image, diameter_px=(diameters or {}).get(name)),
        f"segmenting with {checkpoint.stem}",
    )


def write_segmentations(
    cfg: DictConfig,
    samples: list[io.Sample],
    out: Path,
    segment: Callable[[str, np.ndarray], np.ndarray],
    desc: str,
) -> dict[str, np.ndarray]:
    """``segment(name, image)`` of every sample, written to ``out/<stem>.png`` and returned by stem."""
    results = {}
    for sample, image, _ in tqdm(
        io.iter_samples(samples, on_bad_file=cfg.train.on_bad_file),
        total=len(samples),
        desc=desc,
        unit="image",
    ):
        results[sample.name] = segment(sample.name, image)
        io.write_labels(out / f"{sample.name}.png", results[sample.name])
    return results
