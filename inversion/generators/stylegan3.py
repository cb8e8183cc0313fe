"""StyleGAN3 (Karras et al., "Alias-Free Generative Adversarial Networks", 2021), written from the
paper and the file format of NVIDIA's stylegan3 repository (read by ``stylegan2_files``).

**Mapping** and **truncation** are StyleGAN2's (``stylebased``): ``z`` normalised by its second
moment, ``mapping_layers`` equalised-lr dense layers, a class embedding for conditional models,
``w`` broadcast to ``num_ws`` rows (the input, every layer, the ToRGB) and pulled toward
``w_avg`` by truncation.

**Synthesis.** The *input* is a grid of Fourier features: ``C`` fixed frequencies and phases
(``freqs``, ``phases``), turned by a rotation and translation that an affine of the first ``w``
row gives (four numbers, the first two normalised to a unit rotation), then by the user's input
transform (a 3x3 matrix; :meth:`StyleGAN3Generator.with_input_transform`), sampled on a
``size``-square grid that spans ``size / sampling_rate`` (the image plus a margin), faded above
the bandwidth, and mixed by a learnt ``C x C`` matrix. Every *layer* then runs a modulated
convolution (demodulated; its input scaled by the inverse square root of the stored
``magnitude_ema``), and the filtered leaky ReLU: bias; upsampling by ``up`` (zero insertion and
the designed low-pass ``up_filter``, gain ``up^2``); leaky ReLU 0.2 times sqrt 2 and the clamp;
the low-pass ``down_filter`` and every ``down``-th sample. The filters come from the file: 1-D
ones are separable, the R config's radial ``down_filter`` is 2-D. The padding that brings each
layer to its ``out_size`` follows from the sizes, factors and taps. The last layer is a 1x1 ToRGB
(not demodulated, no activation), and the image is scaled by ``output_scale``. Everything runs in
fp32.

**Cuts** fall after the input and after every layer but the ToRGB (NVIDIA's names: ``input``,
``L0_36_512`` ...; sizes include the margin). Only the styles of the layers after the cut cross
it (``styles``: ``latent``, the default, ``mean`` or ``alpha``): the network has no skip image
and no noise inputs, so every fusion rule acts on the features alone.

**Fast path** (on by default; ``use_fast_paths(False)`` for the reference): styles scale the
activations of one shared convolution, as for StyleGAN2, and upsampling is a strided transposed
convolution with the filter (no multiplications by inserted zeros). Both are the same sums in
another order, equal within fp32 rounding.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from inversion.generators.base import Cut, Layer
from inversion.generators.stylebased import STYLES, StyleBasedGenerator, check_truncation
from inversion.generators.stylegan2 import EqualLinear, MappingNetwork
from mganprior.core.errors import InputError

SQRT2 = math.sqrt(2.0)
MAX_WIDTH = 8192  # channels or latent sizes beyond this are no StyleGAN3
MAX_SIZE = 8192  # samples per side, margin included
MAX_FACTOR = 16  # up- or down-sampling factor
MAX_TAPS = 256
MAX_KERNEL = 15
MAX_LAYER_NUMBERS = 1 << 32  # channels x samples of one layer's widest intermediate
MAX_LAYERS = 256
MAX_MAPPING_LAYERS = 64


@dataclass(frozen=True)
class InputSpec:
    """The Fourier-feature input: ``channels`` features on a ``size``-square grid sampled at
    ``sampling_rate`` per unit, frequencies up to ``bandwidth``."""

    channels: int
    size: int
    sampling_rate: float
    bandwidth: float


@dataclass(frozen=True)
class LayerSpec:
    """One synthesis layer as the file declares it."""

    in_channels: int
    out_channels: int
    in_size: int
    out_size: int
    conv_kernel: int = 3
    up: int = 2
    down: int = 2
    up_taps: int = 12
    down_taps: int = 12
    radial: bool = False
    torgb: bool = False

    @property
    def padding(self) -> tuple[int, int]:
        """(before, after) on each axis, negative to crop: what brings the upsampled convolution
        output to ``out_size`` samples after the down filter."""
        total = (self.out_size - 1) * self.down + 1 - (self.in_size + self.conv_kernel - 1) \
            * self.up + self.up_taps + self.down_taps - 2
        before = (total + self.up) // 2
        return before, total - before

    def name(self, index: int) -> str:
        """NVIDIA's module name: ``L{index}_{out_size}_{out_channels}``."""
        return f"L{index}_{self.out_size}_{self.out_channels}"


def _whole(field: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InputError(f"{field} must be an integer in [{low}, {high}], got "
                         f"{' '.join(repr(value).split())[:80]}",
                         field=field)
    return value


def _positive(field: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or \
            not 0 < value < float("inf"):
        raise InputError(f"{field} must be a positive number, got {value!r}", field=field)
    return float(value)


def check_specs(resolution: int, input_spec: InputSpec, layers: list[LayerSpec]) -> None:
    """The declared sizes as plain numbers, before anything is built from them: each layer takes
    what the one before makes, only the last is the ToRGB, it makes ``resolution``-pixel RGB,
    and no layer implies more than :data:`MAX_LAYER_NUMBERS` numbers per image."""
    _whole("resolution", resolution, 1, MAX_SIZE)
    _whole("input.channels", input_spec.channels, 1, MAX_WIDTH)
    _whole("input.size", input_spec.size, 1, MAX_SIZE)
    _positive("input.sampling_rate", input_spec.sampling_rate)
    _positive("input.bandwidth", input_spec.bandwidth)
    _whole("layers (count)", len(layers), 1, MAX_LAYERS)
    channels, size = input_spec.channels, input_spec.size
    for i, spec in enumerate(layers):
        where = f"layers[{i}]"
        for name, high in (("in_channels", MAX_WIDTH), ("out_channels", MAX_WIDTH),
                           ("in_size", MAX_SIZE), ("out_size", MAX_SIZE),
                           ("conv_kernel", MAX_KERNEL), ("up", MAX_FACTOR),
                           ("down", MAX_FACTOR), ("up_taps", MAX_TAPS),
                           ("down_taps", MAX_TAPS)):
            _whole(f"{where}.{name}", getattr(spec, name), 1, high)
        if not isinstance(spec.radial, bool) or not isinstance(spec.torgb, bool):
            raise InputError(f"{where}: radial and torgb must be true or false", field=where)
        widest = max(spec.in_channels, spec.out_channels) * \
            ((spec.in_size + spec.conv_kernel) * spec.up + spec.up_taps) ** 2
        if widest > MAX_LAYER_NUMBERS:
            raise InputError(f"{where} implies {widest} numbers per image (more than "
                             f"{MAX_LAYER_NUMBERS}); the file is damaged or hostile", field=where)
        if (spec.in_channels, spec.in_size) != (channels, size):
            raise InputError(f"{where} takes {spec.in_channels} channels at {spec.in_size} px but "
                             f"the layer before makes {channels} at {size} px", field=where)
        if spec.conv_kernel % 2 == 0 or spec.torgb != (i == len(layers) - 1):
            raise InputError(f"{where}: only odd convolution kernels and one ToRGB, last, are "
                             "supported", field=where)
        if spec.torgb and (spec.up, spec.down, spec.up_taps, spec.down_taps) != (1, 1, 1, 1):
            raise InputError(f"{where}: the ToRGB layer must not resample", field=where)
        if spec.up > 1 and spec.up_taps == 1:
            raise InputError(f"{where}: upsampling needs a filter (up_taps > 1)", field=where)
        if spec.radial and spec.down_taps == 1:
            raise InputError(f"{where}: a radial filter needs more than one tap", field=where)
        channels, size = spec.out_channels, spec.out_size
    if (channels, size) != (3, resolution):
        raise InputError(f"the last layer makes {channels} channels at {size} px, not RGB at "
                         f"{resolution} px", field="layers")


# -- the filtered leaky ReLU ------------------------------------------------------------------
def _filter(x: torch.Tensor, f: torch.Tensor, down: int) -> torch.Tensor:
    """Depthwise convolution with ``f`` (1-D: separable, horizontal first; 2-D: as is), keeping
    every ``down``-th sample."""
    channels = x.shape[1]
    f = f.flip(list(range(f.dim()))).to(x)
    if f.dim() == 1:
        taps = f.numel()
        x = F.conv2d(x, f.view(1, 1, 1, taps).expand(channels, 1, 1, taps), groups=channels,
                     stride=(1, down))
        return F.conv2d(x, f.view(1, 1, taps, 1).expand(channels, 1, taps, 1), groups=channels,
                        stride=(down, 1))
    return F.conv2d(x, f[None, None].expand(channels, 1, *f.shape), groups=channels, stride=down)


def upsample(x: torch.Tensor, f: torch.Tensor | None, up: int, padding: tuple[int, int],
             fast: bool = True) -> torch.Tensor:
    """Zero insertion by ``up``, padding (before, after; negative crops) and the filter ``f``
    with gain ``up^2``. ``fast`` (1-D filters): a transposed convolution with stride ``up`` per
    axis, the same sums without multiplying the inserted zeros."""
    before, after = padding
    if f is None:
        if up != 1:
            raise InputError("upsampling needs a filter", field="up_filter")
        return F.pad(x, [before, after, before, after])
    f = f.to(x) * up ** f.dim()  # NVIDIA's gain up^2, split over the separable passes
    if not fast or f.dim() != 1:
        if up > 1:
            b, c, h, w = x.shape
            x = F.pad(x.reshape(b, c, h, 1, w, 1), [0, up - 1, 0, 0, 0, up - 1]).reshape(
                b, c, h * up, w * up)
        return _filter(F.pad(x, [before, after, before, after]), f, 1)
    channels, taps = x.shape[1], f.numel()
    # the transposed convolution starts taps - 1 samples before the padded grid and ends
    # up - taps samples after the zero-inserted input; an even crop is its own padding
    left, right = before - (taps - 1), after + up - taps
    crop = -left if left == right and left <= 0 else 0
    x = F.conv_transpose2d(x, f.view(1, 1, 1, taps).expand(channels, 1, 1, taps),
                           stride=(1, up), padding=(0, crop), groups=channels)
    x = F.conv_transpose2d(x, f.view(1, 1, taps, 1).expand(channels, 1, taps, 1),
                           stride=(up, 1), padding=(crop, 0), groups=channels)
    return x if crop or left == right == 0 else F.pad(x, [left, right, left, right])


def filtered_lrelu(x: torch.Tensor, bias: torch.Tensor, spec: LayerSpec,
                   up_filter: torch.Tensor | None, down_filter: torch.Tensor | None,
                   clamp: float | None, fast: bool = True) -> torch.Tensor:
    """Bias, upsampling, leaky ReLU (0.2, gain sqrt 2; the ToRGB: none) with the clamp, down
    filter and subsampling: NVIDIA's ``filtered_lrelu`` reference, in order."""
    x = x + bias[None, :, None, None]
    x = upsample(x, up_filter, spec.up, spec.padding, fast)
    if not spec.torgb:
        x = F.leaky_relu(x, 0.2) * SQRT2
    if clamp is not None:
        x = x.clamp(-clamp, clamp)
    if down_filter is None:
        return x[:, :, ::spec.down, ::spec.down]
    return _filter(x, down_filter, spec.down)


# -- modules ----------------------------------------------------------------------------------
class FourierInput(nn.Module):
    """The Fourier-feature input (see the module docstring)."""

    def __init__(self, w_dim: int, spec: InputSpec) -> None:
        super().__init__()
        self.spec = spec
        self.affine = EqualLinear(w_dim, 4)
        self.weight = nn.Parameter(torch.randn(spec.channels, spec.channels))
        self.register_buffer("transform", torch.eye(3))
        self.register_buffer("freqs", torch.zeros(spec.channels, 2))
        self.register_buffer("phases", torch.zeros(spec.channels))

    def forward(self, w: torch.Tensor, transform: torch.Tensor | None = None) -> torch.Tensor:
        spec, batch = self.spec, w.shape[0]
        user = (self.transform if transform is None else transform).to(w)
        t = self.affine(w)
        t = t / t[:, :2].norm(dim=1, keepdim=True)
        cos, sin, tx, ty = t.unbind(dim=1)
        zero, one = torch.zeros_like(cos), torch.ones_like(cos)
        rotation = torch.stack([cos, -sin, zero, sin, cos, zero, zero, zero, one], 1)
        translation = torch.stack([one, zero, -tx, zero, one, -ty, zero, zero, one], 1)
        matrix = rotation.view(batch, 3, 3) @ translation.view(batch, 3, 3) @ user
        freqs = self.freqs[None] @ matrix[:, :2, :2]  # [B, C, 2]
        phases = self.phases[None] + (self.freqs[None] @ matrix[:, :2, 2:]).squeeze(2)
        amplitudes = (1 - (freqs.norm(dim=2) - spec.bandwidth)
                      / (spec.sampling_rate / 2 - spec.bandwidth)).clamp(0, 1)
        scale = 0.5 * spec.size / spec.sampling_rate
        theta = torch.tensor([[scale, 0.0, 0.0], [0.0, scale, 0.0]], device=w.device,
                             dtype=w.dtype)
        grid = F.affine_grid(theta[None], [1, 1, spec.size, spec.size], align_corners=False)[0]
        x = torch.einsum("hwk,bck->bchw", grid, freqs) + phases[:, :, None, None]
        x = torch.sin(x * (2 * math.pi)) * amplitudes[:, :, None, None]
        return torch.einsum("oc,bchw->bohw", self.weight / math.sqrt(spec.channels), x)


class SynthesisLayer(nn.Module):
    """Modulated convolution and filtered leaky ReLU (the ToRGB: a 1x1 modulated convolution,
    not demodulated, bias and clamp). ``fast`` (the default): :meth:`_fast`; else each sample's
    modulated weight in a grouped convolution and the filtered leaky ReLU in NVIDIA's order."""

    fast = True

    def __init__(self, w_dim: int, spec: LayerSpec, conv_clamp: float | None) -> None:
        super().__init__()
        self.spec = spec
        self.conv_clamp = conv_clamp
        k = spec.conv_kernel
        self.affine = EqualLinear(w_dim, spec.in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(spec.out_channels, spec.in_channels, k, k))
        self.bias = nn.Parameter(torch.zeros(spec.out_channels))
        self.register_buffer("magnitude_ema", torch.ones([]))
        self.up_filter: torch.Tensor | None
        self.down_filter: torch.Tensor | None
        self.register_buffer("up_filter", torch.zeros(spec.up_taps) if spec.up_taps > 1
                             else None)
        self.register_buffer("down_filter", None if spec.down_taps == 1 else
                             torch.zeros((spec.down_taps,) * (2 if spec.radial else 1)))

    def styles(self, w: torch.Tensor) -> torch.Tensor:
        """The affine of ``w``: scaled by the ToRGB's weight gain, or normalised per sample
        (demodulation cancels the scale; NVIDIA normalises over the whole batch)."""
        styles = self.affine(w)
        if self.spec.torgb:
            return styles / math.sqrt(self.spec.in_channels * self.spec.conv_kernel ** 2)
        return styles * styles.square().mean(dim=1, keepdim=True).rsqrt()

    def _weight(self) -> torch.Tensor:
        """The weight, pre-normalised per output channel unless this is the ToRGB (demodulation
        cancels the scale; NVIDIA's code does the same)."""
        if self.spec.torgb:
            return self.weight
        return self.weight * self.weight.square().mean(dim=(1, 2, 3), keepdim=True).rsqrt()

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        if self.fast:
            return self._fast(x, w)
        styles, weight, batch = self.styles(w), self._weight(), x.shape[0]
        per_sample = weight[None] * styles[:, None, :, None, None]  # [B, out, in, k, k]
        if not self.spec.torgb:
            per_sample = per_sample * torch.rsqrt(
                per_sample.square().sum(dim=(2, 3, 4)) + 1e-8)[..., None, None, None]
        per_sample = per_sample * self.magnitude_ema.rsqrt()
        x = F.conv2d(x.reshape(1, -1, *x.shape[2:]), per_sample.flatten(0, 1),
                     padding=self.spec.conv_kernel - 1, groups=batch)
        return filtered_lrelu(x.reshape(batch, -1, *x.shape[2:]), self.bias, self.spec,
                              self.up_filter, self.down_filter, self.conv_clamp, fast=False)

    def _fast(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """The same layer with styles on the activations of one shared convolution, channels-
        last tensors (depthwise filters run 2-4x faster so on CPUs), bias and demodulation in
        one pass, strided upsampling that crops as it goes, the activation gain folded into
        the clamp and the down filter, and the clamp skipped where nothing reaches it."""
        spec, styles, weight = self.spec, self.styles(w), self._weight()
        x = x.contiguous(memory_format=torch.channels_last)
        x = F.conv2d(x * (styles * self.magnitude_ema.rsqrt())[:, :, None, None], weight,
                     padding=spec.conv_kernel - 1)
        bias = self.bias[None, :, None, None]
        if spec.torgb:
            x = upsample(x + bias, self.up_filter, spec.up, spec.padding)
            return x if self.conv_clamp is None else x.clamp(-self.conv_clamp, self.conv_clamp)
        demod = torch.rsqrt(styles.square() @ weight.square().sum(dim=(2, 3)).T + 1e-8)
        x = upsample(torch.addcmul(bias, x, demod[:, :, None, None]), self.up_filter, spec.up,
                     spec.padding)
        x = F.leaky_relu(x, 0.2)
        limit = None if self.conv_clamp is None else self.conv_clamp / SQRT2
        if limit is not None:
            low, high = torch.aminmax(x.detach())
            if bool(high > limit) or bool(low < -limit):  # else the clamp is an identity
                x = x.clamp(-limit, limit)
        if self.down_filter is None:
            return x[:, :, ::spec.down, ::spec.down] * SQRT2
        # the gain sqrt 2, split over the separable passes of a 1-D filter
        return _filter(x, self.down_filter * SQRT2 ** (self.down_filter.dim() / 2), spec.down)


class SynthesisNetwork(nn.Module):
    def __init__(self, w_dim: int, input_spec: InputSpec, layers: list[LayerSpec],
                 conv_clamp: float | None) -> None:
        super().__init__()
        self.input = FourierInput(w_dim, input_spec)
        self.names = [spec.name(i) for i, spec in enumerate(layers)]
        for name, spec in zip(self.names, layers, strict=True):
            self.add_module(name, SynthesisLayer(w_dim, spec, conv_clamp))


def input_transform(translate: tuple[float, float] = (0.0, 0.0), rotate: float = 0.0
                    ) -> list[list[float]]:
    """The input transform that turns the image by ``rotate`` degrees and shifts it by
    ``translate`` (in units of the image's half width): the inverse of the rotation-translation
    matrix, which is what NVIDIA's ``gen_images.py --rotate --translate`` stores."""
    angle = math.radians(rotate)
    forward = np.array([[math.cos(angle), math.sin(angle), translate[0]],
                        [-math.sin(angle), math.cos(angle), translate[1]], [0.0, 0.0, 1.0]])
    return np.linalg.inv(forward).tolist()


def _check_transform(matrix: Any) -> torch.Tensor:
    try:
        tensor = torch.as_tensor(matrix, dtype=torch.float32, device="cpu")
    except (TypeError, ValueError, RuntimeError):
        tensor = None
    if tensor is None or tensor.shape != (3, 3) or not torch.isfinite(tensor).all():
        raise InputError(f"input_transform must be a 3x3 matrix of finite numbers, got "
                         f"{matrix!r}", field="input_transform")
    return tensor


class StyleGAN3Generator(StyleBasedGenerator):
    """StyleGAN3 generator (T and R configs, unconditional or conditional) built from the
    declared input and layers (:class:`InputSpec`, :class:`LayerSpec`); :meth:`design` makes a
    new one the way NVIDIA's code lays it out."""

    family: ClassVar[str] = "stylegan3"

    def __init__(self, resolution: int, z_dim: int, w_dim: int, input: InputSpec | dict,
                 layers: list[LayerSpec | dict], mapping_layers: int = 2,
                 lr_multiplier: float = 0.01, conv_clamp: float | None = 256.0,
                 output_scale: float = 0.25, truncation_psi: float = 1.0,
                 c_dim: int = 0) -> None:
        super().__init__()
        input_spec = _spec(InputSpec, input, "input")
        specs = [_spec(LayerSpec, layer, f"layers[{i}]") for i, layer in enumerate(layers)]
        check_specs(resolution, input_spec, specs)
        _whole("z_dim", z_dim, 1, MAX_WIDTH)
        _whole("w_dim", w_dim, 1, MAX_WIDTH)
        _whole("c_dim", c_dim, 0, MAX_WIDTH)
        _whole("mapping_layers", mapping_layers, 1, MAX_MAPPING_LAYERS)
        _positive("lr_multiplier", lr_multiplier)
        _positive("output_scale", output_scale)
        if conv_clamp is not None:
            _positive("conv_clamp", conv_clamp)
        check_truncation(truncation_psi)
        self.resolution = resolution
        self.mapping_z_dim, self.w_dim, self.c_dim = z_dim, w_dim, c_dim
        self.input_spec, self.specs = input_spec, specs
        self.mapping_layers, self.lr_multiplier = mapping_layers, float(lr_multiplier)
        self.conv_clamp = None if conv_clamp is None else float(conv_clamp)
        self.output_scale = float(output_scale)
        self.truncation_psi = float(truncation_psi)
        self.truncation_layers = None
        self.num_ws = len(specs) + 1
        self.transform: torch.Tensor | None = None  # None: the stored synthesis.input.transform
        self.mapping = MappingNetwork(z_dim, w_dim, mapping_layers, lr_multiplier, c_dim)
        self.synthesis = SynthesisNetwork(w_dim, input_spec, specs, self.conv_clamp)

    # -- settings ------------------------------------------------------------------------------
    @property
    def w_avg(self) -> torch.Tensor:
        return self.mapping.w_avg

    @property
    def config_name(self) -> str:
        """``stylegan3-r`` when a layer has a radial filter, else ``stylegan3-t``."""
        return "stylegan3-r" if any(spec.radial for spec in self.specs) else "stylegan3-t"

    def config(self) -> dict[str, Any]:
        transform = None if self.transform is None else self.transform.tolist()
        return {"family": self.family, "resolution": self.resolution,
                "z_dim": self.mapping_z_dim, "w_dim": self.w_dim, "c_dim": self.c_dim,
                "mapping_layers": self.mapping_layers, "lr_multiplier": self.lr_multiplier,
                "conv_clamp": self.conv_clamp, "output_scale": self.output_scale,
                "input": asdict(self.input_spec), "layers": [asdict(s) for s in self.specs],
                "truncation_psi": self.truncation_psi, "label": self.label,
                "input_transform": transform}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> StyleGAN3Generator:
        layers = config["layers"]
        if not isinstance(layers, list):
            raise InputError("layers must be a list of layer settings", field="layers")
        generator = cls(resolution=config["resolution"], z_dim=config["z_dim"],
                        w_dim=config["w_dim"], input=config["input"], layers=layers,
                        mapping_layers=config["mapping_layers"],
                        lr_multiplier=config["lr_multiplier"], conv_clamp=config["conv_clamp"],
                        output_scale=config["output_scale"],
                        truncation_psi=config.get("truncation_psi", 1.0),
                        c_dim=config.get("c_dim", 0))
        return generator.with_label(config.get("label")).with_input_transform(
            config.get("input_transform"))

    @classmethod
    def from_state_dict(cls, state_dict: dict[str, Any], source: str = "StyleGAN3 state dict"
                        ) -> StyleGAN3Generator:
        raise InputError(f"{source}: a StyleGAN3 cannot be rebuilt from weights alone (its "
                         "sampling rates and sizes are not in the shapes); load the NVIDIA pickle "
                         "or our .safetensors with its .json config")

    def with_input_transform(self, matrix: Any) -> StyleGAN3Generator:
        """This generator with the input's user transform set to ``matrix`` (3x3, as NVIDIA's
        ``gen_images.py`` stores it; :func:`input_transform` builds one from a rotation and a
        translation), sharing every weight; None keeps the stored one."""
        if matrix is None:
            return self
        view = copy.copy(self)
        view.transform = _check_transform(matrix)
        return view

    def describe(self) -> str:
        classes = (f"; conditional, {self.c_dim} classes (label "
                   f"{'unset' if self.label is None else self.label})" if self.c_dim else "")
        moved = "" if self.transform is None else "; input transformed"
        return f"{super().describe()}; {self.config_name}{classes}{moved}"

    fast_paths_vmap = False  # the fast path skips the clamp by looking at the values

    def use_fast_paths(self, enabled: bool = True) -> StyleGAN3Generator:
        for module in self.modules():
            if isinstance(module, SynthesisLayer):
                module.fast = enabled
        return self

    # -- styles --------------------------------------------------------------------------------
    def _steps(self) -> list[str]:
        """The synthesis modules in order; step ``i`` takes style row ``i``."""
        return ["input", *self.synthesis.names]

    def style_layers(self) -> list[str]:
        return self._steps()

    def sefa_layers(self) -> list[str]:
        """Every synthesis layer (the input's affine sets only its rotation and translation)."""
        return list(self.synthesis.names)

    def style_weight(self, name: str) -> torch.Tensor:
        affine = getattr(self.synthesis, name).affine
        return affine.weight.detach() * affine.weight_gain

    # -- synthesis -----------------------------------------------------------------------------
    def _run(self, x: torch.Tensor | None, ws: torch.Tensor, start: int, stop: int,
             w_offset: int = 0) -> torch.Tensor:
        """Steps ``[start, stop)``; ``ws[:, i - w_offset]`` is the style of step ``i``."""
        steps = self._steps()
        for i in range(start, stop):
            w = ws[:, i - w_offset]
            if i == 0:
                x = self.synthesis.input(w, self.transform)
            else:
                x = getattr(self.synthesis, steps[i])(x, w)
        return x

    def synthesize(self, ws: torch.Tensor) -> torch.Tensor:
        """Styles ``[B, num_ws, w_dim]`` to images ``[B, 3, R, R]`` (unclamped)."""
        return self._run(None, ws, 0, self.num_ws) * self.output_scale

    def layer_outputs(self, ws: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every synthesis module's output by NVIDIA's name (the ToRGB's before
        ``output_scale``)."""
        outputs, x = {}, None
        for i, name in enumerate(self._steps()):
            x = self._run(x, ws, i, i + 1)
            outputs[name] = x
        return outputs

    def _layer_names(self) -> list[str]:
        return self._steps()[:-1]

    def _measure_shapes(self) -> list[tuple[int, int, int]]:
        first = (self.input_spec.channels, self.input_spec.size, self.input_spec.size)
        return [first] + [(s.out_channels, s.out_size, s.out_size) for s in self.specs[:-1]]

    def carry_specs(self, layer: Layer) -> tuple:
        return () if layer.index == 0 else (STYLES,)

    def head(self, z: torch.Tensor, layer: str | int | Layer) -> Cut:
        layer = self.layer(layer)
        if layer.index == 0:
            return Cut(self._check_latents(z)[:, :, None, None])
        ws = self.ws(z)
        return Cut(self._run(None, ws, 0, layer.index), {"styles": ws[:, layer.index:]})

    def tail(self, cut: Cut, layer: str | int | Layer) -> torch.Tensor:
        layer = self.layer(layer)
        if layer.index == 0:
            return self.synthesize(self.ws(cut.features.flatten(1)))
        x = self._run(cut.features, cut.carry["styles"], layer.index, self.num_ws,
                      w_offset=layer.index)
        return x * self.output_scale

    # -- a new generator laid out as NVIDIA's code lays it out ---------------------------------
    @classmethod
    def design(cls, resolution: int, z_dim: int = 512, w_dim: int = 512,
               channel_base: int = 32768, channel_max: int = 512, config: str = "t",
               num_layers: int = 14, num_critical: int = 2, first_cutoff: float = 2.0,
               first_stopband: float = 2 ** 2.1, last_stopband_rel: float = 2 ** 0.3,
               margin_size: int = 10, filter_size: int = 6, lrelu_upsampling: int = 2,
               mapping_layers: int = 2, c_dim: int = 0, conv_clamp: float | None = 256.0,
               output_scale: float = 0.25, seed: int = 0) -> StyleGAN3Generator:
        """An untrained StyleGAN3 with the paper's schedule of cutoffs, stopbands, sampling
        rates and widths (``channel_base`` and ``channel_max`` as the network takes them; NVIDIA's
        ``train.py`` doubles both for R), its filters designed (Kaiser-windowed, radial for
        ``config="r"``, which also uses 1x1 convolutions) and its weights drawn from ``seed``."""
        if config not in ("t", "r"):
            raise InputError(f"config must be t or r, got {config!r}", field="config")
        schedule = _schedule(resolution, num_layers, num_critical, first_cutoff, first_stopband,
                             last_stopband_rel, margin_size, channel_base, channel_max)
        cutoffs, rates, half_widths, sizes, channels = schedule
        input_spec = InputSpec(int(channels[0]), int(sizes[0]), float(rates[0]),
                               float(cutoffs[0]))
        specs, filters = [], []
        for idx in range(num_layers + 1):
            prev, torgb = max(idx - 1, 0), idx == num_layers
            tmp_rate = max(rates[prev], rates[idx]) * (1 if torgb else lrelu_upsampling)
            up = int(np.rint(tmp_rate / rates[prev]))
            down = int(np.rint(tmp_rate / rates[idx]))
            up_taps = filter_size * up if up > 1 and not torgb else 1
            down_taps = filter_size * down if down > 1 and not torgb else 1
            radial = config == "r" and idx < num_layers - num_critical
            specs.append(LayerSpec(int(channels[prev]), int(channels[idx]), int(sizes[prev]),
                                   int(sizes[idx]), 1 if torgb or config == "r" else 3, up,
                                   down, up_taps, down_taps, radial, torgb))
            filters.append((lowpass_filter(up_taps, cutoffs[prev], half_widths[prev] * 2,
                                           tmp_rate),
                            lowpass_filter(down_taps, cutoffs[idx], half_widths[idx] * 2,
                                           tmp_rate, radial)))
        generator = cls(resolution, z_dim, w_dim, input_spec, specs, mapping_layers,
                        conv_clamp=conv_clamp, output_scale=output_scale, c_dim=c_dim)
        rng = torch.Generator().manual_seed(int(seed))
        with torch.no_grad():
            for name, tensor in generator.named_parameters():
                tensor.copy_(torch.randn(tensor.shape, generator=rng) * (
                    0.0 if name.endswith("bias") else 1.0 / generator.lr_multiplier
                    if name.startswith("mapping.") else 1.0))
            for layer, (up_filter, down_filter) in zip(generator.synthesis.names, filters,
                                                       strict=True):
                module = getattr(generator.synthesis, layer)
                module.affine.bias.fill_(1.0)
                if up_filter is not None:
                    module.up_filter.copy_(up_filter)
                if down_filter is not None:
                    module.down_filter.copy_(down_filter)
            _draw_frequencies(generator.synthesis.input, rng)
        return generator.eval()


def _spec(kind: type, value: Any, where: str) -> Any:
    """A spec dataclass from itself or a dict with exactly its fields."""
    if isinstance(value, kind):
        return value
    names = [f.name for f in fields(kind)]
    if not isinstance(value, dict) or not set(value) <= set(names):
        raise InputError(f"{where} must be a dict with fields {', '.join(names)}, got "
                         f"{value!r}"[:300], field=where)
    try:
        return kind(**value)
    except TypeError as err:
        raise InputError(f"{where}: {err}", field=where) from None


def _schedule(resolution: int, num_layers: int, num_critical: int, first_cutoff: float,
              first_stopband: float, last_stopband_rel: float, margin_size: int,
              channel_base: int, channel_max: int) -> tuple[np.ndarray, ...]:
    """Per layer (input first): cutoff, sampling rate, transition half-width, size with margin
    and width; the cutoffs and stopbands rise geometrically to the last ``num_critical``
    layers, which are critically sampled at the output resolution (paper, section 3.2)."""
    last_cutoff = resolution / 2
    last_stopband = last_cutoff * last_stopband_rel
    exponents = np.minimum(np.arange(num_layers + 1) / (num_layers - num_critical), 1)
    cutoffs = first_cutoff * (last_cutoff / first_cutoff) ** exponents
    stopbands = first_stopband * (last_stopband / first_stopband) ** exponents
    rates = np.exp2(np.ceil(np.log2(np.minimum(stopbands * 2, resolution))))
    half_widths = np.maximum(stopbands, rates / 2) - cutoffs
    sizes = rates + margin_size * 2
    sizes[-2:] = resolution
    channels = np.rint(np.minimum((channel_base / 2) / cutoffs, channel_max))
    channels[-1] = 3
    return cutoffs, rates, half_widths, sizes, channels


def lowpass_filter(taps: int, cutoff: float, width: float, rate: float,
                   radial: bool = False) -> torch.Tensor | None:
    """The paper's Kaiser-windowed low-pass filter (``scipy.signal.firwin``), or its radially
    symmetric 2-D form (a jinc under the outer product of the Kaiser window, normalised to sum
    1); None for a single tap."""
    import scipy.signal
    import scipy.special

    if taps == 1:
        return None
    if not radial:
        return torch.as_tensor(scipy.signal.firwin(taps, cutoff, width=width, fs=rate),
                               dtype=torch.float32)
    x = (np.arange(taps) - (taps - 1) / 2) / rate
    r = np.hypot(*np.meshgrid(x, x))
    f = scipy.special.j1(2 * cutoff * (np.pi * r)) / (np.pi * r)
    beta = scipy.signal.kaiser_beta(scipy.signal.kaiser_atten(taps, width / (rate / 2)))
    window = np.kaiser(taps, beta)
    f = f * np.outer(window, window)
    return torch.as_tensor(f / f.sum(), dtype=torch.float32)


def _draw_frequencies(module: FourierInput, rng: torch.Generator) -> None:
    """Frequencies drawn from a normal distribution, pushed toward the origin (divided by
    ``r * exp(r^2 / 4)``) and scaled to the bandwidth, phases uniform in [-1/2, 1/2): how the
    paper's code starts. Only :meth:`StyleGAN3Generator.design` uses it; files carry their
    own."""
    freqs = torch.randn(module.spec.channels, 2, generator=rng)
    radii = freqs.square().sum(dim=1, keepdim=True).sqrt()
    freqs = freqs / (radii * radii.square().exp().pow(0.25)) * module.spec.bandwidth
    module.freqs.copy_(freqs)
    module.phases.copy_(torch.rand(module.spec.channels, generator=rng) - 0.5)
    module.affine.weight.zero_()
    module.affine.bias.copy_(torch.tensor([1.0, 0.0, 0.0, 0.0]))
