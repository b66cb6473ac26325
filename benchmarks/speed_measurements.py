"""The speed measurements: inference, segmenter and pix2pix training, the genetic algorithm, and the demo's
stage times (benchmarks/speed.py runs each in its own process)."""

from __future__ import annotations

import datetime
import json
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from benchmarks.speed_setup import (
    ROOT,
    compose,
    container,
    describe_images,
    load_images,
    size_rule,
    step_timer,
    synchronize,
    trainer_settings,
)
from nucleaizer.config_files import CONF_DIR


# --- measurements (each runs in its own process from main; callable directly too) ----------------------------
def measure_inference(
    kind: str,
    images: dict,
    profile: str,
    device: str = "cpu",
    overrides: list[str] = (),
    checkpoint: str | None = None,
    seed: int = 0,
) -> dict:
    """Megapixels of original image per second through NucleusSegmenter (kind: maskrcnn | classical)."""
    import torch
    from omegaconf import OmegaConf

    from nucleaizer.baseline import ClassicalPredictor
    from nucleaizer.infer.nucleus_segmenter import NucleusSegmenter
    from nucleaizer.infer.settings import tile_params
    from nucleaizer.size import SizeRule

    cfg = compose(profile, overrides)
    infer_cfg = OmegaConf.load(CONF_DIR / "infer.yaml")
    tiles = tile_params(infer_cfg)
    config = {"profile": profile, "overrides": list(overrides), "tiles": vars(tiles)}
    precision = None
    if kind == "classical":
        device = "cpu"  # the baseline is numpy / scikit-image
        predictor = ClassicalPredictor(**container(infer_cfg.classical))
        rule = SizeRule.from_config(container(infer_cfg.classical_size))
        name, notes = (
            "inference: classical baseline",
            "Otsu + watershed (nucleaizer.baseline), infer.py model=classical",
        )
    else:
        from nucleaizer.maskrcnn_arch import MaskRCNNArch
        from nucleaizer.segmenter import MaskRCNNPredictor, build_maskrcnn, load_segmenter

        rule = size_rule(cfg)
        if checkpoint:
            model, arch = load_segmenter(checkpoint, device=device)
            state = f"trained checkpoint {checkpoint}"
        else:
            torch.manual_seed(seed)
            arch = MaskRCNNArch.from_config(container(cfg.segmenter.arch))
            model = build_maskrcnn(arch)
            state = f"untrained {cfg.segmenter.name} (throughput only; detections are random)"
        predictor = MaskRCNNPredictor(
            model, device=device, batch_size=tiles.batch_size, mask_threshold=float(infer_cfg.mask_threshold)
        )
        config["backbone"], precision = arch.backbone, "32-true"
        name, notes = f"inference: Mask R-CNN {arch.backbone}", state
    segmenter = NucleusSegmenter(predictor, size=rule, tiles=tiles)
    loaded = load_images(images)
    # warm-up: lazy imports and initialisation, the CUDA context
    segmenter.segment(loaded[0][1][:128, :128], diameter_px=rule.target_diameter_px)
    synchronize(device)
    rows = []
    for image_name, image, labels in loaded:
        diameter = rule.diameter_of(labels) or rule.target_diameter_px
        started = time.perf_counter()
        result = segmenter.segment(image, diameter_px=diameter)
        synchronize(device)
        rows.append(
            {
                "image": image_name,
                "megapixels": image.shape[0] * image.shape[1] / 1e6,
                "scale": round(rule.scale_for(diameter), 3),
                "seconds": round(time.perf_counter() - started, 3),
                "nuclei": int(result.max()),
            }
        )
    megapixels = sum(r["megapixels"] for r in rows)
    seconds = sum(r["seconds"] for r in rows)
    return {
        "name": name,
        "value": megapixels / seconds,
        "unit": "MP/s",
        "device": device,
        "precision": precision,
        "config": config,
        "data": describe_images(images, loaded),
        "notes": f"{notes}; {seconds:.1f} s, {sum(r['nuclei'] for r in rows)} nuclei found; scale from the "
        "annotated diameter (no estimation pass)",
        "details": {"images": rows},
    }


def measure_segmenter_training(
    images: dict,
    profile: str,
    device: str = "cpu",
    overrides: list[str] = (),
    warmup: int = 2,
    steps: int = 5,
    seed: int = 0,
) -> dict:
    """Training steps per second of the Mask R-CNN LightningModule with the profile's segmenter config."""
    import pytorch_lightning as pl

    from nucleaizer.augment import AugmentParams
    from nucleaizer.data import CropDataset, ValidationDataset, load_pairs
    from nucleaizer.maskrcnn_arch import MaskRCNNArch
    from nucleaizer.segmenter_module import SegmenterData, SegmenterModule

    cfg = compose(profile, overrides)
    seg = {
        **container(cfg.segmenter.train),
        "name": cfg.segmenter.name,
        "arch": container(cfg.segmenter.arch),
    }
    settings = trainer_settings(cfg, device)
    num_workers = int(settings.pop("num_workers", 0))
    size_kwargs = asdict(size_rule(cfg))
    loaded = load_images(images)
    pl.seed_everything(seed, workers=True, verbose=False)
    train_set = CropDataset(
        load_pairs([(image, labels) for _, image, labels in loaded]),
        [],
        seg["crop_size"],
        AugmentParams.from_dict(seg["augment"]),
        max_crop_tries=seg["max_crop_tries"],
        **size_kwargs,
    )
    data = SegmenterData(
        train_set,
        ValidationDataset([], **size_kwargs),
        seg["batch_size"],
        warmup + steps,
        0.0,
        seed,
        num_workers,
    )
    stage = {**seg["stages"][0], "epochs": 1}
    module = SegmenterModule(
        MaskRCNNArch.from_config(seg["arch"]),
        [stage],
        seg["optimizer"],
        seg["momentum"],
        seg["weight_decay"],
        seg["warmup_steps"],
    )
    timer = step_timer(device)
    with tempfile.TemporaryDirectory() as root:
        trainer = pl.Trainer(
            default_root_dir=root,
            max_epochs=1,
            max_steps=warmup + steps,
            callbacks=[timer],
            logger=False,
            enable_checkpointing=False,
            enable_model_summary=False,
            use_distributed_sampler=False,
            num_sanity_val_steps=0,
            limit_val_batches=0,
            gradient_clip_val=seg["gradient_clip_val"],
            **settings,
        )
        trainer.fit(module, datamodule=data)
    rate = timer.rate(warmup)
    config = {
        "profile": profile,
        "overrides": list(overrides),
        "segmenter": seg["name"],
        "backbone": seg["arch"]["backbone"],
        "crop_size": seg["crop_size"],
        "batch_size": seg["batch_size"],
        "optimizer": seg["optimizer"],
        "stage": stage,
        "num_workers": num_workers,
        "untimed_warmup_steps": warmup,
    }
    return {
        "name": f"segmenter training: {seg['name']} ({seg['arch']['backbone']})",
        "value": rate["steps_per_s"],
        "unit": "steps/s",
        "device": device,
        "precision": settings["precision"],
        "config": config,
        "data": describe_images(images, loaded),
        "notes": f"batch {seg['batch_size']} x {seg['crop_size']} px crops, {seg['optimizer']}, trainable "
        f"{stage['trainable']}; {rate['timed_steps']} steps timed after {warmup} warm-up (median step "
        f"{rate['median_step_s']} s), {rate['steps_per_s'] * seg['batch_size']:.3g} crops/s",
        "details": rate,
    }


def measure_pix2pix_training(
    images: dict,
    profile: str,
    device: str = "cpu",
    overrides: list[str] = (),
    warmup: int = 2,
    steps: int = 5,
    seed: int = 0,
) -> dict:
    """Training steps (one D and one G update) per second of stylegen.train_style with the profile's config."""
    from stylegen import train_style

    cfg = compose(profile, overrides)
    train_cfg = container(cfg.stylegen.train)
    timer = step_timer(device)
    settings = trainer_settings(cfg, device) | {"callbacks": [timer]}
    loaded = load_images(images)
    keys = ("net_g", "net_d", "tile_size", "lambda_l1", "lr", "beta1", "batch_size", "flip")
    with tempfile.TemporaryDirectory() as root:
        model = train_style(
            [image for _, image, _ in loaded],
            [labels > 0 for _, _, labels in loaded],
            budget={**train_cfg["budget"], "max_steps": warmup + steps},
            seed=seed,
            trainer=settings,
            root_dir=root,
            **{key: train_cfg[key] for key in keys},
        )
    rate = timer.rate(warmup)
    record = model.train_record
    config = {
        "profile": profile,
        "overrides": list(overrides),
        "stylegen": cfg.stylegen.name,
        **{key: train_cfg[key] for key in ("tile_size", "batch_size", "net_g", "net_d")},
    }
    return {
        "name": f"pix2pix training: {cfg.stylegen.name}",
        "value": rate["steps_per_s"],
        "unit": "steps/s",
        "device": device,
        "precision": record["precision"],
        "config": config,
        "data": describe_images(images, loaded) + f", {record['n_tiles']} tiles",
        "notes": f"batch {train_cfg['batch_size']} x {train_cfg['tile_size']} px tiles, generator base "
        f"{train_cfg['net_g']['base_filters']} filters; {rate['timed_steps']} steps timed after "
        f"{warmup} warm-up (median step {rate['median_step_s']} s)",
        "details": rate | {"train_record": record},
    }


def measure_ga(
    images: dict,
    profile: str,
    overrides: list[str] = (),
    population: int = 12,
    generations: int = 4,
    workers: int | None = None,
    crop_px: int = 320,
    unet: str | None = None,
    seed: int = 0,
) -> dict:
    """Fitness evaluations per second of the genetic algorithm tuning p1..p6 (nucleaizer.postprocess.tune)."""
    from skimage.segmentation import relabel_sequential

    from nucleaizer.baseline import ClassicalPredictor
    from nucleaizer.postprocess.genetic import GASearch
    from nucleaizer.postprocess.rules import IDENTITY_PARAMS, PostprocessParams
    from nucleaizer.postprocess.tune import TuningCase, tune_parameters
    from nucleaizer.postprocess.unet import foreground_target, load_ensemble
    from nucleaizer.size import rescale_image, rescale_labels

    cfg = compose(profile, overrides)
    rule = size_rule(cfg)
    ensemble = load_ensemble(unet) if unet else None
    loaded = load_images(images)
    started = time.perf_counter()
    cases = []
    for name, image, labels in loaded:
        working = rescale_image(image, rule.scale_for(rule.diameter_of(labels) or rule.target_diameter_px))
        truth = rescale_labels(labels, working.shape[:2])
        y0, x0 = max((working.shape[0] - crop_px) // 2, 0), max((working.shape[1] - crop_px) // 2, 0)
        window = (slice(y0, y0 + crop_px), slice(x0, x0 + crop_px))
        working, truth = np.ascontiguousarray(working[window]), relabel_sequential(truth[window])[0]
        prob = ensemble.predict_probability(working) if ensemble else foreground_target(truth, 1.0)
        cases.append(TuningCase(name, truth.astype(np.int32), ClassicalPredictor().segment(working), prob))
    cases_seconds = time.perf_counter() - started
    search = GASearch.from_config(container(cfg.postprocess.ga))
    workers = search.workers if workers is None else int(workers)
    settings = search.algorithm_settings() | {
        "population": population,
        "generations": generations,
        "patience": generations,
    }
    paper = PostprocessParams.from_dict(container(cfg.postprocess.params))
    result = tune_parameters(
        cases,
        list(search.genes),
        initial=[paper.as_dict(), IDENTITY_PARAMS.as_dict()],
        workers=workers,
        progress=False,
        seed=seed,
        **settings,
    )
    history = result.history
    overall = result.evaluations / result.seconds
    # the first generation includes starting the worker processes
    steady = (
        (
            (history[-1]["evaluations"] - history[0]["evaluations"])
            / max(history[-1]["seconds"] - history[0]["seconds"], 1e-9)
        )
        if len(history) > 1
        else None
    )
    value = steady if steady else overall
    source = (
        f"U-Net ensemble {unet}" if unet else "the U-Net's training target of the ground truth (blur 1 px)"
    )
    return {
        "name": "GA evaluations (post-processing p1..p6)",
        "value": value,
        "unit": "evaluations/s",
        "device": "cpu",
        "precision": None,
        "config": {
            "profile": profile,
            "overrides": list(overrides),
            "workers": workers,
            "crop_px": crop_px,
            **settings,
        },
        "data": describe_images(images, loaded) + f", {crop_px} px windows at the working scale",
        "notes": f"one evaluation = mean DSB over {len(cases)} images; {workers} worker processes; population "
        f"{population}, {len(history)} generations; after the first generation (pool start): "
        f"{value * len(cases):.3g} image evaluations/s; raw = classical, P = {source}",
        "details": {
            "evaluations": result.evaluations,
            "seconds": round(result.seconds, 3),
            "evaluations_per_s_overall": overall,
            "evaluations_per_s_after_first_generation": steady,
            "images_per_evaluation": len(cases),
            "cases_seconds": round(cases_seconds, 3),
            "best_fitness": result.best_fitness,
        },
    }


MEASUREMENTS = {
    "inference": measure_inference,
    "segmenter_training": measure_segmenter_training,
    "pix2pix_training": measure_pix2pix_training,
    "ga": measure_ga,
}


def demo_timings(path: Path) -> dict:
    """Stage timings and total of a finished demo run (report.json written by nucleaizer.pipeline)."""
    shown = str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)
    if not path.is_file():
        return {"measured": False, "report": shown}
    report = json.loads(path.read_text())
    modified = datetime.datetime.fromtimestamp(path.stat().st_mtime).isoformat(timespec="seconds")
    return {
        "measured": True,
        "report": shown,
        "report_written": modified,
        "profile": report.get("profile"),
        "style": report.get("style"),
        "total_seconds": report.get("total_seconds"),
        "stages": {name: round(stage["seconds"], 1) for name, stage in report.get("stages", {}).items()},
        "scores": report.get("scores", {}),
    }
