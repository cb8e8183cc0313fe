"""DCGAN: the tutorial layout loads strictly; the real DigiFace prior loads from its package."""

import pytest
import torch

from inversion.generators import DCGANGenerator, load_generator_file, save_generator
from mganprior.core.errors import InputError


def test_tutorial_state_dict_round_trips_and_keeps_batchnorm_statistics(tmp_path, tiny_dcgan):
    torch.save({"netG_state_dict": tiny_dcgan.state_dict()}, tmp_path / "weights.tar")
    loaded = load_generator_file(tmp_path / "weights.tar")
    assert isinstance(loaded, DCGANGenerator)
    assert (loaded.z_dim, loaded.channels, loaded.resolution) == (8, [16, 8], 16)
    z = torch.randn(3, 8)
    with torch.no_grad():
        torch.testing.assert_close(loaded(z), tiny_dcgan(z))
    again = load_generator_file(save_generator(loaded, tmp_path / "dc.safetensors"))
    with torch.no_grad():
        torch.testing.assert_close(again(z), tiny_dcgan(z))


def test_layers_are_the_batchnorm_relu_blocks(tiny_dcgan):
    assert [layer.describe() for layer in tiny_dcgan.layers] == [
        "0 z 8x1x1", "1 main.2 16x4x4", "2 main.5 8x8x8"]


def test_missing_batchnorm_statistics_are_named(tiny_dcgan):
    sd = tiny_dcgan.state_dict()
    del sd["main.4.running_var"]
    with pytest.raises(InputError, match=r"missing keys: main\.4\.running_var"):
        DCGANGenerator.from_state_dict(sd, source="x.pth")


def test_digiface_prior_is_the_real_pretrained_network(digiface):
    generator = digiface.generator
    assert (generator.resolution, generator.z_dim, generator.channels) == (64, 100,
                                                                           [512, 256, 128, 64])
    assert sum(p.numel() for p in generator.parameters()) == 3_576_704
    assert [layer.describe() for layer in generator.layers] == [
        "0 z 100x1x1", "1 main.2 512x4x4", "2 main.5 256x8x8", "3 main.8 128x16x16",
        "4 main.11 64x32x32"]
    assert digiface.info["sha256"] and digiface.info["name"] == "digiface-dcgan64"
    images = generator.sample(8, seed=0)
    assert images.shape == (8, 3, 64, 64)
    assert images.min() >= -1 and images.max() <= 1
    # Trained, not random: BatchNorm running statistics moved away from their initial values
    # and samples of different seeds are diverse but not noise (neighbouring pixels correlate).
    assert not torch.allclose(generator.main[1].running_var, torch.ones(512))
    neighbours = torch.corrcoef(torch.stack([images[:, :, :, :-1].flatten(),
                                             images[:, :, :, 1:].flatten()]))[0, 1]
    assert neighbours > 0.8
