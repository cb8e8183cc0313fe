"""The Progressive GAN generator (Karras et al. 2018), as the official checkpoints compute it.

Each conv layer: pixel-norm of its input, nearest 2x upsampling (first conv of every resolution
after 4x4), a conv whose weight is scaled at run time by ``gain / sqrt(fan_in)`` (equalised learning
rate), a bias, LeakyReLU(0.2). The first layer is the latent "dense" layer written as a 4x4 conv
with padding 3 over a 1x1 input; the output is a 1x1 ToRGB conv with gain 1 and no activation.

Composable layers are numbered as in the official mGANprior code: index 0 is the latent, index l
is the output of the l-th conv layer (named ``layer{l}``). At 256 px, l=4 is 512x8x8, l=6 is
512x16x16 and l=8 is 512x32x32. The fused feature enters the next layer through its pixel-norm,
which is why the official 1/N scaling of the composition makes no difference for PGGAN.

Checkpoints: the native layout (``layer{l}.weight``, ``layer{l}.bias``, ``output.weight``,
``output.bias``) and two official layouts converted strictly:

- genforce / mGANprior (``pggan_*256_generator.pth``): ``layer{i}.conv.weight`` and
  ``layer{i}.wscale.bias`` with ``i = l - 1``, ToRGB layers ``output{k}.*`` for every resolution
  (only the last is used) and a ``lod`` scalar that must be 0;
- GAN Dissection / ganseeing (``netdissect.proggan``): ``layer{l}.conv.weight``,
  ``layer{l}.wscale.b``, ``output_{R}x{R}.conv.weight``, ``output_{R}x{R}.wscale.b``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from inversion.generators.base import StagedGenerator
from mganprior.core.errors import InputError
from mganprior.core.weights import build_checked, check_backed, check_state_dict


def pixel_norm(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + eps)


def official_channels(resolution: int, fmaps_base: int = 16384, fmaps_max: int = 512) -> list[int]:
    """Channel widths of the official models, per resolution 4, 8, ..., ``resolution``."""
    return [min(fmaps_base // (4 << i), fmaps_max) for i in range(_num_blocks(resolution))]


def _num_blocks(resolution: int) -> int:
    blocks = int(math.log2(resolution)) - 1
    if resolution < 8 or 2 ** (blocks + 1) != resolution:
        raise InputError(f"PGGAN resolution must be a power of two >= 8, got {resolution}")
    return blocks


class EqualizedConv2d(nn.Module):
    """Conv whose weight is scaled by ``gain / sqrt(fan_in)`` at run time (equalised learning
    rate), plus a bias. The PGGAN generator's layers and its trainer's discriminator share it."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, padding: int = 0,
                 gain: float = math.sqrt(2.0)) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.scale = gain / math.sqrt(in_channels * kernel_size * kernel_size)
        self.padding = padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.scale, self.bias, padding=self.padding)


def fold_upsample(weight: torch.Tensor) -> torch.Tensor:
    """The 4x4 kernel ``[in, out, 4, 4]`` of a stride-2 transposed convolution that equals a
    nearest 2x upsampling followed by the 3x3 convolution ``weight`` ``[out, in, 3, 3]`` with
    padding 1 (what the official PGGAN code calls ``fused_scale``): each output pixel of the
    pair sees the same input pixel through two neighbouring taps, so the taps are summed."""
    padded = F.pad(weight, [1, 1, 1, 1])
    summed = (padded[:, :, 1:, 1:] + padded[:, :, :-1, 1:] + padded[:, :, 1:, :-1]
              + padded[:, :, :-1, :-1])
    return summed.flip([2, 3]).transpose(0, 1)


class PGGANConv(EqualizedConv2d):
    """pixel-norm -> [nearest x2] -> equalised-lr conv + bias -> [LeakyReLU 0.2].

    ``fused``: the upsampling and the conv run as one stride-2 transposed conv with the folded
    kernel (:func:`fold_upsample`), equal within fp32 rounding and faster; the weights stay in
    their checkpoint layout."""

    fused = True

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3,
                 padding: int = 1, upsample: bool = False, gain: float = math.sqrt(2.0),
                 activate: bool = True) -> None:
        super().__init__(in_channels, out_channels, kernel_size, padding, gain)
        self.upsample = upsample
        self.activate = activate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = pixel_norm(x)
        if self.upsample and self.fused:
            x = F.conv_transpose2d(x, fold_upsample(self.weight * self.scale), self.bias,
                                   stride=2, padding=1)
        else:
            if self.upsample:
                x = F.interpolate(x, scale_factor=2, mode="nearest")
            x = super().forward(x)
        return F.leaky_relu(x, 0.2) if self.activate else x


class PGGANGenerator(StagedGenerator):
    """PGGAN generator of any resolution and widths; ``channels[i]`` is the width at 4 * 2**i px."""

    family = "pggan"

    def __init__(self, resolution: int = 256, z_dim: int = 512,
                 channels: list[int] | None = None) -> None:
        super().__init__()
        blocks = _num_blocks(resolution)
        channels = list(channels) if channels is not None else official_channels(resolution)
        if len(channels) != blocks:
            raise InputError(
                f"PGGAN at {resolution} px needs {blocks} channel widths "
                f"(4 px to {resolution} px), "
                f"got {len(channels)}"
            )
        self.resolution = resolution
        self.z_dim = z_dim
        self.channels = channels
        self.add_module("layer1", PGGANConv(z_dim, channels[0], kernel_size=4, padding=3))
        self.add_module("layer2", PGGANConv(channels[0], channels[0]))
        for block in range(1, blocks):
            cin, cout = channels[block - 1], channels[block]
            self.add_module(f"layer{2 * block + 1}", PGGANConv(cin, cout, upsample=True))
            self.add_module(f"layer{2 * block + 2}", PGGANConv(cout, cout))
        self.output = PGGANConv(channels[-1], 3, kernel_size=1, padding=0, gain=1.0,
                                activate=False)
        self._stage_list = [(f"layer{i}", getattr(self, f"layer{i}"))
                            for i in range(1, 2 * blocks + 1)] + [("output", self.output)]

    def _stages(self):
        return self._stage_list

    def config(self) -> dict[str, Any]:
        return {"family": self.family, "resolution": self.resolution, "z_dim": self.z_dim,
                "channels": self.channels}

    def use_fast_paths(self, enabled: bool = True) -> PGGANGenerator:
        """Fused upsample-convs (the default) or the plain path, for comparisons."""
        for module in self.modules():
            if isinstance(module, PGGANConv):
                module.fused = enabled
        return self

    def latent_weight(self, layers: str = "all") -> tuple[torch.Tensor, str]:
        """The dense 4x4 layer after z (``layer1``, a 4x4 conv over a 1x1 input) as a matrix
        ``[C * 16, z_dim]``, with its equalised-lr scale."""
        self._first_layer_only(layers, "layer1")
        weight = self.layer1.weight.detach() * self.layer1.scale  # [C, z, 4, 4]
        return weight.permute(0, 2, 3, 1).reshape(-1, self.z_dim), "z"

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> PGGANGenerator:
        return cls(resolution=int(config["resolution"]), z_dim=int(config["z_dim"]),
                   channels=[int(c) for c in config["channels"]])

    @classmethod
    def from_state_dict(cls, state_dict: dict[str, torch.Tensor],
                        source: str = "PGGAN state dict") -> PGGANGenerator:
        """Build from any supported layout, inferring resolution, z_dim and widths from shapes."""
        if "state_dict" in state_dict and isinstance(state_dict["state_dict"], dict):
            state_dict = state_dict["state_dict"]
        layout = detect_layout(state_dict, source)
        check_backed(state_dict, source)
        converters = {"genforce": _from_genforce, "gandissect": _from_gandissect}
        try:
            native = (converters[layout](state_dict, source) if layout in converters
                      else dict(state_dict))
            config = _infer_config(native, source)
        except InputError:
            raise
        except (KeyError, IndexError, TypeError, ValueError, RuntimeError) as err:
            raise InputError(f"{source} ({layout} layout) is malformed: "
                             f"{type(err).__name__}: {' '.join(str(err).split())[:120]}") \
                from None
        return build_checked(lambda: cls(**config), native, f"{source} ({layout} layout)").eval()


def detect_layout(state_dict: dict[str, Any], source: str) -> str:
    """``native``, ``genforce`` or ``gandissect``; anything else is an error naming a few keys."""
    if "layer1.weight" in state_dict:
        return "native"
    if "layer0.conv.weight" in state_dict:
        return "genforce"
    if "layer1.conv.weight" in state_dict and any(k.startswith("output_") for k in state_dict):
        return "gandissect"
    keys = ", ".join(list(state_dict)[:5])
    raise InputError(f"{source} is not a PGGAN generator in a known key layout "
                     f"(first keys: {keys})")


MAX_WIDTH = 8192  # channels or latent sizes beyond this are no PGGAN
MAX_RESOLUTION = 4096


def _count(state_dict: dict[str, Any], pattern: str, start: int) -> int:
    count = 0
    while pattern.format(start + count) in state_dict and count <= 32:
        count += 1
    return count


def _infer_config(native: dict[str, torch.Tensor], source: str) -> dict[str, Any]:
    layers = _count(native, "layer{}.weight", 1)
    if layers < 4 or layers % 2:
        raise InputError(f"{source} has {layers} conv layers; a PGGAN generator has an even "
                         "number, at least 4 (two per resolution from 4x4)")
    if 4 * 2 ** (layers // 2 - 1) > MAX_RESOLUTION:
        raise InputError(f"{source} has {layers} conv layers: more than a "
                         f"{MAX_RESOLUTION} px PGGAN has")
    for key in [f"layer{2 * b + 1}.weight" for b in range(layers // 2)]:
        shape = tuple(native[key].shape)
        if len(shape) != 4 or not all(1 <= size <= MAX_WIDTH for size in shape):
            raise InputError(f"{source}: {key} has shape {list(shape)}; a conv weight is 4-d "
                             f"with sizes in [1, {MAX_WIDTH}]")
    return {
        "resolution": 4 * 2 ** (layers // 2 - 1),
        "z_dim": int(native["layer1.weight"].shape[1]),
        "channels": [int(native[f"layer{2 * b + 1}.weight"].shape[0]) for b in range(layers // 2)],
    }


def _from_genforce(sd: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    layers = _count(sd, "layer{}.conv.weight", 0)
    if layers < 2 or layers % 2:
        raise InputError(f"{source} (genforce layout) has {layers} conv layers; expected an even "
                         "number, at least 2")
    if any(k.startswith("layer") and k.endswith(".weight") and ".conv." not in k for k in sd):
        raise InputError(f"{source} uses fused-scale (transposed conv) layers, which this loader "
                         "does not support; the official PGGAN models use fused_scale=False")
    outputs = layers // 2
    expected = {}
    for i in range(layers):
        expected[f"layer{i}.conv.weight"] = tuple(sd[f"layer{i}.conv.weight"].shape)
        expected[f"layer{i}.wscale.bias"] = (sd[f"layer{i}.conv.weight"].shape[0],)
    for k in range(outputs):
        width = sd[f"layer{2 * k + 1}.conv.weight"].shape[0]
        expected[f"output{k}.conv.weight"] = (3, width, 1, 1)
        expected[f"output{k}.wscale.bias"] = (3,)
    expected["lod"] = ()
    check_state_dict(expected, sd, f"{source} (genforce layout)")
    lod = float(sd["lod"])
    if lod != 0.0:
        raise InputError(f"{source} has lod={lod:g}: it is a PGGAN snapshot that has not finished "
                         "growing; only fully grown generators (lod=0) are supported")
    native = {}
    for i in range(layers):
        native[f"layer{i + 1}.weight"] = sd[f"layer{i}.conv.weight"]
        native[f"layer{i + 1}.bias"] = sd[f"layer{i}.wscale.bias"]
    native["output.weight"] = sd[f"output{outputs - 1}.conv.weight"]
    native["output.bias"] = sd[f"output{outputs - 1}.wscale.bias"]
    return native


def _from_gandissect(sd: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    layers = _count(sd, "layer{}.conv.weight", 1)
    if layers < 2 or layers % 2:
        raise InputError(f"{source} (gandissect layout) has {layers} conv layers; expected an "
                         "even number, at least 2")
    resolution = 4 * 2 ** (layers // 2 - 1)
    out = f"output_{resolution}x{resolution}"
    expected = {}
    for layer in range(1, layers + 1):
        expected[f"layer{layer}.conv.weight"] = tuple(sd[f"layer{layer}.conv.weight"].shape)
        expected[f"layer{layer}.wscale.b"] = (sd[f"layer{layer}.conv.weight"].shape[0],)
    width = sd[f"layer{layers}.conv.weight"].shape[0]
    expected[f"{out}.conv.weight"] = (3, width, 1, 1)
    expected[f"{out}.wscale.b"] = (3,)
    check_state_dict(expected, sd, f"{source} (gandissect layout)")
    native = {}
    for layer in range(1, layers + 1):
        native[f"layer{layer}.weight"] = sd[f"layer{layer}.conv.weight"]
        native[f"layer{layer}.bias"] = sd[f"layer{layer}.wscale.b"]
    native["output.weight"] = sd[f"{out}.conv.weight"]
    native["output.bias"] = sd[f"{out}.wscale.b"]
    return native
