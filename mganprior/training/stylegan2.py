"""Train a StyleGAN2 generator with the same loop as the PGGAN one (``training.gan.train_gan``):
non-saturating loss, lazy R1, EMA, style-mixing regularisation and optional path-length
regularisation, from the StyleGAN2 paper.

The generator is :class:`inversion.generators.stylegan2.StyleGAN2Generator`, the class that
loads NVIDIA and rosinality checkpoints. It trains with the constant noise it is later inverted
with (the projector convention), so nothing about a trained model differs between training and
inversion. ``w_avg`` follows the batch mean of ``w`` (an exponential average, beta 0.995), as
truncation needs. The discriminator is residual: a 1x1 FromRGB, then per resolution two
equalised-lr 3x3 convolutions and a 2x average-pool with a 1x1 skip (summed, divided by sqrt 2),
then minibatch standard deviation, a 3x3 convolution and two dense layers. Average pooling stands
in for StyleGAN2's FIR downsampling: a simplification for small CPU-trained models.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from inversion.generators.pggan import EqualizedConv2d
from inversion.generators.stylegan2 import StyleGAN2Generator
from mganprior.core.errors import field_error
from mganprior.training.gan import check_common

W_AVG_BETA = 0.995


def _act(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, 0.2) * math.sqrt(2.0)


class ResidualBlock(nn.Module):
    """Two 3x3 convolutions and a 2x average-pool, plus a pooled 1x1 skip; the sum / sqrt 2."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv0 = EqualizedConv2d(in_channels, in_channels, 3, padding=1, gain=1.0)
        self.conv1 = EqualizedConv2d(in_channels, out_channels, 3, padding=1, gain=1.0)
        self.skip = EqualizedConv2d(in_channels, out_channels, 1, gain=1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = self.skip(F.avg_pool2d(x, 2))
        x = F.avg_pool2d(_act(self.conv1(_act(self.conv0(x)))), 2)
        return (x + skip) / math.sqrt(2.0)


class StyleGAN2Discriminator(nn.Module):
    """Images [B, 3, R, R] in [-1, 1] -> realness logits [B]; ``channels`` as the generator's
    (width at 4 px first)."""

    def __init__(self, resolution: int, channels: list[int]) -> None:
        super().__init__()
        self.from_rgb = EqualizedConv2d(3, channels[-1], 1, gain=1.0)
        self.blocks = nn.ModuleList(ResidualBlock(channels[k], channels[k - 1])
                                    for k in range(len(channels) - 1, 0, -1))
        top = channels[0]
        self.final_conv = EqualizedConv2d(top + 1, top, 3, padding=1, gain=1.0)
        self.final_dense = nn.Linear(top * 16, top)
        self.logit = nn.Linear(top, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = _act(self.from_rgb(images))
        for block in self.blocks:
            x = block(x)
        group = math.gcd(4, x.shape[0])
        stats = (x.reshape(group, -1, *x.shape[1:]).var(dim=0, unbiased=False) + 1e-8).sqrt()
        stats = stats.mean(dim=(1, 2, 3)).reshape(-1, 1, 1, 1).repeat(group, 1, *x.shape[2:])
        x = _act(self.final_conv(torch.cat([x, stats], dim=1)))
        return self.logit(_act(self.final_dense(x.flatten(1)))).flatten()


@dataclass
class StyleGAN2TrainConfig:
    """Everything that defines a StyleGAN2 training run; a resume must match it (but
    ``iterations``)."""

    architecture: ClassVar[str] = "stylegan2"
    resolution: int = 64
    z_dim: int = 64
    w_dim: int = 64
    mapping_layers: int = 4
    channels: list[int] = field(default_factory=lambda: [64, 64, 64, 32, 32])
    iterations: int = 6000
    batch: int = 16
    lr: float = 0.002
    betas: tuple[float, float] = (0.0, 0.99)
    r1_gamma: float = 1.0
    r1_every: int = 16
    ema_half_life_images: float = 10000.0
    mixing_prob: float = 0.9
    pl_weight: float = 0.0  # path-length regularisation (0: off)
    pl_every: int = 4
    seed: int = 0
    flip: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {"architecture": self.architecture, **json.loads(json.dumps(asdict(self)))}

    def validate(self) -> None:
        check_common(self)
        for name in ("mapping_layers", "w_dim", "pl_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise field_error(name, f"must be a positive integer, got {value}")
        if not 0 <= self.mixing_prob <= 1:
            raise field_error("mixing_prob", f"must be in [0, 1], got {self.mixing_prob}")
        if not 0 <= self.pl_weight < math.inf:
            raise field_error("pl_weight", f"must be a finite number >= 0, got {self.pl_weight}")
        if len(self.channels) != int(math.log2(self.resolution)) - 1:
            raise field_error("channels", f"must give {int(math.log2(self.resolution)) - 1} "
                              f"widths (4 px to {self.resolution} px), got {self.channels}")

    def build(self) -> tuple[nn.Module, nn.Module]:
        generator = StyleGAN2Generator(self.resolution, self.z_dim, self.w_dim, self.channels,
                                       self.mapping_layers)
        return generator, StyleGAN2Discriminator(self.resolution, self.channels)

    def fakes(self, generator: StyleGAN2Generator, batch: int, rng: torch.Generator,
              device: torch.device) -> torch.Tensor:
        """Images from random styles, two mixed at a random layer with ``mixing_prob``; the
        batch's mean ``w`` moves ``w_avg``."""
        z = torch.randn(2, batch, self.z_dim, generator=rng).to(device)
        mix = bool(torch.rand(1, generator=rng) < self.mixing_prob)
        cutoff = int(torch.randint(1, generator.num_ws, (1,), generator=rng))
        w = generator.mapping(z.flatten(0, 1)).reshape(2, batch, -1)
        if generator.training:
            with torch.no_grad():
                generator.mapping.w_avg.lerp_(w[0].mean(dim=0), 1 - W_AVG_BETA)
        ws = w[0][:, None].repeat(1, generator.num_ws, 1)
        if mix:
            ws[:, cutoff:] = w[1][:, None]
        return generator.synthesize(ws)

    def g_regularizer(self, generator: StyleGAN2Generator, step: int, rng: torch.Generator,
                      device: torch.device, extra: dict[str, Any]) -> torch.Tensor | None:
        """Lazy path-length regularisation: keep ``|J^T y|`` of the styles at its running mean."""
        if self.pl_weight <= 0 or step % self.pl_every:
            return None
        batch = max(1, self.batch // 2)
        z = torch.randn(batch, self.z_dim, generator=rng).to(device)
        ws = generator.mapping(z)[:, None].repeat(1, generator.num_ws, 1)
        images = generator.synthesize(ws)
        noise = torch.randn(images.shape, generator=rng).to(device) / math.sqrt(
            images.shape[2] * images.shape[3])
        (grad,) = torch.autograd.grad((images * noise).sum(), ws, create_graph=True)
        lengths = grad.square().sum(dim=2).mean(dim=1).sqrt()
        mean = extra.get("pl_mean", lengths.detach().mean())
        mean = torch.as_tensor(mean).lerp(lengths.detach().mean().cpu(), 0.01)
        extra["pl_mean"] = mean
        return (lengths - mean.to(device)).square().mean() * self.pl_weight * self.pl_every
