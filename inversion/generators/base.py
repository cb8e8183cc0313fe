"""The layered-generator contract: a generator split at a named layer into ``head`` and ``tail``.

Every family provides the same surface (:class:`LayeredGenerator` declares it abstractly):

- ``z_dim`` and ``resolution``;
- ``layers``: the ordered composable layers, each with an index, a name and the output shape
  ``(C, h, w)`` *measured* by one forward pass (never read from a table). Index 0 is the latent
  input itself (shape ``(z_dim, 1, 1)``), so composing at layer 0 is plain latent optimisation;
- ``head(z, layer)``: latents ``[B, z_dim]`` to the :class:`Cut` at ``layer``: the features
  ``[B, C, h, w]`` that alphas weight, plus any tensors that must cross the cut untouched by alpha
  (``carry``; each declared by a :class:`CarrySpec` with the rules that may fuse it across codes);
- ``tail(cut, layer)``: a cut to images ``[B, 3, H, W]`` in ``[-1, 1]``;
- ``config()``, ``from_config(config)`` and ``from_state_dict(state_dict, source)``: how the family
  is saved and rebuilt (``savable`` is False for a family that wraps arbitrary Python code);
- optionally, latents the family optimises beside codes and alphas for some carry rules
  (``extra_latents``, ``carry_from_latents``).

Layers are addressed by name or by index (negative indices count from the deepest).
"""

from __future__ import annotations

import contextlib
import copy
from abc import ABCMeta, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from mganprior.core.errors import InputError

# How a carried tensor may be fused across the N codes of an image (``inversion.composition``).
CARRY_RULES: dict[str, str] = {
    "alpha": "each code's tensor weighted by its mean alpha (times the fusion scale), as the "
             "features are weighted channel by channel",
    "mean": "the plain mean over the codes",
    "drop": "left out; the family's tail documents what it does without it",
    "latent": "computed from a separate latent that is optimised beside the codes",
}


@dataclass(frozen=True)
class Layer:
    """A composable layer: ``index`` in the listing, ``name``, measured ``shape`` (C, h, w)."""

    index: int
    name: str
    shape: tuple[int, int, int]

    @property
    def channels(self) -> int:
        return self.shape[0]

    def describe(self) -> str:
        c, h, w = self.shape
        return f"{self.index} {self.name} {c}x{h}x{w}"


@dataclass
class Cut:
    """The state of a generator at a cut.

    ``features`` ``[..., C, h, w]`` are what alphas weight, channel by channel; ``carry`` holds
    the tensors that cross the cut untouched by alpha. The leading dimensions are ``[B]`` for one
    state per image and ``[B, N]`` for one state per code.
    """

    features: torch.Tensor
    carry: dict[str, torch.Tensor] = field(default_factory=dict)

    def apply(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> Cut:
        """The same cut with ``fn`` applied to every tensor (reshape, index, move)."""
        return Cut(fn(self.features), {name: fn(value) for name, value in self.carry.items()})

    def detach(self) -> Cut:
        return self.apply(torch.Tensor.detach)


@dataclass(frozen=True)
class CarrySpec:
    """A tensor that crosses a cut untouched by alpha: its name, the rules of
    :data:`CARRY_RULES` that may fuse it across codes, the family's default, and what it is."""

    name: str
    rules: tuple[str, ...]
    default: str
    doc: str

    def __post_init__(self) -> None:
        unknown = [rule for rule in (*self.rules, self.default) if rule not in CARRY_RULES]
        if unknown or self.default not in self.rules:
            raise ValueError(f"carry {self.name}: rules {self.rules} / default {self.default} "
                             f"must come from {', '.join(CARRY_RULES)}")


@contextlib.contextmanager
def capture_outputs(modules: dict[str, nn.Module]) -> Iterator[dict[str, torch.Tensor]]:
    """Record each named module's output during the ``with`` block; the hooks always come off."""
    captured: dict[str, torch.Tensor] = {}
    handles = []
    try:
        for name, module in modules.items():

            def hook(_module, _inputs, output, name=name):
                captured[name] = output

            handles.append(module.register_forward_hook(hook))
        yield captured
    finally:
        for handle in handles:
            handle.remove()


@contextlib.contextmanager
def evaluating(module: nn.Module) -> Iterator[None]:
    """Eval mode inside the block (no BatchNorm statistics updates), the old mode afterwards."""
    was_training = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was_training)


@contextlib.contextmanager
def frozen(module: nn.Module) -> Iterator[None]:
    """Eval mode and no parameter gradients inside the block; both restored afterwards."""
    flags = [(p, p.requires_grad) for p in module.parameters()]
    with evaluating(module):
        for p, _ in flags:
            p.requires_grad_(False)
        try:
            yield
        finally:
            for p, flag in flags:
                p.requires_grad_(flag)


def compiled(generator: LayeredGenerator) -> LayeredGenerator:
    """The same generator (shared weights, the same latent space) whose head and tail run
    through ``torch.compile``: the first pass of each shape compiles (tens of seconds on a
    CPU), later ones run fused kernels. Shapes stay static: with dynamic shapes inductor fails
    to lower StyleGAN3's filter convolutions' backward (torch 2.13). Callers compile after
    ``in_space``, which would otherwise copy the compiled functions of another view."""
    view = copy.copy(generator)
    view.head = torch.compile(generator.head, dynamic=False)
    view.tail = torch.compile(generator.tail, dynamic=False)
    return view


def latent_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(int(seed))


def layer_key(key: str | int | Layer) -> str | int:
    """A layer's name, or an index (numeric strings become ints)."""
    if isinstance(key, Layer):
        return key.name
    if isinstance(key, str) and key.lstrip("-").isdigit():
        return int(key)
    return key


def find_layer(layers: Sequence[Layer], key: str | int | Layer) -> Layer | None:
    """The layer of a listing named by ``key``: a name, an index (negative counts from the
    deepest) or a numeric string; None when there is none."""
    key = layer_key(key)
    if isinstance(key, int):
        return layers[key] if -len(layers) <= key < len(layers) else None
    return next((layer for layer in layers if layer.name == key), None)


class LayeredGenerator(nn.Module, metaclass=ABCMeta):
    """What every generator family provides; see the module docstring."""

    z_dim: int
    resolution: int
    family: ClassVar[str] = "generator"
    savable: ClassVar[bool] = True  # config() + state_dict() rebuild it (False: wraps code)
    latent_spaces: ClassVar[tuple[str, ...]] = ("z",)
    latent_space: str = "z"

    def __init__(self) -> None:
        super().__init__()
        self._layers: list[Layer] | None = None

    # -- what every family provides ------------------------------------------------------------
    @abstractmethod
    def _layer_names(self) -> list[str]:
        """Names of composable layers after the latent input, shallow to deep."""

    @abstractmethod
    def _measure_shapes(self) -> list[tuple[int, int, int]]:
        """Output shapes (C, h, w) of ``_layer_names()``, measured by one forward pass."""

    @abstractmethod
    def head(self, z: torch.Tensor, layer: str | int | Layer) -> Cut:
        """Latents ``[B, z_dim]`` to the cut at ``layer`` (features ``[B, C, h, w]``)."""

    @abstractmethod
    def tail(self, cut: Cut, layer: str | int | Layer) -> torch.Tensor:
        """The cut at ``layer`` to images ``[B, 3, H, W]`` (nominally [-1, 1])."""

    @abstractmethod
    def config(self) -> dict[str, Any]:
        """The JSON-able settings that, with ``state_dict()``, rebuild this generator; always
        holds ``family``."""

    @classmethod
    @abstractmethod
    def from_config(cls, config: dict[str, Any]) -> LayeredGenerator:
        """An untrained generator of the family from ``config()``'s output."""

    @classmethod
    @abstractmethod
    def from_state_dict(cls, state_dict: dict[str, Any], source: str = "state dict"
                        ) -> LayeredGenerator:
        """A generator built from weights alone, its settings inferred from their shapes."""

    # -- carried state (families that carry nothing keep these defaults) ---------------------
    def carry_specs(self, layer: Layer) -> tuple[CarrySpec, ...]:
        """What crosses the cut at ``layer`` besides the features."""
        return ()

    def extra_latents(self, layer: Layer, rules: Mapping[str, str], cut: Cut,
                      seeds: Sequence[int] = ()) -> dict[str, torch.Tensor]:
        """Initial values ``[B, ...]`` of the latents to optimise beside codes and alphas under
        ``rules``; ``cut`` is the per-code cut ``[B, N, ...]`` of the initial codes, ``seeds``
        the images' seeds where a start is drawn at random."""
        return {}

    def noise_maps(self, layer: Layer, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """The ``noise`` extra latent ``[B, ...]`` as named maps ``[B, h, w]`` (families with
        optimisable noise maps only)."""
        raise InputError(f"a {self.family} generator has no optimisable noise maps",
                         field="optimize_noise")

    def carry_from_latents(self, layer: Layer, rules: Mapping[str, str],
                           extras: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The carried tensors ``[B, ...]`` whose rule is ``latent``, from the extra latents."""
        return {}

    # -- latent spaces (families with one latent space keep these defaults) -------------------
    def in_space(self, space: str) -> LayeredGenerator:
        """This generator with its codes in latent space ``space`` (one of ``latent_spaces``)."""
        if space not in self.latent_spaces:
            raise InputError(f"latent_space {space!r} is not a latent space of this "
                             f"{self.family} generator; spaces: {', '.join(self.latent_spaces)}",
                             field="latent_space")
        return self

    # whether the fast paths run under torch.func.vmap (tuning's per-image weights); a family
    # whose fast path branches on values sets False and tunes on its reference path
    fast_paths_vmap = True

    def use_fast_paths(self, enabled: bool = True) -> LayeredGenerator:
        """Exact rewrites of the forward pass (equal within fp32 rounding) on, the default, or
        off, for comparisons. Families without any keep this no-op."""
        return self

    def with_truncation(self, psi: float) -> LayeredGenerator:
        """This generator with truncation ``psi`` (families with a mapping network only)."""
        if psi == 1:
            return self
        raise InputError(f"truncation_psi applies to generators with a mapping network "
                         f"(StyleGAN2), not to this {self.family} generator",
                         field="truncation_psi")

    def with_label(self, label: int | None) -> LayeredGenerator:
        """This generator making class ``label`` (class-conditional families only)."""
        if label is None:
            return self
        raise InputError(f"label {label}: this {self.family} generator is unconditional and "
                         "takes no label", field="label")

    def with_input_transform(self, matrix: Any) -> LayeredGenerator:
        """This generator with its input turned and shifted by ``matrix`` (StyleGAN3 only)."""
        if matrix is None:
            return self
        raise InputError(f"input_transform (--rotate, --translate) applies to StyleGAN3's "
                         f"Fourier-feature input, not to this {self.family} generator",
                         field="input_transform")

    def latent_weight(self, layers: str = "all") -> tuple[torch.Tensor, str]:
        """The weight of the first layer that acts on the latent, as a matrix ``[out, latent]``,
        and the latent space it acts on: what closed-form direction finding (SeFa) factorises.
        ``layers`` chooses among several such layers (StyleGAN2's style affines)."""
        raise InputError(f"a {self.family} generator does not expose the weight of its first "
                         "layer (SeFa needs it)", field="generator")

    def _first_layer_only(self, layers: str, name: str) -> None:
        """Families whose only layer on the latent is their first refuse any other choice."""
        if str(layers).strip() not in ("all", "0", name):
            raise InputError(f"layers {layers!r}: a {self.family} generator has one layer that "
                             f"acts on the latent (all, 0 or {name})", field="layers")

    def initial_latents(self, n: int, rng: torch.Generator) -> torch.Tensor:
        """``n`` starting codes ``[n, z_dim]`` on the CPU, drawn from ``rng``."""
        return torch.randn(n, self.z_dim, generator=rng)

    # -- shared --------------------------------------------------------------------------------
    def describe(self) -> str:
        """One line: the family, the resolution and the latent spaces."""
        return (f"{self.family}, {self.resolution} px, latent spaces "
                f"{', '.join(self.latent_spaces)}")

    @property
    def device(self) -> torch.device:
        for tensor in self.parameters():
            return tensor.device
        for tensor in self.buffers():
            return tensor.device
        return torch.device("cpu")

    @property
    def layers(self) -> list[Layer]:
        """Composable layers with measured shapes; index 0 is the latent input."""
        if self._layers is None:
            shapes = self._measure_shapes()
            names = self._layer_names()
            self._layers = [Layer(0, "z", (self.z_dim, 1, 1))] + [
                Layer(i + 1, name, tuple(int(s) for s in shape))
                for i, (name, shape) in enumerate(zip(names, shapes, strict=True))
            ]
        return self._layers

    def layer(self, key: str | int | Layer) -> Layer:
        """Resolve a name, an index (negative counts from the deepest) or a numeric string."""
        layers = self.layers
        found = find_layer(layers, key)
        if found is not None:
            return found
        listing = ", ".join(layer.describe() for layer in layers)
        raise InputError(
            f"layer {layer_key(key)!r} is not a composable layer of this {self.family} generator; "
            f"valid layers (index name CxHxW): {listing}", field="layer")

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Latents ``[B, z_dim]`` to images ``[B, 3, H, W]`` in [-1, 1]."""
        return self.tail(self.head(z, 0), 0)

    def sample_latents(self, n: int, seed: int) -> torch.Tensor:
        """``n`` latents ``[n, z_dim]`` for sampling; a seed always gives the same rows."""
        return self.initial_latents(n, latent_generator(seed)).to(self.device)

    @torch.no_grad()
    def sample(self, n: int, seed: int = 0) -> torch.Tensor:
        """``n`` images ``[n, 3, H, W]`` in [-1, 1] from seeded latents."""
        return self(self.sample_latents(n, seed)).clamp(-1, 1)

    def _check_latents(self, z: torch.Tensor) -> torch.Tensor:
        if z.dim() == 4 and z.shape[2:] == (1, 1):
            z = z.flatten(1)
        if z.dim() != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"latents must be [B, {self.z_dim}], got {list(z.shape)}")
        return z


def no_carry(cut: Cut, family: str) -> torch.Tensor:
    """The features of a cut that must carry nothing (families whose tail needs only them)."""
    if cut.carry:
        raise ValueError(f"a {family} cut carries nothing, got {', '.join(cut.carry)}")
    return cut.features


class StagedGenerator(LayeredGenerator):
    """A generator that is a chain of stages; each stage's output is a named composable layer.

    ``stages`` lists ``(layer_name, module)`` in order; the last stage produces the image and is
    not composable. The latent enters as ``[B, z_dim, 1, 1]``. ``head``/``tail`` slice the chain;
    nothing but the features crosses a cut.
    """

    @abstractmethod
    def _stages(self) -> Sequence[tuple[str, nn.Module]]:
        """``(layer_name, module)`` in order, the image-making stage last."""

    def _layer_names(self) -> list[str]:
        return [name for name, _ in self._stages()[:-1]]

    def _run(self, x: torch.Tensor, start: int, stop: int | None) -> torch.Tensor:
        for _, stage in self._stages()[start:stop]:
            x = stage(x)
        return x

    @torch.no_grad()
    def _measure_shapes(self) -> list[tuple[int, int, int]]:
        stages = dict(self._stages()[:-1])
        z = torch.zeros(1, self.z_dim, 1, 1, device=self.device)
        with evaluating(self), capture_outputs(stages) as outputs:
            self._run(z, 0, None)
        return [tuple(outputs[name].shape[1:]) for name in stages]

    def head(self, z: torch.Tensor, layer: str | int | Layer) -> Cut:
        """Latents ``[B, z_dim]`` to the features ``[B, C, h, w]`` at ``layer``."""
        index = self.layer(layer).index
        return Cut(self._run(self._check_latents(z)[:, :, None, None], 0, index))

    def tail(self, cut: Cut, layer: str | int | Layer) -> torch.Tensor:
        """Features ``[B, C, h, w]`` at ``layer`` to images ``[B, 3, H, W]`` (nominally [-1, 1])."""
        return self._run(no_carry(cut, self.family), self.layer(layer).index, None)
