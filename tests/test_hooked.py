"""Any nn.Module as a layered generator through hooks that always come off."""

import pytest
import torch
from torch import nn

from inversion.generators import Cut, HookedGenerator
from mganprior.core.errors import InputError


class Custom(nn.Module):
    """Not a Sequential: a linear stem, a transposed-conv body, a ToRGB."""

    def __init__(self, skip: bool = False):
        super().__init__()
        self.skip = skip
        self.stem = nn.Linear(4, 8 * 2 * 2)
        self.body = nn.Sequential(nn.ConvTranspose2d(8, 6, 4, 2, 1), nn.LeakyReLU(0.2),
                                  nn.ConvTranspose2d(6, 4, 4, 2, 1), nn.LeakyReLU(0.2))
        self.to_rgb = nn.Conv2d(4, 3, 1)

    def forward(self, z):
        x = self.body(self.stem(z).view(-1, 8, 2, 2))
        out = self.to_rgb(x)
        if self.skip:
            out = out + z[:, :1, None, None]
        return torch.tanh(out)


def hooks_left(module):
    return sum(len(m._forward_hooks) for m in module.modules())


def test_head_and_tail_compose_to_the_module_and_leave_no_hooks():
    module = Custom().eval()
    generator = HookedGenerator(module, z_dim=4, resolution=8, layers=["body.1", "body"])
    assert [layer.describe() for layer in generator.layers] == [
        "0 z 4x1x1", "1 body.1 6x4x4", "2 body 4x8x8"]
    z = torch.randn(3, 4)
    with torch.no_grad():
        for layer in generator.layers:
            cut = generator.head(z, layer)
            assert tuple(cut.features.shape[1:]) == layer.shape
            torch.testing.assert_close(generator.tail(cut, layer), module(z))
    assert hooks_left(module) == 0


def test_hooks_come_off_when_the_wrapped_forward_raises():
    generator = HookedGenerator(Custom().eval(), z_dim=4, resolution=8, layers=["body"])
    with pytest.raises(RuntimeError):
        generator.tail(Cut(torch.randn(2, 5, 8, 8)), "body")  # wrong channel count for to_rgb
    assert hooks_left(generator.module) == 0


def test_a_layer_bypassed_by_a_skip_connection_is_refused():
    with pytest.raises(InputError, match="bypasses it"):
        HookedGenerator(Custom(skip=True).eval(), z_dim=4, resolution=8, layers=["body"])


def test_unknown_or_flat_layers_are_refused():
    with pytest.raises(InputError, match="no submodule named nope"):
        HookedGenerator(Custom(), z_dim=4, resolution=8, layers=["nope"])
    with pytest.raises(InputError, match="must output feature maps"):
        HookedGenerator(Custom(), z_dim=4, resolution=8, layers=["stem"])
