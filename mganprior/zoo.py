"""The model zoo: named generators, where their weights come from and how to load them.

Nothing here downloads: every named model reads weights that are installed with a package or
committed to this repository. User files come in through ``checkpoint=PATH``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from inversion.devices import resolve_device
from inversion.errors import InputError
from inversion.generators import (
    DCGANGenerator,
    LayeredGenerator,
    file_sha256,
    load_generator_file,
)
from inversion.generators.checkpoints import read_torch_checkpoint


@dataclass(frozen=True)
class GeneratorEntry:
    name: str
    description: str
    weights: Callable[[], Path]
    load: Callable[[Path], LayeredGenerator]


def _digiface_weights() -> Path:
    try:
        path = Path(str(resources.files("gan_face_generate") / "weights.tar"))
    except ModuleNotFoundError:
        raise InputError("digiface-dcgan64 needs the package gan-face-generate "
                         "(pip install gan-face-generate==1.1.1)") from None
    if not path.is_file():
        raise InputError(f"digiface-dcgan64: {path} is missing from gan-face-generate; "
                         "reinstall it")
    return path


def _load_digiface(path: Path) -> LayeredGenerator:
    return DCGANGenerator.from_state_dict(read_torch_checkpoint(path), source=str(path))


GENERATORS: dict[str, GeneratorEntry] = {
    entry.name: entry for entry in [
        GeneratorEntry(
            "digiface-dcgan64",
            "DCGAN (PyTorch tutorial architecture) trained on DigiFace-1M synthetic faces, 64x64, "
            "z 100; weights from the PyPI package gan-face-generate 1.1.1 (MIT)",
            _digiface_weights, _load_digiface),
    ]
}


@dataclass
class LoadedGenerator:
    generator: LayeredGenerator
    info: dict[str, Any]


def load_generator(name: str | None = None, checkpoint: str | Path | None = None,
                   device: str | torch.device | None = None) -> LoadedGenerator:
    """A named zoo generator or a checkpoint file, in eval mode on ``device``, with provenance."""
    if (name is None) == (checkpoint is None):
        raise InputError("give exactly one of a generator name (--generator) or a checkpoint "
                         "(--checkpoint)")
    target = resolve_device(device)
    if name is not None:
        if name not in GENERATORS:
            raise InputError(f"unknown generator {name!r}; named generators: "
                             f"{', '.join(GENERATORS)} (or pass --checkpoint PATH)")
        entry = GENERATORS[name]
        path = entry.weights()
        generator = entry.load(path)
    else:
        path = Path(checkpoint)
        generator = load_generator_file(path)
    info = {"name": name, "checkpoint": str(path), "sha256": file_sha256(path),
            "family": generator.family, "resolution": generator.resolution,
            "z_dim": generator.z_dim}
    if hasattr(generator, "config"):
        info["config"] = generator.config()
    return LoadedGenerator(generator.to(target).eval(), info)
