"""StyleGAN2 (Karras et al., "Analyzing and Improving the Image Quality of StyleGAN", 2020),
written from the paper and the two checkpoint formats users hold (``stylegan2_files``).

**Mapping.** ``z`` is normalised by its second moment, then goes through ``mapping_layers``
equalised-lr dense layers (learning-rate multiplier 0.01, leaky ReLU 0.2 times sqrt 2) to ``w``.
``w`` is broadcast to one style per synthesis layer (``num_ws``); truncation moves it toward the
stored ``w_avg`` (``truncation_psi``).

**Synthesis, skip architecture.** Block ``b{r}`` (r = 4, 8, ..., resolution): a learnt 4x4 input
(``b4``) or a modulated 3x3 convolution that doubles the resolution (a stride-2 transposed
convolution followed by the [1, 3, 3, 1] FIR filter), then a modulated 3x3 convolution. Every
modulated convolution scales its input channels by an affine function of its style, demodulates
its weights, adds the stored constant noise (projector convention), a bias, a leaky ReLU (gain
sqrt 2) and, for checkpoints that ask for it, a clamp. A 1x1 modulated (not demodulated) ToRGB
turns each block's features into RGB and adds them to the running image, upsampled by the FIR
filter. Everything runs in fp32.

**Cuts.** The composable layers are, per block, ``b{r}.conv0`` (after the up-convolution, r > 4)
and ``b{r}`` (the block's features, before its ToRGB), after the latent (index 0). Besides the
features, two things cross a cut (``carry_specs``):

- ``img``: the running RGB image so far (blocks r > 4), at the previous block's resolution. Rules:
  ``alpha`` (the codes' images weighted by their mean alpha), ``mean``, or ``drop`` (the RGB
  restarts at the cut: only blocks after it paint);
- ``styles``: the ``w`` of every layer after the cut, ``[B, L, w_dim]``, shared with StyleGAN v1
  (``stylebased``): ``latent`` (the default), ``mean`` or ``alpha``.

Nothing normalises the fused features before the next modulated convolution (demodulation acts on
the weights, the input scale passes through), so, as for the DCGAN, the global scale of alpha
matters: the ``sum`` fusion with alphas starting at 1/N starts from the mean feature, and the
attribution threshold 0.2 means "more than 4x the initial weight" at N = 20.

**Latent spaces** and **truncation** (all rows, NVIDIA's default) are those of every style-based
family (``stylebased``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from inversion.generators.base import CarrySpec, Cut, Layer
from inversion.generators.stylebased import STYLES, StyleBasedGenerator, check_truncation
from mganprior.core.errors import InputError

SQRT2 = math.sqrt(2.0)
NOISE = CarrySpec("noise", ("drop", "latent"), "drop",
                  "the noise maps after the cut; drop keeps the stored ones (optimize_noise)")
SHORTCUT = CarrySpec("res", ("alpha", "mean"), "alpha",
                     "the resnet shortcut of the block's input, added after its second "
                     "convolution")
NOISE_SEED = 0x6E6F697365  # mixed into an image's seed for its noise maps, apart from its codes
FIR = (1.0, 3.0, 3.0, 1.0)


def fir_filter(taps: tuple[float, ...] = FIR) -> torch.Tensor:
    """The separable FIR filter as a 2-D kernel that sums to 1."""
    f = torch.tensor(taps, dtype=torch.float32)
    kernel = f[:, None] * f[None, :]
    return kernel / kernel.sum()


def _fir(x: torch.Tensor, kernel: torch.Tensor, pad: tuple[int, int]) -> torch.Tensor:
    """Depthwise convolution of every channel with ``kernel`` after padding (before, after)."""
    channels = x.shape[1]
    x = F.pad(x, [pad[0], pad[1], pad[0], pad[1]])
    weight = kernel.flip([0, 1]).to(x)[None, None].expand(channels, 1, *kernel.shape)
    return F.conv2d(x, weight, groups=channels)


def upsample_2x(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Zero-insertion 2x upsampling followed by the FIR filter (gain 4): the skip image path."""
    batch, channels, h, w = x.shape
    up = x.new_zeros(batch, channels, 2 * h, 2 * w)
    up[:, :, ::2, ::2] = x
    return _fir(up, kernel * 4, (2, 1))


class _UpConvolution(torch.autograd.Function):
    """``conv_transpose2d(x, weight.transpose(0, 1), stride=2)`` for a 3x3 ``weight [out, in]``,
    computed as one matmul into the nine taps' columns and nine strided adds. On CPUs oneDNN's
    transposed convolution runs at about two thirds of the matmul rate at StyleGAN2's widths;
    the backward is the native one (``aten.convolution_backward``, itself differentiable). Runs
    under ``torch.func.vmap`` (generator tuning) by vmap's own rule. The result is channels-last
    in memory (what follows takes any layout)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        batch, in_channels, height, width = x.shape
        out_channels = weight.shape[0]
        taps = x.permute(0, 2, 3, 1).reshape(-1, in_channels) @ weight.permute(1, 2, 3, 0).reshape(
            in_channels, 9 * out_channels)
        taps = taps.view(batch, height, width, 3, 3, out_channels)
        out = taps.new_zeros(batch, 2 * height + 1, 2 * width + 1, out_channels)
        for row in range(3):
            for col in range(3):
                out[:, row:row + 2 * height:2, col:col + 2 * width:2] += taps[:, :, :, row, col]
        return out.permute(0, 3, 1, 2)

    @staticmethod
    def setup_context(ctx, inputs: tuple[torch.Tensor, torch.Tensor], output: torch.Tensor) -> None:
        ctx.save_for_backward(*inputs)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        x, weight = ctx.saved_tensors
        grad_x, grad_weight, _ = torch.ops.aten.convolution_backward(
            grad, x, weight.transpose(0, 1), None, [2, 2], [0, 0], [1, 1], True, [0, 0], 1,
            [ctx.needs_input_grad[0], ctx.needs_input_grad[1], False])
        return grad_x, None if grad_weight is None else grad_weight.transpose(0, 1)


def up_convolution(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The CPU path eagerly in fp32/fp64; the native transposed convolution under
    ``torch.compile`` (inductor compiles the adds slower), bf16 autocast and on GPUs."""
    if (x.device.type == "cpu" and not torch.compiler.is_compiling()
            and not torch.is_autocast_enabled("cpu")):
        return _UpConvolution.apply(x, weight)
    return transposed_up_convolution(x, weight)


def transposed_up_convolution(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The same up-convolution as the backend's transposed convolution."""
    return F.conv_transpose2d(x, weight.transpose(0, 1), stride=2)


class EqualLinear(nn.Module):
    """Dense layer with equalised learning rate: weights stored ``/ lr_multiplier`` and used times
    ``lr_multiplier / sqrt(in)``; the bias times ``lr_multiplier``; optional leaky ReLU x sqrt 2."""

    def __init__(self, in_features: int, out_features: int, lr_multiplier: float = 1.0,
                 bias_init: float = 0.0, activate: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_multiplier)
        self.bias = nn.Parameter(torch.full((out_features,), float(bias_init)))
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier
        self.activate = activate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.linear(x, self.weight * self.weight_gain, self.bias * self.bias_gain)
        return F.leaky_relu(x, 0.2) * SQRT2 if self.activate else x


class MappingNetwork(nn.Module):
    def __init__(self, z_dim: int, w_dim: int, layers: int, lr_multiplier: float,
                 c_dim: int = 0) -> None:
        super().__init__()
        if c_dim:  # a conditional generator embeds its one-hot label beside z
            self.embed = EqualLinear(c_dim, w_dim)
        for i in range(layers):
            self.add_module(f"fc{i}", EqualLinear((z_dim + (w_dim if c_dim else 0)) if i == 0
                                                  else w_dim, w_dim, lr_multiplier,
                                                  activate=True))
        self.layers = layers
        self.register_buffer("w_avg", torch.zeros(w_dim))

    def forward(self, z: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        x = normalize_2nd_moment(z)
        if c is not None:
            x = torch.cat([x, normalize_2nd_moment(self.embed(c))], dim=1)
        for i in range(self.layers):
            x = getattr(self, f"fc{i}")(x)
        return x


def normalize_2nd_moment(x: torch.Tensor) -> torch.Tensor:
    return x * torch.rsqrt(x.square().mean(dim=1, keepdim=True) + 1e-8)


class ModulatedConv(nn.Module):
    """Modulated, demodulated 3x3 convolution (optionally 2x up), constant noise, bias, leaky
    ReLU x sqrt 2 and an optional clamp.

    ``per_sample_weights`` False (the default): the style scales the input channels, one shared
    convolution runs over the batch, and demodulation scales the output channels by
    ``rsqrt(sum_i s_i^2 sum_k w_oik^2)``, the same product of linear maps as convolving with
    each sample's modulated and demodulated weight (StyleGAN2, section 2.2), equal within fp32
    rounding and much cheaper when many codes share a batch. True: the per-sample weights as a
    grouped convolution, the reference path."""

    per_sample_weights = False

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int,
                 up: bool = False, conv_clamp: float | None = None) -> None:
        super().__init__()
        self.affine = EqualLinear(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 3, 3))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.register_buffer("noise_const", torch.randn(resolution, resolution))
        self.noise_strength = nn.Parameter(torch.zeros([]))
        self.up = up
        self.conv_clamp = conv_clamp
        self.gain = 1.0  # the resnet architecture scales its second convolution by sqrt(1/2)

    def forward(self, x: torch.Tensor, w: torch.Tensor, kernel: torch.Tensor,
                noise: torch.Tensor | None = None) -> torch.Tensor:
        """``noise``: per-image maps ``[B, r, r]`` in place of the stored constant."""
        styles = self.affine(w)
        noise = self.noise_const if noise is None else noise[:, None]
        gain = SQRT2 * self.gain
        if self.per_sample_weights:
            x = self._per_sample(x, styles, kernel) + noise * self.noise_strength
            x = F.leaky_relu(x + self.bias[None, :, None, None], 0.2) * gain
        else:
            demod = torch.rsqrt(styles.square() @ self.weight.square().sum(dim=(2, 3)).T + 1e-8)
            x = x * styles[:, :, None, None]
            if self.up:
                x = _fir(up_convolution(x, self.weight), kernel * 4, (1, 1))
            else:
                x = F.conv2d(x, self.weight, padding=1)
            # demodulation and the (positive) gain as one scale, noise and bias as one shift
            shift = (noise * self.noise_strength + self.bias[:, None, None]) * gain
            x = F.leaky_relu(x * (demod[:, :, None, None] * gain) + shift, 0.2)
        if self.conv_clamp:
            clamp = self.conv_clamp * self.gain
            return x.clamp(-clamp, clamp)
        return x

    def _per_sample(self, x: torch.Tensor, styles: torch.Tensor,
                    kernel: torch.Tensor) -> torch.Tensor:
        batch, in_channels, height, width = x.shape
        weight = self.weight[None] * styles[:, None, :, None, None]  # [B, out, in, 3, 3]
        weight = weight * torch.rsqrt(weight.square().sum(dim=(2, 3, 4)) + 1e-8)[
            ..., None, None, None]
        out_channels = weight.shape[1]
        x = x.reshape(1, batch * in_channels, height, width)
        if self.up:
            weight = weight.transpose(1, 2).reshape(batch * in_channels, out_channels, 3, 3)
            x = F.conv_transpose2d(x, weight, stride=2, groups=batch)
            return _fir(x.reshape(batch, out_channels, *x.shape[2:]), kernel * 4, (1, 1))
        return F.conv2d(x, weight.reshape(batch * out_channels, in_channels, 3, 3), padding=1,
                        groups=batch).reshape(batch, out_channels, height, width)


class ToRGB(nn.Module):
    """1x1 modulated convolution to RGB, not demodulated, with a bias (and optional clamp);
    the style scales the input channels of one shared convolution (or, with
    ``per_sample_weights``, each sample's weight)."""

    per_sample_weights = False

    def __init__(self, in_channels: int, w_dim: int, conv_clamp: float | None = None) -> None:
        super().__init__()
        self.affine = EqualLinear(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(3, in_channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(3))
        self.weight_gain = 1 / math.sqrt(in_channels)
        self.conv_clamp = conv_clamp

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        batch, in_channels, height, width = x.shape
        styles = self.affine(w) * self.weight_gain
        if self.per_sample_weights:
            weight = (self.weight[None] * styles[:, None, :, None, None]).reshape(
                batch * 3, in_channels, 1, 1)
            x = F.conv2d(x.reshape(1, batch * in_channels, height, width), weight,
                         groups=batch).reshape(batch, 3, height, width)
        else:
            x = F.conv2d(x * styles[:, :, None, None], self.weight)
        x = x + self.bias[None, :, None, None]
        return x.clamp(-self.conv_clamp, self.conv_clamp) if self.conv_clamp else x


class SkipConv(nn.Module):
    """The resnet architecture's shortcut: a 1x1 convolution without bias, then 2x up-sampling
    by the FIR filter, scaled by sqrt(1/2)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 1, 1))
        self.weight_gain = 1 / math.sqrt(in_channels)

    def forward(self, x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
        return upsample_2x(F.conv2d(x, self.weight * self.weight_gain), kernel) * math.sqrt(0.5)


class SynthesisBlock(nn.Module):
    def __init__(self, resolution: int, in_channels: int, out_channels: int, w_dim: int,
                 conv_clamp: float | None, architecture: str = "skip",
                 last: bool = True) -> None:
        super().__init__()
        if resolution == 4:
            self.const = nn.Parameter(torch.randn(out_channels, 4, 4))
        else:
            self.conv0 = ModulatedConv(in_channels, out_channels, w_dim, resolution, up=True,
                                       conv_clamp=conv_clamp)
            if architecture == "resnet":
                self.skip = SkipConv(in_channels, out_channels)
        self.conv1 = ModulatedConv(out_channels, out_channels, w_dim, resolution,
                                   conv_clamp=conv_clamp)
        if architecture == "resnet" and resolution > 4:
            self.conv1.gain = math.sqrt(0.5)
        if architecture == "skip" or last:
            self.torgb = ToRGB(out_channels, w_dim, conv_clamp)


class SynthesisNetwork(nn.Module):
    def __init__(self, resolution: int, channels: list[int], w_dim: int,
                 conv_clamp: float | None, architecture: str = "skip") -> None:
        super().__init__()
        for k, width in enumerate(channels):
            res = 4 << k
            self.add_module(f"b{res}", SynthesisBlock(res, channels[k - 1] if k else 0, width,
                                                      w_dim, conv_clamp, architecture,
                                                      last=k == len(channels) - 1))


# One step of synthesis: (block index, what it runs, the index of the w it uses).
Step = tuple[int, str, int]
ARCHITECTURES = ("skip", "orig", "resnet")  # NVIDIA's synthesis architectures


def synthesis_steps(blocks: int, architecture: str = "skip") -> list[Step]:
    """conv0 (blocks after the first), conv1 and torgb, with their w indices: block 0 uses w0
    (conv1) and w1 (torgb); block k uses w(2k-1), w(2k), w(2k+1). Only the skip architecture
    paints at every block; orig and resnet have a torgb in the last block only."""
    steps: list[Step] = []
    for k in range(blocks):
        if k:
            steps.append((k, "conv0", 2 * k - 1))
        steps.append((k, "conv1", 2 * k if k else 0))
        if architecture == "skip" or k == blocks - 1:
            steps.append((k, "torgb", 2 * k + 1))
    return steps


class StyleGAN2Generator(StyleBasedGenerator):
    """StyleGAN2 generator, any resolution and widths, in NVIDIA's three synthesis
    architectures (``skip``, the default of every official model; ``orig``; ``resnet``),
    unconditional or class-conditional (``c_dim`` classes; :meth:`with_label`).

    ``channels[k]`` is the width of block ``b{4 * 2**k}``; ``truncation_psi`` pulls every ``w``
    toward ``w_avg`` (1: none); ``conv_clamp`` clamps activations as NVIDIA's checkpoints do.
    """

    family: ClassVar[str] = "stylegan2"

    def __init__(self, resolution: int = 256, z_dim: int = 512, w_dim: int = 512,
                 channels: list[int] | None = None, mapping_layers: int = 8,
                 lr_multiplier: float = 0.01, conv_clamp: float | None = None,
                 truncation_psi: float = 1.0, architecture: str = "skip",
                 c_dim: int = 0) -> None:
        super().__init__()
        if architecture not in ARCHITECTURES:
            raise InputError(f"architecture must be one of {', '.join(ARCHITECTURES)}, got "
                             f"{architecture!r}", field="architecture")
        if isinstance(c_dim, bool) or not isinstance(c_dim, int) or c_dim < 0:
            raise InputError(f"c_dim must be a count of classes (0: unconditional), got "
                             f"{c_dim!r}", field="c_dim")
        blocks = int(math.log2(resolution)) - 1
        if resolution < 4 or 4 << (blocks - 1) != resolution:
            raise InputError(f"resolution must be a power of two >= 4, got {resolution}",
                             field="resolution")
        channels = list(channels) if channels is not None else \
            [min(16384 // (4 << k), 512) for k in range(blocks)]
        if len(channels) != blocks:
            raise InputError(f"channels: a StyleGAN2 at {resolution} px needs {blocks} widths "
                             f"(4 px to {resolution} px), got {len(channels)}", field="channels")
        check_truncation(truncation_psi)
        self.resolution = resolution
        self.mapping_z_dim = z_dim
        self.w_dim = w_dim
        self.channels = channels
        self.mapping_layers = mapping_layers
        self.lr_multiplier = lr_multiplier
        self.conv_clamp = conv_clamp
        self.truncation_psi = float(truncation_psi)
        self.truncation_layers: int | None = None
        self.latent_space = "z"
        self.num_ws = 2 * blocks
        self.architecture = architecture
        self.c_dim = c_dim
        self.label: int | None = None
        self.mapping = MappingNetwork(z_dim, w_dim, mapping_layers, lr_multiplier, c_dim)
        self.synthesis = SynthesisNetwork(resolution, channels, w_dim, conv_clamp, architecture)
        self.register_buffer("fir", fir_filter(), persistent=False)
        self._steps = synthesis_steps(blocks, architecture)

    # -- what the contract asks for --------------------------------------------------------------
    @property
    def w_avg(self) -> torch.Tensor:
        return self.mapping.w_avg

    def config(self) -> dict[str, Any]:
        return {"family": self.family, "resolution": self.resolution, "z_dim": self.mapping_z_dim,
                "w_dim": self.w_dim, "channels": self.channels,
                "mapping_layers": self.mapping_layers, "lr_multiplier": self.lr_multiplier,
                "conv_clamp": self.conv_clamp, "truncation_psi": self.truncation_psi,
                "architecture": self.architecture, "c_dim": self.c_dim, "label": self.label}

    def describe(self) -> str:
        classes = (f"; conditional, {self.c_dim} classes (label "
                   f"{'unset' if self.label is None else self.label})" if self.c_dim else "")
        return f"{super().describe()}; {self.architecture} architecture{classes}"

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> StyleGAN2Generator:
        clamp = config.get("conv_clamp")
        return cls(resolution=int(config["resolution"]), z_dim=int(config["z_dim"]),
                   w_dim=int(config["w_dim"]), channels=[int(c) for c in config["channels"]],
                   mapping_layers=int(config["mapping_layers"]),
                   lr_multiplier=float(config["lr_multiplier"]),
                   conv_clamp=float(clamp) if clamp is not None else None,
                   truncation_psi=float(config.get("truncation_psi", 1.0)),
                   architecture=str(config.get("architecture", "skip")),
                   c_dim=int(config.get("c_dim", 0))).with_label(config.get("label"))

    @classmethod
    def from_state_dict(cls, state_dict: dict[str, Any], source: str = "StyleGAN2 state dict"
                        ) -> StyleGAN2Generator:
        from inversion.generators.stylegan2_files import from_native_state_dict

        return from_native_state_dict(state_dict, source)

    def use_fast_paths(self, enabled: bool = True) -> StyleGAN2Generator:
        """Styles applied to activations (the default) or per-sample modulated weights."""
        for module in self.modules():
            if isinstance(module, (ModulatedConv, ToRGB)):
                module.per_sample_weights = not enabled
        return self

    def style_layers(self) -> list[str]:
        """The modules whose affine turns w into a style, in ``ws`` order."""
        names = []
        for k, kind, _ in self._steps:
            names.append(f"b{4 << k}.{kind}")
        return names

    def sefa_layers(self) -> list[str]:
        """The style layers in SeFa's numbering (genforce/sefa ``factorize_weight``): every
        modulated convolution in order, then the last ToRGB. Index ``i`` is genforce's
        ``synthesis.layer{i}``; the last index is its ``output`` layer."""
        convs = [name for name in self.style_layers() if not name.endswith(".torgb")]
        return [*convs, self.style_layers()[-1]]

    def style_weight(self, name: str) -> torch.Tensor:
        block, kind = name.split(".")
        affine = getattr(getattr(self.synthesis, block), kind).affine
        return affine.weight.detach() * affine.weight_gain

    # -- synthesis -------------------------------------------------------------------------------
    def _block(self, k: int) -> SynthesisBlock:
        return getattr(self.synthesis, f"b{4 << k}")

    def _run(self, state: dict[str, torch.Tensor], ws: torch.Tensor, start: int, stop: int,
             w_offset: int = 0, noise: dict[str, torch.Tensor] | None = None
             ) -> dict[str, torch.Tensor]:
        """Synthesis steps ``[start, stop)`` from ``state`` (``x``: features, ``img``: the
        running image of the skip architecture, ``res``: the resnet shortcut between a block's
        two convolutions); ``ws[:, i - w_offset]`` is the style of global index ``i``; ``noise``
        replaces the stored noise of the convolutions it names (``b{r}.conv0``/``b{r}.conv1``,
        maps ``[B, r, r]``)."""
        noise, state = noise or {}, dict(state)
        for k, kind, index in self._steps[start:stop]:
            block, w = self._block(k), ws[:, index - w_offset]
            maps = noise.get(f"b{4 << k}.{kind}")
            if kind == "conv0":
                if self.architecture == "resnet":
                    state["res"] = block.skip(state["x"], self.fir)
                state["x"] = block.conv0(state["x"], w, self.fir, maps)
            elif kind == "conv1":
                x = block.const[None].expand(ws.shape[0], -1, -1, -1) if k == 0 else state["x"]
                state["x"] = block.conv1(x, w, self.fir, maps)
                if "res" in state:
                    state["x"] = state.pop("res") + state["x"]
            else:
                rgb = block.torgb(state["x"], w)
                img = state.get("img")
                state["img"] = rgb if img is None else upsample_2x(img, self.fir) + rgb
        return state

    def synthesize(self, ws: torch.Tensor,
                   noise: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """Styles ``[B, num_ws, w_dim]`` to images ``[B, 3, R, R]`` (unclamped, nominally
        [-1, 1]); ``noise`` as in :meth:`_run`."""
        return self._run({}, ws, 0, len(self._steps), noise=noise)["img"]

    def block_outputs(self, ws: torch.Tensor
                      ) -> dict[str, tuple[torch.Tensor, torch.Tensor | None]]:
        """Every block's features and running image after it (``b{r}`` -> ``(x, img)``; img is
        None before the last block of the orig and resnet architectures)."""
        outputs, state = {}, {}
        for position, (k, _, _) in enumerate(self._steps):
            state = self._run(state, ws, position, position + 1)
            if position + 1 == len(self._steps) or self._steps[position + 1][0] != k:
                outputs[f"b{4 << k}"] = (state["x"], state.get("img"))
        return outputs

    def _cut_steps(self) -> list[tuple[str, int]]:
        """Each composable layer after the latent, with the number of steps run before it."""
        cuts = []
        for position, (k, kind, _) in enumerate(self._steps):
            if kind == "conv0":
                cuts.append((f"b{4 << k}.conv0", position + 1))
            elif kind == "conv1":
                cuts.append((f"b{4 << k}", position + 1))
        return cuts

    def _layer_names(self) -> list[str]:
        return [name for name, _ in self._cut_steps()]

    @torch.no_grad()
    def _measure_shapes(self) -> list[tuple[int, int, int]]:
        ws = torch.zeros(1, self.num_ws, self.w_dim, device=self.device)
        shapes = []
        for _, done in self._cut_steps():
            shapes.append(tuple(self._run({}, ws, 0, done)["x"].shape[1:]))
        return shapes

    def _position(self, layer: Layer) -> int:
        return dict(self._cut_steps())[layer.name]

    def _carries_image(self, layer: Layer) -> bool:
        """Whether blocks before the cut have painted (skip architecture, every cut after block
        b4's)."""
        return self.architecture == "skip" and self._steps[self._position(layer)][0] > 0

    def _carries_shortcut(self, layer: Layer) -> bool:
        """Whether the cut falls between a resnet block's convolutions."""
        return self.architecture == "resnet" and layer.name.endswith(".conv0")

    def carry_specs(self, layer: Layer) -> tuple[CarrySpec, ...]:
        noise = (NOISE,) if self.noise_layers(layer) else ()  # none after the deepest cut
        if layer.index == 0:
            return noise
        specs = []
        if self._carries_image(layer):
            specs.append(CarrySpec("img", ("alpha", "mean", "drop"), "alpha",
                                   "the RGB image of the blocks before the cut"))
        if self._carries_shortcut(layer):
            specs.append(SHORTCUT)
        specs.extend((STYLES, *noise))
        return tuple(specs)

    def noise_layers(self, layer: Layer) -> list[tuple[str, int]]:
        """The convolutions after the cut at ``layer`` (every one at the latent) with the side
        of their noise map: the maps the ``noise`` carry holds, in this order."""
        start = 0 if layer.index == 0 else self._position(layer)
        return [(f"b{4 << k}.{kind}", 4 << k) for k, kind, _ in self._steps[start:]
                if kind != "torgb"]

    def noise_maps(self, layer: Layer, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """The ``noise`` carry ``[B, sum r^2]`` as maps ``[B, r, r]`` by convolution name."""
        sides = self.noise_layers(layer)
        parts = flat.split([side * side for _, side in sides], dim=1)
        return {name: part.reshape(-1, side, side)
                for (name, side), part in zip(sides, parts, strict=True)}

    def stored_noise(self, layer: Layer) -> torch.Tensor:
        """The stored constant noise of the layers after the cut, flat ``[1, sum r^2]``."""
        maps = [self.synthesis.get_submodule(name).noise_const
                for name, _ in self.noise_layers(layer)]
        return torch.cat([m.flatten() for m in maps])[None]

    def extra_latents(self, layer: Layer, rules: Mapping[str, str], cut: Cut,
                      seeds: Sequence[int] = ()) -> dict[str, torch.Tensor]:
        """Besides the styles: per-image noise maps under ``noise=latent``, white noise N(0, 1)
        drawn from each image's seed (NVIDIA's projector's start); without seeds, the stored
        constant noise."""
        extras = super().extra_latents(layer, rules, cut, seeds)
        if rules.get("noise") == "latent":
            stored = self.stored_noise(layer)
            if seeds:
                draws = [torch.randn(stored.shape[1], generator=torch.Generator().manual_seed(
                    int(seed) ^ NOISE_SEED)) for seed in seeds]
                extras["noise"] = torch.stack(draws).to(stored)
            else:
                extras["noise"] = stored.expand(cut.features.shape[0], -1).clone()
        return extras

    def carry_from_latents(self, layer: Layer, rules: Mapping[str, str],
                           extras: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        carry = super().carry_from_latents(layer, rules, extras)
        if rules.get("noise") == "latent":
            carry["noise"] = extras["noise"]
        return carry

    def _noise_of(self, cut: Cut, layer: Layer) -> dict[str, torch.Tensor] | None:
        return self.noise_maps(layer, cut.carry["noise"]) if "noise" in cut.carry else None

    def head(self, z: torch.Tensor, layer: str | int | Layer) -> Cut:
        layer = self.layer(layer)
        if layer.index == 0:
            return Cut(self._check_latents(z)[:, :, None, None])
        ws = self.ws(z)
        done = self._position(layer)
        state = self._run({}, ws, 0, done)
        carry = {"styles": ws[:, self._steps[done][2]:]}
        if self._carries_image(layer):
            carry["img"] = state["img"]
        if self._carries_shortcut(layer):
            carry["res"] = state["res"]
        return Cut(state["x"], carry)

    def tail(self, cut: Cut, layer: str | int | Layer) -> torch.Tensor:
        layer = self.layer(layer)
        noise = self._noise_of(cut, layer)
        if layer.index == 0:
            return self.synthesize(self.ws(cut.features.flatten(1)), noise)
        done = self._position(layer)
        state = {"x": cut.features, **{k: cut.carry[k] for k in ("img", "res")
                                       if k in cut.carry}}
        return self._run(state, cut.carry["styles"], done, len(self._steps),
                         w_offset=self._steps[done][2], noise=noise)["img"]
