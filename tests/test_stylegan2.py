"""StyleGAN2: the reference outputs of the original projects' code, safe loading of both formats,
the contract, latent spaces and carried state, and one-line refusals."""

from __future__ import annotations

import pickle

import pytest
import torch

from helpers import (
    SHARED,
    GeneratorContract,
    make_tiny_pggan,
    make_tiny_stylegan2,
    needs_shared,
    nvidia_pickle,
    sample_pngs,
)
from inversion.composition import code_cuts, fuse, render
from inversion.generators.formats import load_generator_file, sniff_format
from inversion.generators.saving import save_generator
from inversion.generators.stylegan2 import up_convolution
from mganprior.core.errors import InputError

FIXTURES = SHARED / "fixtures" / "stylegan2"
needs_fixtures = needs_shared("stylegan2", "the reference StyleGAN2 checkpoints")
TOLERANCE = {"rtol": 0, "atol": 1e-4}


class TestStyleGAN2Contract(GeneratorContract):
    extra_carry = "styles=latent"

    def make(self):
        return make_tiny_stylegan2()


# -- the original projects' outputs ---------------------------------------------------------------
@needs_fixtures
def test_nvidia_pickle_reproduces_every_reference_output():
    from mganprior.zoo import load_generator

    path = FIXTURES / "stylegan2-tiny32.pkl"
    expected = torch.load(FIXTURES / "stylegan2-tiny32-expected.pt", weights_only=True)
    generator = load_generator(checkpoint=path, device="cpu").generator
    assert sniff_format(path)[0].name == "stylegan-nvidia"
    assert generator.num_ws == 8 and generator.conv_clamp == 256
    with torch.no_grad():
        torch.testing.assert_close(generator.ws(expected["z"]), expected["ws"], **TOLERANCE)
        torch.testing.assert_close(generator(expected["z"]), expected["image"], **TOLERANCE)
        for block, (x, img) in generator.block_outputs(expected["ws"]).items():
            torch.testing.assert_close(x, expected[f"{block}_x"], **TOLERANCE)
            torch.testing.assert_close(img, expected[f"{block}_img"], **TOLERANCE)
            cut = generator.head(expected["z"], block)  # our cut at b{r}: the block's features
            torch.testing.assert_close(cut.features, expected[f"{block}_x"], **TOLERANCE)
        truncated = load_generator(checkpoint=path, device="cpu", truncation_psi=0.7).generator
        torch.testing.assert_close(truncated.ws(expected["z"]), expected["ws_psi07"], **TOLERANCE)
        torch.testing.assert_close(truncated(expected["z"]), expected["image_psi07"], **TOLERANCE)


@needs_fixtures
def test_rosinality_checkpoint_reproduces_the_reference_outputs():
    path = FIXTURES / "rosinality-tiny32.pt"
    expected = torch.load(FIXTURES / "rosinality-tiny32-expected.pt", weights_only=True)
    generator = load_generator_file(path)
    assert sniff_format(path)[0].name == "stylegan2-rosinality"
    assert generator.channels == [48, 48, 48, 48] and generator.conv_clamp is None
    with torch.no_grad():
        torch.testing.assert_close(generator.mapping(expected["z"]), expected["w"], **TOLERANCE)
        torch.testing.assert_close(generator.ws(expected["z"]), expected["latents"], **TOLERANCE)
        torch.testing.assert_close(generator(expected["z"]), expected["image"], **TOLERANCE)
        generator.mapping.w_avg.copy_(expected["mean_latent"][0])
        torch.testing.assert_close(generator.with_truncation(0.7)(expected["z"]),
                                   expected["image_trunc07"], **TOLERANCE)


@needs_fixtures
@pytest.mark.parametrize("name", ["stylegan2-tiny32.pkl", "rosinality-tiny32.pt"])
def test_convert_writes_a_file_that_carries_no_code(tmp_path, capsys, name):
    from mganprior.cli import main

    out = tmp_path / "g.safetensors"
    assert main(["convert", str(FIXTURES / name), "--out", str(out)]) == 0
    assert "composable layers" in capsys.readouterr().out
    z = torch.randn(2, 32)
    with torch.no_grad():
        torch.testing.assert_close(load_generator_file(out)(z),
                                   load_generator_file(FIXTURES / name)(z), rtol=0, atol=0)


@needs_fixtures
def test_a_rosinality_file_with_a_missing_key_names_it(tmp_path):
    state = torch.load(FIXTURES / "rosinality-tiny32.pt", weights_only=True)
    del state["g_ema"]["convs.1.noise.weight"]
    state["g_ema"]["convs.9.extra"] = torch.zeros(1)
    torch.save(state, tmp_path / "broken.pt")
    with pytest.raises(InputError, match=r"missing keys: convs\.1\.noise\.weight; unexpected "
                                         r"keys: convs\.9\.extra"):
        load_generator_file(tmp_path / "broken.pt")


# -- reading pickles without running them ---------------------------------------------------------
def test_our_generator_written_as_nvidia_pickles_it_loads_back(tmp_path):
    generator = make_tiny_stylegan2()
    loaded = load_generator_file(nvidia_pickle(generator, tmp_path / "g.pkl"))
    assert loaded.config() == generator.config()
    z = torch.randn(3, 8)
    with torch.no_grad():
        torch.testing.assert_close(loaded(z), generator(z), rtol=0, atol=0)


def test_the_embedded_source_is_never_run(tmp_path):
    marker = tmp_path / "pwned"
    source = f"open({str(marker)!r}, 'w').write('ran')"
    path = nvidia_pickle(make_tiny_stylegan2(), tmp_path / "evil.pkl", module_src=source)
    loaded = load_generator_file(path)  # loads: the code is dropped, never executed
    assert loaded.family == "stylegan2" and not marker.exists()


class WritesAFile:
    """A pickle whose reduce hook writes a file when unpickled."""

    def __init__(self, target):
        self.target = str(target)

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_a_pickle_whose_hook_would_write_a_file_is_refused_before_it_runs(tmp_path):
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"G_ema": WritesAFile(marker), "note": "torch_utils.persistence"})
    path = tmp_path / "evil.pkl"
    path.write_bytes(payload)
    with pytest.raises(InputError, match=r"evil\.pkl was refused: it refers to io\.open"):
        load_generator_file(path)
    assert not marker.exists()


@pytest.mark.parametrize(("top", "class_name", "message"), [
    # conditional, but without the label embedding a conditional mapping has
    ({"c_dim": 10}, "Generator", "missing keys: mapping.embed.bias, mapping.embed.weight"),
    ({}, "Discriminator", "G_ema is a Discriminator, not a Generator"),
])
def test_unsupported_networks_get_one_line(tmp_path, top, class_name, message):
    path = nvidia_pickle(make_tiny_stylegan2(), tmp_path / "g.pkl", top=top,
                         class_name=class_name)
    with pytest.raises(InputError, match=message):
        load_generator_file(path)


def test_damaged_pickles_get_one_line(tmp_path):
    path = nvidia_pickle(make_tiny_stylegan2(), tmp_path / "g.pkl")
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(InputError, match=r"g\.pkl is damaged or not a pickle"):
        load_generator_file(path)


# -- latent spaces and carried state --------------------------------------------------------------
def test_codes_in_w_and_w_plus_render_the_same_images_as_z():
    generator = make_tiny_stylegan2()
    z = torch.randn(3, 8)
    with torch.no_grad():
        w = generator.mapping(z)
        in_w, in_w_plus = generator.in_space("w"), generator.in_space("w+")
        assert (in_w.z_dim, in_w_plus.z_dim, generator.z_dim) == (8, 8 * 6, 8)
        torch.testing.assert_close(in_w(w), generator(z), rtol=0, atol=0)
        torch.testing.assert_close(in_w_plus(w.repeat(1, 6)), generator(z), rtol=0, atol=0)
        assert in_w.layers[0].shape == (8, 1, 1) and in_w_plus.layers[0].shape == (48, 1, 1)
    with pytest.raises(InputError, match="latent_space 'q' is not one of z, w, w\\+"):
        generator.in_space("q")


def test_the_adam_learning_rate_follows_the_space_and_the_code_count():
    from inversion import get_recipe

    adam = get_recipe("adam", "inversion")
    stylegan2, pggan = make_tiny_stylegan2(), make_tiny_pggan()
    chosen = {(space, codes): adam.with_overrides(latent_space=space, codes=codes)
              .resolve_lr(stylegan2) for space in ("z", "w", "w+") for codes in (1, 20)}
    assert chosen == {("z", 1): 0.1, ("w", 1): 0.1, ("w+", 1): 0.1,
                      ("z", 20): 0.03, ("w", 20): 0.03, ("w+", 20): 0.1}
    assert adam.with_overrides(codes=1).resolve_lr(pggan) == adam.resolve_lr(pggan) == 0.01
    assert adam.with_overrides(lr=0.5, codes=1).resolve_lr(stylegan2) == 0.5


def test_layers_are_block_features_and_up_convolutions():
    generator = make_tiny_stylegan2()
    names = [layer.describe() for layer in generator.layers]
    assert names == ["0 z 8x1x1", "1 b4 8x4x4", "2 b8.conv0 8x8x8", "3 b8 8x8x8",
                     "4 b16.conv0 4x16x16", "5 b16 4x16x16"]
    assert [s.name for s in generator.carry_specs(generator.layer("b4"))] == ["styles", "noise"]
    assert [s.name for s in generator.carry_specs(generator.layer("b16.conv0"))] == \
        ["img", "styles", "noise"]
    # after the deepest cut no convolution is left, so no noise map either
    assert [s.name for s in generator.carry_specs(generator.layer("b16"))] == ["img", "styles"]
    assert [s.name for s in generator.carry_specs(generator.layer(0))] == ["noise"]
    # the noise carry holds the maps of the convolutions after the cut, in synthesis order
    assert generator.noise_layers(generator.layer("b8")) == [("b16.conv0", 16), ("b16.conv1", 16)]
    assert [side for _, side in generator.noise_layers(generator.layer(0))] == [4, 8, 8, 16, 16]
    cut = generator.head(torch.randn(2, 8), "b8.conv0")
    assert cut.carry["img"].shape == (2, 3, 4, 4) and cut.carry["styles"].shape == (2, 4, 8)


def test_the_cpu_up_convolution_is_the_transposed_one_in_value_and_gradients():
    """The matmul-and-strided-adds up-convolution equals ``conv_transpose2d`` at stride 2; its
    gradients (input and weight) match finite differences, twice (path-length regularisation
    differentiates them again). Odd shapes and channel counts catch a transposed axis."""
    rng = torch.Generator().manual_seed(0)
    x = torch.randn(3, 5, 4, 6, dtype=torch.float64, generator=rng, requires_grad=True)
    weight = torch.randn(7, 5, 3, 3, dtype=torch.float64, generator=rng, requires_grad=True)
    ours = up_convolution(x, weight)
    assert type(ours.grad_fn).__name__ == "_UpConvolutionBackward"  # not the native path
    torch.testing.assert_close(ours, torch.nn.functional.conv_transpose2d(
        x, weight.transpose(0, 1), stride=2), rtol=0, atol=1e-12)
    assert torch.autograd.gradcheck(up_convolution, (x, weight))
    assert torch.autograd.gradgradcheck(up_convolution, (x, weight))


def test_a_stylegan2_runs_forward_and_backward_under_bf16_autocast():
    """``--bf16`` autocasts the generator: the up-convolution then takes the native path."""
    generator = make_tiny_stylegan2()
    codes = torch.randn(2, generator.z_dim, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        image = generator(codes)
    image.float().square().mean().backward()
    assert torch.isfinite(codes.grad).all()
    assert codes.grad.abs().sum() > 0


def test_carry_rules_change_what_they_should():
    generator = make_tiny_stylegan2()
    layer = generator.layer("b16")
    codes, alphas = torch.randn(2, 3, 8), torch.full((2, 3, 4), 1 / 3)
    with torch.no_grad():
        cut = code_cuts(generator, codes, layer)
        by_alpha = fuse(cut, alphas, "sum", {"img": "alpha", "styles": "mean"})
        by_mean = fuse(cut, alphas, "sum", {"img": "mean", "styles": "mean"})
        torch.testing.assert_close(by_alpha.carry["img"], by_mean.carry["img"])  # alphas 1/N
        kept = render(generator, codes, alphas, layer, "sum", {"img": "alpha", "styles": "mean"})
        dropped = render(generator, codes, alphas, layer, "sum", {"img": "drop", "styles": "mean"})
        rgb_only = generator.synthesis.b16.torgb(by_mean.features, by_mean.carry["styles"][:, 0])
    torch.testing.assert_close(dropped, rgb_only)  # the RGB restarts at the cut
    assert not torch.allclose(kept, dropped)


def test_saved_stylegan2_keeps_its_truncation(tmp_path):
    generator = make_tiny_stylegan2().with_truncation(0.5)
    loaded = load_generator_file(save_generator(generator, tmp_path / "g.safetensors"))
    assert loaded.truncation_psi == 0.5
    z = torch.randn(2, 8)
    with torch.no_grad():
        torch.testing.assert_close(loaded(z), generator(z), rtol=0, atol=0)
    with pytest.raises(InputError, match=r"truncation_psi must be in \[0, 1\]"):
        generator.with_truncation(1.5)


# -- everything downstream, end to end on a small one ---------------------------------------------
@pytest.fixture
def stylegan2_pickle(tmp_path):
    return nvidia_pickle(make_tiny_stylegan2(), tmp_path / "tiny-stylegan2.pkl")


@pytest.fixture
def stylegan2_pngs(tmp_path):
    return sample_pngs(make_tiny_stylegan2(), tmp_path / "images")


def test_zoo_lists_the_layers_and_what_crosses_each_cut(capsys, stylegan2_pickle):
    from mganprior.cli import main

    assert main(["zoo", "--checkpoint", str(stylegan2_pickle)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("stylegan2, 16 px, latent spaces z, w, w+") and \
        "truncation psi 1 on every layer" in lines[0]
    assert lines[1].startswith("0 z 8x1x1; carries noise (drop/latent")
    assert lines[4].startswith("3 b8 8x8x8; carries img (alpha/mean/drop, default alpha")
    assert "styles (latent/mean/alpha, default latent" in lines[4]


@pytest.mark.parametrize("task", ["inversion", "colorization", "super-resolution", "inpainting",
                                  "denoising"])
def test_every_task_inverts_a_stylegan2_pickle(tmp_path, stylegan2_pickle, stylegan2_pngs,
                                                task):
    from inversion.rundir import RunDirectory
    from mganprior.cli import main

    out = tmp_path / task
    args = ["invert", "--checkpoint", str(stylegan2_pickle), "--images", str(stylegan2_pngs),
            "--out", str(out), "--task", task, "--iterations", "3", "--codes", "3", "--quiet"]
    assert main(args) == 0
    result = RunDirectory(out).load_result()
    assert result.carry["styles"] == "latent" and result.extras["styles"].shape[0] == 2


def test_attribute_layers_and_report_on_a_stylegan2(tmp_path, capsys, stylegan2_pickle,
                                                    stylegan2_pngs):

    from helpers import half_label_maps
    from mganprior.cli import main

    run = tmp_path / "run"
    assert main(["invert", "--checkpoint", str(stylegan2_pickle), "--images",
                 str(stylegan2_pngs), "--out", str(run), "--layer", "b8", "--iterations", "5",
                 "--codes", "4", "--latent-space", "w", "--quiet"]) == 0
    labels = half_label_maps(tmp_path / "labels")
    assert main(["attribute", str(run), "--labels", str(labels), "--quiet"]) == 0
    assert "codes of 2 images assigned" in capsys.readouterr().out
    study = tmp_path / "study"
    assert main(["layers", "--checkpoint", str(stylegan2_pickle), "--images",
                 str(stylegan2_pngs), "--tasks", "inversion", "--layers", "b4,b16",
                 "--iterations", "2", "--codes", "2", "--out", str(study), "--quiet"]) == 0
    assert main(["report", str(run), str(study), "--out", str(tmp_path / "r.html")]) == 0
    html = (tmp_path / "r.html").read_text()
    assert "stylegan2" in html and "Attribution" in html


# -- the other synthesis architectures and conditional generators ------------------------------
class TestStyleGAN2OrigContract(GeneratorContract):
    extra_carry = "styles=latent"

    def make(self):
        return make_tiny_stylegan2(architecture="orig")


class TestStyleGAN2ResnetContract(GeneratorContract):
    extra_carry = "styles=latent"

    def make(self):
        return make_tiny_stylegan2(architecture="resnet")


class TestConditionalStyleGAN2Contract(GeneratorContract):
    extra_carry = "styles=latent"

    def make(self):
        return make_tiny_stylegan2(c_dim=3)


def test_each_architecture_carries_what_crosses_its_cuts():
    def carried(generator, layer):
        return [spec.name for spec in generator.carry_specs(generator.layer(layer))]

    skip, orig, resnet = (make_tiny_stylegan2(architecture=a) for a in ("skip", "orig", "resnet"))
    assert carried(skip, "b8.conv0") == ["img", "styles", "noise"]
    assert carried(orig, "b8.conv0") == ["styles", "noise"]  # nothing painted before the end
    assert carried(resnet, "b8.conv0") == ["res", "styles", "noise"]  # the pending shortcut
    assert carried(resnet, "b8") == ["styles", "noise"]
    with torch.no_grad():
        cut = resnet.head(torch.randn(2, 8), "b16.conv0")
    assert cut.carry["res"].shape == cut.features.shape


def test_labels_are_refused_where_they_do_not_apply():
    conditional = make_tiny_stylegan2(c_dim=3)
    conditional.label = None  # as a conditional file loads
    unconditional = make_tiny_stylegan2()
    with pytest.raises(InputError, match=r"label: this generator is conditional \(3 classes\)"):
        conditional.sample(1)
    with pytest.raises(InputError, match="label: this generator is conditional"):
        conditional(torch.randn(1, 8))
    with pytest.raises(InputError, match=r"label must be a class in 0\.\.2, got 3"):
        conditional.with_label(3)
    with pytest.raises(InputError, match="label 1: this generator is unconditional"):
        unconditional.with_label(1)
    with pytest.raises(InputError, match="label 0: this pggan generator is unconditional"):
        make_tiny_pggan().with_label(0)
    a, b = conditional.with_label(0), conditional.with_label(2)
    z = torch.randn(2, 8)
    with torch.no_grad():
        assert not torch.allclose(a(z), b(z))  # the label reaches the image


ARCHITECTURE_FIXTURES = ["stylegan2-orig-tiny32", "stylegan2-resnet-tiny32"]


@needs_fixtures
@pytest.mark.parametrize("name", ARCHITECTURE_FIXTURES)
def test_orig_and_resnet_pickles_reproduce_every_reference_output(name):
    expected = torch.load(FIXTURES / f"{name}-expected.pt", weights_only=True)
    generator = load_generator_file(FIXTURES / f"{name}.pkl")
    assert generator.architecture == name.split("-")[1]
    with torch.no_grad():
        torch.testing.assert_close(generator.ws(expected["z"]), expected["ws"], **TOLERANCE)
        torch.testing.assert_close(generator(expected["z"]), expected["image"], **TOLERANCE)
        torch.testing.assert_close(generator.synthesize(expected["ws"]),
                                   expected["image_from_ws"], **TOLERANCE)
        truncated = generator.with_truncation(0.7)
        torch.testing.assert_close(truncated.ws(expected["z"]), expected["ws_psi07"], **TOLERANCE)
        torch.testing.assert_close(truncated(expected["z"]), expected["image_psi07"], **TOLERANCE)
        for block, (x, img) in generator.block_outputs(expected["ws"]).items():
            torch.testing.assert_close(x, expected[f"{block}_x"], **TOLERANCE)
            if img is None:
                assert expected[f"{block}_img"].numel() == 0  # no image before the last block
            else:
                torch.testing.assert_close(img, expected[f"{block}_img"], **TOLERANCE)
        assert (generator(expected["z"]) - expected["image_G_not_ema"]).abs().max() > 1e-2


@needs_fixtures
def test_the_conditional_pickle_reproduces_every_reference_output():
    expected = torch.load(FIXTURES / "stylegan2-cond5-tiny32-expected.pt", weights_only=True)
    generator = load_generator_file(FIXTURES / "stylegan2-cond5-tiny32.pkl")
    assert generator.c_dim == 5 and generator.label is None
    labels = expected["c"].argmax(dim=1).tolist()

    def per_row(fn, truncation=1.0):
        return torch.cat([fn(generator.with_truncation(truncation).with_label(label),
                             expected["z"][i:i + 1]) for i, label in enumerate(labels)])

    with torch.no_grad():
        torch.testing.assert_close(per_row(lambda g, z: g.ws(z)), expected["ws"], **TOLERANCE)
        torch.testing.assert_close(per_row(lambda g, z: g(z)), expected["image"], **TOLERANCE)
        torch.testing.assert_close(per_row(lambda g, z: g.ws(z), 0.7), expected["ws_psi07"],
                                   **TOLERANCE)
        torch.testing.assert_close(per_row(lambda g, z: g(z), 0.7), expected["image_psi07"],
                                   **TOLERANCE)
        fourth = generator.with_label(4)
        torch.testing.assert_close(fourth.ws(expected["z"]), expected["ws_label4"], **TOLERANCE)
        torch.testing.assert_close(fourth(expected["z"]), expected["image_label4"], **TOLERANCE)


@needs_fixtures
@pytest.mark.parametrize(("name", "label"), [("stylegan2-orig-tiny32", None),
                                             ("stylegan2-resnet-tiny32", None),
                                             ("stylegan2-cond5-tiny32", 2)])
def test_invert_attribute_and_a_sefa_edit_on_each_new_kind(tmp_path, capsys, name, label):
    from helpers import half_label_maps
    from mganprior.cli import main

    path = FIXTURES / f"{name}.pkl"
    generator = load_generator_file(path).with_label(label)
    images = sample_pngs(generator, tmp_path / "images")
    labelled = [] if label is None else ["--label", str(label)]
    run = tmp_path / "run"
    assert main(["invert", "--checkpoint", str(path), "--images", str(images), "--out", str(run),
                 "--layer", "b16.conv0", "--codes", "3", "--iterations", "3", "--quiet",
                 "--latent-space", "w",
                 *labelled]) == 0
    assert main(["attribute", str(run), "--labels", str(half_label_maps(tmp_path / "maps",
                                                                          size=32)),
                 "--quiet"]) == 0  # the run's generator and label come back from its record
    directions = tmp_path / "directions"
    assert main(["directions", "sefa", "--checkpoint", str(path), "--out", str(directions),
                 "--count", "1", *labelled]) == 0
    assert main(["edit", str(run), "--direction", str(directions / "sefa_00.npy"), "--steps",
                 "3", "--codes", "all", "--quiet"]) == 0
    converted = save_generator(generator, tmp_path / "ours.safetensors")
    again = load_generator_file(converted)
    assert (again.architecture, again.c_dim, again.label) == \
        (generator.architecture, generator.c_dim, label)
    z = torch.randn(2, generator.z_dim)
    with torch.no_grad():
        torch.testing.assert_close(again(z), generator(z))
    capsys.readouterr()
