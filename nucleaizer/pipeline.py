"""The adaptation pipeline: the stages train.py runs, in order, each reading and writing the run folder.

Each stage is a function ``(ctx, out, summary)`` that writes its results into ``out`` (a partial folder that
becomes ``<run_dir>/<stage>`` when it returns) and fills ``summary`` with its one-line figures. Stages are
skipped when finished with the same configuration (see run_folder.py).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from nucleaizer import output_folder
from nucleaizer.config_files import HYDRA_FOLDER
from nucleaizer.errors import UserError
from nucleaizer.run_folder import RunFolder, fingerprint
from nucleaizer.tracking import Tracker

log = logging.getLogger(__name__)

# name -> what the stage does (docs/method.md sections in brackets)
STAGES: dict[str, str] = {
    "preseg": "train (or take) the generic pre-segmentation Mask R-CNN and pre-segment the target images [1]",
    "sizes": "estimate the nucleus diameter of every target image and its scale factor to 40 px [1]",
    "styles": "cluster the target images into visual styles [2]",
    "stylegen": "train one pix2pix mask-to-image model per style [3]",
    "masks": "compose synthetic label images per style from real and simulated nucleus shapes [4]",
    "synthetic": "render the synthetic masks into images of each style [3, 4]",
    "segmenter": "fine-tune Mask R-CNN on annotated plus synthetic pairs [5]",
    "postprocess": "train the U-Net ensemble and tune contour correction with a genetic algorithm [7]",
    "bundle": "write the model folder infer.py loads [6]",
}
STYLE_STAGES = ("styles", "stylegen", "masks", "synthetic")
STYLE_VARIANTS = ("none", "auto", "gt")
TARGETS_HINT = "+target=demo, or +target=new_experiment target.images=DIR"

# the configuration sections each stage depends on (beside everything upstream of it)
STAGE_SETTINGS: dict[str, tuple[str, ...]] = {
    "preseg": ("preseg", "train", "segmenter", "size", "trainer", "seed", "target.images"),
    "sizes": ("size",),
    "styles": ("styles", "style", "target.labels"),
    "stylegen": ("stylegen", "trainer"),
    "masks": ("masks",),
    "synthetic": (),
    "segmenter": ("segmenter", "train", "trainer", "compare"),
    "postprocess": ("postprocess", "trainer"),
    "bundle": (),
}


@dataclass
class Context:
    """What every stage gets: the configuration, the run folder and the tracker."""

    cfg: DictConfig
    run: RunFolder
    tracker: Tracker


StageFunction = Callable[[Context, Path, dict], None]


PRESEG_METHODS = ("model", "classical")


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


def check_run_dir(cfg: DictConfig) -> None:
    """The run folder may not be, lie in or hold an input, and may not hold files nucleaizer did not write
    (nucleaizer.output_folder). The demo's simulated data are made by the run itself inside its folder."""
    inputs = {
        key: OmegaConf.select(cfg, key, default=None)
        for key in (
            "target.images",
            "target.labels",
            "preseg.checkpoint",
            "segmenter.weights",
            "segmenter.backbone_weights",
        )
    }
    inputs.update({f"train.datasets[{i}]": folder for i, folder in enumerate(cfg.train.datasets)})
    own = Path(cfg.run_dir) / "demo_data" if OmegaConf.select(cfg, "target.demo") is not None else None
    output_folder.check_output(cfg.run_dir, inputs, own_inputs=own, ignore=(HYDRA_FOLDER,))


def active_stages(cfg: DictConfig) -> list[str]:
    """The stages of the pipeline for this configuration, in order (style stages only when needed)."""
    uses_styles = any(v != "none" for v in [cfg.style, *cfg.get("compare", [])])
    return [stage for stage in STAGES if uses_styles or stage not in STYLE_STAGES]


def stage_settings(cfg: DictConfig, stage: str) -> dict:
    """The resolved configuration values a stage depends on."""
    values = {key: OmegaConf.select(cfg, key) for key in STAGE_SETTINGS[stage]}
    return {
        key: OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
        for key, value in values.items()
    }


def run(cfg: DictConfig, stage_functions: dict[str, StageFunction] | None = None) -> dict:
    """Run the pipeline for ``cfg`` (composed from conf/train.yaml); returns the report dictionary."""
    from nucleaizer import stages as stage_module

    validate_config(cfg)
    functions = stage_functions or stage_module.STAGE_FUNCTIONS
    output_folder.claim(cfg.run_dir, "train")
    stage_module.prepare_inputs(cfg)
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
                    "%-12s done already (%.0f s): %s", stage, record["seconds"], _one_line(record["summary"])
                )
                continue
            if stage not in cfg.stages:
                raise UserError(
                    f"stage '{stage}' has not run with this configuration and is not in stages=; "
                    f"add it to stages=[...] or run the whole pipeline"
                )
            log.info("%-12s running: %s", stage, STAGES[stage])
            started = time.perf_counter()
            with run_folder.stage(stage, stage_fingerprint) as (out, summary):
                functions[stage](ctx, out, summary)
            seconds = time.perf_counter() - started
            log.info("%-12s finished in %.0f s: %s", stage, seconds, _one_line(summary))
            tracker.log_stage(stage, summary, seconds)
        report = write_report(ctx)
    finally:
        tracker.finish()
    return report


def _one_line(summary: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in summary.items() if not isinstance(v, (dict, list))) or "-"


def write_report(ctx: Context) -> dict:
    """``report.json`` and ``report.md`` in the run folder from the stage records; logs the scores."""
    from nucleaizer.io import atomic_write

    stages = {}
    for stage in active_stages(ctx.cfg):
        record = ctx.run.record(stage)
        if record is not None:
            stages[stage] = {"seconds": record["seconds"], "summary": record["summary"]}
    scores = stages.get("segmenter", {}).get("summary", {}).get("scores", {})
    report = {
        "target": ctx.cfg.target.name,
        "style": ctx.cfg.style,
        "profile": ctx.cfg.profile,
        "stages": stages,
        "scores": scores,
        "total_seconds": round(sum(s["seconds"] for s in stages.values()), 1),
    }
    with atomic_write(ctx.run.root / "report.json") as tmp:
        tmp.write_text(json.dumps(report, indent=2, default=str))
    lines = [
        f"# Run report: {report['target']}",
        "",
        f"style={report['style']}, profile={report['profile']}, total {report['total_seconds']} s",
        "",
        "| stage | seconds | summary |",
        "| --- | --- | --- |",
    ]
    lines += [f"| {name} | {s['seconds']:.0f} | {_one_line(s['summary'])} |" for name, s in stages.items()]
    if scores:
        lines += [
            "",
            "## Scores on the target labels",
            "",
            "| variant | DSB | mAP | mF1 |",
            "| --- | --- | --- | --- |",
        ]
        lines += [
            f"| {variant} | {s['dsb']:.3f} | {s['map']:.3f} | {s['mf1']:.3f} |"
            for variant, s in scores.items()
        ]
        for variant, s in scores.items():
            log.info("target DSB score, %s: %.3f", variant, s["dsb"])
    with atomic_write(ctx.run.root / "report.md") as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    return report
