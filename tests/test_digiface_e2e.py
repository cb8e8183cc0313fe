"""End to end with the real DigiFace DCGAN prior: multi-code beats single-code inversion.

Targets are images the prior did not make as such: collages of four of its faces (always
available) and, when ``../shared/real-images`` exists, real bedroom photos.
"""

import pytest
import torch

from helpers import REAL_IMAGES
from inversion import Inversion, get_recipe, invert, load_images
from inversion.engine import QUIET

pytestmark = pytest.mark.slow


def collages(generator):
    faces = generator.sample(8, seed=123)

    def quad(a, b, c, d):
        top = torch.cat([faces[a, :, :32, :32], faces[b, :, :32, 32:]], dim=2)
        bottom = torch.cat([faces[c, :, 32:, :32], faces[d, :, 32:, 32:]], dim=2)
        return torch.cat([top, bottom], dim=1)

    return torch.stack([quad(0, 1, 2, 3), quad(4, 5, 6, 7)])


def real_bedrooms(generator):
    folder = REAL_IMAGES / "bedroom"
    if not folder.is_dir():
        pytest.skip(f"{folder} is absent (real photos are optional)")
    return torch.stack([image.tensor() for image in load_images([folder], 64)[:2]])


@pytest.mark.parametrize("targets", [collages, real_bedrooms])
def test_multi_code_at_the_deepest_layer_beats_single_code(digiface, targets):
    generator = digiface.generator
    images = targets(generator)
    recipe = get_recipe("adam", "inversion").with_overrides(iterations=50)
    multi = invert(generator, images, Inversion(), recipe.with_overrides(codes=20, layer=-1),
                   seeds=[0, 1], references=images, options=QUIET)
    single = invert(generator, images, Inversion(), recipe.with_overrides(codes=1, layer=0),
                    seeds=[0, 1], references=images, options=QUIET)
    assert multi.layer.name == "main.11"
    gains = [m["psnr"] - s["psnr"] for m, s in zip(multi.metrics, single.metrics, strict=True)]
    assert min(gains) > 3.0, gains
