"""Every generator family runs through the same contract (tests/helpers.py:GeneratorContract):
layers measured, head then tail equals the plain forward, batched equals looped, save/load,
hooks removed, extra latents recorded. A new family gets the whole suite by subclassing it."""

from __future__ import annotations

from torch import nn

from helpers import CarryToy, GeneratorContract, make_tiny_dcgan, make_tiny_pggan
from inversion.generators import HookedGenerator
from inversion.generators.formats import register_family


class TestPGGANContract(GeneratorContract):
    def make(self):
        return make_tiny_pggan()


class TestDCGANContract(GeneratorContract):
    def make(self):
        return make_tiny_dcgan()


class Stacked(nn.Module):
    """A plain module generator: z [B, 4] -> 4x4 -> 8x8 image, no skip connections."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Linear(4, 6 * 4 * 4)
        self.body = nn.Sequential(nn.Upsample(scale_factor=2), nn.Conv2d(6, 5, 3, padding=1),
                                  nn.Tanh())
        self.to_rgb = nn.Conv2d(5, 3, 1)

    def forward(self, z):
        return self.to_rgb(self.body(self.stem(z).view(-1, 6, 4, 4)))


class TestHookedContract(GeneratorContract):
    def make(self):
        return HookedGenerator(Stacked().eval(), z_dim=4, resolution=8,
                               layers=["body.0", "body"])


class TestCarryingFamilyContract(GeneratorContract):
    """A family whose cut carries a tensor, with an extra latent under the ``latent`` rule."""

    extra_carry = "shift=latent"
    extra_layer = "feat"

    def make(self):
        register_family(CarryToy)  # the extension point a new family uses to be loadable
        return CarryToy().eval()
