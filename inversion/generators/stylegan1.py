"""StyleGAN (v1) (Karras et al., "A Style-Based Generator Architecture for Generative Adversarial
Networks", 2019), written from the paper and the genforce layout that the official mGANprior code
converts NVIDIA's TensorFlow pickles into (``stylegan_*_generator.pth``).

The modules carry the file's key names, so a genforce ``.pth`` loads with a strict key check and
our safetensors hold the same keys.

**Mapping.** ``z`` normalised by its second moment, then ``mapping_layers`` dense layers with
equalised learning rate (gain sqrt 2, learning-rate multiplier 0.01) and leaky ReLU 0.2 (no extra
gain), to ``w``. The hidden width (``mapping_width``) is 512 in the official models.

**Synthesis.** Two layers per resolution, ``layer{2k}`` and ``layer{2k+1}`` at ``4 * 2**k`` px:
``layer0`` is a learnt constant, ``layer{2k}`` (k > 0) doubles the resolution (nearest 2x then a
3x3 convolution, or, where the file stores it *fused*, a stride-2 transposed convolution whose
4x4 kernel sums the 3x3 kernel over four shifts), then the [1, 2, 1] blur; every other layer is a
3x3 convolution. Each layer ends with the epilogue: the stored noise map times a per-channel
weight, a bias, leaky ReLU 0.2, instance normalisation and the style modulation
``x * (s + 1) + b`` with ``(s, b)`` an affine function of the layer's row of ``w``. The last
``output`` ToRGB (a 1x1 convolution) makes the image; the other ToRGBs are stored but unused.
Noise is never random: the stored ``apply_noise.noise`` buffers are used, as the official code
does (``randomize_noise=False``).

**Cuts.** The composable layers are the outputs of ``layer0`` .. ``layer{L-1}`` (index i + 1 is
``layer{i}``: the official ``--composing_layer`` l is our index l). The features are fused with
the alphas (the paper's rule: ``mean``, as for the PGGAN) and the styles of the layers after the
cut cross it as for StyleGAN2 (``stylebased``).

**Truncation** (``with_truncation(psi, layers)``): the official default is psi 0.7 on the first
8 layers; ``G(z)`` alone is untruncated.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from inversion.generators.base import CarrySpec, Cut, Layer
from inversion.generators.stylebased import STYLES, StyleBasedGenerator, check_truncation
from mganprior.core.errors import InputError

SQRT2 = math.sqrt(2.0)
MAX_RESOLUTION = 4096


class Dense(nn.Module):
    """genforce's ``DenseBlock``: ``fc`` (no bias) scaled by ``gain / sqrt(in) * lr``, plus
    ``wscale.bias * lr``."""

    def __init__(self, in_features: int, out_features: int, gain: float, lr: float) -> None:
        super().__init__()
        self.fc = nn.Linear(in_features, out_features, bias=False)
        self.wscale = nn.Module()
        self.wscale.bias = nn.Parameter(torch.zeros(out_features))
        self.scale, self.lr = gain / math.sqrt(in_features) * lr, lr

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x) * self.scale + self.wscale.bias * self.lr


class Mapping(nn.Module):
    def __init__(self, z_dim: int, width: int, w_dim: int, layers: int) -> None:
        super().__init__()
        for i in range(layers):
            self.add_module(f"dense{i}", Dense(z_dim if i == 0 else width,
                                               w_dim if i == layers - 1 else width, SQRT2, 0.01))
        self.layers = layers

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = z / torch.sqrt(z.square().mean(dim=1, keepdim=True) + 1e-8)
        for i in range(self.layers):
            x = F.leaky_relu(getattr(self, f"dense{i}")(x), 0.2)
        return x


class Epilogue(nn.Module):
    """Stored noise x weight, bias, leaky ReLU, instance norm, style modulation."""

    def __init__(self, resolution: int, channels: int, w_dim: int) -> None:
        super().__init__()
        self.apply_noise = nn.Module()
        self.apply_noise.register_buffer("noise", torch.randn(1, 1, resolution, resolution))
        self.apply_noise.weight = nn.Parameter(torch.zeros(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.style_mod = nn.Module()
        self.style_mod.dense = Dense(w_dim, 2 * channels, 1.0, 1.0)
        self.channels = channels

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        x = x + self.apply_noise.noise * self.apply_noise.weight.view(1, -1, 1, 1)
        x = F.leaky_relu(x + self.bias.view(1, -1, 1, 1), 0.2)
        x = x - x.mean(dim=(2, 3), keepdim=True)
        x = x / torch.sqrt(x.square().mean(dim=(2, 3), keepdim=True) + 1e-8)
        style = self.style_mod.dense(w).view(-1, 2, self.channels, 1, 1)
        return x * (style[:, 0] + 1) + style[:, 1]


def blur_kernel(channels: int) -> torch.Tensor:
    """The normalised [1, 2, 1] x [1, 2, 1] filter, one per channel ``[C, 1, 3, 3]``."""
    taps = torch.tensor([1.0, 2.0, 1.0])
    kernel = taps[:, None] * taps[None, :]
    return (kernel / kernel.sum()).expand(channels, 1, 3, 3).clone()


class SynthesisLayer(nn.Module):
    """One synthesis layer: the constant (``first``), an up-sampling convolution (``up``, stored
    fused or not) or a plain 3x3 convolution, then the epilogue."""

    def __init__(self, kind: str, resolution: int, in_channels: int, out_channels: int,
                 w_dim: int) -> None:
        super().__init__()
        self.kind = kind
        if kind == "first":
            self.const = nn.Parameter(torch.ones(1, out_channels, resolution, resolution))
        elif kind == "fused":
            self.weight = nn.Parameter(torch.randn(3, 3, in_channels, out_channels))
        else:
            self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        if kind in ("up", "fused"):
            self.blur = nn.Module()
            self.blur.register_buffer("kernel", blur_kernel(out_channels))
        self.scale = SQRT2 / math.sqrt(in_channels * 9)
        self.epilogue = Epilogue(resolution, out_channels, w_dim)

    def forward(self, x: torch.Tensor | None, w: torch.Tensor) -> torch.Tensor:
        if self.kind == "first":
            x = self.const.expand(w.shape[0], -1, -1, -1)
        elif self.kind == "fused":
            kernel = F.pad(self.weight * self.scale, (0, 0, 0, 0, 1, 1, 1, 1))
            kernel = kernel[1:, 1:] + kernel[:-1, 1:] + kernel[1:, :-1] + kernel[:-1, :-1]
            x = F.conv_transpose2d(x, kernel.permute(2, 3, 0, 1), stride=2, padding=1)
        elif self.kind == "up":
            x = self.conv(F.interpolate(x, scale_factor=2, mode="nearest")) * self.scale
        else:
            x = self.conv(x) * self.scale
        if self.kind in ("up", "fused"):
            x = F.conv2d(x, self.blur.kernel, padding=1, groups=x.shape[1])
        return self.epilogue(x, w)


class ToRGB(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, 3, 1, bias=False)
        self.bias = nn.Parameter(torch.zeros(3))
        self.scale = 1 / math.sqrt(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) * self.scale + self.bias.view(1, -1, 1, 1)


class Synthesis(nn.Module):
    def __init__(self, resolution: int, channels: list[int], w_dim: int,
                 fused: list[int]) -> None:
        super().__init__()
        self.lod = nn.Parameter(torch.zeros(()))
        for k, width in enumerate(channels):
            side = 4 << k
            kind = "first" if k == 0 else "fused" if side in fused else "up"
            self.add_module(f"layer{2 * k}", SynthesisLayer(
                kind, side, channels[k - 1] if k else width, width, w_dim))
            self.add_module(f"layer{2 * k + 1}", SynthesisLayer("conv", side, width, width, w_dim))
            self.add_module(f"output{k}", ToRGB(width))
        self.num_layers, self.blocks = 2 * len(channels), len(channels)


class TruncationBuffer(nn.Module):
    def __init__(self, w_dim: int) -> None:
        super().__init__()
        self.register_buffer("w_avg", torch.zeros(w_dim))


class StyleGAN1Generator(StyleBasedGenerator):
    """StyleGAN (v1) generator in the genforce layout, any resolution and widths.

    ``channels[k]`` is the width at ``4 * 2**k`` px; ``fused`` lists the resolutions whose
    up-sampling layer is stored fused (the official ``fused_scale='auto'``: 128 px and up).
    """

    family: ClassVar[str] = "stylegan1"

    def __init__(self, resolution: int = 1024, z_dim: int = 512, w_dim: int = 512,
                 channels: list[int] | None = None, mapping_layers: int = 8,
                 mapping_width: int = 512, fused: list[int] | None = None,
                 truncation_psi: float = 1.0, truncation_layers: int | None = 8) -> None:
        super().__init__()
        blocks = int(math.log2(resolution)) - 1 if resolution >= 4 else 0
        if not 4 <= resolution <= MAX_RESOLUTION or 4 << (blocks - 1) != resolution:
            raise InputError(f"resolution must be a power of two in [4, {MAX_RESOLUTION}], got "
                             f"{resolution}", field="resolution")
        channels = list(channels) if channels is not None else \
            [min(16384 // (4 << k), 512) for k in range(blocks)]
        if len(channels) != blocks:
            raise InputError(f"channels: a StyleGAN at {resolution} px needs {blocks} widths "
                             f"(4 px to {resolution} px), got {len(channels)}", field="channels")
        fused = sorted(set(fused if fused is not None else
                           [4 << k for k in range(1, blocks) if 4 << k >= 128]))
        if any(side not in [4 << k for k in range(1, blocks)] for side in fused):
            raise InputError(f"fused must list up-sampling resolutions (8 to {resolution}), got "
                             f"{fused}", field="fused")
        check_truncation(truncation_psi, truncation_layers)
        self.resolution, self.mapping_z_dim, self.w_dim = resolution, z_dim, w_dim
        self.channels, self.mapping_layers, self.mapping_width = channels, mapping_layers, \
            mapping_width
        self.fused = fused
        self.truncation_psi, self.truncation_layers = float(truncation_psi), truncation_layers
        self.latent_space = "z"
        self.num_ws = 2 * blocks
        self.mapping = Mapping(z_dim, mapping_width, w_dim, mapping_layers)
        self.truncation = TruncationBuffer(w_dim)
        self.synthesis = Synthesis(resolution, channels, w_dim, fused)

    # -- the style-based contract -----------------------------------------------------------------
    @property
    def w_avg(self) -> torch.Tensor:
        return self.truncation.w_avg

    def config(self) -> dict[str, Any]:
        return {"family": self.family, "resolution": self.resolution, "z_dim": self.mapping_z_dim,
                "w_dim": self.w_dim, "channels": self.channels,
                "mapping_layers": self.mapping_layers, "mapping_width": self.mapping_width,
                "fused": self.fused, **self.truncation_config()}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> StyleGAN1Generator:
        layers = config.get("truncation_layers", 8)
        return cls(resolution=int(config["resolution"]), z_dim=int(config["z_dim"]),
                   w_dim=int(config["w_dim"]), channels=[int(c) for c in config["channels"]],
                   mapping_layers=int(config["mapping_layers"]),
                   mapping_width=int(config["mapping_width"]),
                   fused=[int(r) for r in config.get("fused", [])],
                   truncation_psi=float(config.get("truncation_psi", 1.0)),
                   truncation_layers=None if layers is None else int(layers))

    @classmethod
    def from_state_dict(cls, state_dict: dict[str, Any], source: str = "StyleGAN state dict"
                        ) -> StyleGAN1Generator:
        from inversion.generators.stylegan1_files import from_genforce

        return from_genforce(state_dict, source)

    def style_layers(self) -> list[str]:
        """The synthesis layers in ``ws`` order: row i styles ``layer{i}``."""
        return [f"layer{i}" for i in range(self.num_ws)]

    def style_weight(self, name: str) -> torch.Tensor:
        """Each layer's ``style_mod`` dense weight, which genforce/sefa factorises for StyleGAN
        (there without its gain, one scalar per layer that SeFa's normalisation removes)."""
        dense = getattr(self.synthesis, name).epilogue.style_mod.dense
        return dense.fc.weight.detach() * dense.scale

    # -- synthesis ---------------------------------------------------------------------------
    def _run(self, x: torch.Tensor | None, ws: torch.Tensor, start: int, stop: int,
             w_offset: int = 0) -> torch.Tensor:
        """Synthesis layers ``[start, stop)``; ``ws[:, i - w_offset]`` styles ``layer{i}``."""
        for i in range(start, stop):
            x = getattr(self.synthesis, f"layer{i}")(x, ws[:, i - w_offset])
        return x

    def to_rgb(self, x: torch.Tensor) -> torch.Tensor:
        return getattr(self.synthesis, f"output{self.synthesis.blocks - 1}")(x)

    def synthesize(self, ws: torch.Tensor) -> torch.Tensor:
        """Styles ``[B, num_ws, w_dim]`` to images ``[B, 3, R, R]`` (unclamped)."""
        return self.to_rgb(self._run(None, ws, 0, self.num_ws))

    def _layer_names(self) -> list[str]:
        return self.style_layers()

    @torch.no_grad()
    def _measure_shapes(self) -> list[tuple[int, int, int]]:
        ws = torch.zeros(1, self.num_ws, self.w_dim, device=self.device)
        shapes, x = [], None
        for i in range(self.num_ws):
            x = self._run(x, ws, i, i + 1)
            shapes.append(tuple(x.shape[1:]))
        return shapes

    def carry_specs(self, layer: Layer) -> tuple[CarrySpec, ...]:
        return (STYLES,) if 0 < layer.index < self.num_ws else ()

    def head(self, z: torch.Tensor, layer: str | int | Layer) -> Cut:
        layer = self.layer(layer)
        if layer.index == 0:
            return Cut(self._check_latents(z)[:, :, None, None])
        ws = self.ws(z)
        x = self._run(None, ws, 0, layer.index)
        return Cut(x, {"styles": ws[:, layer.index:]} if layer.index < self.num_ws else {})

    def tail(self, cut: Cut, layer: str | int | Layer) -> torch.Tensor:
        layer = self.layer(layer)
        if layer.index == 0:
            return self.synthesize(self.ws(cut.features.flatten(1)))
        x = cut.features
        if layer.index < self.num_ws:
            x = self._run(x, cut.carry["styles"], layer.index, self.num_ws,
                          w_offset=layer.index)
        return self.to_rgb(x)
