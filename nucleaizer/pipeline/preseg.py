"""Stage ``preseg``: train (or take) the pre-segmentation Mask R-CNN and pre-segment every target image.

Its outputs: ``labels/<image>.png`` (the target's pre-segmentation, read by ``labels_folder``) and, when it
trains one, ``preseg.pt`` (the model every later stage starts from, found by ``checkpoint``).
"""

from __future__ import annotations

from pathlib import Path

from nucleaizer.models import segmenter_file
from nucleaizer.pipeline.common import (
    fit_kwargs,
    segment_folder,
    source_samples,
    split_train_val,
    target_samples,
    write_segmentations,
)
from nucleaizer.pipeline.context import Context, Stage
from nucleaizer.run_folder import RunFolder

NAME = "preseg"
TRAINED_FILE = "preseg.pt"


def labels_folder(run: RunFolder) -> Path:
    """The target images' pre-segmentation, one label image per target image."""
    return run.path(NAME) / "labels"


def checkpoint(ctx: Context) -> Path:
    """The preseg model's .pt: the one preseg.checkpoint names (shipped, bundle or file), else the one trained."""
    if ctx.cfg.preseg.checkpoint:
        return segmenter_file(ctx.cfg.preseg.checkpoint)
    return ctx.run.path(NAME) / TRAINED_FILE


def run(ctx: Context, out: Path, summary: dict) -> None:
    from nucleaizer.segmenter import fit_segmenter

    cfg = ctx.cfg
    if cfg.preseg.checkpoint:
        model = checkpoint(ctx)
        summary["trained"] = False
    else:
        train, val = split_train_val(cfg, source_samples(cfg))
        kwargs = fit_kwargs(cfg)
        kwargs["augment"] = {**kwargs.get("augment", {}), "rescale": cfg.preseg.rescale_jitter}
        model = fit_segmenter(train, val, out, checkpoint_name=TRAINED_FILE, **kwargs)
        summary.update(trained=True, train_images=len(train), val_images=len(val))
    samples = target_samples(cfg)
    if cfg.preseg.method == "classical":
        from nucleaizer.baseline import segment_classical

        labels = write_segmentations(
            cfg, samples, out / "labels", lambda _, image: segment_classical(image), "segmenting classically"
        )
    else:
        labels = segment_folder(
            cfg,
            model,
            samples,
            out / "labels",
            diameters={s.name: cfg.size.diameter_px for s in samples} if cfg.size.diameter_px else None,
            score_threshold=cfg.preseg.score_thresh,
            tta=cfg.preseg.tta,
        )
    summary.update(
        method=cfg.preseg.method, images=len(labels), objects=int(sum(lab.max() for lab in labels.values()))
    )


STAGE = Stage(
    NAME,
    "train (or take) the generic pre-segmentation Mask R-CNN and pre-segment the target images [1]",
    ("preseg", "train", "segmenter", "size", "trainer", "seed", "target.images"),
    run,
)
