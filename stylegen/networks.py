"""pix2pix networks: a U-Net generator (mask -> image) and a conditional PatchGAN discriminator.

Follows pytorch-CycleGAN-and-pix2pix (unet_256, basic 70x70 PatchGAN) with two deliberate choices:

- The innermost (bottleneck) encoder layer has no normalisation: with batch 1 its output is 1x1 per channel,
  and normalising a single value gives zero.
- ``norm="instance"`` (affine) is the default. With batch size 1, BatchNorm in training mode computes exactly
  per-image statistics, and the original pix2pix rendered test images in training mode too; instance norm is
  that behaviour stated explicitly, and it keeps rendering independent of batch composition and of
  train/eval mode. ``norm="batch"`` is available for the textbook variant.

Two options against what made CPU-budget renders easy to tell from real images (a periodic pattern over
every flat background, the same in every render):

- ``upsample="resize"``: nearest-neighbour up-sampling then a 3x3 convolution in the decoder instead of
  stride-2 transposed convolutions, whose uneven kernel overlap prints a checkerboard (Odena et al. 2016).
- ``noise_channels=n``: n channels of Gaussian noise appended to the mask, so a background without any mask
  pixel still has an input to turn into texture, different in every render.
"""

from __future__ import annotations

import torch
from torch import nn

NORMS = ("instance", "batch")
UPSAMPLES = ("transpose", "resize")


def make_norm(kind: str, channels: int) -> nn.Module:
    """A 2-d normalisation layer of the given kind ("instance" or "batch")."""
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=True, track_running_stats=False)
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    raise ValueError(
        f"unknown norm {kind!r}; choose one of {NORMS} (stylegen config key net_g.norm / net_d.norm)"
    )


def level_filters(base_filters: int, depth: int) -> list[int]:
    """Filters after each down-sampling: base, 2x, 4x, then 8x base for every deeper level (as unet_256)."""
    return [base_filters * min(2**level, 8) for level in range(depth)]


class UnetGenerator(nn.Module):
    """U-Net generator with ``depth`` stride-2 down-samplings and skip connections.

    Input float32 (B, in_channels, H, W) in [-1, 1], H and W multiples of 2**depth; output float32
    (B, out_channels, H, W) in [-1, 1]. depth=8, base_filters=64 is the paper's unet_256.
    Dropout acts in the inner decoder blocks whose input and output both have 8x base filters (three of them
    in unet_256), as in the original. ``in_channels`` counts the mask channels only; ``noise_channels`` of
    N(0, 1) noise are appended to them inside ``forward`` (drawn from torch's global generator unless given).
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 3,
        depth: int = 8,
        base_filters: int = 64,
        dropout: float = 0.5,
        norm: str = "instance",
        upsample: str = "transpose",
        noise_channels: int = 0,
    ) -> None:
        super().__init__()
        if upsample not in UPSAMPLES:
            raise ValueError(f"net_g.upsample must be one of {UPSAMPLES}, got {upsample!r}")
        if noise_channels < 0:
            raise ValueError(f"net_g.noise_channels must be >= 0, got {noise_channels}")
        if depth < 2:
            raise ValueError(f"net_g.depth must be at least 2, got {depth}")
        if base_filters < 1:
            raise ValueError(f"net_g.base_filters must be positive, got {base_filters}")
        self.depth = depth
        self.noise_channels = noise_channels
        filters = level_filters(base_filters, depth)
        innermost = depth - 1
        self.encoder = nn.ModuleList()
        for level in range(depth):
            if level == 0:
                self.encoder.append(nn.Conv2d(in_channels + noise_channels, filters[0], 4, 2, 1))
                continue
            layers: list[nn.Module] = [nn.LeakyReLU(0.2)]
            if level == innermost:
                layers.append(nn.Conv2d(filters[level - 1], filters[level], 4, 2, 1))
            else:
                layers += [
                    nn.Conv2d(filters[level - 1], filters[level], 4, 2, 1, bias=False),
                    make_norm(norm, filters[level]),
                ]
            self.encoder.append(nn.Sequential(*layers))
        self.decoder = nn.ModuleList()
        for level in range(depth):
            in_ch = filters[level] if level == innermost else 2 * filters[level]
            layers = [nn.ReLU()]
            if level == 0:
                layers += [up_conv(upsample, in_ch, out_channels, bias=True), nn.Tanh()]
            else:
                layers += [
                    up_conv(upsample, in_ch, filters[level - 1], bias=False),
                    make_norm(norm, filters[level - 1]),
                ]
                if 4 <= level < innermost and dropout > 0:
                    layers.append(nn.Dropout(dropout))
            self.decoder.append(nn.Sequential(*layers))
        init_weights(self)

    @property
    def multiple(self) -> int:
        """Input height and width must be multiples of this (2**depth)."""
        return 2**self.depth

    def forward(self, x: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """x: mask (B, in_channels, H, W); noise: (B, noise_channels, H, W), drawn here when None."""
        if self.noise_channels:
            if noise is None:
                noise = torch.randn(
                    x.shape[0], self.noise_channels, *x.shape[2:], device=x.device, dtype=x.dtype
                )
            x = torch.cat([x, noise.to(x)], dim=1)
        skips = []
        h = x
        for block in self.encoder:
            h = block(h)
            skips.append(h)
        h = self.decoder[-1](skips[-1])
        for level in range(self.depth - 2, -1, -1):
            h = self.decoder[level](torch.cat([skips[level], h], dim=1))
        return h


def up_conv(kind: str, in_channels: int, out_channels: int, bias: bool) -> nn.Module:
    """A x2 up-sampling convolution: stride-2 4x4 transposed (pix2pix) or nearest resize + 3x3 convolution."""
    if kind == "transpose":
        return nn.ConvTranspose2d(in_channels, out_channels, 4, 2, 1, bias=bias)
    return nn.Sequential(
        nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(in_channels, out_channels, 3, 1, 1, bias=bias)
    )


class PatchDiscriminator(nn.Module):
    """Conditional PatchGAN: (B, in_channels, H, W) -> (B, 1, H', W') real/fake logits, one per patch.

    ``n_layers=3`` stride-2 layers give the 70x70 receptive field of pix2pix. The input is the mask and the
    image concatenated along channels (1 + 3 = 4 channels).
    """

    def __init__(
        self, in_channels: int = 4, base_filters: int = 64, n_layers: int = 3, norm: str = "instance"
    ) -> None:
        super().__init__()
        if n_layers < 1:
            raise ValueError(f"net_d.n_layers must be at least 1, got {n_layers}")
        layers: list[nn.Module] = [nn.Conv2d(in_channels, base_filters, 4, 2, 1), nn.LeakyReLU(0.2)]
        channels = base_filters
        for n in range(1, n_layers + 1):
            out = base_filters * min(2**n, 8)
            stride = 2 if n < n_layers else 1
            layers += [
                nn.Conv2d(channels, out, 4, stride, 1, bias=False),
                make_norm(norm, out),
                nn.LeakyReLU(0.2),
            ]
            channels = out
        layers.append(nn.Conv2d(channels, 1, 4, 1, 1))
        self.model = nn.Sequential(*layers)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def init_weights(module: nn.Module, gain: float = 0.02) -> None:
    """pix2pix initialisation: conv weights N(0, gain), norm scales N(1, gain), biases 0."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d | nn.ConvTranspose2d):
            nn.init.normal_(m.weight, 0.0, gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d | nn.InstanceNorm2d) and m.weight is not None:
            nn.init.normal_(m.weight, 1.0, gain)
            nn.init.zeros_(m.bias)
