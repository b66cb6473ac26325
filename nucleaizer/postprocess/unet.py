"""U-Net ensemble predicting nucleus-foreground probability (docs/method.md section 7).

Members differ in depth, base filters and the Gaussian blur of their foreground target, as the config says;
the mean of their sigmoid outputs is the probability map ``P`` that the contour correction thresholds.
Trained with Lightning on (image, labels) pairs already rescaled to the segmenter's working scale. An
ensemble is saved as one file holding every member's architecture and weights.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import nn
from torch.utils.data import DataLoader, Dataset

from nucleaizer.errors import UserError
from nucleaizer.io import atomic_write

log = logging.getLogger(__name__)

ENSEMBLE_FORMAT = 1
# trainer-dict keys that configure the data loader rather than pl.Trainer
_LOADER_KEYS = ("num_workers",)


@dataclass(frozen=True)
class MemberSpec:
    """Architecture and training target of one ensemble member."""

    depth: int
    base_filters: int
    blur_sigma: float


def member_specs(
    members: int,
    target_blur_sigmas: Sequence[float],
    depth: int | Sequence[int],
    base_filters: int | Sequence[int],
) -> list[MemberSpec]:
    """One spec per member from the ``postprocess.unet`` config; scalars apply to every member.

    target_blur_sigmas (and depth / base_filters when lists) must have ``members`` entries.
    """

    def per_member(value: int | float | Sequence, key: str) -> list:
        values = (
            list(value) if isinstance(value, Sequence) and not isinstance(value, str) else [value] * members
        )
        if len(values) != members:
            raise UserError(f"postprocess.unet.{key} has {len(values)} entries but members={members}")
        return values

    sigmas = per_member(target_blur_sigmas, "target_blur_sigmas")
    depths = per_member(depth, "depth")
    filters = per_member(base_filters, "base_filters")
    return [MemberSpec(int(d), int(f), float(s)) for d, f, s in zip(depths, filters, sigmas, strict=True)]


def _conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class UNet(nn.Module):
    """A plain U-Net: ``depth`` down-samplings, ``base_filters`` doubling per level, one logit channel.

    Input float32 (B, 3, H, W) in [0, 1], any H and W (padded to a multiple of 2**depth inside and cropped
    back); each image is standardised by its own mean and spread so dark and bright images look alike.
    Output logits float32 (B, 1, H, W).
    """

    def __init__(self, depth: int = 4, base_filters: int = 32, in_channels: int = 3) -> None:
        super().__init__()
        if depth < 1 or base_filters < 1:
            raise UserError(
                f"postprocess.unet: depth ({depth}) and base_filters ({base_filters}) must be >= 1"
            )
        self.depth = depth
        widths = [base_filters * 2**level for level in range(depth + 1)]
        self.down = nn.ModuleList([_conv_block(in_channels, widths[0])])
        self.down.extend(_conv_block(widths[i], widths[i + 1]) for i in range(depth))
        self.upsample = nn.ModuleList(
            nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2) for i in reversed(range(depth))
        )
        self.up = nn.ModuleList(_conv_block(2 * widths[i], widths[i]) for i in reversed(range(depth)))
        self.head = nn.Conv2d(widths[0], 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        spread = x.std(dim=(1, 2, 3), keepdim=True) + 1e-3
        x = (x - mean) / spread
        multiple = 2**self.depth
        x = F.pad(x, (0, -width % multiple, 0, -height % multiple), mode="replicate")
        skips = []
        for level, block in enumerate(self.down):
            x = block(x if level == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        skips.pop()
        for upsample, block in zip(self.upsample, self.up, strict=True):
            x = block(torch.cat([skips.pop(), upsample(x)], dim=1))
        return self.head(x)[..., :height, :width]


def foreground_target(labels: np.ndarray, blur_sigma: float) -> np.ndarray:
    """Training target float32 (H, W) in [0, 1] from a label image int (H, W).

    Foreground is every object pixel except those touching a different object (so ``P`` dips between
    touching nuclei), blurred with a Gaussian of ``blur_sigma`` px (0: binary).
    """
    padded = np.pad(labels, 1, mode="edge")
    centre = padded[1:-1, 1:-1]
    neighbours = (padded[:-2, 1:-1], padded[2:, 1:-1], padded[1:-1, :-2], padded[1:-1, 2:])
    between = np.logical_or.reduce([(n > 0) & (n != centre) for n in neighbours])
    target = ((centre > 0) & ~between).astype(np.float32)
    if blur_sigma > 0:
        target = ndimage.gaussian_filter(target, blur_sigma)
    return np.clip(target, 0.0, 1.0)


def image_tensor(image: np.ndarray) -> torch.Tensor:
    """np.uint8 (H, W, 3) -> float32 (3, H, W) in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float().div_(255.0)


class CropDataset(Dataset):
    """Random square crops with flips and 90-degree rotations from (image, labels) pairs.

    images: np.uint8 (H, W, 3); labels: int (H, W), at the working scale. Length = pairs x crops_per_image.
    Item: (image float32 (3, c, c) in [0, 1], target float32 (1, c, c)). Crops are a function of the seed,
    the index and ``epoch`` (set by the training module), so runs repeat exactly.
    """

    def __init__(
        self,
        pairs: Sequence[tuple[np.ndarray, np.ndarray]],
        crop_size: int,
        crops_per_image: int,
        blur_sigma: float,
        seed: int = 0,
    ) -> None:
        if not pairs:
            raise UserError("no (image, labels) pairs to train the U-Net ensemble on")
        self.images = [image for image, _ in pairs]
        self.targets = [foreground_target(labels, blur_sigma) for _, labels in pairs]
        self.crop_size = crop_size
        self.crops_per_image = crops_per_image
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.images) * self.crops_per_image

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng([self.seed, self.epoch, index])
        image, target = (
            self.images[index // self.crops_per_image],
            self.targets[index // self.crops_per_image],
        )
        size = self.crop_size
        pad_y, pad_x = max(size - image.shape[0], 0), max(size - image.shape[1], 0)
        if pad_y or pad_x:
            image = np.pad(image, ((0, pad_y), (0, pad_x), (0, 0)), mode="reflect")
            target = np.pad(target, ((0, pad_y), (0, pad_x)), mode="reflect")
        y = int(rng.integers(0, image.shape[0] - size + 1))
        x = int(rng.integers(0, image.shape[1] - size + 1))
        image, target = image[y : y + size, x : x + size], target[y : y + size, x : x + size]
        turns, flip = int(rng.integers(4)), bool(rng.integers(2))
        image, target = np.rot90(image, turns), np.rot90(target, turns)
        if flip:
            image, target = image[:, ::-1], target[:, ::-1]
        return image_tensor(image), torch.from_numpy(target.copy())[None]


class UNetModule(pl.LightningModule):
    """Trains one member: binary cross-entropy between its logits and the (blurred) foreground target."""

    def __init__(self, depth: int, base_filters: int, lr: float) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = UNet(depth=depth, base_filters=base_filters)
        self.epoch_losses: list[float] = []
        self._running: list[float] = []

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        image, target = batch
        loss = F.binary_cross_entropy_with_logits(self.net(image), target)
        self.log("train_loss", loss, prog_bar=True)
        self._running.append(float(loss.detach()))
        return loss

    def on_train_epoch_start(self) -> None:
        dataset = self.trainer.train_dataloader.dataset
        if isinstance(dataset, CropDataset):
            dataset.epoch = self.current_epoch

    def on_train_epoch_end(self) -> None:
        if self._running:
            self.epoch_losses.append(float(np.mean(self._running)))
        self._running = []

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)


class UNetEnsemble:
    """Trained members and their specs; the mean of their sigmoid outputs is the probability map P."""

    def __init__(
        self,
        nets: Sequence[UNet],
        specs: Sequence[MemberSpec],
        device: str | torch.device = "cpu",
        tile_size: int = 512,
        tile_overlap: int = 64,
    ):
        if len(nets) != len(specs) or not nets:
            raise ValueError("an ensemble needs one spec per network and at least one network")
        if not 0 <= 2 * tile_overlap < tile_size:
            raise UserError(
                f"U-Net tiles: need 0 <= 2 x overlap < tile size, got {tile_overlap} and {tile_size}"
            )
        self.device = torch.device(device)
        self.nets = [net.to(self.device).eval() for net in nets]
        self.specs = list(specs)
        self.tile_size = tile_size
        self.tile_overlap = tile_overlap

    @torch.inference_mode()
    def predict_probability(self, images: np.ndarray | Sequence[np.ndarray]) -> np.ndarray | list[np.ndarray]:
        """P for one image np.uint8 (H, W, 3) -> float32 (H, W) in [0, 1], or for a list of them -> list.

        Images are at the segmenter's working scale, as in training. Images larger than ``tile_size`` are
        predicted in tiles overlapping by ``tile_overlap`` px, blended with weights that fall towards tile
        edges, so memory stays bounded and there are no seams.
        """
        if isinstance(images, np.ndarray) and images.ndim == 3:
            return self._predict_one(images)
        return [self._predict_one(image) for image in images]

    def _predict_tile(self, tile: np.ndarray) -> torch.Tensor:
        batch = image_tensor(tile)[None].to(self.device)
        total = torch.zeros(tile.shape[:2], device=self.device)
        for net in self.nets:
            total += torch.sigmoid(net(batch).float())[0, 0]
        return total / len(self.nets)

    def _predict_one(self, image: np.ndarray) -> np.ndarray:
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an RGB image (H, W, 3), got shape {image.shape}")
        height, width = image.shape[:2]
        if max(height, width) <= self.tile_size:
            return self._predict_tile(image).cpu().numpy()
        size, overlap = self.tile_size, self.tile_overlap

        def starts(length: int) -> list[int]:
            if length <= size:
                return [0]
            return sorted({*range(0, length - size, size - overlap), length - size})

        def ramp(length: int) -> torch.Tensor:
            position = torch.arange(length, dtype=torch.float32, device=self.device)
            edge = torch.minimum(position + 1, length - position)
            return torch.clamp(edge / max(overlap, 1), 1e-3, 1.0)

        total = torch.zeros((height, width), device=self.device)
        weight = torch.zeros((height, width), device=self.device)
        for y in starts(height):
            for x in starts(width):
                tile = image[y : y + size, x : x + size]
                tile_weight = ramp(tile.shape[0])[:, None] * ramp(tile.shape[1])[None, :]
                total[y : y + size, x : x + size] += tile_weight * self._predict_tile(tile)
                weight[y : y + size, x : x + size] += tile_weight
        return (total / weight).cpu().numpy()

    def save(self, path: str | Path) -> Path:
        """One file with every member's spec and weights (atomic). Returns the path written."""
        payload = {
            "format": ENSEMBLE_FORMAT,
            "members": [
                {"spec": asdict(spec), "state_dict": {k: v.cpu() for k, v in net.state_dict().items()}}
                for spec, net in zip(self.specs, self.nets, strict=True)
            ],
        }
        path = Path(path)
        with atomic_write(path) as tmp:
            torch.save(payload, tmp)
        return path


def load_ensemble(path: str | Path, device: str | torch.device = "cpu") -> UNetEnsemble:
    """An ensemble saved by ``UNetEnsemble.save``; needs nothing else. Raises UserError on a bad file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"U-Net ensemble file {path} does not exist: train the postprocess stage first")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        if payload.get("format") != ENSEMBLE_FORMAT:
            raise ValueError(f"unknown format {payload.get('format')!r}")
        specs = [MemberSpec(**member["spec"]) for member in payload["members"]]
        nets = []
        for spec, member in zip(specs, payload["members"], strict=True):
            net = UNet(depth=spec.depth, base_filters=spec.base_filters)
            net.load_state_dict(member["state_dict"])
            nets.append(net)
    except (OSError, RuntimeError, KeyError, ValueError, TypeError, pickle.UnpicklingError) as error:
        raise UserError(f"{path} is not a U-Net ensemble file written by nucleaizer ({error})") from error
    return UNetEnsemble(nets, specs, device)


def train_ensemble(
    pairs: Sequence[tuple[np.ndarray, np.ndarray]],
    specs: Sequence[MemberSpec],
    epochs: int = 20,
    lr: float = 1e-3,
    batch_size: int = 8,
    crop_size: int = 256,
    crops_per_image: int = 4,
    trainer: Mapping[str, object] | None = None,
    seed: int = 0,
) -> tuple[UNetEnsemble, list[list[float]]]:
    """Train one U-Net per spec on (image np.uint8 (H, W, 3), labels int (H, W)) pairs at the working scale.

    trainer: Lightning settings as a plain dict (accelerator, devices, num_nodes, strategy, precision,
    deterministic, enable_progress_bar, ...; ``num_workers`` goes to the data loader, any other key to
    ``pl.Trainer``, e.g. ``max_steps``). Returns the ensemble (on CPU) and each member's mean loss per epoch.
    """
    settings = dict(trainer or {})
    num_workers = int(settings.pop("num_workers", 0) or 0)
    settings.setdefault("enable_progress_bar", False)
    nets, losses = [], []
    for index, spec in enumerate(specs):
        log.info(
            "U-Net member %d/%d: depth %d, %d base filters, target blur %.2f px",
            index + 1,
            len(specs),
            spec.depth,
            spec.base_filters,
            spec.blur_sigma,
        )
        pl.seed_everything(seed + index, workers=True, verbose=False)
        dataset = CropDataset(pairs, crop_size, crops_per_image, spec.blur_sigma, seed=seed + index)
        loader = DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=True,
            num_workers=num_workers,
            drop_last=len(dataset) > batch_size,
            persistent_workers=False,
        )
        module = UNetModule(spec.depth, spec.base_filters, lr)
        fit = pl.Trainer(
            max_epochs=epochs,
            logger=False,
            enable_checkpointing=False,
            enable_model_summary=False,
            **settings,
        )
        fit.fit(module, loader)
        nets.append(module.net.cpu())
        losses.append(module.epoch_losses)
    return UNetEnsemble(nets, specs), losses
