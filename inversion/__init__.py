"""Multi-code GAN prior inversion, generic over layered generators.

    from mganprior.zoo import load_generator
    from inversion import invert, get_recipe, Inversion
    G = load_generator("digiface-dcgan64").generator
    targets = G.sample(4, seed=1)
    result = invert(G, targets, Inversion(), get_recipe("adam", "inversion"), seeds=[0, 1, 2, 3],
                    references=targets)

Names are resolved on first use, so ``import inversion.tasks`` (or any submodule) does not load
the engine, scikit-image or tqdm.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Cut": "inversion.generators.base",
    "Layer": "inversion.generators.base",
    "LayeredGenerator": "inversion.generators.base",
    "DCGANGenerator": "inversion.generators.dcgan",
    "HookedGenerator": "inversion.generators.hooked",
    "PGGANGenerator": "inversion.generators.pggan",
    "load_generator_file": "inversion.generators.formats",
    "save_generator": "inversion.generators.saving",
    "code_cuts": "inversion.composition",
    "fuse": "inversion.composition",
    "render": "inversion.composition",
    "InversionResult": "inversion.engine",
    "invert": "inversion.engine",
    "InvertOptions": "inversion.engine",
    "QUIET": "inversion.engine",
    "InputError": "mganprior.core.errors",
    "LoadedImage": "inversion.images",
    "load_image": "inversion.images",
    "load_images": "inversion.images",
    "Recipe": "inversion.recipes",
    "get_recipe": "inversion.recipes",
    "RunDirectory": "inversion.rundir",
    "RunSettings": "inversion.runs",
    "run_inversion": "inversion.runs",
    "Colorization": "inversion.tasks",
    "Denoising": "inversion.tasks",
    "Inpainting": "inversion.tasks",
    "Inversion": "inversion.tasks",
    "SuperResolution": "inversion.tasks",
    "Task": "inversion.tasks",
    "make_task": "inversion.tasks",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'inversion' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
