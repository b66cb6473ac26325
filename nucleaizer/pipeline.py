"""The adaptation pipeline: the stages train.py runs, in order, each reading and writing the run folder."""

from __future__ import annotations

import logging

from omegaconf import DictConfig, OmegaConf

from nucleaizer.errors import UserError

log = logging.getLogger(__name__)

# name -> what the stage does (METHOD.md sections in brackets)
STAGES: dict[str, str] = {
    "preseg": "pre-segment the target images with a robust generic Mask R-CNN (trained when none is given) [1]",
    "sizes": "estimate the nucleus diameter of every target image and its scale factor to 40 px [1]",
    "styles": "cluster the target images into visual styles [2]",
    "stylegen": "train one pix2pix mask-to-image model per style [3]",
    "masks": "compose synthetic label images per style from real and simulated nucleus shapes [4]",
    "synthetic": "render the synthetic masks into images of each style [3, 4]",
    "segmenter": "fine-tune Mask R-CNN on annotated plus synthetic pairs [5]",
    "postprocess": "train the U-Net ensemble and tune contour correction with a genetic algorithm [7]",
    "bundle": "write the model folder infer.py loads [6]",
}
STYLE_VARIANTS = ("none", "auto", "gt")
TARGETS_HINT = "+target=demo, or +target=new_experiment target.images=DIR"


def validate_config(cfg: DictConfig) -> None:
    """Check a train configuration before anything runs; raise UserError naming the key to fix."""
    if OmegaConf.select(cfg, "target") is None:
        raise UserError(f"no target experiment chosen: add {TARGETS_HINT}")
    unknown = [stage for stage in cfg.stages if stage not in STAGES]
    if unknown:
        raise UserError(f"stages: unknown stage(s) {unknown}; known stages are {list(STAGES)}")
    if cfg.style not in STYLE_VARIANTS:
        raise UserError(f"style={cfg.style} is not one of {list(STYLE_VARIANTS)}")
    if cfg.style == "gt" and OmegaConf.select(cfg, "target.labels") is None:
        raise UserError("style=gt learns styles from target labels: set target.labels=DIR or use style=auto")


def stage_plan(cfg: DictConfig) -> list[str]:
    """One line per stage that this configuration will run, in order."""
    chosen = [stage for stage in STAGES if stage in cfg.stages]
    if cfg.style == "none":
        chosen = [s for s in chosen if s not in ("styles", "stylegen", "masks", "synthetic")]
    return [f"{i + 1}. {stage:<12} {STAGES[stage]}" for i, stage in enumerate(chosen)]


def run(cfg: DictConfig) -> None:
    """Run the pipeline for ``cfg`` (composed from conf/train.yaml)."""
    validate_config(cfg)
    log.info("run folder: %s", cfg.run_dir)
    log.info("stage plan for target '%s' (style=%s, profile=%s):", cfg.target.name, cfg.style, cfg.profile)
    for line in stage_plan(cfg):
        log.info("  %s", line)
    log.info("the stages themselves are not implemented yet (issue 8): this run only shows the plan")
