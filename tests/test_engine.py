"""The batched inversion loop: known answers, batching equivalence, failures, no side effects."""

import pytest
import torch

from helpers import Poisoned, ToyGenerator, rendered_targets
from inversion.engine import QUIET, InvertOptions, frozen, initial_codes, invert
from inversion.recipes import get_recipe
from inversion.tasks import Colorization, Inpainting, Inversion
from mganprior.core.errors import InputError


def adam(**overrides):
    return get_recipe("adam", "inversion").with_overrides(**overrides)


@pytest.mark.parametrize("layer", [0, -1])
def test_targets_the_generator_made_are_reconstructed_to_high_psnr(tiny_pggan, layer):
    """Most starts reach the target; on this tiny random PGGAN some stall on a plateau near
    18 dB whatever Adam's settings (12 starts each: 2 at layer 0 and 3-4 at layer -1, with
    torch's betas and with the recipe's), and which ones stall depends on the CPU's rounding."""
    targets = rendered_targets(tiny_pggan, n=4)
    result = invert(tiny_pggan, targets, Inversion(), adam(iterations=300, codes=4, layer=layer),
                    seeds=[1, 2, 3, 4], references=targets, options=QUIET)
    reached = [m["psnr"] > 33 and m["ssim"] > 0.98 for m in result.metrics]
    assert sum(reached) >= 3, result.metrics
    assert result.trace[0].min() > result.trace[-1].max()  # every image's loss went down


def test_toy_generator_recovers_a_colour_by_gradient_descent():
    toy = ToyGenerator().eval()
    target = torch.tensor([0.3, -0.6, -0.6]).view(1, 3, 1, 1).expand(1, 3, 2, 2)
    # torch's second-moment decay, whose steps shrink at an exact optimum: the recipe's 0.95
    # keeps them near the learning rate and ends 3.7e-3 off here
    recipe = adam(iterations=400, codes=2, layer="feat", lr=0.02, adam_beta2=0.999)
    result = invert(toy, target, Inversion(), recipe, seeds=[0], references=target, options=QUIET)
    torch.testing.assert_close(result.reconstructions, target, atol=2e-3, rtol=0)
    assert result.alphas.shape == (1, 2, 2) and result.codes.shape == (1, 2, 2)


# Adam's normalised steps amplify the rounding differences between a batch and one image once
# the gradients are small: after the alpha warm-up that takes a few iterations, not hundreds
@pytest.mark.parametrize(("optimizer", "iterations", "warmup"),
                         [("adam", 25, 0.0), ("sgd", 25, 0.0), ("adam", 8, 3.0)])
def test_batched_inversion_equals_one_image_at_a_time(tiny_pggan, optimizer, iterations, warmup):
    targets = rendered_targets(tiny_pggan, n=3)
    recipe = adam(iterations=iterations, codes=3, layer=4, optimizer=optimizer, lr=0.05,
                  alpha_warmup=warmup)
    batched = invert(tiny_pggan, targets, Inversion(), recipe, seeds=[4, 5, 6], options=QUIET)
    for i, seed in enumerate([4, 5, 6]):
        alone = invert(tiny_pggan, targets[i:i + 1], Inversion(), recipe, seeds=[seed],
                       options=QUIET)
        torch.testing.assert_close(batched.codes[i], alone.codes[0], atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(batched.alphas[i], alone.alphas[0], atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(batched.losses[i], alone.losses[0], atol=1e-5, rtol=1e-4)


def test_single_code_baseline_is_plain_latent_optimisation(tiny_pggan):
    """One code at layer 0 optimises z alone (alpha stays 1): the same codes as a plain Adam
    loop on G(z) after the same steps."""
    targets = rendered_targets(tiny_pggan)
    recipe = adam(iterations=25, codes=1, layer=0, lr=0.05)
    result = invert(tiny_pggan, targets, Inversion(), recipe, seeds=[0, 1], options=QUIET)
    assert result.layer.name == "z" and result.codes.shape == (2, 1, 8)
    assert result.recipe["alphas"] == "fixed" and torch.equal(result.alphas, torch.ones(2, 1, 8))

    z = initial_codes(tiny_pggan, [0, 1], 1, "normal")[:, 0].clone().requires_grad_(True)
    optimizer = torch.optim.Adam([z], lr=0.05, betas=(recipe.adam_beta1, recipe.adam_beta2))
    for _ in range(25):
        loss = (tiny_pggan(z) - targets).pow(2).flatten(1).mean(dim=1).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    torch.testing.assert_close(result.codes[:, 0], z.detach(), rtol=0, atol=1e-6)


def test_adam_betas_are_the_recipes(tiny_pggan):
    """The adam recipe's betas drive the optimiser: torch's defaults give other codes, and
    the same betas given explicitly give the same ones."""
    targets = rendered_targets(tiny_pggan)
    recipe = adam(iterations=6, codes=2, layer=2)
    assert (recipe.adam_beta1, recipe.adam_beta2) == (0.9, 0.95)

    def codes(**overrides):
        return invert(tiny_pggan, targets, Inversion(), recipe.with_overrides(**overrides),
                      seeds=[0, 1], options=QUIET).codes

    torch.testing.assert_close(codes(), codes(adam_beta1=0.9, adam_beta2=0.95), rtol=0, atol=0)
    assert not torch.allclose(codes(), codes(adam_beta2=0.999), atol=1e-4)
    assert not torch.allclose(codes(), codes(adam_beta1=0.5), atol=1e-4)


@pytest.mark.parametrize("value", [-0.1, 1.0, float("nan")])
def test_adam_betas_outside_0_1_are_refused_by_name(value):
    with pytest.raises(InputError, match="adam_beta2"):
        adam(adam_beta2=value)


def test_alphas_are_trained_by_default_and_can_be_fixed(tiny_pggan):
    targets = rendered_targets(tiny_pggan)
    trained = invert(tiny_pggan, targets, Inversion(), adam(iterations=3, codes=1, layer=2),
                     seeds=[0, 1], options=QUIET)
    channels = tiny_pggan.layer(2).channels
    assert trained.recipe["alphas"] == "train"
    assert not torch.equal(trained.alphas, torch.ones(2, 1, channels))
    fixed = invert(tiny_pggan, targets, Inversion(),
                   adam(iterations=3, codes=3, layer=2, alphas="fixed"), seeds=[0, 1],
                   options=QUIET)
    assert torch.equal(fixed.alphas, torch.full((2, 3, channels), 1 / 3))


def test_a_nan_loss_stops_that_image_only(toy):
    target = torch.tensor([0.5, 0.0, 0.0]).view(1, 3, 1, 1).expand(3, 3, 2, 2)
    result = invert(Poisoned().eval(), target, Inversion(),
                    adam(iterations=300, codes=2, layer="feat", lr=0.05), seeds=[0, 1, 2],
                    references=target, options=QUIET)
    assert list(result.failures) == [1]
    assert "loss became nan" in result.failures[1]
    assert result.metrics[1] is None and torch.isnan(result.losses[1])
    assert result.metrics[0]["psnr"] > 40 and result.metrics[2]["psnr"] > 40


def test_generator_weights_modes_and_flags_are_untouched(tiny_dcgan):
    tiny_dcgan.train()
    before = {k: v.clone() for k, v in tiny_dcgan.state_dict().items()}
    targets = torch.zeros(1, 3, 16, 16)
    invert(tiny_dcgan, targets, Inversion(), adam(iterations=3, codes=2, layer=1), seeds=[0],
           options=QUIET)
    assert tiny_dcgan.training
    assert all(p.requires_grad for p in tiny_dcgan.parameters())
    for key, value in tiny_dcgan.state_dict().items():
        assert torch.equal(value, before[key]), key  # eval mode: BatchNorm statistics unchanged


def test_frozen_restores_state_after_an_error(tiny_pggan):
    with pytest.raises(RuntimeError), frozen(tiny_pggan):
        assert not any(p.requires_grad for p in tiny_pggan.parameters())
        raise RuntimeError
    assert all(p.requires_grad for p in tiny_pggan.parameters())


def test_task_views_enter_the_loss(tiny_pggan):
    targets = rendered_targets(tiny_pggan)
    colorization = Colorization()
    ctx = colorization.context(16, [0, 1], "cpu")
    colour = invert(tiny_pggan, colorization.observe(targets, ctx), colorization,
                    adam(iterations=0, codes=2, layer=2), seeds=[0, 1], ctx=ctx, options=QUIET)
    gray_recon = colorization.view(colour.reconstructions, ctx)
    torch.testing.assert_close(colour.losses, ((gray_recon - colour.observations) ** 2)
                               .mean(dim=(1, 2, 3)), atol=1e-3, rtol=1e-2)
    masked = Inpainting(mask="center:0.5")
    ctx = masked.context(16, [0, 1], "cpu")
    observations = masked.observe(targets, ctx)
    result = invert(tiny_pggan, observations, masked, adam(iterations=0, codes=2, layer=2),
                    seeds=[0, 1], ctx=ctx, options=QUIET)
    # the loss only sees known pixels: it equals the MSE of masked images
    masked_mse = ((result.reconstructions * ctx.mask - observations) ** 2).mean(dim=(1, 2, 3))
    torch.testing.assert_close(result.losses, masked_mse, atol=1e-3, rtol=1e-2)


def test_bad_observations_are_rejected(tiny_pggan):
    recipe = adam(iterations=1, codes=1)
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        invert(tiny_pggan, torch.full((1, 3, 16, 16), 3.0), Inversion(), recipe, seeds=[0],
               options=QUIET)
    with pytest.raises(ValueError, match="seeds"):
        invert(tiny_pggan, torch.zeros(2, 3, 16, 16), Inversion(), recipe, seeds=[0], options=QUIET)


def test_bf16_autocast_runs_and_stays_close_to_fp32(tiny_pggan):
    targets = rendered_targets(tiny_pggan)
    recipe = adam(iterations=30, codes=3, layer=4)
    fp32 = invert(tiny_pggan, targets, Inversion(), recipe, seeds=[0, 1],
                  options=QUIET)
    bf16 = invert(tiny_pggan, targets, Inversion(), recipe, seeds=[0, 1],
                  options=InvertOptions(bf16=True, progress=False))
    assert bf16.reconstructions.dtype == torch.float32 and not bf16.failures
    assert (bf16.losses - fp32.losses).abs().max() < 0.05 * fp32.losses.max()


def test_converged_images_stop_where_they_would_have_been(tiny_pggan):
    """With a window, an image whose loss stopped improving leaves the batch; its codes are the
    codes a plain run of exactly that many iterations reaches."""
    targets = rendered_targets(tiny_pggan, n=3)
    # torch's betas: a shorter second-moment memory amplifies the rounding differences between
    # a batch and one image past the tolerance within these 400 iterations
    recipe = adam(iterations=400, codes=2, layer=4, lr=0.05, converge_window=20,
                  converge_tolerance=0.05, alpha_warmup=0.0, adam_beta2=0.999)
    stopping = invert(tiny_pggan, targets, Inversion(), recipe, seeds=[1, 2, 3], options=QUIET)
    assert all(isinstance(s, int) and 0 < s < 400 for s in stopping.stopped)
    for i, stop in enumerate(stopping.stopped):
        plain = invert(tiny_pggan, targets[i:i + 1], Inversion(),
                       recipe.with_overrides(iterations=stop, converge_window=0), seeds=[i + 1],
                       options=QUIET)
        torch.testing.assert_close(stopping.codes[i], plain.codes[0], atol=1e-5, rtol=1e-5)
    without = invert(tiny_pggan, targets, Inversion(), adam(iterations=5, codes=2, layer=4),
                     seeds=[1, 2, 3], options=QUIET)
    assert without.stopped == [None, None, None]


def test_alpha_warmup_moves_the_alphas_alone_then_everything(tiny_pggan):
    """W warm-up steps are Adam on the alphas over fixed codes; the iterations then start the
    codes' Adam afresh while the alphas' Adam goes on: the same as two hand-run optimisers."""
    from inversion.composition import code_cuts, fuse_features
    from inversion.generators.base import Cut

    targets = rendered_targets(tiny_pggan)
    recipe = adam(iterations=6, codes=3, layer=2, lr=0.05, alpha_warmup=1.5)
    result = invert(tiny_pggan, targets, Inversion(), recipe, seeds=[0, 1], options=QUIET)
    assert recipe.warmup_iterations(tiny_pggan.layer(2)) == 9

    layer = tiny_pggan.layer(2)
    codes = initial_codes(tiny_pggan, [0, 1], 3, "normal").requires_grad_(True)
    alphas = torch.full((2, 3, layer.channels), 1 / 3, requires_grad=True)

    def loss() -> torch.Tensor:
        fused = fuse_features(code_cuts(tiny_pggan, codes, layer).features, alphas)
        image = tiny_pggan.tail(Cut(fused), layer)
        return (image - targets).pow(2).flatten(1).mean(dim=1).sum()

    betas = (recipe.adam_beta1, recipe.adam_beta2)
    alpha_adam, code_adam = (torch.optim.Adam([alphas], lr=0.05, betas=betas),
                             torch.optim.Adam([codes], lr=0.05, betas=betas))
    with frozen(tiny_pggan):
        for step in range(15):
            optimizers = [alpha_adam] if step < 9 else [alpha_adam, code_adam]
            for optimizer in optimizers:
                optimizer.zero_grad()
            loss().backward()
            for optimizer in optimizers:
                optimizer.step()
    torch.testing.assert_close(result.alphas, alphas.detach(), rtol=0, atol=1e-5)
    torch.testing.assert_close(result.codes, codes.detach(), rtol=0, atol=1e-5)
    assert result.trace_iterations[0] == -9 and result.trace_iterations[-1] == 5  # warm-up < 0


def test_the_warmup_runs_the_head_once(tiny_pggan, monkeypatch):
    """Warm-up steps cost the tail only: the head runs once for all of them."""
    calls = []
    head = tiny_pggan.head
    monkeypatch.setattr(tiny_pggan, "head", lambda *a, **k: calls.append(1) or head(*a, **k))
    targets = rendered_targets(tiny_pggan)
    for warmup, expected in ((0.0, 4 + 1), (5.0, 4 + 1 + 1)):  # iterations, final pass, warm-up
        calls.clear()
        invert(tiny_pggan, targets, Inversion(), adam(iterations=4, codes=2, layer=2,
                                                      alpha_warmup=warmup),
               seeds=[0, 1], options=QUIET)
        assert len(calls) == expected


def test_no_warmup_where_alphas_are_fixed(tiny_pggan):
    targets = rendered_targets(tiny_pggan)
    plain = adam(iterations=5, codes=2, layer=2, alphas="fixed", alpha_warmup=0.0)
    warmed = plain.with_overrides(alpha_warmup=3.0)
    assert warmed.warmup_iterations(tiny_pggan.layer(2)) == 0
    one = invert(tiny_pggan, targets, Inversion(), plain, seeds=[0, 1], options=QUIET)
    other = invert(tiny_pggan, targets, Inversion(), warmed, seeds=[0, 1], options=QUIET)
    assert torch.equal(one.codes, other.codes) and torch.equal(one.alphas, other.alphas)


def test_a_warmed_convergence_stop_counts_iterations_after_the_warmup(tiny_pggan):
    """With a warm-up, a stopped image's codes are those of a plain run with the same warm-up
    steps and as many iterations as it ran."""
    targets = rendered_targets(tiny_pggan, n=2)
    # stops within 40 iterations: Adam's normalised steps amplify the rounding differences
    # between a batch and one image until the codes drift apart after about 50
    recipe = adam(iterations=400, codes=2, layer=4, lr=0.05, converge_window=10,
                  converge_tolerance=0.2, alpha_warmup=0.1)
    stopping = invert(tiny_pggan, targets, Inversion(), recipe, seeds=[1, 2], options=QUIET)
    assert all(isinstance(s, int) and 0 < s <= 40 for s in stopping.stopped)
    for i, stop in enumerate(stopping.stopped):
        plain = invert(tiny_pggan, targets[i:i + 1], Inversion(),
                       recipe.with_overrides(iterations=stop, converge_window=0,
                                             alpha_warmup=40 / stop), seeds=[i + 1],
                       options=QUIET)
        torch.testing.assert_close(stopping.codes[i], plain.codes[0], atol=1e-5, rtol=1e-5)


def test_the_warmup_runs_at_the_full_rate_under_a_ramp_up(tiny_pggan):
    """A learning-rate ramp-up shapes the iterations; the warm-up's steps still move the
    alphas (at iteration 0 the ramped rate would be zero)."""
    targets = rendered_targets(tiny_pggan)
    recipe = adam(iterations=1, codes=2, layer=2, lr_rampup=0.5, alpha_warmup=4.0)
    result = invert(tiny_pggan, targets, Inversion(), recipe, seeds=[0, 1], options=QUIET)
    assert result.recipe["alpha_warmup"] == 4.0
    assert not torch.allclose(result.alphas, torch.full_like(result.alphas, 0.5))
    fixed = invert(tiny_pggan, targets, Inversion(), adam(iterations=1, codes=1, layer=0),
                   seeds=[0, 1], options=QUIET)
    assert fixed.recipe["alpha_warmup"] == 0.0  # no warm-up ran, none is recorded
