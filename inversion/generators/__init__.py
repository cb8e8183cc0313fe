"""Layered generators: the protocol, the families (PGGAN, DCGAN, any module via hooks) and files."""

from __future__ import annotations

from pathlib import Path

import torch

from inversion.errors import InputError
from inversion.generators.base import Layer, LayeredGenerator, StagedGenerator, capture_outputs
from inversion.generators.checkpoints import (
    file_sha256,
    load_strict,
    read_safetensors,
    read_torch_checkpoint,
    save_weights,
)
from inversion.generators.dcgan import DCGANGenerator
from inversion.generators.hooked import HookedGenerator
from inversion.generators.pggan import PGGANGenerator

FAMILIES = {"pggan": PGGANGenerator, "dcgan": DCGANGenerator}

__all__ = [
    "FAMILIES",
    "DCGANGenerator",
    "HookedGenerator",
    "Layer",
    "LayeredGenerator",
    "PGGANGenerator",
    "StagedGenerator",
    "capture_outputs",
    "file_sha256",
    "load_generator_file",
    "save_generator",
]


def save_generator(generator: LayeredGenerator, path: str | Path,
                   dtype: torch.dtype | None = None) -> Path:
    """Save as ``path`` (.safetensors) plus ``path.json`` with the family config."""
    if not hasattr(generator, "config"):
        raise InputError(f"{type(generator).__name__} has no config() and cannot be saved")
    return save_weights(generator.state_dict(), generator.config(), path, dtype=dtype)


def load_generator_file(path: str | Path) -> LayeredGenerator:
    """Load a generator file: our ``.safetensors`` + JSON, or an official/tutorial ``.pth``."""
    path = Path(path)
    if path.suffix == ".safetensors":
        tensors, config = read_safetensors(path)
        family = config.get("family")
        if family not in FAMILIES:
            raise InputError(f"config of {path} names family {family!r}; "
                             f"known families: {', '.join(FAMILIES)}")
        try:
            generator = FAMILIES[family].from_config(config)
        except (KeyError, TypeError, ValueError) as err:
            raise InputError(f"config of {path} is incomplete for family {family} ({err})") \
                from None
        load_strict(generator, tensors, str(path))
        return generator.eval()
    state_dict = read_torch_checkpoint(path)
    inner = state_dict.get("state_dict", state_dict.get("netG_state_dict", state_dict))
    if isinstance(inner, dict) and any(str(k).startswith("main.") for k in inner):
        return DCGANGenerator.from_state_dict(state_dict, source=str(path))
    return PGGANGenerator.from_state_dict(state_dict, source=str(path))
