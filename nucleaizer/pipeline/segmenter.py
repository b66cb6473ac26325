"""Stage ``segmenter``: fine-tune Mask R-CNN from the pre-segmentation model on the annotated source plus,
for a style variant, the synthetic pairs; segment the target with it and score it on target.labels if given,
beside the pre-segmentation itself (what the start model, or the classical method, found before any fine-tuning).

Its outputs per variant (style, then those of ``compare``): ``<variant>.pt`` (found by ``checkpoint``),
``<variant>/labels/`` (the target's segmentation) and ``<variant>/`` training logs. A variant whose model
is written is not trained again when an interrupted run resumes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from nucleaizer import io
from nucleaizer.pipeline import preseg, sizes, synthetic
from nucleaizer.pipeline.common import (
    fit_kwargs,
    segment_folder,
    source_samples,
    split_train_val,
    target_samples,
)
from nucleaizer.pipeline.context import Context, Stage
from nucleaizer.pipeline.report import STYLE_NAMES
from nucleaizer.run_folder import RunFolder

NAME = "segmenter"
OVERLAYS_LOGGED = 4  # target images whose segmentation overlay goes to W&B per variant


def checkpoint(run: RunFolder, variant: str) -> Path:
    """The fine-tuned model of a variant (none | auto | gt)."""
    return run.path(NAME) / f"{variant}.pt"


def variants(cfg: DictConfig) -> list[str]:
    """The style variant of the model to ship first, then those trained only for comparison."""
    return list(dict.fromkeys([cfg.style, *cfg.get("compare", [])]))


def score_target(ctx: Context, predictions: dict[str, np.ndarray]) -> dict | None:
    """Summary scores of predicted target labels against target.labels (None when there are none)."""
    from nucleaizer.metrics import score_image, summarize

    labels_dir = ctx.cfg.target.get("labels")
    if not labels_dir:
        return None
    truth = io.files_by_stem(Path(labels_dir), io.LABEL_SUFFIXES)
    per_image = [
        score_image(io.read_labels(truth[name]), labels)
        for name, labels in predictions.items()
        if name in truth
    ]
    return {k: v for k, v in summarize(per_image).items() if not isinstance(v, dict)}


def log_overlays(ctx: Context, key: str, predictions: dict[str, np.ndarray]) -> None:
    """Colour overlays of the first few segmented target images, to the tracker."""
    from nucleaizer.infer.nucleus_segmenter import as_rgb8
    from nucleaizer.infer.overlay import overlay

    if not ctx.tracker.enabled:
        return
    images = io.files_by_stem(Path(ctx.cfg.target.images), io.IMAGE_SUFFIXES)
    ctx.tracker.log_images(
        key,
        {
            name: overlay(as_rgb8(io.read_image(images[name])), labels)
            for name, labels in list(predictions.items())[:OVERLAYS_LOGGED]
        },
    )


def run(ctx: Context, out: Path, summary: dict) -> None:
    from nucleaizer.segmenter import fit_segmenter

    cfg = ctx.cfg
    train, val = split_train_val(cfg, source_samples(cfg))
    diameters = sizes.read_diameters(ctx.run)
    scores = {}
    for variant in variants(cfg):
        model = out / f"{variant}.pt"
        kwargs = fit_kwargs(cfg, stages_key="finetune_stages")
        if variant != "none":
            kwargs["synthetic_samples"] = synthetic.samples(ctx.run)
            kwargs["synthetic_share"] = cfg.segmenter.train.synthetic_share
        if not model.exists():  # finished before an interruption otherwise
            fit_segmenter(
                train,
                val,
                out / variant,
                init_checkpoint=preseg.checkpoint(ctx),
                checkpoint_name="model.pt",
                **kwargs,
            )
            (out / variant / "model.pt").replace(model)
        predictions = segment_folder(cfg, model, target_samples(cfg), out / variant / "labels", diameters)
        log_overlays(ctx, f"segmenter/{variant}_overlays", predictions)
        scored = score_target(ctx, predictions)
        if scored is not None:
            scores[STYLE_NAMES[variant]] = scored
    summary.update(variants=variants(cfg), scores=scores)
    if scores:  # there are target labels: score the pre-segmentation beside the variants
        presegmented = {
            name: io.read_labels(path)
            for name, path in io.files_by_stem(preseg.labels_folder(ctx.run), io.LABEL_SUFFIXES).items()
        }
        summary["preseg_scores"] = score_target(ctx, presegmented)


STAGE = Stage(
    NAME,
    "fine-tune Mask R-CNN on annotated plus synthetic pairs [5]",
    ("segmenter", "train", "trainer", "compare"),
    run,
)
