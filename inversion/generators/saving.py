"""Saving a generator as ``.safetensors`` weights plus a ``.json`` config (our format)."""

from __future__ import annotations

from pathlib import Path

import torch

from inversion.generators.base import LayeredGenerator
from mganprior.core.errors import InputError
from mganprior.core.weights import save_weights


def save_generator(generator: LayeredGenerator, path: str | Path,
                   dtype: torch.dtype | None = None) -> Path:
    """Save as ``path`` (.safetensors) plus ``path.json`` with the family config."""
    if not generator.savable:
        raise InputError(f"a {generator.family} generator wraps Python code and cannot be saved "
                         "as weights plus a config")
    return save_weights(generator.state_dict(), generator.config(), path, dtype=dtype)
