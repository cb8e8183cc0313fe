"""The segmenters users already have: Hugging Face transformers folders and hub cache entries,
CSAIL encoder/decoder pairs, ADE20K-150 by index; tiny random-weight models, no network."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from core.errors import InputError
from segmentation.formats import load_segmenter_dir
from segmentation.vocabularies import ADE20K_150

transformers = pytest.importorskip("transformers", reason="the hf extra is not installed")
LABELS = dict(enumerate(ADE20K_150.names))


def save_hf(model, directory: Path, processor) -> Path:
    model.save_pretrained(str(directory))
    processor.save_pretrained(str(directory))
    return directory


@pytest.fixture(scope="module")
def segformer(tmp_path_factory) -> Path:
    config = transformers.SegformerConfig(
        num_encoder_blocks=2, depths=[1, 1], sr_ratios=[2, 1], hidden_sizes=[8, 16],
        patch_sizes=[7, 3], strides=[4, 2], num_attention_heads=[1, 1], mlp_ratios=[2, 2],
        decoder_hidden_size=16, num_labels=150, id2label=LABELS,
        label2id={v: k for k, v in LABELS.items()})
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = transformers.SegformerForSemanticSegmentation(config)
    processor = transformers.SegformerImageProcessor(size={"height": 48, "width": 48},
                                                     image_mean=[0.5, 0.4, 0.3],
                                                     image_std=[0.2, 0.3, 0.4])
    return save_hf(model, tmp_path_factory.mktemp("segformer") / "model", processor)


def test_a_segformer_folder_loads_offline_with_its_preprocessing(segformer):
    segmenter = load_segmenter_dir(segformer, device="cpu")
    assert segmenter.vocabulary.name == "ade20k-150" and segmenter.labels[0] == "wall"
    assert segmenter.size == (48, 48) and segmenter.mean == (0.5, 0.4, 0.3)
    images = torch.rand(3, 3, 32, 32) * 2 - 1
    maps = segmenter.segment(images)
    assert maps.shape == (3, 32, 32) and maps.dtype == torch.int64
    one_by_one = torch.cat([segmenter.segment(images[i:i + 1]) for i in range(3)])
    assert torch.equal(maps, one_by_one)


def test_upernet_and_mask2former_folders_load(tmp_path):
    backbone = transformers.ConvNextConfig(hidden_sizes=[8, 8, 16, 16], depths=[1, 1, 1, 1],
                                           out_features=["stage1", "stage2", "stage3", "stage4"])
    upernet = transformers.UperNetForSemanticSegmentation(transformers.UperNetConfig(
        backbone_config=backbone, hidden_size=16, auxiliary_in_channels=16,
        auxiliary_channels=8, pool_scales=[1, 2], num_labels=150, id2label=LABELS,
        label2id={v: k for k, v in LABELS.items()}))
    processor = transformers.SegformerImageProcessor(size={"height": 64, "width": 64})
    loaded = load_segmenter_dir(save_hf(upernet, tmp_path / "upernet", processor), device="cpu")
    assert loaded.segment(torch.zeros(2, 3, 32, 32)).shape == (2, 32, 32)
    swin = transformers.SwinConfig(image_size=64, patch_size=4, embed_dim=8, depths=[1] * 4,
                                   num_heads=[1] * 4, window_size=2,
                                   out_features=["stage1", "stage2", "stage3", "stage4"])
    mask2former = transformers.Mask2FormerForUniversalSegmentation(transformers.Mask2FormerConfig(
        backbone_config=swin, feature_size=32, mask_feature_size=32, hidden_dim=32,
        encoder_feedforward_dim=32, dim_feedforward=32, encoder_layers=1, decoder_layers=2,
        num_attention_heads=2, num_queries=5, num_labels=150, id2label=LABELS,
        label2id={v: k for k, v in LABELS.items()}, common_stride=4))
    loaded = load_segmenter_dir(save_hf(mask2former, tmp_path / "m2f",
                                        transformers.Mask2FormerImageProcessor(
                                            size={"height": 64, "width": 64})), device="cpu")
    assert loaded.universal and loaded.segment(torch.zeros(1, 3, 32, 32)).shape == (1, 32, 32)


class Queries(nn.Module):
    """A universal model's outputs by hand: query 0 says class 1 over the left half, query 1
    says class 0 over the right half (the last logit is "no object")."""

    def __init__(self) -> None:
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(1))

    def forward(self, pixel_values):
        batch = pixel_values.shape[0]
        classes = torch.tensor([[-9.0, 9.0, -9.0], [9.0, -9.0, -9.0]]).expand(batch, 2, 3)
        masks = torch.full((batch, 2, 4, 4), -9.0)
        masks[:, 0, :, :2] = 9.0
        masks[:, 1, :, 2:] = 9.0
        return SimpleNamespace(class_queries_logits=classes, masks_queries_logits=masks)


def test_the_semantic_map_of_a_universal_model_by_hand():
    from segmentation.hf import HFSegmenter
    from segmentation.vocabularies import Vocabulary

    vocabulary = Vocabulary("two", ("a", "b"), ((0, 0, 0), (1, 1, 1)))
    segmenter = HFSegmenter(Queries(), vocabulary, size=(4, 4), mean=(0, 0, 0), std=(1, 1, 1),
                            rescale=1 / 255, normalize=True, universal=True, source="by hand")
    labels = segmenter.segment(torch.zeros(1, 3, 4, 4))
    assert labels[0, :, :2].eq(1).all() and labels[0, :, 2:].eq(0).all()


def test_a_hub_repo_id_is_read_from_the_cache_only(segformer, tmp_path, monkeypatch):
    import shutil

    cache = tmp_path / "hub"
    snapshot = cache / "models--org--tiny-seg" / "snapshots" / "abc123"
    shutil.copytree(segformer, snapshot)
    (cache / "models--org--tiny-seg" / "refs").mkdir()
    (cache / "models--org--tiny-seg" / "refs" / "main").write_text("abc123")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(cache))
    assert load_segmenter_dir("org/tiny-seg", device="cpu").labels[2] == "sky"
    with pytest.raises(InputError, match=r"org/absent is not in the Hugging Face cache.*"
                                         r"huggingface-cli download org/absent"):
        load_segmenter_dir("org/absent")


def test_bad_hf_folders_get_one_line(segformer, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(segformer, broken)
    (broken / "preprocessor_config.json").unlink()
    with pytest.raises(InputError, match=r"lacks preprocessor_config\.json"):
        load_segmenter_dir(broken)
    with pytest.raises(InputError, match=r"labels name 3 classes but .* predicts 150"):
        load_segmenter_dir(segformer, labels=["a", "b", "c"])
    config = json.loads((segformer / "config.json").read_text())
    config["hidden_sizes"] = [8, 32]
    wrong = tmp_path / "wrong"
    shutil.copytree(segformer, wrong)
    (wrong / "config.json").write_text(json.dumps(config))
    with pytest.raises(InputError, match="holds no weights transformers can load"):
        load_segmenter_dir(wrong)


def test_attribute_a_run_with_a_tiny_segformer(tmp_path, capsys, segformer, face_pngs,
                                               tiny_pggan):
    from analysis.attribution_files import AttributionDirectory
    from inversion.generators import save_generator
    from mganprior.cli import main

    checkpoint = str(save_generator(tiny_pggan, tmp_path / "tiny.safetensors"))
    run = tmp_path / "run"
    assert main(["invert", "--checkpoint", checkpoint, "--images", str(face_pngs), "--out",
                 str(run), "--iterations", "2", "--codes", "4", "--quiet"]) == 0
    assert main(["attribute", str(run), "--segmenter-dir", str(segformer), "--quiet"]) == 0
    attribution = AttributionDirectory(run / "attribution")
    assert attribution.vocabulary().name == "ade20k-150"
    assert main(["report", str(run), "--out", str(tmp_path / "r.html")]) == 0
    assert "Attribution: codes per class" in (tmp_path / "r.html").read_text()
