"""CSAIL semantic-segmentation-pytorch encoder/decoder pairs: strict loading, ADE20K-150 by
index; random weights in the published layout, no network."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mganprior.core.errors import InputError
from segmentation.formats import load_segmenter_dir

pytest.importorskip("mit_semseg", reason="the csail extra (mit-semseg) is not installed")


ARCH = {"arch_encoder": "mobilenetv2dilated", "arch_decoder": "c1_deepsup", "fc_dim": 320,
        "num_class": 150}


def csail_folder(folder: Path, seed: int, adjust) -> Path:
    """A seeded random MobileNetV2 + C1 pair saved as CSAIL publishes them; ``adjust(decoder)``
    sets the last layer first."""
    from segmentation.csail import build

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        encoder, decoder = build(ARCH)
    with torch.no_grad():
        adjust(decoder.conv_last)
    folder.mkdir(parents=True)
    torch.save(encoder.state_dict(), folder / "encoder_epoch_20.pth")
    torch.save(decoder.state_dict(), folder / "decoder_epoch_20.pth")
    return folder


def channel_two_wins(last) -> None:  # channel 2: CSAIL's class 3 in object150_info.csv
    last.weight.zero_()
    last.bias.zero_()
    last.bias[2] = 10.0


@pytest.fixture(scope="module")
def csail(tmp_path_factory) -> Path:
    return csail_folder(tmp_path_factory.mktemp("csail") / "ade20k-mobilenetv2dilated-c1_deepsup",
                        0, channel_two_wins)


def test_csail_channels_map_to_ade20k_by_index(csail):
    segmenter = load_segmenter_dir(csail, device="cpu")
    labels = segmenter.segment(torch.zeros(2, 3, 32, 32))
    # object150_info.csv numbers wall 1, building 2, sky 3: channel k is its class k + 1
    assert labels.eq(2).all() and segmenter.labels[2] == "sky"
    assert segmenter.labels[0] == "wall" and segmenter.labels[149] == "flag"


def test_csail_weights_load_strictly(csail, tmp_path):
    import shutil

    folder = tmp_path / csail.name
    shutil.copytree(csail, folder)
    state = torch.load(folder / "decoder_epoch_20.pth", weights_only=True)
    state["unexpected.weight"] = torch.zeros(1)
    del state["conv_last.bias"]
    torch.save(state, folder / "decoder_epoch_20.pth")
    with pytest.raises(InputError, match=r"missing keys: conv_last\.bias; unexpected keys: "
                                         r"unexpected\.weight"):
        load_segmenter_dir(folder)
    nameless = tmp_path / "weights"
    shutil.copytree(csail, nameless)
    with pytest.raises(InputError, match=r"no \*\.yaml config"):
        load_segmenter_dir(nameless)




# -- multi-scale inference, equal to the CSAIL project's evaluation -------------------------------
@pytest.fixture(scope="module")
def csail_random(tmp_path_factory) -> Path:
    """Random weights (maps that vary) and a YAML config with its own test scales."""
    def let_features_decide(last) -> None:  # at init one class wins everywhere
        last.bias.zero_()
        last.weight.mul_(50)

    folder = csail_folder(tmp_path_factory.mktemp("csail") / "random", 1, let_features_decide)
    (folder / "config.yaml").write_text(
        "DATASET:\n  num_class: 150\n  imgSizes: (40, 56, 72)\n  imgMaxSize: 90\n"
        "  padding_constant: 8\nMODEL:\n  arch_encoder: mobilenetv2dilated\n"
        "  arch_decoder: c1_deepsup\n  fc_dim: 320\n")
    return folder


def csail_evaluation(folder: Path, pngs: list[Path], sizes, max_size: int,
                     padding: int) -> torch.Tensor:
    """CSAIL's own multi-scale inference: ``mit_semseg.dataset.TestDataset`` resizes each image
    file to every scale, ``SegmentationModule`` gives class probabilities at the image's size,
    and their mean over the scales is argmaxed (the loop of the project's test.py/eval.py)."""
    from types import SimpleNamespace

    from mit_semseg.dataset import TestDataset
    from mit_semseg.models.models import SegmentationModule

    from segmentation.csail import build

    encoder, decoder = build(ARCH)
    encoder.load_state_dict(torch.load(folder / "encoder_epoch_20.pth", weights_only=True))
    decoder.load_state_dict(torch.load(folder / "decoder_epoch_20.pth", weights_only=True))
    module = SegmentationModule(encoder, decoder, None).eval()
    options = SimpleNamespace(imgSizes=sizes, imgMaxSize=max_size, padding_constant=padding)
    dataset = TestDataset([{"fpath_img": str(p)} for p in pngs], options)
    maps = []
    with torch.no_grad():
        for item in dataset:
            size = item["img_ori"].shape[:2]
            scores = torch.zeros(1, 150, *size)
            for image in item["img_data"]:
                scores = scores + module({"img_data": image}, segSize=size) / len(sizes)
            maps.append(scores.argmax(dim=1)[0])
    return torch.stack(maps)


def test_multiscale_maps_equal_the_csail_evaluation(csail_random, tmp_path):
    from helpers import write_png
    from mganprior.core.pixels import from_uint8

    rng = np.random.default_rng(0)
    for height, width in ((40, 52), (64, 64)):
        pixels = rng.integers(0, 256, (2, height, width, 3), dtype=np.uint8)
        pngs = [write_png(tmp_path / f"{height}-{i}.png", p) for i, p in enumerate(pixels)]
        for scales, sizes in (("csail", (40, 56, 72)), ("48,64", (48, 64))):
            segmenter = load_segmenter_dir(csail_random, device="cpu", scales=scales)
            maxed = 90 if scales == "csail" else 1000
            reference = csail_evaluation(csail_random, pngs, sizes, maxed, 8)
            ours = segmenter.segment(from_uint8(pixels))
            assert (ours == reference).float().mean() == 1.0, (height, width, scales)
            assert reference.unique().numel() > 1
    single = load_segmenter_dir(csail_random, device="cpu")
    assert single.scales is None  # one pass at the image's size stays the default


def test_scales_are_checked_and_only_csail_takes_them(csail_random, tmp_path):
    from segmentation.csail import CSAIL_SCALES, parse_scales

    assert parse_scales("csail") == CSAIL_SCALES and parse_scales("1") is None
    assert CSAIL_SCALES.target(480, 640, 300) == (304, 400)  # short side 300, multiples of 8
    for bad, message in (("0,300", r"sizes in \[1, 4096\]"), ("abc", "csail, 1 or short sides"),
                         ("99999", r"sizes in \[1, 4096\]")):
        with pytest.raises(InputError, match=message):
            load_segmenter_dir(csail_random, scales=bad)
    smp = tmp_path / "smp"
    smp.mkdir()
    (smp / "config.json").write_text('{"_model_class": "Unet"}')
    with pytest.raises(InputError, match="segmenter_scales csail applies to csail segmenters"):
        load_segmenter_dir(smp, scales="csail")


@pytest.mark.parametrize("yaml_text, message", [
    ("a: &x [1]\nb: *x\nMODEL: {arch_encoder: resnet18dilated, arch_decoder: c1}\n",
     "uses a YAML alias"),
    ("MODEL: {arch_encoder: mobilenetv2dilated, arch_decoder: c1, fc_dim: 1000000000}\n",
     r"fc_dim must be an integer in \[1, 8192\]"),
    ("MODEL: {arch_encoder: mobilenetv2dilated, arch_decoder: c1, fc_dim: 2048}\n",
     "fc_dim is 2048 but a mobilenetv2dilated encoder gives 320"),
    ("MODEL: {arch_encoder: mobilenetv2dilated, arch_decoder: c1}\nDATASET: {num_class: -1}\n",
     r"num_class must be an integer in \[1, 10000\]"),
    ("MODEL: {arch_encoder: [1], arch_decoder: c1}\n", "must be names"),
    ("MODEL: {arch_encoder: mobilenetv2dilated, arch_decoder: c1}\nDATASET: [1]\n",
     "MODEL and DATASET must be mappings"),
    ("- 1\n", "must hold a mapping"),
])
def test_hostile_csail_configs_get_one_line(csail, tmp_path, yaml_text, message):
    import shutil

    folder = tmp_path / "hostile"
    shutil.copytree(csail, folder)
    (folder / "config.yaml").write_text(yaml_text)
    with pytest.raises(InputError, match=message):
        load_segmenter_dir(folder)
