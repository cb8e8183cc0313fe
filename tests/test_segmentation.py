"""Vocabularies, the Segmenter adapter's checks, IoU and Frechet Segmentation Distance."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from mganprior.core.errors import InputError
from segmentation.metrics import (
    class_fractions,
    confusion_matrix,
    frechet_distance,
    frechet_segmentation_distance,
    iou_report,
)
from segmentation.segmenters import Segmenter, SmpSegmenter, load_smp_segmenter, save_segmenter
from segmentation.vocabularies import (
    ADE20K_150,
    CELEBAMASK_HQ_19,
    SCENE_WORLD,
    Vocabulary,
    get_vocabulary,
)


def test_vocabularies_have_their_published_sizes_and_unique_names():
    assert len(ADE20K_150) == 150 and ADE20K_150.names[:3] == ("wall", "building", "sky")
    assert len(CELEBAMASK_HQ_19) == 19 and CELEBAMASK_HQ_19.names[0] == "background"
    assert len(SCENE_WORLD) == 21 and SCENE_WORLD.index("bed") == 3


def test_vocabulary_errors_list_the_choices():
    with pytest.raises(InputError, match="scene-world, ade20k-150, celebamask-hq-19"):
        get_vocabulary("coco")
    with pytest.raises(InputError, match="classes: wall, floor"):
        SCENE_WORLD.index("sofa")
    with pytest.raises(InputError, match="repeats"):
        Vocabulary("x", ("a", "a"), ((0, 0, 0), (1, 1, 1)))


def test_colorize_uses_the_palette():
    labels = np.array([[0, 3]])
    assert SCENE_WORLD.colorize(labels).tolist() == [[list(SCENE_WORLD.colors[0]),
                                                      list(SCENE_WORLD.colors[3])]]


def test_confusion_and_iou_known_answer():
    target = torch.tensor([[0, 0, 1, 1]])
    predicted = torch.tensor([[0, 1, 1, 1]])
    conf = confusion_matrix(predicted, target, 3)
    assert conf.tolist() == [[1, 1, 0], [0, 2, 0], [0, 0, 0]]
    report = iou_report(conf, ("a", "b", "c"))
    assert report.per_class[0] == pytest.approx(1 / 2)
    assert report.per_class[1] == pytest.approx(2 / 3)
    assert np.isnan(report.per_class[2])  # absent everywhere: not counted in the mean
    assert report.mean == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert report.pixel_accuracy == pytest.approx(3 / 4)
    assert report.as_dict()["c"] is None


def test_class_fractions_and_frechet_known_answers():
    maps = torch.tensor([[[0, 0], [1, 2]]])
    assert class_fractions(maps, 3).tolist() == [[0.5, 0.25, 0.25]]
    rng = np.random.default_rng(0)
    a = rng.normal(size=(400, 3))
    assert frechet_distance(a, a) == pytest.approx(0, abs=1e-8)
    # Same covariance, means 2 apart along one axis: the distance is the squared mean gap.
    assert frechet_distance(a, a + np.array([2.0, 0, 0])) == pytest.approx(4.0, rel=1e-6)
    with pytest.raises(InputError, match="same D"):
        frechet_distance(a, a[:, :2])


def test_fsd_separates_different_layouts():
    top = torch.zeros(20, 8, 8, dtype=torch.long)
    top[:, 4:] = 1
    bottom = top.clone()
    bottom[:, 2:4] = 1
    top[::2, 3] = 1  # some variation so covariances are not singular
    bottom[::3, 1] = 1
    assert frechet_segmentation_distance(top, top, 2) == pytest.approx(0, abs=1e-6)
    assert frechet_segmentation_distance(top, bottom, 2) > 1.0


class ColourSegmenterModel(nn.Module):
    """Hand-set 'smp-like' model: class 1 where red > green, else class 0."""

    def __init__(self) -> None:
        super().__init__()
        self.segmentation_head = nn.Sequential(nn.Conv2d(3, 2, 1))
        with torch.no_grad():
            self.segmentation_head[0].weight.zero_()
            self.segmentation_head[0].bias.zero_()
            self.segmentation_head[0].weight[1, 0] = 1.0
            self.segmentation_head[0].weight[1, 1] = -1.0

    def forward(self, x):
        return self.segmentation_head(x)


def test_smp_segmenter_adapter_segments_at_the_input_size():
    vocab = Vocabulary("rg", ("green", "red"), ((0, 255, 0), (255, 0, 0)))
    segmenter = SmpSegmenter(ColourSegmenterModel(), vocab, input_size=8)
    images = -torch.ones(2, 3, 16, 16)
    images[:, 1] = 1.0  # green everywhere ...
    images[0, 0, :, 8:] = 1.0  # ... but the right half of image 0 is red
    images[0, 1, :, 8:] = -1.0
    maps = segmenter.segment(images)  # through 8 px and back
    assert isinstance(segmenter, Segmenter)
    assert maps.shape == (2, 16, 16) and maps.dtype == torch.int64
    assert maps[0, :, 10:].eq(1).all() and maps[0, :, :6].eq(0).all() and maps[1].eq(0).all()


def test_segmenter_checks_its_input_and_class_count():
    vocab = Vocabulary("three", ("a", "b", "c"), ((0, 0, 0),) * 3)
    with pytest.raises(InputError, match="predicts 2 classes but its vocabulary three has 3"):
        SmpSegmenter(ColourSegmenterModel(), vocab)
    ok = SmpSegmenter(ColourSegmenterModel(), Vocabulary("two", ("a", "b"), ((0, 0, 0),) * 2))
    with pytest.raises(InputError, match=r"in \[-1, 1\]"):
        ok.segment(torch.full((1, 3, 4, 4), 2.0))
    with pytest.raises(InputError, match=r"\[B, 3, H, W\]"):
        ok.segment(torch.zeros(3, 4, 4))


@pytest.fixture(scope="module")
def smp_dir(tmp_path_factory):
    import segmentation_models_pytorch as smp

    model = smp.Unet("resnet18", encoder_weights=None, classes=3, encoder_depth=3,
                     decoder_channels=(16, 8, 8))
    directory = tmp_path_factory.mktemp("smp") / "model"
    model.save_pretrained(str(directory))  # a user's own smp model: no segmenter.json
    return directory


def test_user_smp_directory_needs_labels_and_checks_their_count(smp_dir, tmp_path):
    with pytest.raises(InputError, match=r"no segmenter\.json naming its classes"):
        load_smp_segmenter(smp_dir)
    with pytest.raises(InputError, match="predicts 3 classes but its vocabulary ade20k-150 has "
                                         "150"):
        load_smp_segmenter(smp_dir, labels="ade20k-150")
    names = tmp_path / "classes.json"
    names.write_text(json.dumps(["sky", "ground", "thing"]))
    segmenter = load_smp_segmenter(smp_dir, labels=str(names), normalization="imagenet")
    assert segmenter.labels == ("sky", "ground", "thing")
    assert segmenter.segment(torch.zeros(1, 3, 32, 32)).shape == (1, 32, 32)


def test_saved_segmenter_round_trip_and_damaged_directories(smp_dir, tmp_path):
    import segmentation_models_pytorch as smp

    model = smp.from_pretrained(str(smp_dir))
    vocab = Vocabulary("abc", ("a", "b", "c"), ((0, 0, 0), (1, 1, 1), (2, 2, 2)))
    saved = save_segmenter(model, vocab, tmp_path / "ours", input_size=32)
    assert next(model.parameters()).dtype == torch.float32  # saving in fp16 leaves it fp32
    loaded = load_smp_segmenter(saved)
    assert loaded.labels == ("a", "b", "c") and loaded.input_size == 32
    (saved / "model.safetensors").write_bytes(b"\x00" * 100)
    with pytest.raises(InputError, match=r"segmenter weights in .*ours are corrupt"):
        load_smp_segmenter(saved)
    with pytest.raises(InputError, match="does not exist"):
        load_smp_segmenter(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=r"no config\.json"):
        load_smp_segmenter(tmp_path / "empty")


def test_segmenter_folders_go_through_the_format_registry(smp_dir, tmp_path):
    from segmentation.formats import load_segmenter_dir
    from segmentation.segmenters import Segmenter

    segmenter = load_segmenter_dir(smp_dir, labels=["sky", "ground", "thing"], device="cpu")
    assert isinstance(segmenter, Segmenter)  # labels, vocabulary, device, segment
    assert segmenter.vocabulary.names == segmenter.labels == ("sky", "ground", "thing")
    stranger = tmp_path / "stranger"
    stranger.mkdir()
    (stranger / "config.json").write_text('{"name": "bert"}')
    with pytest.raises(InputError, match=r"stranger is not a segmenter folder in a known "
                                         r"format\. Known formats: smp \("):
        load_segmenter_dir(stranger)
    (stranger / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(InputError, match=r"stranger holds a transformers 'bert' model, which is "
                                         r"not a segmenter; semantic: .*segformer.*upernet"):
        load_segmenter_dir(stranger)
