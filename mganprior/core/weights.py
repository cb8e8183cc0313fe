"""Weights on disk: ``.safetensors`` plus a small JSON config beside it, and strict checks.

Every load is strict: one error names every missing key, unexpected key and shape mismatch.
Shapes can be read from a safetensors header without loading (allocating) any tensor, so a config
is checked against its weights before a module is built from it. Torch checkpoints are read with
``weights_only=True`` only: nothing in a file is ever executed.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from mganprior.core.errors import InputError
from mganprior.core.files import atomic_path, atomic_write_bytes

M = TypeVar("M", bound=nn.Module)

FORMAT_VERSION = 1


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def shorten(items: list[str], limit: int = 6) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")


def check_shapes(expected: dict[str, tuple[int, ...]], actual: dict[str, tuple[int, ...]],
                 source: str) -> None:
    """Raise one InputError naming missing keys, unexpected keys and shape mismatches."""
    missing = sorted(set(expected) - set(actual))
    unexpected = sorted(set(actual) - set(expected))
    mismatched = [
        f"{key} {list(actual[key])} (expected {list(shape)})"
        for key, shape in expected.items()
        if key in actual and tuple(actual[key]) != tuple(shape)
    ]
    problems = []
    if missing:
        problems.append(f"missing keys: {shorten(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {shorten(unexpected)}")
    if mismatched:
        problems.append(f"shape mismatches: {shorten(mismatched)}")
    if problems:
        raise InputError(f"{source} does not match the architecture: " + "; ".join(problems))


def check_state_dict(expected: dict[str, tuple[int, ...]], state_dict: dict[str, Any],
                     source: str) -> None:
    """:func:`check_shapes` against the tensors of ``state_dict`` (non-tensors have shape ())."""
    check_shapes(expected, {k: tuple(getattr(v, "shape", ())) for k, v in state_dict.items()},
                 source)


def check_backed(state_dict: dict[str, Any], source: str) -> None:
    """Every value is a tensor holding the bytes its shape declares: a stride-0 view of one
    element declared as ``(10**10, 4, 4)`` would make a module builder allocate what the file
    never held."""
    for key, value in state_dict.items():
        if not isinstance(value, torch.Tensor):
            raise InputError(f"{source}: {key} is not a tensor ({type(value).__name__})")
        if value.numel() * value.element_size() > value.untyped_storage().nbytes():
            raise InputError(f"{source}: {key} declares shape {list(value.shape)} "
                             f"({value.numel()} numbers) over {value.untyped_storage().nbytes()} "
                             "bytes of storage; the file is damaged or hostile")


def module_shapes(module: nn.Module) -> dict[str, tuple[int, ...]]:
    return {key: tuple(value.shape) for key, value in module.state_dict().items()}


def load_strict(module: nn.Module, state_dict: dict[str, torch.Tensor], source: str) -> None:
    """``load_state_dict`` after a key/shape check whose error names every problem at once."""
    check_state_dict(module_shapes(module), state_dict, source)
    _assign(module, state_dict)


def _assign(module: nn.Module, state_dict: dict[str, torch.Tensor]) -> None:
    module.load_state_dict({k: v.to(torch.float32) if v.is_floating_point() else v
                            for k, v in state_dict.items()})


def build_checked(build: Callable[[], M], state_dict: dict[str, Any], source: str) -> M:
    """``build()`` first on the meta device, its keys and shapes compared with ``state_dict``
    (one InputError naming every difference), and only then for real, loaded strictly: a file
    cannot make a builder allocate sizes it only declares. Check the tensors' bytes first
    (:func:`check_backed`)."""
    try:
        with torch.device("meta"):
            skeleton = build()
    except InputError:
        raise
    except Exception as err:  # a constructor raises many types for a degenerate size
        reason = " ".join(str(err).split())[:160]
        raise InputError(f"{source} declares sizes no module can be built from "
                         f"({type(err).__name__}: {reason})") from None
    check_state_dict(module_shapes(skeleton), state_dict, source)
    module = build()
    _assign(module, state_dict)
    return module


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


def read_weights_config(path: str | Path) -> dict[str, Any]:
    """The JSON config beside a ``.safetensors`` file (it must be a JSON object)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"checkpoint {path} does not exist")
    cfg_path = config_path(path)
    if not cfg_path.is_file():
        raise InputError(f"checkpoint {path} has no config {cfg_path.name} beside it")
    try:
        config = json.loads(cfg_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(f"config {cfg_path} is not valid JSON ({err})") from None
    if not isinstance(config, dict):
        raise InputError(f"config {cfg_path} holds a {type(config).__name__}, not a JSON object")
    return config


def safetensors_shapes(path: str | Path) -> dict[str, tuple[int, ...]]:
    """Every tensor's shape from a safetensors header; no tensor is loaded."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            return {key: tuple(handle.get_slice(key).get_shape())
                    for key in handle.keys()}  # noqa: SIM118 (safe_open is not a dict)
    except (SafetensorError, OSError, ValueError) as err:
        raise InputError(f"checkpoint {path} is corrupt or not a safetensors file ({err})") \
            from None


def read_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a ``.safetensors`` file; one-line errors for bad files."""
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise InputError(f"checkpoint {path} is corrupt or not a safetensors file ({err})") \
            from None


def read_torch_checkpoint(path: str | Path) -> dict[str, Any]:
    """A ``torch.save`` checkpoint loaded with ``weights_only=True`` (no code runs)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"checkpoint {path} does not exist")
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for damaged files
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise InputError(f"checkpoint {path} is corrupt, not a torch checkpoint, or holds "
                         f"objects other than tensors and plain data ({reason})") from None
    if not isinstance(loaded, dict):
        raise InputError(f"checkpoint {path} holds a {type(loaded).__name__}, not a state dict")
    return loaded
