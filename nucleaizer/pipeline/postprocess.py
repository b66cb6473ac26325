"""Stage ``postprocess``: train the U-Net ensemble and tune the contour correction p1..p6 with a genetic
algorithm on held-out annotated images (nucleaizer.postprocess).

Its outputs: the ensemble, ``best_params.json``, ``ga_history.csv/.png`` and ``report.json``; the stage's
summary holds the bundle's post-processing section (read by ``bundle_section``). postprocess.enabled=false
skips it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from nucleaizer import io, size
from nucleaizer.pipeline import segmenter, synthetic
from nucleaizer.pipeline.common import (
    device_of,
    plain,
    read_csv,
    size_rule,
    source_samples,
    split_train_val,
    trainer_settings,
)
from nucleaizer.pipeline.context import Context, Stage
from nucleaizer.run_folder import RunFolder

NAME = "postprocess"


def bundle_section(run: RunFolder) -> dict | None:
    """The bundle's post-processing section ({"ensemble", "params"}), None when the stage was disabled."""
    record = run.record(NAME) or {}
    return record.get("summary", {}).get("bundle_section")


def working_scale_source(cfg: DictConfig, samples: list[io.Sample]):
    """(name, image, labels, truth) of annotated samples rescaled so their nuclei are at the working scale
    (truth: the labels at the original scale)."""
    rule = size_rule(cfg)
    for sample, image, labels in io.iter_samples(samples, on_bad_file=cfg.train.on_bad_file):
        diameter = rule.diameter_of(labels)
        scale = rule.scale_for(diameter) if diameter else 1.0
        yield sample.name, size.rescale_image(image, scale), size.rescale_labels(labels, scale), labels


def run(ctx: Context, out: Path, summary: dict) -> None:
    from nucleaizer.infer.nucleus_segmenter import NucleusSegmenter
    from nucleaizer.maskrcnn_predictor import MaskRCNNPredictor
    from nucleaizer.postprocess.genetic import GASearch
    from nucleaizer.postprocess.stage import fit_postprocess

    cfg = ctx.cfg
    pp = cfg.postprocess
    if not pp.enabled:
        summary["enabled"] = False
        return
    train, val = split_train_val(cfg, source_samples(cfg))
    train_pairs = [(image, labels) for _, image, labels, _ in working_scale_source(cfg, train)]
    if cfg.style != "none":
        train_pairs += [(image, labels) for _, image, labels in io.iter_samples(synthetic.samples(ctx.run))]
    val_items = [(name, image, truth) for name, image, _, truth in working_scale_source(cfg, val)]
    predictor = MaskRCNNPredictor.from_file(segmenter.checkpoint(ctx.run, cfg.style), device=device_of(cfg))
    model = NucleusSegmenter(predictor, size=size_rule(cfg))

    def segment_working_scale(image: np.ndarray) -> np.ndarray:
        return model.predict_working_scale(image)[0]

    section = fit_postprocess(
        train_pairs,
        val_items,
        segment_working_scale,
        out,
        unet=plain(pp.unet),
        ga=GASearch.from_config(plain(pp.ga)),
        params=plain(pp.params),
        trainer=trainer_settings(cfg),
        seed=cfg.seed,
    )
    history = [{k: float(v) for k, v in row.items()} for row in read_csv(out / "ga_history.csv")]
    ctx.tracker.log_table("postprocess/ga_history", history)
    ctx.tracker.log_images(
        "postprocess/ga_curve", {"DSB per generation": io.read_image(out / "ga_history.png")}
    )
    summary.update(enabled=True, bundle_section=section, ga_generations=len(history))


STAGE = Stage(
    NAME,
    "train the U-Net ensemble and tune contour correction with a genetic algorithm [7]",
    ("postprocess", "trainer"),
    run,
)
