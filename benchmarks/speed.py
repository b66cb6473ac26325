"""Speed benchmark: throughput and peak memory of the expensive parts, each measured in a fresh process.

    python -m benchmarks.speed [--quick] [--device cpu|cuda] [--threads N] [--checkpoint PATH] [--unet PATH]
                               [--demo-report runs/demo/report.json] [--data DIR] [--only NAME ...]

1. inference: megapixels of original image per second through ``NucleusSegmenter`` (the size rule from each
   image's annotated diameter, tiles, painting and rescaling as ``conf/infer.yaml`` sets them), Mask R-CNN
   (``--checkpoint``, else an untrained network of the profile's segmenter config: throughput only) beside
   the classical baseline, on a few dsb2018_train images (procedural ``nucleaizer.simulate`` images when the
   data is absent);
2. segmenter training steps per second: ``SegmenterModule`` on the project's crop dataset and Lightning
   trainer settings, maskrcnn_small and maskrcnn_r50, timed after warm-up steps;
3. pix2pix training steps per second: ``stylegen.train_style`` with pix2pix_small (and pix2pix on a GPU);
4. genetic-algorithm evaluations per second: ``tune_parameters`` over p1..p6 on cases of a few images at
   the working scale (classical raw segmentation; probability map from ``--unet`` or the U-Net's training
   target of the ground truth);
5. the demo's end-to-end time, read from a finished demo run's ``report.json`` (the demo is not run here).

Every measurement runs in its own Python process, so its peak memory is its own: the maximum resident set
of that process (``getrusage``) and, on a GPU, ``torch.cuda.max_memory_allocated``. Configs are the project's
Hydra config composed with ``profile=cpu`` (``--device cpu``) or ``profile=gpu`` (``--device cuda``: training
in bf16-mixed as that profile sets it; inference in float32, as ``infer.py`` runs it). Torch threads:
``--threads`` (default: all cores). Writes benchmarks/results/speed[_cuda][_quick].json and .md.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import RESULTS, describe_machine, git_commit, machine
from nucleaizer.config_files import CONF_DIR

ROOT = Path(__file__).resolve().parent.parent

DATA = ROOT.parent / "shared" / "data" / "dsb2018_train"
DEMO_REPORT = Path("runs/demo/report.json")
SIZE_KEYS = ("target_diameter_px", "min_scale", "max_scale", "min_object_area_px")
FLUORESCENCE, TISSUE, BRIGHTFIELD = (
    "gray_darkbg_fluorescence",
    "colour_brightbg_HE_like",
    "gray_brightbg_brightfield",
)


# --- configuration and data ---------------------------------------------------------------------------------
def compose(profile: str, overrides: list[str] | tuple[str, ...] = ()):
    """The project's train configuration with ``profile=PROFILE`` and further Hydra overrides."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        return hydra_compose(config_name="train", overrides=[f"profile={profile}", *overrides])


def container(node) -> Any:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(node, resolve=True)


def size_rule(cfg):
    from nucleaizer.size import SizeRule

    return SizeRule(**{key: cfg.size[key] for key in SIZE_KEYS})


def trainer_settings(cfg, device: str) -> dict:
    """Lightning settings of the profile, on one device, without progress bars (num_workers kept)."""
    settings = container(cfg.trainer)
    settings.update(
        accelerator="gpu" if device == "cuda" else "cpu",
        devices=1,
        num_nodes=1,
        strategy="auto",
        enable_progress_bar=False,
    )
    return settings


def pick_images(data: Path, per_group: dict[str, int]) -> dict:
    """Image spec: the first ``per_group[group]`` ids of each manifest group, in id order (deterministic)."""
    with open(data / "manifest.csv") as handle:
        rows = sorted(csv.DictReader(handle), key=lambda row: row["id"])
    names = [
        name
        for group, count in per_group.items()
        for name in [row["id"] for row in rows if row["group"] == group][:count]
    ]
    return {"data": str(data), "names": names}


def procedural_images(styles: list[str], size: int, diameter_px: float = 20) -> dict:
    """Image spec: procedural images of ``nucleaizer.simulate`` (one per style, seeds 0, 1, ...)."""
    return {"procedural": {"styles": list(styles), "size": int(size), "diameter_px": float(diameter_px)}}


def load_images(spec: dict) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, image uint8 (H, W, 3), labels int (H, W)) of an image spec (pick_images / procedural_images)."""
    from nucleaizer import io, simulate

    if "procedural" in spec:
        p = spec["procedural"]
        return [
            (f"{style}_{i}", *simulate.sample(style, p["size"], p["diameter_px"], seed=i))
            for i, style in enumerate(p["styles"])
        ]
    data = Path(spec["data"])
    return [
        (
            name,
            io.read_image(data / "images" / f"{name}.png"),
            io.read_labels(data / "labels" / f"{name}.png"),
        )
        for name in spec["names"]
    ]


def describe_images(spec: dict, images: list[tuple[str, np.ndarray, np.ndarray]]) -> str:
    pixels = sum(image.shape[0] * image.shape[1] for _, image, _ in images) / 1e6
    if "procedural" in spec:
        p = spec["procedural"]
        return (
            f"{len(images)} procedural image(s) ({', '.join(p['styles'])}; {p['size']} px, "
            f"nuclei {p['diameter_px']:g} px), {pixels:.2f} MP"
        )
    return f"{len(images)} dsb2018_train image(s), {pixels:.2f} MP"


def synchronize(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def step_timer(device: str):
    """A Lightning callback that records the time at the start of training and at the end of every batch."""
    from pytorch_lightning.callbacks import Callback

    class StepTimer(Callback):
        def __init__(self) -> None:
            self.marks: list[float] = []

        def _mark(self) -> None:
            synchronize(device)
            self.marks.append(time.perf_counter())

        def on_train_start(self, trainer, pl_module) -> None:
            self._mark()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            self._mark()

        def rate(self, warmup: int) -> dict:
            """Steps per second over the steps after the first ``warmup`` ones (data loading included)."""
            seconds = np.diff(self.marks)
            timed = seconds[warmup:]
            if timed.size == 0:
                raise RuntimeError(
                    f"only {seconds.size} training steps ran; need more than {warmup} warm-up steps"
                )
            return {
                "steps_per_s": float(timed.size / timed.sum()),
                "timed_steps": int(timed.size),
                "timed_seconds": round(float(timed.sum()), 3),
                "median_step_s": round(float(np.median(timed)), 3),
                "step_seconds": [round(float(s), 3) for s in seconds],
            }

    return StepTimer()


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
        rule = SizeRule(**container(infer_cfg.classical_size))
        name, notes = (
            "inference: classical baseline",
            "Otsu + watershed (nucleaizer.baseline), infer.py model=classical",
        )
    else:
        from nucleaizer.segmenter import MaskRCNNPredictor, arch_from_config, build_maskrcnn, load_segmenter

        rule = size_rule(cfg)
        if checkpoint:
            model, arch = load_segmenter(checkpoint, device=device)
            state = f"trained checkpoint {checkpoint}"
        else:
            torch.manual_seed(seed)
            arch = arch_from_config(container(cfg.segmenter))
            model = build_maskrcnn(**arch)
            state = f"untrained {cfg.segmenter.name} (throughput only; detections are random)"
        predictor = MaskRCNNPredictor(
            model, device=device, batch_size=tiles.batch_size, mask_threshold=float(infer_cfg.mask_threshold)
        )
        config["backbone"], precision = arch.get("backbone"), "32-true"
        name, notes = f"inference: Mask R-CNN {arch.get('backbone')}", state
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
    from nucleaizer.maskrcnn import arch_from_config
    from nucleaizer.segmenter_module import SegmenterData, SegmenterModule

    cfg = compose(profile, overrides)
    seg = container(cfg.segmenter)
    settings = trainer_settings(cfg, device)
    num_workers = int(settings.pop("num_workers", 0))
    size_kwargs = {key: cfg.size[key] for key in SIZE_KEYS}
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
        arch_from_config(seg),
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
        "backbone": seg["backbone"],
        "crop_size": seg["crop_size"],
        "batch_size": seg["batch_size"],
        "optimizer": seg["optimizer"],
        "stage": stage,
        "num_workers": num_workers,
        "untimed_warmup_steps": warmup,
    }
    return {
        "name": f"segmenter training: {seg['name']} ({seg['backbone']})",
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


# --- processes ----------------------------------------------------------------------------------------------
def peak_memory(device: str) -> dict:
    """Peak resident memory of this process (and of its largest child, e.g. a GA worker), peak CUDA memory."""
    peak = {
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "peak_rss_children_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1),
        "peak_cuda_mb": None,
    }
    if device == "cuda":
        import torch

        peak["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return peak


def run_measurement(kind: str, spec: dict, threads: int | None) -> dict:
    """Run one measurement in this process with ``threads`` torch threads; adds threads and peak memory."""
    if kind not in MEASUREMENTS:
        raise ValueError(f"unknown measurement {kind!r}; known: {sorted(MEASUREMENTS)}")
    import torch

    if threads:
        torch.set_num_threads(threads)
    device = spec.get("device", "cpu")
    if device == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("--device cuda but torch sees no CUDA device")
        torch.cuda.reset_peak_memory_stats()
    load = os.getloadavg()[0]
    result = MEASUREMENTS[kind](**spec)
    result.update(
        torch_threads=torch.get_num_threads(),
        load_average_1min_at_start=load,
        **peak_memory(result.get("device", device)),
    )
    if device == "cuda":
        result["gpu"] = torch.cuda.get_device_name(0)
    return result


def in_fresh_process(kind: str, spec: dict, threads: int | None, timeout_s: float) -> dict:
    """run_measurement in a new Python process; a failure becomes a row with ``error``."""
    with tempfile.TemporaryDirectory() as tmp:
        spec_path, result_path = Path(tmp) / "spec.json", Path(tmp) / "result.json"
        spec_path.write_text(json.dumps({"kind": kind, "spec": spec, "threads": threads}))
        command = [sys.executable, "-m", "benchmarks.speed", "--child", str(spec_path), str(result_path)]
        started = time.perf_counter()
        try:
            process = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout_s)
            error = None if process.returncode == 0 else (process.stderr.strip().splitlines() or ["?"])[-1]
            if error:
                print(process.stderr[-4000:], file=sys.stderr, flush=True)
        except subprocess.TimeoutExpired:
            error = f"timed out after {timeout_s:.0f} s"
        wall = round(time.perf_counter() - started, 1)
        if error is None:
            return json.loads(result_path.read_text()) | {"process_wall_s": wall}
    return {
        "name": kind,
        "value": None,
        "unit": None,
        "error": error,
        "process_wall_s": wall,
        "config": spec,
        "notes": f"failed: {error}",
    }


def child_main(spec_path: str, result_path: str) -> None:
    import logging

    logging.basicConfig(level=logging.WARNING)
    job = json.loads(Path(spec_path).read_text())
    result = run_measurement(job["kind"], job["spec"], job["threads"])
    Path(result_path).write_text(json.dumps(result, default=float))


# --- the plan, the report ------------------------------------------------------------------------------------
def plan(args: argparse.Namespace) -> list[tuple[str, str, dict, float]]:
    """(key, kind, spec, timeout s) of every measurement of this run."""
    cuda, quick = args.device == "cuda", args.quick
    profile = "gpu" if cuda else "cpu"
    real = args.data.is_dir()

    def images(per_group: dict[str, int], styles: list[str], size: int) -> dict:
        return pick_images(args.data, per_group) if real else procedural_images(styles, size)

    inference_images = images(
        {FLUORESCENCE: 1} if quick else {FLUORESCENCE: 2, TISSUE: 2, BRIGHTFIELD: 2},
        ["fluorescence"] if quick else ["fluorescence", "he", "brightfield"],
        512,
    )
    training_images = images(
        {FLUORESCENCE: 2, TISSUE: 2, BRIGHTFIELD: 2}, ["fluorescence", "he", "brightfield"], 512
    )
    style_images = images({TISSUE: 2 if quick else 4}, ["he"] * (2 if quick else 4), 512)
    ga_images = images(
        {FLUORESCENCE: 1, TISSUE: 1, BRIGHTFIELD: 1}
        if quick
        else {FLUORESCENCE: 4, TISSUE: 2, BRIGHTFIELD: 2},
        ["fluorescence", "he", "brightfield"] * (1 if quick else 2),
        320,
    )
    warm, steps = (1, 2) if quick else (2, 5)
    device = args.device
    checkpoint = str(args.checkpoint) if args.checkpoint else None
    runs = [
        (
            "inference_classical",
            "inference",
            {"kind": "classical", "images": inference_images, "profile": profile},
        ),
        (
            "inference_maskrcnn",
            "inference",
            {
                "kind": "maskrcnn",
                "images": inference_images,
                "profile": profile,
                "device": device,
                "checkpoint": checkpoint,
            },
        ),
        (
            "segmenter_maskrcnn_small",
            "segmenter_training",
            {
                "images": training_images,
                "profile": profile,
                "device": device,
                "overrides": ["segmenter=maskrcnn_small"],
                "warmup": warm,
                "steps": steps,
            },
        ),
        # the ResNet-50 configuration: 4 x 512 px crops; far slower on a CPU, so fewer steps there
        (
            "segmenter_maskrcnn_r50",
            "segmenter_training",
            {
                "images": training_images,
                "profile": profile,
                "device": device,
                "overrides": ["segmenter=maskrcnn_r50"],
                "warmup": 1 if not cuda else warm,
                "steps": (1 if quick else 2) if not cuda else steps,
            },
        ),
        (
            "pix2pix_small",
            "pix2pix_training",
            {
                "images": style_images,
                "profile": profile,
                "device": device,
                "overrides": ["stylegen=pix2pix_small"],
                "warmup": warm,
                "steps": steps,
            },
        ),
    ]
    if cuda:
        runs.append(
            (
                "pix2pix",
                "pix2pix_training",
                {
                    "images": style_images,
                    "profile": profile,
                    "device": device,
                    "overrides": ["stylegen=pix2pix"],
                    "warmup": warm,
                    "steps": steps,
                },
            )
        )
    runs.append(
        (
            "ga",
            "ga",
            {
                "images": ga_images,
                "profile": profile,
                "population": 6 if quick else 12,
                "generations": 2 if quick else 4,
                "workers": args.ga_workers,
                "unet": str(args.unet) if args.unet else None,
            },
        )
    )
    chosen = [(key, kind, spec) for key, kind, spec in runs if not args.only or key in args.only]
    return [(key, kind, spec, 300.0 if quick else 900.0) for key, kind, spec in chosen]


def fmt(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:#.3g}" if abs(value) < 100 else f"{value:.0f}"


def write_markdown(path: Path, result: dict) -> None:
    m = result["machine"]
    command = (
        "python -m benchmarks.speed"
        + (" --quick" if result["quick"] else "")
        + (f" --device {result['device']}" if result["device"] != "cpu" else "")
    )
    lines = [
        f"# Speed benchmark ({result['date']})",
        "",
        f"`{command}`; commit {result['commit']}; {describe_machine(m)}, "
        f"device {result['device']}, torch threads {result['threads']}; load average {m['load_average_1min_at_start']:.1f} "
        f"at the start (the machine is shared: wall times are pessimistic); {result.get('total_wall_s', '?')} s "
        "in all.",
        "",
        "Every measurement ran in its own process; peak RSS is that process's maximum resident memory, peak "
        "CUDA its `torch.cuda.max_memory_allocated`.",
        "",
        "| measurement | value | unit | peak RSS MB | peak CUDA MB | notes |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for row in result["measurements"]:
        extra = [f"{row.get('device', '-')}", f"{row.get('torch_threads', '-')} torch threads"]
        if row.get("precision"):
            extra.append(row["precision"])
        if row.get("peak_rss_children_mb") and row.get("unit") == "evaluations/s":
            extra.append(f"largest worker {row['peak_rss_children_mb']} MB")
        notes = f"{row.get('notes', '')}; {row.get('data', '')}; {', '.join(extra)}"
        lines.append(
            f"| {row['name']} | {fmt(row.get('value'))} | {row.get('unit') or '-'} | "
            f"{row.get('peak_rss_mb', '-')} | {row.get('peak_cuda_mb') or '-'} | {notes} |"
        )
    demo = result["demo"]
    if demo["measured"]:
        stages = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in demo["stages"].items())
        lines.append(
            f"| demo end to end (`train.py +target=demo`, profile {demo['profile']}) | "
            f"{fmt(demo['total_seconds'])} | s | - | - | read from {demo['report']} "
            f"(written {demo['report_written']}): {stages} |"
        )
    else:
        lines.append(
            f"| demo end to end (`train.py +target=demo`) | not measured | s | - | - | no {demo['report']}; "
            "run the demo, then this script |"
        )
    lines.append("")
    path.write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        child_main(*argv[1:3])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer images and steps; writes speed_quick.*")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument(
        "--threads", type=int, default=os.cpu_count(), help="torch threads (default: all cores)"
    )
    parser.add_argument(
        "--checkpoint",
        type=Path,
        default=None,
        help="trained segmenter .pt for inference; an untrained network without it",
    )
    parser.add_argument(
        "--unet", type=Path, default=None, help="U-Net ensemble .pt for the GA's probability maps"
    )
    parser.add_argument(
        "--ga-workers", type=int, default=None, help="GA processes (config: postprocess.ga.workers)"
    )
    parser.add_argument(
        "--demo-report",
        type=Path,
        default=DEMO_REPORT,
        help="report.json of a finished demo run (relative to the repository root)",
    )
    parser.add_argument(
        "--data", type=Path, default=DATA, help="dsb2018_train; procedural images when absent"
    )
    parser.add_argument("--only", nargs="+", default=None, help="measure only these keys (see plan())")
    args = parser.parse_args(argv)
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise SystemExit("error: --device cuda but torch sees no CUDA device")
    demo_path = args.demo_report if args.demo_report.is_absolute() else ROOT / args.demo_report
    result = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": machine(),
        "commit": git_commit(),
        "device": args.device,
        "threads": args.threads,
        "quick": args.quick,
        "data": str(args.data) if args.data.is_dir() else "procedural (nucleaizer.simulate)",
        "measurements": [],
    }
    started = time.perf_counter()
    for key, kind, spec, timeout_s in plan(args):
        print(f"{key}: running", flush=True)
        row = in_fresh_process(kind, spec, args.threads, timeout_s)
        row["key"] = key
        result["measurements"].append(row)
        print(
            f"{key}: {fmt(row.get('value'))} {row.get('unit') or ''} (peak RSS {row.get('peak_rss_mb', '-')} MB, "
            f"{row['process_wall_s']} s)",
            flush=True,
        )
    result["total_wall_s"] = round(time.perf_counter() - started, 1)
    result["demo"] = demo_timings(demo_path)
    demo = result["demo"]
    print(
        f"demo end to end: {demo['total_seconds']} s"
        if demo["measured"]
        else f"demo end to end: not measured (no {demo_path})",
        flush=True,
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = "speed" + ("" if args.device == "cpu" else f"_{args.device}") + ("_quick" if args.quick else "")
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2, default=float) + "\n")
    write_markdown(RESULTS / f"{name}.md", result)
    print(f"wrote {RESULTS / name}.json and .md")


if __name__ == "__main__":
    main()
