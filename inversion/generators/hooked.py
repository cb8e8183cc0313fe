"""Wrap any ``nn.Module`` generator: its named submodules become composable layers via hooks.

``head`` runs the module with a forward hook that captures the layer's output and stops the pass;
``tail`` runs it with a hook that replaces the layer's output with the given features. This needs
no knowledge of the module's code, as in baukit's ``nethook``, at the price of running the layers
before the cut once more in ``tail`` (on zero latents). It is only correct when everything after the
layer depends on the latent *through* that layer; the constructor checks this by measurement and
refuses layers with skip connections around them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import nn

from inversion.generators.base import (
    Cut,
    Layer,
    LayeredGenerator,
    capture_outputs,
    evaluating,
    no_carry,
)
from mganprior.core.errors import InputError


class _StopForward(Exception):
    pass


@contextlib.contextmanager
def _stop_after(module: nn.Module, store: dict[str, torch.Tensor]) -> Iterator[None]:
    def hook(_module, _inputs, output):
        store["output"] = output
        raise _StopForward

    handle = module.register_forward_hook(hook)
    try:
        yield
    except _StopForward:
        pass
    finally:
        handle.remove()


@contextlib.contextmanager
def _replace_output(module: nn.Module, features: torch.Tensor) -> Iterator[None]:
    handle = module.register_forward_hook(lambda _module, _inputs, _output: features)
    try:
        yield
    finally:
        handle.remove()


class HookedGenerator(LayeredGenerator):
    """Any generator ``module(z) -> image`` with ``z`` of shape ``latent_shape`` per sample.

    ``layers`` names submodules (as in ``module.named_modules()``), shallow to deep. It wraps
    Python code, so it cannot be saved as weights plus a config: ``savable`` is False and
    ``config()`` only describes it (runs record that description).
    """

    family = "custom"
    savable = False

    def __init__(self, module: nn.Module, z_dim: int, resolution: int, layers: Sequence[str],
                 latent_shape: tuple[int, ...] | None = None,
                 output_transform: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        super().__init__()
        self.module = module
        self.z_dim = z_dim
        self.resolution = resolution
        self.latent_shape = tuple(latent_shape) if latent_shape is not None else (z_dim,)
        self.output_transform = output_transform
        named = dict(module.named_modules())
        unknown = [name for name in layers if name not in named]
        if unknown:
            raise InputError(f"no submodule named {', '.join(unknown)} in {type(module).__name__}; "
                             f"submodules: {', '.join(n for n in named if n)}")
        self._names = list(layers)
        self._modules_by_name = {name: named[name] for name in self._names}
        self._check_no_bypass()

    def _layer_names(self) -> list[str]:
        return self._names

    def config(self) -> dict[str, Any]:
        return {"family": self.family, "module": type(self.module).__name__,
                "z_dim": self.z_dim, "resolution": self.resolution, "layers": self._names,
                "latent_shape": list(self.latent_shape)}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> HookedGenerator:
        raise InputError("a hooked generator wraps a Python module and cannot be rebuilt from a "
                         "config; build the module in code and wrap it with HookedGenerator")

    @classmethod
    def from_state_dict(cls, state_dict: dict[str, Any], source: str = "state dict"
                        ) -> HookedGenerator:
        raise InputError(f"{source}: a hooked generator cannot be built from weights alone; "
                         "build the module in code, load its weights, and wrap it")

    def _call(self, z: torch.Tensor) -> torch.Tensor:
        image = self.module(z.reshape(z.shape[0], *self.latent_shape))
        return self.output_transform(image) if self.output_transform else image

    @torch.no_grad()
    def _measure_shapes(self) -> list[tuple[int, int, int]]:
        z = torch.zeros(1, self.z_dim, device=self.device)
        with evaluating(self), capture_outputs(self._modules_by_name) as outputs:
            self._call(z)
        flat = [name for name in self._names if outputs[name].dim() != 4]
        if flat:
            raise InputError(f"layer {flat[0]} outputs {list(outputs[flat[0]].shape)}; composable "
                             "layers must output feature maps [B, C, h, w]")
        return [tuple(outputs[name].shape[1:]) for name in self._names]

    @torch.no_grad()
    def _check_no_bypass(self) -> None:
        gen = torch.Generator().manual_seed(0)
        for layer in self.layers[1:]:
            features = torch.randn(1, *layer.shape, generator=gen).to(self.device)
            z_a = torch.randn(1, self.z_dim, generator=gen).to(self.device)
            with evaluating(self), _replace_output(self._modules_by_name[layer.name], features):
                image_a = self._call(z_a)
                image_b = self._call(-z_a)
            if not torch.allclose(image_a, image_b, atol=1e-5):
                raise InputError(f"layer {layer.name} cannot be a composing layer: the output "
                                 "depends on the latent through a path that bypasses it")

    def head(self, z: torch.Tensor, layer: str | int | Layer) -> Cut:
        """Latents ``[B, z_dim]`` to features ``[B, C, h, w]`` at ``layer``."""
        layer = self.layer(layer)
        z = self._check_latents(z)
        if layer.index == 0:
            return Cut(z[:, :, None, None])
        store: dict[str, torch.Tensor] = {}
        with _stop_after(self._modules_by_name[layer.name], store):
            self._call(z)
        return Cut(store["output"])

    def tail(self, cut: Cut, layer: str | int | Layer) -> torch.Tensor:
        """Features ``[B, C, h, w]`` at ``layer`` to images ``[B, 3, H, W]``."""
        layer = self.layer(layer)
        features = no_carry(cut, self.family)
        if layer.index == 0:
            return self._call(features.flatten(1))
        dummy = torch.zeros(features.shape[0], self.z_dim, device=features.device,
                            dtype=features.dtype)
        with _replace_output(self._modules_by_name[layer.name], features):
            return self._call(dummy)
