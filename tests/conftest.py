"""Shared fixtures: tiny generators for unit tests, the real DigiFace prior for end-to-end tests."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from inversion.generators import DCGANGenerator, PGGANGenerator, StagedGenerator

REPO = Path(__file__).resolve().parents[1]
REAL_IMAGES = REPO.parent / "shared" / "real-images"


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)


def make_tiny_pggan(seed: int = 0) -> PGGANGenerator:
    """16 px PGGAN with a few channels and non-zero biases (so layouts are fully exercised); the
    ToRGB weights are scaled so images stay within [-1, 1] as a trained generator's do."""
    torch.manual_seed(seed)
    generator = PGGANGenerator(resolution=16, z_dim=8, channels=[16, 12, 8])
    with torch.no_grad():
        for name, param in generator.named_parameters():
            if name.endswith("bias"):
                param.normal_(0, 0.1)
        generator.output.weight.mul_(0.3)
    return generator.eval()


def make_tiny_dcgan(seed: int = 0) -> DCGANGenerator:
    """16 px tutorial-layout DCGAN with randomised BatchNorm statistics."""
    torch.manual_seed(seed)
    generator = DCGANGenerator(z_dim=8, channels=[16, 8])
    with torch.no_grad():
        for module in generator.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.normal_(0, 0.1)
                module.running_var.uniform_(0.5, 1.5)
                module.weight.uniform_(0.8, 1.2)
                module.bias.normal_(0, 0.1)
    return generator.eval()


class ToyGenerator(StagedGenerator):
    """Hand-set linear generator, 2x2 px, answers computable by hand.

    z (2) -> ``feat``: 1x1 conv with identity weights, then nearest upsampling to 2x2, so both
    feature channels are constant maps equal to z; ``output``: 1x1 conv, channel 0 -> red,
    channel 1 -> green and blue, no bias, no activation.
    """

    family = "toy"

    def __init__(self):
        super().__init__()
        self.z_dim, self.resolution = 2, 2
        self.feat = nn.Sequential(nn.Conv2d(2, 2, 1, bias=False), nn.Upsample(scale_factor=2))
        self.rgb = nn.Conv2d(2, 3, 1, bias=False)
        with torch.no_grad():
            self.feat[0].weight.copy_(torch.eye(2).view(2, 2, 1, 1))
            colours = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
            self.rgb.weight.copy_(colours.view(3, 2, 1, 1))
        self._stage_list = [("feat", self.feat), ("output", self.rgb)]

    def _stages(self):
        return self._stage_list


@pytest.fixture
def tiny_pggan() -> PGGANGenerator:
    return make_tiny_pggan()


@pytest.fixture
def tiny_dcgan() -> DCGANGenerator:
    return make_tiny_dcgan()


@pytest.fixture
def toy() -> ToyGenerator:
    return ToyGenerator().eval()


@pytest.fixture(scope="session")
def digiface():
    from mganprior.zoo import load_generator

    return load_generator("digiface-dcgan64", device="cpu")


def write_png(path: Path, array: np.ndarray) -> Path:
    Image.fromarray(array).save(path)
    return path


@pytest.fixture
def face_pngs(tmp_path, tiny_pggan):
    """Three 16 px RGB PNGs rendered by the tiny PGGAN."""
    from inversion.images import save_png

    folder = tmp_path / "faces"
    folder.mkdir()
    for i, image in enumerate(tiny_pggan.sample(3, seed=11).clamp(-1, 1)):
        save_png(image, folder / f"img{i}.png")
    return folder
