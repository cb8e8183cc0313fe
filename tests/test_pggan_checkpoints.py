"""PGGAN checkpoints: both official layouts load strictly, agree with each other, with an
independent re-implementation of the official forward pass, and with our safetensors round trip."""

import math

import pytest
import torch
import torch.nn.functional as F

from inversion.generators import PGGANGenerator, load_generator_file, save_generator
from mganprior.core.errors import InputError

Z, WIDTHS = 8, [16, 12, 8]  # 16 px
SQRT2 = math.sqrt(2)


def genforce_state_dict(seed=0, widths=WIDTHS, z_dim=Z):
    """Random weights in the genforce/mGANprior layout, as `pggan_*_generator.pth` holds them."""
    gen = torch.Generator().manual_seed(seed)
    sd = {"lod": torch.tensor(0.0)}
    cin = z_dim
    for block, width in enumerate(widths):
        first_kernel = 4 if block == 0 else 3
        sd[f"layer{2 * block}.conv.weight"] = torch.randn(width, cin, first_kernel, first_kernel,
                                                          generator=gen)
        sd[f"layer{2 * block}.wscale.bias"] = torch.randn(width, generator=gen) * 0.1
        sd[f"layer{2 * block + 1}.conv.weight"] = torch.randn(width, width, 3, 3, generator=gen)
        sd[f"layer{2 * block + 1}.wscale.bias"] = torch.randn(width, generator=gen) * 0.1
        sd[f"output{block}.conv.weight"] = torch.randn(3, width, 1, 1, generator=gen)
        sd[f"output{block}.wscale.bias"] = torch.randn(3, generator=gen) * 0.1
        cin = width
    return sd


def gandissect_from_genforce(sd):
    """The same weights in the GAN Dissection / ganseeing layout."""
    layers = sum(1 for k in sd if k.endswith(".conv.weight") and k.startswith("layer"))
    res = 4 * 2 ** (layers // 2 - 1)
    out = {}
    for i in range(layers):
        out[f"layer{i + 1}.conv.weight"] = sd[f"layer{i}.conv.weight"]
        out[f"layer{i + 1}.wscale.b"] = sd[f"layer{i}.wscale.bias"]
    last = layers // 2 - 1
    out[f"output_{res}x{res}.conv.weight"] = sd[f"output{last}.conv.weight"]
    out[f"output_{res}x{res}.wscale.b"] = sd[f"output{last}.wscale.bias"]
    return out


def reference_forward(sd, z):
    """The official genforce forward pass written out from its definition (lod = 0)."""

    def block(x, weight, bias, upsample, gain=SQRT2, activate=True, padding=1):
        x = x / torch.sqrt((x**2).mean(dim=1, keepdim=True) + 1e-8)
        if upsample:
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        fan_in = weight.shape[1] * weight.shape[2] * weight.shape[3]
        x = F.conv2d(x, weight, padding=padding) * (gain / math.sqrt(fan_in))
        x = x + bias.view(1, -1, 1, 1)
        return F.leaky_relu(x, 0.2) if activate else x

    layers = sum(1 for k in sd if k.endswith(".conv.weight") and k.startswith("layer"))
    x = z.view(z.shape[0], -1, 1, 1)
    for i in range(layers):
        x = block(x, sd[f"layer{i}.conv.weight"], sd[f"layer{i}.wscale.bias"],
                  upsample=i >= 2 and i % 2 == 0, padding=3 if i == 0 else 1)
    last = layers // 2 - 1
    return block(x, sd[f"output{last}.conv.weight"], sd[f"output{last}.wscale.bias"], False,
                 gain=1.0, activate=False, padding=0)


def test_config_is_inferred_from_the_state_dict():
    generator = PGGANGenerator.from_state_dict(genforce_state_dict())
    assert (generator.resolution, generator.z_dim, generator.channels) == (16, Z, WIDTHS)


def test_genforce_layout_matches_the_reference_forward_pass():
    sd = genforce_state_dict()
    generator = PGGANGenerator.from_state_dict(sd)
    z = torch.randn(4, Z)
    with torch.no_grad():
        torch.testing.assert_close(generator(z), reference_forward(sd, z), rtol=1e-4, atol=1e-5)


def test_both_official_layouts_give_the_same_images():
    sd = genforce_state_dict(seed=3)
    a = PGGANGenerator.from_state_dict(sd)
    b = PGGANGenerator.from_state_dict(gandissect_from_genforce(sd))
    z = torch.randn(5, Z)
    with torch.no_grad():
        torch.testing.assert_close(a(z), b(z))


@pytest.mark.parametrize("layout", ["genforce", "gandissect", "gandissect-wrapped"])
def test_pth_files_round_trip_through_safetensors(tmp_path, layout):
    sd = genforce_state_dict(seed=1)
    if layout.startswith("gandissect"):
        sd = gandissect_from_genforce(sd)
    if layout.endswith("wrapped"):
        sd = {"state_dict": sd}
    torch.save(sd, tmp_path / "official.pth")
    loaded = load_generator_file(tmp_path / "official.pth")
    saved = save_generator(loaded, tmp_path / "ours.safetensors")
    assert (tmp_path / "ours.json").is_file()
    again = load_generator_file(saved)
    z = torch.randn(3, Z)
    with torch.no_grad():
        torch.testing.assert_close(again(z), loaded(z))
        torch.testing.assert_close(loaded(z), reference_forward(genforce_state_dict(seed=1), z),
                                   rtol=1e-4, atol=1e-4)


def test_fp16_weights_load_as_float32(tmp_path):
    generator = PGGANGenerator.from_state_dict(genforce_state_dict())
    path = save_generator(generator, tmp_path / "half.safetensors", dtype=torch.float16)
    loaded = load_generator_file(path)
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    z = torch.randn(2, Z)
    with torch.no_grad():
        torch.testing.assert_close(loaded(z), generator(z), atol=0.02, rtol=0.02)


def test_missing_unexpected_and_misshapen_keys_are_named_in_one_error():
    sd = genforce_state_dict()
    del sd["layer3.wscale.bias"]
    sd["layer1.extra"] = torch.zeros(1)
    sd["output1.conv.weight"] = torch.zeros(3, 5, 1, 1)
    with pytest.raises(InputError) as err:
        PGGANGenerator.from_state_dict(sd, source="bad.pth")
    message = str(err.value)
    assert "bad.pth" in message and "\n" not in message
    assert "missing keys: layer3.wscale.bias" in message
    assert "unexpected keys: layer1.extra" in message
    assert "output1.conv.weight [3, 5, 1, 1] (expected [3, 12, 1, 1])" in message


def test_unfinished_progressive_snapshot_is_refused():
    sd = genforce_state_dict()
    sd["lod"] = torch.tensor(1.0)
    with pytest.raises(InputError, match="lod=1"):
        PGGANGenerator.from_state_dict(sd)


def test_gandissect_shape_mismatch_is_reported():
    sd = gandissect_from_genforce(genforce_state_dict())
    sd["layer2.wscale.b"] = torch.zeros(3)
    with pytest.raises(InputError, match=r"layer2.wscale.b \[3\] \(expected \[16\]\)"):
        PGGANGenerator.from_state_dict(sd)


def test_unknown_layouts_and_corrupt_files_fail_with_the_file_name(tmp_path):
    with pytest.raises(InputError, match="not a PGGAN generator"):
        PGGANGenerator.from_state_dict({"encoder.weight": torch.zeros(1)})
    corrupt = tmp_path / "broken.pth"
    corrupt.write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match=r"broken\.pth is corrupt"):
        load_generator_file(corrupt)
    bad_tensors = tmp_path / "bad.safetensors"
    bad_tensors.write_bytes(b"\x00" * 64)
    (tmp_path / "bad.json").write_text('{"family": "pggan", "resolution": 16, "z_dim": 8, '
                                       '"channels": [16, 12, 8]}')
    with pytest.raises(InputError, match=r"bad\.safetensors is corrupt"):
        load_generator_file(bad_tensors)
    lonely = tmp_path / "lonely.safetensors"
    lonely.write_bytes(b"")
    with pytest.raises(InputError, match=r"no config lonely\.json"):
        load_generator_file(lonely)


def test_safetensors_config_must_match_the_weights(tmp_path):
    generator = PGGANGenerator.from_state_dict(genforce_state_dict())
    path = save_generator(generator, tmp_path / "g.safetensors")
    (tmp_path / "g.json").write_text('{"family": "pggan", "resolution": 16, "z_dim": 8, '
                                     '"channels": [16, 12, 4]}')
    with pytest.raises(InputError, match="shape mismatches"):
        load_generator_file(path)


def test_a_file_of_no_known_format_gets_one_line_listing_the_formats(tmp_path):
    stranger = tmp_path / "encoder.pth"
    torch.save({"encoder.weight": torch.zeros(2, 2)}, stranger)
    with pytest.raises(InputError, match=r"encoder\.pth is not a generator file in a known "
                                         r"format\. Known formats: mganprior .*pggan-genforce.*"
                                         r"dcgan-tutorial") as err:
        load_generator_file(stranger)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(("config", "message"), [
    ('{"family": "pggan", "resolution": 16, "z_dim": 8, "channels": [4096, 4096, 4096]}',
     "shape mismatches"),  # checked on the meta device: nothing of that size is allocated
    ('{"family": "pggan", "resolution": "big", "z_dim": 8, "channels": [16, 12, 8]}',
     "wrongly typed"),
    ('{"family": "stylegan9"}', "names family 'stylegan9'; known families: pggan, dcgan"),
    ('["pggan"]', "not a JSON object"),
])
def test_configs_are_checked_against_the_weights_before_anything_is_built(tmp_path, config,
                                                                          message):
    path = save_generator(PGGANGenerator.from_state_dict(genforce_state_dict()),
                          tmp_path / "g.safetensors")
    (tmp_path / "g.json").write_text(config)
    with pytest.raises(InputError, match=message):
        load_generator_file(path)
