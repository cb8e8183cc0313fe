"""Loss: pixel MSE by hand; the VGG16 perceptual backend loads weights strictly or turns off."""

import pytest
import torch
from torch import nn

from helpers import inversion_of
from inversion.losses import VGG_FILE, VGGPerceptual, load_perceptual, reconstruction_loss
from mganprior.core.errors import InputError


@pytest.fixture(scope="module")
def vgg_file(tmp_path_factory):
    """Random weights in torchvision's VGG16 key layout, trunk up to conv4_3 (a stand-in for
    vgg16-397923af.pth, which cannot be downloaded here): tests the loading, not the features."""
    from torchvision.models.vgg import cfgs, make_layers

    torch.manual_seed(0)
    trunk = make_layers(cfgs["D"])[:22]
    state = {f"features.{k}": v for k, v in trunk.state_dict().items()}
    state["classifier.0.bias"] = torch.zeros(4)  # full VGG16 files carry the classifier too
    path = tmp_path_factory.mktemp("vgg") / VGG_FILE
    torch.save(state, path)
    return path


def test_pixel_loss_is_the_per_image_mean_squared_error():
    a = torch.zeros(2, 3, 2, 2)
    b = torch.zeros(2, 3, 2, 2)
    b[0] = 0.5
    b[1, 0, 0, 0] = 1.2
    torch.testing.assert_close(reconstruction_loss(a, b), torch.tensor([0.25, 1.44 / 12]))


def test_missing_hub_weights_turn_the_perceptual_term_off_with_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    status = load_perceptual("vgg16")
    assert status.module is None and status.backend == "none"
    assert "\n" not in status.note and str(tmp_path / "checkpoints" / VGG_FILE) in status.note


def test_explicit_weights_path_must_exist(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        load_perceptual("vgg16", tmp_path / "nope.pth")


def test_hub_cache_weights_are_found(vgg_file, monkeypatch):
    (vgg_file.parent / "checkpoints").mkdir(exist_ok=True)
    (vgg_file.parent / "checkpoints" / VGG_FILE).write_bytes(vgg_file.read_bytes())
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(vgg_file.parent))
    status = load_perceptual("vgg16", layer="relu3_3")
    assert status.backend == "vgg16" and status.weights.endswith(VGG_FILE)


@pytest.mark.parametrize(("layer", "modules", "last"), [("relu3_3", 16, nn.ReLU),
                                                          ("conv4_3", 22, nn.Conv2d)])
def test_layers_cut_the_trunk_where_the_official_code_and_the_paper_do(vgg_file, layer, modules,
                                                                         last):
    status = load_perceptual("vgg16", vgg_file, layer=layer)
    features = status.module.features
    assert len(features) == modules and isinstance(features[-1], last)
    weights = torch.load(vgg_file, weights_only=True)
    torch.testing.assert_close(features[0].weight, weights["features.0.weight"])


def test_perceptual_distance_is_zero_for_equal_images_and_per_image(vgg_file):
    perceptual = load_perceptual("vgg16", vgg_file, size=32).module
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    y = x.clone()
    y[1] = -y[1]
    distance = perceptual(x, y)
    assert distance.shape == (2,) and distance[0] == 0 and distance[1] > 0
    with_vgg = reconstruction_loss(x, y, perceptual, perceptual_weight=0.001)
    torch.testing.assert_close(with_vgg, reconstruction_loss(x, y) + 0.001 * distance)


def test_a_file_that_is_not_vgg16_is_refused_with_its_keys(tmp_path):
    path = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, path)
    with pytest.raises(InputError, match=r"missing keys: features\.0\.bias.*unexpected keys: "
                                         r"conv1\.weight"):
        load_perceptual("vgg16", path)


def test_unknown_backend_and_layer():
    with pytest.raises(InputError, match="backends: vgg16, none"):
        load_perceptual("lpips")
    with pytest.raises(InputError, match="relu3_3, conv4_3"):
        VGGPerceptual({}, layer="pool5")


def test_perceptual_distance_map_is_zero_where_nothing_changed_and_local(vgg_file):
    perceptual = load_perceptual("vgg16", vgg_file).module
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    y = x.clone()
    y[..., :8, :8] = -y[..., :8, :8]  # change the top-left corner only
    assert torch.equal(perceptual.distance_map(x, x), torch.zeros(1, 64, 64))
    distance = perceptual.distance_map(x, y)
    assert distance.shape == (1, 64, 64)
    assert distance[0, :8, :8].mean() > 10 * distance[0, 48:, 48:].mean()


def test_attribution_with_the_perceptual_difference(vgg_file, tiny_pggan):
    from analysis.attribution import AttributionSettings, attribute
    from segmentation.vocabularies import SCENE_WORLD

    layer = tiny_pggan.layers[3]
    alphas = torch.full((2, 3, layer.channels), 0.05)
    alphas[:, 0, :4] = 0.9  # only code 0 has entries above the threshold
    result = attribute(tiny_pggan, inversion_of(tiny_pggan, alphas, layer=layer.name),
                       labels=torch.zeros(2, 16, 16, dtype=torch.long), vocabulary=SCENE_WORLD,
                       settings=AttributionSettings(difference="perceptual"),
                       perceptual=load_perceptual("vgg16", vgg_file).module, progress=False)
    assert result.differences.shape == (2, 3, 16, 16)
    assert (result.differences[:, 0] > 0).any()
    assert torch.equal(result.differences[:, 1:], torch.zeros(2, 2, 16, 16))
