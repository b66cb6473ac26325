"""The Lightning pieces of segmenter training: the staged schedule (which parameters train, at which learning
rate, for how many epochs), the LightningModule that runs it with a weight average and DSB validation, and
the data module of annotated (and synthetic) crops. ``nucleaizer.segmenter.fit_segmenter`` puts them to work.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Sequence

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from torch.utils.data import DataLoader

from nucleaizer import metrics
from nucleaizer.data import CropDataset, MixedBatchSampler, ValidationDataset, collate_lists
from nucleaizer.errors import UserError
from nucleaizer.instances import paint_instances
from nucleaizer.maskrcnn import build_maskrcnn
from nucleaizer.maskrcnn_arch import MaskRCNNArch
from nucleaizer.maskrcnn_predictor import predict_instances

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
        raise UserError(f"segmenter.train.stages: trainable={trainable!r} is not one of {list(TRAINABLE)}")
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
        raise UserError("segmenter.train.stages is empty: give at least one {trainable, lr, epochs}")
    result = []
    for i, stage in enumerate(stages):
        stage = dict(stage)
        missing = {"trainable", "lr", "epochs"} - set(stage)
        if missing:
            raise UserError(f"segmenter.train.stages[{i}] lacks {sorted(missing)}")
        if stage["trainable"] not in TRAINABLE or float(stage["lr"]) <= 0 or int(stage["epochs"]) < 1:
            raise UserError(
                f"segmenter.train.stages[{i}]={stage}: trainable in {list(TRAINABLE)}, lr > 0, epochs >= 1"
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

    arch: the network. stages: [{trainable: all|stage5+|heads, lr, epochs}]. optimizer: sgd | adamw.
    Parameters outside the current stage keep their values (their gradients are dropped before each step, so
    DDP sees the same parameters every step) and their BatchNorm statistics are frozen.
    ema_decay > 0 keeps an exponential moving average of the weights (``ema_model``; the decay ramps up as
    ``min(ema_decay, (1 + n) / (10 + n))`` over the first steps): validation scores it and it is what
    training exports. An average of the last few hundred steps does what a final learning-rate decay does,
    at any moment, so a run stopped by a time budget (and continued later) needs no schedule planned ahead.
    """

    def __init__(
        self,
        arch: MaskRCNNArch,
        stages: Sequence[dict],
        optimizer: str = "sgd",
        momentum: float = 0.9,
        weight_decay: float = 1e-4,
        warmup_steps: int = 0,
        init_state_dict: dict | None = None,
        ema_decay: float = 0.0,
    ):
        super().__init__()
        self.arch = arch
        self.stages = check_stages(stages)
        if optimizer not in ("sgd", "adamw"):
            raise UserError(f"segmenter.train.optimizer={optimizer!r} is not one of ['sgd', 'adamw']")
        self.optimizer_name, self.momentum, self.weight_decay = (
            optimizer,
            float(momentum),
            float(weight_decay),
        )
        self.warmup_steps = int(warmup_steps)
        self.stage_index = 0
        self.model = build_maskrcnn(self.arch)
        if init_state_dict is not None:
            self.model.load_state_dict(init_state_dict)
        if not 0.0 <= float(ema_decay) < 1.0:
            raise UserError(
                f"segmenter.train.ema_decay={ema_decay}: use 0 (off) or a decay in (0, 1), e.g. 0.998"
            )
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


class Throughput(Callback):
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
