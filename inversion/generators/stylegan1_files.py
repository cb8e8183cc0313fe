"""StyleGAN (v1) checkpoints in the genforce layout (``stylegan_*_generator.pth``, the files the
official mGANprior code loads): a plain state dict saved by genforce's TF-to-PyTorch converter,
read with ``weights_only=True``.

The reader follows the rule for every reader: the architecture is inferred from the tensors'
shapes as plain numbers and checked (counts, sizes, the bytes behind every tensor), a skeleton is
built on the meta device and compared key by key, and only then is the module built and loaded
strictly. Anything wrong is one ``InputError`` naming the file and the key.
"""

from __future__ import annotations

from typing import Any

import torch

from inversion.generators.stylegan1 import MAX_RESOLUTION, StyleGAN1Generator
from mganprior.core.errors import InputError
from mganprior.core.weights import build_checked, check_backed

MAX_WIDTH = 8192  # channels or latent sizes beyond this are no StyleGAN
MAX_MAPPING_LAYERS = 64
DERIVED = ("truncation.truncation",)  # rebuilt from the settings; older files keep it


def is_genforce_stylegan(state: dict[str, Any]) -> bool:
    return "synthesis.layer0.const" in state and "mapping.dense0.fc.weight" in state


def _count(state: dict[str, Any], pattern: str, limit: int) -> int:
    count = 0
    while pattern.format(count) in state and count <= limit:
        count += 1
    return count


def _shape(state: dict[str, Any], key: str, rank: int, source: str) -> tuple[int, ...]:
    value = state.get(key)
    if not isinstance(value, torch.Tensor) or value.dim() != rank or \
            not value.is_floating_point():
        got = list(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        raise InputError(f"{source}: {key} must be a {rank}-d float tensor, got {got}")
    shape = tuple(int(s) for s in value.shape)
    if any(not 1 <= s <= MAX_WIDTH for s in shape):
        raise InputError(f"{source}: {key} has shape {list(shape)}; sizes must be in "
                         f"[1, {MAX_WIDTH}]")
    return shape


def infer_config(state: dict[str, Any], source: str) -> dict[str, Any]:
    """The generator's settings from the tensors' shapes, checked as plain numbers."""
    mapping_layers = _count(state, "mapping.dense{}.fc.weight", MAX_MAPPING_LAYERS)
    if not 1 <= mapping_layers <= MAX_MAPPING_LAYERS:
        raise InputError(f"{source}: {mapping_layers} mapping layers; expected 1 to "
                         f"{MAX_MAPPING_LAYERS}")
    first = _shape(state, "mapping.dense0.fc.weight", 2, source)
    last = _shape(state, f"mapping.dense{mapping_layers - 1}.fc.weight", 2, source)
    layers = _count(state, "synthesis.layer{}.epilogue.bias", 2 * 12)
    blocks = layers // 2
    if layers < 2 or layers % 2 or 4 << (blocks - 1) > MAX_RESOLUTION:
        raise InputError(f"{source}: {layers} synthesis layers; a StyleGAN has two per "
                         f"resolution, 4 px to {MAX_RESOLUTION} px")
    channels = [_shape(state, f"synthesis.layer{2 * k}.epilogue.bias", 1, source)[0]
                for k in range(blocks)]
    fused = [4 << k for k in range(1, blocks) if f"synthesis.layer{2 * k}.weight" in state]
    lod = state.get("synthesis.lod")
    if isinstance(lod, torch.Tensor) and lod.numel() == 1 and float(lod) != 0:
        raise InputError(f"{source}: synthesis.lod is {float(lod)}; only finished models "
                         "(lod 0, every resolution in use) are supported")
    return {"family": "stylegan1", "resolution": 4 << (blocks - 1), "z_dim": first[1],
            "w_dim": last[0], "channels": channels, "mapping_layers": mapping_layers,
            "mapping_width": first[0] if mapping_layers > 1 else last[0], "fused": fused,
            "truncation_psi": 1.0, "truncation_layers": 8}


def from_genforce(state_dict: dict[str, Any], source: str = "StyleGAN state dict"
                  ) -> StyleGAN1Generator:
    """A genforce-layout StyleGAN (v1) state dict (ours has the same keys) as a generator."""
    if not isinstance(state_dict, dict) or not all(isinstance(k, str) for k in state_dict):
        raise InputError(f"{source} is not a state dict of named tensors")
    state = {k: v for k, v in state_dict.items() if k not in DERIVED}
    check_backed(state, source)
    config = infer_config(state, source)
    generator = build_checked(lambda: StyleGAN1Generator.from_config(config), state,
                              f"{source} (genforce StyleGAN layout)")
    return generator.eval()
