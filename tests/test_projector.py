"""NVIDIA's projector (W and W+ with noise maps), noise optimisation for every StyleGAN2 run, and
LPIPS as a metric: schedules against the documented curves, the regulariser on hand-made maps,
LPIPS against the lpips package, and runs on the shared StyleGAN2 fixture."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from helpers import SHARED, make_tiny_pggan, make_tiny_stylegan2, needs_shared, sample_pngs
from inversion.engine import QUIET
from inversion.losses import LPIPSDistance, load_lpips, noise_regularization, normalize_noise_
from inversion.recipes import get_recipe
from mganprior.core.errors import InputError

FIXTURE = SHARED / "fixtures" / "stylegan2" / "stylegan2-tiny32.pkl"
needs_fixture = needs_shared("stylegan2", "the reference StyleGAN2 checkpoints")


# -- the schedule, as documented (../shared/REFERENCES.md) -------------------------------------
def test_learning_rate_and_latent_noise_follow_the_documented_curves_at_every_step():
    recipe = get_recipe("projector", "inversion")
    assert (recipe.iterations, recipe.lr, recipe.init, recipe.latent_space) == \
        (1000, 0.1, "w_avg", "w")
    w_std = 7.5
    for step in range(recipe.iterations):
        t = step / 1000
        ramp = min(1.0, (1.0 - t) / 0.25)
        ramp = (0.5 - 0.5 * np.cos(ramp * np.pi)) * min(1.0, t / 0.05)
        assert recipe.lr * recipe.lr_factor(step) == pytest.approx(0.1 * ramp, abs=1e-12)
        expected_noise = w_std * 0.05 * max(0.0, 1.0 - t / 0.75) ** 2
        assert recipe.latent_noise_std(step, w_std) == pytest.approx(expected_noise, abs=1e-12)
    assert recipe.lr_factor(0) == 0 and recipe.lr_factor(500) == 1
    assert recipe.latent_noise_std(750, w_std) == 0 and recipe.latent_noise_std(999, w_std) == 0
    plain = get_recipe("adam", "inversion")  # the other recipes keep a constant rate, no noise
    assert {plain.lr_factor(s) for s in range(0, 300, 7)} == {1.0}
    assert plain.latent_noise_std(0, w_std) == 0


# -- the noise regulariser and the re-normalisation ---------------------------------------------
def test_noise_regularization_equals_its_definition_on_hand_made_maps():
    checker = (torch.arange(16)[:, None] + torch.arange(16)[None]) % 2 * 2.0 - 1  # +-1 tiles
    ones = torch.ones(16, 16)
    # a checkerboard: each neighbour product is -1 (mean -1, squared 1) along x and along y;
    # pooled 2x2 it is all zeros at 8 px, which adds nothing: 2
    assert noise_regularization([checker[None]]).tolist() == [2.0]
    # a constant map: 1 + 1 at 16 px and again at 8 px, where the pyramid stops: 4
    assert noise_regularization([ones[None]]).tolist() == [4.0]
    # several maps add up, images stay apart; a 4 px map counts once
    both = noise_regularization([torch.stack([checker, ones]), torch.stack([ones[:4, :4]] * 2)])
    assert both.tolist() == [4.0, 6.0]
    stripes = torch.tensor([1.0, -1.0]).repeat(8)[None].expand(16, 16)  # x alternates, y constant
    assert noise_regularization([stripes[None]]).tolist() == [2.0]  # (-1)^2 + 1^2, then 0 + 0


def test_noise_maps_are_renormalised_in_place_map_by_map():
    flat = torch.cat([torch.randn(2, 16) * 3 + 1, torch.randn(2, 64) * 0.5 - 2], dim=1)
    normalize_noise_(flat, [16, 64])
    for part in flat.split([16, 64], dim=1):
        torch.testing.assert_close(part.mean(dim=1), torch.zeros(2), atol=1e-6, rtol=0)
        torch.testing.assert_close(part.square().mean(dim=1), torch.ones(2), atol=1e-5, rtol=0)


# -- LPIPS through the lpips package -------------------------------------------------------------
@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_lpips_equals_the_packages_own_value_on_the_same_backbone(net):
    import warnings

    import lpips
    import torchvision

    with torch.random.fork_rng():
        torch.manual_seed(3)
        backbone = getattr(torchvision.models, "alexnet" if net == "alex" else "vgg16")()
        images = torch.rand(2, 3, 48, 48) * 2 - 1
        targets = torch.rand(2, 3, 48, 48) * 2 - 1
    ours = LPIPSDistance(backbone.state_dict(), net=net)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = lpips.LPIPS(pretrained=True, net=net, pnet_rand=True, verbose=False).eval()
    for k in range(1, 6):  # the package slices torchvision's features by index
        for index, module in getattr(theirs.net, f"slice{k}").named_children():
            module.load_state_dict(backbone.features[int(index)].state_dict())
    with torch.no_grad():
        expected = theirs(images, targets).flatten()
        got = ours(images, targets)
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)
    assert float(ours(images, images).abs().max()) == 0


def test_lpips_without_its_backbone_is_a_note_naming_the_file(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    status = load_lpips("alex")
    assert status.module is None
    assert "alexnet-owt-7be5be79.pth" in status.note and str(tmp_path / "hub") in status.note
    with pytest.raises(InputError, match=r"lpips_weights .*no such file"):
        load_lpips("alex", tmp_path / "missing.pth")
    with pytest.raises(InputError, match="lpips must be one of alex, vgg, none"):
        load_lpips("squeeze")


# -- where the projector runs and where it does not --------------------------------------------
def test_the_projector_on_a_generator_without_w_is_refused_naming_the_recipes_that_fit():
    from inversion.engine import QUIET, invert
    from inversion.tasks import Inversion

    generator = make_tiny_pggan()
    recipe = get_recipe("projector", "inversion").with_overrides(iterations=2)
    observations = generator.sample(1)
    with pytest.raises(InputError, match="no W space; recipes that fit: official, adam"):
        invert(generator, observations, Inversion(), recipe, seeds=[0], options=QUIET)
    with pytest.raises(InputError, match="optimize_noise: a pggan generator has no"):
        invert(generator, observations, Inversion(),
               get_recipe("adam", "inversion").with_overrides(optimize_noise=True),
               seeds=[0], options=QUIET)


def test_w_statistics_are_nvidias_estimate_and_cached_beside_the_run(tmp_path):
    from inversion.projector import estimate_latent_stats
    from inversion.rundir import RunDirectory

    generator = make_tiny_stylegan2()
    stats = estimate_latent_stats(generator)
    z = torch.from_numpy(np.random.RandomState(123).randn(10000, 8).astype(np.float32))
    with torch.no_grad():
        w = generator.mapping(z)
    torch.testing.assert_close(stats.w_avg, w.mean(0))
    assert stats.w_std == pytest.approx(float(((w - w.mean(0)) ** 2).sum().div(10000).sqrt()),
                                        rel=1e-5)
    run = RunDirectory.open(tmp_path / "run", {"x": 1})
    assert not (run.path / "w_stats.safetensors").exists()
    cached = run.latent_stats(generator)
    torch.testing.assert_close(cached.w_avg, stats.w_avg)
    assert (run.path / "w_stats.safetensors").is_file()
    assert run.latent_stats(generator).w_std == pytest.approx(stats.w_std, rel=1e-6)
    (run.path / "w_stats.safetensors").write_bytes(b"damaged")  # estimated again, not trusted
    assert run.latent_stats(generator).w_std == pytest.approx(stats.w_std, rel=1e-6)


def test_multi_code_runs_can_optimise_noise_maps_and_the_record_says_so(tmp_path):
    from inversion.composition import render
    from inversion.engine import invert
    from inversion.tasks import Inversion

    generator = make_tiny_stylegan2()
    target = generator.sample(2, seed=9)
    recipe = get_recipe("adam", "inversion").with_overrides(
        iterations=6, codes=3, layer="b8", optimize_noise=True)
    result = invert(generator, target, Inversion(), recipe, seeds=[1, 2], options=QUIET)
    assert result.carry["noise"] == "latent" and result.recipe["optimize_noise"] is True
    layer = generator.layer("b8")
    noise = result.extras["noise"]
    assert noise.shape == (2, 2 * 16 * 16)  # b16.conv0 and b16.conv1, after the cut
    for part in noise.split(256, dim=1):  # re-normalised after every step
        torch.testing.assert_close(part.mean(1), torch.zeros(2), atol=1e-5, rtol=0)
    with torch.no_grad():
        again = render(generator, result.codes, result.alphas, layer, "sum", result.carry,
                       result.extras).clamp(-1, 1)
        stored = render(generator, result.codes, result.alphas, layer, "sum",
                        {**result.carry, "noise": "drop"}, result.extras).clamp(-1, 1)
    torch.testing.assert_close(again, result.reconstructions, atol=1e-5, rtol=0)
    assert (stored - result.reconstructions).abs().max() > 1e-3  # the maps matter
    plain = invert(generator, target, Inversion(), recipe.with_overrides(optimize_noise=False),
                   seeds=[1, 2], options=QUIET)
    assert plain.carry["noise"] == "drop" and "noise" not in plain.extras


# -- on the shared StyleGAN2 fixture (NVIDIA's own pickle) --------------------------------------
@needs_fixture
def test_a_projector_run_reduces_its_loss_and_its_noise_maps_reproduce_the_image(tmp_path):
    from inversion.composition import render
    from inversion.rundir import RunDirectory
    from mganprior.cli import main
    from mganprior.zoo import load_generator

    generator = load_generator(checkpoint=FIXTURE, device="cpu").generator
    images = sample_pngs(generator, tmp_path / "images", count=2, seed=11)
    out = tmp_path / "run"
    assert main(["invert", "--checkpoint", str(FIXTURE), "--images", str(images), "--out",
                 str(out), "--recipe", "projector", "--latent-space", "w+", "--iterations",
                 "60", "--perceptual", "none", "--quiet"]) == 0
    run = RunDirectory(out)
    config = run.config()
    assert config["recipe"]["name"] == "projector" and config["recipe"]["optimize_noise"]
    assert config["loss"] == "1 * pixel MSE"  # no VGG16 weights: the pixel fallback, recorded
    assert config["carry"] == {"noise": "latent"}
    assert (out / "w_stats.safetensors").is_file()
    for record in run.records():
        assert "lpips" in record and record["lpips"] is None  # no AlexNet weights here
    assert run.summary()["lpips_mean"] is None
    result = run.load_result()
    assert result.trace[-1].mean() < 0.5 * result.trace[0].mean()  # the loss came down
    assert result.extras["noise"].shape == (2, sum(s * s for _, s in generator.noise_layers(
        generator.layer(0))))
    w_plus = generator.in_space("w+")
    with torch.no_grad():
        again = render(w_plus, result.codes, result.alphas, w_plus.layer(0), "sum",
                       result.carry, result.extras).clamp(-1, 1)
    for i, name in enumerate(result.names):
        saved = run.read_image(name, "reconstruction")
        assert (again[i] - saved).abs().max() <= 1 / 127.5 + 1e-6  # 8-bit rounding only


@needs_fixture
def test_multi_code_against_the_projector_at_equal_iterations_on_the_fixture():
    """The docs/studies.md comparison at tiny settings: every method runs and lowers its loss,
    and the table is printed; which one wins is measured, not asserted."""
    from inversion.engine import invert
    from inversion.tasks import Inversion
    from mganprior.zoo import load_generator

    generator = load_generator(checkpoint=FIXTURE, device="cpu").generator
    target = generator.sample(2, seed=21)
    methods = {
        "projector W": get_recipe("projector", "inversion"),
        "projector W+": get_recipe("projector", "inversion").with_overrides(latent_space="w+"),
        "multi-code": get_recipe("adam", "inversion").with_overrides(codes=4, layer="b8"),
        "multi-code + noise": get_recipe("adam", "inversion").with_overrides(
            codes=4, layer="b8", optimize_noise=True),
    }
    rows = {}
    for name, recipe in methods.items():
        result = invert(generator, target, Inversion(), recipe.with_overrides(iterations=40),
                        seeds=[3, 4], references=target, options=QUIET)
        psnr = float(np.mean([m["psnr"] for m in result.metrics]))
        rows[name] = (psnr, result.seconds)
        assert result.trace[-1].mean() < result.trace[0].mean(), name
        assert all(math.isfinite(m["psnr"]) for m in result.metrics)
    print("\n".join(f"{k}: {p:.2f} dB, {s:.2f} s" for k, (p, s) in rows.items()))


def test_the_projector_on_a_generator_without_noise_maps_runs_and_says_so(tmp_path):
    from helpers import make_tiny_stylegan1
    from inversion.images import load_images
    from inversion.runs import RunSettings, run_inversion
    from inversion.tasks import Inversion

    generator = make_tiny_stylegan1()
    images = load_images([sample_pngs(generator, tmp_path / "images", count=1)],
                         generator.resolution)
    recipe = get_recipe("projector", "inversion").with_overrides(iterations=3)
    said = []
    run, summary = run_inversion(RunSettings(generator, {"name": "tiny"}, Inversion(), recipe,
                                             progress=False), images, tmp_path / "run",
                                 log=said.append)
    assert summary["ok"] == 1 and run.config()["recipe"]["optimize_noise"] is False
    assert any("stylegan1 generator has no optimisable noise maps" in line for line in said)


def test_what_the_projector_settings_cannot_do_is_one_line(tmp_path, capsys):
    from helpers import make_tiny_pggan as tiny_pggan
    from helpers import sample_pngs as pngs
    from inversion.generators.saving import save_generator
    from mganprior.cli import main

    stylegan2 = save_generator(make_tiny_stylegan2(), tmp_path / "sg2.safetensors")
    pggan = save_generator(tiny_pggan(), tmp_path / "pggan.safetensors")
    images = pngs(make_tiny_stylegan2(), tmp_path / "images", count=1)

    def refused(checkpoint, *flags):
        code = main(["invert", "--checkpoint", str(checkpoint), "--images", str(images),
                     "--out", str(tmp_path / "never"), "--iterations", "2", "--quiet", *flags])
        error = capsys.readouterr().err.strip().splitlines()[-1]
        assert code == 2 and not (tmp_path / "never").exists(), error
        return error

    # no convolution after the deepest cut: no noise maps to optimise
    assert "--optimize-noise: a stylegan2 generator has no optimisable noise maps" in refused(
        stylegan2, "--optimize-noise", "--layer", "-1")
    # latent noise is in units of W's spread
    assert refused(pggan, "--latent-noise", "0.1").startswith("mganprior: error: --latent-noise")
    assert "--latent-noise" in refused(stylegan2, "--latent-noise", "0.1", "--latent-space", "z")
    # a w_avg start with several codes would keep them identical
    assert "--init w_avg starts every code at the same point" in refused(
        stylegan2, "--init", "w_avg", "--latent-space", "w", "--codes", "3")


def test_noise_maps_asked_for_through_the_carry_are_recorded_as_optimised():
    from inversion.engine import invert
    from inversion.tasks import Inversion

    generator = make_tiny_stylegan2()
    recipe = get_recipe("adam", "inversion").with_overrides(iterations=2, codes=2, layer="b8",
                                                           carry="noise=latent")
    result = invert(generator, generator.sample(1), Inversion(), recipe, seeds=[0],
                    options=QUIET)
    assert result.carry["noise"] == "latent" and result.recipe["optimize_noise"] is True


def test_field_names_in_errors_become_flags_but_quotes_and_paths_stay():
    from mganprior.cli import build_parser, in_flags

    flags = build_parser("invert").parse_args(["invert", "--generator", "g", "--images", "i",
                                               "--out", "o"]).flag_of
    assert in_flags('recipe {"mse_weight": 1.0} vs lr_rampup', flags) == \
        'recipe {"mse_weight": 1.0} vs --lr-rampup'
    assert in_flags("vgg_weights /x/vgg_weights/v.pth: no such file", flags) == \
        "--vgg-weights /x/vgg_weights/v.pth: no such file"
    assert in_flags("give generator NAME or checkpoint PATH (generator)", flags) == \
        "give --generator NAME or --checkpoint PATH (--generator)"
    assert in_flags("the generator makes images", flags) == "the generator makes images"
