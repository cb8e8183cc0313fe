"""Multi-code composition at a layer: ``F = scale * sum_n alpha_n * G1(z_n)``, ``x = G2(F)``.

Shapes: codes ``[B, N, Z]``, alphas ``[B, N, C]`` (one weight per channel of the layer), per-code
features ``[B, N, C, h, w]``, fused features ``[B, C, h, w]``.

Two conventions for ``scale`` (``fusion``):

- ``"sum"``: ``scale = 1``. With alphas initialised to 1/N the fused feature starts as the mean of
  the N features, a typical feature of the generator. The default of the ``adam`` recipe.
- ``"mean"``: ``scale = 1/N``, as in the official mGANprior code (``sum(...) / z_number``).
  Under PGGAN's pixel-norm, which starts the layer after every cut, a global scale is invisible,
  so both conventions give identical images there. Generators without a normalisation after the
  cut (DCGAN: transposed conv then eval-mode BatchNorm) see features N times too small.

Alphas are initialised to 1/N under both conventions, so the attribution threshold on alpha
(0.2 by default) means the same thing for runs made with either.
"""

from __future__ import annotations

import torch

from inversion.generators.base import Layer, LayeredGenerator

FUSIONS = ("sum", "mean")


def fusion_scale(fusion: str, codes: int) -> float:
    if fusion not in FUSIONS:
        raise ValueError(f"fusion must be one of {FUSIONS}, got {fusion!r}")
    return 1.0 if fusion == "sum" else 1.0 / codes


def code_features(generator: LayeredGenerator, codes: torch.Tensor, layer: Layer) -> torch.Tensor:
    """Per-code features ``[B, N, C, h, w]`` from codes ``[B, N, Z]``: one batched head pass."""
    batch, n, z_dim = codes.shape
    features = generator.head(codes.reshape(batch * n, z_dim), layer)
    return features.reshape(batch, n, *features.shape[1:])


def fuse(features: torch.Tensor, alphas: torch.Tensor, fusion: str = "sum") -> torch.Tensor:
    """``scale * sum_n alphas[:, n, :, None, None] * features[:, n]`` -> ``[B, C, h, w]``."""
    if features.dim() != 5 or alphas.shape != features.shape[:3]:
        raise ValueError(f"features [B, N, C, h, w] and alphas [B, N, C] do not match: "
                         f"{list(features.shape)} vs {list(alphas.shape)}")
    scale = fusion_scale(fusion, features.shape[1])
    fused = torch.einsum("bnchw,bnc->bchw", features, alphas.to(features.dtype))
    return fused * scale if scale != 1.0 else fused


def render(generator: LayeredGenerator, codes: torch.Tensor, alphas: torch.Tensor, layer: Layer,
           fusion: str = "sum") -> torch.Tensor:
    """``x_inv = tail(fuse(head(codes), alphas))``: images ``[B, 3, H, W]``."""
    return generator.tail(fuse(code_features(generator, codes, layer), alphas, fusion), layer)


def initial_alphas(batch: int, codes: int, channels: int,
                   device: torch.device | str = "cpu") -> torch.Tensor:
    return torch.full((batch, codes, channels), 1.0 / codes, device=device)
