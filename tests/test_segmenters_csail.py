"""CSAIL semantic-segmentation-pytorch encoder/decoder pairs: strict loading, ADE20K-150 by
index; random weights in the published layout, no network."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from core.errors import InputError
from segmentation.formats import load_segmenter_dir

pytest.importorskip("mit_semseg", reason="the csail extra (mit-semseg) is not installed")


@pytest.fixture(scope="module")
def csail(tmp_path_factory) -> Path:
    from segmentation.csail import build

    with torch.random.fork_rng():
        torch.manual_seed(0)
        encoder, decoder = build({"arch_encoder": "mobilenetv2dilated",
                                  "arch_decoder": "c1_deepsup", "fc_dim": 320,
                                  "num_class": 150})
    with torch.no_grad():  # channel 2 wins everywhere: CSAIL's class 3 in object150_info.csv
        decoder.conv_last.weight.zero_()
        decoder.conv_last.bias.zero_()
        decoder.conv_last.bias[2] = 10.0
    folder = tmp_path_factory.mktemp("csail") / "ade20k-mobilenetv2dilated-c1_deepsup"
    folder.mkdir()
    torch.save(encoder.state_dict(), folder / "encoder_epoch_20.pth")
    torch.save(decoder.state_dict(), folder / "decoder_epoch_20.pth")
    return folder


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


