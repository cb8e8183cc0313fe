"""Shared fixtures: tiny generators for unit tests, the real DigiFace prior for end-to-end tests.
The helpers themselves live in ``tests/helpers.py``."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
from mganprior.core.heap import keep_big_blocks
from mganprior.entry import apply_wait_policy

apply_wait_policy(os.environ)  # the CLI's OpenMP wait policy
keep_big_blocks(os.environ)  # and its heap policy

import pytest
import torch

from helpers import ToyGenerator, make_tiny_dcgan, make_tiny_pggan
from inversion.generators import DCGANGenerator, PGGANGenerator


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)


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


@pytest.fixture
def face_pngs(tmp_path, tiny_pggan):
    """Three 16 px RGB PNGs rendered by the tiny PGGAN."""
    from inversion.images import save_png

    folder = tmp_path / "faces"
    folder.mkdir()
    for i, image in enumerate(tiny_pggan.sample(3, seed=11).clamp(-1, 1)):
        save_png(image, folder / f"img{i}.png")
    return folder
