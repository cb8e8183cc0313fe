"""The model zoo: named generators and segmenters, where their weights come from, how to load them.

Nothing here downloads: every named model reads weights that are installed with a package or
committed to this repository. User files come in through ``checkpoint=PATH``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from inversion.generators.base import LayeredGenerator
from inversion.generators.dcgan import DCGANGenerator
from inversion.generators.formats import load_generator_file
from mganprior.core.devices import resolve_device
from mganprior.core.errors import InputError
from mganprior.core.weights import file_sha256, read_torch_checkpoint
from segmentation.formats import load_segmenter_dir
from segmentation.segmenters import Segmenter


@dataclass(frozen=True)
class GeneratorEntry:
    name: str
    description: str
    weights: Callable[[], Path]
    load: Callable[[Path], LayeredGenerator]
    domain: str | None = None  # the scene-world domain it was trained on


DIGIFACE_INSTALL = "pip install 'mganprior[digiface]' (or gan-face-generate==1.1.1 --no-deps)"


def _digiface_weights() -> Path:
    try:
        path = Path(str(resources.files("gan_face_generate") / "weights.tar"))
    except ModuleNotFoundError:
        raise InputError(f"digiface-dcgan64 needs the package gan-face-generate "
                         f"({DIGIFACE_INSTALL})") from None
    if not path.is_file():
        raise InputError(f"digiface-dcgan64: {path} is missing from gan-face-generate; "
                         "reinstall it")
    return path


def _load_digiface(path: Path) -> LayeredGenerator:
    return DCGANGenerator.from_state_dict(read_torch_checkpoint(path), source=str(path))


SCENE_WEIGHTS = Path(__file__).resolve().parent / "scenes" / "weights"


def _scene_weights(name: str) -> Callable[[], Path]:
    def locate() -> Path:
        path = SCENE_WEIGHTS / f"{name}.safetensors"
        if not path.is_file():
            raise InputError(f"{name}: weights file {path} is missing; it is committed with the "
                             "repository (retrain with mganprior/scenes/train_models.sh and "
                             "python -m mganprior.scenes.publish)")
        return path
    return locate


def _scene_generator(name: str, domain: str, architecture: str = "PGGAN architecture, 64x64, "
                     "z 128") -> GeneratorEntry:
    return GeneratorEntry(
        name, f"{architecture}, trained by this project on rendered {domain} scenes "
        "(docs/models.md)", _scene_weights(name), load_generator_file, domain)


GENERATORS: dict[str, GeneratorEntry] = {
    entry.name: entry for entry in [
        GeneratorEntry(
            "digiface-dcgan64",
            "DCGAN (PyTorch tutorial architecture) trained on DigiFace-1M synthetic faces, 64x64, "
            "z 100; weights from the PyPI package gan-face-generate 1.1.1 (MIT)",
            _digiface_weights, _load_digiface),
        _scene_generator("bedroom-pggan64", "bedroom"),
        _scene_generator("conference-pggan64", "conference_room"),
        _scene_generator("church-pggan64", "church_outdoor"),
        _scene_generator("bedroom-stylegan2-64", "bedroom", "StyleGAN2 (skip generator, our "
                         "implementation), 64x64, z and w 64, 4 mapping layers"),
    ]
}

SEGMENTERS: dict[str, str] = {
    "scenes-segmenter64": "smp Unet (mobilenet_v2 encoder, random init) trained by this project "
                          "on rendered scenes of all domains, scene-world vocabulary, 64x64 "
                          "(docs/models.md)",
}


def missing_generators(names: Iterable[str]) -> dict[str, str]:
    """The named generators whose weights are not installed, each with the one line saying why
    and how to add them (nothing is loaded)."""
    missing = {}
    for name in names:
        try:
            GENERATORS[name].weights()
        except InputError as err:
            missing[name] = str(err)
    return missing


@dataclass
class LoadedGenerator:
    generator: LayeredGenerator
    info: dict[str, Any]


def load_generator(name: str | None = None, checkpoint: str | Path | None = None,
                   device: str | torch.device | None = None,
                   truncation_psi: float | None = None,
                   label: int | None = None,
                   input_transform: list[list[float]] | None = None) -> LoadedGenerator:
    """A named zoo generator or a checkpoint file (any known format), in eval mode on
    ``device``, with provenance; ``truncation_psi`` overrides the file's truncation (style-based
    generators), ``label`` chooses the class of a conditional one, ``input_transform`` (3x3)
    turns and shifts a StyleGAN3's input."""
    if (name is None) == (checkpoint is None):
        raise InputError("give exactly one of a generator name (generator) or a checkpoint "
                         "file (checkpoint)")
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
    if truncation_psi is not None:
        generator = generator.with_truncation(truncation_psi)
    generator = generator.with_label(label).with_input_transform(input_transform)
    info = {"name": name, "checkpoint": str(path), "sha256": file_sha256(path),
            "family": generator.family, "resolution": generator.resolution,
            "z_dim": generator.z_dim, "config": generator.config()}
    return LoadedGenerator(generator.to(target).eval(), info)


def load_segmenter(name: str | None = None, directory: str | Path | None = None, *,
                   labels: str | list[str] | None = None, device: str | torch.device | None = None,
                   scales: str | None = None) -> Segmenter:
    """A named zoo segmenter or a segmenter folder of any known format, on ``device``.

    ``labels`` (a vocabulary name, a JSON list file or a list) names a user model's classes when
    its folder does not. ``scales`` asks a CSAIL folder for multi-scale inference.
    """
    if (name is None) == (directory is None):
        raise InputError("give exactly one of a segmenter name (segmenter) or a segmenter "
                         "folder (segmenter_dir)")
    if name is not None:
        if name not in SEGMENTERS:
            raise InputError(f"unknown segmenter {name!r}; named segmenters: "
                             f"{', '.join(SEGMENTERS)} (or pass an smp model directory)")
        directory = SCENE_WEIGHTS / name
        if not (directory / "model.safetensors").is_file():
            raise InputError(f"{name}: weights file {directory / 'model.safetensors'} is missing; "
                             "it is committed with the repository (retrain with "
                             "mganprior/scenes/train_models.sh and "
                             "python -m mganprior.scenes.publish)")
    return load_segmenter_dir(directory, labels=labels, device=resolve_device(device),
                              scales=scales)
