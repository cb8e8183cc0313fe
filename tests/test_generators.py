"""Layered generators: measured listings, official numbering, head/tail composition, errors."""

import pytest
import torch

from helpers import make_tiny_stylegan2
from inversion.generators import PGGANGenerator
from inversion.generators.base import capture_outputs
from mganprior.core.errors import InputError


def test_pggan_256_listing_follows_official_numbering():
    generator = PGGANGenerator(resolution=256, z_dim=16, channels=[8, 8, 8, 8, 4, 4, 4])
    shapes = {layer.index: layer.shape for layer in generator.layers}
    assert shapes[0] == (16, 1, 1)
    assert shapes[4] == (8, 8, 8) and shapes[6] == (8, 16, 16) and shapes[8] == (8, 32, 32)
    assert shapes[14] == (4, 256, 256)
    assert len(generator.layers) == 15
    assert generator.layer(6).name == "layer6"


def test_official_widths_match_the_published_256_models():
    generator = PGGANGenerator(resolution=256)
    widths = [layer.channels for layer in generator.layers[1:]]
    assert widths == [512] * 8 + [256, 256, 128, 128, 64, 64]


def test_layers_are_measured_not_tabulated(tiny_pggan):
    # An output shape the class does not predict: widths given per resolution, checked by forward.
    with capture_outputs({"layer3": tiny_pggan.layer3}) as seen:
        tiny_pggan(torch.randn(1, 8))
    assert tiny_pggan.layer("layer3").shape == tuple(seen["layer3"].shape[1:]) == (12, 8, 8)


@pytest.mark.parametrize("fixture", ["tiny_pggan", "tiny_dcgan"])
def test_tail_of_head_is_the_full_generator_at_every_layer(fixture, request):
    generator = request.getfixturevalue(fixture)
    z = torch.randn(3, generator.z_dim)
    with torch.no_grad():
        full = generator(z)
        assert full.shape == (3, 3, generator.resolution, generator.resolution)
        for layer in generator.layers:
            cut = generator.head(z, layer.index)
            assert tuple(cut.features.shape[1:]) == layer.shape and cut.carry == {}
            torch.testing.assert_close(generator.tail(cut, layer.name), full)


def test_layers_resolve_by_name_index_negative_index_and_numeric_string(tiny_pggan):
    deepest = tiny_pggan.layers[-1]
    assert tiny_pggan.layer(-1) == deepest
    assert tiny_pggan.layer(str(deepest.index)) == deepest
    assert tiny_pggan.layer("-1") == deepest
    assert tiny_pggan.layer(deepest.name) == deepest
    assert tiny_pggan.layer(0).name == "z"


@pytest.mark.parametrize("bad", [7, -8, "layer99", "conv"])
def test_unknown_layer_error_lists_the_valid_layers_with_shapes(tiny_pggan, bad):
    with pytest.raises(InputError) as err:
        tiny_pggan.layer(bad)
    message = str(err.value)
    assert "\n" not in message
    assert "6 layer6 8x16x16" in message and "0 z 8x1x1" in message


def test_sampling_is_seeded_and_in_range(tiny_dcgan):
    a, b = tiny_dcgan.sample(4, seed=3), tiny_dcgan.sample(4, seed=3)
    torch.testing.assert_close(a, b)
    assert not torch.equal(a, tiny_dcgan.sample(4, seed=4))
    assert a.min() >= -1 and a.max() <= 1


def test_measuring_leaves_no_hooks_behind(tiny_pggan, tiny_dcgan):
    for generator in (tiny_pggan, tiny_dcgan):
        generator._layers = None
        assert generator.layers
        assert all(not m._forward_hooks for m in generator.modules())


def test_capture_outputs_removes_hooks_even_when_the_forward_fails(tiny_pggan):
    with pytest.raises(ValueError), capture_outputs({"layer1": tiny_pggan.layer1}):
        tiny_pggan(torch.randn(1, 5))  # wrong latent size
    assert all(not m._forward_hooks for m in tiny_pggan.modules())


def test_resolution_must_be_a_power_of_two():
    with pytest.raises(InputError, match="power of two"):
        PGGANGenerator(resolution=48)
    with pytest.raises(InputError, match="channel widths"):
        PGGANGenerator(resolution=16, channels=[8, 8])


@pytest.mark.parametrize("fixture", ["tiny_pggan", "tiny_dcgan", "stylegan2"])
def test_the_fast_paths_equal_the_plain_ones_at_every_layer(fixture, request):
    """PGGAN's fused upsample-conv, the DCGAN's folded BatchNorm and StyleGAN2's styles on
    activations change no result beyond fp32 rounding, at every cut, forward and backward."""
    generator = make_tiny_stylegan2() if fixture == "stylegan2" else \
        request.getfixturevalue(fixture)
    z = torch.randn(4, generator.z_dim)
    for layer in generator.layers:
        outputs = {}
        for fast in (True, False):
            generator.use_fast_paths(fast)
            codes = z.clone().requires_grad_(True)
            cut = generator.head(codes, layer)
            image = generator.tail(cut, layer)
            image.square().sum().backward()
            outputs[fast] = (cut.features.detach(), image.detach(), codes.grad)
        for fast, plain in zip(outputs[True], outputs[False], strict=True):
            torch.testing.assert_close(fast, plain, rtol=1e-4, atol=1e-5)
    generator.use_fast_paths(True)
