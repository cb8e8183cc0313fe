"""The DCGAN generator of the PyTorch tutorial (Radford et al. 2016), e.g. the DigiFace prior.

``main`` is an ``nn.Sequential``: ConvTranspose(z -> c0, k4 s1 p0) + BN + ReLU gives 4x4, then one
ConvTranspose(k4 s2 p1) + BN + ReLU block per doubling, then ConvTranspose to 3 channels + Tanh.
No biases. Composable layers are the outputs of the BN-ReLU blocks, named by module path
(``main.2``, ``main.5``, ...), after the latent (index 0).

BatchNorm runs in eval mode (running statistics). Nothing normalises the fused feature before the
next transposed conv, so the scale of ``sum_n alpha_n F_n`` matters here, unlike in PGGAN.
"""

from __future__ import annotations

from itertools import pairwise
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from inversion.generators.base import StagedGenerator
from mganprior.core.errors import InputError
from mganprior.core.weights import build_checked, check_backed


class FoldedBlock(nn.Module):
    """ConvTranspose -> BatchNorm -> ReLU with the eval-mode BatchNorm folded into the frozen
    convolution (``w * g / sqrt(var + eps)`` per output channel, plus a bias): one op fewer per
    block, equal within fp32 rounding. In training mode, or with ``fold`` off, the plain modules
    run. It holds the generator's own modules, so the state dict is unchanged."""

    def __init__(self, conv: nn.ConvTranspose2d, norm: nn.BatchNorm2d, act: nn.Module) -> None:
        super().__init__()
        self.conv, self.norm, self.act = conv, norm, act
        self.fold = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.fold or self.norm.training:
            return self.act(self.norm(self.conv(x)))
        scale = self.norm.weight * torch.rsqrt(self.norm.running_var + self.norm.eps)
        bias = self.norm.bias - self.norm.running_mean * scale
        weight = self.conv.weight * scale[None, :, None, None]
        x = F.conv_transpose2d(x, weight, bias, stride=self.conv.stride,
                               padding=self.conv.padding)
        return F.relu(x)


class DCGANGenerator(StagedGenerator):
    """Tutorial DCGAN: ``channels[i]`` is the width at 4 * 2**i px, resolution 4 * 2**len."""

    family = "dcgan"

    def __init__(self, z_dim: int = 100, channels: list[int] | tuple[int, ...] = (512, 256, 128, 64)
                 ) -> None:
        super().__init__()
        channels = [int(c) for c in channels]
        if not channels:
            raise InputError("a DCGAN generator needs at least one channel width")
        self.z_dim = z_dim
        self.channels = channels
        self.resolution = 4 * 2 ** len(channels)
        modules: list[nn.Module] = [nn.ConvTranspose2d(z_dim, channels[0], 4, 1, 0, bias=False),
                                    nn.BatchNorm2d(channels[0]), nn.ReLU(True)]
        for cin, cout in pairwise(channels):
            modules += [nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False), nn.BatchNorm2d(cout),
                        nn.ReLU(True)]
        modules += [nn.ConvTranspose2d(channels[-1], 3, 4, 2, 1, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*modules)
        blocks = len(channels)
        self._stage_list = [(f"main.{3 * b + 2}", FoldedBlock(*self.main[3 * b: 3 * b + 3]))
                            for b in range(blocks)] + [("output", self.main[3 * blocks:])]
        self.eval()

    def _stages(self):
        return self._stage_list

    def config(self) -> dict[str, Any]:
        return {"family": self.family, "z_dim": self.z_dim, "channels": self.channels}

    def use_fast_paths(self, enabled: bool = True) -> DCGANGenerator:
        """BatchNorm folded into the frozen convolutions (the default) or the plain modules."""
        for _, stage in self._stage_list:
            if isinstance(stage, FoldedBlock):
                stage.fold = enabled
        return self

    def latent_weight(self, layers: str = "all") -> tuple[torch.Tensor, str]:
        """The first transposed conv (z -> 4x4) as a matrix ``[C * 16, z_dim]``."""
        self._first_layer_only(layers, "main.0")
        weight = self.main[0].weight.detach()  # [z, C, 4, 4]
        return weight.permute(1, 2, 3, 0).reshape(-1, self.z_dim), "z"

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> DCGANGenerator:
        return cls(z_dim=int(config["z_dim"]), channels=[int(c) for c in config["channels"]])

    @classmethod
    def from_state_dict(cls, state_dict: dict[str, Any],
                        source: str = "DCGAN state dict") -> DCGANGenerator:
        """Tutorial layout (``main.{i}.*``), also wrapped as ``{"netG_state_dict": ...}``."""
        if "netG_state_dict" in state_dict:
            state_dict = state_dict["netG_state_dict"]
        if "main.0.weight" not in state_dict:
            keys = ", ".join(list(state_dict)[:5])
            raise InputError(f"{source} is not a tutorial DCGAN generator (first keys: {keys})")
        check_backed(state_dict, source)
        weights = [state_dict["main.0.weight"]]
        while f"main.{3 * len(weights)}.weight" in state_dict and \
                f"main.{3 * len(weights) + 1}.weight" in state_dict:
            weights.append(state_dict[f"main.{3 * len(weights)}.weight"])
        if any(weight.dim() != 4 for weight in weights):
            raise InputError(f"{source}: the transposed convolutions main.0, main.3, ... must "
                             "hold 4-d weights")
        z_dim, channels = int(weights[0].shape[0]), [int(w.shape[1]) for w in weights]
        return build_checked(lambda: cls(z_dim=z_dim, channels=channels), state_dict,
                             source).eval()
