"""What crosses a cut besides the features: fusion rules by hand, extra latents in the engine,
ablation that edits features only, and one-line errors for bad rules."""

from __future__ import annotations

import pytest
import torch

from analysis.attribution import ablated_renders
from helpers import CarryToy
from inversion.composition import code_cuts, fuse, render, resolve_carry
from inversion.engine import QUIET, invert
from inversion.recipes import get_recipe
from inversion.tasks import Inversion
from mganprior.core.errors import InputError

CODES = torch.tensor([[[1.0, 2.0], [3.0, -1.0]]])  # [B=1, N=2, Z=2]
ALPHAS = torch.tensor([[[0.5, 1.0], [0.25, 0.0]]])  # [B=1, N=2, C=2]; mean alphas 0.75, 0.125


@pytest.fixture
def carrying():
    return CarryToy().eval()


@pytest.mark.parametrize(("rule", "shift"), [
    ("alpha", 0.75 * 0.5 + 0.125 * 1.5),  # each code's shift (0.5 z0) times its mean alpha
    ("mean", (0.5 + 1.5) / 2),
    ("drop", 0.0),
])
def test_carry_rules_by_hand(carrying, rule, shift):
    layer = carrying.layer("feat")
    cut = code_cuts(carrying, CODES, layer)
    assert cut.carry["shift"].tolist() == [[[0.5], [1.5]]]
    fused = fuse(cut, ALPHAS, "sum", {"shift": rule})
    assert ("shift" in fused.carry) == (rule != "drop")
    # red = 0.5 * 1 + 0.25 * 3 = 1.25, green = blue = 1 * 2 = 2, plus the shift everywhere
    image = render(carrying, CODES, ALPHAS, layer, "sum", {"shift": rule})
    expected = torch.tensor([1.25, 2.0, 2.0]) + shift
    torch.testing.assert_close(image[0, :, 0, 0], expected)


def test_the_alpha_rule_follows_the_fusion_scale(carrying):
    layer = carrying.layer("feat")
    cut = code_cuts(carrying, CODES, layer)
    summed = fuse(cut, ALPHAS, "sum", {"shift": "alpha"}).carry["shift"]
    meaned = fuse(cut, ALPHAS, "mean", {"shift": "alpha"}).carry["shift"]
    torch.testing.assert_close(meaned, summed / 2)


def test_the_engine_optimises_the_extra_latent_a_rule_asks_for(carrying):
    """The target needs a shift the codes' features cannot give (the toy's red and green are
    z itself): only the extra latent can supply it, and it does."""
    target = torch.tensor([0.3, -0.2, -0.2]).view(1, 3, 1, 1).expand(1, 3, 2, 2) - 0.4
    recipe = get_recipe("adam", "inversion").with_overrides(
        iterations=400, codes=2, layer="feat", lr=0.02, carry="shift=latent")
    result = invert(carrying, target.clamp(-1, 1), Inversion(), recipe, seeds=[0],
                    references=target, options=QUIET)
    assert result.carry == {"shift": "latent"} and result.extras["shift"].shape == (1, 1)
    assert result.metrics[0]["psnr"] > 40
    start = 0.5 * torch.randn(2, 2, generator=torch.Generator().manual_seed(0))[:, 0].mean()
    assert float(result.extras["shift"]) != pytest.approx(float(start), abs=1e-3)


def test_ablation_edits_the_features_only(carrying):
    layer = carrying.layer("feat")
    cut = code_cuts(carrying, CODES * 0.2, layer)  # small codes: renders stay inside [-1, 1]
    zeroed = ALPHAS > 0.2  # code 0 loses both channels, code 1 its first
    rules = {"shift": "alpha"}
    x_inv, ablated = ablated_renders(carrying, cut, ALPHAS, zeroed, layer, "sum", rules=rules)
    shift = 0.2 * (0.75 * 0.5 + 0.125 * 1.5)  # from the un-ablated alphas, in every render
    torch.testing.assert_close(x_inv[0, :, 0, 0], 0.2 * torch.tensor([1.25, 2.0, 2.0]) + shift)
    # code 0 ablated: red keeps 0.25 * 3, green loses 1 * 2
    torch.testing.assert_close(ablated[0, 0, :, 0, 0],
                               0.2 * torch.tensor([0.75, 0.0, 0.0]) + shift)
    # code 1 ablated: red loses 0.25 * 3
    torch.testing.assert_close(ablated[0, 1, :, 0, 0],
                               0.2 * torch.tensor([0.5, 2.0, 2.0]) + shift)


def test_bad_carry_requests_fail_in_one_line(carrying, tiny_pggan):
    with pytest.raises(InputError, match=r"carry shift=sideways is not a rule.*alpha") as err:
        resolve_carry(carrying, carrying.layer("feat"), "shift=sideways")
    assert err.value.field == "carry"
    with pytest.raises(InputError, match="carries nothing"):
        resolve_carry(tiny_pggan, tiny_pggan.layer(2), "img=alpha")
    with pytest.raises(InputError, match="NAME=RULE"):
        get_recipe("adam", "inversion").with_overrides(carry="shift")
    assert resolve_carry(carrying, carrying.layer("feat")) == {"shift": "alpha"}
    assert resolve_carry(carrying, carrying.layer(0)) == {}
