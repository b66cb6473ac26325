"""The adaptation pipeline: the stages train.py runs, in order, each reading and writing the run folder.

Each stage lives in its own module of this package (its name, what it does, the settings it depends on, its
run function and the readers of its outputs); ``STAGES`` lists them in order. A stage is skipped when it
finished with the same configuration and the same upstream stages (see run_folder.py).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from nucleaizer import output_folder
from nucleaizer.config_files import HYDRA_FOLDER
from nucleaizer.errors import UserError
from nucleaizer.pipeline import (
    bundle,
    masks,
    postprocess,
    preseg,
    segmenter,
    sizes,
    stylegen,
    styles,
    synthetic,
)
from nucleaizer.pipeline.context import Context, Stage, StageFunction
from nucleaizer.pipeline.inputs import prepare_inputs
from nucleaizer.pipeline.report import STYLE_NAMES, one_line, write_report
from nucleaizer.run_folder import RunFolder, fingerprint
from nucleaizer.tracking import Tracker

log = logging.getLogger(__name__)

STAGES: dict[str, Stage] = {
    module.STAGE.name: module.STAGE
    for module in (preseg, sizes, styles, stylegen, masks, synthetic, segmenter, postprocess, bundle)
}
STYLE_VARIANTS = tuple(STYLE_NAMES)
TARGETS_HINT = "+target=demo, or +target=new_experiment target.images=DIR"
PRESEG_METHODS = ("model", "classical")
# stages that read train.datasets even when the preseg model is given (masks: unless masks.database is set)
SOURCE_STAGES = ("masks", "segmenter", "postprocess")


def validate_config(cfg: DictConfig) -> None:
    """Check a train configuration before anything runs; raise UserError naming the key to fix."""
    if OmegaConf.select(cfg, "target") is None:
        raise UserError(f"no target experiment chosen: add {TARGETS_HINT}")
    if cfg.preseg.method not in PRESEG_METHODS:
        raise UserError(f"preseg.method={cfg.preseg.method} is not one of {list(PRESEG_METHODS)}")
    unknown = [stage for stage in cfg.stages if stage not in STAGES]
    if unknown:
        raise UserError(f"stages: unknown stage(s) {unknown}; known stages are {list(STAGES)}")
    variants = [cfg.style, *cfg.get("compare", [])]
    for variant in variants:
        if variant not in STYLE_VARIANTS:
            raise UserError(f"style={variant} is not one of {list(STYLE_VARIANTS)}")
    if any(v not in ("none", cfg.style) for v in cfg.get("compare", [])):
        raise UserError(
            f"compare={list(cfg.compare)}: only style=none can be trained beside style={cfg.style}"
        )
    if "gt" in variants and OmegaConf.select(cfg, "target.labels") is None:
        raise UserError("style=gt learns styles from target labels: set target.labels=DIR or use style=auto")
    if isinstance(cfg.train.datasets, str):  # one folder given as a plain path
        cfg.train.datasets = [cfg.train.datasets]
    check_run_dir(cfg)
    needs_source = [s for s in cfg.stages if s in SOURCE_STAGES and not (s == "masks" and cfg.masks.database)]
    # a missing target.images is reported first, where it is read
    if not cfg.train.datasets and needs_source and not OmegaConf.is_missing(cfg.target, "images"):
        raise UserError(
            f"stage(s) {needs_source} need annotated source data (fine-tuning keeps it in every batch; the "
            "masks stage builds its nucleus shape database from it): give train.datasets=[DIR,...] "
            "(folders of images/ + labels/, or the DSB layout)"
        )


def check_run_dir(cfg: DictConfig) -> None:
    """The run folder may not be, lie in or hold an input, and may not hold files nucleaizer did not write
    (nucleaizer.output_folder). The demo's simulated data are made by the run itself inside its folder."""
    inputs = {
        key: OmegaConf.select(cfg, key, default=None)
        for key in (
            "target.images",
            "target.labels",
            "preseg.checkpoint",
            "segmenter.arch.weights",
            "segmenter.arch.backbone_weights",
        )
    }
    inputs.update({f"train.datasets[{i}]": folder for i, folder in enumerate(cfg.train.datasets)})
    own = Path(cfg.run_dir) / "demo_data" if OmegaConf.select(cfg, "target.demo") is not None else None
    output_folder.check_output(cfg.run_dir, inputs, own_inputs=own, ignore=(HYDRA_FOLDER,))


def active_stages(cfg: DictConfig) -> list[str]:
    """The stages of the pipeline for this configuration, in order (style stages only when needed)."""
    uses_styles = any(v != "none" for v in [cfg.style, *cfg.get("compare", [])])
    return [name for name, stage in STAGES.items() if uses_styles or not stage.uses_styles]


def stage_settings(cfg: DictConfig, stage: str) -> dict:
    """The resolved configuration values a stage depends on."""
    values = {key: OmegaConf.select(cfg, key) for key in STAGES[stage].settings}
    return {
        key: OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
        for key, value in values.items()
    }


def run(cfg: DictConfig, stage_functions: dict[str, StageFunction] | None = None) -> dict:
    """Run the pipeline for ``cfg`` (composed from conf/train.yaml); returns the report dictionary.

    stage_functions: name -> function replacing the stages' own (tests of the orchestration).
    """
    validate_config(cfg)
    functions = {name: stage.run for name, stage in STAGES.items()} | (stage_functions or {})
    output_folder.claim(cfg.run_dir, "train")
    prepare_inputs(cfg)
    run_folder = RunFolder(cfg.run_dir)
    tracker = Tracker(
        cfg.run_dir,
        name=cfg.target.name,
        mode=cfg.logger.mode,
        project=cfg.logger.get("project", "nucleaizer"),
        entity=cfg.logger.get("entity"),
        config=OmegaConf.to_container(cfg, resolve=True),
    )
    ctx = Context(cfg=cfg, run=run_folder, tracker=tracker)
    planned = active_stages(cfg)
    chosen = [i for i, stage in enumerate(planned) if stage in cfg.stages]
    # stages after the last chosen one are not needed; earlier ones must be done (or chosen)
    planned = planned[: chosen[-1] + 1] if chosen else []
    log.info("run folder: %s; stages: %s", cfg.run_dir, ", ".join(planned))
    upstream = ""
    try:
        for stage in planned:
            stage_fingerprint = fingerprint(stage_settings(cfg, stage), upstream)
            upstream = stage_fingerprint
            if run_folder.is_done(stage, stage_fingerprint) and not (cfg.force and stage in cfg.stages):
                record = run_folder.record(stage)
                log.info(
                    "%-12s done already (%.0f s): %s", stage, record["seconds"], one_line(record["summary"])
                )
                continue
            if stage not in cfg.stages:
                raise UserError(
                    f"stage '{stage}' has not run with this configuration and is not in stages=; "
                    f"add it to stages=[...] or run the whole pipeline"
                )
            log.info("%-12s running: %s", stage, STAGES[stage].does)
            started = time.perf_counter()
            with run_folder.stage(stage, stage_fingerprint) as (out, summary):
                functions[stage](ctx, out, summary)
            seconds = time.perf_counter() - started
            log.info("%-12s finished in %.0f s: %s", stage, seconds, one_line(summary))
            tracker.log_stage(stage, summary, seconds)
        report = write_report(ctx, active_stages(cfg))
    finally:
        tracker.finish()
    return report
