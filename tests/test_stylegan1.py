"""StyleGAN (v1) in the genforce layout: the official network's outputs reproduced (plain,
truncated, W+, per layer, multi-code at every stored cut), fused up-sampling layers, the
generator contract, hostile files, and everything downstream end to end on a tiny one."""

from __future__ import annotations

import pytest
import torch

from helpers import (
    SHARED,
    GeneratorContract,
    half_label_maps,
    make_tiny_stylegan1,
    needs_shared,
    sample_pngs,
)
from inversion.composition import render
from inversion.generators.formats import load_generator_file, sniff_format
from inversion.generators.saving import save_generator
from inversion.generators.stylegan1_files import from_genforce
from mganprior.core.errors import InputError

FIXTURE = SHARED / "fixtures" / "stylegan1"
needs_fixture = needs_shared("stylegan1", "the reference StyleGAN checkpoint and its outputs")
TOLERANCE = {"rtol": 0, "atol": 1e-4}


class TestStyleGAN1Contract(GeneratorContract):
    extra_carry, extra_layer = "styles=latent", 3

    def make(self):
        return make_tiny_stylegan1()


class TestFusedStyleGAN1Contract(GeneratorContract):
    def make(self):
        return make_tiny_stylegan1(fused=(8, 16))


# -- the official network's outputs -------------------------------------------------------------
@pytest.fixture(scope="module")
def official():
    return (load_generator_file(FIXTURE / "stylegan1-tiny32.pth"),
            torch.load(FIXTURE / "stylegan1-tiny32-expected.pt", weights_only=True))


@needs_fixture
def test_the_genforce_file_reproduces_every_reference_output(official):
    generator, expected = official
    assert sniff_format(FIXTURE / "stylegan1-tiny32.pth")[0].name == "stylegan1-genforce"
    assert generator.config()["channels"] == [48, 48, 24, 12] and generator.num_ws == 8
    z = expected["z"]
    with torch.no_grad():
        torch.testing.assert_close(generator.map(z), expected["w"], **TOLERANCE)
        torch.testing.assert_close(generator(z), expected["image_notrunc"], **TOLERANCE)
        official_default = generator.with_truncation(expected["truncation_psi"])
        assert official_default.truncation_layers == expected["truncation_layers"] == 8
        torch.testing.assert_close(official_default.ws(z), expected["wp_trunc"], **TOLERANCE)
        torch.testing.assert_close(official_default(z), expected["image"], **TOLERANCE)
        in_w_plus = generator.in_space("w+")
        torch.testing.assert_close(in_w_plus(expected["wp_mixed"].flatten(1)),
                                   expected["image_from_wp_mixed"], **TOLERANCE)
        in_w = generator.in_space("w")  # wp_notrunc repeats w on every row
        for name in expected["layer_names"]:  # synthesis.layer{i}: our layer "layer{i}"
            layer = in_w.layer(name.removeprefix("synthesis."))
            features = in_w.head(expected["wp_notrunc"][:, 0], layer).features
            torch.testing.assert_close(features[:1], expected[name], **TOLERANCE)


@needs_fixture
def test_multi_code_images_at_every_stored_cut(official):
    generator, expected = official
    in_w_plus = generator.in_space("w+")
    codes = expected["multi_wp"].flatten(2)  # [2, 5, 8 * 48]
    for composing in expected["composing_layers"]:
        layer = in_w_plus.layer(composing)  # the official --composing_layer l: layer{l-1}
        assert f"synthesis.{layer.name}" == expected[f"cut_module_l{composing}"]
        with torch.no_grad():
            images = render(in_w_plus, codes, expected[f"alpha_l{composing}"], layer, "mean",
                            {"styles": "mean"})
        torch.testing.assert_close(images, expected[f"multi_image_l{composing}"], **TOLERANCE)


def fused_twin(state: dict[str, torch.Tensor], blocks: int) -> dict[str, torch.Tensor]:
    """The same network with its up-sampling layers stored fused, from the format's facts: a
    ``[3, 3, in, out]`` kernel for a stride-2 transposed convolution, which is the adjoint of the
    unfused correlation, so its kernel is the unfused ``[out, in, 3, 3]`` one flipped in both
    spatial axes."""
    twin = dict(state)
    for k in range(1, blocks):
        weight = twin.pop(f"synthesis.layer{2 * k}.conv.weight")
        twin[f"synthesis.layer{2 * k}.weight"] = weight.flip(2, 3).permute(2, 3, 1, 0).clone()
    return twin


def test_a_fused_file_equals_its_unfused_twin():
    unfused = make_tiny_stylegan1()
    fused = from_genforce(fused_twin(unfused.state_dict(), 3), "twin")
    assert fused.fused == [8, 16] and unfused.fused == []
    z = torch.randn(3, 8)
    with torch.no_grad():
        torch.testing.assert_close(fused(z), unfused(z), rtol=0, atol=1e-5)
        assert (fused(z) - unfused(z)).abs().max() < 1e-5 < unfused(z).abs().max()


@needs_fixture
def test_convert_and_zoo_on_the_genforce_file(tmp_path, capsys):
    from mganprior.cli import main

    out = tmp_path / "g.safetensors"
    assert main(["convert", str(FIXTURE / "stylegan1-tiny32.pth"), "--out", str(out)]) == 0
    z = torch.randn(2, 48)
    with torch.no_grad():
        torch.testing.assert_close(load_generator_file(out)(z),
                                   load_generator_file(FIXTURE / "stylegan1-tiny32.pth")(z),
                                   rtol=0, atol=0)
    capsys.readouterr()
    assert main(["zoo", "--checkpoint", str(FIXTURE / "stylegan1-tiny32.pth")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("stylegan1, 32 px") and "first 8 layers" in lines[0]
    assert lines[1] == "0 z 48x1x1"
    assert lines[4].startswith("3 layer2 48x8x8; carries styles (latent/mean/alpha")


def test_a_saved_stylegan1_keeps_its_truncation(tmp_path):
    generator = make_tiny_stylegan1().with_truncation(0.5, 2)
    loaded = load_generator_file(save_generator(generator, tmp_path / "g.safetensors"))
    assert (loaded.truncation_psi, loaded.truncation_layers) == (0.5, 2)
    z = torch.randn(2, 8)
    with torch.no_grad():
        torch.testing.assert_close(loaded(z), generator(z), rtol=0, atol=0)
        rows = generator.ws(z)
        plain = make_tiny_stylegan1().ws(z)
        torch.testing.assert_close(rows[:, 2:], plain[:, 2:], rtol=0, atol=1e-6)
        assert not torch.allclose(rows[:, :2], plain[:, :2])


# -- hostile and damaged files: one line, nothing large built --------------------------------------
def hostile_cases() -> list[tuple[str, object, str]]:
    huge = torch.zeros(1).expand(8192, 8192, 3, 3)  # 2.4 GB declared over 4 bytes
    return [
        ("missing", lambda s: s.pop("synthesis.layer3.conv.weight"),
         r"missing keys: synthesis\.layer3\.conv\.weight"),
        ("shape", lambda s: s.__setitem__("synthesis.layer1.conv.weight", torch.zeros(8, 8, 1, 1)),
         r"shape mismatches: synthesis\.layer1\.conv\.weight \[8, 8, 1, 1\]"),
        ("stride-0", lambda s: s.__setitem__("synthesis.layer1.conv.weight", huge),
         r"declares shape \[8192, 8192, 3, 3\].*over 4 bytes"),
        ("lod", lambda s: s.__setitem__("synthesis.lod", torch.tensor(1.5)),
         r"synthesis\.lod is 1\.5"),
        ("not a tensor", lambda s: s.__setitem__("truncation.w_avg", [1.0, 2.0]),
         r"truncation\.w_avg is not a tensor"),
        ("rank", lambda s: s.__setitem__("mapping.dense0.fc.weight", torch.zeros(8)),
         r"mapping\.dense0\.fc\.weight must be a 2-d float tensor, got \[8\]"),
        ("width", lambda s: s.__setitem__("synthesis.layer0.epilogue.bias",
                                          torch.zeros(1).expand(10 ** 6)),
         r"declares shape \[1000000\]"),
    ]


@pytest.mark.parametrize("case", hostile_cases(), ids=lambda case: case[0])
def test_hostile_files_get_one_line(tmp_path, case):
    _, damage, message = case
    state = make_tiny_stylegan1().state_dict()
    damage(state)
    path = tmp_path / "hostile.pth"
    torch.save(state, path)
    with pytest.raises(InputError, match=message):
        load_generator_file(path)


# -- everything downstream, end to end on a small one ---------------------------------------------
@pytest.fixture
def stylegan1_file(tmp_path):
    path = tmp_path / "stylegan_tiny_generator.pth"
    torch.save(make_tiny_stylegan1().state_dict(), path)
    return path


@pytest.fixture
def stylegan1_pngs(tmp_path):
    return sample_pngs(make_tiny_stylegan1(), tmp_path / "images")


def test_invert_attribute_edit_and_study_a_stylegan1(tmp_path, capsys, stylegan1_file,
                                                      stylegan1_pngs):
    from analysis.edit_files import EditDirectory
    from inversion.rundir import RunDirectory
    from mganprior.cli import main

    run = tmp_path / "run"
    assert main(["invert", "--checkpoint", str(stylegan1_file), "--images",
                 str(stylegan1_pngs), "--out", str(run), "--layer", "layer3", "--iterations",
                 "5", "--codes", "4", "--latent-space", "w+", "--quiet"]) == 0
    result = RunDirectory(run).load_result()
    assert result.codes.shape == (2, 4, 6 * 8) and result.extras["styles"].shape == (2, 2, 8)
    labels = half_label_maps(tmp_path / "labels")
    assert main(["attribute", str(run), "--labels", str(labels), "--quiet"]) == 0
    assert "codes of 2 images assigned" in capsys.readouterr().out
    directions = tmp_path / "dirs"
    assert main(["directions", "sefa", "--checkpoint", str(stylegan1_file), "--count", "2",
                 "--out", str(directions)]) == 0
    assert "sefa_00.npy (sefa, space w, eigenvalue" in capsys.readouterr().out
    assert main(["edit", str(run), "--direction", str(directions / "sefa_00.npy"), "--steps",
                 "3", "--codes", "all", "--quiet"]) == 0
    assert EditDirectory(run / "edits" / "sefa_00").load().frames.shape[:3] == (2, 1, 3)
    study = tmp_path / "study"
    assert main(["layers", "--checkpoint", str(stylegan1_file), "--images", str(stylegan1_pngs),
                 "--tasks", "inversion", "--layers", "layer1,layer4", "--iterations", "2",
                 "--codes", "2", "--out", str(study), "--quiet"]) == 0
    assert main(["report", str(run), str(study), "--out", str(tmp_path / "r.html")]) == 0
    assert "stylegan1" in (tmp_path / "r.html").read_text()


def test_sefa_factorises_every_layer_s_style_affine():
    from analysis.directions import sefa_directions

    generator = make_tiny_stylegan1()
    weight, space = generator.latent_weight("all")
    assert space == "w" and weight.shape == (2 * (8 + 8 + 8 + 8 + 4 + 4), 8)
    directions = sefa_directions(generator, 3, layers="0,layer5")
    assert len(directions) == 3 and directions[0].vector.shape == (8,)
    with pytest.raises(InputError, match="layers 'layer9' is not a style layer"):
        generator.latent_weight("layer9")


def test_the_adam_learning_rate_is_the_one_measured_for_stylegan1():
    from inversion.recipes import ADAM_LR, get_recipe

    adam = get_recipe("adam", "inversion")
    generator = make_tiny_stylegan1()
    for space in ("z", "w", "w+"):
        assert adam.resolve_lr(generator.in_space(space)) == 0.1 != ADAM_LR
        single = adam.with_overrides(codes=1, layer=0, latent_space=space)
        assert single.resolve_lr(generator.in_space(space)) == 0.1
