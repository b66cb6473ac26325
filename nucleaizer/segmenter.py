"""Training the Mask R-CNN segmenter (and the preseg model) with PyTorch Lightning, docs/method.md sections 1 and 5.

:func:`fit_segmenter` is what the pipeline calls: annotated pairs in, the path of the best one-file
checkpoint out. The :class:`SegmenterModule` (nucleaizer.segmenter_module) runs the staged schedule (which parameters train, at which
learning rate, for how many epochs), scores a validation split with the DSB score every epoch and keeps the
best weights. Mixed precision and DDP (``devices=N``) come from the Lightning trainer settings.

Network construction, checkpoints and the instance predictor live in :mod:`nucleaizer.maskrcnn` and are
re-exported here (the names of the project's contract).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import pandas as pd
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger

from nucleaizer.augment import AugmentParams
from nucleaizer.data import CropDataset, ValidationDataset, load_pairs
from nucleaizer.errors import UserError
from nucleaizer.io import write_table
from nucleaizer.maskrcnn import (  # noqa: F401  (re-exported: the contract names them in this module)
    BACKBONES,
    build_maskrcnn,
    load_segmenter,
    read_segmenter_file,
    save_segmenter,
)
from nucleaizer.maskrcnn_arch import MaskRCNNArch
from nucleaizer.maskrcnn_predictor import MaskRCNNPredictor, predict_instances  # noqa: F401  (re-exported)
from nucleaizer.segmenter_module import SegmenterData, SegmenterModule, Throughput, check_stages

log = logging.getLogger(__name__)


def native_bf16(accelerator: str) -> bool:
    """Whether the training device computes bf16 natively: a CUDA GPU that supports it, or (accelerator cpu)
    a processor with AVX-512 BF16 or AMX (elsewhere bf16 on a CPU is emulated, slower than fp32)."""
    import torch

    if accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str, accelerator: str = "auto") -> str:
    """Lightning's precision setting; ``auto`` is bf16-mixed where it runs natively (see native_bf16), else
    32-true. On a 2-core AVX-512 BF16 CPU bf16 autocast cut a Mask R-CNN training step by 15-25%."""
    if str(precision) != "auto":
        return str(precision)
    return "bf16-mixed" if native_bf16(accelerator) else "32-true"


def split_train_val(
    samples: Sequence, val_fraction: float = 0.2, max_val_images: int | None = None
) -> tuple[list, list]:
    """A fixed split by sha1 of each sample's ``name``, independent of order: about ``val_fraction`` validates.

    At most ``max_val_images`` validate (those with the smallest hashes; the rest go back to training), so a
    large source does not spend most of an epoch on validation. With no training sample left, all train.
    """
    import hashlib

    hashes = [int(hashlib.sha1(s.name.encode()).hexdigest(), 16) for s in samples]
    modulus = max(round(1 / val_fraction), 1) if val_fraction > 0 else 0
    val_index = sorted((h, i) for i, h in enumerate(hashes) if modulus and h % modulus == 0)
    chosen = {i for _, i in val_index[:max_val_images]}
    train = [s for i, s in enumerate(samples) if i not in chosen]
    val = [s for i, s in enumerate(samples) if i in chosen]
    return (train or val), val


def fit_segmenter(
    train_samples: Iterable,
    val_samples: Iterable,
    out_dir: str | Path,
    arch: MaskRCNNArch,
    stages: Sequence[dict],
    steps_per_epoch: int = 50,
    optimizer: str = "sgd",
    momentum: float = 0.9,
    weight_decay: float = 1e-4,
    warmup_steps: int = 0,
    crop_size: int = 256,
    batch_size: int = 2,
    augment: dict | AugmentParams | None = None,
    synthetic_samples: Iterable | None = None,
    synthetic_share: float = 0.0,
    target_diameter_px: float = 40,
    min_scale: float = 0.25,
    max_scale: float = 4.0,
    min_object_area_px: int = 16,
    max_crop_tries: int = 10,
    trainer: dict | None = None,
    init_checkpoint: str | Path | None = None,
    seed: int = 0,
    max_time_s: float | None = None,
    gradient_clip_val: float | None = 10.0,
    checkpoint_name: str = "segmenter.pt",
    ema_decay: float = 0.0,
    resume: bool = False,
) -> Path:
    """Train a Mask R-CNN and return the path of the best one-file checkpoint (``out_dir/checkpoint_name``).

    train_samples / val_samples / synthetic_samples: (image uint8 (H, W, 3), labels int (H, W)) pairs or
    ``nucleaizer.io.Sample`` objects with labels. Every image is rescaled so its median nucleus diameter
    (from its labels) is ``target_diameter_px``. arch: the network.
    stages: [{trainable: all|stage5+|heads, lr, epochs}]; an epoch is ``steps_per_epoch`` batches.
    augment: the config's ``augment:`` block; ``augment['rescale'] > 0`` jitters the scale (the preseg model).
    trainer: Lightning settings (accelerator, devices, num_nodes, strategy, precision, num_workers, ...);
    precision ``auto`` is resolved by :func:`resolve_precision`.
    init_checkpoint: a segmenter .pt to start from (same architecture), e.g. the preseg model.
    max_time_s: stop after this many seconds of training in all (the best checkpoint so far is kept).
    ema_decay: average the weights (see SegmenterModule); the average is validated and exported.
    resume: continue from ``out_dir/lightning/last.ckpt`` when it exists (weights, optimizer, schedule position
    and the time already spent, which counts against ``max_time_s``): a run killed or stopped by its time
    budget goes on where it stopped. That file is written after every epoch and when training stops.
    The best epoch by ``val_dsb`` is kept; without validation pairs the last epoch is kept.
    Lightning logs (metrics.csv) go to ``out_dir/logs``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pl.seed_everything(seed, workers=True)
    stages = check_stages(stages)
    trainer_settings = dict(trainer or {})
    num_workers = int(trainer_settings.pop("num_workers", 0))
    trainer_settings["precision"] = resolve_precision(
        trainer_settings.get("precision", "32-true"), str(trainer_settings.get("accelerator", "auto"))
    )
    augment = augment if isinstance(augment, AugmentParams) else AugmentParams.from_dict(augment)
    size_kwargs = {
        "target_diameter_px": target_diameter_px,
        "min_scale": min_scale,
        "max_scale": max_scale,
        "min_object_area_px": min_object_area_px,
    }
    train_set = CropDataset(
        load_pairs(train_samples),
        load_pairs(synthetic_samples or []),
        crop_size,
        augment,
        max_crop_tries=max_crop_tries,
        **size_kwargs,
    )
    val_pairs = load_pairs(val_samples)
    data = SegmenterData(
        train_set,
        ValidationDataset(val_pairs, **size_kwargs),
        batch_size,
        steps_per_epoch,
        synthetic_share,
        seed,
        num_workers,
    )
    init_state = None
    if init_checkpoint is not None:
        content = read_segmenter_file(init_checkpoint)
        differences = content["arch"].weight_shape_differences(arch)
        if differences:
            raise UserError(
                f"init checkpoint {init_checkpoint} is another architecture than the config asks for "
                f"({'; '.join(differences)})"
            )
        init_state = content["state_dict"]
    module = SegmenterModule(
        arch, stages, optimizer, momentum, weight_decay, warmup_steps, init_state, ema_decay
    )
    checkpoint = ModelCheckpoint(
        dirpath=out_dir / "lightning",
        filename="best",
        monitor="val_dsb" if val_pairs else None,
        mode="max",
        save_top_k=1,
        save_last=True,
    )
    last = out_dir / "lightning" / "last.ckpt"
    resume_from = last if resume and last.is_file() else None
    if resume_from is not None:
        log.info("resuming from %s", resume_from)
    extra = {}
    if max_time_s is not None:
        extra["max_time"] = {"seconds": float(max_time_s)}
    fit = pl.Trainer(
        default_root_dir=out_dir,
        max_epochs=sum(s["epochs"] for s in stages),
        callbacks=[checkpoint, Throughput()],
        logger=CSVLogger(out_dir, name="logs", version=""),
        use_distributed_sampler=False,  # MixedBatchSampler shards by rank itself
        num_sanity_val_steps=0,
        gradient_clip_val=gradient_clip_val,
        log_every_n_steps=max(1, min(10, steps_per_epoch)),
        limit_val_batches=1.0 if val_pairs else 0,
        **extra,
        **trainer_settings,
    )
    started = time.perf_counter()
    history = out_dir / "logs" / "metrics.csv"
    earlier = pd.read_csv(history) if resume_from is not None and history.is_file() else None
    fit.fit(module, datamodule=data, ckpt_path=resume_from)
    fit.save_checkpoint(last)  # where a time budget stopped it (mid-epoch): the next resume starts here
    if earlier is not None and fit.is_global_zero:  # Lightning's CSV logger starts the file afresh
        logged = [pd.read_csv(history)] if history.is_file() else []  # none when it was already done
        write_table(history, pd.concat([earlier, *logged], ignore_index=True))
    log.info(
        "segmenter training took %.0f s (%d epochs, best val_dsb %s)",
        time.perf_counter() - started,
        fit.current_epoch,
        checkpoint.best_model_score,
    )
    best_path = out_dir / checkpoint_name
    if fit.is_global_zero:
        state = module.exported_model().state_dict()
        if checkpoint.best_model_path:
            state = lightning_weights(checkpoint.best_model_path)
        best = build_maskrcnn(arch)
        best.load_state_dict(state)
        save_segmenter(best_path, best, arch)
    return best_path


def lightning_weights(path: str | Path) -> dict:
    """The exported network's state dict in a Lightning checkpoint of SegmenterModule: its weight average when
    it keeps one, else its weights."""
    state = torch.load(path, map_location="cpu", weights_only=False)["state_dict"]
    prefix = "ema_model." if any(k.startswith("ema_model.") for k in state) else "model."
    return {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}


def training_kwargs_from_config(segmenter: dict) -> dict:
    """fit_segmenter kwargs (besides samples, out_dir, trainer) from a segmenter config block (plain dict: the
    network ``arch`` and its training ``train``)."""
    keys = (
        "steps_per_epoch",
        "optimizer",
        "momentum",
        "weight_decay",
        "warmup_steps",
        "gradient_clip_val",
        "crop_size",
        "batch_size",
        "augment",
        "synthetic_share",
        "max_crop_tries",
        "ema_decay",
    )
    return {
        "arch": MaskRCNNArch.from_config(segmenter["arch"]),
        "stages": list(segmenter["train"]["stages"]),
        **{k: segmenter["train"][k] for k in keys if k in segmenter["train"]},
    }
