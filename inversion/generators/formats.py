"""Generator files: one registry of formats, each a sniffer and a strict loader.

``load_generator_file(path)`` asks every format, in order, whether the file is one of its own
(``sniff``), and the first that says yes loads it. A file no format recognises gets one line
listing the known formats; nothing is ever "tried as PGGAN". Torch checkpoints are read once, with
``weights_only=True``; our own format's config is checked against the weight shapes in the
safetensors header (on the meta device, so nothing is allocated) before a module is built.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from inversion.generators.base import LayeredGenerator
from inversion.generators.dcgan import DCGANGenerator
from inversion.generators.pggan import PGGANGenerator, detect_layout
from inversion.generators.stylegan1 import StyleGAN1Generator
from inversion.generators.stylegan1_files import from_genforce, is_genforce_stylegan
from inversion.generators.stylegan2 import StyleGAN2Generator
from inversion.generators.stylegan2_files import from_rosinality, is_rosinality, read_nvidia_pickle
from inversion.generators.stylegan3 import StyleGAN3Generator
from mganprior.core.errors import InputError
from mganprior.core.weights import (
    check_shapes,
    load_strict,
    module_shapes,
    read_safetensors,
    read_torch_checkpoint,
    read_weights_config,
    safetensors_shapes,
)

# Families that can be rebuilt from ``config()`` + weights (``"family"`` in the config).
FAMILIES: dict[str, type[LayeredGenerator]] = {"pggan": PGGANGenerator, "dcgan": DCGANGenerator,
                                               "stylegan1": StyleGAN1Generator,
                                               "stylegan2": StyleGAN2Generator,
                                               "stylegan3": StyleGAN3Generator}


def register_family(cls: type[LayeredGenerator]) -> type[LayeredGenerator]:
    """Add a savable family (by its ``family`` name) to :data:`FAMILIES`; usable as a decorator."""
    FAMILIES[cls.family] = cls
    return cls


def get_family(name: Any, source: str) -> type[LayeredGenerator]:
    if not isinstance(name, str) or name not in FAMILIES:
        raise InputError(f"{source} names family {name!r}; known families: "
                         f"{', '.join(FAMILIES)}")
    return FAMILIES[name]


class Peek:
    """What the sniffers look at: the path, its first bytes, and (read once, on demand, with
    ``weights_only=True``) its content as a torch checkpoint."""

    def __init__(self, path: Path) -> None:
        self.path = path
        with open(path, "rb") as handle:
            self.head = handle.read(16)
        self._torch: dict[str, Any] | None = None
        self.torch_error: str | None = None

    def torch_state(self) -> dict[str, Any] | None:
        """The file as a torch checkpoint dict, or None (``torch_error`` says why)."""
        if self._torch is None and self.torch_error is None:
            try:
                self._torch = read_torch_checkpoint(self.path)
            except InputError as err:
                self.torch_error = str(err)
        return self._torch

    def state_dict(self, *wrappers: str) -> dict[str, Any] | None:
        """The torch checkpoint, unwrapped from the first of ``wrappers`` it holds as a dict."""
        state = self.torch_state()
        if state is None:
            return None
        for key in wrappers:
            if isinstance(state.get(key), dict):
                return state[key]
        return state


@dataclass(frozen=True)
class GeneratorFormat:
    name: str
    description: str
    sniff: Callable[[Peek], bool]
    load: Callable[[Peek], LayeredGenerator]


def _is_safetensors(peek: Peek) -> bool:
    """A safetensors file starts with the little-endian length of its JSON header, then '{'."""
    return peek.path.suffix == ".safetensors" or (len(peek.head) > 8 and peek.head[8:9] == b"{")


def load_ours(peek: Peek) -> LayeredGenerator:
    """``.safetensors`` + ``.json``: the config is checked against the header before building."""
    path = peek.path
    config = read_weights_config(path)
    family = get_family(config.get("family"), f"config of {path}")
    try:
        with torch.device("meta"):
            skeleton = family.from_config(config)
    except InputError as err:
        raise InputError(f"config of {path}: {err}") from None
    except Exception as err:  # a family's constructor raises many types for a bad value
        reason = " ".join(str(err).split())[:160]
        raise InputError(f"config of {path} is incomplete or wrongly typed for family "
                         f"{family.family} ({type(err).__name__}: {reason})") from None
    check_shapes(module_shapes(skeleton), safetensors_shapes(path), str(path))
    generator = family.from_config(config)
    load_strict(generator, read_safetensors(path), str(path))
    return generator.eval()


def _pggan_state(peek: Peek) -> dict[str, Any] | None:
    return peek.state_dict("state_dict")


def _sniff_pggan(layout: str) -> Callable[[Peek], bool]:
    def sniff(peek: Peek) -> bool:
        state = _pggan_state(peek)
        if state is None:
            return False
        try:
            return detect_layout(state, str(peek.path)) == layout
        except InputError:
            return False
    return sniff


def _load_pggan(peek: Peek) -> LayeredGenerator:
    return PGGANGenerator.from_state_dict(_pggan_state(peek) or {}, source=str(peek.path))


def _dcgan_state(peek: Peek) -> dict[str, Any] | None:
    return peek.state_dict("netG_state_dict", "state_dict")


def _sniff_dcgan(peek: Peek) -> bool:
    state = _dcgan_state(peek)
    return state is not None and "main.0.weight" in state


def _load_dcgan(peek: Peek) -> LayeredGenerator:
    return DCGANGenerator.from_state_dict(_dcgan_state(peek) or {}, source=str(peek.path))


def _sniff_nvidia(peek: Peek) -> bool:
    """A plain pickle (not a torch zip) that mentions NVIDIA's persistence module early on."""
    if not peek.head.startswith(b"\x80"):
        return False
    with open(peek.path, "rb") as handle:
        return b"torch_utils.persistence" in handle.read(1 << 16)


def _sniff_genforce_stylegan(peek: Peek) -> bool:
    state = peek.torch_state()
    return state is not None and is_genforce_stylegan(state)


def _sniff_rosinality(peek: Peek) -> bool:
    state = peek.torch_state()
    return state is not None and is_rosinality(state)


FORMATS: list[GeneratorFormat] = [
    GeneratorFormat("mganprior", "our .safetensors weights with a .json config beside them",
                    _is_safetensors, load_ours),
    GeneratorFormat("stylegan-nvidia", "NVIDIA StyleGAN2 or StyleGAN3 pickle "
                    "(stylegan2-ada-pytorch, stylegan3 repositories), read without running its "
                    "code",
                    _sniff_nvidia, lambda peek: read_nvidia_pickle(peek.path)),
    GeneratorFormat("stylegan2-rosinality", "rosinality StyleGAN2 .pt (g_ema + args, or a bare "
                    "state dict; pSp, e4e, ReStyle)", _sniff_rosinality,
                    lambda peek: from_rosinality(peek.torch_state() or {}, str(peek.path))),
    GeneratorFormat("stylegan1-genforce", "StyleGAN (v1) .pth in the genforce / official "
                    "mGANprior layout (mapping.dense*, synthesis.layer*, truncation.w_avg)",
                    _sniff_genforce_stylegan,
                    lambda peek: from_genforce(peek.torch_state() or {}, str(peek.path))),
    GeneratorFormat("pggan-genforce", "PGGAN .pth in the genforce / official mGANprior layout",
                    _sniff_pggan("genforce"), _load_pggan),
    GeneratorFormat("pggan-gandissect", "PGGAN .pth in the GAN Dissection (netdissect) layout",
                    _sniff_pggan("gandissect"), _load_pggan),
    GeneratorFormat("pggan-native", "PGGAN state dict in this project's key layout (.pth)",
                    _sniff_pggan("native"), _load_pggan),
    GeneratorFormat("dcgan-tutorial", "PyTorch-tutorial DCGAN .pth (main.* keys, optionally "
                    "under netG_state_dict)", _sniff_dcgan, _load_dcgan),
]


def register_format(fmt: GeneratorFormat, before: str | None = None) -> None:
    """Add a format (``before`` another, when its sniffer must run first)."""
    index = next((i for i, f in enumerate(FORMATS) if f.name == before), len(FORMATS))
    FORMATS.insert(index, fmt)


def known_formats() -> str:
    return "; ".join(f"{f.name} ({f.description})" for f in FORMATS)


def sniff_format(path: str | Path) -> tuple[GeneratorFormat, Peek]:
    """The format of a generator file and its peek; an unknown file is an InputError."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"checkpoint {path} does not exist")
    peek = Peek(path)
    for fmt in FORMATS:
        if fmt.sniff(peek):
            return fmt, peek
    reason = f" As a torch checkpoint: {peek.torch_error}" if peek.torch_error else ""
    raise InputError(f"{path} is not a generator file in a known format. Known formats: "
                     f"{known_formats()}.{reason}")


def load_generator_file(path: str | Path) -> LayeredGenerator:
    """Load a generator file of any registered format, in eval mode on the CPU."""
    fmt, peek = sniff_format(path)
    return fmt.load(peek)
