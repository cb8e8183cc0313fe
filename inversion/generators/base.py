"""The layered-generator protocol: a generator split at a named layer into ``head`` and ``tail``.

Every generator exposes the same surface, whatever its family:

- ``z_dim`` and ``resolution``;
- ``layers``: the ordered composable layers, each with an index, a name and the output shape
  ``(C, h, w)`` *measured* by one forward pass (never read from a table). Index 0 is the latent
  input itself (shape ``(z_dim, 1, 1)``), so composing at layer 0 is plain latent optimisation;
- ``head(z, layer)``: latents ``[B, z_dim]`` to features ``[B, C, h, w]``;
- ``tail(features, layer)``: features to images ``[B, 3, H, W]`` in ``[-1, 1]``;
- ``sample(n, seed)``: ``n`` images from seeded standard-normal latents.

Layers are addressed by name or by index (negative indices count from the deepest).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from inversion.errors import InputError


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


class LayeredGenerator(nn.Module):
    """Base class: subclasses implement ``_layer_names``, ``head`` and ``tail``."""

    z_dim: int
    resolution: int
    family: str = "generator"

    def __init__(self) -> None:
        super().__init__()
        self._layers: list[Layer] | None = None

    # -- what subclasses provide ---------------------------------------------------------------
    def _layer_names(self) -> list[str]:
        """Names of composable layers after the latent input, shallow to deep."""
        raise NotImplementedError

    def _measure_shapes(self) -> list[tuple[int, int, int]]:
        """Output shapes (C, h, w) of ``_layer_names()``, measured by one forward pass."""
        raise NotImplementedError

    def head(self, z: torch.Tensor, layer: str | int | Layer) -> torch.Tensor:
        raise NotImplementedError

    def tail(self, features: torch.Tensor, layer: str | int | Layer) -> torch.Tensor:
        raise NotImplementedError

    # -- shared --------------------------------------------------------------------------------
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
            f"valid layers (index name CxHxW): {listing}"
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Latents ``[B, z_dim]`` to images ``[B, 3, H, W]`` in [-1, 1]."""
        return self.tail(self.head(z, 0), 0)

    def sample_latents(self, n: int, seed: int) -> torch.Tensor:
        """``n`` standard-normal latents ``[n, z_dim]``; a seed always gives the same rows."""
        gen = latent_generator(seed)
        return torch.randn(n, self.z_dim, generator=gen).to(self.device)

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


class StagedGenerator(LayeredGenerator):
    """A generator that is a chain of stages; each stage's output is a named composable layer.

    ``stages`` lists ``(layer_name, module)`` in order; the last stage produces the image and is
    not composable. The latent enters as ``[B, z_dim, 1, 1]``. ``head``/``tail`` slice the chain.
    """

    def _stages(self) -> Sequence[tuple[str, nn.Module]]:
        raise NotImplementedError

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

    def head(self, z: torch.Tensor, layer: str | int | Layer) -> torch.Tensor:
        """Latents ``[B, z_dim]`` to the features ``[B, C, h, w]`` at ``layer``."""
        return self._run(self._check_latents(z)[:, :, None, None], 0, self.layer(layer).index)

    def tail(self, features: torch.Tensor, layer: str | int | Layer) -> torch.Tensor:
        """Features ``[B, C, h, w]`` at ``layer`` to images ``[B, 3, H, W]`` (nominally [-1, 1])."""
        return self._run(features, self.layer(layer).index, None)
