"""StyleGAN3: NVIDIA's own outputs (both configs, per layer, truncated, with a transformed input),
the paper's layout and filters against NVIDIA's, the contract, the fast path against the
reference, the command line end to end, and one-line refusals of damaged or hostile files."""

from __future__ import annotations

import pytest
import torch

from helpers import (
    SHARED,
    GeneratorContract,
    half_label_maps,
    make_tiny_pggan,
    make_tiny_stylegan3,
    needs_shared,
    nvidia_stylegan3_pickle,
    sample_pngs,
)
from inversion.generators.formats import load_generator_file, sniff_format
from inversion.generators.stylegan3 import (
    LayerSpec,
    StyleGAN3Generator,
    input_transform,
    upsample,
)
from mganprior.core.errors import InputError

FIXTURES = SHARED / "fixtures" / "stylegan3"
needs_fixtures = needs_shared("stylegan3", "the reference StyleGAN3 checkpoints")
TOLERANCE = {"rtol": 0, "atol": 1e-4}
CONFIGS = ["t", "r"]


class TestStyleGAN3TContract(GeneratorContract):
    extra_carry = "styles=latent"

    def make(self):
        return make_tiny_stylegan3(config="t")


class TestStyleGAN3RContract(GeneratorContract):
    extra_carry = "styles=latent"

    def make(self):
        return make_tiny_stylegan3(config="r")


class TestConditionalStyleGAN3Contract(GeneratorContract):
    extra_carry = "styles=latent"

    def make(self):
        return make_tiny_stylegan3(c_dim=3)


# -- NVIDIA's outputs -----------------------------------------------------------------------------
@needs_fixtures
@pytest.mark.parametrize("config", CONFIGS)
def test_nvidia_pickles_reproduce_every_reference_output(config):
    path = FIXTURES / f"stylegan3-{config}-tiny32.pkl"
    expected = torch.load(FIXTURES / f"stylegan3-{config}-tiny32-expected.pt", weights_only=True)
    generator = load_generator_file(path)
    assert sniff_format(path)[0].name == "stylegan-nvidia"
    assert generator.family == "stylegan3" and generator.config_name == f"stylegan3-{config}"
    assert generator.num_ws == expected["num_ws"]
    assert generator.style_layers() == expected["layer_names"]
    with torch.no_grad():
        torch.testing.assert_close(generator.ws(expected["z"]), expected["ws"], **TOLERANCE)
        torch.testing.assert_close(generator(expected["z"]), expected["image"], **TOLERANCE)
        torch.testing.assert_close(generator.synthesize(expected["ws"]),
                                   expected["image_from_ws"], **TOLERANCE)
        outputs = generator.layer_outputs(expected["ws"][:1])
        for name in expected["layer_names"]:
            torch.testing.assert_close(outputs[name], expected[name], **TOLERANCE, msg=name)
        for layer in generator.layers[1:]:  # a cut's features are that module's output
            cut = generator.head(expected["z"][:1], layer)
            torch.testing.assert_close(cut.features, expected[layer.name], **TOLERANCE)
        truncated = generator.with_truncation(0.7)
        torch.testing.assert_close(truncated.ws(expected["z"]), expected["ws_psi07"], **TOLERANCE)
        torch.testing.assert_close(truncated(expected["z"]), expected["image_psi07"], **TOLERANCE)
        moved = generator.with_input_transform(input_transform((0.1, -0.05), 10))
        torch.testing.assert_close(moved(expected["z"]), expected["image_transformed"],
                                   **TOLERANCE)
        reference = load_generator_file(path).use_fast_paths(False)
        torch.testing.assert_close(reference(expected["z"]), expected["image"], **TOLERANCE)


@needs_fixtures
@pytest.mark.parametrize("config", CONFIGS)
def test_the_input_transform_is_the_matrix_gen_images_stores(config):
    expected = torch.load(FIXTURES / f"stylegan3-{config}-tiny32-expected.pt", weights_only=True)
    ours = torch.tensor(input_transform((0.1, -0.05), 10), dtype=torch.float32)
    torch.testing.assert_close(ours, expected["input_transform"], rtol=0, atol=1e-7)


@needs_fixtures
@pytest.mark.parametrize("config", CONFIGS)
def test_the_paper_layout_gives_nvidia_sizes_and_filters(config):
    """``design`` from the file's own init kwargs lays out the same layers and designs the same
    filters (scipy's firwin, the radial jinc) as NVIDIA's code did."""
    expected = torch.load(FIXTURES / f"stylegan3-{config}-tiny32-expected.pt", weights_only=True)
    kwargs = expected["config"]
    loaded = load_generator_file(FIXTURES / f"stylegan3-{config}-tiny32.pkl")
    designed = StyleGAN3Generator.design(kwargs["img_resolution"], kwargs["z_dim"],
                                         kwargs["w_dim"], kwargs["channel_base"],
                                         kwargs["channel_max"], config=config,
                                         mapping_layers=kwargs["mapping_kwargs"]["num_layers"])
    assert designed.specs == loaded.specs and designed.input_spec == loaded.input_spec
    ours, theirs = designed.state_dict(), loaded.state_dict()
    filters = [key for key in theirs if key.endswith("_filter")]
    assert len(filters) == 2 * 14 - 0  # every layer but the ToRGB has both
    for key in filters:
        torch.testing.assert_close(ours[key], theirs[key], rtol=0, atol=1e-7, msg=key)


@needs_fixtures
def test_convert_writes_our_format_and_it_reproduces_the_pickle(tmp_path, capsys):
    from mganprior.cli import main

    source = FIXTURES / "stylegan3-r-tiny32.pkl"
    out = tmp_path / "g.safetensors"
    assert main(["convert", str(source), "--out", str(out)]) == 0
    assert "composable layers" in capsys.readouterr().out
    z = torch.randn(2, 64)
    with torch.no_grad():
        torch.testing.assert_close(load_generator_file(out)(z), load_generator_file(source)(z),
                                   rtol=0, atol=0)


# -- the family -----------------------------------------------------------------------------------
@pytest.mark.parametrize("config", CONFIGS)
def test_the_fast_path_equals_the_reference_within_rounding(config):
    generator = make_tiny_stylegan3(config=config)
    z = torch.randn(4, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        fast = generator(z)
        reference = generator.use_fast_paths(False)(z)
    torch.testing.assert_close(fast, reference, rtol=0, atol=1e-5)
    assert (fast - reference).abs().max() > 0  # two different computations


@pytest.mark.parametrize(("up", "taps", "padding"), [(2, 12, (11, 10)), (4, 24, (-2, -5)),
                                                     (2, 12, (-9, -10)), (3, 7, (0, 4))])
def test_strided_upsampling_equals_zero_insertion(up, taps, padding):
    x = torch.randn(2, 3, 20, 20, generator=torch.Generator().manual_seed(up + taps))
    f = torch.rand(taps, generator=torch.Generator().manual_seed(taps))
    f = f / f.sum()  # a low-pass filter's scale
    torch.testing.assert_close(upsample(x, f, up, padding, fast=True),
                               upsample(x, f, up, padding, fast=False), rtol=1e-5, atol=1e-5)


def test_only_the_styles_cross_a_cut_and_the_layers_are_nvidia_modules():
    generator = make_tiny_stylegan3()
    names = [layer.name for layer in generator.layers]
    assert names == ["z", "input", "L0_24_8", "L1_24_8", "L2_24_8", "L3_16_8"]
    assert generator.carry_specs(generator.layer(0)) == ()
    for layer in generator.layers[1:]:
        assert [spec.name for spec in generator.carry_specs(layer)] == ["styles"]
        with torch.no_grad():
            cut = generator.head(torch.randn(2, 8), layer)
        assert cut.carry["styles"].shape == (2, generator.num_ws - layer.index, 8)
    assert generator.sefa_layers() == generator.style_layers()[1:]


def test_the_input_transform_moves_the_image_and_is_recorded(tmp_path):
    from inversion.generators.saving import save_generator

    generator = make_tiny_stylegan3()
    turned = generator.with_input_transform(input_transform((0.2, 0.0), 30))
    z = torch.randn(2, 8)
    with torch.no_grad():
        assert (turned(z) - generator(z)).abs().max() > 1e-2
        assert generator.transform is None  # a view: the original is unchanged
        save_generator(turned, tmp_path / "g.safetensors")
        loaded = load_generator_file(tmp_path / "g.safetensors")
        assert loaded.config()["input_transform"] == turned.config()["input_transform"]
        torch.testing.assert_close(loaded(z), turned(z), rtol=0, atol=0)
    for matrix in ([[1, 0], [0, 1]], [[float("nan")] * 3] * 3, "turn"):
        with pytest.raises(InputError, match="input_transform must be a 3x3 matrix"):
            generator.with_input_transform(matrix)
    with pytest.raises(InputError, match="applies to StyleGAN3's Fourier-feature input, not "
                                         "to this pggan generator"):
        make_tiny_pggan().with_input_transform(input_transform(rotate=5))


# -- the command line -----------------------------------------------------------------------------
@pytest.mark.parametrize("config", CONFIGS)
def test_invert_attribute_and_a_sefa_edit_on_a_stylegan3(tmp_path, config):
    from inversion.rundir import RunDirectory
    from mganprior.attribution import run_generator
    from mganprior.cli import main

    generator = make_tiny_stylegan3(config=config)
    path = nvidia_stylegan3_pickle(generator, tmp_path / "g.pkl")
    images = sample_pngs(generator, tmp_path / "images")
    run = tmp_path / "run"
    assert main(["invert", "--checkpoint", str(path), "--images", str(images), "--out", str(run),
                 "--layer", "L1_24_8", "--codes", "3", "--iterations", "3", "--quiet",
                 "--latent-space", "w", "--rotate", "10", "--translate", "0.1,-0.05"]) == 0
    config = RunDirectory(run).config()
    expected = torch.tensor(input_transform((0.1, -0.05), 10))
    torch.testing.assert_close(torch.tensor(config["generator"]["config"]["input_transform"]),
                               expected)
    again = run_generator(config, None, None, None, print).generator  # what attribute reloads
    torch.testing.assert_close(again.transform, expected.float())
    assert main(["attribute", str(run), "--labels", str(half_label_maps(tmp_path / "maps")),
                 "--quiet"]) == 0  # the run's transform comes back from its record
    directions = tmp_path / "directions"
    assert main(["directions", "sefa", "--checkpoint", str(path), "--out", str(directions),
                 "--count", "1"]) == 0
    assert main(["edit", str(run), "--direction", str(directions / "sefa_00.npy"), "--steps",
                 "3", "--codes", "all", "--quiet"]) == 0


def test_zoo_lists_the_layers_and_what_crosses_each_cut(tmp_path, capsys):
    from mganprior.cli import main

    path = nvidia_stylegan3_pickle(make_tiny_stylegan3(config="r"), tmp_path / "g.pkl")
    assert main(["zoo", "--checkpoint", str(path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("stylegan3, 16 px, latent spaces z, w, w+") and \
        lines[0].endswith("stylegan3-r")
    assert lines[1].startswith("0 z 8x1x1") and "carries" not in lines[1]
    assert lines[2].startswith("1 input 8x24x24; carries styles (latent/mean/alpha")


@pytest.mark.parametrize("flags, message", [
    (["--translate", "0.1"], "translate must be two numbers X,Y, got '0.1'"),
    (["--rotate", "inf"], "rotate must be a finite angle"),
])
def test_bad_transform_flags_get_one_line(tmp_path, capsys, flags, message):
    from mganprior.cli import main

    path = nvidia_stylegan3_pickle(make_tiny_stylegan3(), tmp_path / "g.pkl")
    images = sample_pngs(make_tiny_stylegan3(), tmp_path / "images")
    assert main(["invert", "--checkpoint", str(path), "--images", str(images), "--out",
                 str(tmp_path / "run"), *flags]) == 2
    assert message in capsys.readouterr().err


# -- damaged and hostile files --------------------------------------------------------------------
def _set(layer: str, **values):
    def edit(synthesis):
        state = synthesis["_modules"][layer].meta["state"]
        state.update(values)
    return edit


def _rename(synthesis, old: str, new: str) -> None:
    synthesis["_modules"][new] = synthesis["_modules"].pop(old)
    synthesis["layer_names"][synthesis["layer_names"].index(old)] = new


@pytest.mark.parametrize("edit, message", [
    (_set("L1_24_8", in_size=__import__("numpy").array([24, 20])),
     r"synthesis\.L1_24_8\.in_size is \[24, 20\]; only square layers"),
    (_set("L1_24_8", padding=[0, 0, 0, 0]), r"pads by \[0, 0, 0, 0\], not the \[\d+, \d+, "
     r"\d+, \d+\] its sizes give; this layer configuration is not supported"),
    (_set("L1_24_8", out_size=__import__("numpy").array([10 ** 6] * 2), padding=None),
     r"out_size must be an integer in \[1, 8192\], got 1000000"),
    (_set("L2_24_8", in_channels=8000, in_size=__import__("numpy").array([8000] * 2),
          padding=None), r"layers\[2\] implies \d+ numbers per image \(more than 4294967296\)"),
    (_set("L1_24_8", conv_kernel=2, padding=None), "only odd convolution kernels"),
    (_set("L1_24_8", up_factor="2"), r"layers\[1\]\.up must be an integer"),
    (lambda s: _rename(s, "L1_24_8", "L1_25_8"), r"the synthesis layers are named \['L0_24_8', "
     r"'L1_25_8', 'L2_24_8'\]\.\.\., not \['L0_24_8', 'L1_24_8', 'L2_24_8'\]"),
])
def test_damaged_or_hostile_stylegan3_pickles_get_one_line(tmp_path, edit, message):
    path = nvidia_stylegan3_pickle(make_tiny_stylegan3(), tmp_path / "g.pkl", edit=edit)
    with pytest.raises(InputError, match=message) as caught:
        load_generator_file(path)
    assert "\n" not in str(caught.value)


def test_a_truncated_stylegan3_pickle_gets_one_line(tmp_path):
    path = nvidia_stylegan3_pickle(make_tiny_stylegan3(), tmp_path / "g.pkl")
    path.write_bytes(path.read_bytes()[:20000])
    with pytest.raises(InputError, match=r"g\.pkl is damaged or not a pickle"):
        load_generator_file(path)


def test_layer_specs_refuse_what_does_not_chain():
    good = make_tiny_stylegan3()
    config = good.config()
    config["layers"][2]["in_channels"] = 5
    with pytest.raises(InputError, match=r"layers\[2\] takes 5 channels at 24 px but the layer "
                                         r"before makes 8 at 24 px"):
        StyleGAN3Generator.from_config(config)
    spec = LayerSpec(8, 8, 36, 36, conv_kernel=1)
    assert spec.padding == (11, 10)  # NVIDIA's L0 of the R fixture
