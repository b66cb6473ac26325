"""Training the Mask R-CNN segmenter (and the preseg model) with PyTorch Lightning, docs/method.md sections 1 and 5.

:func:`fit_segmenter` is what the pipeline calls: annotated pairs in, the path of the best one-file
checkpoint out. The :class:`SegmenterModule` runs the staged schedule (which parameters train, at which
learning rate, for how many epochs), scores a validation split with the DSB score every epoch and keeps the
best weights. Mixed precision and DDP (``devices=N``) come from the Lightning trainer settings.

Network construction, checkpoints and the instance predictor live in :mod:`nucleaizer.maskrcnn` and are
re-exported here (the names of the project's contract).
"""

from __future__ import annotations

import argparse
import copy
import logging
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback, ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger
from torch.utils.data import DataLoader

from nucleaizer import metrics
from nucleaizer.augment import AugmentParams
from nucleaizer.config_files import load_config
from nucleaizer.data import CropDataset, MixedBatchSampler, ValidationDataset, collate_lists, load_pairs
from nucleaizer.errors import UserError
from nucleaizer.instances import paint_instances
from nucleaizer.io import write_table
from nucleaizer.maskrcnn import (  # noqa: F401  (re-exported: the contract names them in this module)
    ARCH_KEYS,
    BACKBONES,
    MaskRCNNPredictor,
    arch_from_config,
    build_maskrcnn,
    load_segmenter,
    predict_instances,
    read_segmenter_file,
    save_segmenter,
    weight_shape_differences,
)

log = logging.getLogger(__name__)

TRAINABLE = ("all", "stage5+", "heads")


def backbone_stage5_prefixes(model: torch.nn.Module) -> list[str]:
    """Parameter-name prefixes of the last backbone stage (ResNet layer4, MobileNetV3's last stage, the stride-32
    blocks of EfficientNet-Lite0)."""
    if hasattr(model.backbone, "last_stage_prefixes"):
        return model.backbone.last_stage_prefixes()
    body = model.backbone.body
    names = [name for name, _ in body.named_children()]
    if "layer4" in names:
        return ["backbone.body.layer4."]
    # MobileNetV3 features: a stage starts at each block flagged _is_cn (stride change)
    starts = [i for i, (_, block) in enumerate(body.named_children()) if getattr(block, "_is_cn", False)]
    first = starts[-1] if starts else len(names) - 1
    return [f"backbone.body.{name}." for name in names[first:]]


def trainable_mask(model: torch.nn.Module, trainable: str) -> dict[str, bool]:
    """Per parameter name, whether it trains in a stage: all | stage5+ (last backbone stage, FPN, heads) | heads."""
    if trainable not in TRAINABLE:
        raise UserError(f"segmenter.stages: trainable={trainable!r} is not one of {list(TRAINABLE)}")
    stage5 = tuple(backbone_stage5_prefixes(model))
    result = {}
    for name, _ in model.named_parameters():
        in_body = name.startswith("backbone.body.")
        if trainable == "all":
            result[name] = True
        elif trainable == "stage5+":
            result[name] = not in_body or name.startswith(stage5)
        else:
            result[name] = not in_body
    return result


def check_stages(stages: Sequence[dict]) -> list[dict]:
    """Normalised copy of the schedule: a non-empty list of {trainable, lr, epochs}; UserError otherwise."""
    if not stages:
        raise UserError("segmenter.stages is empty: give at least one {trainable, lr, epochs}")
    result = []
    for i, stage in enumerate(stages):
        stage = dict(stage)
        missing = {"trainable", "lr", "epochs"} - set(stage)
        if missing:
            raise UserError(f"segmenter.stages[{i}] lacks {sorted(missing)}")
        if stage["trainable"] not in TRAINABLE or float(stage["lr"]) <= 0 or int(stage["epochs"]) < 1:
            raise UserError(
                f"segmenter.stages[{i}]={stage}: trainable in {list(TRAINABLE)}, lr > 0, epochs >= 1"
            )
        result.append(
            {"trainable": stage["trainable"], "lr": float(stage["lr"]), "epochs": int(stage["epochs"])}
        )
    return result


def stage_at_epoch(stages: Sequence[dict], epoch: int) -> int:
    """Index of the stage an epoch belongs to (the last stage for epochs past the schedule)."""
    ends = np.cumsum([s["epochs"] for s in stages])
    return int(min(np.searchsorted(ends, epoch, side="right"), len(stages) - 1))


class SegmenterModule(pl.LightningModule):
    """Mask R-CNN with a staged schedule and the DSB score of a validation split as ``val_dsb``.

    arch: build_maskrcnn kwargs. stages: [{trainable: all|stage5+|heads, lr, epochs}]. optimizer: sgd | adamw.
    Parameters outside the current stage keep their values (their gradients are dropped before each step, so
    DDP sees the same parameters every step) and their BatchNorm statistics are frozen.
    ema_decay > 0 keeps an exponential moving average of the weights (``ema_model``; the decay ramps up as
    ``min(ema_decay, (1 + n) / (10 + n))`` over the first steps): validation scores it and it is what
    training exports. An average of the last few hundred steps does what a final learning-rate decay does,
    at any moment, so a run stopped by a time budget (and continued later) needs no schedule planned ahead.
    """

    def __init__(
        self,
        arch: dict,
        stages: Sequence[dict],
        optimizer: str = "sgd",
        momentum: float = 0.9,
        weight_decay: float = 1e-4,
        warmup_steps: int = 0,
        init_state_dict: dict | None = None,
        ema_decay: float = 0.0,
    ):
        super().__init__()
        self.arch = dict(arch)
        self.stages = check_stages(stages)
        if optimizer not in ("sgd", "adamw"):
            raise UserError(f"segmenter.optimizer={optimizer!r} is not one of ['sgd', 'adamw']")
        self.optimizer_name, self.momentum, self.weight_decay = (
            optimizer,
            float(momentum),
            float(weight_decay),
        )
        self.warmup_steps = int(warmup_steps)
        self.stage_index = 0
        self.model = build_maskrcnn(**self.arch)
        if init_state_dict is not None:
            self.model.load_state_dict(init_state_dict)
        if not 0.0 <= float(ema_decay) < 1.0:
            raise UserError(f"segmenter.ema_decay={ema_decay}: use 0 (off) or a decay in (0, 1), e.g. 0.998")
        self.ema_decay = float(ema_decay)
        self.ema_model = copy.deepcopy(self.model).requires_grad_(False).eval() if self.ema_decay else None
        self.frozen: set[str] = set()
        self._val_scores: list[float] = []

    # --- schedule ---------------------------------------------------------------------------------------
    def _apply_stage(self, index: int) -> None:
        self.stage_index = index
        mask = trainable_mask(self.model, self.stages[index]["trainable"])
        self.frozen = {name for name, trains in mask.items() if not trains}
        self._freeze_batchnorm()

    def current_lr(self) -> float:
        """The stage's learning rate, ramped up linearly over the first ``warmup_steps`` steps of training."""
        lr = self.stages[self.stage_index]["lr"]
        if self.global_step < self.warmup_steps:
            lr *= (self.global_step + 1) / self.warmup_steps
        return lr

    def _freeze_batchnorm(self) -> None:
        """BatchNorm layers whose parameters are frozen stop updating their running statistics."""
        if not self.training:
            return
        for name, module in self.model.named_modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm) and f"{name}.weight" in self.frozen:
                module.eval()

    def train(self, mode: bool = True):
        super().train(mode)
        if mode and self.frozen:
            self._freeze_batchnorm()
        if self.ema_model is not None:
            self.ema_model.eval()  # never trained, only averaged and validated
        return self

    def on_train_epoch_start(self) -> None:
        self._apply_stage(stage_at_epoch(self.stages, self.current_epoch))

    def on_train_batch_start(self, batch, batch_idx) -> None:
        lr = self.current_lr()
        for optimizer in self.trainer.optimizers:
            for group in optimizer.param_groups:
                group["lr"] = lr

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        if self.ema_model is None:
            return
        steps = self.global_step
        decay = min(self.ema_decay, (1 + steps) / (10 + steps))
        with torch.no_grad():
            torch._foreach_lerp_(
                list(self.ema_model.parameters()), list(self.model.parameters()), 1.0 - decay
            )
            for averaged, current in zip(self.ema_model.buffers(), self.model.buffers(), strict=True):
                averaged.copy_(current)

    def exported_model(self) -> torch.nn.Module:
        """The network training hands on: the weight average when there is one, else the trained weights."""
        return self.ema_model if self.ema_model is not None else self.model

    def on_before_optimizer_step(self, optimizer) -> None:
        if self.frozen:
            for name, param in self.model.named_parameters():
                if name in self.frozen:
                    param.grad = None

    def configure_optimizers(self):
        params = [p for p in self.model.parameters() if p.requires_grad]
        lr = self.stages[0]["lr"]
        if self.optimizer_name == "sgd":
            return torch.optim.SGD(params, lr=lr, momentum=self.momentum, weight_decay=self.weight_decay)
        return torch.optim.AdamW(params, lr=lr, weight_decay=self.weight_decay)

    # --- steps ------------------------------------------------------------------------------------------
    def training_step(self, batch, batch_idx):
        images, targets = batch
        losses = self.model(images, targets)
        loss = sum(losses.values())
        self.log("train_loss", loss, prog_bar=True, batch_size=len(images))
        self.log("lr", self.current_lr(), batch_size=len(images))
        self.log("stage", float(self.stage_index), batch_size=len(images))
        for name, value in losses.items():
            self.log(f"train/{name}", value, batch_size=len(images))
        return loss

    def validation_step(self, batch, batch_idx):
        images, gts = batch
        # boxes + crops painted by score, as at inference (no full-image mask per detection)
        for instances, image, gt in zip(
            predict_instances(self.exported_model(), images), images, gts, strict=True
        ):
            predicted = paint_instances(instances, tuple(image.shape[-2:]))[0]
            self._val_scores.append(metrics.dsb_score(gt, predicted))

    def on_validation_epoch_end(self) -> None:
        score = float(np.mean(self._val_scores)) if self._val_scores else 0.0
        self._val_scores = []
        self.log("val_dsb", score, prog_bar=True, sync_dist=True)


class _Throughput(Callback):
    """Logs training steps per second (``steps_per_s``), excluding validation."""

    def on_train_epoch_start(self, trainer, pl_module):
        self._start, self._steps = time.perf_counter(), 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self._steps += 1

    def on_train_epoch_end(self, trainer, pl_module):
        elapsed = time.perf_counter() - self._start
        pl_module.log("steps_per_s", self._steps / max(elapsed, 1e-9), on_epoch=True, sync_dist=True)


class SegmenterData(pl.LightningDataModule):
    """Training crops (MixedBatchSampler, rank-aware under DDP) and whole validation images."""

    def __init__(
        self,
        train: CropDataset,
        val: ValidationDataset,
        batch_size: int,
        steps_per_epoch: int,
        synthetic_share: float,
        seed: int,
        num_workers: int = 0,
    ):
        super().__init__()
        self.train_set, self.val_set = train, val
        self.batch_size, self.steps_per_epoch = int(batch_size), int(steps_per_epoch)
        self.synthetic_share, self.seed, self.num_workers = (
            float(synthetic_share),
            int(seed),
            int(num_workers),
        )

    def train_dataloader(self) -> DataLoader:
        n_real, n_synthetic = self.train_set.source_sizes()
        sampler = MixedBatchSampler(
            n_real,
            n_synthetic,
            self.batch_size,
            self.steps_per_epoch,
            self.synthetic_share,
            self.seed,
            self.trainer.global_rank,
            self.trainer.world_size,
        )
        return DataLoader(
            self.train_set,
            batch_sampler=sampler,
            collate_fn=collate_lists,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def val_dataloader(self) -> DataLoader:
        # every process scores the whole (small) validation split, so val_dsb is the same on every rank
        return DataLoader(self.val_set, batch_size=1, collate_fn=collate_lists, num_workers=self.num_workers)


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
    arch: dict,
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
    (from its labels) is ``target_diameter_px``. arch: build_maskrcnn kwargs (see arch_from_config).
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
        differences = weight_shape_differences(content["arch"], arch)
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
        callbacks=[checkpoint, _Throughput()],
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
        best = build_maskrcnn(**arch)
        best.load_state_dict(state)
        save_segmenter(best_path, best, arch)
    return best_path


def lightning_weights(path: str | Path) -> dict:
    """The exported network's state dict in a Lightning checkpoint of SegmenterModule: its weight average when
    it keeps one, else its weights."""
    state = torch.load(path, map_location="cpu", weights_only=False)["state_dict"]
    prefix = "ema_model." if any(k.startswith("ema_model.") for k in state) else "model."
    return {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}


# --- command line --------------------------------------------------------------------------------------
def training_kwargs_from_config(segmenter: dict) -> dict:
    """fit_segmenter kwargs (besides samples, out_dir, trainer) from a segmenter config block (plain dict)."""
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
        "arch": arch_from_config(segmenter),
        "stages": list(segmenter["stages"]),
        **{k: segmenter[k] for k in keys if k in segmenter},
    }


def main(argv: list[str] | None = None) -> None:
    """``python -m nucleaizer.segmenter train --data DIR [DIR ...] --out DIR [--profile cpu|gpu]``."""
    from nucleaizer.io import list_samples

    parser = argparse.ArgumentParser(
        prog="python -m nucleaizer.segmenter", description=__doc__.splitlines()[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser(
        "train", help="train a segmenter (or, with --rescale, a preseg model) on annotated folders"
    )
    train.add_argument(
        "--data", nargs="+", required=True, help="annotated folders (images/ + labels/, or DSB)"
    )
    train.add_argument("--out", required=True, help="output folder; the best model is OUT/segmenter.pt")
    train.add_argument("--profile", choices=("cpu", "gpu"), default="cpu")
    train.add_argument(
        "--rescale", type=float, default=None, help="random rescaling range in octaves (preseg)"
    )
    train.add_argument("--max-minutes", type=float, default=None, help="training time budget")
    train.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")

    config_name = {"cpu": ("maskrcnn_small", "cpu"), "gpu": ("maskrcnn_r50", "auto")}[args.profile]
    segmenter = load_config("segmenter", config_name[0])
    trainer = load_config("trainer", config_name[1])
    if segmenter.get("precision") is not None:
        trainer["precision"] = segmenter["precision"]
    kwargs = training_kwargs_from_config(segmenter)
    if args.rescale is not None:
        kwargs["augment"] = {**kwargs["augment"], "rescale": args.rescale}
    samples = [s for folder in args.data for s in list_samples(folder, require_labels=True)]
    train, val = split_train_val(samples, segmenter["val_fraction"], segmenter["max_val_images"])
    path = fit_segmenter(
        train,
        val,
        args.out,
        trainer=trainer,
        seed=args.seed,
        max_time_s=None if args.max_minutes is None else args.max_minutes * 60,
        **kwargs,
    )
    log.info("best segmenter: %s", path)


if __name__ == "__main__":
    main()
