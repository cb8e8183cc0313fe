"""Multi-code GAN prior inversion, generic over layered generators.

    from mganprior.zoo import load_generator
    from inversion import invert, get_recipe, Inversion
    G = load_generator("digiface-dcgan64").generator
    targets = G.sample(4, seed=1)
    result = invert(G, targets, Inversion(), get_recipe("adam", "inversion"), seeds=[0, 1, 2, 3],
                    references=targets)
"""

from inversion.composition import code_features, fuse, render
from inversion.engine import InversionResult, invert
from inversion.errors import InputError
from inversion.generators import (
    DCGANGenerator,
    HookedGenerator,
    Layer,
    LayeredGenerator,
    PGGANGenerator,
    load_generator_file,
    save_generator,
)
from inversion.images import LoadedImage, load_image, load_images
from inversion.recipes import Recipe, get_recipe
from inversion.rundir import RunDirectory
from inversion.runs import RunSettings, run_inversion
from inversion.tasks import (
    Colorization,
    Denoising,
    Inpainting,
    Inversion,
    SuperResolution,
    Task,
    make_task,
)

__all__ = [
    "Colorization", "DCGANGenerator", "Denoising", "HookedGenerator", "Inpainting", "InputError",
    "Inversion", "InversionResult", "Layer", "LayeredGenerator", "LoadedImage", "PGGANGenerator",
    "Recipe", "RunDirectory", "RunSettings", "SuperResolution", "Task", "code_features", "fuse",
    "get_recipe", "invert", "load_generator_file", "load_image", "load_images", "make_task",
    "render", "run_inversion", "save_generator",
]
