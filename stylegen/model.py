"""pix2pix as a LightningModule, and ``train_style``: one style model from (images, masks) arrays.

Loss as in pix2pix: the generator minimises the vanilla GAN loss (BCE on PatchGAN logits) plus
``lambda_l1`` x L1 to the real image; the discriminator sees (mask, image) pairs and halves its loss.
Both use Adam (lr, beta1); the learning rate follows the budget rule of ``stylegen.budget``.

Pixels an ignore mask marks (e.g. nuclei the training masks missed, which would otherwise teach the generator
to paint unlabelled nuclei into the background) are left out of both losses: of the L1 term pixel by pixel,
of the GAN terms every PatchGAN cell whose share of the tile contains one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from stylegen.budget import BudgetPlan, plan_budget
from stylegen.data import TileDataset, cut_tiles
from stylegen.networks import PatchDiscriminator, UnetGenerator
from stylegen.render import render_masks, sample_grid

log = logging.getLogger(__name__)


class Pix2Pix(pl.LightningModule):
    """Generator ``net_g`` (mask -> image) and conditional discriminator ``net_d``, trained adversarially.

        net_g: UnetGenerator kwargs (depth, base_filters, dropout, norm); net_d: PatchDiscriminator kwargs
        (base_filters, n_layers, norm). constant_steps / decay_steps: the learning-rate schedule (see
        ``stylegen.budget``). Batches are (mask float32 (B, 1, T, T), image float32 (B, 3, T, T)) in [-1, 1],
    optionally with ``keep`` float32 (B, 1, T, T) (0 = left out of the losses; see TileDataset).
    """

    def __init__(
        self,
        net_g: dict,
        net_d: dict,
        tile_size: int = 256,
        lambda_l1: float = 100.0,
        lr: float = 2e-4,
        beta1: float = 0.5,
        constant_steps: int = 1,
        decay_steps: int = 0,
        sample_every_n_steps: int | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net_g = UnetGenerator(in_channels=1, out_channels=3, **net_g)
        self.net_d = PatchDiscriminator(in_channels=4, **net_d)
        if tile_size % self.net_g.multiple:
            raise ValueError(
                f"tile_size {tile_size} must be a multiple of 2**net_g.depth = {self.net_g.multiple}; "
                "lower net_g.depth or raise tile_size"
            )
        self.tile_size = tile_size
        self.plan = BudgetPlan(constant_steps, decay_steps, steps_per_epoch=1)
        self.automatic_optimization = False
        self.steps_done = 0
        # (masks bool (N, T, T), images uint8 (N, T, T, 3)) shown in logged sample grids; set by train_style
        self.sample_tiles: tuple[np.ndarray, np.ndarray] | None = None

    def forward(self, real_a: torch.Tensor) -> torch.Tensor:
        """Mask (B, 1, H, W) in [-1, 1] -> image (B, 3, H, W) in [-1, 1]."""
        return self.net_g(real_a)

    def configure_optimizers(self) -> Any:
        betas = (self.hparams.beta1, 0.999)
        opt_g = torch.optim.Adam(self.net_g.parameters(), lr=self.hparams.lr, betas=betas)
        opt_d = torch.optim.Adam(self.net_d.parameters(), lr=self.hparams.lr, betas=betas)
        schedulers = [torch.optim.lr_scheduler.LambdaLR(opt, self.plan.lr_factor) for opt in (opt_g, opt_d)]
        return [opt_g, opt_d], schedulers

    def training_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> None:
        real_a, real_b, *rest = batch
        keep = rest[0] if rest else None
        opt_g, opt_d = self.optimizers()
        fake_b = self.net_g(real_a)

        # discriminator: real pairs -> 1, generated pairs -> 0
        self.net_d.requires_grad_(True)
        pred_fake = self.net_d(torch.cat([real_a, fake_b.detach()], dim=1))
        pred_real = self.net_d(torch.cat([real_a, real_b], dim=1))
        loss_d = 0.5 * (gan_loss(pred_fake, False, keep) + gan_loss(pred_real, True, keep))
        opt_d.zero_grad(set_to_none=True)
        self.manual_backward(loss_d)
        opt_d.step()

        # generator: fool the (frozen) discriminator and stay close to the real image
        self.net_d.requires_grad_(False)
        loss_gan = gan_loss(self.net_d(torch.cat([real_a, fake_b], dim=1)), True, keep)
        loss_l1 = l1_loss(fake_b, real_b, keep)
        loss_g = loss_gan + self.hparams.lambda_l1 * loss_l1
        opt_g.zero_grad(set_to_none=True)
        self.manual_backward(loss_g)
        opt_g.step()
        self.net_d.requires_grad_(True)

        for scheduler in self.lr_schedulers():
            scheduler.step()
        self.steps_done += 1
        self.log_dict(
            {"loss_d": loss_d, "loss_g_gan": loss_gan, "loss_l1": loss_l1, "lr": opt_g.param_groups[0]["lr"]},
            prog_bar=True,
            batch_size=real_a.shape[0],
        )
        every = self.hparams.sample_every_n_steps
        if every and self.steps_done % every == 0:
            self.log_samples()

    def on_train_end(self) -> None:
        self.log_samples()

    def log_samples(self) -> np.ndarray | None:
        """Render the sample tiles and send the grid (real | mask | synthetic) to the attached logger.

        Returns the grid, uint8 (H, W, 3), or None without a logger or sample tiles. Loggers with
        ``log_image`` (Weights & Biases) and with ``experiment.add_image`` (TensorBoard) are supported.
        """
        logger = self.logger
        if logger is None or self.sample_tiles is None:
            return None
        masks, images = self.sample_tiles
        was_training = self.net_g.training
        fakes = np.stack(render_masks(self.net_g, masks, device=self.device, pad_multiple=self.tile_size))
        self.net_g.train(was_training)
        grid = sample_grid(images, masks, fakes)
        if hasattr(logger, "log_image"):
            logger.log_image(key="samples", images=[grid], step=self.global_step)
        elif hasattr(getattr(logger, "experiment", None), "add_image"):
            logger.experiment.add_image("samples", grid, self.global_step, dataformats="HWC")
        return grid


def gan_loss(logits: torch.Tensor, target_is_real: bool, keep: torch.Tensor | None = None) -> torch.Tensor:
    """Vanilla GAN loss: BCE between PatchGAN logits (B, 1, h, w) and an all-real or all-fake target.

    keep: None, or float (B, 1, H, W) of the input tiles (0 = ignored pixel); a cell of the logit map is left
    out when its share of the tile holds an ignored pixel (the mean runs over the cells kept).
    """
    target = torch.ones_like(logits) if target_is_real else torch.zeros_like(logits)
    if keep is None:
        return F.binary_cross_entropy_with_logits(logits, target)
    kept_cells = -F.adaptive_max_pool2d(-keep, logits.shape[-2:])
    losses = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    return (losses * kept_cells).sum() / kept_cells.sum().clamp(min=1.0)


def l1_loss(fake: torch.Tensor, real: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
    """Mean absolute difference of images (B, C, H, W); keep: None or (B, 1, H, W), the mean over kept pixels."""
    if keep is None:
        return F.l1_loss(fake, real)
    return ((fake - real).abs() * keep).sum() / (keep.sum() * fake.shape[1]).clamp(min=1.0)


def resolve_trainer_settings(settings: dict | None) -> dict:
    """Copy of the trainer settings with mixed precision dropped (to 32-true) when no CUDA device will run it.

    Lets one profile (``precision: bf16-mixed``) serve machines with and without a GPU; CPU autocast would
    only slow training down.
    """
    resolved = dict(settings or {})
    precision = str(resolved.get("precision", "32-true"))
    on_gpu = torch.cuda.is_available() and resolved.get("accelerator", "auto") in ("auto", "gpu", "cuda")
    if "mixed" in precision or precision.startswith("bf16") or precision.startswith("16"):
        supported = on_gpu and (not precision.startswith("bf16") or torch.cuda.is_bf16_supported())
        if not supported:
            log.warning("precision %s needs a CUDA device that supports it; training in 32-true", precision)
            resolved["precision"] = "32-true"
    return resolved


def train_style(
    images: Sequence[np.ndarray],
    masks: Sequence[np.ndarray],
    *,
    ignore: Sequence[np.ndarray] | None = None,
    net_g: dict,
    net_d: dict,
    budget: dict,
    tile_size: int = 256,
    lambda_l1: float = 100.0,
    lr: float = 2e-4,
    beta1: float = 0.5,
    batch_size: int = 1,
    flip: bool = True,
    seed: int = 0,
    trainer: dict | None = None,
    logger: Any = None,
    sample_every_n_steps: int | None = None,
    n_samples: int = 4,
    root_dir: str | None = None,
) -> Pix2Pix:
    """Train one style model on a style's images and their binary nucleus masks.

    images: uint8 (H, W, 3) RGB, sizes may differ; masks: bool (H, W) each, same sizes (non-zero =
    nucleus); ignore: None or bool (H, W) per image, pixels left out of the losses. The other keyword arguments
    mirror ``conf/stylegen/*.yaml`` (budget = {epochs_budget, decay_epochs,
    max_steps}); trainer: Lightning Trainer settings (accelerator, devices, precision, strategy, ...,
    plus num_workers for the DataLoader), e.g. ``conf/trainer/*.yaml``; logger: a Lightning logger or None.
    Returns the trained model on the CPU in eval mode, with ``train_record`` (tiles, steps, seconds).
    """
    started = time.perf_counter()
    image_tiles, mask_tiles, ignore_tiles = cut_tiles(
        images, masks, tile_size, skip_empty=True, ignore=ignore
    )
    dataset = TileDataset(image_tiles, mask_tiles, flip=flip, ignore_tiles=ignore_tiles)
    plan = plan_budget(len(dataset), batch_size, **budget)
    log.info(
        "style model: %d tiles of %d px from %d images; %d steps (%d constant + %d decay, %.1f epochs)",
        len(dataset),
        tile_size,
        len(images),
        plan.total_steps,
        plan.constant_steps,
        plan.decay_steps,
        plan.epochs,
    )
    pl.seed_everything(seed, workers=True, verbose=False)
    model = Pix2Pix(
        net_g=dict(net_g),
        net_d=dict(net_d),
        tile_size=tile_size,
        lambda_l1=lambda_l1,
        lr=lr,
        beta1=beta1,
        constant_steps=plan.constant_steps,
        decay_steps=plan.decay_steps,
        sample_every_n_steps=sample_every_n_steps,
    )
    model.sample_tiles = (mask_tiles[:n_samples], image_tiles[:n_samples])
    settings = resolve_trainer_settings(trainer)
    # num_workers configures the DataLoader, not the Trainer
    num_workers = int(settings.pop("num_workers", 0))
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        pin_memory=torch.cuda.is_available(),
    )
    fit = pl.Trainer(
        # with manual optimisation Lightning counts every optimizer.step(): two (D and G) per batch
        max_steps=2 * plan.total_steps,
        max_epochs=-1,
        logger=logger if logger is not None else False,
        enable_checkpointing=False,
        enable_model_summary=False,
        log_every_n_steps=max(1, min(50, plan.total_steps // 10)),
        default_root_dir=root_dir,
        **settings,
    )
    fit.fit(model, loader)
    model.cpu().eval()
    model.train_record = {
        "n_images": len(images),
        "n_tiles": len(dataset),
        "steps": model.steps_done,
        "planned_steps": plan.total_steps,
        "epochs": round(plan.epochs, 3),
        "seconds": round(time.perf_counter() - started, 2),
        "precision": str(settings.get("precision", "32-true")),
        "seed": seed,
    }
    log.info("style model trained: %d steps in %.1f s", model.steps_done, model.train_record["seconds"])
    return model
