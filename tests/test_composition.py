"""Multi-code composition, with answers computed by hand on a linear toy generator."""

import pytest
import torch

from inversion.composition import code_cuts, fuse, fuse_features, initial_alphas, render

CODES = torch.tensor([[[1.0, 2.0], [3.0, -1.0]]])  # [B=1, N=2, Z=2]
ALPHAS = torch.tensor([[[0.5, 1.0], [0.25, 0.0]]])  # [B=1, N=2, C=2]


def test_fused_feature_is_the_alpha_weighted_sum_by_hand(toy):
    layer = toy.layer("feat")
    cut = code_cuts(toy, CODES, layer)
    assert cut.features.shape == (1, 2, 2, 2, 2) and cut.carry == {}
    fused = fuse(cut, ALPHAS, "sum")
    # channel 0: 0.5 * 1 + 0.25 * 3 = 1.25; channel 1: 1 * 2 + 0 * (-1) = 2 (everywhere)
    torch.testing.assert_close(fused.features[0, :, 0, 0], torch.tensor([1.25, 2.0]))
    torch.testing.assert_close(fuse_features(cut.features, ALPHAS, "mean"), fused.features / 2)


def test_render_paints_red_from_channel_0_and_green_blue_from_channel_1(toy):
    image = render(toy, CODES, ALPHAS, toy.layer("feat"), "sum")
    expected = torch.tensor([1.25, 2.0, 2.0]).view(1, 3, 1, 1).expand(1, 3, 2, 2)
    torch.testing.assert_close(image, expected)


def test_batched_head_equals_one_code_at_a_time(tiny_pggan):
    codes = torch.randn(3, 4, 8)
    layer = tiny_pggan.layer(4)
    batched = code_cuts(tiny_pggan, codes, layer).features
    looped = torch.stack([torch.stack([tiny_pggan.head(codes[b, n:n + 1], layer).features[0]
                                       for n in range(4)]) for b in range(3)])
    torch.testing.assert_close(batched, looped)


@pytest.mark.parametrize("index", [0, 2, 4, 6])
def test_official_mean_fusion_is_invisible_under_pggan_pixel_norm(tiny_pggan, index):
    codes, layer = torch.randn(2, 5, 8), tiny_pggan.layer(index)
    alphas = torch.rand(2, 5, layer.channels)
    with torch.no_grad():
        torch.testing.assert_close(render(tiny_pggan, codes, alphas, layer, "mean"),
                                   render(tiny_pggan, codes, alphas, layer, "sum"),
                                   rtol=1e-4, atol=1e-4)


def test_mean_fusion_changes_dcgan_images(tiny_dcgan):
    codes, layer = torch.randn(2, 5, 8), tiny_dcgan.layer(1)
    alphas = initial_alphas(2, 5, layer.channels)
    with torch.no_grad():
        assert not torch.allclose(render(tiny_dcgan, codes, alphas, layer, "mean"),
                                  render(tiny_dcgan, codes, alphas, layer, "sum"), atol=1e-3)


def test_one_code_with_unit_alpha_at_layer_z_is_the_plain_generator(tiny_dcgan):
    z = torch.randn(3, 1, 8)
    with torch.no_grad():
        torch.testing.assert_close(render(tiny_dcgan, z, initial_alphas(3, 1, 8),
                                          tiny_dcgan.layer(0)), tiny_dcgan(z[:, 0]))


def test_mismatched_alphas_are_rejected(toy):
    cut = code_cuts(toy, CODES, toy.layer("feat"))
    with pytest.raises(ValueError, match="do not match"):
        fuse(cut, torch.ones(1, 3, 2))
