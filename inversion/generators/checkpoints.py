"""Generator weights on disk: ``.safetensors`` plus a small JSON config beside it.

Foreign formats (official PGGAN ``.pth`` in two key layouts, the PyTorch-tutorial DCGAN) go through
explicit converters in the family modules; every load is strict and names what does not match.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from inversion.errors import InputError
from inversion.files import atomic_path, atomic_write_bytes

FORMAT_VERSION = 1


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _shorten(items: list[str], limit: int = 6) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")


def check_state_dict(
    expected: dict[str, tuple[int, ...]], state_dict: dict[str, torch.Tensor], source: str
) -> None:
    """Raise one InputError naming missing keys, unexpected keys and shape mismatches."""
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    mismatched = [
        f"{key} {list(state_dict[key].shape)} (expected {list(shape)})"
        for key, shape in expected.items()
        if key in state_dict and tuple(state_dict[key].shape) != tuple(shape)
    ]
    problems = []
    if missing:
        problems.append(f"missing keys: {_shorten(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_shorten(unexpected)}")
    if mismatched:
        problems.append(f"shape mismatches: {_shorten(mismatched)}")
    if problems:
        raise InputError(f"{source} does not match the architecture: " + "; ".join(problems))


def load_strict(module: nn.Module, state_dict: dict[str, torch.Tensor], source: str) -> None:
    """``load_state_dict`` after a key/shape check whose error names every problem at once."""
    expected = {key: tuple(value.shape) for key, value in module.state_dict().items()}
    check_state_dict(expected, state_dict, source)
    module.load_state_dict({k: v.to(torch.float32) if v.is_floating_point() else v
                            for k, v in state_dict.items()})


def config_path(weights_path: str | Path) -> Path:
    return Path(weights_path).with_suffix(".json")


def save_weights(
    state_dict: dict[str, torch.Tensor], config: dict[str, Any], path: str | Path,
    dtype: torch.dtype | None = None,
) -> Path:
    """Write ``path`` (.safetensors) and its JSON config beside it; returns the weights path."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise InputError(f"weights must be saved as .safetensors, got {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {
        k: (v.detach().to(dtype) if dtype is not None and v.is_floating_point() else v.detach())
        .cpu().contiguous()
        for k, v in state_dict.items()
    }
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp))
    body = json.dumps({**config, "format_version": FORMAT_VERSION}, indent=2, sort_keys=True)
    atomic_write_bytes(config_path(path), (body + "\n").encode())
    return path


def read_safetensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Weights and config of a ``.safetensors`` checkpoint; one-line errors for bad files."""
    path = Path(path)
    cfg_path = config_path(path)
    if not path.is_file():
        raise InputError(f"checkpoint {path} does not exist")
    if not cfg_path.is_file():
        raise InputError(f"checkpoint {path} has no config {cfg_path.name} beside it")
    try:
        config = json.loads(cfg_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(f"config {cfg_path} is not valid JSON ({err})") from None
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise InputError(f"checkpoint {path} is corrupt or not a safetensors file ({err})") \
            from None
    return tensors, config


def read_torch_checkpoint(path: str | Path) -> dict[str, Any]:
    """A ``torch.save`` checkpoint loaded with ``weights_only=True`` (no code runs)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"checkpoint {path} does not exist")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for damaged files
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise InputError(f"checkpoint {path} is corrupt or not a torch checkpoint ({reason})") \
            from None
    if not isinstance(loaded, dict):
        raise InputError(f"checkpoint {path} holds a {type(loaded).__name__}, not a state dict")
    return loaded
